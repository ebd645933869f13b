"""Mark request-log rows of deleted conversations, so a reused id starts with empty usage.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add attempts.conversation_deleted (false for every existing row)."""
    op.add_column(
        "attempts",
        sa.Column("conversation_deleted", sa.Boolean(), nullable=False, server_default=sa.false()),
    )


def downgrade() -> None:
    """Drop attempts.conversation_deleted."""
    with op.batch_alter_table("attempts") as batch:
        batch.drop_column("conversation_deleted")
