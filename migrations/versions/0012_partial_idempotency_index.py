"""The request log's Idempotency-Key index holds only the calls that carry a key (`IS NOT NULL`).

Most calls carry no key: every one of them added an entry to this index, on each turn's write. The lookup by
key (`usage.keyed_turn`: `idempotency_key = :key` implies the condition) still uses it, and no other lookup
by owner can (see `gateway/store/tables.py`). The index is dropped and made again in the migration's
transaction, which holds writes to `attempts` while it builds.

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import text

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

NAME = "ix_attempts_owner_idempotency"
KEYED = text("idempotency_key IS NOT NULL")


def upgrade() -> None:
    """Make the index partial."""
    op.drop_index(NAME, table_name="attempts")
    op.create_index(
        NAME, "attempts", ["owner", "idempotency_key"], sqlite_where=KEYED, postgresql_where=KEYED
    )


def downgrade() -> None:
    """Make it a whole index again."""
    op.drop_index(NAME, table_name="attempts")
    op.create_index(NAME, "attempts", ["owner", "idempotency_key"])
