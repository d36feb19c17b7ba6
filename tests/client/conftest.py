"""A real ``lockgate serve --transport http`` with real MCP servers, for the client's tests.

The gateway serves two servers of tests/e2e/servers: ``testing`` (echo, slow,
drop_everything, ...) and ``catalog`` (resources, a template and a prompt).
Agent ``dev`` may use both but not ``drop_*``; ``guest`` only ``catalog``.
A request without ``agent_id`` acts as ``dev``. Everything listens on
127.0.0.1; each gateway is stopped with SIGTERM at the end of its test.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
SERVERS = REPO / "tests" / "e2e" / "servers"
TESTING_SERVER = str(SERVERS / "testing_server.py")
CATALOG_SERVER = str(SERVERS / "catalog_server.py")

RULES: dict[str, Any] = {
    "agents": {
        "dev": {"allow": {"servers": ["*"]}, "deny": {"tools": {"testing": ["drop_*"]}}},
        "guest": {"allow": {"servers": ["catalog"]}},
    },
    "defaults": {"deny_on_missing_agent": False},
}


def free_port() -> int:
    """A port nothing listens on now (the OS's pick on 127.0.0.1)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Gateway:
    """A running ``lockgate serve --transport http``: its root URL, and its stderr so far (printed when a test fails)."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.process = process
        self.stderr: list[str] = []
        self._ready = threading.Event()
        self.mcp_url = ""
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for raw in self.process.stderr:
            line = raw.decode(errors="replace")
            self.stderr.append(line)
            found = re.search(r"at (http://\S+/mcp)", line)
            if found and not self.mcp_url:
                self.mcp_url = found.group(1)
                self._ready.set()

    @property
    def url(self) -> str:
        """The gateway's root, e.g. ``http://127.0.0.1:41234``."""
        return self.mcp_url.removesuffix("/mcp")

    def wait_ready(self, seconds: float = 30) -> None:
        assert self._ready.wait(seconds), "the gateway did not start:\n" + "".join(self.stderr)

    def stop(self) -> None:
        """SIGTERM, and wait for the exit (SIGKILL after 30 s)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class Site:
    """A gateway's files in a temporary folder: servers, rules, audit log, and the environment it runs with."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.config = tmp / ".mcp.json"
        self.rules = tmp / ".mcp-gateway-rules.json"
        self.audit = tmp / "audit.jsonl"
        self.servers: dict[str, Any] = {
            "testing": {"command": sys.executable, "args": [TESTING_SERVER], "description": "testing for tests"},
            "catalog": {"command": sys.executable, "args": [CATALOG_SERVER], "description": "catalog for tests"},
        }
        self.env: dict[str, str] = {}

    def write(self, rules: dict[str, Any] | None = None) -> None:
        self.config.write_text(json.dumps({"mcpServers": self.servers}))
        self.rules.write_text(json.dumps(rules or RULES))

    def environ(self) -> dict[str, str]:
        return {
            "PATH": os.environ["PATH"],
            "HOME": os.environ.get("HOME", "/tmp"),
            "GATEWAY_AUDIT_LOG": str(self.audit),
            "GATEWAY_INIT_STRATEGY": "lazy",
            "GATEWAY_DEFAULT_AGENT": "dev",
            "GATEWAY_STATE_DIR": str(self.tmp / "state"),
            **self.env,
        }

    @contextmanager
    def serve(self, *extra: str, port: int = 0) -> Iterator[Gateway]:
        """A gateway serving these files over HTTP on 127.0.0.1 (``port`` 0: a free one), stopped at the end."""
        if not self.config.exists():
            self.write()
        argv = [
            sys.executable, "-m", "lockgate.shells", "serve", "--config", str(self.config), "--rules", str(self.rules),
            "--transport", "http", "--host", "127.0.0.1", "--port", str(port), *extra,
        ]
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=self.environ())
        gateway = Gateway(process)
        try:
            gateway.wait_ready()
            yield gateway
        finally:
            gateway.stop()
            print("".join(gateway.stderr))  # shown when the test fails


@pytest.fixture
def site(tmp_path: Path) -> Site:
    return Site(tmp_path)


@pytest.fixture
def gateway(site: Site) -> Iterator[Gateway]:
    with site.serve() as running:
        yield running
