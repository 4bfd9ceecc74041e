"""Schema migrations with Alembic: bring a database made by an earlier release up to this one.

`upgrade(db)` runs at every start (`Database()`) and in `dicom-node db upgrade`. It looks first without the
write lock; a database already at this release's head (`HEAD`) costs one read and does not import Alembic.
Otherwise, in one write transaction
(on SQLite `BEGIN IMMEDIATE`, with foreign keys off while tables are rebuilt and checked before the commit;
on PostgreSQL a transaction-scoped advisory lock), it looks again and:

- an empty database gets the current schema (`create_all`), stamped at head;
- one with an `alembic_version` row gets the revisions after it (`db/alembic/versions/`);
- one with the previous release's `schema_version` table is adopted: stamped at the revision that matches
  its version (`LEGACY`), then upgraded; one with the node's tables and neither (made before versioned
  schemas, version 0) is upgraded from the first revision. Tables an adopted database never had are then
  created in their current form, as the previous mechanism did;
- one at a revision this release does not have, or at a `schema_version` above the last one it knows, was
  made by a newer release and is refused (`SchemaError`, one line).

Two processes starting at once upgrade once, and a failed revision leaves the database as it was (DDL is
transactional on both). A schema change: change `db/schema.py`, add a revision to `db/alembic/versions/`
(`alembic_config()` works with Alembic's own commands, e.g. `command.revision(alembic_config(), "...")`),
and extend tests/test_migrations.py.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection

from dicom_node.db.schema import Base
from dicom_node.errors import SchemaError

if TYPE_CHECKING:  # Alembic itself is imported when a schema is created or changed (its import takes a while)
    from alembic.config import Config as AlembicConfig
    from alembic.script import ScriptDirectory

    from dicom_node.db.engine import Database

log = logging.getLogger(__name__)

__all__ = ["HEAD", "LEGACY", "Found", "SchemaError", "alembic_config", "inspect_schema", "script_head", "upgrade"]

HEAD = "0003_monitor_alert_claims"  # the newest revision in db/alembic/versions/ (a test checks that they agree)
SCRIPT_LOCATION = Path(__file__).parent / "alembic"
# the previous release's `schema_version` numbers and the revision each one is
LEGACY: dict[int, str] = {1: "0001_claims_and_owners"}
_PG_LOCK_KEY = 0x44434D4E  # "DCMN": pg_advisory_xact_lock key of schema upgrades


def alembic_config(connection: Connection | None = None) -> AlembicConfig:
    """Alembic's configuration, built in code: the script location inside the package, no alembic.ini."""
    from alembic.config import Config as AlembicConfig

    config = AlembicConfig()
    config.set_main_option("script_location", str(SCRIPT_LOCATION))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


@functools.cache
def _script() -> ScriptDirectory:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config())


def script_head() -> str:
    """The newest revision in db/alembic/versions/ (what `HEAD` says)."""
    head_revision = _script().get_current_head()
    assert head_revision is not None
    return head_revision


@dataclass(frozen=True)
class Found:
    """What a database's schema is: an Alembic revision, a legacy `schema_version`, neither, or empty."""

    revision: str | None
    legacy_version: int | None
    has_tables: bool

    @property
    def at_head(self) -> bool:
        return self.revision == HEAD

    @property
    def is_known(self) -> bool:
        """False for a revision this release does not have (a newer release made it)."""
        return self.revision is None or self.revision in {s.revision for s in _script().walk_revisions()}

    def what(self) -> str:
        if self.revision is not None:
            return self.revision
        if self.legacy_version is not None:
            return f"none: schema_version {self.legacy_version} of the previous release"
        if self.has_tables:
            return "none: the schema of the release before versioned schemas"
        return "none: an empty database"

    def describe(self) -> str:
        """The revision and how it stands to this release's head, in one line."""
        if self.at_head:
            return f"{self.revision} (head)"
        if not self.is_known:
            return f"{self.revision} (not a revision of this release, whose head is {HEAD}: a newer release's)"
        return f"{self.what()} (head is {HEAD})"

    def refuse_if_newer(self) -> None:
        if not self.is_known:
            raise SchemaError(
                f"the database's schema is revision {self.revision}, newer than this release's ({HEAD}): "
                "run the release that made it, or a newer one"
            )
        if self.legacy_version is not None and self.revision is None and self.legacy_version not in LEGACY:
            raise SchemaError(
                f"the database's schema is version {self.legacy_version}, newer than this release knows "
                f"({max(LEGACY)}): run the release that made it, or a newer one"
            )


def inspect_schema(conn: Connection) -> Found:
    """Read what the database on `conn` is at; changes nothing."""
    tables = set(inspect(conn).get_table_names())
    revision = None
    if "alembic_version" in tables:
        revision = conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one_or_none()
    legacy = None
    if "schema_version" in tables:
        legacy = int(conn.execute(text("SELECT version FROM schema_version")).scalar_one())
    return Found(revision, legacy, bool(tables & set(Base.metadata.tables)))


def upgrade(db: Database) -> tuple[Found, str]:
    """Bring `db` to this release's head; returns what it was found at and the revision it is at now."""
    with db.engine.connect() as conn:
        found = inspect_schema(conn)
    if found.at_head:
        return found, HEAD
    found.refuse_if_newer()
    with _schema_lock(db) as conn:
        found = inspect_schema(conn)  # again, under the lock: another process may have done it meanwhile
        found.refuse_if_newer()
        if found.at_head:
            return found, HEAD
        from alembic.runtime.migration import MigrationContext

        context = MigrationContext.configure(conn)
        if found.revision is None and found.legacy_version is None and not found.has_tables:
            Base.metadata.create_all(conn)
            context.stamp(_script(), "head")
            log.info("database schema created", extra={"revision": HEAD})
            return found, HEAD
        if found.revision is None and found.legacy_version is not None:
            context.stamp(_script(), LEGACY[found.legacy_version])
        log.info("upgrading the database schema", extra={"from": found.describe(), "to": HEAD})
        _run_upgrade(conn)
        if found.revision is None:  # adopted: tables it never had, in their current form
            Base.metadata.create_all(conn)
        _check_foreign_keys(conn)
    log.info("database schema upgraded", extra={"to": HEAD})
    return found, HEAD


def _run_upgrade(conn: Connection) -> None:
    from alembic.runtime.environment import EnvironmentContext

    script = _script()
    with EnvironmentContext(
        alembic_config(conn), script, fn=lambda rev, _ctx: script._upgrade_revs("head", rev),
        destination_rev="head",
    ):
        script.run_env()


@contextmanager
def _schema_lock(db: Database) -> Iterator[Connection]:
    """A connection in a write transaction that no other process's start-up or writer can interleave with."""
    with db.engine.connect() as conn:
        if db.is_sqlite:
            # SQLite rebuilds a table to alter it: with foreign keys on, dropping the old table would touch
            # its children. The pragma only takes effect outside a transaction, so it is set before BEGIN.
            dbapi = conn.connection.dbapi_connection
            assert dbapi is not None
            dbapi.execute("PRAGMA foreign_keys=OFF")
            try:
                with conn.execution_options(**db.write_options).begin():
                    yield conn
            finally:
                dbapi.execute("PRAGMA foreign_keys=ON")
        else:
            with conn.begin():
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
                yield conn


def _check_foreign_keys(conn: Connection) -> None:
    if conn.dialect.name != "sqlite":
        return  # PostgreSQL checks them as the tables change
    broken = conn.exec_driver_sql("PRAGMA foreign_key_check").all()
    if broken:
        raise SchemaError(f"the upgraded schema breaks {len(broken)} foreign key reference(s), e.g. {broken[0]}")
