"""Lockgate's identity store: users and API keys in SQL (SQLite by default, PostgreSQL in production).

:class:`Store` is the one object to use; open it with :meth:`Store.open` on
a URL from :func:`database_url` (``--database``, ``GATEWAY_DATABASE_URL``, or
a SQLite file in the state folder). It speaks SQLAlchemy 2 Core, not the ORM,
and its schema is migrated by the Alembic revisions shipped in
``migrations/``, run from code (:meth:`Store.ensure_schema` at start-up,
``lockgate db upgrade`` by hand).

The modules, each one concept: :mod:`.database` (which database, opening
it), :mod:`.schema` (the tables), :mod:`.migrate` (revisions),
:mod:`.passwords` (argon2id), :mod:`.apikeys` (secrets and their hashes),
:mod:`.records` (what the store hands out), :mod:`.store` (the operations),
:mod:`.errors`.

Importing this package imports SQLAlchemy; the CLI does it only inside a
command's ``run``, so that ``lockgate --help`` stays fast.
"""

from __future__ import annotations

from .apikeys import PREFIX as KEY_PREFIX
from .apikeys import parse_secret
from .database import DATABASE_VARIABLE, STATE_VARIABLE, database_url, state_dir
from .errors import Conflict, DatabaseUnavailable, InvalidInput, NotFound, SchemaProblem, StoreError
from .migrate import SchemaState, SchemaStatus
from .records import KeyRecord, KeyState, LoginResult, Snapshot, UserRecord
from .store import ROLES, Store

__all__ = [
    "DATABASE_VARIABLE",
    "KEY_PREFIX",
    "ROLES",
    "STATE_VARIABLE",
    "Conflict",
    "DatabaseUnavailable",
    "InvalidInput",
    "KeyRecord",
    "KeyState",
    "LoginResult",
    "NotFound",
    "SchemaProblem",
    "SchemaState",
    "SchemaStatus",
    "Snapshot",
    "Store",
    "StoreError",
    "UserRecord",
    "database_url",
    "parse_secret",
    "state_dir",
]
