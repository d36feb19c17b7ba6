"""HttpDownstream against a scripted HTTP server (h11 on a real socket of 127.0.0.1).

Each test scripts how the server answers each request and checks what the
shell sends and which events it reports.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import h11
import httpx
import pytest
import trio

from lockgate.core import (
    DownstreamExited,
    DownstreamHttpError,
    DownstreamMessageReceived,
    DownstreamSessionLost,
    Event,
    ServerSpec,
)
from lockgate.shells.downstream_http import HttpDownstream
from lockgate.shells.downstream_http_client import MAX_HEAD_BYTES, LeanClient

INIT = b'{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}\n'
INIT_RESULT = b'{"jsonrpc":"2.0","id":1,"result":{"protocolVersion":"2025-06-18","capabilities":{},"serverInfo":{"name":"s","version":"1"}}}'
INITIALIZED = b'{"jsonrpc":"2.0","method":"notifications/initialized"}\n'


def call(wire_id: int) -> bytes:
    return b'{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"echo"}}\n' % wire_id


def answer(wire_id: int) -> bytes:
    return b'{"jsonrpc":"2.0","id":%d,"result":{"content":[]}}' % wire_id


@dataclass
class Seen:
    method: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Reply:
    """How the server answers: a status, headers, body chunks; ``abort`` drops the connection after them."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    chunks: list[bytes] = field(default_factory=list)
    abort: bool = False
    wait: trio.Event | None = None  # hold the response until set


def json_reply(body: bytes, **headers: str) -> Reply:
    return Reply(headers={"content-type": "application/json", **headers}, chunks=[body])


def sse(*events: bytes, abort: bool = False, **headers: str) -> Reply:
    return Reply(headers={"content-type": "text/event-stream", **headers}, chunks=list(events), abort=abort)


class Scripted:
    """A tiny HTTP/1.1 server: ``handler(seen)`` decides every answer; requests are recorded."""

    def __init__(self, handler: Callable[[Seen], Reply]) -> None:
        self.handler = handler
        self.seen: list[Seen] = []
        self.url = ""

    async def serve(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                request = await self._next(conn, stream)
                if request is None:
                    return
                method, headers = request
                body = b""
                while True:
                    event = await self._next_event(conn, stream)
                    if isinstance(event, h11.Data):
                        body += event.data
                    elif isinstance(event, h11.EndOfMessage):
                        break
                seen = Seen(method, headers, body)
                self.seen.append(seen)
                reply = self.handler(seen)
                if reply.wait is not None:
                    await reply.wait.wait()
                out_headers = [(k, v) for k, v in reply.headers.items()]
                if not reply.chunks:
                    out_headers.append(("content-length", "0"))
                await stream.send_all(conn.send(h11.Response(status_code=reply.status, headers=out_headers)))
                for chunk in reply.chunks:
                    await stream.send_all(conn.send(h11.Data(data=chunk)))
                if reply.abort:
                    await stream.aclose()
                    return
                await stream.send_all(conn.send(h11.EndOfMessage()))
                conn.start_next_cycle()
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError):
            pass

    async def _next_event(self, conn: h11.Connection, stream: trio.SocketStream) -> Any:
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await stream.receive_some(65536))
                continue
            return event

    async def _next(self, conn: h11.Connection, stream: trio.SocketStream) -> tuple[str, dict[str, str]] | None:
        event = await self._next_event(conn, stream)
        if isinstance(event, (h11.ConnectionClosed,)) or event is h11.PAUSED:
            return None
        assert isinstance(event, h11.Request)
        return event.method.decode(), {k.decode(): v.decode() for k, v in event.headers}


@asynccontextmanager
async def running(handler: Callable[[Seen], Reply], **spec: Any) -> AsyncIterator[tuple[Scripted, HttpDownstream, list[Event]]]:
    server = Scripted(handler)
    events: list[Event] = []
    changed = trio.Event()

    async def emit(event: Event) -> None:
        nonlocal changed
        events.append(event)
        changed.set()
        changed = trio.Event()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, server.serve, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        server.url = f"http://127.0.0.1:{port}/mcp"
        downstream = HttpDownstream(
            downstream=7,
            server="web",
            spec=ServerSpec(name="web", transport="http", url=server.url, **spec),
            max_message_bytes=1 << 20,
            emit=emit,
        )
        nursery.start_soon(downstream.run)
        with trio.fail_after(10):
            yield server, downstream, events
        nursery.cancel_scope.cancel()


async def until(condition: Callable[[], bool]) -> None:
    with trio.fail_after(10):
        while not condition():
            await trio.sleep(0.01)


def messages(events: list[Event]) -> list[bytes]:
    return [e.data for e in events if isinstance(e, DownstreamMessageReceived)]


def standard(seen: Seen) -> Reply:
    """A server with sessions, JSON answers, no GET stream."""
    if seen.method == "GET":
        return Reply(status=405)
    if seen.method == "DELETE":
        return Reply(status=200)
    message = json.loads(seen.body)
    if message.get("method") == "initialize":
        return json_reply(INIT_RESULT, **{"mcp-session-id": "s-1"})
    if "id" not in message:
        return Reply(status=202)
    return json_reply(answer(message["id"]))


async def test_session_headers_json_and_sse_answers_and_delete_at_stop() -> None:
    def handler(seen: Seen) -> Reply:
        if seen.body == call(3):
            return sse(b"id: e1\ndata: \n\n", b'data: {"jsonrpc":"2.0","method":"notifications/progress"}\n\n', b"data: " + answer(3) + b"\n\n")
        return standard(seen)

    async with running(handler, headers={"Authorization": "Bearer t"}) as (server, downstream, events):
        downstream.send_nowait(INIT, expects_answer=True)
        await until(lambda: len(messages(events)) == 1)
        downstream.send_nowait(INITIALIZED, expects_answer=False)
        downstream.send_nowait(call(2), expects_answer=True)
        downstream.send_nowait(call(3), expects_answer=True)
        await until(lambda: len(messages(events)) == 4)
        assert messages(events)[0] == INIT_RESULT
        assert set(messages(events)[1:]) == {answer(2), b'{"jsonrpc":"2.0","method":"notifications/progress"}', answer(3)}
        assert messages(events).index(answer(3)) > messages(events).index(b'{"jsonrpc":"2.0","method":"notifications/progress"}')
        await until(lambda: any(s.method == "GET" for s in server.seen))
        downstream.stop()
        await downstream.finished.wait()
    first, *rest = server.seen
    assert first.method == "POST" and "mcp-session-id" not in first.headers and first.body == INIT
    assert first.headers["accept"] == "application/json, text/event-stream"
    assert first.headers["authorization"] == "Bearer t"
    assert all(s.headers["mcp-session-id"] == "s-1" and s.headers["mcp-protocol-version"] == "2025-06-18" for s in rest)
    assert [s.method for s in rest].count("GET") == 1  # 405: the server offers no stream; not asked again
    assert rest[-1].method == "DELETE"
    assert not any(isinstance(e, DownstreamExited) for e in events)


async def test_a_slow_answer_does_not_hold_up_others() -> None:
    release = trio.Event()

    def handler(seen: Seen) -> Reply:
        reply = standard(seen)
        if seen.body == call(2):
            reply.wait = release
        return reply

    async with running(handler) as (server, downstream, events):
        downstream.send_nowait(INIT, expects_answer=True)
        await until(lambda: len(messages(events)) == 1)
        downstream.send_nowait(call(2), expects_answer=True)
        downstream.send_nowait(call(3), expects_answer=True)
        await until(lambda: answer(3) in messages(events))
        assert answer(2) not in messages(events)
        release.set()
        await until(lambda: answer(2) in messages(events))


async def test_a_404_under_the_session_is_reported_and_the_session_forgotten() -> None:
    lost = {"yes": False}

    def handler(seen: Seen) -> Reply:
        if seen.method == "POST" and lost["yes"] and seen.headers.get("mcp-session-id") == "s-1":
            return json_reply(b'{"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"Session not found"}}', status="404")
        return standard(seen)

    async with running(lambda s: _with_status(handler(s))) as (server, downstream, events):
        downstream.send_nowait(INIT, expects_answer=True)
        await until(lambda: len(messages(events)) == 1)
        lost["yes"] = True
        downstream.send_nowait(call(2), expects_answer=True)
        await until(lambda: any(isinstance(e, DownstreamSessionLost) for e in events))
        [event] = [e for e in events if isinstance(e, DownstreamSessionLost)]
        assert event == DownstreamSessionLost(now=event.now, downstream=7, data=call(2))
        assert downstream.session is None
        # The next initialize goes without a session id and opens a new one.
        downstream.send_nowait(INIT, expects_answer=True)
        await until(lambda: len(messages(events)) == 2)
        assert [s for s in server.seen if s.body == INIT][-1].headers.get("mcp-session-id") is None


def _with_status(reply: Reply) -> Reply:
    status = reply.headers.pop("status", None)
    if status is not None:
        reply.status = int(status)
    return reply


async def test_error_statuses_are_reported_with_the_message_and_body() -> None:
    def handler(seen: Seen) -> Reply:
        if seen.body == call(2):
            return json_reply(b'{"error":1}', status="400")
        if seen.body == call(3):
            return Reply(status=500, chunks=[b"x" * 100_000])
        return standard(seen)

    async with running(lambda s: _with_status(handler(s))) as (server, downstream, events):
        downstream.send_nowait(call(2), expects_answer=True)
        downstream.send_nowait(call(3), expects_answer=True)
        await until(lambda: len([e for e in events if isinstance(e, DownstreamHttpError)]) == 2)
    errors = sorted((e for e in events if isinstance(e, DownstreamHttpError)), key=lambda e: e.status)
    assert (errors[0].data, errors[0].status, errors[0].body) == (call(2), 400, b'{"error":1}')
    assert (errors[1].data, errors[1].status, len(errors[1].body)) == (call(3), 500, 65536)


async def test_a_broken_answer_stream_is_resumed_with_last_event_id() -> None:
    def handler(seen: Seen) -> Reply:
        if seen.body == call(2):
            return sse(b"id: s2-0\ndata:\nretry: 10\n\n", b'id: s2-1\ndata: {"jsonrpc":"2.0","method":"notifications/progress"}\n\n', abort=True)
        if seen.method == "GET" and seen.headers.get("last-event-id") == "s2-1":
            return sse(b"id: s2-2\ndata: " + answer(2) + b"\n\n")
        if seen.method == "GET":
            return Reply(status=405)
        return standard(seen)

    async with running(handler) as (server, downstream, events):
        downstream.send_nowait(INIT, expects_answer=True)
        await until(lambda: len(messages(events)) == 1)
        downstream.send_nowait(call(2), expects_answer=True)
        await until(lambda: answer(2) in messages(events))
    assert messages(events)[1:] == [b'{"jsonrpc":"2.0","method":"notifications/progress"}', answer(2)]
    assert not any(isinstance(e, DownstreamExited) for e in events)


async def test_the_notification_stream_is_reopened_with_last_event_id() -> None:
    gets: list[str | None] = []

    def handler(seen: Seen) -> Reply:
        if seen.method == "GET":
            gets.append(seen.headers.get("last-event-id"))
            if len(gets) == 1:
                return sse(b'id: g1\nretry: 10\ndata: {"jsonrpc":"2.0","method":"notifications/tools/list_changed"}\n\n', abort=True)
            return Reply(status=405)
        return standard(seen)

    async with running(handler) as (server, downstream, events):
        downstream.send_nowait(INIT, expects_answer=True)
        await until(lambda: len(gets) == 2)
    assert gets == [None, "g1"]
    assert messages(events)[1:] == [b'{"jsonrpc":"2.0","method":"notifications/tools/list_changed"}']


async def test_a_stream_that_breaks_before_the_answer_without_ids_fails_the_connection() -> None:
    def handler(seen: Seen) -> Reply:
        if seen.body == call(2):
            return sse(b'data: {"jsonrpc":"2.0","method":"notifications/progress"}\n\n', abort=True)
        return standard(seen)

    async with running(handler) as (server, downstream, events):
        downstream.send_nowait(call(2), expects_answer=True)
        await until(lambda: any(isinstance(e, DownstreamExited) for e in events))
    [exited] = [e for e in events if isinstance(e, DownstreamExited)]
    port = server.url.split(":")[2].split("/")[0]
    assert exited.reason == f"connection to 127.0.0.1:{port} was lost"


async def test_an_oversized_answer_is_reported_and_nothing_after_it_delivered() -> None:
    def handler(seen: Seen) -> Reply:
        if seen.body == call(2):
            return json_reply(b'{"x":"' + b"y" * (2 << 20) + b'"}')
        return standard(seen)

    async with running(handler) as (server, downstream, events):
        downstream.send_nowait(call(2), expects_answer=True)
        await until(lambda: len(events) == 1)
        downstream.send_nowait(call(3), expects_answer=True)  # answered, but not delivered
        await until(lambda: any(s.body == call(3) for s in server.seen))
        await trio.sleep(0.1)
        downstream.stop()  # the core's StopDownstream
        await downstream.finished.wait()
    assert events == [DownstreamMessageReceived(now=events[0].now, downstream=7, data=b"", too_large=True)]


async def test_an_oversized_event_on_the_notification_stream_is_reported() -> None:
    def handler(seen: Seen) -> Reply:
        if seen.method == "GET":
            return sse(b"data: " + b"y" * (2 << 20) + b"\n\n")
        return standard(seen)

    async with running(handler) as (server, downstream, events):
        downstream.send_nowait(INIT, expects_answer=True)
        await until(lambda: len(events) == 2)
        await trio.sleep(0.1)
    assert messages(events) == [INIT_RESULT, b""]
    assert events[1] == DownstreamMessageReceived(now=events[1].now, downstream=7, data=b"", too_large=True)
    assert [s.method for s in server.seen].count("GET") == 1  # not listened to again


async def test_notifications_go_in_order_and_requests_concurrently() -> None:
    release = trio.Event()

    def handler(seen: Seen) -> Reply:
        reply = standard(seen)
        if seen.body == INITIALIZED:
            reply.wait = release
        return reply

    async with running(handler) as (server, downstream, events):
        downstream.send_nowait(INIT, expects_answer=True)
        await until(lambda: len(messages(events)) == 1)
        downstream.send_nowait(INITIALIZED, expects_answer=False)
        downstream.send_nowait(call(2), expects_answer=True)
        await until(lambda: any(s.body == INITIALIZED for s in server.seen))
        await trio.sleep(0.1)
        assert not any(s.body == call(2) for s in server.seen)  # it waits for the notification's 202
        release.set()
        await until(lambda: answer(2) in messages(events))


def test_the_lean_client_refuses_a_header_value_with_a_line_break() -> None:
    client = LeanClient(httpx.URL("http://127.0.0.1:9/mcp"), max_connections=1, connect_timeout=1.0)
    url = httpx.URL("http://127.0.0.1:9/mcp")
    for headers in ({"authorization": "Bearer x\r\nx-evil: 1"}, {"authorization": "Bearer x\nx-evil: 1"}, {"x-a\r\nx-evil": "1"}):
        with pytest.raises(httpx.LocalProtocolError):
            client._request_bytes(h11.Connection(h11.CLIENT), "POST", url, headers, b"{}")
    assert client._request_bytes(h11.Connection(h11.CLIENT), "POST", httpx.URL("http://127.0.0.1:9/mcp?a=1"), {"accept": "*/*"}, b"{}") == (
        b"POST /mcp?a=1 HTTP/1.1\r\nhost: 127.0.0.1:9\r\naccept: */*\r\ncontent-length: 2\r\n\r\n{}"
    )


# -- the lean client against a raw TCP server that writes what it is told -------


class RawServer:
    """A TCP server on 127.0.0.1 that reads each request and writes the next scripted answer, byte for byte.

    An answer is its bytes and what follows them: ``"keep"`` (read the next
    request), ``"close"`` (close the connection) or ``"hang"`` (neither).
    """

    def __init__(self, answers: list[tuple[bytes, str]]) -> None:
        self.answers = answers
        self.connections = 0
        self.requests: list[bytes] = []

    async def serve(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        buffer = b""
        try:
            while self.answers:
                while b"\r\n\r\n" not in buffer:
                    data = await stream.receive_some(65536)
                    if not data:
                        return
                    buffer += data
                head, _, rest = buffer.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                while len(rest) < length:
                    rest += await stream.receive_some(65536)
                self.requests.append(head + b"\r\n\r\n" + rest[:length])
                buffer = rest[length:]
                answer, then = self.answers.pop(0)
                await stream.send_all(answer)
                if then == "close":
                    return
                if then == "hang":
                    await trio.sleep_forever()
        except trio.BrokenResourceError:
            pass
        finally:
            await stream.aclose()


@asynccontextmanager
async def raw_client(answers: list[tuple[bytes, str]]) -> AsyncIterator[tuple[RawServer, LeanClient, httpx.URL]]:
    server = RawServer(answers)
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, server.serve, 0, host="127.0.0.1"))
        url = httpx.URL(f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}/mcp")
        async with LeanClient(url, max_connections=4, connect_timeout=5.0) as client:
            with trio.fail_after(10):
                yield server, client, url
        nursery.cancel_scope.cancel()


async def post(client: LeanClient, url: httpx.URL, body: bytes = b"{}") -> tuple[int, dict[str, str], bytes]:
    async with client.stream("POST", url, content=body, headers={"content-type": "application/json"}) as response:
        chunks = [chunk async for chunk in response.aiter_bytes()]
    return response.status_code, response.headers, b"".join(chunks)


OK = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"


async def test_the_lean_client_keeps_one_connection_for_sequential_posts() -> None:
    chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    async with raw_client([(OK, "keep"), (chunked, "keep"), (OK, "keep")]) as (server, client, url):
        assert await post(client, url, b"[1]") == (200, {"content-type": "application/json", "content-length": "2"}, b"{}")
        assert (await post(client, url, b"[2]"))[2] == b"abcde"
        assert (await post(client, url, b"[3]"))[2] == b"{}"
    assert server.connections == 1
    assert [r.rpartition(b"\r\n\r\n")[2] for r in server.requests] == [b"[1]", b"[2]", b"[3]"]
    assert server.requests[0] == (
        b"POST /mcp HTTP/1.1\r\nhost: " + url.netloc + b"\r\ncontent-type: application/json\r\ncontent-length: 3\r\n\r\n[1]"
    )


async def test_the_lean_client_does_not_reuse_a_connection_the_server_closes() -> None:
    http10 = b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\n{}"
    close = b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\n{}"
    async with raw_client([(http10, "hang"), (close, "hang"), (OK, "keep")]) as (server, client, url):
        for _ in range(3):
            status, _, body = await post(client, url)
            assert (status, body) == (200, b"{}")
    assert server.connections == 3


GARBAGE = {
    "a bad status line": (b"HTTP/1.1 2x0 OK\r\ncontent-length: 2\r\n\r\n{}", "hang"),
    "not HTTP at all": (b"SSH-2.0-OpenSSH_9.6\r\n\r\n", "hang"),
    "a bad chunk size": (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\nzz\r\nxyz\r\n0\r\n\r\n", "hang"),
    "a chunk without its CRLF": (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabcX\r\n0\r\n\r\n", "hang"),
    "a sized body cut by the close": (b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n{}", "close"),
    "a chunked body cut by the close": (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n", "close"),
    "a head cut by the close": (b"HTTP/1.1 200 OK\r\ncontent-le", "close"),
    "no answer at all": (b"", "close"),
    "an oversized head": (b"HTTP/1.1 200 OK\r\nx-big: " + b"a" * (MAX_HEAD_BYTES + 1), "hang"),
    "two Content-Lengths that disagree": (b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\n{}", "hang"),
    "an unasked-for protocol switch": (b"HTTP/1.1 101 Switching Protocols\r\nupgrade: x\r\n\r\n", "hang"),
}


@pytest.mark.parametrize("name", list(GARBAGE))
async def test_the_lean_client_refuses_a_garbled_answer_and_drops_the_connection(name: str) -> None:
    async with raw_client([GARBAGE[name], (OK, "keep")]) as (server, client, url):
        with pytest.raises(httpx.RemoteProtocolError):
            await post(client, url)
        # The pool goes on with a new connection: the broken one was closed, not kept.
        assert await post(client, url) == (200, {"content-type": "application/json", "content-length": "2"}, b"{}")
    assert server.connections == 2


async def test_a_body_without_length_ends_at_the_close_and_its_connection_is_not_kept() -> None:
    # Without Content-Length or chunking the close is the end of the body (RFC 9112, 6.3):
    # what came is the body, however short, and that connection can serve nothing more.
    to_close = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n{\"jsonrpc\":\"2.0\",\"id\":1,\"res"
    async with raw_client([(to_close, "close"), (OK, "keep")]) as (server, client, url):
        assert await post(client, url) == (200, {"content-type": "application/json"}, b'{"jsonrpc":"2.0","id":1,"res')
        assert (await post(client, url))[2] == b"{}"
    assert server.connections == 2


async def test_a_garbled_answer_fails_the_downstream_as_a_lost_connection() -> None:
    server = RawServer([(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nnot-hex\r\n", "hang")])
    events: list[Event] = []

    async def emit(event: Event) -> None:
        events.append(event)

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, server.serve, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        downstream = HttpDownstream(
            downstream=7,
            server="web",
            spec=ServerSpec(name="web", transport="http", url=f"http://127.0.0.1:{port}/mcp"),
            max_message_bytes=1 << 20,
            emit=emit,
        )
        nursery.start_soon(downstream.run)
        downstream.send_nowait(call(2), expects_answer=True)
        await until(lambda: bool(events))
        nursery.cancel_scope.cancel()
    assert events == [DownstreamExited(now=events[0].now, downstream=7, reason=f"connection to 127.0.0.1:{port} was lost")]
