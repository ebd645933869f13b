"""Estimated usage and in-flight budget reservations.

`attempts.estimated` marks a request-log row whose tokens the gateway counted itself (a stream that ended
without the upstream's usage). `budget_reservations` holds what calls of a key with a budget have reserved
while they run, so that concurrent calls see each other before any of them is recorded.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    """Add attempts.estimated (false for every existing row) and the budget_reservations table."""
    op.add_column(
        "attempts",
        sa.Column("estimated", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    op.create_table(
        "budget_reservations",
        sa.Column("pk", BigId, primary_key=True, autoincrement=True),
        sa.Column("owner", sa.String(64), nullable=False),
        sa.Column("pusd", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
    )
    op.create_index("ix_budget_reservations_owner", "budget_reservations", ["owner", "expires_at"])


def downgrade() -> None:
    """Drop the budget_reservations table and attempts.estimated."""
    op.drop_index("ix_budget_reservations_owner", table_name="budget_reservations")
    op.drop_table("budget_reservations")
    with op.batch_alter_table("attempts") as batch:
        batch.drop_column("estimated")
