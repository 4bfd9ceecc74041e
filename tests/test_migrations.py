"""Schema migrations: a database made by the previous release (no `schema_version`, none of this release's
columns) is upgraded in place at start-up, on SQLite and PostgreSQL, and its pending work carries on.

tests/data/schema_v0_*.sql is the previous release's schema as `create_all` made it (commit 3bf87e7).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import write_config
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import Engine

from dicom_node import jobs
from dicom_node.cli import main
from dicom_node.config import Config, load_config
from dicom_node.db import migrations
from dicom_node.db.engine import Database, utcnow
from dicom_node.db.schema import Association, Base, Delivery, Job, JobState
from dicom_node.delivery import state
from dicom_node.node import Node

DATA = Path(__file__).parent / "data"
NEW_COLUMNS = {
    "associations": {"owner"},
    "deliveries": {"claimed_by", "lease_until"},
    "notifications": {"claimed_by", "lease_until"},
    "jobs": {"lease_expiries"},
}


def make_previous_release_database(engine: Engine, dialect: str) -> None:
    """The previous release's tables, with a study analysed, its SR in the outbox waiting for delivery,
    a running job of a later generation and an association left open, as such a node leaves them."""
    ddl = (DATA / f"schema_v0_{dialect}.sql").read_text()
    now = utcnow()
    with engine.begin() as conn:
        for statement in ddl.split(";\n"):
            body = "\n".join(line for line in statement.splitlines() if not line.startswith("--")).strip()
            if body:
                conn.execute(text(body))
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


def check_upgraded(db: Database, config: Config, fresh: Database) -> None:
    """The old database has this release's schema and version, and its pending work is claimable."""
    got, want = columns(db.engine), columns(fresh.engine)
    assert got == want  # every table and column a new database has, nothing more
    for table, added in NEW_COLUMNS.items():
        assert added <= got[table]
    with db.engine.connect() as conn:
        assert migrations.current_version(conn) == migrations.LATEST >= 1
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
    return load_config(write_config(tmp_path))


@pytest.fixture
def fresh_sqlite(tmp_path: Path) -> Iterator[Database]:
    db = Database(f"sqlite:///{tmp_path / 'fresh.db'}")
    yield db
    db.dispose()


def test_previous_release_sqlite_database_is_upgraded_at_start(config: Config, fresh_sqlite: Database) -> None:
    Path(config.database_url.split(":///", 1)[1]).parent.mkdir(parents=True)
    raw = create_engine(config.database_url)
    make_previous_release_database(raw, "sqlite")
    assert NEW_COLUMNS["deliveries"].isdisjoint(columns(raw)["deliveries"])
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
    with again.engine.connect() as conn:
        assert migrations.current_version(conn) == migrations.LATEST
    again.dispose()


def test_previous_release_postgres_database_is_upgraded_at_start(
    postgres_url: str, config: Config, fresh_sqlite: Database
) -> None:
    raw = create_engine(postgres_url)
    make_previous_release_database(raw, "postgresql")
    raw.dispose()
    db = Database(postgres_url)
    try:
        check_upgraded(db, config, fresh_sqlite)
        # and it is the same schema a new PostgreSQL database gets
        with db.engine.begin() as conn:
            conn.execute(text("CREATE SCHEMA fresh"))
        fresh = create_engine(postgres_url, connect_args={"options": "-csearch_path=fresh"})
        with fresh.begin() as conn:
            Base.metadata.create_all(conn)
        assert columns(fresh) == {t: c for t, c in columns(db.engine).items() if t != "schema_version"}
        fresh.dispose()
    finally:
        db.dispose()


def test_a_database_from_a_newer_release_is_refused(config: Config, capsys: pytest.CaptureFixture[str]) -> None:
    Database(config.database_url).dispose()
    raw = create_engine(config.database_url)
    with raw.begin() as conn:
        conn.execute(text("UPDATE schema_version SET version = :v"), {"v": migrations.LATEST + 1})
    raw.dispose()
    with pytest.raises(migrations.SchemaError, match="newer than this release"):
        Database(config.database_url)
    # the commands say so in one line
    assert main(["status", "--config", str(config.source)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("dicom-node status: the database's schema is version") and "\n" not in err
