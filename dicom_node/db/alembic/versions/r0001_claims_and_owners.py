"""The previous release's schema (its `schema_version` 1): leases on deliveries and notifications
(`claimed_by`, `lease_until`), owners of associations (`owner`), jobs counting expired leases
(`lease_expiries`).

Run only for a database made before versioned schemas existed (version 0, the release of commit 3bf87e7,
tests/data/schema_v0_*.sql); one that records `schema_version` 1 is stamped here when it is adopted, and a
new database is created at head (`db/migrations.py`). As the step it replaces did, a column is added only
where the table lacks it (a version-0 database whose earlier starts created some tables in a newer form).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001_claims_and_owners"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (table, column, type, server default): nullable unless it has a default
_COLUMNS: tuple[tuple[str, str, sa.types.TypeEngine, str | None], ...] = (
    ("associations", "owner", sa.String(128), None),
    ("deliveries", "claimed_by", sa.String(128), None),
    ("deliveries", "lease_until", sa.DateTime(), None),
    ("notifications", "claimed_by", sa.String(128), None),
    ("notifications", "lease_until", sa.DateTime(), None),
    ("jobs", "lease_expiries", sa.Integer(), "0"),
)


def upgrade() -> None:
    for table, column, type_, default in _COLUMNS:
        inspector = sa.inspect(op.get_bind())
        if not inspector.has_table(table) or column in {c["name"] for c in inspector.get_columns(table)}:
            continue
        server_default = None if default is None else sa.text(default)
        op.add_column(table, sa.Column(column, type_, nullable=default is None, server_default=server_default))


def downgrade() -> None:
    tables: dict[str, list[str]] = {}
    for table, column, _type, _default in _COLUMNS:
        tables.setdefault(table, []).append(column)
    for table, columns in tables.items():
        with op.batch_alter_table(table) as batch:
            for column in columns:
                batch.drop_column(column)
