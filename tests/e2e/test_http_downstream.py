"""End to end with HTTP downstreams: the SDK Client -> `lockgate serve` (stdio) -> SDK servers over Streamable HTTP.

Each SDK server runs in a subprocess on a listening socket the test binds
first (port 0) and hands down, so the port is known up front and outlives a
restart of the server. Every process mentions the test's temporary folder,
so the autouse fixture can check none is left behind.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import trio
from mcp import MCPError

from .conftest import TESTING_SERVER, Setup

DEV = {"agent_id": "dev", "server": "web"}


class HttpServer:
    """The testing server over Streamable HTTP, restartable on the same port."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.log = tmp / "http-requests.jsonl"
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/mcp"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        fd = self.sock.fileno()
        self.proc = subprocess.Popen(
            [sys.executable, TESTING_SERVER, "--http-fd", str(fd), "--http-log", str(self.log), "--marker", str(self.tmp)],
            pass_fds=[fd],
        )

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None

    def close(self) -> None:
        self.stop()
        self.sock.close()

    def requests(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[HttpServer]:
    server = HttpServer(tmp_path)
    server.start()
    yield server
    server.close()


def add_http(setup: Setup, name: str, url: str, **extra: Any) -> None:
    setup.servers[name] = {"url": url, "description": f"{name} over HTTP", **extra}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def echo(client: Any, text: str) -> Any:
    return await client.call_tool("execute_tool", {**DEV, "tool": "echo", "args": {"text": text}})


async def test_list_get_execute_and_progress_over_http(setup: Setup, http_server: HttpServer) -> None:
    add_http(setup, "web", http_server.url)
    setup.env["GATEWAY_DOWNSTREAM_ERA"] = "handshake"  # the handshake era's session (test_downstream_era.py: the other)
    async with setup.client() as client:
        listed = (await client.call_tool("get_server_tools", DEV)).structured_content
        assert {"echo", "slow", "count"} <= {t["name"] for t in listed["tools"]}
        result = await echo(client, "over http")
        assert result.is_error is False and result.structured_content == {"result": "over http"}

        progress: list[tuple[float, float | None, str | None]] = []

        async def on_progress(value: float, total: float | None, message: str | None) -> None:
            progress.append((value, total, message))

        counted = await client.call_tool("execute_tool", {**DEV, "tool": "count", "args": {"steps": 3}}, progress_callback=on_progress)
        assert counted.structured_content == {"result": "counted 3"}
        assert progress == [(1, 3, "step 1"), (2, 3, "step 2"), (3, 3, "step 3")]

    requests = http_server.requests()
    # One session for everything: one initialize (no session id yet), then the same id.
    assert [r["method"] for r in requests if r["session"] is None] == ["POST"]
    sessions = {r["session"] for r in requests if r["session"] is not None}
    assert len(sessions) == 1
    posts = [r for r in requests if r["method"] == "POST" and r["session"] is not None]
    assert posts and all(r["protocol"] == "2025-11-25" for r in posts)
    assert "GET" in [r["method"] for r in requests]  # the notification stream
    assert requests[-1]["method"] == "DELETE"  # the session ends with the gateway


async def test_a_slow_call_does_not_hold_up_fast_ones(setup: Setup, http_server: HttpServer) -> None:
    add_http(setup, "web", http_server.url)
    async with setup.client() as client:
        await echo(client, "warm up")
        order: list[str] = []

        async def slow() -> None:
            r = await client.call_tool("execute_tool", {**DEV, "tool": "slow", "args": {"seconds": 3}})
            assert r.structured_content == {"result": "slept 3.0"}
            order.append("slow")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(slow)
            await trio.sleep(0.2)
            for i in range(5):
                r = await echo(client, str(i))
                assert r.structured_content == {"result": str(i)}
                order.append(str(i))
        assert order == ["0", "1", "2", "3", "4", "slow"]


async def test_a_restarted_server_is_reinitialized_transparently(setup: Setup, http_server: HttpServer) -> None:
    add_http(setup, "web", http_server.url)
    setup.env["GATEWAY_DOWNSTREAM_ERA"] = "handshake"  # a lost session is the handshake era's
    setup.env["GATEWAY_DEBUG"] = "1"  # for get_gateway_status
    async with setup.client() as client:
        assert (await echo(client, "before")).structured_content == {"result": "before"}
        http_server.stop()  # the listening socket stays: new connections wait in its backlog
        http_server.start()
        with trio.fail_after(20):
            assert (await echo(client, "after")).structured_content == {"result": "after"}
            assert (await echo(client, "again")).structured_content == {"result": "again"}
        status = (await client.call_tool("get_gateway_status", {"agent_id": "dev"})).structured_content
        assert status["servers"]["web"]["starts"] == 1  # the same gateway connection all along
        assert status["servers"]["web"]["state"] == "ready"
    requests = http_server.requests()
    initializes = [r for r in requests if r["method"] == "POST" and r["session"] is None]
    assert len(initializes) == 2  # one per server life, on the same gateway connection
    sessions = [r["session"] for r in requests if r["session"] is not None]
    assert len(set(sessions)) == 2


async def test_headers_with_variables_reach_the_server(setup: Setup, http_server: HttpServer) -> None:
    add_http(setup, "web", http_server.url, headers={"X-Token": "Bearer ${WEB_TOKEN}"})
    setup.env["WEB_TOKEN"] = "s3cret"
    async with setup.client() as client:
        await echo(client, "x")
    requests = http_server.requests()
    assert requests and all(r["token"] == "Bearer s3cret" for r in requests)


async def test_a_server_that_is_down_is_unavailable_at_once(setup: Setup) -> None:
    port = free_port()
    add_http(setup, "web", f"http://127.0.0.1:{port}/mcp")
    async with setup.client() as client:
        with trio.fail_after(10):
            with pytest.raises(MCPError) as exc:
                await echo(client, "x")
        assert exc.value.code == -32001
        assert exc.value.data == {"code": "SERVER_UNAVAILABLE", "server": "web", "reason": f"connection refused to 127.0.0.1:{port}"}
        # The other servers keep working.
        r = await client.call_tool("execute_tool", {"agent_id": "dev", "server": "testing", "tool": "echo", "args": {"text": "ok"}})
        assert r.structured_content == {"result": "ok"}


class _Unauthorized(BaseHTTPRequestHandler):
    def _refuse(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        self.rfile.read(length)
        self.send_response(401)
        self.send_header("WWW-Authenticate", 'Bearer resource_metadata="http://127.0.0.1/.well-known/oauth-protected-resource"')
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_POST = do_GET = do_DELETE = _refuse

    def log_message(self, format: str, *args: Any) -> None:
        pass


async def test_a_server_that_wants_credentials_is_unavailable_with_the_reason(setup: Setup) -> None:
    stub = ThreadingHTTPServer(("127.0.0.1", 0), _Unauthorized)
    thread = threading.Thread(target=stub.serve_forever, daemon=True)
    thread.start()
    try:
        add_http(setup, "web", f"http://127.0.0.1:{stub.server_address[1]}/mcp")
        async with setup.client() as client:
            with pytest.raises(MCPError) as exc:
                await echo(client, "x")
    finally:
        stub.shutdown()
        stub.server_close()
    reason = "authorization required: no token is stored for the gateway; to log in, run: lockgate auth login web"
    assert exc.value.code == -32001
    assert exc.value.message == f"Server 'web' is unavailable: {reason}"
    assert exc.value.data == {"code": "SERVER_UNAVAILABLE", "server": "web", "reason": reason}
