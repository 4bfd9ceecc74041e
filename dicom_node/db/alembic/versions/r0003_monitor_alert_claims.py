"""AI-vs-report monitoring alerts are claimed before their webhook is sent, like deliveries and notifications.

`monitor_alerts` gains `claimed_by` and `lease_until` (`db.schema.Claimed`): every `serve` process sharing
the database runs the report monitor, and without a claim two of them posted the same alert.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_monitor_alert_claims"
down_revision: str | None = "0002_status_checks"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("monitor_alerts", sa.Column("claimed_by", sa.String(128), nullable=True))
    op.add_column("monitor_alerts", sa.Column("lease_until", sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("monitor_alerts") as batch:
        batch.drop_column("lease_until")
        batch.drop_column("claimed_by")
