"""Tool-definition pins: each server's pinned tools and quarantined changes.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# Spelt out rather than imported from lockgate.shells.store.schema (see 0001).
_TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "tool_pins",
        sa.Column("server", sa.String(128), nullable=False),
        sa.Column("record", sa.JSON(), nullable=False),
        sa.Column("updated_at", _TIME, nullable=False),
        sa.PrimaryKeyConstraint("server", name="pk_tool_pins"),
    )


def downgrade() -> None:
    op.drop_table("tool_pins")
