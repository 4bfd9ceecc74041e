"""Schema migrations (Alembic, `db/migrations.py`): a database made by the previous release (its
`schema_version` 1) or by the one before it (no `schema_version`, version 0) is adopted and upgraded in place
at start-up and by `dicom-node db upgrade`, on SQLite and PostgreSQL; its rows survive, its pending work
carries on, and the database then refuses a status value the code does not know.

tests/data/schema_v1_sqlite.sql is the previous release's schema as its `Database()` made it (commit dd7eb10,
dumped with sqlite3 `.schema`); schema_v1_postgresql.sql the same as its `create_all` made it on PostgreSQL;
schema_v0_*.sql the release before versioned schemas (commit 3bf87e7).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import write_config
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from dicom_node.cli import main
from dicom_node.config import Config, load_config
from dicom_node.db import migrations
from dicom_node.db.alembic.versions import r0002_status_checks
from dicom_node.db.engine import Database, utcnow
from dicom_node.db.schema import Association, Delivery, Job, JobState
from dicom_node.delivery import state
from dicom_node.jobs import queue as jobs
from dicom_node.runtime.node import Node

DATA = Path(__file__).parent / "data"
NEW_COLUMNS = {  # since version 0
    "associations": {"owner"},
    "deliveries": {"claimed_by", "lease_until"},
    "notifications": {"claimed_by", "lease_until"},
    "jobs": {"lease_expiries"},
    "studies": {"pixels_unlink_pending"},
}
CHECKS = {f"ck_{table}_{column}" for table, column in r0002_status_checks.ALLOWED}
# a value no status column allows, per table with a row in the old database
BAD_STATUS = {"studies": "state", "jobs": "state", "results": "status", "deliveries": "state"}


def make_previous_release_database(engine: Engine, dialect: str, release: str) -> None:
    """A release's tables, with a study analysed, its SR in the outbox waiting for delivery, a running job
    of a later generation and an association left open, as such a node leaves them."""
    ddl = (DATA / f"schema_{release}_{dialect}.sql").read_text()
    now = utcnow()
    with engine.begin() as conn:
        for statement in ddl.split(";\n"):
            body = "\n".join(line for line in statement.splitlines() if not line.startswith("--")).strip()
            if body:
                conn.execute(text(body))
        if release == "v1":
            conn.execute(text("INSERT INTO schema_version (version) VALUES (1)"))
        rows = [
            ("INSERT INTO associations (id, calling_ae, peer_address, started_at, released, n_stored) "
             "VALUES ('a1', 'PACS', '127.0.0.1', :now, false, 3)"),
            ("INSERT INTO studies (id, study_uid, patient_id, accession_number, study_date, state, generation, "
             "priority, first_received_at, last_received_at) "
             "VALUES (1, '1.2.3', '', '', '', 'analysed', 2, 0, :now, :now)"),
            ("INSERT INTO jobs (id, study_id, generation, model_name, state, priority, attempts, max_attempts, "
             "run_after, last_error, created_at, updated_at) "
             "VALUES (1, 1, 1, 'ich', 'done', 0, 1, 3, :now, '', :now, :now)"),
            ("INSERT INTO jobs (id, study_id, generation, model_name, state, priority, attempts, max_attempts, "
             "run_after, lease_expires_at, worker_id, last_error, created_at, updated_at) "
             "VALUES (2, 1, 2, 'ich', 'running', 0, 1, 3, :now, :now, 'gone', '', :now, :now)"),
            ("INSERT INTO results (id, job_id, study_id, model_name, model_version, status, critical, payload, "
             "created_at) VALUES (1, 1, 1, 'ich', '1', 'analysed', false, '{}', :now)"),
            ("INSERT INTO outputs (id, study_id, result_id, kind, sop_class_uid, sop_instance_uid, series_uid, "
             "path, created_at) VALUES (1, 1, 1, 'sr', '1.2.840.10008.5.1.4.1.1.88.34', '1.2.3.9', '1.2.3.8', "
             "'1.2.3/1.2.3.9.dcm', :now)"),
            ("INSERT INTO deliveries (id, output_id, destination, state, attempts, next_attempt_at, last_error, "
             "created_at) VALUES (1, 1, 'pacs', 'pending', 0, :now, '', :now)"),
        ]
        for row in rows:
            conn.execute(text(row), {"now": now})


def columns(engine: Engine) -> dict[str, set[str]]:
    insp = inspect(engine)
    return {t: {c["name"] for c in insp.get_columns(t)} for t in insp.get_table_names()}


def signature(engine: Engine) -> dict[str, Any]:
    """Per table: columns (type, nullable), CHECK and unique constraints, indexes (partial ones with their
    condition) and foreign keys, each sorted: two databases with equal signatures have the same schema."""
    insp = inspect(engine)
    out = {}
    for t in insp.get_table_names():
        out[t] = (
            sorted((c["name"], str(c["type"]), c["nullable"]) for c in insp.get_columns(t)),
            sorted((c["name"], str(c["sqltext"])) for c in insp.get_check_constraints(t)),
            sorted(tuple(u["column_names"]) for u in insp.get_unique_constraints(t)),
            sorted((i["name"], tuple(i["column_names"]), bool(i["unique"]),
                    sorted((k, str(v)) for k, v in i.get("dialect_options", {}).items())) for i in insp.get_indexes(t)),
            sorted((tuple(f["constrained_columns"]), f["referred_table"], tuple(f["referred_columns"]))
                   for f in insp.get_foreign_keys(t)),
        )
    return out


def revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return migrations.inspect_schema(conn).revision


def check_upgraded(db: Database, config: Config, fresh: Database) -> None:
    """The old database has this release's schema and revision, its rows, and its pending work is claimable;
    the database refuses an unknown status."""
    assert signature(db.engine) == signature(fresh.engine)  # every table, column, constraint and index
    got = columns(db.engine)
    for table, added in NEW_COLUMNS.items():
        assert added <= got[table]
    assert "schema_version" not in got
    assert CHECKS == {c["name"] for t in got for c in inspect(db.engine).get_check_constraints(t)}
    assert revision(db.engine) == migrations.HEAD
    with db.read() as s:
        assert s.execute(text("SELECT count(*) FROM jobs")).scalar_one() == 2
        assert s.execute(text("SELECT pixels_unlink_pending FROM studies WHERE id = 1")).scalar_one() in (0, False)
    for table, column in BAD_STATUS.items():
        with pytest.raises(IntegrityError, match=f"ck_{table}_{column}|CHECK constraint failed"), db.write() as s:
            s.execute(text(f"UPDATE {table} SET {column} = 'paused'"))
    with db.write() as s:
        (item,) = state.claim_due(s, "node-a", 60, utcnow())
        assert (item.delivery_id, item.destination, item.path) == (1, "pacs", "1.2.3/1.2.3.9.dcm")
    with db.write() as s:
        state.mark_sent(s, 1, utcnow(), "node-a")
    with db.read() as s:
        delivery = s.get(Delivery, 1)
        assert delivery is not None and delivery.state.value == "sent" and delivery.claimed_by is None
        assert s.get(Job, 2).lease_expiries == 0  # type: ignore[union-attr]
    # the running job whose worker is gone: its lease is counted as it expires
    assert jobs.requeue_expired(db, max_lease_expiries=config.worker.max_lease_expiries) == 1
    with db.read() as s:
        job = s.get(Job, 2)
        assert job is not None and job.state == JobState.QUEUED and job.lease_expiries == 1
        assert s.get(Association, "a1").owner is None  # type: ignore[union-attr]


@pytest.fixture
def config(tmp_path: Path) -> Config:
    config = load_config(write_config(tmp_path))
    Path(config.database_url.split(":///", 1)[1]).parent.mkdir(parents=True)
    return config


@pytest.fixture
def fresh_sqlite(tmp_path: Path) -> Iterator[Database]:
    db = Database(f"sqlite:///{tmp_path / 'fresh.db'}")
    yield db
    db.dispose()


def cli(config: Config, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dicom_node.cli", "db", *args, "--config", str(config.source)],
                          capture_output=True, text=True, timeout=120, check=False)


def old_sqlite(config: Config, release: str) -> None:
    raw = create_engine(config.database_url)
    make_previous_release_database(raw, "sqlite", release)
    raw.dispose()


def test_head_constant_is_the_newest_revision() -> None:
    assert migrations.HEAD == migrations.script_head()


def test_a_new_database_is_created_at_head(fresh_sqlite: Database) -> None:
    assert revision(fresh_sqlite.engine) == migrations.HEAD
    assert "schema_version" not in columns(fresh_sqlite.engine)
    with fresh_sqlite.engine.connect() as conn:
        assert migrations.inspect_schema(conn).describe() == f"{migrations.HEAD} (head)"


@pytest.mark.parametrize("release", ["v1", "v0"])
def test_previous_release_sqlite_database_is_upgraded_at_start(
    config: Config, fresh_sqlite: Database, release: str
) -> None:
    old_sqlite(config, release)
    raw = create_engine(config.database_url)
    assert "pixels_unlink_pending" not in columns(raw)["studies"]
    raw.dispose()
    db = Database(config.database_url)
    try:
        check_upgraded(db, config, fresh_sqlite)
        # an association from before owners existed is closed by the next start, as before
        node = Node(config, db=Database(config.database_url))
        node._close_stale_associations()
        node.db.dispose()
        with db.read() as s:
            assert s.get(Association, "a1").ended_at is not None  # type: ignore[union-attr]
    finally:
        db.dispose()
    again = Database(config.database_url)  # opening it again changes nothing
    assert revision(again.engine) == migrations.HEAD
    again.dispose()


@pytest.mark.parametrize("release", ["v1", "v0"])
def test_previous_release_postgres_database_is_upgraded_at_start(
    postgres_url: str, config: Config, fresh_sqlite: Database, release: str
) -> None:
    raw = create_engine(postgres_url)
    make_previous_release_database(raw, "postgresql", release)
    raw.dispose()
    db = Database(postgres_url)
    fresh: Database | None = None
    try:
        # it is the same schema a new PostgreSQL database gets (created at head, in another schema)
        with db.engine.begin() as conn:
            conn.execute(text("CREATE SCHEMA fresh"))
        fresh = Database(f"{postgres_url}?options=-csearch_path%3Dfresh")
        assert revision(fresh.engine) == migrations.HEAD
        assert "studies" in columns(fresh.engine)
        check_upgraded(db, config, fresh)
    finally:
        db.dispose()
        if fresh is not None:
            fresh.dispose()


def test_an_unknown_status_stops_the_upgrade_and_changes_nothing(config: Config) -> None:
    old_sqlite(config, "v1")
    raw = create_engine(config.database_url)
    with raw.begin() as conn:
        conn.execute(text("UPDATE jobs SET state = 'paused' WHERE id = 2"))
    before = signature(raw)
    with pytest.raises(migrations.SchemaError, match=r"jobs.state = 'paused' in 1 row"):
        Database(config.database_url)
    assert signature(raw) == before, "the failed upgrade rolled back: still the previous release's schema"
    with raw.connect() as conn:
        assert conn.execute(text("SELECT version FROM schema_version")).scalar_one() == 1
    raw.dispose()
    refused = cli(config, "upgrade")
    assert refused.returncode == 1
    err = refused.stderr.strip()  # the log line that it is upgrading, then why it cannot
    assert err.splitlines()[-1].startswith("dicom-node db: cannot add the status CHECK constraints")
    assert "Traceback" not in err


def test_db_upgrade_and_current_commands(config: Config, fresh_sqlite: Database) -> None:
    old_sqlite(config, "v1")
    current = cli(config, "current")
    assert current.returncode == 0, current.stderr
    assert current.stdout == (f"none: schema_version 1 of the previous release (head is {migrations.HEAD})\n")
    raw = create_engine(config.database_url)
    assert "alembic_version" not in columns(raw), "`db current` changes nothing"
    upgraded = cli(config, "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    assert upgraded.stdout == (f"database schema upgraded to {migrations.HEAD} (head), "
                               "from none: schema_version 1 of the previous release\n")
    assert signature(raw) == signature(fresh_sqlite.engine)
    raw.dispose()
    assert cli(config, "current").stdout == f"{migrations.HEAD} (head)\n"
    assert cli(config, "upgrade").stdout == f"database schema already at {migrations.HEAD} (head)\n"


@pytest.mark.parametrize("newer", ["revision", "schema_version"])
def test_a_database_from_a_newer_release_is_refused(
    config: Config, capsys: pytest.CaptureFixture[str], newer: str
) -> None:
    if newer == "revision":  # a later Alembic revision than this release has
        Database(config.database_url).dispose()
        change = "UPDATE alembic_version SET version_num = '9999_from_the_future'"
    else:  # a previous-mechanism version this release never knew
        old_sqlite(config, "v1")
        change = "UPDATE schema_version SET version = 2"
    raw = create_engine(config.database_url)
    with raw.begin() as conn:
        conn.execute(text(change))
    raw.dispose()
    with pytest.raises(migrations.SchemaError, match="newer than this release"):
        Database(config.database_url)
    # the commands say so in one line
    assert main(["status", "--config", str(config.source)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("dicom-node status: the database's schema is") and "\n" not in err
    assert "newer than this release" in err
    refused = cli(config, "upgrade")
    assert refused.returncode == 1 and refused.stdout == ""
    assert refused.stderr.strip().startswith("dicom-node db: the database's schema is")
    assert len(refused.stderr.strip().splitlines()) == 1
