"""Postgres: the responses' lookup indexes by conversation and by request become partial.

`ix_responses_owner_conversation_turn` holds `conversation_id IS NOT NULL`, `ix_responses_owner_request`
`request_hash IS NOT NULL`: every row qualifies, and the lookups that use them (`conversation_id = ...`,
`request_hash = ...`) imply the condition, but a lookup of a response by (owner, id) does not, so it can use
only the unique index, whatever the table's statistics were when its plan was made (see
`gateway/store/tables.py`). Each index is dropped and made again in the migration's transaction, which holds
writes to `responses` while it builds. Nothing on SQLite.

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import text

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

INDEXES = {
    "ix_responses_owner_conversation_turn": (["owner", "conversation_id", "turn"], "conversation_id"),
    "ix_responses_owner_request": (["owner", "request_hash", "created_at"], "request_hash"),
}


def upgrade() -> None:
    """Make both indexes partial (Postgres only)."""
    if op.get_bind().dialect.name != "postgresql":
        return
    for name, (columns, required) in INDEXES.items():
        op.drop_index(name, table_name="responses")
        op.create_index(name, "responses", columns, postgresql_where=text(f"{required} IS NOT NULL"))


def downgrade() -> None:
    """Make them whole indexes again (Postgres only)."""
    if op.get_bind().dialect.name != "postgresql":
        return
    for name, (columns, _) in INDEXES.items():
        op.drop_index(name, table_name="responses")
        op.create_index(name, "responses", columns)
