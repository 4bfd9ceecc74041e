"""AI-vs-report monitoring: studies with known AI verdicts and reports give the expected counts, rates and
discordant list per model version and label; the alert fires (log + webhook) when the sensitivity drops
below its floor and clears when it recovers.

Real parts: the database, `reports import` of a CSV, the shipped report labeller, the serve-side
service pass, the `reports monitor --json` command, an HTTP webhook on a local socket.
"""

from __future__ import annotations

import csv
import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import REPO, write_config
from notify_helpers import Webhook
from outputs_helpers import ICH_MODEL
from sqlalchemy import select

from dicom_node.config import Config, load_config
from dicom_node.db.engine import Database, utcnow
from dicom_node.db.schema import Job, JobState, MonitorAlert, NotificationState, Result, Study
from dicom_node.ml.analysis import AnalysisStatus, Finding, StudyAnalysis
from dicom_node.ml.manifest import ICH_LABELS
from dicom_node.textreports.importer import import_file
from dicom_node.textreports.service import ReportsService

POSITIVE = "FINDINGS: Acute left subdural hematoma measuring 6 mm. IMPRESSION: Acute left subdural hematoma."
NEGATIVE = "FINDINGS: No acute intracranial hemorrhage. Ventricles normal. IMPRESSION: Normal CT head."


@pytest.fixture
def hook() -> Iterator[Webhook]:
    h = Webhook()
    yield h
    h.close()


def make_config(tmp_path: Path, hook: Webhook) -> Config:
    return load_config(write_config(
        tmp_path,
        reports={"min_sensitivity": 0.7, "min_specificity": 0.7, "min_cases": 4, "window_days": 30.0,
                 "alert_webhook_url": hook.url},
        delivery={"initial_backoff_seconds": 0.1, "max_backoff_seconds": 0.2, "poll_seconds": 0.05},
    ))


def add_case(db: Database, n: int, ai_subdural: bool, version: str = ICH_MODEL.version) -> str:
    """A study with the ICH model's result (subdural and 'any' present or absent); returns its UID."""
    uid = f"1.2.826.0.1.3680043.8.498.13{n:04d}"
    now = utcnow()
    findings = [Finding(label, 0.91 if ai_subdural and label in ("any", "subdural") else 0.03, 0.5,
                        ai_subdural and label in ("any", "subdural")) for label in ICH_LABELS]
    analysis = StudyAnalysis(replace(ICH_MODEL, version=version), AnalysisStatus.ANALYSED, study_uid=uid,
                             findings=findings)
    with db.write() as s:
        study = s.scalar(select(Study).where(Study.study_uid == uid))
        if study is None:
            study = Study(study_uid=uid, accession_number=f"ACC{n:04d}", patient_id=f"P{n}", first_received_at=now,
                          last_received_at=now)
            s.add(study)
            s.flush()
        job = Job(study_id=study.id, generation=1, model_name=f"ich@{version}", state=JobState.DONE, run_after=now,
                  created_at=now, updated_at=now)
        s.add(job)
        s.flush()
        s.add(Result(job_id=job.id, study_id=study.id, model_name="ich", model_version=version, status="analysed",
                     critical=ai_subdural, payload=analysis.to_json(), created_at=now))
    return uid


def import_reports(db: Database, folder: Path, reports: dict[int, str]) -> None:
    path = folder / f"reports-{min(reports)}.csv"
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "accession_number", "patient_id", "text"])
        for n, text in reports.items():
            w.writerow([f"R{n}", f"ACC{n:04d}", f"P{n}", text])
    result = import_file(db, path)
    assert (result.imported, result.rejected) == (len(reports), [])


def monitor_json(config: Config) -> dict:
    proc = subprocess.run([sys.executable, "-m", "dicom_node.cli", "reports", "monitor", "--config",
                           str(config.source), "--json"], capture_output=True, text=True, timeout=120, cwd=REPO,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def rows(doc: dict) -> dict[tuple[str, str], dict]:
    return {(a["version"], a["label"]): a for a in doc["agreement"]}


def test_agreement_discordant_studies_and_alerts(tmp_path: Path, hook: Webhook,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    config = make_config(tmp_path, hook)
    db = Database(config.database_url)
    service = ReportsService(config, db)
    try:
        # (AI subdural?, report) -> TP, TP, TP, FP, FN, TN, TN, TN
        cases = {1: (True, POSITIVE), 2: (True, POSITIVE), 3: (True, POSITIVE), 4: (True, NEGATIVE),
                 5: (False, POSITIVE), 6: (False, NEGATIVE), 7: (False, NEGATIVE), 8: (False, NEGATIVE)}
        uids = {n: add_case(db, n, ai) for n, (ai, _) in cases.items()}
        add_case(db, 1, False, version="0.2.0-site")  # another version of the model, counted on its own
        import_reports(db, tmp_path, {n: text for n, (_, text) in cases.items()})
        assert service.run_once() == 8  # the labeller labels the eight reports, then the check runs

        doc = monitor_json(config)
        by = rows(doc)
        sub = by[(ICH_MODEL.version, "subdural")]
        assert (sub["tp"], sub["fp"], sub["fn"], sub["tn"]) == (3, 1, 1, 3)
        assert sub["sensitivity"] == 0.75 and sub["specificity"] == 0.75
        assert sub["ppv"] == 0.75 and sub["npv"] == 0.75
        low, high = sub["sensitivity_ci"]
        assert 0.2 < low < 0.75 < high <= 1.0
        assert {(d["kind"], d["study_uid"]) for d in sub["discordant"]} == {
            ("ai_positive_report_negative", uids[4]), ("ai_negative_report_positive", uids[5])}
        assert by[(ICH_MODEL.version, "any")]["report_label"] == "hemorrhage"
        assert (by[(ICH_MODEL.version, "any")]["tp"], by[(ICH_MODEL.version, "any")]["fn"]) == (3, 1)
        other = by[("0.2.0-site", "subdural")]
        assert (other["tp"], other["fp"], other["fn"], other["tn"]) == (0, 0, 1, 0)
        assert doc["open_alerts"] == []
        with db.read() as s:
            assert list(s.scalars(select(MonitorAlert))) == []

        # the model starts missing subdurals: sensitivity 3/7 < 0.7 -> one alert per label and rate
        caplog.set_level(logging.INFO)
        for n in (9, 10, 11):
            add_case(db, n, False)
        import_reports(db, tmp_path, dict.fromkeys((9, 10, 11), POSITIVE))
        service.run_once()
        doc = monitor_json(config)
        assert rows(doc)[(ICH_MODEL.version, "subdural")]["sensitivity"] == round(3 / 7, 6)
        opened = {(a["label"], a["metric"]) for a in doc["open_alerts"]}
        assert opened == {("subdural", "sensitivity"), ("any", "sensitivity")}
        assert any(r.levelno == logging.ERROR and "below its floor" in r.getMessage() for r in caplog.records)
        assert len(hook.bodies) == 2  # posted by the same pass
        sent = {(b["label"], b["metric"]): b for b in hook.bodies}
        assert sent[("subdural", "sensitivity")]["value"] == round(3 / 7, 4)
        assert sent[("subdural", "sensitivity")]["floor"] == 0.7 and sent[("subdural", "sensitivity")]["cases"] == 7
        with db.read() as s:
            assert {a.state for a in s.scalars(select(MonitorAlert))} == {NotificationState.SENT}

        # a check that finds the same low rate opens nothing new; recovery clears the alert
        service.run_once()
        assert len(hook.bodies) == 2
        for n in range(12, 21):
            add_case(db, n, True)
        import_reports(db, tmp_path, dict.fromkeys(range(12, 21), POSITIVE))
        service.run_once()
        doc = monitor_json(config)
        assert rows(doc)[(ICH_MODEL.version, "subdural")]["sensitivity"] == 0.75  # 12 / 16
        assert doc["open_alerts"] == []
        with db.read() as s:
            assert all(a.cleared_at is not None for a in s.scalars(select(MonitorAlert)))
    finally:
        db.dispose()


def _pending_alert(db: Database, label: str) -> int:
    now = utcnow()
    with db.write() as s:
        row = MonitorAlert(model_name="ich", model_version=ICH_MODEL.version, label=label, metric="sensitivity",
                           value=0.4, floor=0.7, cases=10, window_days=30.0, body=json.dumps({"label": label}),
                           created_at=now, next_attempt_at=now, attempts=0, last_error="",
                           state=NotificationState.PENDING)
        s.add(row)
        s.flush()
        return row.id


def test_monitoring_alerts_are_claimed_so_two_serve_processes_post_each_once(tmp_path: Path, hook: Webhook) -> None:
    """Every `serve` on a shared database runs the monitor: an alert is posted by the process that claimed it,
    one held by a live process is left alone, and one whose claim ran out is taken over."""
    import threading
    from datetime import timedelta

    from dicom_node.textreports import monitor

    config = make_config(tmp_path, hook)
    db = Database(config.database_url)
    try:
        ids = [_pending_alert(db, label) for label in ("subdural", "any", "epidural")]
        threads = [threading.Thread(target=monitor.send_alerts, args=(db, hook.url, config.notify_retry, owner, 60.0))
                   for owner in ("host-a:1:x", "host-b:2:y")]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert sorted(b["label"] for b in hook.bodies) == ["any", "epidural", "subdural"]  # each once
        with db.read() as s:
            rows_ = {a.id: a for a in s.scalars(select(MonitorAlert))}
            assert {rows_[i].state for i in ids} == {NotificationState.SENT}
            assert all(rows_[i].claimed_by is None for i in ids)

        held = _pending_alert(db, "intraventricular")
        with db.write() as s:
            row = s.get(MonitorAlert, held)
            row.claimed_by, row.lease_until = "host-c:3:z", utcnow() + timedelta(seconds=60)
        assert monitor.send_alerts(db, hook.url, config.notify_retry, "host-a:1:x", 60.0) == 0
        assert len(hook.bodies) == 3  # a live process holds it

        with db.write() as s:
            s.get(MonitorAlert, held).lease_until = utcnow() - timedelta(seconds=1)  # that process died
        assert monitor.send_alerts(db, hook.url, config.notify_retry, "host-a:1:x", 60.0) == 1
        assert hook.bodies[-1]["label"] == "intraventricular"
        with db.read() as s:
            assert s.get(MonitorAlert, held).state == NotificationState.SENT
    finally:
        db.dispose()
