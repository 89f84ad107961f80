"""compare identifying text byte by byte on PostgreSQL (COLLATE "C"): click and conversion IDs, event
names, transaction IDs and states, the text the hot paths' indexes hold

Revision ID: 0012
Revises: 0011

Only the collation changes, so PostgreSQL rewrites no table, but it rebuilds every index on these
columns: on a large database the upgrade takes a while (minutes for tens of millions of clicks) and
holds the tables meanwhile. SQLite compares text byte by byte already: nothing to do there.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (table, column, its varchar length), in an order that changes a referenced column before the
# column that refers to it.
_KEYS = (
    ("clicks", "click_id", 32),
    ("lander_clicks", "click_id", 32),
    ("conversions", "conversion_id", 26),
    ("conversions", "click_id", 32),
    ("conversions", "event", 64),
    ("conversions", "txid", 255),
    ("conversion_status_history", "conversion_id", 26),
    ("postback_log", "click_id", 64),
    ("postback_log", "decision", 32),
    ("deliveries", "conversion_id", 26),
    ("deliveries", "click_id", 32),
    ("deliveries", "status", 16),
)


def _collate(collation: str) -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, column, length in _KEYS:
        op.execute(f'ALTER TABLE {table} ALTER COLUMN {column} TYPE varchar({length}) COLLATE "{collation}"')


def upgrade() -> None:
    _collate("C")


def downgrade() -> None:
    _collate("default")
