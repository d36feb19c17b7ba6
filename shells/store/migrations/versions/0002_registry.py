"""Registered instances: the live registry of servers, kept across restarts.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# Spelt out rather than imported from lockgate.shells.store.schema (see 0001).
_TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "registrations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("server", sa.String(128), nullable=False),
        sa.Column("instance_id", sa.String(64), nullable=False),
        sa.Column("transport", sa.String(8), nullable=False),
        sa.Column("endpoint", sa.Text(), nullable=True),
        sa.Column("command", sa.Text(), nullable=True),
        sa.Column("args", sa.JSON(), nullable=False),
        sa.Column("working_dir", sa.Text(), nullable=True),
        sa.Column("env", sa.JSON(), nullable=False),
        sa.Column("weight", sa.Integer(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.CheckConstraint("transport IN ('stdio', 'http')", name="ck_registrations_transport"),
        sa.CheckConstraint("weight >= 1", name="ck_registrations_weight"),
        sa.PrimaryKeyConstraint("id", name="pk_registrations"),
        sa.UniqueConstraint("server", "instance_id", name="uq_registrations_server_instance_id"),
    )


def downgrade() -> None:
    op.drop_table("registrations")
