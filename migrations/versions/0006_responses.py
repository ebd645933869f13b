"""Responses-API responses stored as turns of conversations.

Revision ID: 0006
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0003"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    """Create the responses table."""
    op.create_table(
        "responses",
        sa.Column("pk", BigId, primary_key=True, autoincrement=True),
        sa.Column("owner", sa.String(64), nullable=False),
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("conversation_id", sa.String(128), nullable=False),
        sa.Column("turn", sa.Integer(), nullable=False),
        sa.Column("message_end", sa.Integer(), nullable=False),
        sa.Column("previous_response_id", sa.String(64), nullable=True),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("idempotency_key", sa.String(256), nullable=True),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("input_items", sa.Text(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.UniqueConstraint("owner", "id", name="uq_responses_owner_id"),
    )
    op.create_index("ix_responses_owner_conversation_turn", "responses", ["owner", "conversation_id", "turn"])
    op.create_index("ix_responses_owner_request", "responses", ["owner", "request_hash", "created_at"])


def downgrade() -> None:
    """Drop the responses table."""
    op.drop_index("ix_responses_owner_request", table_name="responses")
    op.drop_index("ix_responses_owner_conversation_turn", table_name="responses")
    op.drop_table("responses")
