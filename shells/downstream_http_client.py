"""A lean keep-alive HTTP/1.1 client for plain ``http://`` downstreams, for :mod:`.downstream_http`.

Why not ``httpx`` everywhere: under load its connection pool scans every
connection and every waiting request each time a request starts or ends
(quadratic in the calls in flight), and each request passes through several
layers (auth and redirect flows, cookies, two writes: head, then body).
With 50 calls in flight that came to milliseconds of CPU per call, more
than the gateway spends on everything else. This client does only what the
downstream connection needs: one write per request, a list of idle
connections, the body handed on as it arrives so an event stream is parsed
while it streams.

Parsing and framing are h11's (one ``h11.Connection`` per TCP connection):
the bytes come from another process, which may write anything, so they meet
a well-tested parser rather than one of our own. h11 builds each request
(head, body and end written at once), reads the response head and its body
(``Content-Length``, chunked, or up to the close) and says whether the
connection may serve another request: it goes back to the pool only when
both sides of h11's state machine are ``DONE`` after a complete response
and nothing was read past it. A response head over :data:`MAX_HEAD_BYTES`
is refused.

It stands in for ``httpx.AsyncClient`` for the POSTs of an ``http://``
server when no proxy comes from the environment (:func:`usable`); the
caller adds the OAuth token itself and hands a challenge (401) to httpx's
auth flow. Failures are raised as the ``httpx`` exceptions the caller
already handles (``ConnectError`` with the ``OSError`` as its cause,
``ConnectTimeout``, ``ReadError``, ``WriteError``, ``RemoteProtocolError``
for anything h11 refuses in a response, ``LocalProtocolError`` for a
request h11 refuses to write, such as a header with a line break). It sends
no ``Accept-Encoding`` (answers come uncompressed) and keeps no cookies.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

import h11
import httpx
import trio

__all__ = ["LeanClient", "LeanResponse", "usable"]

#: Bytes asked of the socket per read.
READ_BYTES = 65536
#: Longest response head (status line and headers), or chunk header, accepted.
MAX_HEAD_BYTES = 65536
#: An idle connection older than this is closed rather than used (httpx's
#: default too: servers close idle connections after a few seconds).
KEEPALIVE_EXPIRY_S = 5.0
_PROXY_VARIABLES = ("http_proxy", "all_proxy")
#: Methods whose request always states its body's length (0 included).
_WITH_BODY = ("POST", "PUT", "PATCH")

_Event = h11.Event | type[h11.NEED_DATA] | type[h11.PAUSED]


def usable(url: httpx.URL, environ: Mapping[str, str] | None = None) -> bool:
    """Whether :class:`LeanClient` can serve ``url``: plain HTTP, no proxy configured (``httpx`` would use it)."""
    env = os.environ if environ is None else environ
    if url.scheme != "http":
        return False
    return not any(env.get(name) or env.get(name.upper()) for name in _PROXY_VARIABLES)


class _Connection:
    """One keep-alive TCP connection and the h11 state machine that frames its bytes."""

    __slots__ = ("stream", "http", "idle_since")

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.http = h11.Connection(our_role=h11.CLIENT, max_incomplete_event_size=MAX_HEAD_BYTES)
        self.idle_since = 0.0

    async def send(self, data: bytes) -> None:
        try:
            await self.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            raise httpx.WriteError(f"write failed: {exc!r}") from exc

    async def next_event(self) -> _Event:
        """h11's next event of the response, reading the socket as h11 needs (never ``NEED_DATA``)."""
        http = self.http
        while True:
            try:
                event = http.next_event()
            except h11.RemoteProtocolError as exc:
                raise httpx.RemoteProtocolError(f"bad response from the server: {exc}") from exc
            if event is not h11.NEED_DATA:
                return event
            try:
                data = await self.stream.receive_some(READ_BYTES)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                raise httpx.ReadError(f"read failed: {exc!r}") from exc
            if not data and http.their_state is h11.SEND_RESPONSE and not http.trailing_data[0]:
                # h11 would say it "can't handle ConnectionClosed": say what happened.
                raise httpx.RemoteProtocolError("the server closed the connection without a response")
            http.receive_data(data)  # b"": the end of the stream, which h11 judges

    def reusable(self) -> bool:
        """After a complete response: start h11's next cycle if this connection may serve another request."""
        http = self.http
        if http.our_state is not h11.DONE or http.their_state is not h11.DONE:
            return False
        extra, closed = http.trailing_data
        if extra or closed:  # bytes past the response nobody asked for, or the end of the stream
            return False
        http.start_next_cycle()
        return True

    def readable(self) -> bool:
        """Whether the peer sent something (most likely its close) while the connection was idle."""
        try:
            return bool(self.stream.socket.is_readable())
        except OSError:
            return True

    async def close(self) -> None:
        with trio.CancelScope(shield=True):
            try:
                await self.stream.aclose()
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass


class LeanResponse:
    """The head of a response and its body as an async iterator, like ``httpx.Response`` in stream mode."""

    def __init__(self, connection: _Connection, head: h11.Response) -> None:
        self.status_code = head.status_code
        raw = [(name, value) for name, value in head.headers]
        headers: dict[str, str] = {}
        for name, value in raw:
            key = name.decode("latin-1")
            text = value.decode("latin-1")
            headers[key] = f"{headers[key]}, {text}" if key in headers else text
        #: Lower-case names; repeated headers joined with ", ".
        self.headers = headers
        #: As received (names in lower case), for an OAuth challenge.
        self.raw_headers = raw
        self._connection = connection
        self._consumed = False
        #: The whole body was read (h11's ``EndOfMessage``).
        self.complete = False

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        """The body's bytes as they arrive (chunked transfer coding removed)."""
        if self._consumed:
            return
        self._consumed = True
        conn = self._connection
        while True:
            event = await conn.next_event()
            if isinstance(event, h11.Data):
                yield bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                self.complete = True
                return
            else:  # h11 gives nothing else within a body: a closed stream mid-body is an error it raises
                raise httpx.RemoteProtocolError(f"unexpected {type(event).__name__} in a response body")


class LeanClient:
    """Keep-alive connections to one ``host:port``, at most ``max_connections`` at once."""

    def __init__(self, url: httpx.URL, *, max_connections: int, connect_timeout: float) -> None:
        self._host = url.host
        self._port = url.port or 80
        self._host_header = url.netloc.decode("ascii")
        self._connect_timeout = connect_timeout
        self._idle: list[_Connection] = []
        self._slots = trio.Semaphore(max_connections)
        self._closed = False

    async def __aenter__(self) -> LeanClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close every idle connection; those in use close when their request ends."""
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            await conn.close()

    async def _checkout(self) -> _Connection:
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            if now - conn.idle_since < KEEPALIVE_EXPIRY_S and not conn.readable():
                return conn
            await conn.close()
        with trio.move_on_after(self._connect_timeout) as timer:
            try:
                stream = await trio.open_tcp_stream(self._host, self._port)
            except OSError as exc:
                raise httpx.ConnectError(f"cannot connect: {exc!r}") from exc
        if timer.cancelled_caught:
            raise httpx.ConnectTimeout("connect timed out")
        return _Connection(stream)

    def _request_bytes(
        self, http: h11.Connection, method: str, url: httpx.URL, headers: Mapping[str, str], content: bytes | None
    ) -> bytes:
        """The whole request as h11 writes it (head, body, end), for one ``send_all``."""
        fields: list[tuple[str, str]] = [("host", self._host_header)]
        fields.extend(headers.items())
        if content is not None or method in _WITH_BODY:
            fields.append(("content-length", str(len(content or b""))))
        try:
            # h11 refuses a name or value with a line break (or any control
            # byte): a token or configured value must not add headers of its own.
            events: list[h11.Event] = [h11.Request(method=method, target=url.raw_path, headers=fields)]
            if content:
                events.append(h11.Data(data=content))
            events.append(h11.EndOfMessage())
            parts: list[bytes] = []
            for event in events:
                parts += http.send_with_data_passthrough(event) or ()
        except h11.LocalProtocolError as exc:
            raise httpx.LocalProtocolError(f"cannot write the request: {exc}") from exc
        return b"".join(parts)

    @asynccontextmanager
    async def stream(
        self, method: str, url: httpx.URL, *, content: bytes | None = None, headers: Mapping[str, str] | None = None
    ) -> AsyncIterator[LeanResponse]:
        """Send one request; the response's head is read, its body is the caller's to iterate."""
        async with self._slots:
            conn = await self._checkout()
            response: LeanResponse | None = None
            try:
                await conn.send(self._request_bytes(conn.http, method, url, headers or {}, content))
                while True:
                    event = await conn.next_event()
                    if isinstance(event, h11.Response):
                        break
                    if not isinstance(event, h11.InformationalResponse):  # a 1xx nobody asked for: the real one follows
                        raise httpx.RemoteProtocolError("the server closed the connection without a response")
                response = LeanResponse(conn, event)
                yield response
                if not response._consumed:
                    # Unread: drain a small sized body so the connection can be kept.
                    length = response.headers.get("content-length")
                    if length is not None and length.isdigit() and int(length) <= READ_BYTES:
                        async for _ in response.aiter_bytes():
                            pass
            finally:
                if response is not None and response.complete and not self._closed and conn.reusable():
                    conn.idle_since = time.monotonic()
                    self._idle.append(conn)
                else:
                    await conn.close()

    async def delete(self, url: httpx.URL, *, headers: Mapping[str, str] | None = None) -> None:
        """Send a DELETE and read its answer."""
        async with self.stream("DELETE", url, headers=headers) as response:
            async for _ in response.aiter_bytes():
                pass
