"""The identity tables, as SQLAlchemy Core tables: what the store's queries are written against.

The migrations under ``migrations/versions/`` create these tables; they are
written out by hand, not generated from this module at run time, so an old
revision stays what it was when it shipped. A test compares the two on SQLite
and PostgreSQL (Alembic's ``compare_metadata``), so they cannot drift apart.

Every time is a :class:`UtcDateTime`: an aware UTC ``datetime`` in Python,
``timestamp with time zone`` in PostgreSQL and ISO text in SQLite, which has
no time type and would hand naive values back.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Dialect,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
)

__all__ = [
    "CHANGES_ROW",
    "UtcDateTime",
    "api_keys",
    "changes",
    "metadata",
    "oauth_clients",
    "oauth_tokens",
    "registrations",
    "revocations",
    "tool_pins",
    "users",
]

#: Constraint names spelt out the same way on both databases, so that a later
#: migration can name the constraint it alters.
NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING)


class UtcDateTime(TypeDecorator[datetime]):
    """An aware UTC ``datetime``; a naive one is refused rather than guessed at."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: the store keeps UTC times only")
        return value.astimezone(UTC)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        # SQLite returns what was written, without its offset; it was UTC.
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


users = Table(
    "users",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("role", String(16), nullable=False),
    Column("password_hash", String(255), nullable=False),
    Column("disabled", Boolean, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("last_login_at", UtcDateTime),
    CheckConstraint("role IN ('admin', 'user')", name="role"),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", Integer, primary_key=True),
    # The public part of the secret: lookups go through its unique index.
    Column("key_id", String(16), nullable=False, unique=True),
    Column("name", String(128), nullable=False),
    Column("user_id", Integer, ForeignKey("users.id"), index=True),
    Column("role", String(16), nullable=False),
    Column("agents", JSON, nullable=False),
    Column("expires_at", UtcDateTime),
    Column("rate", String(32)),
    Column("revoked", Boolean, nullable=False),
    Column("revoked_at", UtcDateTime),
    Column("created_at", UtcDateTime, nullable=False),
    Column("last_used_at", UtcDateTime),
    Column("secret_hash", String(64), nullable=False),
    CheckConstraint("role IN ('admin', 'user')", name="role"),
)

#: Delegated tokens revoked by id before they expire; the token code reads them.
revocations = Table(
    "revocations",
    metadata,
    Column("token_id", String(128), primary_key=True),
    Column("revoked_at", UtcDateTime, nullable=False),
)

#: One row whose counter every change to the tables above raises, in the same
#: transaction: a running gateway polls it (one row by primary key) and reads
#: everything again only when it moved.
changes = Table(
    "changes",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("counter", Integer, nullable=False),
)

#: The primary key of the one row of ``changes``.
CHANGES_ROW = 1

#: Instances registered while a gateway runs (``POST /gateway/register``),
#: merged into its configuration at start-up and at every change. ``env``
#: holds what the process needs, secrets included: nothing that lists
#: registrations returns its values.
registrations = Table(
    "registrations",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("server", String(128), nullable=False),
    Column("instance_id", String(64), nullable=False),
    Column("transport", String(8), nullable=False),
    Column("endpoint", Text),
    Column("command", Text),
    Column("args", JSON, nullable=False),
    Column("working_dir", Text),
    Column("env", JSON, nullable=False),
    Column("weight", Integer, nullable=False),
    Column("description", Text, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    UniqueConstraint("server", "instance_id"),
    CheckConstraint("transport IN ('stdio', 'http')", name="transport"),
    CheckConstraint("weight >= 1", name="weight"),
)

#: OAuth tokens Lockgate holds for downstream MCP servers: one per server and
#: principal (a Lockgate principal id, or ``""`` for the gateway-wide token, not
#: NULL, so that the unique constraint covers it). ``sealed`` is the token
#: response sealed by :class:`lockgate.shells.sealed.SecretBox` for its row;
#: ``expires_at`` and ``scopes`` are kept beside it in the clear, so that what
#: is held can be listed without the key.
oauth_tokens = Table(
    "oauth_tokens",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("server", String(128), nullable=False),
    Column("principal", String(255), nullable=False),
    Column("sealed", LargeBinary, nullable=False),
    Column("expires_at", UtcDateTime),
    Column("scopes", JSON, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    UniqueConstraint("server", "principal"),
)

#: OAuth clients Lockgate registered with a downstream server's authorization
#: server (dynamic client registration): one per server and issuer, the
#: client information (its id and secret) sealed for its row.
oauth_clients = Table(
    "oauth_clients",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("server", String(128), nullable=False),
    Column("issuer", String(1024), nullable=False),
    Column("sealed", LargeBinary, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    UniqueConstraint("server", "issuer"),
)

#: Tool-definition pins (lockgate.core._pins): one row per server, its record
#: as the core wrote it (the pinned tools' digests and definitions, and the
#: tools quarantined). Not counted in ``changes``: a gateway reads pins again
#: on a reload, not on the change counter.
tool_pins = Table(
    "tool_pins",
    metadata,
    Column("server", String(128), primary_key=True),
    Column("record", JSON, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
)
