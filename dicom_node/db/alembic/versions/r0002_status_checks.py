"""Status columns checked by the database; retention's pending unlinks; Alembic replaces `schema_version`.

- A CHECK constraint `ck_<table>_<column>` on every state and status column: the database refuses a value
  the code does not know (`db/schema.one_of`). An existing row with such a value stops the upgrade with a
  message naming it, before anything changes.
- `studies.pixels_unlink_pending`: retention commits the deletion first and unlinks the files after it
  (`studies/retention.py`); the flag stays set until every file is gone, so a failed unlink is tried again.
- The `schema_version` table of the previous release goes: `alembic_version` records the revision.

On SQLite each altered table is rebuilt (batch mode) with its rows, indexes (partial ones included) and
foreign keys; on PostgreSQL the constraints are added with `ALTER TABLE`.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from dicom_node.errors import SchemaError

revision: str = "0002_status_checks"
down_revision: str | None = "0001_claims_and_owners"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The allowed values as of this revision (written out: a later change of an enum is a later revision).
ALLOWED: dict[tuple[str, str], tuple[str, ...]] = {
    ("studies", "state"): ("receiving", "complete", "analysed", "delivered"),
    ("jobs", "state"): ("queued", "running", "done", "failed"),
    ("results", "status"): ("analysed", "not_analysed", "failed"),
    ("deliveries", "state"): ("pending", "sent", "failed"),
    ("notifications", "state"): ("pending", "sent", "failed", "skipped"),
    ("monitor_alerts", "state"): ("pending", "sent", "failed", "skipped"),
}


def _condition(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def _refuse_unknown_values() -> None:
    bind = op.get_bind()
    problems = []
    for (table, column), values in ALLOWED.items():
        rows = bind.execute(sa.text(
            f"SELECT {column}, COUNT(*) FROM {table} WHERE NOT ({_condition(column, values)}) GROUP BY {column}"
        )).all()
        problems += [f"{table}.{column} = {value!r} in {n} row(s)" for value, n in rows]
    if problems:
        raise SchemaError(
            "cannot add the status CHECK constraints: " + "; ".join(problems) + " (not a value this release knows)"
        )


def upgrade() -> None:
    _refuse_unknown_values()
    for (table, column), values in ALLOWED.items():
        with op.batch_alter_table(table) as batch:
            if table == "studies":
                batch.add_column(sa.Column("pixels_unlink_pending", sa.Boolean(), nullable=False,
                                           server_default=sa.false()))
            batch.create_check_constraint(f"ck_{table}_{column}", _condition(column, values))
    if sa.inspect(op.get_bind()).has_table("schema_version"):
        op.drop_table("schema_version")


def downgrade() -> None:
    for table, column in ALLOWED:
        with op.batch_alter_table(table) as batch:
            batch.drop_constraint(f"ck_{table}_{column}", type_="check")
            if table == "studies":
                batch.drop_column("pixels_unlink_pending")
    # what the previous release reads (db/migrations.py there): schema version 1, i.e. revision 0001
    op.create_table("schema_version", sa.Column("version", sa.Integer(), nullable=False))
    op.execute("INSERT INTO schema_version (version) VALUES (1)")
