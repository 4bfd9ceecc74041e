"""Schema migrations: numbered steps that bring a database made by an earlier release up to this one.

`upgrade(db)` runs at every start (`Database()`), in one write transaction (on SQLite `BEGIN IMMEDIATE`;
on PostgreSQL also a transaction-scoped advisory lock), so two processes starting at once upgrade once
and a failed step leaves the database as it was (DDL is transactional on both). The `schema_version`
table holds one row: the number of the last step applied.

- An empty database gets the current schema (`create_all`) at the latest version.
- A database with the node's tables but no `schema_version` was made before migrations existed
  (version 0, the release of commit 3bf87e7): every step runs, then tables it lacked are created.
- A database at a version newer than this release's is refused (`SchemaError`): run the newer release.

A step is explicit DDL, written for the schema as it was then; steps only add, and each skips what is
already there, so a version-0 database whose earlier starts created some tables in their newer form
upgrades too. A new step: append a function to `STEPS`, describe it in its docstring, change
`db/schema.py` the same way, and extend tests/test_migrations.py.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from sqlalchemy import DateTime, inspect, text
from sqlalchemy.engine import Connection

from dicom_node.db.schema import Base
from dicom_node.errors import SchemaError

log = logging.getLogger(__name__)

__all__ = ["LATEST", "STEPS", "SchemaError", "current_version", "upgrade"]

_PG_LOCK_KEY = 0x44434D4E  # "DCMN": pg_advisory_xact_lock key of schema upgrades


def _add_column(conn: Connection, table: str, column: str, ddl_type: str) -> None:
    """ALTER TABLE ... ADD COLUMN, unless the table is missing (created whole later) or has the column."""
    inspector = inspect(conn)
    if not inspector.has_table(table) or column in {c["name"] for c in inspector.get_columns(table)}:
        return
    quote = conn.dialect.identifier_preparer.quote
    conn.execute(text(f"ALTER TABLE {quote(table)} ADD COLUMN {quote(column)} {ddl_type}"))


def _v1_claims_and_owners(conn: Connection) -> None:
    """Safe scale-out: deliveries and notifications claimed with a lease (`claimed_by`, `lease_until`),
    associations owned by the serve process that accepted them (`owner`), jobs counting the claims whose
    worker stopped (`lease_expiries`)."""
    timestamp = DateTime().compile(dialect=conn.dialect)
    _add_column(conn, "associations", "owner", "VARCHAR(128)")
    for table in ("deliveries", "notifications"):
        _add_column(conn, table, "claimed_by", "VARCHAR(128)")
        _add_column(conn, table, "lease_until", timestamp)
    _add_column(conn, "jobs", "lease_expiries", "INTEGER DEFAULT 0 NOT NULL")


STEPS: tuple[Callable[[Connection], None], ...] = (_v1_claims_and_owners,)
LATEST = len(STEPS)


def current_version(conn: Connection) -> int | None:
    """The schema version recorded in the database; None when it has no `schema_version` table."""
    if not inspect(conn).has_table("schema_version"):
        return None
    return int(conn.execute(text("SELECT version FROM schema_version")).scalar_one())


def upgrade(conn: Connection) -> tuple[int, int]:
    """Bring the database on `conn` (inside the caller's write transaction) to `LATEST`.

    Returns (version found, version now); an empty database counts as found at `LATEST`."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
    version = current_version(conn)
    if version is None:
        ours = set(Base.metadata.tables)
        if not ours & set(inspect(conn).get_table_names()):  # an empty database: the current schema
            Base.metadata.create_all(conn)
            _record(conn, LATEST, create=True)
            return LATEST, LATEST
        version = 0  # made before migrations existed
        _record(conn, 0, create=True)
    if version > LATEST:
        raise SchemaError(
            f"the database's schema is version {version}, newer than this release's ({LATEST}): "
            "run the release that made it, or a newer one"
        )
    found = version
    for number in range(version + 1, LATEST + 1):
        step = STEPS[number - 1]
        log.info("upgrading the database schema", extra={"version": number, "step": step.__name__})
        step(conn)
    if found < LATEST:
        Base.metadata.create_all(conn)  # tables an old database never had, in their current form
        _record(conn, LATEST)
        log.info("database schema upgraded", extra={"from": found, "to": LATEST})
    return found, LATEST


def _record(conn: Connection, version: int, create: bool = False) -> None:
    if create:
        conn.execute(text("CREATE TABLE schema_version (version INTEGER NOT NULL)"))
        conn.execute(text("INSERT INTO schema_version (version) VALUES (:v)"), {"v": version})
    else:
        conn.execute(text("UPDATE schema_version SET version = :v"), {"v": version})
