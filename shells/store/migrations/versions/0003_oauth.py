"""OAuth tokens and clients for downstream servers, kept sealed.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# Spelt out rather than imported from lockgate.shells.store.schema (see 0001).
_TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "oauth_tokens",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("server", sa.String(128), nullable=False),
        sa.Column("principal", sa.String(255), nullable=False),
        sa.Column("sealed", sa.LargeBinary(), nullable=False),
        sa.Column("expires_at", _TIME, nullable=True),
        sa.Column("scopes", sa.JSON(), nullable=False),
        sa.Column("updated_at", _TIME, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_oauth_tokens"),
        sa.UniqueConstraint("server", "principal", name="uq_oauth_tokens_server_principal"),
    )
    op.create_table(
        "oauth_clients",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("server", sa.String(128), nullable=False),
        sa.Column("issuer", sa.String(1024), nullable=False),
        sa.Column("sealed", sa.LargeBinary(), nullable=False),
        sa.Column("updated_at", _TIME, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_oauth_clients"),
        sa.UniqueConstraint("server", "issuer", name="uq_oauth_clients_server_issuer"),
    )


def downgrade() -> None:
    op.drop_table("oauth_clients")
    op.drop_table("oauth_tokens")
