"""campaign cost models (CPC, CPM, CPA), CPA cost on conversions, cost updates for past periods

Revision ID: 0003
Revises: 0002
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("campaigns") as batch:
        batch.add_column(sa.Column("cost_model", sa.String(8), nullable=False, server_default="none"))
        batch.add_column(sa.Column("cost_value", sa.BigInteger(), nullable=False, server_default="0"))
    with op.batch_alter_table("conversions") as batch:
        batch.add_column(sa.Column("cost", sa.BigInteger(), nullable=False, server_default="0"))
    op.create_table(
        "cost_updates",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("campaign_id", sa.Integer(), nullable=False),
        sa.Column("start", sa.DateTime(), nullable=False),
        sa.Column("end", sa.DateTime(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["campaign_id"], ["campaigns.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("cost_updates") as batch:
        batch.create_index("ix_cost_updates_campaign_id", ["campaign_id"])


def downgrade() -> None:
    op.drop_table("cost_updates")
    with op.batch_alter_table("conversions") as batch:
        batch.drop_column("cost")
    with op.batch_alter_table("campaigns") as batch:
        batch.drop_column("cost_value")
        batch.drop_column("cost_model")
