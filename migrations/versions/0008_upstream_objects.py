"""Record the upstream objects created through the gateway with their caller (gateway-key mode isolation).

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create upstream_objects."""
    op.create_table(
        "upstream_objects",
        sa.Column("object_id", sa.String(200), primary_key=True),
        sa.Column("owner", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
    )


def downgrade() -> None:
    """Drop upstream_objects."""
    op.drop_table("upstream_objects")
