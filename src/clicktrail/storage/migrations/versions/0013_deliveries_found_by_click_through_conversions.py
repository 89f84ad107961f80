"""drop the deliveries' index on click_id: a click's deliveries are found through its conversions

Revision ID: 0013
Revises: 0012

Every postback that queues an outbound postback inserted into this index at a random place (click IDs
of many ages convert at any moment), a page of its own in SQLite's log at every commit; the one query
that used it, the deliveries of a click, goes through the click's conversions instead
(conversions' unique key starts with click_id, and deliveries are indexed by conversion_id).
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index("ix_deliveries_click_id", table_name="deliveries")


def downgrade() -> None:
    op.create_index("ix_deliveries_click_id", "deliveries", ["click_id"])
