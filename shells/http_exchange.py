"""One HTTP/1.1 connection of the Streamable HTTP front: parsing requests, reading bodies, writing responses.

Theory of operation. :func:`serve_connection` is the task of one accepted TCP
connection. It asks the :class:`~.http_connections.ConnectionTable` for room
(no room: it reads the request head for a moment and answers 503), then
parses HTTP/1.1 with h11, one request at a time on a keep-alive connection,
and hands each request to the endpoint as an :class:`Exchange`: the request
head, and the ways to read its body and to answer it. What to answer is the
endpoint's to say (and the core's, :mod:`lockgate.core.http`); this module
only moves the bytes, under the table's deadlines.

- A head over 100 fields or 64 KiB gets 431 before the endpoint sees it; a
  head h11 cannot parse gets 400. Both close the connection.
- Once the head is in, the body must follow within a time scaled to its
  size (:func:`lockgate.core.http.body_timeout`).
- A keep-alive answer with a body is written without h11, which costs more
  than building it; the next request then gets a fresh h11 parser with the
  bytes already read. SSE streams, rejections and everything else go
  through h11.
- A failure inside the shell while serving one request (a bug) is logged,
  answered 500 if nothing was sent yet, and closes that connection alone.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Awaitable, Callable, Sequence
from typing import TypeVar

import h11
import trio

from lockgate.core.http import (
    MAX_HEAD_BYTES,
    HttpPolicy,
    Reject,
    bad_http,
    body_timeout,
    busy,
    check_head_size,
    internal_error,
)

from .http_connections import HUNG_UP, Closed, ConnectionTable, Link, hung_up, linger, receive_some, watch_hangup, write
from .logs import get_logger

__all__ = ["Exchange", "Handler", "serve_connection"]

_log = get_logger("http")

Headers = list[tuple[str, str]]

#: Status lines of the responses written by hand; h11 too leaves the reason phrase out.
_STATUS_LINES = {status: b"HTTP/1.1 %d \r\n" % status for status in (200, 202)}
#: Statuses that carry no body (nor Content-Length): always sent through h11.
_NO_BODY = frozenset({204, 304})
#: What a hang-up watcher reads at most: a pipelined request's start, kept for it.
_WATCH_CHUNK = 64 * 1024

T = TypeVar("T")


class Exchange:
    """One request on one connection, and the ways to answer it.

    ``method``, ``target`` and ``headers`` are the request head, decoded;
    ``headers`` has lower-case names, a repeated field joined with ``", "``.
    Answer once, with :meth:`respond`, :meth:`reject`, :meth:`refuse`,
    :meth:`send_events` or :meth:`stream_events`. Each may raise
    :class:`~.http_connections.Closed` (or a transport error) when the
    connection is done; the connection then closes.
    """

    __slots__ = ("_conn", "_link", "_max_body_bytes", "_table", "headers", "method", "target")

    def __init__(
        self, conn: h11.Connection, link: Link, table: ConnectionTable, request: h11.Request, max_body_bytes: int
    ) -> None:
        self._conn = conn
        self._link = link
        self._table = table
        self._max_body_bytes = max_body_bytes
        self.method = request.method.decode("ascii", "replace")
        self.target = request.target.decode("latin-1")
        self.headers: dict[str, str] = {}
        for raw_name, raw_value in request.headers:
            name = raw_name.decode("latin-1")
            value = raw_value.decode("latin-1")
            self.headers[name] = f"{self.headers[name]}, {value}" if name in self.headers else value

    @property
    def peer(self) -> str:
        """The peer's IP address (``""`` when the socket no longer knows it)."""
        return self._link.address

    # -- reading -----------------------------------------------------------------

    async def read_body(self) -> bytes | None:
        """The request body, or ``None`` once it passes the size limit; the request is then busy."""
        parts: list[bytes] = []
        size = 0
        while True:
            event = await _next_event(self._conn, self._link, self._table)
            if isinstance(event, h11.Data):
                size += len(event.data)
                if size > self._max_body_bytes:
                    self._table.busy(self._link)
                    return None
                parts.append(event.data)
            elif isinstance(event, h11.EndOfMessage):
                self._table.busy(self._link)
                return b"".join(parts)
            else:
                raise Closed

    async def while_connected(self, work: Callable[[], Awaitable[T]]) -> T:
        """``work()``'s result, unless the client hangs up first: then ``work`` is cancelled.

        For an answer that takes a downstream's time to come: a client gone
        before it should not keep the call running. Bytes the client sends
        meanwhile (its next request, pipelined) are kept for that request.

        Raises:
            Closed: the client hung up; the connection closes.
        """
        result: list[T] = []
        gone = trio.Event()

        async def run(scope: trio.CancelScope) -> None:
            result.append(await work())
            scope.cancel()

        async def watch(scope: trio.CancelScope) -> None:
            if await self.hung_up():
                gone.set()
                scope.cancel()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(run, nursery.cancel_scope)
            nursery.start_soon(watch, nursery.cancel_scope)
        if gone.is_set() or not result:
            raise Closed
        return result[0]

    async def hung_up(self) -> bool:
        """Wait for the client to hang up (True), or to send its next request's first bytes (False, kept for it)."""
        try:
            data = await self._link.stream.receive_some(_WATCH_CHUNK)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            return True
        if not data:
            return True
        self._conn.receive_data(data)
        return False

    # -- answering ---------------------------------------------------------------

    async def switch_protocols(self, headers: Sequence[tuple[str, str]]) -> tuple[trio.SocketStream, bytes]:
        """Answer ``101 Switching Protocols`` (a WebSocket upgrade, read to its end): the connection is no longer HTTP.

        Returns the socket and the bytes read past the request (the other
        protocol's first). The link stays busy until the connection closes.
        """
        await write(self._link, self._conn.send(h11.InformationalResponse(status_code=101, headers=list(headers))))
        return self._link.stream, self._conn.trailing_data[0]

    async def refuse(self, reject: Reject) -> None:
        """Answer ``reject`` to a request refused on its head alone, its body unread.

        A small body is read first: closing on unread input would reset the
        connection and could destroy the answer before the client reads it.
        Unless the framing itself is in doubt (``reject.close``): then nothing
        more is read.
        """
        fits = not reject.close and (self._conn.their_state is not h11.SEND_BODY or await self.read_body() is not None)
        self._table.busy(self._link)
        await self.reject(reject, close=not fits)

    async def reject(self, reject: Reject, *, close: bool = False) -> None:
        """Answer ``reject``; with ``close`` (or ``reject.close``) the connection then closes."""
        await _send_reject(self._conn, self._link, self._table, reject, close=close)

    async def respond(self, status: int, headers: Headers, body: bytes) -> None:
        """Answer a routed request (never HEAD: :func:`~lockgate.core.http.check_head` refuses it) with a whole body."""
        conn = self._conn
        if self._table.closing and conn.their_state is h11.DONE:
            headers = [*headers, ("connection", "close")]
        # The common case, a keep-alive request read to its end (h11 says DONE,
        # not MUST_CLOSE, only then), is written by hand: building and checking
        # an h11.Response costs more than the rest of the shell's work per call.
        # h11 still parsed the request; _serve gives the next one a new parser.
        if conn.our_state is h11.SEND_RESPONSE and conn.their_state is h11.DONE and status not in _NO_BODY:
            await write(self._link, _response_bytes(status, headers, body))
            return
        await _send_h11(conn, self._link, self._table, status, headers, body)

    async def send_events(self, headers: Headers, frames: list[bytes]) -> None:
        """Answer with an SSE stream of ``frames`` that ends at once."""
        conn = self._conn
        data = conn.send(h11.Response(status_code=200, headers=headers))
        data += b"".join(conn.send(h11.Data(data=f)) for f in frames)
        await write(self._link, data + conn.send(h11.EndOfMessage()))

    async def stream_events(self, headers: Headers, first: list[bytes], frames: AsyncIterable[bytes]) -> None:
        """Answer with an SSE stream: ``first``, then every frame of ``frames`` until they end.

        Raises:
            Closed: the client hung up (noticed at once, not at the next
                frame), or the front is shutting down; the connection closes.
        """
        conn, link = self._conn, self._link
        gone = trio.Event()
        head = conn.send(h11.Response(status_code=200, headers=headers))
        link.responded = True
        await link.stream.send_all(head + b"".join(conn.send(h11.Data(data=f)) for f in first))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch_hangup, link.stream, nursery.cancel_scope, gone)
            async for frame in frames:
                await link.stream.send_all(conn.send(h11.Data(data=frame)))
            nursery.cancel_scope.cancel()
        if gone.is_set():
            raise Closed
        await link.stream.send_all(conn.send(h11.EndOfMessage()))
        if self._table.closing:
            raise Closed


Handler = Callable[[Exchange], Awaitable[None]]
"""What answers each request: the endpoint."""


async def serve_connection(stream: trio.SocketStream, table: ConnectionTable, policy: HttpPolicy, handler: Handler) -> None:
    """Serve one TCP connection until it closes; never raises (but for cancellation)."""
    link = Link.accepted(stream)
    try:
        if table.admit(link):
            await _serve(link, table, policy, handler)
        else:
            await _refuse(link, table)
    except h11.RemoteProtocolError as exc:
        _log.debug(f"HTTP protocol error: {exc}")
    except Exception as exc:
        # The last line of defence: a bug met while serving one request
        # must close that connection, not the server's nursery with it.
        if not hung_up(exc):
            _log.error("failed while serving an HTTP request; closing its connection", exc_info=exc,
                       extra={"fields": {"peer": link.address}})
            await _answer_failure(link)
    finally:
        table.remove(link)
        with trio.CancelScope(shield=True), trio.move_on_after(1):
            await stream.aclose()


async def _serve(link: Link, table: ConnectionTable, policy: HttpPolicy, handler: Handler) -> None:
    conn = _parser()
    while True:
        try:
            event = await _next_event(conn, link, table)
        except h11.RemoteProtocolError as exc:
            if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                table.busy(link)
                await _send_reject(conn, link, table, bad_http(exc.error_status_hint, str(exc)))
            return
        if not isinstance(event, h11.Request):
            return  # ConnectionClosed
        link.responded = False
        too_large_head = check_head_size(len(event.headers), _head_size(event))
        if too_large_head is not None:
            table.busy(link)
            await _send_reject(conn, link, table, too_large_head)
            return
        exchange = Exchange(conn, link, table, event, policy.max_body_bytes)
        seconds = body_timeout(exchange.headers.get("content-length"), policy, table.limits)
        table.head_read(link, trio.current_time(), seconds)
        await handler(exchange)
        if conn.our_state is h11.SEND_RESPONSE and conn.their_state is h11.DONE:
            # Answered by hand (see Exchange.respond): h11 never saw the response,
            # so the next request gets a fresh parser with the bytes already read.
            if table.closing:
                return
            conn = _next_parser(conn)
        elif conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
            return
        elif conn.their_state is not h11.DONE:
            return  # we answered before reading the whole body
        else:
            conn.start_next_cycle()
        table.idle(link)
        if conn.trailing_data[0]:
            # Pipelined: the next request's bytes are in, so its head deadline runs now.
            table.start(link, trio.current_time())


async def _refuse(link: Link, table: ConnectionTable) -> None:
    """No room: read the request head for a moment, answer 503, close."""
    conn = _parser()
    with trio.move_on_after(min(table.limits.head_timeout, 2.0)):
        while (event := conn.next_event()) is h11.NEED_DATA:
            conn.receive_data(await receive_some(link.stream))
        if isinstance(event, h11.Request):
            await _send_reject(conn, link, table, busy())


async def _answer_failure(link: Link) -> None:
    """500, unless part of an answer already went out (then closing says enough)."""
    if link.responded:
        return
    reject = internal_error()
    try:
        with trio.move_on_after(1):
            await write(link, _response_bytes(reject.status, list(reject.headers), reject.body))
        await linger(link.stream)
    except HUNG_UP:
        pass


async def _next_event(conn: h11.Connection, link: Link, table: ConnectionTable) -> object:
    """The next h11 event, reading as needed under the link's deadlines (see :meth:`ConnectionTable.receive`)."""
    while True:
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            return event
        conn.receive_data(await table.receive(link))


async def _send_reject(
    conn: h11.Connection, link: Link, table: ConnectionTable, reject: Reject, *, close: bool = False
) -> None:
    headers = list(reject.headers)
    close = close or reject.close
    if close and ("connection", "close") not in headers:
        headers.append(("connection", "close"))
    # Through h11: a reject may answer HEAD, HTTP/1.0 or a half-read request.
    await _send_h11(conn, link, table, reject.status, headers, reject.body)
    if close:
        await linger(link.stream)


async def _send_h11(
    conn: h11.Connection, link: Link, table: ConnectionTable, status: int, headers: Headers, body: bytes
) -> None:
    if table.closing and conn.their_state is h11.DONE and ("connection", "close") not in headers:
        headers = [*headers, ("connection", "close")]
    head = h11.Response(status_code=status, headers=[*headers, ("content-length", str(len(body)))])
    data = conn.send(head)
    if body:
        data += conn.send(h11.Data(data=body))
    await write(link, data + conn.send(h11.EndOfMessage()))


def _parser() -> h11.Connection:
    """A server-side h11 parser that buffers at most one head (more gets 431)."""
    return h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)


def _next_parser(conn: h11.Connection) -> h11.Connection:
    """A fresh h11 parser for the connection's next request, fed what ``conn`` read past the last one."""
    data, closed = conn.trailing_data
    fresh = _parser()
    if data:
        fresh.receive_data(data)
    if closed:
        fresh.receive_data(b"")
    return fresh


def _head_size(request: h11.Request) -> int:
    """Bytes of the request line and header field lines, as sent but for optional whitespace."""
    line = len(request.method) + len(request.target) + len(b"  HTTP/1.1\r\n")
    return line + sum(len(name) + len(value) + len(b": \r\n") for name, value in request.headers)


def _response_bytes(status: int, headers: Headers, body: bytes) -> bytes:
    """An HTTP/1.1 response with a ``Content-Length`` body, as h11 would write it.

    Header names are the core's lower-case constants; values are the core's
    or ones h11 accepted in the request (an echoed ``Origin``), so none holds
    a line break.
    """
    lines = [_STATUS_LINES.get(status) or b"HTTP/1.1 %d \r\n" % status]
    lines.extend(f"{name}: {value}\r\n".encode("latin-1") for name, value in headers)
    lines.append(b"content-length: %d\r\n\r\n" % len(body))
    lines.append(body)
    return b"".join(lines)
