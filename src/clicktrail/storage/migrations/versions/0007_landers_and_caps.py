"""landers (a page shown before the offer) and lander click-throughs; daily conversion caps with a
fallback offer; the rest of the visitor dimensions (versions, region, city) and the lander copied
onto conversions

Revision ID: 0007
Revises: 0006
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_SUBS = tuple(f"sub{n}" for n in range(1, 11))


def upgrade() -> None:
    op.create_table(
        "landers",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("offers") as batch:
        batch.add_column(sa.Column("daily_cap", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("cap_timezone", sa.String(64), nullable=False, server_default="UTC"))
        batch.add_column(sa.Column("fallback_offer_id", sa.Integer(), nullable=True))
        batch.create_foreign_key("fk_offers_fallback_offer_id", "offers", ["fallback_offer_id"], ["id"])
    with op.batch_alter_table("campaigns") as batch:
        batch.add_column(sa.Column("lander_id", sa.Integer(), nullable=True))
        batch.create_foreign_key("fk_campaigns_lander_id", "landers", ["lander_id"], ["id"])
    with op.batch_alter_table("clicks") as batch:
        batch.add_column(sa.Column("lander_id", sa.Integer(), nullable=True))
    with op.batch_alter_table("conversions") as batch:
        batch.add_column(sa.Column("os_version", sa.String(32), nullable=True))
        batch.add_column(sa.Column("browser_version", sa.String(32), nullable=True))
        batch.add_column(sa.Column("region", sa.String(64), nullable=True))
        batch.add_column(sa.Column("city", sa.String(128), nullable=True))
        batch.add_column(sa.Column("lander_id", sa.Integer(), nullable=True))
    op.create_table(
        "lander_clicks",
        sa.Column("click_id", sa.String(32), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("click_time", sa.DateTime(), nullable=False),
        sa.Column("campaign_id", sa.Integer(), nullable=False),
        sa.Column("lander_id", sa.Integer(), nullable=False),
        sa.Column("offer_id", sa.Integer(), nullable=False),
        sa.Column("source_id", sa.Integer(), nullable=False),
        *(sa.Column(name, sa.String(255), nullable=True) for name in _SUBS),
        sa.Column("external_id", sa.String(255), nullable=True),
        sa.Column("country", sa.String(2), nullable=True),
        sa.Column("region", sa.String(64), nullable=True),
        sa.Column("city", sa.String(128), nullable=True),
        sa.Column("device_type", sa.String(16), nullable=True),
        sa.Column("os", sa.String(64), nullable=True),
        sa.Column("os_version", sa.String(32), nullable=True),
        sa.Column("browser", sa.String(64), nullable=True),
        sa.Column("browser_version", sa.String(32), nullable=True),
        sa.Column("is_bot", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("click_id"),
    )
    op.create_index("ix_lander_clicks_created_at", "lander_clicks", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_lander_clicks_created_at", table_name="lander_clicks")
    op.drop_table("lander_clicks")
    with op.batch_alter_table("conversions") as batch:
        for name in ("lander_id", "city", "region", "browser_version", "os_version"):
            batch.drop_column(name)
    with op.batch_alter_table("clicks") as batch:
        batch.drop_column("lander_id")
    with op.batch_alter_table("campaigns") as batch:
        batch.drop_constraint("fk_campaigns_lander_id", type_="foreignkey")
        batch.drop_column("lander_id")
    with op.batch_alter_table("offers") as batch:
        batch.drop_constraint("fk_offers_fallback_offer_id", type_="foreignkey")
        for name in ("fallback_offer_id", "cap_timezone", "daily_cap"):
            batch.drop_column(name)
    op.drop_table("landers")
