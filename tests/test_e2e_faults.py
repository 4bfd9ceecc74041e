"""Faults across the whole loop, with a real `dicom-node serve` (subprocess, local worker, demo models):
the PACS is down when results are ready; the worker is killed mid-job; a study has nothing to analyse."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pydicom
import pytest
from conftest import wait_for, write_config
from e2e_helpers import (
    SR_CLASS,
    CollectingSCP,
    ServeProcess,
    e2e_sections,
    findings_by_code,
    node_status,
    storescu,
    study_state,
)
from sqlalchemy import select

from dicom_node.config import Config, load_config
from dicom_node.db.engine import Database
from dicom_node.db.schema import Delivery, Job, JobState, Output, Study, StudyState
from dicom_node.outputs.codes import SPONTANEOUS_INTRACRANIAL_HYPOTENSION, SUBDURAL_HEMORRHAGE
from dicom_node.outputs.readback import sr_text
from dicom_node.synth import write_ct_head_study, write_mr_sih_study

pytestmark = [pytest.mark.timeout(180)]


def _node(tmp_path: Path, pacs_port: int, **overrides: object) -> Config:
    return load_config(write_config(tmp_path, **e2e_sections(pacs_port, light=True, **overrides)))


def _outputs(db: Database, study_uid: str) -> dict[str, str]:
    """SOP Instance UID → kind of every output the node wrote for a study."""
    with db.read() as s:
        rows = s.scalars(select(Output).join(Study, Study.id == Output.study_id).where(Study.study_uid == study_uid))
        return {o.sop_instance_uid: o.kind for o in rows}


def _received(pacs: CollectingSCP, study_uid: str) -> list[pydicom.Dataset]:
    return [ds for ds in pacs.received() if ds.StudyInstanceUID == study_uid]


def _delivered(db: Database, study_uid: str) -> bool:
    with db.read() as s:
        return s.scalars(select(Study.state).where(Study.study_uid == study_uid)).first() == StudyState.DELIVERED


def test_pacs_down_deliveries_wait_and_complete_when_it_is_back(tmp_path: Path) -> None:
    pacs = CollectingSCP(tmp_path / "pacs")  # its port is chosen, nothing listens yet
    config = _node(tmp_path, pacs.port)
    study = write_ct_head_study(tmp_path / "in", 5201, findings=("subdural",), n_slices=24, size=256,
                                distractors=False)
    db = Database(config.database_url)
    with ServeProcess(config.source, config.node.port, tmp_path / "serve.log"):  # type: ignore[arg-type]
        storescu(config.node.port, study.files)

        def failed_attempts() -> bool:
            with db.read() as s:
                rows = s.scalars(select(Delivery)).all()
                return bool(rows) and all(d.attempts >= 2 and d.last_error for d in rows)

        wait_for(failed_attempts, timeout=90, interval=0.2, msg="delivery attempts to the down PACS")
        state = study_state(config.source, study.study_uid)  # type: ignore[arg-type]
        assert state is not None and state["state"] == "analysed"
        assert set(state["deliveries"]) == {"pending"} and state["deliveries"]["pending"] == len(_outputs(db, study.study_uid))

        with pacs:  # the PACS comes back on the same port
            wait_for(lambda: _delivered(db, study.study_uid), timeout=30, interval=0.1, msg="delivery after the PACS came back")
            got = _received(pacs, study.study_uid)
        assert study_state(config.source, study.study_uid)["state"] == "delivered"  # type: ignore[arg-type,index]
    outputs = _outputs(db, study.study_uid)
    db.dispose()
    assert sorted(str(ds.SOPInstanceUID) for ds in got) == sorted(outputs)
    sr = next(ds for ds in got if str(ds.SOPClassUID) == SR_CLASS)
    assert findings_by_code(pydicom.dcmread(sr.filename))[SUBDURAL_HEMORRHAGE.value].presence == "Present"


def test_worker_killed_mid_job_is_rerun_after_lease_and_delivers_once(tmp_path: Path) -> None:
    with CollectingSCP(tmp_path / "pacs") as pacs:
        config = _node(tmp_path, pacs.port, worker={"lease_seconds": 3})
        study = write_ct_head_study(tmp_path / "in", 5202, findings=("subdural",), n_slices=40, size=512,
                                    distractors=False)
        db = Database(config.database_url)
        serve = ServeProcess(config.source, config.node.port, tmp_path / "serve.log")  # type: ignore[arg-type]
        with serve:
            worker = wait_for(serve.children, timeout=10, msg="serve's local worker")[0]
            assert b"worker" in Path(f"/proc/{worker}/cmdline").read_bytes()
            storescu(config.node.port, study.files)

            def running() -> Job | None:
                with db.read() as s:
                    return s.scalars(select(Job).where(Job.state == JobState.RUNNING)).first()

            job = wait_for(running, timeout=60, interval=0.01, msg="the job running")
            os.kill(worker, signal.SIGKILL)
            wait_for(lambda: _dead(worker), timeout=10, msg="worker dead")
            with db.read() as s:
                killed = s.get(Job, job.id)
                assert killed is not None and killed.state == JobState.RUNNING and killed.attempts == 1, \
                    "the kill must land while the job runs"
                assert s.scalars(select(Output)).first() is None

            wait_for(lambda: _delivered(db, study.study_uid), timeout=90, interval=0.1,
                     msg="the job re-run and delivered")
            assert worker not in serve.children(), "serve restarts its worker"
        with db.read() as s:
            done = s.get(Job, job.id)
            assert done is not None and done.state == JobState.DONE and done.attempts == 2
            assert len(s.scalars(select(Job)).all()) == 1
        outputs = _outputs(db, study.study_uid)
        db.dispose()
        got = _received(pacs, study.study_uid)
    # one C-STORE per output object: exactly one set of UIDs reached the PACS
    assert sorted(str(ds.SOPInstanceUID) for ds in got) == sorted(outputs)
    assert sorted(outputs.values()).count("sr") == 1


def _dead(pid: int) -> bool:
    """Gone, or a zombie its parent (serve) has not reaped yet."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_study_with_no_usable_series_gets_not_analysed_sr(tmp_path: Path) -> None:
    with CollectingSCP(tmp_path / "pacs") as pacs:
        config = _node(tmp_path, pacs.port)
        db = Database(config.database_url)
        ct = write_ct_head_study(tmp_path / "in", 5203, findings=("subdural",), n_slices=12, size=128)
        mr = write_mr_sih_study(tmp_path / "in", 5203, sih=True, size=128, patient_index=1, n_axial=8, n_coronal=8)
        # CT: scout, bone-kernel series and dose report only; MR: T2 only (no post-contrast T1)
        ct_files = [f for f in ct.files if f.parent.name != "002-head-5mm"]
        mr_files = [f for f in mr.files if f.parent.name.startswith("003-t2")]
        assert ct_files and len(ct_files) < len(ct.files) and mr_files
        with ServeProcess(config.source, config.node.port, tmp_path / "serve.log"):  # type: ignore[arg-type]
            storescu(config.node.port, ct_files)
            storescu(config.node.port, mr_files)
            wait_for(lambda: all(_delivered(db, s.study_uid) for s in (ct, mr)), timeout=90, interval=0.1,
                     msg="not-analysed SRs delivered")
            statuses = {s["study_uid"]: s for s in node_status(config.source)}  # type: ignore[arg-type]
        db.dispose()
        for study, n_labels in ((ct, 6), (mr, 1)):
            got = _received(pacs, study.study_uid)
            assert [str(ds.SOPClassUID) for ds in got] == [SR_CLASS], "only an SR, no overlays"
            sr = pydicom.dcmread(got[0].filename)
            findings = findings_by_code(sr)
            assert len(findings) == n_labels and {f.presence for f in findings.values()} == {"Undetermined"}
            assert all(f.probability is None for f in findings.values())
            reasons = [t for t in sr_text(sr) if t.startswith("Not analysed: ")]
            assert len(reasons) == 1 and len(reasons[0]) > len("Not analysed: ") + 10, sr_text(sr)
            model = statuses[study.study_uid]["models"][0]
            assert model["state"] == "not_analysed" and len(model["reason"]) > 10, model
        assert SPONTANEOUS_INTRACRANIAL_HYPOTENSION.value in findings_by_code(
            pydicom.dcmread(_received(pacs, mr.study_uid)[0].filename))
