"""Fixtures every test folder shares: one PostgreSQL server for the whole session (see :mod:`tests.postgres`)."""

from __future__ import annotations

from tests.postgres import postgres_server

__all__ = ["postgres_server"]
