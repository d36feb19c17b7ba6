"""MCPClient: MCP through a real gateway, and straight to the server when the gateway is down (stopped mid-run)."""

from __future__ import annotations

import json
import socket
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import trio
from mcp import MCPError, StdioServerParameters

from lockgate.client import GatewayUnreachable, MCPClient

from .conftest import TESTING_SERVER, Site, free_port

DIRECT = StdioServerParameters(command=sys.executable, args=[TESTING_SERVER])


def via(client: MCPClient) -> str | None:
    """The client's path now (a call, so the type checker does not carry an earlier assert's narrowing over)."""
    return client.via


async def test_the_gateway_stopped_mid_run_falls_back_and_the_call_still_succeeds(site: Site) -> None:
    port = free_port()
    with site.serve(port=port) as gateway:
        client = MCPClient(gateway.url, fallback=DIRECT, server="testing", agent_id="dev")
        async with client:
            assert via(client) == "gateway"
            names = [tool.name for tool in await client.list_tools()]
            assert "echo" in names and "drop_everything" not in names  # the gateway's view: dev's rules
            first = await client.call_tool("echo", {"text": "through the gateway"})
            assert first.structured_content == {"result": "through the gateway"}
            with pytest.raises(MCPError):  # a refusal by the gateway is raised, not hidden by a fallback
                await client.call_tool("drop_everything", {})
            assert via(client) == "gateway"

            gateway.stop()

            second = await client.call_tool("echo", {"text": "directly"})
            assert second.structured_content == {"result": "directly"}
            assert via(client) == "direct"
            assert "drop_everything" in [tool.name for tool in await client.list_tools()]  # the server's own view
            assert client.gateway_failure is not None
        assert via(client) is None

        # The next session starts at the gateway again, and finds it down: direct from the start.
        async with client:
            assert via(client) == "direct"
            assert (await client.call_tool("echo", {"text": "still direct"})).structured_content == {"result": "still direct"}

    # The gateway is back on its port: the next session goes through it again.
    with site.serve(port=port) as gateway:
        async with client:
            assert via(client) == "gateway"
            assert (await client.call_tool("echo", {"text": "back"})).structured_content == {"result": "back"}


async def test_a_transparent_gateway_in_aggregate_mode(site: Site) -> None:
    site.servers.pop("catalog")
    site.env.update(GATEWAY_MODE="aggregate", GATEWAY_PREFIX="never")
    with site.serve() as gateway:
        async with MCPClient(gateway.mcp_url, fallback=DIRECT) as client:
            assert via(client) == "gateway"
            assert "echo" in [tool.name for tool in await client.list_tools()]
            assert (await client.call_tool("echo", {"text": "proxied"})).structured_content == {"result": "proxied"}


async def test_a_proxy_answering_502_counts_as_a_gateway_down() -> None:
    """A reverse proxy whose gateway is gone answers 502: the session goes direct."""

    async def serve_502(stream: trio.SocketStream) -> None:
        # Enough HTTP/1.1 for one answer per connection: read the head, answer 502, close.
        data = b""
        with trio.move_on_after(10):
            while b"\r\n\r\n" not in data:
                chunk = await stream.receive_some(65536)
                if not chunk:
                    break
                data += chunk
        await stream.send_all(b"HTTP/1.1 502 Bad Gateway\r\ncontent-type: text/html\r\ncontent-length: 3\r\nconnection: close\r\n\r\nbad")
        await stream.aclose()

    async with trio.open_nursery() as nursery:
        listeners: list[trio.SocketListener] = await nursery.start(partial(trio.serve_tcp, serve_502, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        async with MCPClient(f"http://127.0.0.1:{port}", fallback=DIRECT) as client:
            assert via(client) == "direct"
            assert (await client.call_tool("echo", {"text": "around the proxy"})).structured_content == {"result": "around the proxy"}
        nursery.cancel_scope.cancel()


async def test_no_gateway_at_all_goes_direct_from_the_start() -> None:
    async with MCPClient(f"http://127.0.0.1:{free_port()}", fallback=DIRECT, server="testing") as client:
        assert via(client) == "direct"
        assert [t.name for t in await client.list_tools()]


class DroppingGateway:
    """A stand-in gateway on 127.0.0.1 that speaks just enough MCP for a session, then drops each ``tools/call``'s connection.

    A call whose connection broke after it was sent may have run, so MCPClient must not
    send it again; a ``tools/list`` is safe to send again. Counts what it was asked.
    """

    def __init__(self) -> None:
        self.calls = 0
        self.lists = 0

    @contextmanager
    def serving(self) -> Iterator[str]:
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _reply(self, status: int, body: dict[str, Any] | None = None) -> None:
                data = b"" if body is None else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("mcp-session-id", "s1")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                message = json.loads(self.rfile.read(int(self.headers["content-length"])))
                method = message.get("method")
                if method == "initialize":
                    result = {"protocolVersion": "2025-06-18", "capabilities": {"tools": {}}, "serverInfo": {"name": "fake", "version": "1"}}
                    self._reply(200, {"jsonrpc": "2.0", "id": message["id"], "result": result})
                elif "id" not in message:
                    self._reply(202)
                else:
                    # tools/call (execute_tool) or tools/call (get_server_tools): the connection breaks, no answer.
                    if message["params"]["name"] == "execute_tool":
                        gateway.calls += 1
                    else:
                        gateway.lists += 1
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True

            def do_GET(self) -> None:
                self._reply(405)

            def do_DELETE(self) -> None:
                self._reply(200)

            def log_message(self, format: str, *args: object) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}"
        finally:
            server.shutdown()
            server.server_close()
            thread.join(10)


async def test_a_call_the_gateway_dropped_is_not_sent_again_but_a_listing_is() -> None:
    dropping = DroppingGateway()
    with dropping.serving() as url:
        async with MCPClient(url, fallback=DIRECT, server="testing") as client:
            assert via(client) == "gateway"
            with pytest.raises(GatewayUnreachable) as lost:
                await client.call_tool("echo", {"text": "maybe ran"})
            assert lost.value.code == "GATEWAY_LOST"
            assert via(client) == "direct"
            assert (await client.call_tool("echo", {"text": "then direct"})).structured_content == {"result": "then direct"}
        assert dropping.calls == 1

        async with MCPClient(url, fallback=DIRECT, server="testing") as client:
            assert "echo" in [tool.name for tool in await client.list_tools()]  # sent again, directly
            assert via(client) == "direct"
        assert dropping.lists == 1
