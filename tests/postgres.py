"""A real PostgreSQL server for tests: its own folder under /tmp, 127.0.0.1 only, stopped at the end.

The binaries are Debian's (``apt-get install -y postgresql``, which ``make
postgres`` runs when they are missing), found under
``/usr/lib/postgresql/<version>/bin``. ``initdb`` refuses to run as root, so
as root the server runs as the ``postgres`` user (``runuser``); as anyone
else it runs as that user. The superuser ``lockgate`` has a random password
and connections over TCP must give it, as in production.

Use the session fixture :func:`postgres_server` (import it into a
``conftest.py``) and :meth:`PostgresServer.create_database` for a fresh,
empty database per test. When no server can be started the tests that need
one fail, saying why: they are never skipped.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

__all__ = ["INSTALL_HINT", "PostgresServer", "PostgresUnavailable", "find_bindir", "postgres_server"]

INSTALL_HINT = "install PostgreSQL with `make postgres` (Debian's package: apt-get install -y postgresql)"
_USER = "lockgate"
_TOOLS = ("initdb", "pg_ctl", "postgres")


class PostgresUnavailable(Exception):
    """No PostgreSQL server could be started; ``str()`` says why and what to do."""


def find_bindir() -> Path | None:
    """The newest ``/usr/lib/postgresql/*/bin`` with initdb, pg_ctl and postgres, else one on ``PATH``."""
    def version(path: str) -> tuple[int, ...]:
        number = Path(path).parent.name
        return tuple(int(part) for part in number.split(".") if part.isdigit())

    for folder in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True):
        if all(os.access(os.path.join(folder, tool), os.X_OK) for tool in _TOOLS):
            return Path(folder)
    found = shutil.which("pg_ctl")
    if found is not None:
        folder = os.path.dirname(os.path.realpath(found))
        if all(os.access(os.path.join(folder, tool), os.X_OK) for tool in _TOOLS):
            return Path(folder)
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PostgresServer:
    """One running server; :meth:`start` makes it, :meth:`stop` removes it and its folder."""

    def __init__(self, folder: Path, bindir: Path, port: int, password: str, run_as: list[str]) -> None:
        self.folder = folder
        self.bindir = bindir
        self.port = port
        self.password = password
        self._run_as = run_as
        self._names = itertools.count(1)

    @classmethod
    def start(cls) -> PostgresServer:
        """Start a server in a new temporary folder.

        Raises:
            PostgresUnavailable: PostgreSQL is not installed, or would not start.
        """
        bindir = find_bindir()
        if bindir is None:
            raise PostgresUnavailable(f"PostgreSQL is not installed (no initdb under /usr/lib/postgresql/*/bin): {INSTALL_HINT}")
        run_as: list[str] = []
        owner: pwd.struct_passwd | None = None
        if os.geteuid() == 0:
            try:
                owner = pwd.getpwnam("postgres")
            except KeyError:
                raise PostgresUnavailable(
                    "running as root, and there is no 'postgres' user to run the server as (initdb refuses root)"
                ) from None
            run_as = ["runuser", "-u", "postgres", "--"]
        folder = Path(tempfile.mkdtemp(prefix="lockgate-postgres-"))
        password = secrets.token_urlsafe(18)
        (folder / "password").write_text(password + "\n")
        if owner is not None:
            for path in (folder, folder / "password"):
                os.chown(path, owner.pw_uid, owner.pw_gid)
        server = cls(folder, bindir, 0, password, run_as)
        try:
            server._initdb()
            server._launch()
        except BaseException:
            server._remove()
            raise
        return server

    def _run(self, *argv: str, what: str) -> None:
        log = self.folder / "commands.log"
        with open(log, "ab") as output:
            result = subprocess.run([*self._run_as, *argv], stdin=subprocess.DEVNULL, stdout=output, stderr=output, timeout=120)
        if result.returncode != 0:
            tail = log.read_text(errors="replace").strip().splitlines()[-5:]
            raise PostgresUnavailable(f"PostgreSQL's {what} failed (exit {result.returncode}): {' | '.join(tail)}")

    def _initdb(self) -> None:
        self._run(
            str(self.bindir / "initdb"),
            "--pgdata", str(self.folder / "data"),
            "--username", _USER,
            "--pwfile", str(self.folder / "password"),
            "--auth-host", "scram-sha-256",
            "--auth-local", "trust",
            "--encoding", "UTF8",
            "--locale", "C",
            "--no-sync",
            what="initdb",
        )

    def _launch(self, port: int | None = None) -> None:
        # A port found free may be taken before the server binds it: try a few (or only ``port``).
        for attempt in range(3 if port is None else 1):
            self.port = port or _free_port()
            options = (
                f"-h 127.0.0.1 -p {self.port} -k {self.folder} "
                # A throwaway server: durability only slows the tests down.
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            )
            try:
                self._run(
                    str(self.bindir / "pg_ctl"),
                    "--pgdata", str(self.folder / "data"),
                    "--log", str(self.folder / "server.log"),
                    "--wait", "--timeout", "60",
                    "-o", options,
                    "start",
                    what="start (server.log in the folder has the details)",
                )
                return
            except PostgresUnavailable:
                if attempt == 2 or port is not None:
                    log = (self.folder / "server.log").read_text(errors="replace").strip().splitlines()[-3:]
                    raise PostgresUnavailable(f"PostgreSQL would not start on 127.0.0.1: {' | '.join(log)}") from None

    def url(self, database: str = "postgres", *, password: str | None = None) -> str:
        """A ``postgresql://`` URL for ``database``, with the superuser's password (or ``password``)."""
        return f"postgresql://{_USER}:{password or self.password}@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """A new, empty database; its URL."""
        import psycopg

        name = f"test_{os.getpid()}_{next(self._names)}"
        with psycopg.connect(self.url(), autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def halt(self) -> None:
        """Stop the server (``fast``: open connections are cut), keeping its data for :meth:`resume`."""
        self._run(str(self.bindir / "pg_ctl"), "--pgdata", str(self.folder / "data"), "--wait", "--mode", "fast", "stop",
                  what="stop")

    def resume(self) -> None:
        """Start a server stopped by :meth:`halt` again, on the same port and with the same data."""
        self._launch(self.port)

    def stop(self) -> None:
        """Stop the server and remove its folder; again, it does nothing."""
        if not self.folder.exists():
            return
        try:
            for mode in ("fast", "immediate"):
                try:
                    self._run(str(self.bindir / "pg_ctl"), "--pgdata", str(self.folder / "data"), "--wait",
                              "--mode", mode, "stop", what="stop")
                    break
                except (PostgresUnavailable, subprocess.TimeoutExpired):
                    continue
        finally:
            self._remove()

    def _remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the session; a test that needs it fails, saying why, when it cannot start."""
    problem = None
    try:
        server = PostgresServer.start()
    except (PostgresUnavailable, OSError, subprocess.TimeoutExpired) as exc:
        problem = str(exc)
    if problem is not None:  # outside the except block: the message alone, not a chain
        pytest.fail(f"PostgreSQL tests cannot run: {problem}", pytrace=False)
    try:
        yield server
    finally:
        server.stop()
