"""Fixtures every test folder shares: one PostgreSQL server and one Redis server for the whole session (see :mod:`tests.postgres`, :mod:`tests.redis_server`)."""

from __future__ import annotations

from tests.postgres import postgres_server
from tests.redis_server import redis_server

__all__ = ["postgres_server", "redis_server"]
