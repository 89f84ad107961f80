"""index the pending deliveries by conversion and source, for the dispatcher's in-order claim

Revision ID: 0008
Revises: 0010
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_PENDING = sa.text("status = 'pending'")


def upgrade() -> None:
    op.create_index(
        "ix_deliveries_pending_order",
        "deliveries",
        ["conversion_id", "source_id", "id"],
        postgresql_where=_PENDING,
        sqlite_where=_PENDING,
    )


def downgrade() -> None:
    op.drop_index("ix_deliveries_pending_order", table_name="deliveries")
