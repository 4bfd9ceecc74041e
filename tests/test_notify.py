"""Durable critical-finding alerts: queued with the result, sent by the notifier with retries and backoff,
HL7 ACK control IDs checked, a failed alert visible in `dicom-node status`.

Real receivers on local sockets (an HTTP server, an MLLP listener) that are down, then come up.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import free_port, wait_for, write_config
from notify_helpers import MllpListener, Webhook, control_id
from outputs_helpers import ich_analysis, make_series
from sqlalchemy import select

from dicom_node.config import Config, load_config
from dicom_node.db.engine import Database, utcnow
from dicom_node.db.schema import Notification, NotificationState, Study
from dicom_node.notify.sender import Notifier
from dicom_node.studies import triage
from dicom_node.studies.status import study_status

STUDY_UID = "1.2.826.0.1.3680043.8.498.7701"


def make_config(tmp_path: Path, **notifications: str | int) -> Config:
    return load_config(
        write_config(
            tmp_path,
            notifications=dict(notifications),
            delivery={"initial_backoff_seconds": 0.2, "max_backoff_seconds": 0.5, "poll_seconds": 0.05},
        )
    )


@pytest.fixture
def opened() -> Iterator[list[Database]]:
    dbs: list[Database] = []
    yield dbs
    for db in dbs:
        db.dispose()


def critical_result(config: Config, opened: list[Database]) -> Database:
    """A study raised to STAT by a critical result, as the worker does it: the alert queued with it."""
    db = Database(config.database_url)
    opened.append(db)
    now = utcnow()
    with db.write() as s:
        study = Study(study_uid=STUDY_UID, accession_number="ACC77", patient_id="PAT77",
                      first_received_at=now, last_received_at=now)
        s.add(study)
        s.flush()
        assert triage.apply_priority(s, study, ich_analysis(make_series("CT", n=2), positive=True))
    return db


def alerts(db: Database) -> dict[str, Notification]:
    with db.read() as s:
        return {n.target: n for n in s.scalars(select(Notification))}


def test_receivers_down_for_a_while_still_get_the_alert_once(tmp_path: Path, opened: list[Database]) -> None:
    hook_port, mllp_port = free_port(), free_port()
    config = make_config(tmp_path, webhook_url=f"http://127.0.0.1:{hook_port}/hook", hl7_host="127.0.0.1",
                         hl7_port=mllp_port)
    db = critical_result(config, opened)
    notifier = Notifier(config, db, timeout=2)
    assert notifier.run_once() == 0
    down = alerts(db)
    assert all(n.state == NotificationState.PENDING and n.attempts == 1 for n in down.values())
    assert "refused" in down["webhook"].last_error.lower() and "refused" in down["hl7"].last_error.lower()
    (shown,) = study_status(db)
    assert shown["notifications"]["webhook"]["state"] == "pending" and shown["notifications"]["hl7"]["last_error"]
    wait_for(lambda: notifier.run_once() == 0 and min(n.attempts for n in alerts(db).values()) >= 2,
             timeout=5, msg="a second try while both receivers are still down")

    hook, listener = Webhook(port=hook_port), MllpListener(port=mllp_port)
    notifier.start()
    try:
        wait_for(lambda: all(n.state == NotificationState.SENT for n in alerts(db).values()), timeout=10,
                 msg="both alerts delivered once the receivers are up")
    finally:
        notifier.stop()
    try:
        assert notifier.run_once() == 0
        assert len(hook.bodies) == 1 and hook.bodies[0]["study_instance_uid"] == STUDY_UID
        assert hook.bodies[0]["accession_number"] == "ACC77" and "PAT77" not in json.dumps(hook.bodies)
        (message,) = listener.messages
        assert control_id(message) == alerts(db)["hl7"].control_id
        assert message.split("\r")[1] == "PID|1||PAT77"
    finally:
        hook.close()
        listener.close()
    (shown,) = study_status(db)
    assert {t: n["state"] for t, n in shown["notifications"].items()} == {"webhook": "sent", "hl7": "sent"}


def test_ack_with_another_control_id_is_not_a_delivery(tmp_path: Path, opened: list[Database]) -> None:
    listener = MllpListener(control_id="0123456789abcdef0123")
    try:
        config = make_config(tmp_path, hl7_host="127.0.0.1", hl7_port=listener.port)
        db = critical_result(config, opened)
        notifier = Notifier(config, db, timeout=2)
        assert notifier.run_once() == 0
        rows = alerts(db)
        assert rows["webhook"].state == NotificationState.SKIPPED, "no webhook configured"
        hl7 = rows["hl7"]
        assert hl7.state == NotificationState.PENDING and hl7.attempts == 1
        assert "control ID '0123456789abcdef0123', not" in hl7.last_error

        listener.ack = "AE"  # right control ID, but an application error: still not delivered
        listener.control_id = None
        wait_for(lambda: notifier.run_once() == 0 and alerts(db)["hl7"].attempts >= 2, timeout=5, msg="AE")
        assert "answered AE" in alerts(db)["hl7"].last_error

        listener.ack = "CA"
        wait_for(lambda: notifier.run_once() or alerts(db)["hl7"].state == NotificationState.SENT, timeout=5,
                 msg="the accepted retry")
        assert alerts(db)["hl7"].state == NotificationState.SENT
        sent = {control_id(m) for m in listener.messages}
        assert sent == {hl7.control_id} and len(listener.messages) == 3, "a retry repeats the same message"
    finally:
        listener.close()


def test_refused_webhook_fails_at_once_and_shows_in_status(tmp_path: Path, opened: list[Database]) -> None:
    hook = Webhook(status=503)
    try:
        config = make_config(tmp_path, webhook_url=hook.url)
        db = critical_result(config, opened)
        notifier = Notifier(config, db, timeout=2)
        assert notifier.run_once() == 0
        row = alerts(db)["webhook"]
        assert row.state == NotificationState.PENDING and "HTTP 503" in row.last_error, "503: try again later"
        hook.status = 404
        wait_for(lambda: notifier.run_once() == 0 and alerts(db)["webhook"].state == NotificationState.FAILED,
                 timeout=5, msg="404: refused for good")
        assert alerts(db)["webhook"].attempts == 2 and len(hook.bodies) == 2
    finally:
        hook.close()

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "dicom_node.cli", *args, "--config", str(config.source)],
                              capture_output=True, text=True, timeout=60, check=False)

    shown = cli("status", "--json")
    assert shown.returncode == 0, shown.stderr
    (study,) = json.loads(shown.stdout)
    assert study["notifications"]["webhook"] == {"state": "failed", "attempts": 2,
                                                 "last_error": "webhook answered HTTP 404", "sent_at": None}
    assert "hl7" not in study["notifications"], "a target that is not configured is not shown"
    table = cli("status")
    assert "webhook:failed" in table.stdout
    again = cli("retry", "--notifications")
    assert again.returncode == 0 and "re-queued 1 critical-finding alerts" in again.stdout, again.stderr
    assert alerts(db)["webhook"].state == NotificationState.PENDING and alerts(db)["webhook"].attempts == 0
