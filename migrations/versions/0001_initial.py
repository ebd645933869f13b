"""Initial schema: conversations, messages, attempts, api keys, conversation leases.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    """Create every table of the first release."""
    op.create_table(
        "conversations",
        sa.Column("pk", BigId, primary_key=True, autoincrement=True),
        sa.Column("owner", sa.String(64), nullable=False),
        sa.Column("id", sa.String(128), nullable=False),
        sa.Column("system_messages", sa.Text(), nullable=True),
        sa.Column("metadata_json", sa.Text(), nullable=True),
        sa.Column("max_history_messages", sa.Integer(), nullable=True),
        sa.Column("max_history_tokens", sa.Integer(), nullable=True),
        sa.Column("max_cost_pusd", sa.BigInteger(), nullable=True),
        sa.Column("message_count", sa.Integer(), nullable=False),
        sa.Column("token_count", sa.BigInteger(), nullable=False),
        sa.Column("turn_count", sa.Integer(), nullable=False),
        sa.Column("history_hash", sa.String(64), nullable=False),
        sa.Column("last_user_seq", sa.Integer(), nullable=False),
        sa.Column("last_user_tokens", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.UniqueConstraint("owner", "id", name="uq_conversations_owner_id"),
    )
    op.create_index("ix_conversations_owner_updated", "conversations", ["owner", "updated_at"])
    op.create_table(
        "messages",
        sa.Column("pk", BigId, primary_key=True, autoincrement=True),
        sa.Column(
            "conversation_pk",
            sa.BigInteger(),
            sa.ForeignKey("conversations.pk", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("turn", sa.Integer(), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("tokens", sa.Integer(), nullable=False),
        sa.Column("turn_start_seq", sa.Integer(), nullable=False),
        sa.Column("turn_start_tokens", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.UniqueConstraint("conversation_pk", "seq", name="uq_messages_conversation_seq"),
    )
    op.create_index(
        "ix_messages_conversation_turn_tokens", "messages", ["conversation_pk", "turn_start_tokens"]
    )
    op.create_table(
        "attempts",
        sa.Column("pk", BigId, primary_key=True, autoincrement=True),
        sa.Column("owner", sa.String(64), nullable=False),
        sa.Column("conversation_id", sa.String(128), nullable=True),
        sa.Column("request_id", sa.String(64), nullable=False),
        sa.Column("upstream_request_id", sa.String(200), nullable=True),
        sa.Column("endpoint", sa.String(200), nullable=False),
        sa.Column("model", sa.String(200), nullable=True),
        sa.Column("response_model", sa.String(200), nullable=True),
        sa.Column("stream", sa.Boolean(), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("latency_ms", sa.Float(), nullable=False),
        sa.Column("ttfb_ms", sa.Float(), nullable=True),
        sa.Column("prompt_tokens", sa.Integer(), nullable=True),
        sa.Column("completion_tokens", sa.Integer(), nullable=True),
        sa.Column("cached_tokens", sa.Integer(), nullable=True),
        sa.Column("reasoning_tokens", sa.Integer(), nullable=True),
        sa.Column("history_tokens", sa.Integer(), nullable=True),
        sa.Column("history_messages", sa.Integer(), nullable=True),
        sa.Column("cost_pusd", sa.BigInteger(), nullable=True),
        sa.Column("history_cost_pusd", sa.BigInteger(), nullable=True),
        sa.Column("turn", sa.Integer(), nullable=True),
        sa.Column("fingerprint", sa.String(64), nullable=True),
        sa.Column("idempotency_key", sa.String(256), nullable=True),
        sa.Column("response_body", sa.Text(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
    )
    op.create_index("ix_attempts_owner_created", "attempts", ["owner", "created_at"])
    op.create_index("ix_attempts_owner_conversation", "attempts", ["owner", "conversation_id", "pk"])
    op.create_index("ix_attempts_owner_idempotency", "attempts", ["owner", "idempotency_key"])
    op.create_index("ix_attempts_created", "attempts", ["created_at"])
    op.create_table(
        "api_keys",
        sa.Column("pk", BigId, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(128), nullable=False, unique=True),
        sa.Column("secret_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("budget_pusd", sa.BigInteger(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("revoked_at", sa.Float(), nullable=True),
    )
    op.create_table(
        "conversation_leases",
        sa.Column("owner", sa.String(64), primary_key=True),
        sa.Column("conversation_id", sa.String(128), primary_key=True),
        sa.Column("holder", sa.String(64), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
    )


def downgrade() -> None:
    """Drop every table."""
    for table in ("conversation_leases", "api_keys", "attempts", "messages", "conversations"):
        op.drop_table(table)
