"""Postgres: the conversations' listing index becomes partial (`WHERE updated_at > 0`).

Every listing states the condition (`gateway/store/tables.py: LISTED`) and no lookup by (owner, id) does, so
such a lookup can only use the unique (owner, id) index: see tables.py for the plan it replaces. The index is
dropped and made again in the migration's transaction, which holds writes to `conversations` while it builds
(about a second per million conversations). Nothing on SQLite.

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import text

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

NAME = "ix_conversations_owner_updated"


def upgrade() -> None:
    """Make the listing index partial (Postgres only)."""
    if op.get_bind().dialect.name == "postgresql":
        op.drop_index(NAME, table_name="conversations")
        op.create_index(
            NAME, "conversations", ["owner", "updated_at"], postgresql_where=text("updated_at > 0")
        )


def downgrade() -> None:
    """Make it a whole index again (Postgres only)."""
    if op.get_bind().dialect.name == "postgresql":
        op.drop_index(NAME, table_name="conversations")
        op.create_index(NAME, "conversations", ["owner", "updated_at"])
