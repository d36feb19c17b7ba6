"""Which database, and opening it: the URL's sources, the default file, PostgreSQL's URL forms, unreachable servers."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

import pytest

from lockgate.shells.store import DatabaseUnavailable, InvalidInput, Store, database_url, state_dir
from lockgate.shells.store.database import describe, parse_url
from tests.postgres import PostgresServer

from .helpers import open_upgraded


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (it was free a moment ago)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# Where the database is


def test_the_state_folder_follows_the_xdg_rules() -> None:
    assert state_dir({"GATEWAY_STATE_DIR": "/srv/lockgate", "XDG_STATE_HOME": "/x", "HOME": "/home/a"}) == "/srv/lockgate"
    assert state_dir({"XDG_STATE_HOME": "/var/state", "HOME": "/home/a"}) == "/var/state/lockgate"
    # A relative XDG_STATE_HOME is to be ignored, says the specification.
    assert state_dir({"XDG_STATE_HOME": "state", "HOME": "/home/a"}) == "/home/a/.local/state/lockgate"
    assert state_dir({"GATEWAY_STATE_DIR": " ", "HOME": "/home/a"}) == "/home/a/.local/state/lockgate"


def test_the_url_comes_from_the_flag_then_the_variable_then_the_state_folder() -> None:
    environ = {"GATEWAY_DATABASE_URL": "postgresql://db/lockgate", "GATEWAY_STATE_DIR": "/srv/lg"}
    assert database_url("sqlite:///flag.db", environ) == "sqlite:///flag.db"
    assert database_url(None, environ) == "postgresql://db/lockgate"
    assert database_url(None, {**environ, "GATEWAY_DATABASE_URL": " "}) == "sqlite:////srv/lg/lockgate.db"
    assert database_url(None, {"HOME": "/home/a"}) == "sqlite:////home/a/.local/state/lockgate/lockgate.db"


def test_the_default_database_is_made_on_first_use_readable_by_its_owner_only(tmp_path: Path) -> None:
    url = database_url(None, {"GATEWAY_STATE_DIR": str(tmp_path / "state" / "lockgate")})
    with open_upgraded(url) as store:
        store.create_user("alice", "admin", "a long passphrase")
        assert store.description == f"SQLite file {tmp_path}/state/lockgate/lockgate.db"
    folder = tmp_path / "state" / "lockgate"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE((folder / "lockgate.db").stat().st_mode) == 0o600
    with Store.open(url) as again:
        assert [user.name for user in again.list_users()] == ["alice"]


def test_postgresql_urls_use_psycopg_3() -> None:
    for url in ("postgresql://u:pw@db:6543/lg", "postgres://u:pw@db:6543/lg", "postgresql+psycopg://u:pw@db:6543/lg"):
        parsed = parse_url(url)
        assert parsed.drivername == "postgresql+psycopg"
        assert (parsed.host, parsed.port, parsed.database, parsed.username) == ("db", 6543, "lg", "u")
        assert parsed.query["connect_timeout"] == "10"
    assert parse_url("postgresql://db/lg?connect_timeout=3").query["connect_timeout"] == "3"
    assert parse_url("sqlite:///relative.db").drivername == "sqlite"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgresql+psycopg2://u:pw@db/lg", "driver 'psycopg2' is not supported: write the URL as postgresql://"),
        ("postgresql+asyncpg://u:pw@db/lg", "driver 'asyncpg' is not supported"),
        ("mysql://u:pw@db/lg", "database 'mysql' is not supported: use sqlite:///PATH or postgresql://"),
        ("/var/lib/lockgate.db", "is not a URL: use sqlite:///PATH or postgresql://"),
        ("sqlite://", "in-memory SQLite database would vanish"),
        ("sqlite:///:memory:", "in-memory SQLite database would vanish"),
    ],
)
def test_urls_lockgate_does_not_open_are_refused(url: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message) as refused:
        Store.open(url)
    assert "pw" not in str(refused.value)


def test_a_database_is_described_without_its_password() -> None:
    described = describe(parse_url("postgresql://lockgate:hunter2secret@db.internal:6543/identity"))
    assert described == "PostgreSQL database 'identity' at db.internal:6543 as user 'lockgate'"
    assert describe(parse_url("postgresql://db.internal/identity")) == "PostgreSQL database 'identity' at db.internal:5432"
    assert describe(parse_url("sqlite:////srv/lg.db")) == "SQLite file /srv/lg.db"


# Unreachable


def test_an_unreachable_postgresql_is_refused_naming_host_and_port_not_the_password() -> None:
    port = closed_port()
    with pytest.raises(DatabaseUnavailable) as refused:
        Store.open(f"postgresql://lockgate:hunter2secret@127.0.0.1:{port}/identity")
    message = str(refused.value)
    assert message.startswith(f"cannot reach the database (PostgreSQL database 'identity' at 127.0.0.1:{port} as user 'lockgate'): ")
    assert "refused" in message.lower()
    assert "hunter2secret" not in message and "\n" not in message


def test_a_wrong_password_is_refused_without_showing_it(postgres_server: PostgresServer) -> None:
    url = postgres_server.create_database()
    with pytest.raises(DatabaseUnavailable) as refused:
        Store.open(url.replace(postgres_server.password, "not-the-password"))
    message = str(refused.value)
    assert 'password authentication failed for user "lockgate"' in message
    assert "not-the-password" not in message and postgres_server.password not in message


def test_a_sqlite_file_that_cannot_be_made_is_refused_naming_it(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(DatabaseUnavailable, match=f"cannot open the database \\(SQLite file {blocker}/lockgate.db\\): "):
        Store.open(f"sqlite:///{blocker}/lockgate.db")


def test_a_sqlite_file_that_is_not_a_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("these are not the tables you are looking for\n" * 100)
    with pytest.raises(DatabaseUnavailable, match=f"cannot reach the database \\(SQLite file {path}\\): file is not a database"):
        Store.open(f"sqlite:///{path}")


def test_losing_postgresql_mid_run_fails_closed() -> None:
    # A server of its own, stopped under the store's feet.
    server = PostgresServer.start()
    try:
        store = open_upgraded(server.create_database())
        _, secret = store.create_key("ci", role="user", agents=["*"])
        assert store.lookup(secret) is not None
        server.stop()
        for call in (lambda: store.lookup(secret), store.snapshot, store.change_marker, store.has_admin):
            with pytest.raises(DatabaseUnavailable, match=f"cannot reach the database \\(PostgreSQL database .* at 127.0.0.1:{server.port}"):
                call()
        store.touch_last_used("ffffffff")
        with pytest.raises(DatabaseUnavailable):
            store.flush_last_used()
        with pytest.raises(DatabaseUnavailable):
            store.close()  # the last-used time could not be written either
    finally:
        server.stop()
        assert not os.path.exists(server.folder)


def test_without_postgresql_the_tests_say_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import tests.postgres

    monkeypatch.setattr(tests.postgres, "find_bindir", lambda: None)
    with pytest.raises(tests.postgres.PostgresUnavailable, match="PostgreSQL is not installed .*: install PostgreSQL with `make postgres`"):
        PostgresServer.start()
