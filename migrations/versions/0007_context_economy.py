"""Context economy: history strategies, the stable window's start, summaries, cache writes, full-replay cost.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the conversation's strategy settings, window start and summary; the request log's new figures."""
    with op.batch_alter_table("conversations") as batch:
        batch.add_column(sa.Column("history_strategy", sa.String(16), nullable=True))
        batch.add_column(sa.Column("summary_model", sa.String(200), nullable=True))
        batch.add_column(sa.Column("window_start", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("summary_text", sa.Text(), nullable=True))
        batch.add_column(sa.Column("summary_tokens", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("summary_through", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("summary_updated_at", sa.Float(), nullable=True))
    with op.batch_alter_table("attempts") as batch:
        batch.add_column(sa.Column("kind", sa.String(16), nullable=False, server_default="call"))
        batch.add_column(sa.Column("cache_write_tokens", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("full_replay_cost_pusd", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("history_strategy", sa.String(16), nullable=True))
        batch.add_column(sa.Column("history_summarized", sa.Integer(), nullable=True))
    # Rows recorded before this revision: a full replay of them is what they cost uncached, which is not
    # known any more; their cost is the closest figure (nothing was dropped or cached that we can price).
    op.execute("UPDATE attempts SET full_replay_cost_pusd = cost_pusd")


def downgrade() -> None:
    """Drop the columns again."""
    with op.batch_alter_table("attempts") as batch:
        batch.drop_column("history_summarized")
        batch.drop_column("history_strategy")
        batch.drop_column("full_replay_cost_pusd")
        batch.drop_column("cache_write_tokens")
        batch.drop_column("kind")
    with op.batch_alter_table("conversations") as batch:
        for name in (
            "summary_updated_at",
            "summary_through",
            "summary_tokens",
            "summary_text",
            "window_start",
            "summary_model",
            "history_strategy",
        ):
            batch.drop_column(name)
