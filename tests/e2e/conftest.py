"""Fixtures for end-to-end tests: real `lockgate serve` processes, real servers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from mcp import Client, StdioServerParameters

SERVERS = Path(__file__).parent / "servers"
TESTING_SERVER = str(SERVERS / "testing_server.py")

RULES: dict[str, Any] = {
    "agents": {
        "dev": {"allow": {"servers": ["*"]}, "deny": {"tools": {"testing": ["drop_*"]}}},
        "guest": {"allow": {"servers": ["time"]}},
    },
    "defaults": {"deny_on_missing_agent": True},
}


def processes_mentioning(marker: str) -> list[int]:
    """Live processes whose command line contains ``marker`` (zombies excluded)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker.encode() in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


class Setup:
    """One gateway configuration in a temporary folder."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.config = tmp / ".mcp.json"
        self.rules = tmp / ".mcp-gateway-rules.json"
        self.audit = tmp / "audit.jsonl"
        self.servers: dict[str, Any] = {}
        self.env: dict[str, str] = {}

    def add(self, name: str, *args: str, command: str = sys.executable, **extra: Any) -> None:
        self.servers[name] = {"command": command, "args": list(args), "description": f"{name} for tests", **extra}

    def write(self, rules: dict[str, Any] | None = None) -> None:
        self.config.write_text(json.dumps({"mcpServers": self.servers}))
        self.rules.write_text(json.dumps(rules or RULES))

    def argv(self) -> list[str]:
        return ["-m", "lockgate.shells", "serve", "--config", str(self.config), "--rules", str(self.rules)]

    def environ(self) -> dict[str, str]:
        return {
            "PATH": os.environ["PATH"],
            "HOME": os.environ.get("HOME", "/tmp"),
            "GATEWAY_AUDIT_LOG": str(self.audit),
            "GATEWAY_INIT_STRATEGY": "lazy",
            # The state folder (database, keys) is the test's, never the user's.
            "GATEWAY_STATE_DIR": str(self.tmp / "state"),
            **self.env,
        }

    @asynccontextmanager
    async def client(self) -> AsyncIterator[Client]:
        self.write() if not self.config.exists() else None
        params = StdioServerParameters(command=sys.executable, args=self.argv(), env=self.environ())
        async with Client(params, mode="legacy", read_timeout_seconds=30) as client:
            yield client

    def popen(self) -> subprocess.Popen[bytes]:
        if not self.config.exists():
            self.write()
        return subprocess.Popen(
            [sys.executable, *self.argv()],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=self.environ(),
        )

    def audit_records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.audit.read_text().splitlines()]


@pytest.fixture
def setup(tmp_path: Path) -> Setup:
    s = Setup(tmp_path)
    s.add("testing", TESTING_SERVER, "--marker", str(tmp_path))
    return s


@pytest.fixture(autouse=True)
def no_process_left_behind(tmp_path: Path) -> Any:
    """Every test ends with no process that mentions its temporary folder."""
    yield
    import time

    deadline = time.monotonic() + 10
    while processes_mentioning(str(tmp_path)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert processes_mentioning(str(tmp_path)) == []


def structured(result: Any) -> Any:
    return result.structured_content


Check = Callable[..., None]
