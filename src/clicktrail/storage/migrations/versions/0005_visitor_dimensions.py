"""visitor dimensions: versions, region, city and visitor ID on clicks; device, OS, browser and the
bot flag copied onto conversions; the channel a conversion came through (S2S postback or pixel);
campaigns' routing rules

Revision ID: 0005
Revises: 0004
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("campaigns", schema=None) as batch_op:
        batch_op.add_column(sa.Column("routing", sa.Text(), nullable=True))
    with op.batch_alter_table("clicks", schema=None) as batch_op:
        batch_op.add_column(sa.Column("visitor_id", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("region", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("city", sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column("os_version", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("browser_version", sa.String(length=32), nullable=True))
    with op.batch_alter_table("conversions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("device_type", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("os", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("browser", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("is_bot", sa.Boolean(), server_default=sa.false(), nullable=False))
        batch_op.add_column(sa.Column("via", sa.String(length=8), server_default="postback", nullable=False))
    with op.batch_alter_table("postback_log", schema=None) as batch_op:
        batch_op.add_column(sa.Column("via", sa.String(length=8), server_default="postback", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("postback_log", schema=None) as batch_op:
        batch_op.drop_column("via")
    with op.batch_alter_table("conversions", schema=None) as batch_op:
        batch_op.drop_column("via")
        batch_op.drop_column("is_bot")
        batch_op.drop_column("browser")
        batch_op.drop_column("os")
        batch_op.drop_column("device_type")
    with op.batch_alter_table("clicks", schema=None) as batch_op:
        batch_op.drop_column("browser_version")
        batch_op.drop_column("os_version")
        batch_op.drop_column("city")
        batch_op.drop_column("region")
        batch_op.drop_column("visitor_id")
    with op.batch_alter_table("campaigns", schema=None) as batch_op:
        batch_op.drop_column("routing")
