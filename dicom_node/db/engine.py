"""One SQLAlchemy engine per process; SQLite in WAL mode by default, PostgreSQL for scale-out.

Opening a `Database` creates the schema, or upgrades one an earlier release made (`db/migrations.py`, Alembic);
a schema from a newer release is refused (`SchemaError`).
`Database.write()` opens a transaction that takes the write lock at once on SQLite (`BEGIN IMMEDIATE`),
so read-modify-write sequences (job claims, upserts) never interleave between processes; `read()` opens a
deferred one, so status queries and pollers never hold the lock the receiver needs.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import ClassVar

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import ConnectionPoolEntry

from dicom_node.db import migrations

_WRITE_OPTION = "dicom_node_write"


def utcnow() -> datetime:
    """Naive UTC timestamp, the only kind stored in the database."""
    return datetime.now(UTC).replace(tzinfo=None)


class Database:
    write_options: ClassVar[dict[str, bool]] = {_WRITE_OPTION: True}  # a connection's execution options that make its BEGIN a writer's

    def __init__(self, url: str, *, upgrade: bool = True) -> None:
        """Open the database at `url`; with `upgrade` (the default) also bring its schema to this release's."""
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            path = url.split(":///", 1)[1]
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self.engine: Engine = create_engine(
                url, connect_args={"timeout": 30, "check_same_thread": False}, pool_pre_ping=True
            )
            event.listen(self.engine, "connect", _sqlite_on_connect)
            event.listen(self.engine, "begin", _sqlite_on_begin)
        else:
            self.engine = create_engine(url, pool_pre_ping=True)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        if upgrade:  # create, or upgrade one an earlier release made
            migrations.upgrade(self)

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A transaction that holds the write lock from its start; commits on success, rolls back on error."""
        with self._sessions() as session, session.begin():
            # the first connection use begins the transaction: tell _sqlite_on_begin it is a writer
            session.connection(execution_options=self.write_options)
            yield session

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A read-only session: on SQLite a deferred transaction, a WAL snapshot that never blocks writers."""
        with self._sessions() as session:
            yield session

    def dispose(self) -> None:
        self.engine.dispose()


def _sqlite_on_connect(dbapi_connection: sqlite3.Connection, _record: ConnectionPoolEntry) -> None:
    # Let SQLAlchemy emit BEGIN itself (see _sqlite_on_begin), as the pysqlite docs recommend.
    dbapi_connection.isolation_level = None
    cur = dbapi_connection.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def _sqlite_on_begin(conn: Connection) -> None:
    # Writers take the write lock up front, so a read-then-write transaction cannot fail half-way with
    # "database is locked"; readers begin deferred and, in WAL mode, neither block nor wait for writers.
    if conn.get_execution_options().get(_WRITE_OPTION):
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        conn.exec_driver_sql("BEGIN")
