"""Postgres: the request log's (owner, created_at) index becomes partial (`WHERE created_at > 0`).

Every read of `attempts` bounded in time states the condition (`gateway/store/tables.py: TIMED`) and no lookup
by (owner, conversation_id) does, so such a lookup (a conversation's spend, read before each turn of a
conversation with a cost cap) can only use the (owner, conversation_id) index, whatever the table's
statistics were when its plan was made. Planned on an empty table, the two cost the same, and the time
index, when picked, walked every call of the caller (12 ms at 30,000 calls). The index is dropped and made
again in the migration's transaction, which holds writes to `attempts` while it builds. Nothing on SQLite.

Revision ID: 0014
Revises: 0013
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import text

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

NAME = "ix_attempts_owner_created"


def upgrade() -> None:
    """Make the time index partial (Postgres only)."""
    if op.get_bind().dialect.name == "postgresql":
        op.drop_index(NAME, table_name="attempts")
        op.create_index(NAME, "attempts", ["owner", "created_at"], postgresql_where=text("created_at > 0"))


def downgrade() -> None:
    """Make it a whole index again (Postgres only)."""
    if op.get_bind().dialect.name == "postgresql":
        op.drop_index(NAME, table_name="attempts")
        op.create_index(NAME, "attempts", ["owner", "created_at"])
