"""Which database, and opening it: ``GATEWAY_DATABASE_URL``, the state folder, one engine for SQLite and PostgreSQL.

The URL comes from ``--database``, else ``GATEWAY_DATABASE_URL``, else a
SQLite file ``lockgate.db`` in the state folder (``GATEWAY_STATE_DIR``, else
``$XDG_STATE_HOME/lockgate``, else ``~/.local/state/lockgate``), which is
made on first use. PostgreSQL goes through psycopg 3: ``postgresql://`` (and
``postgres://``) are read as ``postgresql+psycopg://``, and other drivers are
refused, so there is one code path to test.

A URL's password never leaves this module: :func:`describe` names a
database by file, or by host, port, database and user.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, SQLAlchemyError

from ..locations import DATABASE_VARIABLE, DEFAULT_FILE, STATE_VARIABLE, database_url, state_dir
from .errors import DatabaseUnavailable, InvalidInput, SchemaProblem

__all__ = [
    "DATABASE_VARIABLE",
    "DEFAULT_FILE",
    "STATE_VARIABLE",
    "database_url",
    "describe",
    "open_engine",
    "parse_url",
    "state_dir",
    "unavailable",
    "unavailable_on_failure",
]

_POSTGRES = "postgresql+psycopg"
#: Seconds to wait for PostgreSQL to answer a connection: an address that
#: drops packets would otherwise hang a command until TCP gives up.
_CONNECT_TIMEOUT = "10"
#: Seconds a SQLite writer waits for another process's write to finish.
_SQLITE_BUSY_TIMEOUT = 10.0


def parse_url(url: str) -> URL:
    """``url`` as the engine URL Lockgate opens (``postgresql://`` becomes ``postgresql+psycopg://``).

    Raises:
        InvalidInput: not a URL, or a database or driver Lockgate does not
            support; the message never repeats a password.
    """
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise InvalidInput(
            "the database URL is not a URL: use sqlite:///PATH or postgresql://USER:PASSWORD@HOST:PORT/DATABASE"
        ) from None
    backend, _, driver = parsed.drivername.partition("+")
    if backend in ("postgresql", "postgres") and driver in ("", "psycopg"):
        query = dict(parsed.query)
        query.setdefault("connect_timeout", _CONNECT_TIMEOUT)
        return parsed.set(drivername=_POSTGRES, query=query)
    if backend == "sqlite" and driver in ("", "pysqlite"):
        if not parsed.database or parsed.database == ":memory:":
            raise InvalidInput("an in-memory SQLite database would vanish with the process: give a file, sqlite:///PATH")
        return parsed.set(drivername="sqlite")
    if backend in ("postgresql", "postgres", "sqlite"):
        raise InvalidInput(f"database driver {driver!r} is not supported: write the URL as {backend}://… (psycopg 3 for PostgreSQL)")
    raise InvalidInput(f"database {backend!r} is not supported: use sqlite:///PATH or postgresql://…")


def describe(url: URL) -> str:
    """The database in words, for messages: the file, or host, port, database and user; never a password."""
    if url.get_backend_name() == "sqlite":
        return f"SQLite file {url.database}"
    where = f"{url.host or 'localhost'}:{url.port or 5432}"
    user = f" as user {url.username!r}" if url.username else ""
    return f"PostgreSQL database {url.database or url.username or ''!r} at {where}{user}"


def open_engine(url: URL) -> Engine:
    """An engine for ``url`` whose connections are checked now; a SQLite file and its folder are made if missing.

    Raises:
        DatabaseUnavailable: the database cannot be reached or opened.
    """
    if url.get_backend_name() == "sqlite":
        _make_sqlite_file(url)
        engine = create_engine(url, connect_args={"timeout": _SQLITE_BUSY_TIMEOUT})
        event.listen(engine, "connect", _sqlite_pragmas)
    else:
        # pre_ping: a gateway outlives database restarts; a dead pooled
        # connection is replaced instead of failing the next call.
        engine = create_engine(url, pool_pre_ping=True)
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        engine.dispose()
        raise unavailable(url, exc) from None
    return engine


@contextmanager
def unavailable_on_failure(url: URL) -> Iterator[None]:
    """Turn a lost or refused connection inside the block into :class:`DatabaseUnavailable`.

    A missing table, or one in the way of the schema, becomes
    :class:`SchemaProblem`. Other errors are not mapped: a constraint the
    store did not expect is a bug and propagates.
    """
    try:
        yield
    except DBAPIError as exc:
        # Here, not at the top: a SQLite user need not wait for psycopg to load.
        import psycopg

        error = exc.orig
        if isinstance(error, psycopg.errors.UndefinedTable) or _sqlite_says(error, "no such table"):
            raise SchemaProblem(f"the database has no Lockgate tables ({describe(url)}): run lockgate db upgrade") from None
        if isinstance(error, psycopg.errors.DuplicateTable | psycopg.errors.DuplicateObject) or _sqlite_says(error, "already exists"):
            raise SchemaProblem(
                f"cannot create Lockgate's tables in the {describe(url)}: {_reason(url, exc)}; "
                "give Lockgate a database of its own"
            ) from None
        # What the drivers raise when the database, not the query, is the trouble.
        if exc.connection_invalidated or isinstance(error, sqlite3.OperationalError | psycopg.OperationalError):
            raise unavailable(url, exc) from None
        raise


def _sqlite_says(error: BaseException | None, words: str) -> bool:
    return isinstance(error, sqlite3.OperationalError) and words in str(error)


def unavailable(url: URL, exc: BaseException) -> DatabaseUnavailable:
    """:class:`DatabaseUnavailable` naming ``url``'s database and the driver's reason, without the password."""
    return DatabaseUnavailable(f"cannot reach the database ({describe(url)}): {_reason(url, exc)}")


def _reason(url: URL, exc: BaseException) -> str:
    original: Any = getattr(exc, "orig", None) or exc
    lines = [line.strip() for line in str(original).splitlines() if line.strip()]
    # psycopg puts the useful part after the last "failed:" of its first line.
    reason = lines[0].rsplit("failed: ", 1)[-1] if lines else type(original).__name__
    if url.password:
        reason = reason.replace(str(url.password), "***")
    return reason


def _make_sqlite_file(url: URL) -> None:
    """Make the folder and an empty file readable by its owner only: it will hold password hashes."""
    path = str(url.database)
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
    except OSError as exc:
        raise DatabaseUnavailable(f"cannot open the database ({describe(url)}): {exc.strerror}") from None
    try:
        # SQLite gives the -wal and -shm files the database file's permissions.
        # Only a new file is made here: closing a descriptor of a file drops
        # every POSIX lock this process holds on it, and another store of this
        # process (the registry's, say) may hold SQLite's locks on it already.
        # SQLite would then take itself for the file's last user, checkpoint and
        # delete the WAL, and that store would go on reading an old snapshot.
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600))
    except FileExistsError:
        pass
    except OSError as exc:
        raise DatabaseUnavailable(f"cannot open the database ({describe(url)}): {exc.strerror}") from None


def _sqlite_pragmas(connection: sqlite3.Connection, record: object) -> None:
    cursor = connection.cursor()
    # WAL: several gateways read while a command writes; without it a writer
    # blocks every reader of the file.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()

