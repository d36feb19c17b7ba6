"""The HTTP shell in-process: real sockets on 127.0.0.1 (port 0), a real gateway, a raw downstream.

Each test starts :func:`serve_http` in its own nursery with a plain JSON-lines
downstream (``raw_mcp_server.py``) and talks to it with httpx or raw sockets.
"""

from __future__ import annotations

import json
import re
import select
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import h11
import httpx
import pytest
import trio

from lockgate.core import Gateway, load_config, Settings
from lockgate.shells.http import serve_http
from lockgate.shells.http_exchange import _response_bytes

RAW = str(Path(__file__).with_name("raw_mcp_server.py"))
BOTH = "application/json, text/event-stream"
HEADERS = {"accept": BOTH, "content-type": "application/json"}
RULES = {"agents": {"dev": {"allow": {"servers": ["*"]}}}, "defaults": {"deny_on_missing_agent": False}}
INIT: dict[str, Any] = {
    "jsonrpc": "2.0",
    "id": 0,
    "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
}


def execute(request_id: Any, tool: str, meta: dict[str, Any] | None = None, **args: Any) -> dict[str, Any]:
    params: dict[str, Any] = {"name": "execute_tool", "arguments": {"agent_id": "dev", "server": "raw", "tool": tool, "args": args}}
    if meta is not None:
        params["_meta"] = meta
    return {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params}


class Gate:
    """One running gateway and an httpx client pointed at it."""

    def __init__(self, base: str, port: int, http: httpx.AsyncClient, gateway: Gateway) -> None:
        self.base = base
        self.port = port
        self.http = http
        self.gateway = gateway

    async def post(self, message: Any, session: str | None = None, **headers: str) -> httpx.Response:
        h = {**HEADERS, **headers}
        if session is not None:
            h["mcp-session-id"] = session
        content = message if isinstance(message, bytes) else json.dumps(message).encode()
        return await self.http.post(f"{self.base}/mcp", content=content, headers=h)

    async def initialize(self, version: str = "2025-11-25") -> str:
        init = {**INIT, "params": {**INIT["params"], "protocolVersion": version}}
        response = await self.post(init)
        assert response.status_code == 200, response.text
        session = response.headers["mcp-session-id"]
        assert (await self.post({"jsonrpc": "2.0", "method": "notifications/initialized"}, session)).status_code == 202
        return session


@asynccontextmanager
async def running(
    tmp_path: Path, *, raw_args: tuple[str, ...] = (), http_options: dict[str, Any] | None = None, **settings: Any
) -> AsyncIterator[Gate]:
    settings.setdefault("init_strategy", "lazy")
    config = load_config(
        servers=json.dumps({"mcpServers": {"raw": {"command": sys.executable, "args": [RAW, *raw_args]}}}),
        servers_file="servers.json",
        rules=json.dumps(RULES),
        rules_file="rules.json",
        environ={},
        settings=Settings(audit_log=str(tmp_path / "audit.jsonl"), **settings),
    )
    gateway = Gateway(config)
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        port = await nursery.start(
            partial(serve_http, gateway, config.settings, host="127.0.0.1", port=0, handle_signals=False, stop=stop, **(http_options or {}))
        )
        async with httpx.AsyncClient(timeout=20) as http:
            try:
                yield Gate(f"http://127.0.0.1:{port}", port, http, gateway)
            finally:
                stop.set()


def raw_post(message: Any, session: str | None = None, host: str = "127.0.0.1") -> bytes:
    """One POST to /mcp as raw bytes, framed by Content-Length."""
    body = json.dumps(message).encode()
    head = b"POST /mcp HTTP/1.1\r\nhost: " + host.encode() + b"\r\naccept: " + BOTH.encode()
    head += b"\r\ncontent-type: application/json\r\ncontent-length: %d\r\n" % len(body)
    if session is not None:
        head += b"mcp-session-id: " + session.encode() + b"\r\n"
    return head + b"\r\n" + body


def sse_messages(text: str) -> list[tuple[str | None, str]]:
    """(id, data) of every SSE event in ``text``."""
    events = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        fields: dict[str, str] = {}
        for line in block.split("\n"):
            name, _, value = line.partition(": ")
            fields[name] = value
        events.append((fields.get("id"), fields.get("data", "")))
    return events


async def test_the_full_flow_as_json(tmp_path: Path) -> None:
    async with running(tmp_path) as gate:
        response = await gate.post(INIT)
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        session = response.headers["mcp-session-id"]
        assert len(session) >= 32
        assert response.json()["result"]["serverInfo"]["name"] == "lockgate"
        assert (await gate.post({"jsonrpc": "2.0", "method": "notifications/initialized"}, session)).status_code == 202
        listed = await gate.post({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, session)
        assert [t["name"] for t in listed.json()["result"]["tools"]] == ["list_servers", "search_tools", "get_server_tools", "execute_tool"]
        echoed = await gate.post(execute(2, "echo", text="hi"), session)
        assert echoed.json() == {"jsonrpc": "2.0", "id": 2, "result": {"content": [{"type": "text", "text": "hi"}]}}
        assert echoed.headers["mcp-session-id"] == session


async def test_a_refused_initialize_opens_no_session(tmp_path: Path) -> None:
    async with running(tmp_path) as gate:
        response = await gate.post({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}})
        assert response.status_code == 200
        assert response.json()["error"]["code"] == -32602
        assert "mcp-session-id" not in response.headers
        with trio.fail_after(10):
            while gate.gateway.status()["clients"]:
                await trio.sleep(0.02)


async def test_progress_makes_the_answer_an_sse_stream(tmp_path: Path) -> None:
    async with running(tmp_path) as gate:
        session = await gate.initialize()
        response = await gate.post(execute("p", "progress", meta={"progressToken": "tok"}, steps=2), session)
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream"
        assert response.headers["x-accel-buffering"] == "no"
        events = sse_messages(response.text)
        assert events[0] == ("1", "")  # priming: an id and empty data
        assert "retry: 1000" in response.text
        messages = [json.loads(data) for _, data in events[1:]]
        assert [m.get("method") for m in messages] == ["notifications/progress", "notifications/progress", None]
        assert messages[0]["params"]["progressToken"] == "tok"
        assert messages[2]["id"] == "p" and messages[2]["result"]["content"][0]["text"] == "2 steps"
        ids = [int(i) for i, _ in events if i is not None]
        assert ids == sorted(ids) and len(set(ids)) == len(ids)


async def test_no_priming_event_for_older_clients(tmp_path: Path) -> None:
    async with running(tmp_path) as gate:
        session = await gate.initialize("2025-06-18")
        response = await gate.post(
            execute("p", "progress", meta={"progressToken": 1}, steps=1), session, **{"mcp-protocol-version": "2025-06-18"}
        )
        events = sse_messages(response.text)
        assert all(data for _, data in events)


async def test_a_lost_post_stream_resumes_with_last_event_id(tmp_path: Path) -> None:
    async with running(tmp_path) as gate:
        session = await gate.initialize()
        headers = {**HEADERS, "mcp-session-id": session}
        body = json.dumps(execute("slow", "sleep", meta={"progressToken": 5}, seconds=0.5))
        async with gate.http.stream("POST", f"{gate.base}/mcp", content=body, headers=headers) as response:
            assert response.status_code == 200
            async for chunk in response.aiter_text():
                priming = sse_messages(chunk)[0]
                break
        # Hung up after the priming event; the call goes on (a disconnect is not a cancel).
        assert priming[1] == ""
        resumed = await gate.http.get(
            f"{gate.base}/mcp", headers={"accept": "text/event-stream", "mcp-session-id": session, "last-event-id": str(priming[0])}
        )
        assert resumed.status_code == 200
        data = [json.loads(d) for _, d in sse_messages(resumed.text) if d]
        assert data[-1]["id"] == "slow" and data[-1]["result"]["content"][0]["text"] == "slept"
        # Asked again later, the answer is replayed from the buffer.
        again = await gate.http.get(
            f"{gate.base}/mcp", headers={"accept": "text/event-stream", "mcp-session-id": session, "last-event-id": str(priming[0])}
        )
        assert [json.loads(d)["id"] for _, d in sse_messages(again.text) if d] == ["slow"]


async def test_the_get_stream_is_one_per_session_and_resumable(tmp_path: Path) -> None:
    async with running(tmp_path) as gate:
        session = await gate.initialize()
        get_headers = {"accept": "text/event-stream", "mcp-session-id": session}
        async with gate.http.stream("GET", f"{gate.base}/mcp", headers=get_headers) as first:
            assert first.status_code == 200
            assert first.headers["content-type"] == "text/event-stream"
            chunks = first.aiter_text()
            priming = sse_messages(await chunks.__anext__())[0]
            assert priming[1] == ""
            second = await gate.http.get(f"{gate.base}/mcp", headers=get_headers)
            assert second.status_code == 409
        # The first stream is gone: the same cursor resumes the GET stream.
        with trio.fail_after(10):
            while True:
                again = gate.http.stream("GET", f"{gate.base}/mcp", headers={**get_headers, "last-event-id": str(priming[0])})
                async with again as response:
                    if response.status_code == 200:
                        break
                await trio.sleep(0.05)


async def test_delete_ends_the_session(tmp_path: Path) -> None:
    async with running(tmp_path) as gate:
        session = await gate.initialize()
        deleted = await gate.http.delete(f"{gate.base}/mcp", headers={"mcp-session-id": session})
        assert deleted.status_code == 200
        gone = await gate.post({"jsonrpc": "2.0", "id": 1, "method": "ping"}, session)
        assert gone.status_code == 404
        assert gone.json()["error"]["code"] == -32600
        with trio.fail_after(10):
            while gate.gateway.status()["clients"]:
                await trio.sleep(0.02)


async def test_an_idle_session_expires(tmp_path: Path) -> None:
    async with running(tmp_path, session_ttl=0.3) as gate:
        session = await gate.initialize()
        with trio.fail_after(10):
            while gate.gateway.status()["clients"]:
                await trio.sleep(0.05)
        response = await gate.post({"jsonrpc": "2.0", "id": 1, "method": "ping"}, session)
        assert response.status_code == 404


async def test_a_cancelled_request_still_gets_an_http_answer(tmp_path: Path) -> None:
    async with running(tmp_path) as gate:
        session = await gate.initialize()
        answers: list[httpx.Response] = []

        async def slow() -> None:
            answers.append(await gate.post(execute("c", "sleep", seconds=5), session))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(slow)
            with trio.fail_after(10):
                while not gate.gateway.status()["calls_in_flight"]:
                    await trio.sleep(0.02)
            cancel = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": "c"}}
            assert (await gate.post(cancel, session)).status_code == 202
        assert answers[0].json()["error"]["data"] == {"code": "CANCELLED"}


# -- every rejection -------------------------------------------------------------------


async def test_status_codes(tmp_path: Path) -> None:
    async with running(tmp_path, max_message_bytes=2000) as gate:
        session = await gate.initialize()
        ping = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
        url = f"{gate.base}/mcp"
        cases: list[tuple[int, httpx.Response]] = [
            (400, await gate.post(ping)),  # no session
            (400, await gate.post(b"{oops", session)),
            # A version the handshake era does not know is the stateless era's: the envelope is missing.
            (400, await gate.post(ping, session, **{"mcp-protocol-version": "1999-01-01"})),
            (403, await gate.post(ping, session, origin="https://evil.example")),
            (404, await gate.post(ping, "no-such-session")),
            (404, await gate.http.get(f"{gate.base}/nowhere")),
            (405, await gate.http.put(url, content=b"{}", headers=HEADERS)),
            (406, await gate.post(ping, session, accept="application/json")),
            (413, await gate.post(b'{"x":"' + b"y" * 3000 + b'"}', session)),
            (415, await gate.post(ping, session, **{"content-type": "text/plain"})),
            (421, await gate.post(ping, session, host="evil.example")),
        ]
        for expected, response in cases:
            assert response.status_code == expected, (expected, response.text)
            assert response.json()["error"]["code"] in (-32600, -32700, -32602)
        assert cases[1][1].json()["error"]["code"] == -32700
        assert cases[2][1].json()["error"]["code"] == -32602
        ok = await gate.post(ping, session)
        assert ok.status_code == 200 and ok.json() == {"jsonrpc": "2.0", "id": 1, "result": {}}


async def test_a_chunked_body_over_the_limit_gets_413(tmp_path: Path) -> None:
    async with running(tmp_path, max_message_bytes=1000) as gate:
        session = await gate.initialize()

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(20):
                yield b" " * 100

        response = await gate.http.post(f"{gate.base}/mcp", content=chunks(), headers={**HEADERS, "mcp-session-id": session})
        assert response.status_code == 413


async def test_origin_and_cors(tmp_path: Path) -> None:
    async with running(tmp_path) as gate:
        preflight = await gate.http.options(
            f"{gate.base}/mcp",
            headers={"origin": "http://localhost:6274", "access-control-request-method": "POST"},
        )
        assert preflight.status_code == 204
        assert preflight.headers["access-control-allow-origin"] == "http://localhost:6274"
        assert "POST" in preflight.headers["access-control-allow-methods"]
        response = await gate.post(INIT, origin="http://localhost:6274")
        assert response.status_code == 200
        assert response.headers["access-control-allow-origin"] == "http://localhost:6274"
        assert "Mcp-Session-Id" in response.headers["access-control-expose-headers"]
        assert (await gate.post(INIT, origin="https://evil.example")).status_code == 403


async def test_configured_cors_origins(tmp_path: Path) -> None:
    async with running(tmp_path, cors_origins=("https://app.example",)) as gate:
        assert (await gate.post(INIT, origin="https://app.example")).status_code == 200
        assert (await gate.post(INIT, origin="https://other.example")).status_code == 403


async def test_the_connection_limit_answers_503_when_every_connection_is_busy(tmp_path: Path) -> None:
    async with running(tmp_path, max_connections=3, max_connections_per_address=0) as gate:
        session = await gate.initialize()
        # Requests read whole and being answered are busy: nobody may close them
        # to make room (the idle keep-alive connection of httpx goes instead).
        calls = [await trio.open_tcp_stream("127.0.0.1", gate.port) for _ in range(3)]
        for n, stream in enumerate(calls):
            await stream.send_all(raw_post(execute(f"slow{n}", "sleep", seconds=3), session))
        try:
            with trio.fail_after(10):
                while True:  # wait until the server has read all three
                    probe = await trio.open_tcp_stream("127.0.0.1", gate.port)
                    await probe.send_all(b"GET /health HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n")
                    answer = await probe.receive_some(4096)
                    await probe.aclose()
                    if answer.startswith(b"HTTP/1.1 503"):
                        break
                    await trio.sleep(0.05)
            assert b"retry-after: 1" in answer.lower()
            # Once answered, they are idle and make room again.
            with trio.fail_after(20):
                for stream in calls:
                    assert b"slept" in await stream.receive_some(65536)
                while (await gate.http.get(f"{gate.base}/health")).status_code != 200:
                    await trio.sleep(0.05)
        finally:
            for stream in calls:
                await stream.aclose()


async def test_a_thousand_silent_connections_do_not_lock_others_out(tmp_path: Path) -> None:
    # No limit per address here, so that the global limit is the one reached.
    async with running(tmp_path, max_connections=1000, max_connections_per_address=0) as gate:
        idle = [await trio.open_tcp_stream("127.0.0.1", gate.port) for _ in range(1000)]
        try:
            # At the limit, the connections waiting longest for a request are closed to make room.
            session = await gate.initialize()
            response = await gate.post({"jsonrpc": "2.0", "id": 1, "method": "ping"}, session)
            assert response.status_code == 200
            # Some of them were closed by the server (EOF makes them readable).
            poller = select.poll()
            for stream in idle:
                poller.register(stream.socket.fileno(), select.POLLIN)
            assert poller.poll(10_000)
        finally:
            for stream in idle:
                await stream.aclose()


async def test_a_stalled_half_request_is_closed_and_others_are_served(tmp_path: Path) -> None:
    async with running(tmp_path, http_options={"read_timeout": 0.5}) as gate:
        stalled = await trio.open_tcp_stream("127.0.0.1", gate.port)
        await stalled.send_all(b"POST /mcp HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: 100\r\n\r\n{\"jsonrpc\"")
        idle = [await trio.open_tcp_stream("127.0.0.1", gate.port) for _ in range(200)]
        # Everyone else is served while those wait.
        session = await gate.initialize()
        assert (await gate.post({"jsonrpc": "2.0", "id": 1, "method": "ping"}, session)).status_code == 200
        with trio.fail_after(10):
            assert await stalled.receive_some(100) == b""  # closed by the server
        for stream in idle:
            await stream.aclose()
        await stalled.aclose()


async def test_health_and_ready(tmp_path: Path) -> None:
    async with running(tmp_path, init_strategy="eager", raw_args=("--start-delay", "1")) as gate:
        health = await gate.http.get(f"{gate.base}/health")
        assert health.status_code == 200
        body = health.json()
        assert body["status"] == "healthy" and body["service"] == "lockgate" and body["uptime_seconds"] >= 0
        not_ready = await gate.http.get(f"{gate.base}/ready")
        assert not_ready.status_code == 503
        assert not_ready.json()["status"] == "not_ready" and "raw" in not_ready.json()["reason"]
        with trio.fail_after(20):
            while (ready := await gate.http.get(f"{gate.base}/ready")).status_code != 200:
                await trio.sleep(0.05)
        assert ready.json() == {"status": "ready", "servers": {"raw": "ready"}, "eras": {"raw": "handshake"}}


def parse_prometheus(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """A small parser for the Prometheus text format (0.0.4): every sample by metric name.

    Checks as it goes: every sample's family has HELP and TYPE lines first,
    names and labels are well formed, values are numbers.
    """
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    typed: dict[str, str] = {}
    line_re = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$')
    label_re = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            typed[name] = kind
            continue
        if not line or line.startswith("#"):
            continue
        match = line_re.match(line)
        assert match, line
        name, _, labels, value = match.groups()
        family = re.sub(r"_(bucket|sum|count)$", "", name)
        assert name in typed or family in typed, f"no TYPE for {name}"
        parsed = dict(label_re.findall(labels or ""))
        samples.setdefault(name, []).append((parsed, float(value)))
    return samples


async def test_metrics_as_json_and_prometheus(tmp_path: Path) -> None:
    async with running(tmp_path) as gate:
        session = await gate.initialize()
        for n in range(3):
            assert (await gate.post(execute(n, "echo", text="m"), session)).status_code == 200
        as_json = await gate.http.get(f"{gate.base}/metrics")
        assert as_json.status_code == 200 and as_json.headers["content-type"] == "application/json"
        body = as_json.json()
        assert body["timestamp"].endswith("Z") and body["uptime_seconds"] >= 0
        assert "execute_tool" in json.dumps(body)
        for response in (
            await gate.http.get(f"{gate.base}/metrics?format=prometheus"),
            await gate.http.get(f"{gate.base}/metrics", headers={"accept": "text/plain"}),
        ):
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
            samples = parse_prometheus(response.text)
            assert all(name.startswith("lockgate_") for name in samples)
            counted = [
                value for name, rows in samples.items() if name.endswith("_count") or name.endswith("_total")
                for labels, value in rows if labels.get("operation") == "execute_tool"
            ]
            assert counted and max(counted) == 3


async def test_a_hundred_concurrent_sessions_run_the_whole_flow(tmp_path: Path) -> None:
    async with running(tmp_path) as gate:
        failures: list[str] = []

        async def one(n: int) -> None:
            async with httpx.AsyncClient(timeout=30) as http:
                own = Gate(gate.base, gate.port, http, gate.gateway)
                session = await own.initialize()
                listed = await own.post({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, session)
                servers = await own.post(
                    {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "list_servers", "arguments": {"agent_id": "dev"}}},
                    session,
                )
                echoed = await own.post(execute(3, "echo", text=f"n{n}"), session)
                if listed.status_code != 200 or "error" in servers.json() or echoed.json()["result"]["content"][0]["text"] != f"n{n}":
                    failures.append(f"{n}: {echoed.text}")
                await http.delete(f"{gate.base}/mcp", headers={"mcp-session-id": session})

        with trio.fail_after(120):
            async with trio.open_nursery() as nursery:
                for n in range(100):
                    nursery.start_soon(one, n)
        assert failures == []
        with trio.fail_after(10):  # the core hears of each DELETE right after it is answered
            while gate.gateway.status()["clients"]:
                await trio.sleep(0.02)


@pytest.mark.parametrize("version", ["2025-03-26", "2025-11-25"])
async def test_a_get_stream_carries_no_priming_event_before_2025_11_25(tmp_path: Path, version: str) -> None:
    async with running(tmp_path) as gate:
        session = await gate.initialize(version)
        headers = {"accept": "text/event-stream", "mcp-session-id": session, "mcp-protocol-version": version}
        with trio.move_on_after(0.5):
            async with gate.http.stream("GET", f"{gate.base}/mcp", headers=headers) as response:
                assert response.status_code == 200
                if version == "2025-11-25":
                    assert sse_messages(await response.aiter_text().__anext__())[0][1] == ""
                    return
                async for chunk in response.aiter_text():
                    raise AssertionError(f"unexpected event {chunk!r}")


async def test_keep_alive_holds_across_gets_and_posts(tmp_path: Path) -> None:
    """Regression: a GET was answered before h11 saw its end, so its connection was closed."""
    async with running(tmp_path) as gate:
        stream = await trio.open_tcp_stream("127.0.0.1", gate.port)
        request = b"GET /health HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n"
        for _ in range(3):
            await stream.send_all(request)
            answer = b""
            with trio.fail_after(10):
                while b'"healthy"' not in answer:
                    chunk = await stream.receive_some(4096)
                    assert chunk, "the server closed the connection"
                    answer += chunk
        await stream.aclose()


async def test_garbage_instead_of_http_gets_400_and_the_connection_closes(tmp_path: Path) -> None:
    async with running(tmp_path) as gate:
        stream = await trio.open_tcp_stream("127.0.0.1", gate.port)
        await stream.send_all(b"HELLO THERE\r\n\r\n")
        answer = b""
        with trio.fail_after(10):
            while chunk := await stream.receive_some(4096):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 400 ")
        assert b'"code":-32600' in answer
        await stream.aclose()
        assert (await gate.http.get(f"{gate.base}/health")).status_code == 200


async def _read_until_closed(stream: trio.SocketStream) -> bytes:
    answer = b""
    with trio.fail_after(10):
        while chunk := await stream.receive_some(4096):
            answer += chunk
    return answer


async def test_pipelined_requests_are_all_answered_in_order(tmp_path: Path) -> None:
    """Requests sent back to back in one write: each answer is written, the bytes past it parsed next."""
    async with running(tmp_path) as gate:
        session = await gate.initialize()
        call = json.dumps(execute(7, "echo", text="piped")).encode()
        post = (
            b"POST /mcp HTTP/1.1\r\nhost: 127.0.0.1\r\naccept: " + BOTH.encode()
            + b"\r\ncontent-type: application/json\r\nmcp-session-id: " + session.encode()
            + b"\r\ncontent-length: %d\r\n\r\n" % len(call) + call
        )
        stream = await trio.open_tcp_stream("127.0.0.1", gate.port)
        last = b"GET /health HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n"
        await stream.send_all(b"GET /health HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n" + post + last)
        answer = await _read_until_closed(stream)
        await stream.aclose()
        assert answer.count(b"HTTP/1.1 200 \r\n") == 3
        first, second, third = (answer.index(b'"healthy"'), answer.index(b"piped"), answer.rindex(b'"healthy"'))
        assert first < second < third
        # Framed by Content-Length, so the client can tell the answers apart.
        assert re.search(rb"content-length: \d+\r\n\r\n\{", answer)
        assert answer.endswith(b"}")
        assert b"connection: close" in answer.rpartition(b"HTTP/1.1 200")[2].lower()


async def test_http_1_0_and_connection_close_get_their_answer_then_the_connection_closes(tmp_path: Path) -> None:
    async with running(tmp_path) as gate:
        for request in (
            b"GET /health HTTP/1.0\r\nhost: 127.0.0.1\r\n\r\n",
            b"GET /health HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n",
        ):
            stream = await trio.open_tcp_stream("127.0.0.1", gate.port)
            await stream.send_all(request)
            answer = await _read_until_closed(stream)
            await stream.aclose()
            assert answer.startswith(b"HTTP/1.1 200 ")
            assert b"connection: close\r\n" in answer.lower()
            assert answer.endswith(b"}")


def test_a_response_written_by_hand_is_valid_http_for_h11() -> None:
    """What _send writes without h11 reads back, through h11's client side, as the same response."""
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method="POST", target="/mcp", headers=[("host", "x"), ("content-length", "0")]))
    client.send(h11.EndOfMessage())
    headers = [("content-type", "application/json"), ("mcp-session-id", "abc"), ("vary", "Origin")]
    client.receive_data(_response_bytes(202, headers, b"") + _response_bytes(200, headers, b'{"ok":true}'))
    response = client.next_event()
    assert isinstance(response, h11.Response) and response.status_code == 202
    assert [(n.decode(), v.decode()) for n, v in response.headers] == [*headers, ("content-length", "0")]
    assert isinstance(client.next_event(), h11.EndOfMessage)
    client.start_next_cycle()
    client.send(h11.Request(method="POST", target="/mcp", headers=[("host", "x"), ("content-length", "0")]))
    client.send(h11.EndOfMessage())
    response = client.next_event()
    assert isinstance(response, h11.Response) and response.status_code == 200
    data = client.next_event()
    assert isinstance(data, h11.Data) and data.data == b'{"ok":true}'
