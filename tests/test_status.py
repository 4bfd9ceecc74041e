"""`dicom-node status --config FILE [--json]`: who, when, state per model with reasons, deliveries, alerts;
header values escaped in status and in log lines."""

from __future__ import annotations

import json
import logging
import subprocess
from pathlib import Path

import pytest
from conftest import REPO
from outputs_helpers import ICH_MODEL
from receiver_helpers import ct_series, make_config, storescu, write_series
from sqlalchemy import select

from dicom_node.db.engine import Database, utcnow
from dicom_node.db.schema import (
    Delivery,
    DeliveryState,
    Job,
    JobState,
    Output,
    Priority,
    Result,
    Study,
    StudyState,
)
from dicom_node.ml.analysis import AnalysisStatus, StudyAnalysis
from dicom_node.receiver import start_receiver
from dicom_node.runtime.logs import setup_logging

DICOM_NODE = REPO / ".venv" / "bin" / "dicom-node"


def _status(config_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    cmd = [str(DICOM_NODE), "status", "--config", str(config_path), *extra]
    return subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=60)


def test_status_json_lists_per_study_counts(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    assert config.source is not None
    db = Database(config.database_url)
    handle = start_receiver(config, db)
    try:
        a, b = ct_series(3), ct_series(5)
        b += ct_series(2, study_uid=b[0].StudyInstanceUID)  # a second series in study b
        for name, series in (("a", a), ("b", b)):
            result = storescu(handle.port, write_series(tmp_path / name, series))
            assert result.returncode == 0, result.stderr
    finally:
        handle.shutdown(grace_seconds=2)

    now = utcnow()
    with db.write() as s:
        study_b = s.scalars(select(Study).where(Study.study_uid == b[0].StudyInstanceUID)).one()
        job = Job(study_id=study_b.id, generation=1, model_name="ich", state=JobState.DONE, run_after=now,
                  created_at=now, updated_at=now)
        s.add(job)
        s.flush()
        payload = {"findings": [{"label": "subdural", "probability": 0.91, "present": True},
                                {"label": "epidural", "probability": 0.02, "present": False}]}
        result_row = Result(job_id=job.id, study_id=study_b.id, model_name="ich", model_version="0.1.0",
                            status="analysed", critical=True, payload=payload, created_at=now)
        s.add(result_row)
        s.flush()
        out = Output(study_id=study_b.id, result_id=result_row.id, kind="sr", sop_class_uid="1.2", sop_instance_uid="2.25.1",
                     series_uid="2.25.2", path="x.dcm", created_at=now)
        s.add(out)
        s.flush()
        s.add(Delivery(output_id=out.id, destination="pacs", next_attempt_at=now, created_at=now))
    db.dispose()

    result = _status(config.source, "--json")
    assert result.returncode == 0, result.stderr
    studies = {s["study_uid"]: s for s in json.loads(result.stdout)}
    assert set(studies) == {a[0].StudyInstanceUID, b[0].StudyInstanceUID}
    sa, sb = studies[a[0].StudyInstanceUID], studies[b[0].StudyInstanceUID]
    assert (sa["instances"], sa["series"], sa["state"]) == (3, 1, "receiving")
    assert (sb["instances"], sb["series"]) == (7, 2)
    assert sa["jobs"] == {} and sa["models"] == [] and sa["deliveries"] == {}
    assert sb["jobs"] == {"done": 1}
    assert sb["models"][0].pop("analysed_at").endswith("Z") and sb["models"][0].pop("probability") >= 0.91
    assert sb["models"] == [{"model": "ich", "version": "0.1.0", "state": "analysed", "reason": "", "critical": True,
                             "present": [{"label": "subdural", "probability": 0.91}], "attempts": 0,
                             "generation": 1}]
    assert sb["deliveries"] == {"pending": 1} and sb["delivery_problems"] == []
    assert sb["patient_id"] == b[0].PatientID and sb["first_received_at"].endswith("Z")

    table = _status(config.source)
    assert table.returncode == 0, table.stderr
    row = next(line for line in table.stdout.splitlines() if line.endswith(b[0].StudyInstanceUID))
    assert " 7 " in row and "ich:subdural" in row and "pending:1" in row and b[0].PatientID in row


def test_status_of_an_empty_node(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    assert config.source is not None
    result = _status(config.source, "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []


def add_study(db: Database, uid: str, accession: str, patient_id: str, *results: tuple[str, JobState, str, str]) -> None:
    """A completed study with one job per (model, job state, result status or "", reason)."""
    now = utcnow()
    with db.write() as s:
        study = Study(study_uid=uid, accession_number=accession, patient_id=patient_id, generation=1,
                      state=StudyState.ANALYSED, priority=Priority.ROUTINE.value, first_received_at=now,
                      last_received_at=now, completed_at=now)
        s.add(study)
        s.flush()
        for model, job_state, status, reason in results:
            job = Job(study_id=study.id, generation=1, model_name=model, state=job_state, attempts=1, run_after=now,
                      created_at=now, updated_at=now, last_error=reason if job_state != JobState.DONE else "")
            s.add(job)
            s.flush()
            if status:
                analysis = StudyAnalysis(model=ICH_MODEL, status=AnalysisStatus(status), reason=reason, study_uid=uid)
                s.add(Result(job_id=job.id, study_id=study.id, model_name=model, model_version=ICH_MODEL.version,
                             status=status, critical=False, payload=analysis.to_json(), created_at=now))
        s.flush()
        if results:
            out = Output(study_id=study.id, result_id=s.scalars(select(Result.id)).first(), kind="sr",
                         sop_class_uid="1.2.840.10008.5.1.4.1.1.88.34", sop_instance_uid=f"2.25.{study.id}",
                         series_uid="2.25.9", path="x.dcm", created_at=now)
            s.add(out)
            s.flush()
            s.add(Delivery(output_id=out.id, destination="pacs", state=DeliveryState.FAILED, attempts=1,
                           next_attempt_at=now, created_at=now,
                           last_error="C-STORE refused: status 0x0122 (SOP class not supported)"))


def test_not_analysed_and_failed_models_are_shown_with_their_reasons(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    assert config.source is not None
    db = Database(config.database_url)
    add_study(db, "1.2.826.0.1.3680043.8.498.501", "ACC501", "PAT501",
              ("ich", JobState.DONE, "not_analysed", "no axial non-contrast head CT series (3 series looked at)"),
              ("sih", JobState.FAILED, "failed", "analysis failed after 3 attempts: PixelDataError: truncated"))
    add_study(db, "1.2.826.0.1.3680043.8.498.502", "ACC502", "PAT502",
              ("ich", JobState.QUEUED, "", "RuntimeError: CUDA out of memory"))
    db.dispose()

    result = _status(config.source, "--json")
    assert result.returncode == 0, result.stderr
    studies = {s["accession_number"]: s for s in json.loads(result.stdout)}
    first = studies["ACC501"]
    assert first["patient_id"] == "PAT501" and first["first_received_at"]
    states = {m["model"]: (m["state"], m["reason"]) for m in first["models"]}
    assert states == {
        "ich": ("not_analysed", "no axial non-contrast head CT series (3 series looked at)"),
        "sih": ("failed", "analysis failed after 3 attempts: PixelDataError: truncated"),
    }
    assert first["delivery_problems"] == [{"destination": "pacs", "state": "failed", "objects": 1, "attempts": 1,
                                           "reason": "C-STORE refused: status 0x0122 (SOP class not supported)"}]
    (queued,) = studies["ACC502"]["models"]
    assert (queued["state"], queued["reason"], queued["attempts"]) == ("queued", "RuntimeError: CUDA out of memory", 1)

    table = _status(config.source)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    i = next(n for n, line in enumerate(lines) if line.endswith("1.2.826.0.1.3680043.8.498.501"))
    row = lines[i]
    assert "ACC501" in row and "PAT501" in row and "ROUTINE" in row
    assert "ich:not analysed" in row and "sih:failed" in row and "failed:1" in row
    assert " analysed " not in row.replace("not analysed", ""), "a study not analysed is never shown as analysed"
    assert lines[i + 1].strip() == "ich: not analysed: no axial non-contrast head CT series (3 series looked at)"
    assert lines[i + 2].strip() == "sih: failed: analysis failed after 3 attempts: PixelDataError: truncated"
    assert lines[i + 3].strip() == (
        "delivery to pacs (1 objects): failed: C-STORE refused: status 0x0122 (SOP class not supported)"
    )
    j = next(n for n, line in enumerate(lines) if line.endswith("1.2.826.0.1.3680043.8.498.502"))
    assert "ich:queued" in lines[j]
    assert lines[j + 1].strip() == "ich: queued (attempt 1, will retry): RuntimeError: CUDA out of memory"


FORGED_UID = "1.2.826.0.1.3680043.8.498.503\n2026-01-01T00:00:00Z  FORGED  PAT999  STAT"


def test_a_newline_in_header_values_cannot_forge_status_lines(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    assert config.source is not None
    db = Database(config.database_url)
    add_study(db, FORGED_UID, "ACC\r\nFAKE", "PAT\x1b[2J503")
    db.dispose()
    table = _status(config.source)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert len(lines) == 2, lines  # the header and the study's one row
    assert "\\x0a2026-01-01T00:00:00Z" in lines[1] and "ACC\\x0d\\x0aFAKE" in lines[1]
    assert "\x1b" not in table.stdout and "PAT\\x1b[2J503" in lines[1]
    result = _status(config.source, "--json")
    (study,) = json.loads(result.stdout)
    assert study["study_uid"] == FORGED_UID.replace("\n", "\\x0a")
    assert study["accession_number"] == "ACC\\x0d\\x0aFAKE"


def test_a_newline_in_a_logged_value_cannot_forge_log_lines(capfd: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    setup_logging("INFO")  # the node's own handler and formatter, writing to stderr
    try:
        logging.getLogger("dicom_node.test").warning(
            "study %s complete", FORGED_UID, extra={"study_uid": FORGED_UID, "accession": "A\rB"}
        )
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
    err = capfd.readouterr().err
    assert len(err.splitlines()) == 1, err
    assert err.count("\\x0a2026-01-01T00:00:00Z") == 2 and "accession=A\\x0dB" in err
