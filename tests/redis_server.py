"""A real Redis server for tests: its own folder under /tmp, 127.0.0.1 only, no persistence, stopped at the end.

The binary is Debian's ``/usr/bin/redis-server`` (``apt-get install -y
redis-server``, which ``make redis`` runs when it is missing). The server
keeps nothing on disk (``--save ''``, ``--appendonly no``), so a restart
starts empty, as a crashed cache does. :meth:`RedisServer.kill` ends it with
SIGKILL and :meth:`RedisServer.restart` starts it again on the same port,
for the tests of a store that goes away under load.

Use the session fixture :func:`redis_server` (import it into a
``conftest.py``), and :meth:`RedisServer.flush` between tests. When no server
can be started the tests that need one fail, saying why: they are never
skipped.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

__all__ = ["INSTALL_HINT", "RedisServer", "RedisUnavailable", "find_redis_server", "redis_server"]

INSTALL_HINT = "install Redis with `make redis` (Debian's package: apt-get install -y redis-server)"
# How long a start may take before the test fails: a fresh server answers in milliseconds.
_START_TIMEOUT = 10.0


class RedisUnavailable(Exception):
    """No Redis server could be started; ``str()`` says why and what to do."""


def find_redis_server() -> str | None:
    """Debian's ``/usr/bin/redis-server``, else one on ``PATH``."""
    if os.access("/usr/bin/redis-server", os.X_OK):
        return "/usr/bin/redis-server"
    return shutil.which("redis-server")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _ping(port: int, timeout: float = 0.5) -> bool:
    """Does a Redis server answer PING on ``port``? (RESP by hand: no client library needed here.)"""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as conn:
            conn.sendall(b"*1\r\n$4\r\nPING\r\n")
            return conn.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One server process; :meth:`start` makes it, :meth:`stop` ends it and removes its folder."""

    def __init__(self, binary: str, folder: Path, port: int) -> None:
        self.binary = binary
        self.folder = folder
        self.port = port
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The ``GATEWAY_REDIS_URL`` of this server."""
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    @classmethod
    def start(cls) -> RedisServer:
        """Start a server on a free port in a new temporary folder."""
        binary = find_redis_server()
        if binary is None:
            raise RedisUnavailable(f"redis-server not found; {INSTALL_HINT}")
        folder = Path(tempfile.mkdtemp(prefix="lockgate-redis-"))
        server = cls(binary, folder, _free_port())
        try:
            server._launch()
        except BaseException:
            server.stop()
            raise
        return server

    def _launch(self) -> None:
        command = [
            self.binary,
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--dir", str(self.folder),
            "--save", "",
            "--appendonly", "no",
            "--protected-mode", "yes",
            "--daemonize", "no",
            "--loglevel", "warning",
            "--logfile", str(self.folder / "redis.log"),
        ]
        self._process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + _START_TIMEOUT
        while not _ping(self.port):
            if self._process.poll() is not None:
                raise RedisUnavailable(f"redis-server exited with code {self._process.returncode}: {self._log_tail()}")
            if time.monotonic() > deadline:
                raise RedisUnavailable(f"redis-server did not answer within {_START_TIMEOUT:g} s: {self._log_tail()}")
            time.sleep(0.02)

    def _log_tail(self) -> str:
        try:
            return (self.folder / "redis.log").read_text(encoding="utf-8", errors="replace")[-2000:].strip()
        except OSError:
            return "(no log)"

    def alive(self) -> bool:
        return self._process is not None and self._process.poll() is None and _ping(self.port)

    def kill(self) -> None:
        """SIGKILL the server, as a crash would end it; what it held is lost."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGKILL)
            self._process.wait(timeout=10)
        self._process = None

    def restart(self) -> None:
        """Start the server again on the same port (after :meth:`kill`), empty."""
        self.kill()
        deadline = time.monotonic() + _START_TIMEOUT
        while True:
            try:
                self._launch()
                return
            except RedisUnavailable:
                # The port may still be held for a moment by the killed process's sockets.
                if time.monotonic() > deadline:
                    raise
                self.kill()
                time.sleep(0.1)

    def command(self, *args: str) -> bytes:
        """Send one command (RESP by hand) and return the raw reply: for tests that look at keys."""
        payload = f"*{len(args)}\r\n".encode() + b"".join(f"${len(a.encode())}\r\n{a}\r\n".encode() for a in args)
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as conn:
            conn.sendall(payload)
            return conn.recv(65536)

    def flush(self) -> None:
        """Empty the server (between tests)."""
        self.command("FLUSHALL")

    def stop(self) -> None:
        """Stop the server and remove its folder."""
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=10)
        self._process = None
        shutil.rmtree(self.folder, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One Redis server for the whole test session (fails, never skips, when none can start)."""
    try:
        server = RedisServer.start()
    except RedisUnavailable as exc:
        pytest.fail(str(exc))
    try:
        yield server
    finally:
        server.stop()
