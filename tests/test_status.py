"""`dicom-node status --config FILE [--json]`: per-study state and counts, jobs, findings, deliveries."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from conftest import REPO
from receiver_helpers import ct_series, make_config, storescu, write_series
from sqlalchemy import select

from dicom_node.db.engine import Database, utcnow
from dicom_node.db.schema import Delivery, Job, JobState, Output, Result, Study
from dicom_node.receiver import start_receiver

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
    assert sa["jobs"] == {} and sa["findings"] == [] and sa["deliveries"] == {}
    assert sb["jobs"] == {"done": 1}
    assert sb["findings"] == [{"model": "ich", "version": "0.1.0", "status": "analysed", "critical": True,
                               "present": [{"label": "subdural", "probability": 0.91}]}]
    assert sb["deliveries"] == {"pending": 1}

    table = _status(config.source)
    assert table.returncode == 0, table.stderr
    row = next(line for line in table.stdout.splitlines() if line.startswith(b[0].StudyInstanceUID))
    assert " 7 " in row and "ich:subdural" in row and "pending:1" in row


def test_status_of_an_empty_node(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    assert config.source is not None
    result = _status(config.source, "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []
