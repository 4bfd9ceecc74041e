"""The whole loop with Orthanc as the hospital PACS.

Generated studies (a head CT with a subdural hemorrhage, a normal head CT, a brain MR with SIH signs) are
uploaded to Orthanc over REST; Orthanc routes each study to the node (`/modalities/NODE/store`); the
node (what `serve` runs, in-process, with its local worker subprocess and the shipped demo models)
analyses them and stores the SR and overlays back into Orthanc, where the test reads them over REST.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from conftest import free_port, wait_for, write_config
from e2e_helpers import SR_CLASS, assert_valid_outputs, e2e_sections, findings_by_code
from orthanc_helpers import OrthancServer
from sqlalchemy import select

from dicom_node.config import load_config
from dicom_node.db.schema import Output, Priority, Study, StudyState
from dicom_node.outputs.codes import (
    INTRACRANIAL_HEMORRHAGE,
    SPONTANEOUS_INTRACRANIAL_HYPOTENSION,
    SUBDURAL_HEMORRHAGE,
)
from dicom_node.runtime.node import Node
from dicom_node.runtime.services import build_node
from dicom_node.synth import write_ct_head_study, write_mr_sih_study

pytestmark = [pytest.mark.timeout(240)]

SEED = 4101


@pytest.fixture
def loop(tmp_path: Path) -> Iterator[tuple[OrthancServer, Node]]:
    node_port = free_port()
    pacs = OrthancServer(tmp_path / "orthanc", modalities={"NODE": ("DICOMNODE", "127.0.0.1", node_port)})
    sections = e2e_sections(pacs.dicom_port, node={"port": node_port})
    sections["destinations"] = [{"name": "orthanc", "ae_title": "ORTHANC", "host": "127.0.0.1",
                                 "port": pacs.dicom_port}]
    node = build_node(load_config(write_config(tmp_path, **sections)), log_level="WARNING")
    with pacs:
        node.start()
        try:
            yield pacs, node
        finally:
            node.stop()


def _upload(pacs: OrthancServer, files: list[Path]) -> str:
    """Upload a study's files to Orthanc; its Orthanc study id."""
    parents = {pacs.upload(f)["ParentStudy"] for f in files}
    assert len(parents) == 1
    return parents.pop()


def _delivered(node: Node, study_uids: list[str]) -> bool:
    with node.db.read() as s:
        states = s.execute(select(Study.state).where(Study.study_uid.in_(study_uids))).scalars().all()
    return len(states) == len(study_uids) and all(st == StudyState.DELIVERED for st in states)


def test_orthanc_routes_studies_and_gets_sr_and_overlays_back(
    loop: tuple[OrthancServer, Node], tmp_path: Path
) -> None:
    pacs, node = loop
    gen = tmp_path / "studies"
    subdural = write_ct_head_study(gen, SEED, findings=("subdural",), n_slices=32, size=256)
    normal = write_ct_head_study(gen, SEED, findings=(), n_slices=32, size=256, patient_index=1)
    sih = write_mr_sih_study(gen, SEED, sih=True, patient_index=2)
    cases = [subdural, normal, sih]
    orthanc_ids = {s.study_uid: _upload(pacs, s.files) for s in cases}

    for study in cases:  # Orthanc is the PACS: it sends each study to the node over one association
        job = pacs.post("/modalities/NODE/store", [orthanc_ids[study.study_uid]])
        assert job is None or not job.get("FailedInstancesCount"), job

    uids = [s.study_uid for s in cases]
    wait_for(lambda: _delivered(node, uids), timeout=180, interval=0.2, msg="all three studies delivered")

    with node.db.read() as s:
        outputs = {
            study_uid: [(o.kind, o.sop_instance_uid) for o in s.scalars(
                select(Output).join(Study, Study.id == Output.study_id).where(Study.study_uid == study_uid))]
            for study_uid in uids
        }
        priority = {st.study_uid: st.priority for st in s.scalars(select(Study))}

    # every output is in Orthanc, in the study it was made from, and valid
    downloaded: dict[str, list[Path]] = {}
    for study_uid, objects in outputs.items():
        for kind, sop_uid in objects:
            found = pacs.post("/tools/lookup", sop_uid.encode())
            assert [f["Type"] for f in found] == ["Instance"], f"{kind} {sop_uid} not in Orthanc"
            instance = pacs.get(f"/instances/{found[0]['ID']}")
            series = pacs.get(f"/series/{instance['ParentSeries']}")
            assert series["ParentStudy"] == orthanc_ids[study_uid]
            path = tmp_path / "back" / f"{kind}-{sop_uid}.dcm"
            path.parent.mkdir(exist_ok=True)
            path.write_bytes(_download(pacs, found[0]["ID"]))
            downloaded.setdefault(study_uid, []).append(path)
    assert_valid_outputs([p for paths in downloaded.values() for p in paths])

    def sr(study_uid: str) -> pydicom.Dataset:
        srs = [pydicom.dcmread(p) for p in downloaded[study_uid] if p.name.startswith("sr-")]
        assert len(srs) == 1 and str(srs[0].SOPClassUID) == SR_CLASS
        assert srs[0].StudyInstanceUID == study_uid
        return srs[0]

    def overlays(study_uid: str) -> int:
        return sum(1 for p in downloaded.get(study_uid, []) if p.name.startswith("overlay-"))

    ct_pos = findings_by_code(sr(subdural.study_uid))
    assert ct_pos[SUBDURAL_HEMORRHAGE.value].presence == "Present"
    assert ct_pos[INTRACRANIAL_HEMORRHAGE.value].presence == "Present"
    assert overlays(subdural.study_uid) >= 1
    assert priority[subdural.study_uid] == Priority.STAT.value

    ct_neg = findings_by_code(sr(normal.study_uid))
    assert len(ct_neg) == 6 and {f.presence for f in ct_neg.values()} == {"Absent"}
    assert overlays(normal.study_uid) == 0
    assert priority[normal.study_uid] == Priority.ROUTINE.value

    mr = findings_by_code(sr(sih.study_uid))
    assert mr[SPONTANEOUS_INTRACRANIAL_HYPOTENSION.value].presence == "Present"
    assert overlays(sih.study_uid) >= 1

    # Orthanc holds each original study plus exactly the outputs we wrote for it
    for study in cases:
        n_orthanc = len(pacs.get(f"/studies/{orthanc_ids[study.study_uid]}/instances"))
        assert n_orthanc == len(study.files) + len(outputs[study.study_uid])


def _download(pacs: OrthancServer, instance_id: str) -> bytes:
    with urllib.request.urlopen(f"{pacs.url}/instances/{instance_id}/file", timeout=30) as response:
        return bytes(response.read())
