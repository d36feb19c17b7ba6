"""End to end: the era of MCP Lockgate speaks to each server, with real peers on both sides.

An SDK ``MCPServer`` (both eras) over stdio and over Streamable HTTP is
spoken to in 2026-07-28; a server without ``server/discover`` (the raw
server, no SDK) gets ``initialize``. The client is the SDK ``Client`` in
its handshake mode, as the gateway's front speaks it.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from .conftest import SERVERS, Setup, structured

ERA_SERVER = str(SERVERS / "era_server.py")
RAW_SERVER = str(SERVERS / "raw_server.py")


def era_setup(setup: Setup, **env: str) -> Setup:
    """The era server over stdio and the raw server, behind a gateway in ``auto`` (and debug, for its status)."""
    setup.servers.clear()
    setup.add("era", ERA_SERVER, "--marker", str(setup.tmp))
    setup.add("raw", RAW_SERVER, "--marker", str(setup.tmp))
    setup.env.update({"GATEWAY_DOWNSTREAM_ERA": "auto", "GATEWAY_DEBUG": "1", **env})
    return setup


async def test_an_sdk_server_over_stdio_is_spoken_to_stateless_and_a_raw_one_with_initialize(setup: Setup) -> None:
    async with era_setup(setup).client() as client:
        echoed = await client.call_tool("execute_tool", {"agent_id": "dev", "server": "era", "tool": "echo", "args": {"text": "hi"}})
        assert echoed.content[0].text == "hi"  # type: ignore[union-attr]
        await client.call_tool("execute_tool", {"agent_id": "dev", "server": "raw", "tool": "echo", "args": {"text": "x"}})
        status = structured(await client.call_tool("get_gateway_status", {"agent_id": "dev"}))
        era, raw = status["servers"]["era"], status["servers"]["raw"]
        assert (era["era"], era["protocol_version"], era["instances"][0]["era"]) == ("stateless", "2026-07-28", "stateless")
        assert era["server_info"]["name"] == "era"  # from the discover result's _meta
        assert (raw["era"], raw["protocol_version"]) == ("handshake", "2025-11-25")


async def test_aggregate_mode_calls_a_stateless_server_as_its_own_tool(setup: Setup) -> None:
    era_setup(setup, GATEWAY_MODE="aggregate", GATEWAY_DEFAULT_AGENT="dev")
    setup.write({"agents": {"dev": {"allow": {"servers": ["*"]}}}, "defaults": {"deny_on_missing_agent": False}})
    async with setup.client() as client:
        names = [t.name for t in (await client.list_tools()).tools]
        assert "era__echo" in names and "raw__echo" in names
        result = await client.call_tool("era__echo", {"text": "through"})
        assert result.content[0].text == "through"  # type: ignore[union-attr]
        assert "era: Echoes, and waits." in (client.instructions or "")  # the discover result's instructions


class EraHttpServer:
    """The era server over Streamable HTTP on a socket the test binds, logging each request's routing headers."""

    def __init__(self, tmp: Path) -> None:
        self.log = tmp / "era-requests.jsonl"
        self.cancel_file = tmp / "cancel.txt"
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/mcp"
        fd = self.sock.fileno()
        self.proc = subprocess.Popen(
            [sys.executable, ERA_SERVER, "--http-fd", str(fd), "--http-log", str(self.log),
             "--cancel-file", str(self.cancel_file), "--marker", str(tmp)],
            pass_fds=[fd],
        )

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait(10)
        self.sock.close()

    def requests(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log.read_text().splitlines()] if self.log.exists() else []


@pytest.fixture
def era_http(tmp_path: Path) -> Iterator[EraHttpServer]:
    server = EraHttpServer(tmp_path)
    yield server
    server.close()


def http_setup(setup: Setup, server: EraHttpServer) -> Setup:
    setup.servers.clear()
    setup.servers["era"] = {"url": server.url, "description": "era over HTTP"}
    setup.env.update({"GATEWAY_DOWNSTREAM_ERA": "auto", "GATEWAY_DEBUG": "1"})
    return setup


async def test_an_sdk_server_over_http_gets_one_post_per_request_with_the_eras_headers(setup: Setup, era_http: EraHttpServer) -> None:
    async with http_setup(setup, era_http).client() as client:
        args = {"agent_id": "dev", "server": "era", "tool": "echo", "args": {"text": "héllo"}}
        echoed = await client.call_tool("execute_tool", args)
        assert echoed.content[0].text == "héllo"  # type: ignore[union-attr]
        status = structured(await client.call_tool("get_gateway_status", {"agent_id": "dev"}))
        assert (status["servers"]["era"]["era"], status["servers"]["era"]["protocol_version"]) == ("stateless", "2026-07-28")
    seen = era_http.requests()
    assert {r["method"] for r in seen} == {"POST"}  # no GET stream, no DELETE at the end
    assert all(r["mcp-session-id"] is None and r["mcp-protocol-version"] == "2026-07-28" for r in seen)
    assert [r["mcp-method"] for r in seen][:2] == ["server/discover", "tools/list"]
    assert {"mcp-method": "tools/call", "mcp-name": "echo"}.items() <= next(r for r in seen if r["mcp-method"] == "tools/call").items()


async def test_cancelling_a_call_to_a_stateless_http_server_closes_its_stream(setup: Setup, era_http: EraHttpServer) -> None:
    async with http_setup(setup, era_http).client() as client:
        args = {"agent_id": "dev", "server": "era", "tool": "wait", "args": {"seconds": 60}}
        with trio.move_on_after(30) as waited:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(client.call_tool, "execute_tool", args)
                while not era_http.cancel_file.exists():
                    await trio.sleep(0.05)
                nursery.cancel_scope.cancel()  # the SDK client sends notifications/cancelled
            while era_http.cancel_file.read_text() != "cancelled":
                await trio.sleep(0.05)
        assert not waited.cancelled_caught, f"the server says {era_http.cancel_file.read_text()!r}"
        # The connection carries on.
        echoed = await client.call_tool("execute_tool", {"agent_id": "dev", "server": "era", "tool": "echo", "args": {"text": "on"}})
        assert echoed.content[0].text == "on"  # type: ignore[union-attr]


def test_lockgate_check_shows_each_servers_era(setup: Setup) -> None:
    era_setup(setup).write()
    env = {**setup.environ(), "GATEWAY_TOKENIZER": "estimate"}
    done = subprocess.run(
        [sys.executable, "-m", "lockgate.shells", "check", "--config", str(setup.config), "--rules", str(setup.rules), "--json", "--no-registry"],
        capture_output=True, text=True, timeout=120, env=env, check=True,
    )
    servers = json.loads(done.stdout)["servers"]
    assert (servers["era"]["era"], servers["raw"]["era"]) == ("stateless", "handshake")
    table = subprocess.run(
        [sys.executable, "-m", "lockgate.shells", "check", "--config", str(setup.config), "--rules", str(setup.rules), "--no-registry"],
        capture_output=True, text=True, timeout=120, env=env, check=True,
    ).stdout.splitlines()
    assert table[0].split() == ["server", "state", "protocol", "era", "tools", "bytes", "tokens"]
    assert table[1].split()[:4] == ["era", "ready", "2026-07-28", "stateless"]
    assert table[2].split()[:4] == ["raw", "ready", "2025-11-25", "handshake"]
