"""Alembic's entry point: run the revisions on the connection `db/migrations.py` holds.

That connection is already inside a write transaction (on SQLite `BEGIN IMMEDIATE` with foreign keys off,
on PostgreSQL with an advisory lock), so Alembic begins none of its own: the revisions, the version stamp
and the caller's checks commit or roll back together. Batch mode (`render_as_batch`) lets a revision alter
a table on SQLite, which rebuilds the table; on PostgreSQL it is plain `ALTER TABLE`.
"""

from __future__ import annotations

from alembic import context

from dicom_node.db.schema import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError(
        "dicom-node's migrations run on a database connection: use `dicom-node db upgrade` "
        "(offline SQL generation is not supported)"
    )
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True, compare_type=True)
with context.begin_transaction():
    context.run_migrations()
