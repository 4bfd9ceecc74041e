"""The dashboard over HTTP against a running node (what `serve` runs, in-process, without a worker): login,
sessions and CSRF, admin edits of config.toml applied without a restart and audited, bad input refused
with a message and nothing changed, /metrics as Prometheus text, /healthz with the database or the disk
failing. Real sockets: DCMTK storescu/echoscu and a browser-like HTTP client.
"""

from __future__ import annotations

import sqlite3
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import REPO, free_port, wait_for, write_config
from e2e_helpers import storescu
from prometheus_client.parser import text_string_to_metric_families
from receiver_helpers import ct_series, write_series
from web_helpers import PASSWORD, WebClient, add_user, echoscu

from dicom_node.config import load_config
from dicom_node.runtime import audit
from dicom_node.runtime.node import Node
from dicom_node.runtime.services import build_node
from dicom_node.studies.status import study_status
from dicom_node.web import accounts

pytestmark = [pytest.mark.timeout(180)]


@dataclass
class Running:
    node: Node
    config: Path
    base: str
    db_path: Path

    def client(self) -> WebClient:
        return WebClient(self.base)

    def admin(self) -> WebClient:
        client = self.client()
        assert client.login("root").status == 303
        return client

    def audit_kinds(self) -> list[str]:
        return [e.kind for e in audit.recent(self.node.db, 500)]


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Running]:
    web_port = free_port()
    path = write_config(tmp_path, web={"port": web_port},
                        models={"path": str(REPO / "models"), "enabled": [{"name": "ich", "version": "0.1.0-synthetic-demo"}]},
                        destinations=[{"name": "pacs", "ae_title": "PACS", "host": "127.0.0.1", "port": free_port()}])
    config = load_config(path)
    node = build_node(config, log_level="WARNING", local_worker=False)
    accounts.add_user(node.db, "root", "admin", PASSWORD)
    accounts.add_user(node.db, "reader1", "reader", PASSWORD)
    node.start()
    try:
        yield Running(node, path, f"http://127.0.0.1:{web_port}", Path(config.database_url.split(":///", 1)[1]))
    finally:
        node.stop()


def metrics(client: WebClient) -> dict[str, float]:
    """Every sample of /metrics, parsed by prometheus_client's own parser: `name{k="v",…}` → value."""
    reply = client.get("/metrics", accept="text/plain")
    assert reply.status == 200 and reply.headers["content-type"].startswith("text/plain")
    out = {}
    for family in text_string_to_metric_families(reply.body):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            out[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return out


def test_pages_need_a_login_and_the_role(running: Running) -> None:
    anonymous = running.client()
    for path in ("/", "/operations", "/admin", "/audit", "/studies/1.2.3"):
        reply = anonymous.get(path)
        assert reply.status == 303 and reply.headers["location"].startswith("/login"), path
    reply = anonymous.post("/admin/callers/add", {"ae_title": "SNEAKY", "csrf": "x", "version": "x"})
    assert reply.status == 401 and "Log in first" in reply.body
    assert anonymous.get("/worklist/rows", accept="*/*").status == 401
    assert anonymous.get("/healthz").status == 200 and anonymous.get("/metrics").status == 200

    assert anonymous.login("root", "wrong password").status == 401
    reader = running.client()
    assert reader.login("reader1").status == 303
    assert reader.get("/").status == 200 and reader.get("/operations").status == 200
    assert reader.get("/admin").status == 403
    fields = reader.form_fields("/")
    reply = reader.post("/admin/callers/add", {**fields, "ae_title": "SNEAKY", "version": "x"})
    assert reply.status == 403 and "admin role" in reply.body
    assert "SNEAKY" not in running.config.read_text()
    kinds = running.audit_kinds()
    assert "login-failed" in kinds and kinds.count("login") == 1


def test_login_form_and_session_csrf(running: Running) -> None:
    client = running.client()
    page = client.get("/login")
    reply = client.post("/login", {"csrf": "forged", "name": "root", "password": PASSWORD})
    assert reply.status == 403 and "out of date" in reply.body and page.status == 200
    assert client.login("root").status == 303
    stale = client.form_fields("/admin", "add-caller")
    client.post("/logout", {"csrf": stale["csrf"]})
    assert client.login("root").status == 303  # a new session, a new CSRF token
    before = running.config.read_text()
    reply = client.post("/admin/callers/add", {**stale, "ae_title": "LATE"})
    assert reply.status == 403 and "Nothing was changed" in reply.body
    assert running.config.read_text() == before


def test_one_time_login_link_works_once(running: Running) -> None:
    account = accounts.ensure_user(running.node.db, "demo", accounts.ADMIN)
    token = accounts.login_link_token(running.node.db, account)
    first, second = running.client(), running.client()
    assert first.get(f"/login/once/{token}").status == 303 and first.get("/admin").status == 200
    reply = second.get(f"/login/once/{token}")
    assert reply.status == 401 and "already used" in reply.body and second.get("/admin").status == 303


def test_admin_adds_a_calling_ae_applied_without_restart(running: Running) -> None:
    port = running.node.port
    assert port is not None
    assert echoscu(port, "NEWSCU").returncode != 0, "not yet a configured caller"
    client = running.admin()
    before = running.config.read_text()
    reply = client.post("/admin/callers/add", {**client.form_fields("/admin", "add-caller"),
                                               "ae_title": "NEWSCU", "host": "127.0.0.0/8"})
    assert reply.status == 303, reply.body
    assert echoscu(port, "NEWSCU").returncode == 0, "accepted at once, no restart"
    assert running.config.with_name("config.toml.previous").read_text() == before
    assert 'ae_title = "NEWSCU"' in running.config.read_text()
    assert load_config(running.config).callers[-1].ae_title == "NEWSCU"
    events = audit.recent(running.node.db, 50)
    change = next(e for e in events if e.kind == "config-changed")
    assert change.actor == "root" and "NEWSCU" in change.after and "NEWSCU" not in change.before
    rejected = [e for e in events if e.kind == "association-rejected" and e.actor == "NEWSCU"]
    accepted = [e for e in events if e.kind == "association-accepted" and e.actor == "NEWSCU"]
    assert len(rejected) == 1 and len(accepted) == 1 and "not configured" in rejected[0].detail
    assert "NEWSCU" in client.get("/audit").body

    # destinations, alert targets and thresholds take effect the same way
    fields = client.form_fields("/admin", "add-destination")
    assert client.post("/admin/destinations/add", {**fields, "name": "archive", "ae_title": "ARCHIVE",
                                                   "host": "127.0.0.1", "port": "11999"}).status == 303
    assert [d.name for d in running.node.config.destinations] == ["pacs", "archive"]
    fields = client.form_fields("/admin", "thresholds-ich")
    assert client.post("/admin/thresholds", {**fields, "model": "ich", "t_any": "0.42"}).status == 303
    assert running.node.config.models.enabled[0].thresholds == {"any": 0.42}
    fields = client.form_fields("/admin", "notifications")
    assert client.post("/admin/notifications", {**fields, "webhook_url": "http://127.0.0.1:9/hook",
                                                "hl7_host": "", "hl7_port": "0"}).status == 303
    assert running.node.config.notifications.webhook_url == "http://127.0.0.1:9/hook"
    assert load_config(running.config).destinations[-1].port == 11999


BAD_FORMS = [
    ("/admin/callers/add", "add-caller", {"ae_title": "FAR-TOO-LONG-AE-TITLE"}, "is not a valid AE title"),
    ("/admin/callers/add", "add-caller", {"ae_title": "BACK\\SLASH"}, "is not a valid AE title"),
    ("/admin/callers/add", "add-caller", {"ae_title": "   "}, "is not a valid AE title"),
    ("/admin/callers/add", "add-caller", {"ae_title": "OK", "host": "10.0.0.0/33"}, "is not an IP address or CIDR"),
    ("/admin/callers/add", "add-caller", {"ae_title": "OK", "host": "pacs.example"}, "is not an IP address or CIDR"),
    ("/admin/destinations/add", "add-destination",
     {"name": "x", "ae_title": "X", "host": "127.0.0.1", "port": "70000"}, "out of range 1-65535"),
    ("/admin/destinations/add", "add-destination",
     {"name": "x", "ae_title": "X", "host": "127.0.0.1", "port": "eleven"}, "is not a port number"),
    ("/admin/destinations/add", "add-destination",
     {"name": "pacs", "ae_title": "X", "host": "127.0.0.1", "port": "104"}, "duplicate destination name"),
    ("/admin/destinations/add", "add-destination",
     {"name": "x", "ae_title": "X\\Y", "host": "127.0.0.1", "port": "104"}, "is not a valid AE title"),
    ("/admin/destinations/remove", "add-destination", {"name": "nowhere"}, "no destination named"),
    ("/admin/notifications", "notifications", {"webhook_url": "ftp://x", "hl7_host": "", "hl7_port": "0"},
     "is not an http:// or https:// URL"),
    ("/admin/notifications", "notifications", {"webhook_url": "", "hl7_host": "ris", "hl7_port": "99999"},
     "out of range 1-65535"),
    ("/admin/thresholds", "thresholds-ich", {"model": "ich", "t_any": "1.5"}, "must be a number between 0 and 1"),
    ("/admin/thresholds", "thresholds-ich", {"model": "ich", "t_subdural": "-0.1"}, "must be a number between 0 and 1"),
    ("/admin/thresholds", "thresholds-ich", {"model": "ich", "t_any": "high"}, "is not a number between 0 and 1"),
    ("/admin/thresholds", "thresholds-ich", {"model": "nosuch", "t_any": "0.5"}, "no model named"),
    ("/admin/users/add", "add-user", {"name": "bob", "role": "admin", "password": "short"}, "at least 10 characters"),
    ("/admin/users/add", "add-user", {"name": "root", "role": "admin", "password": PASSWORD}, "already exists"),
    ("/admin/users/add", "add-user", {"name": "eve", "role": "owner", "password": PASSWORD}, "must be one of"),
]


def test_bad_input_gets_a_clear_message_and_changes_nothing(running: Running) -> None:
    client = running.admin()
    before = running.config.read_text()
    users = accounts.users(running.node.db)
    for path, form_id, form, expected in BAD_FORMS:
        reply = client.post(path, {**client.form_fields("/admin", form_id), **form})
        assert reply.status == 400, (path, form, reply.status, reply.body[-2000:])
        assert expected in reply.body, (path, form, reply.body[-3000:])
        assert running.config.read_text() == before, (path, form)
    assert not running.config.with_name("config.toml.previous").exists()
    assert accounts.users(running.node.db) == users
    assert running.node.config.callers == load_config(running.config).callers
    assert "config-changed" not in running.audit_kinds()

    # a form rendered before another admin's change is refused (409), not merged
    stale = client.form_fields("/admin", "add-caller")
    assert client.post("/admin/callers/add", {**stale, "ae_title": "FIRST"}).status == 303
    reply = client.post("/admin/callers/add", {**stale, "ae_title": "SECOND"})
    assert reply.status == 409 and "changed since this page was loaded" in reply.body
    assert "SECOND" not in running.config.read_text()
    reply = client.post("/studies/9.9.9/reanalyse", client.form_fields("/admin", "add-caller"))
    assert reply.status == 409 and "unknown" in reply.body


def test_metrics_parse_and_move_when_a_study_is_sent(running: Running, tmp_path: Path) -> None:
    client = running.client()
    first = metrics(client)
    assert first["dicom_node_database_up"] == 1.0
    assert first["dicom_node_instances_received_total"] == 0.0
    port = running.node.port
    assert port is not None
    files = write_series(tmp_path / "study", ct_series(3))
    storescu(port, files)
    assert echoscu(port, "STRANGER").returncode != 0
    wait_for(lambda: metrics(client)["dicom_node_studies_completed_total"] >= 1, msg="study completed")
    after = metrics(client)
    assert after["dicom_node_instances_received_total"] == 3.0
    assert after['dicom_node_associations_total{reason="",result="accepted"}'] >= 1
    assert after['dicom_node_associations_total{reason="calling_ae",result="rejected"}'] == 1
    assert after["dicom_node_ingest_seconds_count"] == 3.0
    assert after['dicom_node_jobs{model="ich",state="queued"}'] == 1.0
    assert after['dicom_node_model_enabled{model="ich",version="0.1.0-synthetic-demo"}'] == 1.0
    assert after["dicom_node_disk_free_bytes"] > 0

    # an admin asks for the study to be analysed again: a new generation, its job queued, audited
    admin = running.admin()
    [study] = study_status(running.node.db)
    uid = study["study_uid"]
    reply = admin.post(f"/studies/{uid}/reanalyse", admin.form_fields(f"/studies/{uid}"))
    assert reply.status == 303 and reply.headers["location"].endswith("done=reanalyse"), reply.body
    assert "Queued for analysis again" in admin.get(reply.headers["location"]).body
    assert metrics(client)["dicom_node_studies_completed_total"] == 2
    reply = admin.post(f"/studies/{uid}/resend", admin.form_fields(f"/studies/{uid}"))
    assert reply.status == 303 and reply.headers["location"].endswith("done=nothing-to-resend")
    events = [e for e in audit.recent(running.node.db, 50) if e.kind == "reanalyse"]
    assert [(e.actor, e.subject, e.detail) for e in events] == [("root", uid, "generation 2")]


def test_healthz_fails_when_the_database_is_locked_or_the_disk_is_low(running: Running) -> None:
    client = running.client()
    reply = client.get("/healthz")
    assert reply.status == 200 and '"status":"ok"' in reply.body

    holder = sqlite3.connect(running.db_path, timeout=1)
    holder.isolation_level = None
    holder.execute("BEGIN EXCLUSIVE")  # another process holding the write lock: nobody can store
    try:
        reply = client.get("/healthz")
        assert reply.status == 503 and '"database":{"ok":false' in reply.body and "locked" in reply.body
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert client.get("/healthz").status == 200

    moved = running.db_path.with_name("moved.db")
    running.db_path.rename(moved)  # the database file gone (a volume unmounted)
    try:
        reply = client.get("/healthz")
        assert reply.status == 503 and '"database":{"ok":false' in reply.body
    finally:
        moved.rename(running.db_path)

    config = running.node.config
    low = config.replace(storage=config.storage.replace(min_free_mb=10**9))
    running.node.apply_config(low)
    reply = client.get("/healthz")
    assert reply.status == 503 and '"disk":{"ok":false' in reply.body and "min_free_mb" in reply.body
    running.node.apply_config(config)
    assert client.get("/healthz").status == 200


def test_json_log_lines(tmp_path: Path) -> None:
    """`--log-format json`: one JSON object per line, the `extra=` context as keys, values escaped."""
    import json

    path = write_config(tmp_path, callers=[{"ae_title": "BAD\\NAME"}])
    proc = subprocess.run([str(REPO / ".venv" / "bin" / "dicom-node"), "--log-format", "json", "user", "list",
                           "--config", str(path)], capture_output=True, text=True, check=False, timeout=120)
    assert proc.returncode == 1 and "is not a valid AE title" in proc.stderr
    import contextlib
    import io
    import logging

    from dicom_node.runtime.logs import setup_logging

    stream = io.StringIO()
    with contextlib.redirect_stderr(stream):
        setup_logging("INFO", json_lines=True)
        logging.getLogger("dicom_node.test").warning("study\nforged line", extra={"study_uid": "1.2\n3", "n": 3})
    setup_logging("WARNING")
    [line] = stream.getvalue().splitlines()
    doc = json.loads(line)
    assert doc["level"] == "WARNING" and doc["logger"] == "dicom_node.test" and doc["n"] == 3
    assert doc["message"] == "study\\x0aforged line" and doc["study_uid"] == "1.2\\x0a3"
    assert doc["time"].endswith("Z")


def test_user_add_command(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    assert add_user(path, "alice", "admin").returncode == 0
    again = add_user(path, "alice", "reader")
    assert again.returncode == 1 and "already exists" in again.stderr
    short = add_user(path, "bob", "reader", "short")
    assert short.returncode == 1 and "at least 10 characters" in short.stderr
    bad = add_user(path, "bad name!", "reader")
    assert bad.returncode == 1 and "user name" in bad.stderr
    link = subprocess.run(
        [str(REPO / ".venv" / "bin" / "dicom-node"), "user", "add", "carol", "--role", "reader", "--config", str(path),
         "--login-link"], capture_output=True, text=True, check=False, timeout=120)
    assert link.returncode == 0 and "/login/once/" in link.stdout, link.stderr
    config = load_config(path)
    from dicom_node.db.engine import Database

    db = Database(config.database_url)
    try:
        assert [(a.name, a.role) for a in accounts.users(db)] == [("alice", "admin"), ("carol", "reader")]
        assert accounts.authenticate(db, "alice", PASSWORD) is not None
        assert accounts.authenticate(db, "alice", "not the password") is None
        with db.read() as session:
            from sqlalchemy import select

            from dicom_node.db.schema import User

            hashes = list(session.scalars(select(User.password_hash)))
        assert all(h.startswith("$argon2id$") and PASSWORD not in h for h in hashes)
    finally:
        db.dispose()


def test_echo_button_and_unknown_things(running: Running) -> None:
    reader = running.client()
    assert reader.login("reader1").status == 303
    fields = reader.form_fields("/operations")
    reply = reader.post("/operations/echo", {**fields, "destination": "pacs"})  # nobody listens there
    assert reply.status == 303
    page = reader.get(reply.headers["location"]).body
    assert "C-ECHO pacs (PACS@127.0.0.1:" in page and "failed" in page
    reply = reader.post("/operations/echo", {**fields, "destination": "nowhere"})
    assert reply.status == 400 and "No destination named" in reply.body
    echo = [e for e in audit.recent(running.node.db, 20) if e.kind == "echo"]
    assert [(e.actor, e.subject) for e in echo] == [("reader1", "pacs")] and "failed" in echo[0].detail
    assert reader.get("/studies/1.2.3.4").status == 404
    assert reader.get("/studies/1.2.3.4/images/5.6.7.png").status == 404
    assert reader.post("/studies/1.2.3.4/reanalyse", fields).status == 403  # readers change nothing
