"""Triage: priority rules (critical → STAT, never lowered) and the critical-finding alert they queue."""

from __future__ import annotations

import json
from dataclasses import replace

from outputs_helpers import ich_analysis, make_series
from sqlalchemy import select

from dicom_node.config import NotificationsConfig
from dicom_node.db.engine import Database, utcnow
from dicom_node.db.schema import Notification, NotificationState, Priority, Study
from dicom_node.studies import triage


def test_priority_for_findings() -> None:
    series = make_series("CT", n=3, size=32)
    assert triage.priority_for(ich_analysis(series, positive=True)) == Priority.STAT
    assert triage.priority_for(ich_analysis(series, positive=False)) == Priority.ROUTINE
    present_not_critical = ich_analysis(series, positive=True)
    present_not_critical.findings = [replace(f, critical=False) for f in present_not_critical.findings]
    assert triage.priority_for(present_not_critical) == Priority.ROUTINE


def test_apply_priority_raises_and_never_lowers(tmp_path) -> None:
    db = Database(f"sqlite:///{tmp_path}/t.db")
    series = make_series("CT", n=3, size=32)
    now = utcnow()
    with db.write() as s:
        study = Study(study_uid="1.2.3", first_received_at=now, last_received_at=now)
        s.add(study)
        s.flush()
        assert not triage.apply_priority(s, study, ich_analysis(series, positive=False))
        assert study.priority == Priority.ROUTINE.value
        assert triage.apply_priority(s, study, ich_analysis(series, positive=True))
        assert study.priority == Priority.STAT.value
        assert not triage.apply_priority(s, study, ich_analysis(series, positive=False))
        assert not triage.apply_priority(s, study, ich_analysis(series, positive=True))
        assert study.priority == Priority.STAT.value
    db.dispose()


def test_webhook_payload_has_identifiers_but_no_demographics() -> None:
    series = make_series("CT", n=3, size=32)
    body = triage.webhook_payload("1.2.3", "ACC0001", ich_analysis(series, positive=True))
    text = json.dumps(body)
    assert body["study_instance_uid"] == "1.2.3" and body["accession_number"] == "ACC0001"
    assert body["model"]["synthetic_demo"] is True
    assert [f["label"] for f in body["findings"]] == ["any", "subdural"]
    assert "Synthetic" not in text and "SYN0001" not in text and "19700101" not in text


def test_raising_to_stat_queues_one_alert_per_target_in_the_same_transaction(tmp_path) -> None:
    db = Database(f"sqlite:///{tmp_path}/t.db")
    series = make_series("CT", n=3, size=32)
    now = utcnow()
    with db.write() as s:
        study = Study(study_uid="1.2.3", accession_number="A1", patient_id="P7", first_received_at=now,
                      last_received_at=now)
        s.add(study)
        s.flush()
        assert not triage.apply_priority(s, study, ich_analysis(series, positive=False))
        assert s.scalars(select(Notification)).all() == []
        assert triage.apply_priority(s, study, ich_analysis(series, positive=True))
    with db.read() as s:
        rows = {n.target: n for n in s.scalars(select(Notification))}
    assert set(rows) == {"webhook", "hl7"}
    assert all(n.state == NotificationState.PENDING and n.attempts == 0 for n in rows.values())
    assert json.loads(rows["webhook"].body)["study_instance_uid"] == "1.2.3"
    hl7 = rows["hl7"]
    assert hl7.control_id and hl7.body.split("\r")[0].split("|")[9] == hl7.control_id
    assert hl7.body.split("\r")[1] == "PID|1||P7"
    db.dispose()


def test_notify_critical_says_whether_an_alert_is_on_its_way() -> None:
    series = make_series("CT", n=3, size=32)
    hook = NotificationsConfig(webhook_url="http://127.0.0.1:9/hook")
    assert not triage.notify_critical(hook, "1.2.3", "A1", ich_analysis(series, positive=False))
    assert not triage.notify_critical(NotificationsConfig(), "1.2.3", "A1", ich_analysis(series, positive=True))
    assert triage.notify_critical(hook, "1.2.3", "A1", ich_analysis(series, positive=True), patient_id="P7")
    hl7 = NotificationsConfig(hl7_host="127.0.0.1", hl7_port=9)
    assert triage.notify_critical(hl7, "1.2.3", "A1", ich_analysis(series, positive=True))
