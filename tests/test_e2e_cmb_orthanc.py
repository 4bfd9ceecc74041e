"""Microbleeds end to end with Orthanc as the hospital PACS.

A generated SWI brain MR (with its T1/T2/FLAIR) and a brain MR without any SWI series go into Orthanc over
REST; Orthanc routes each study to the node (what `serve` runs, in-process, with its local worker and the
shipped `cmb` demo model); the node stores its SR, overlay and SEG back into Orthanc. Read back over REST:
the SR states the microbleed count (total = lobar + deep) and the small-vessel-disease class (the most
probable one), every bleed is a measurement group with a region on its image and a numbered comment, the
SEG holds the reported bleeds and a generated bleed lies in it, every object passes dciodvfy (and the SR dsrdump/dsr2html); the study without SWI gets
a "not analysed" report that says why.
"""

from __future__ import annotations

import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from conftest import free_port, wait_for, write_config
from e2e_helpers import CMB_DEMO_VERSION, MODELS, SR_CLASS, assert_valid_outputs, e2e_sections
from orthanc_helpers import OrthancServer
from sqlalchemy import select

from dicom_node.config import load_config
from dicom_node.db.schema import Output, Study, StudyState
from dicom_node.outputs.readback import sr_counts, sr_findings, sr_text
from dicom_node.runtime.node import Node
from dicom_node.runtime.services import build_node
from dicom_node.synth import write_mr_sih_study
from dicom_node.synth.swi_study import read_seg_bleeds, write_mr_swi_study

pytestmark = [pytest.mark.timeout(300)]

SEED = 4111
INDEX = 2  # a CAA study with several lobar bleeds
CLASS_NAMES = {"asvd": "Arteriolosclerotic small vessel disease", "caa": "Cerebral amyloid angiopathy",
               "cadasil": "CADASIL"}


@pytest.fixture
def loop(tmp_path: Path) -> Iterator[tuple[OrthancServer, Node]]:
    assert (MODELS / "cmb" / CMB_DEMO_VERSION / "manifest.json").is_file(), f"shipped cmb demo model missing in {MODELS}"
    node_port = free_port()
    pacs = OrthancServer(tmp_path / "orthanc", modalities={"NODE": ("DICOMNODE", "127.0.0.1", node_port)})
    sections = e2e_sections(pacs.dicom_port, node={"port": node_port},
                            models={"enabled": [{"name": "cmb", "version": CMB_DEMO_VERSION}]})
    sections["destinations"] = [{"name": "orthanc", "ae_title": "ORTHANC", "host": "127.0.0.1",
                                 "port": pacs.dicom_port}]
    node = build_node(load_config(write_config(tmp_path, **sections)), log_level="WARNING")
    with pacs:
        node.start()
        try:
            yield pacs, node
        finally:
            node.stop()


def _delivered(node: Node, study_uids: list[str]) -> bool:
    with node.db.read() as s:
        states = s.execute(select(Study.state).where(Study.study_uid.in_(study_uids))).scalars().all()
    return len(states) == len(study_uids) and all(st == StudyState.DELIVERED for st in states)


def _download(pacs: OrthancServer, instance_id: str) -> bytes:
    with urllib.request.urlopen(f"{pacs.url}/instances/{instance_id}/file", timeout=30) as response:
        return bytes(response.read())


def test_orthanc_routes_an_swi_study_and_gets_count_class_and_seg_back(
    loop: tuple[OrthancServer, Node], tmp_path: Path
) -> None:
    pacs, node = loop
    gen = tmp_path / "studies"
    swi = write_mr_swi_study(gen, SEED, svd_class="caa", patient_index=INDEX, n_slices=40)
    assert swi.bleeds and swi.seg_file is not None
    no_swi = write_mr_sih_study(gen, SEED, sih=False, size=128, n_axial=6, n_coronal=6, patient_index=9)
    cases = [swi, no_swi]
    ids = {}
    for study in cases:
        parents = {pacs.upload(f)["ParentStudy"] for f in study.files}
        assert len(parents) == 1
        ids[study.study_uid] = parents.pop()
    for study in cases:  # Orthanc is the PACS: it sends each study to the node over one association
        job = pacs.post("/modalities/NODE/store", [ids[study.study_uid]])
        assert job is None or not job.get("FailedInstancesCount"), job
    uids = [s.study_uid for s in cases]
    wait_for(lambda: _delivered(node, uids), timeout=240, interval=0.2, msg="both studies delivered")

    back: dict[str, dict[str, list[Path]]] = {}
    with node.db.read() as s:
        rows = s.execute(select(Output.kind, Output.sop_instance_uid, Study.study_uid)
                         .join(Study, Study.id == Output.study_id)).all()
    for kind, sop_uid, study_uid in rows:
        found = pacs.post("/tools/lookup", sop_uid.encode())
        assert [f["Type"] for f in found] == ["Instance"], f"{kind} {sop_uid} not in Orthanc"
        series = pacs.get(f"/series/{pacs.get('/instances/' + found[0]['ID'])['ParentSeries']}")
        assert series["ParentStudy"] == ids[study_uid]
        path = tmp_path / "back" / f"{kind}-{sop_uid}.dcm"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(_download(pacs, found[0]["ID"]))
        back.setdefault(study_uid, {}).setdefault(kind, []).append(path)
    assert_valid_outputs([p for kinds in back.values() for paths in kinds.values() for p in paths])

    # the SWI study: count (total, lobar, deep), one region per bleed, the class, a SEG of the bleeds. The demo
    # weights are weak (docs/models.md, "Microbleeds": bench/cmb.py measures them), so this checks that the
    # report is whole and agrees with itself and with the SEG, and that the model finds real bleeds here.
    [sr_path] = back[swi.study_uid]["sr"]
    sr = pydicom.dcmread(sr_path)
    assert str(sr.SOPClassUID) == SR_CLASS and sr.StudyInstanceUID == swi.study_uid
    assert sr.VerificationFlag == "UNVERIFIED" and "synthetic-demo" in sr.SeriesDescription
    counts = sr_counts(sr)
    total = counts["Number of cerebral microbleeds"]
    assert total >= 1 and total == counts["Number of lobar cerebral microbleeds"] + counts[
        "Number of deep cerebral microbleeds"], counts
    # the classifier read the study's FLAIR: its measure is in the report and its images are evidence
    assert 0 <= counts["FLAIR white matter hyperintensity, share of brain tissue"] < 10, counts  # CAA: little
    flair_series = {pydicom.dcmread(f, stop_before_pixels=True).SeriesInstanceUID for f in swi.files
                    if pydicom.dcmread(f, stop_before_pixels=True).SeriesDescription == "FLAIR AX"}
    evidence = {s.SeriesInstanceUID for e in sr.CurrentRequestedProcedureEvidenceSequence
                for s in e.ReferencedSeriesSequence}
    assert len(flair_series) == 1 and flair_series <= evidence
    # the impression a reader sees states it with its unit
    assert any(re.search(r"share of brain tissue: \d+(\.\d+)? %", t) for t in sr_text(sr)), sr_text(sr)
    findings = sr_findings(sr)
    groups = [f for f in findings if f.finding == "Cerebral microbleed" and f.presence == "Present"]
    assert len(groups) == total + 1  # one group per bleed, plus the study-level finding
    classes = {f.finding: f for f in findings if f.finding in CLASS_NAMES.values()}
    assert set(classes) == set(CLASS_NAMES.values())
    present = [n for n, f in classes.items() if f.presence == "Present"]
    assert len(present) <= 1 and all(f.presence in ("Present", "Absent") for f in classes.values())
    if present:  # the class reported is the most probable one
        assert classes[present[0]].probability == max(f.probability or 0.0 for f in classes.values())
    comments = [str(i.TextValue) for i in _items(sr) if i.get("ValueType") == "TEXT"]
    assert {f"Microbleed {k} ({loc})" for k, loc in enumerate(_locations(comments), start=1)} <= set(comments)
    assert len(_locations(comments)) == total
    assert len(back[swi.study_uid]["overlay"]) == 1
    [seg_path] = back[swi.study_uid]["seg"]
    predicted = read_seg_bleeds(seg_path)  # one segment: every reported bleed
    voxels = {sop: m for masks in predicted.values() for sop, m in masks.items()}
    assert sum(int(m.sum()) for m in voxels.values()) > 0
    found = [bleed for bleed, by_sop in read_seg_bleeds(swi.seg_file).items()
             if any((voxels[sop] & m).any() for sop, m in by_sop.items() if sop in voxels)]
    assert found, "no generated bleed lies in the returned SEG"

    # the study without SWI: answered "not analysed", with the reason
    [sr_path] = back[no_swi.study_uid]["sr"]
    sr = pydicom.dcmread(sr_path)
    assert "NOT ANALYSED" in sr.SeriesDescription
    assert {f.presence for f in sr_findings(sr)} == {"Undetermined"}
    assert any("no SWI series" in t for t in sr_text(sr))
    assert set(back[no_swi.study_uid]) == {"sr"}


def _items(ds: pydicom.Dataset) -> list[pydicom.Dataset]:
    out = []
    for item in ds.get("ContentSequence", []):
        out.append(item)
        out.extend(_items(item))
    return out


def _locations(comments: list[str]) -> list[str]:
    named = sorted((int(c.split()[1]), c.split("(")[1].rstrip(")")) for c in comments
                   if c.startswith("Microbleed ") and "(" in c)
    assert [k for k, _ in named] == list(range(1, len(named) + 1))
    return [loc for _, loc in named]

