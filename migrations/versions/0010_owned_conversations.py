"""Postgres: the function that counts a caller's conversations for the turn's lease statement.

`gateway_owned_conversations(caller, bound)` (see `gateway/store/tables.py: OWNED_CONVERSATIONS`): the
count the TAKE statement makes when a conversation is new, moved out of the statement so that Postgres
keeps one generic plan for it instead of planning it anew at every turn. Nothing on SQLite.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

OWNED_CONVERSATIONS = """
CREATE OR REPLACE FUNCTION gateway_owned_conversations(caller varchar, bound integer) RETURNS bigint
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN (SELECT count(*) FROM (SELECT FROM conversations WHERE owner = caller LIMIT bound) AS bounded);
END
$$
"""


def upgrade() -> None:
    """Create the function (Postgres only)."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute(OWNED_CONVERSATIONS)


def downgrade() -> None:
    """Drop the function (Postgres only)."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS gateway_owned_conversations(varchar, integer)")
