"""The WebSocket front in-process: real sockets on 127.0.0.1, a real gateway, a raw downstream, the ``websockets`` client.

``websockets`` is an implementation independent of the wsproto the shell runs
on: what it accepts shows the two interoperate. Its synchronous client runs
in a worker thread (the gateway runs on this test's trio loop). What no
well-behaved client library does (never answering pings, never reading) is
done with raw sockets.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import httpx
import trio
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from lockgate.core import Gateway, Settings, load_config
from lockgate.shells.http import serve_http

RAW = str(Path(__file__).with_name("raw_mcp_server.py"))
RULES = {"agents": {"dev": {"allow": {"servers": ["*"]}}}, "defaults": {"deny_on_missing_agent": False}}
INIT: dict[str, Any] = {
    "jsonrpc": "2.0", "id": 0, "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
}
INITIALIZED = {"jsonrpc": "2.0", "method": "notifications/initialized"}

T = TypeVar("T")


def execute(request_id: Any, tool: str, **args: Any) -> dict[str, Any]:
    arguments = {"agent_id": "dev", "server": "raw", "tool": tool, "args": args}
    return {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": {"name": "execute_tool", "arguments": arguments}}


async def in_thread(work: Callable[[], T]) -> T:
    return await trio.to_thread.run_sync(work)


class Gate:
    """One running gateway: its port, and the ways to reach it."""

    def __init__(self, port: int, stop: trio.Event) -> None:
        self.port = port
        self.url = f"ws://127.0.0.1:{port}/ws"
        self.stop = stop

    def open(self, **options: Any) -> ClientConnection:
        options.setdefault("subprotocols", ["mcp"])
        options.setdefault("open_timeout", 10)
        ws: ClientConnection = connect(self.url, **options)
        return ws

    @contextmanager
    def session(self) -> Iterator[ClientConnection]:
        """A connection that went through the handshake of MCP."""
        with self.open() as ws:
            ws.send(json.dumps(INIT))
            assert json.loads(ws.recv(10))["result"]["serverInfo"]["name"] == "lockgate"
            ws.send(json.dumps(INITIALIZED))
            yield ws


@asynccontextmanager
async def running(tmp_path: Path, transport: str = "http,ws", **settings: Any) -> AsyncIterator[Gate]:
    settings.setdefault("init_strategy", "lazy")
    config = load_config(
        servers=json.dumps({"mcpServers": {"raw": {"command": sys.executable, "args": [RAW]}}}),
        servers_file="servers.json",
        rules=json.dumps(RULES),
        rules_file="rules.json",
        environ={},
        settings=Settings(audit_log=str(tmp_path / "audit.jsonl"), transport=transport, **settings),  # type: ignore[arg-type]
    )
    gateway = Gateway(config)
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        port = await nursery.start(
            partial(serve_http, gateway, config.settings, host="127.0.0.1", port=0, handle_signals=False, stop=stop)
        )
        try:
            yield Gate(port, stop)
        finally:
            stop.set()


def closed_with(ws: ClientConnection) -> tuple[int | None, str | None]:
    """Read until the connection closes; the code and reason the server sent."""
    try:
        while True:
            ws.recv(10)
    except ConnectionClosed as closed:
        return (closed.rcvd.code, closed.rcvd.reason) if closed.rcvd is not None else (None, None)


def send_cut_short(ws: ClientConnection, fragments: Iterator[str]) -> None:
    """Send one message in fragments; the server may close the connection before the last."""
    try:
        ws.send(fragments)
    except ConnectionClosed:
        pass


# -- a raw client, for what a library will not do --------------------------------------------


def raw_upgrade(port: int, *, receive_buffer: int | None = None) -> socket.socket:
    """A TCP connection that completed the WebSocket handshake; nothing more is done on it."""
    sock = socket.socket()
    if receive_buffer is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
         f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mcp\r\n\r\n").encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101 "), head
    return sock


def raw_status(port: int, host: str) -> int:
    """The status of an otherwise good upgrade request naming ``host``."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        key = base64.b64encode(os.urandom(16)).decode()
        sock.sendall(
            (f"GET /ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mcp\r\n\r\n").encode()
        )
        return int(sock.recv(65536).split()[1])


def masked_text(text: str) -> bytes:
    """One client text frame (masked, as RFC 6455 requires of a client), under 64 KiB."""
    payload = text.encode()
    mask = os.urandom(4)
    length = bytes([0x80 | len(payload)]) if len(payload) < 126 else bytes([0x80 | 126]) + len(payload).to_bytes(2, "big")
    return b"\x81" + length + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def drain_until_closed(sock: socket.socket, seconds: float) -> bytes:
    """Everything the server sends until it closes the TCP connection (or ``seconds`` pass: then raises)."""
    sock.settimeout(seconds)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


# -- the tests ----------------------------------------------------------------------------


async def test_mcp_over_websocket_beside_streamable_http(tmp_path: Path) -> None:
    async with running(tmp_path) as gate:

        def talk() -> list[Any]:
            with gate.session() as ws:
                assert ws.subprotocol == "mcp"
                ws.send(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}))
                tools = json.loads(ws.recv(10))
                ws.send(json.dumps(execute(2, "echo", text="over ws")))
                echoed = json.loads(ws.recv(10))
                ws.send("{not json")
                malformed = json.loads(ws.recv(10))
                ws.send(json.dumps({"jsonrpc": "2.0", "id": 3, "method": "ping"}))  # the connection is still open
                pong = json.loads(ws.recv(10))
                return [tools, echoed, malformed, pong]

        tools, echoed, malformed, pong = await in_thread(talk)
        assert [t["name"] for t in tools["result"]["tools"]] == ["list_servers", "search_tools", "get_server_tools", "execute_tool"]
        assert echoed["result"] == {"content": [{"type": "text", "text": "over ws"}]}
        assert malformed["id"] is None and malformed["error"]["code"] == -32700
        assert pong == {"jsonrpc": "2.0", "id": 3, "result": {}}
        # Streamable HTTP on the same port.
        async with httpx.AsyncClient(timeout=20) as http:
            answer = await http.post(
                f"http://127.0.0.1:{gate.port}/mcp", json=INIT,
                headers={"accept": "application/json, text/event-stream"},
            )
            assert answer.status_code == 200 and "mcp-session-id" in answer.headers


async def test_websocket_alone_turns_streamable_http_off_but_not_health(tmp_path: Path) -> None:
    async with running(tmp_path, transport="ws") as gate:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gate.port}", timeout=20) as http:
            refused = await http.post("/mcp", json=INIT, headers={"accept": "application/json, text/event-stream"})
            assert refused.status_code == 404
            assert refused.json()["error"]["message"] == "Not Found: Streamable HTTP is off; MCP is served over WebSocket at /ws"
            assert (await http.get("/health")).status_code == 200
        def opens() -> None:
            with gate.session():
                pass

        await in_thread(opens)


async def test_refused_before_the_upgrade(tmp_path: Path) -> None:
    async with running(tmp_path) as gate:

        def status(**options: Any) -> int:
            try:
                with gate.open(**options):
                    pass
            except InvalidStatus as refused:
                return refused.response.status_code
            return 101

        assert await in_thread(partial(status, subprotocols=["graphql-ws"])) == 400
        assert await in_thread(partial(status, subprotocols=None)) == 400
        assert await in_thread(partial(status, origin="https://evil.example")) == 403
        # A client library names the host it connects to; a rebinding page's request names another.
        assert await in_thread(partial(raw_status, gate.port, "evil.example")) == 421
        assert await in_thread(partial(status, origin="http://localhost:5173")) == 101
        # Not an upgrade at all.
        async with httpx.AsyncClient(timeout=20) as http:
            plain = await http.get(f"http://127.0.0.1:{gate.port}/ws")
            assert plain.status_code == 426 and plain.headers["sec-websocket-version"] == "13"


async def test_bad_frames_close_with_their_codes_and_another_client_is_served(tmp_path: Path) -> None:
    async with running(tmp_path, max_message_bytes=4096) as gate:

        def misbehave() -> dict[str, tuple[int | None, str | None]]:
            found = {}
            with gate.session() as good:
                with gate.session() as ws:
                    ws.send("x" * 5000)
                    found["too big"] = closed_with(ws)
                with gate.session() as ws:
                    ws.send(b"\x00binary")
                    found["binary"] = closed_with(ws)
                with gate.session() as ws:
                    send_cut_short(ws, ("x" * 1000 for _ in range(10)))  # ten fragments of 1,000 bytes: over 4,096 together
                    found["fragmented"] = closed_with(ws)
                with gate.session() as ws:
                    send_cut_short(ws, ("" for _ in range(5000)))  # a flood of empty fragments
                    found["empty fragments"] = closed_with(ws)
                good.send(json.dumps(execute(9, "echo", text="still here")))
                assert json.loads(good.recv(10))["result"]["content"][0]["text"] == "still here"
                with gate.session() as ws:
                    ws.send("x" * 2000 for _ in range(2))  # fragmented within the limit: one message
                    assert json.loads(ws.recv(10))["error"]["code"] == -32700
            return found

        found = await in_thread(misbehave)
        assert found == {
            "too big": (1009, "a message may be at most 4096 bytes"),
            "binary": (1003, "MCP messages are JSON text: send text messages, not binary"),
            "fragmented": (1009, "a message may be at most 4096 bytes"),
            "empty fragments": (1009, "a message may come in at most 4096 frames"),
        }


async def test_a_client_that_closes_hears_its_code_back(tmp_path: Path) -> None:
    async with running(tmp_path) as gate:

        def close() -> tuple[int | None, int | None]:
            with gate.session() as ws:
                ws.close(code=4000, reason="bye")
                received, sent = ws.protocol.close_rcvd, ws.protocol.close_sent
                assert received is not None and sent is not None
                return received.code, sent.code

        assert await in_thread(close) == (4000, 4000)


async def test_a_client_that_never_answers_pings_is_closed(tmp_path: Path) -> None:
    async with running(tmp_path, ws_ping_interval=0.2, ws_ping_timeout=0.3) as gate:

        def deaf() -> bytes:
            sock = raw_upgrade(gate.port)
            with sock:
                return drain_until_closed(sock, 10)

        def polite() -> None:
            with gate.session() as ws:  # websockets answers pings by itself
                for i in range(8):
                    ws.send(json.dumps({"jsonrpc": "2.0", "id": i, "method": "ping"}))
                    assert json.loads(ws.recv(10))["id"] == i
                    trio.from_thread.run(trio.sleep, 0.1)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(in_thread, polite)
            with trio.fail_after(10):
                sent = await in_thread(deaf)
        # A ping (opcode 0x9, payload "1"), then the close frame: 1011 and why.
        assert sent.startswith(b"\x89\x011")
        close = sent[sent.index(b"\x88"):]
        assert int.from_bytes(close[2:4], "big") == 1011
        assert close[4:] == b"keep-alive ping not answered within 0.3 s"


async def test_a_client_that_does_not_read_is_closed_and_others_are_served(tmp_path: Path) -> None:
    async with running(tmp_path) as gate:
        sock = await in_thread(partial(raw_upgrade, gate.port, receive_buffer=4096))
        with sock:
            await in_thread(partial(sock.sendall, masked_text(json.dumps(INIT)) + masked_text(json.dumps(INITIALIZED))))
            request = masked_text(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}))
            sock.setblocking(False)
            with trio.fail_after(30):
                # Requests in, answers never read: the queue fills and the gateway lets go of the
                # client, closing a socket with our requests unread in it (a reset, here).
                while True:
                    try:
                        sock.send(request * 50)
                    except BlockingIOError:
                        await trio.sleep(0.01)
                    except OSError:
                        break
                    await trio.sleep(0)

            def served() -> Any:
                with gate.session() as ws:
                    ws.send(json.dumps(execute(1, "echo", text="served")))
                    return json.loads(ws.recv(10))["result"]["content"][0]["text"]

            assert await in_thread(served) == "served"


async def test_shutdown_closes_with_1001_after_calls_in_flight_finish(tmp_path: Path) -> None:
    async with running(tmp_path) as gate:
        results: list[Any] = []
        ready = trio.Event()

        def slow_call() -> None:
            with gate.session() as ws:
                ws.send(json.dumps(execute(5, "sleep", seconds=0.5)))
                trio.from_thread.run_sync(ready.set)
                results.append(json.loads(ws.recv(10)))
                results.append(closed_with(ws))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(in_thread, slow_call)
            await ready.wait()
            await trio.sleep(0.1)
            gate.stop.set()
        assert results[0]["id"] == 5 and "result" in results[0]
        assert results[1] == (1001, "the gateway is shutting down")


async def test_an_idle_connection_is_closed_at_shutdown(tmp_path: Path) -> None:
    async with running(tmp_path, transport="ws") as gate:
        outcome: list[Any] = []
        ready = trio.Event()

        def idle() -> None:
            with gate.session() as ws:
                trio.from_thread.run_sync(ready.set)
                outcome.append(closed_with(ws))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(in_thread, idle)
            await ready.wait()
            gate.stop.set()
        assert outcome == [(1001, "the gateway is shutting down")]
