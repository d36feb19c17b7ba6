"""Every store test runs twice: on a SQLite file and on a real PostgreSQL server the session starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.postgres import PostgresServer

__all__ = ["database_url"]


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of a new, empty database of each kind."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state' / 'lockgate.db'}"
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return server.create_database()
