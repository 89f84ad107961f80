"""index pending deliveries by source and due time, and leased ones by lease end: a paused source's
backlog is deferred (and found) by range, and the dispatcher's next wake-up is one index seek

Revision ID: 0011
Revises: 0008
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_LEASED = sa.text("locked_until IS NOT NULL")


def upgrade() -> None:
    # The new index starts with source_id, so it serves every look-up the old one did.
    op.create_index("ix_deliveries_source_due", "deliveries", ["source_id", "status", "next_attempt_at"])
    op.drop_index("ix_deliveries_source_id", table_name="deliveries")
    op.create_index(
        "ix_deliveries_leased", "deliveries", ["locked_until"], postgresql_where=_LEASED, sqlite_where=_LEASED
    )


def downgrade() -> None:
    op.drop_index("ix_deliveries_leased", table_name="deliveries")
    op.create_index("ix_deliveries_source_id", "deliveries", ["source_id"])
    op.drop_index("ix_deliveries_source_due", table_name="deliveries")
