"""A lean keep-alive HTTP/1.1 client for plain ``http://`` downstreams, for :mod:`.downstream_http`.

Why not ``httpx`` everywhere: under load its connection pool scans every
connection and every waiting request each time a request starts or ends
(quadratic in the calls in flight), and each request passes through several
layers (auth and redirect flows, cookies, h11, two writes: head, then body).
With 50 calls in flight that came to milliseconds of CPU per call, more
than the gateway spends on everything else. This client does only what the
downstream connection needs: one write per request, a list of idle
connections, the body read as it arrives (``Content-Length``, chunked, or up
to the close) so an event stream is parsed while it streams.

It stands in for ``httpx.AsyncClient`` for the POSTs of an ``http://``
server when no proxy comes from the environment (:func:`usable`); the
caller adds the OAuth token itself and hands a challenge (401) to httpx's
auth flow. Failures are raised as the ``httpx``
exceptions the caller already handles (``ConnectError`` with the ``OSError``
as its cause, ``ConnectTimeout``, ``ReadError``, ``WriteError``,
``RemoteProtocolError``). It sends no ``Accept-Encoding`` (answers come
uncompressed) and keeps no cookies.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

import httpx
import trio

__all__ = ["LeanClient", "LeanResponse", "usable"]

#: Bytes asked of the socket per read.
READ_BYTES = 65536
#: Longest response head (status line and headers) accepted.
MAX_HEAD_BYTES = 65536
#: An idle connection older than this is closed rather than used (httpx's
#: default too: servers close idle connections after a few seconds).
KEEPALIVE_EXPIRY_S = 5.0
_PROXY_VARIABLES = ("http_proxy", "all_proxy")


def usable(url: httpx.URL, environ: Mapping[str, str] | None = None) -> bool:
    """Whether :class:`LeanClient` can serve ``url``: plain HTTP, no proxy configured (``httpx`` would use it)."""
    env = os.environ if environ is None else environ
    if url.scheme != "http":
        return False
    return not any(env.get(name) or env.get(name.upper()) for name in _PROXY_VARIABLES)


class _Connection:
    """One keep-alive TCP connection and what was read past the last response."""

    __slots__ = ("stream", "buffer", "idle_since")

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = bytearray()
        self.idle_since = 0.0

    async def fill(self) -> bool:
        """Read more into the buffer; False at end of stream."""
        try:
            data = await self.stream.receive_some(READ_BYTES)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            raise httpx.ReadError(f"read failed: {exc!r}") from exc
        if not data:
            return False
        self.buffer += data
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

    def __init__(
        self, connection: _Connection, status_code: int, headers: dict[str, str], raw_headers: list[tuple[bytes, bytes]],
        method: str,
    ) -> None:
        self.status_code = status_code
        #: Lower-case names; repeated headers joined with ", ".
        self.headers = headers
        #: As received (names in lower case), for an OAuth challenge.
        self.raw_headers = raw_headers
        self._connection = connection
        self._method = method
        #: The whole body was read and the connection may serve another request.
        self.reusable = False
        self._consumed = False

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        """The body's bytes as they arrive (chunked transfer coding removed)."""
        if self._consumed:
            return
        self._consumed = True
        headers = self.headers
        keep = headers.get("connection", "").lower() != "close"
        if self._method == "HEAD" or self.status_code in (204, 304) or 100 <= self.status_code < 200:
            self.reusable = keep
            return
        if "chunked" in headers.get("transfer-encoding", "").lower():
            async for piece in self._chunked():
                yield piece
            self.reusable = keep
            return
        length_text = headers.get("content-length")
        if length_text is not None:
            try:
                length = int(length_text)
            except ValueError:
                raise httpx.RemoteProtocolError("bad Content-Length") from None
            async for piece in self._sized(length):
                yield piece
            self.reusable = keep
            return
        async for piece in self._to_close():
            yield piece

    async def _sized(self, length: int) -> AsyncIterator[bytes]:
        conn = self._connection
        left = length
        while left > 0:
            if not conn.buffer and not await conn.fill():
                raise httpx.RemoteProtocolError("the server closed the connection mid-body")
            piece = bytes(conn.buffer[:left])
            del conn.buffer[:left]
            left -= len(piece)
            yield piece

    async def _to_close(self) -> AsyncIterator[bytes]:
        conn = self._connection
        while True:
            if conn.buffer:
                piece = bytes(conn.buffer)
                conn.buffer.clear()
                yield piece
            if not await conn.fill():
                return

    async def _chunked(self) -> AsyncIterator[bytes]:
        conn = self._connection
        while True:
            line = await self._line()
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise httpx.RemoteProtocolError("bad chunk size") from None
            if size == 0:
                while await self._line():  # trailers, up to the blank line
                    pass
                return
            left = size
            while left > 0:
                if not conn.buffer and not await conn.fill():
                    raise httpx.RemoteProtocolError("the server closed the connection mid-chunk")
                piece = bytes(conn.buffer[:left])
                del conn.buffer[:left]
                left -= len(piece)
                yield piece
            if await self._line():
                raise httpx.RemoteProtocolError("a chunk did not end with CRLF")

    async def _line(self) -> bytes:
        conn = self._connection
        while (end := conn.buffer.find(b"\r\n")) < 0:
            if len(conn.buffer) > MAX_HEAD_BYTES:
                raise httpx.RemoteProtocolError("a chunk line is too long")
            if not await conn.fill():
                raise httpx.RemoteProtocolError("the server closed the connection mid-body")
        line = bytes(conn.buffer[:end])
        del conn.buffer[: end + 2]
        return line


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
            if now - conn.idle_since < KEEPALIVE_EXPIRY_S and not conn.buffer and not conn.readable():
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

    def _request_bytes(self, method: str, url: httpx.URL, headers: Mapping[str, str], content: bytes | None) -> bytes:
        target = url.raw_path.decode("ascii")
        lines = [f"{method} {target} HTTP/1.1", f"host: {self._host_header}"]
        for name, value in headers.items():
            if "\n" in value or "\r" in value or "\n" in name or "\r" in name:
                # A token or configured value must not add headers of its own (httpx refuses it too).
                raise httpx.LocalProtocolError(f"a line break in the value of header {name.strip()!r}")
            lines.append(f"{name}: {value}")
        if content is not None or method in ("POST", "PUT", "PATCH"):
            lines.append(f"content-length: {len(content or b'')}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (content or b"")

    async def _head(self, conn: _Connection) -> tuple[int, dict[str, str], list[tuple[bytes, bytes]]]:
        while (end := conn.buffer.find(b"\r\n\r\n")) < 0:
            if len(conn.buffer) > MAX_HEAD_BYTES:
                raise httpx.RemoteProtocolError("the response head is too long")
            if not await conn.fill():
                raise httpx.RemoteProtocolError("the server closed the connection without a response")
        head = bytes(conn.buffer[:end]).decode("latin-1")
        del conn.buffer[: end + 4]
        status_line, *lines = head.split("\r\n")
        parts = status_line.split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
            raise httpx.RemoteProtocolError("not an HTTP/1.x response")
        try:
            status = int(parts[1])
        except ValueError:
            raise httpx.RemoteProtocolError("bad status code") from None
        headers: dict[str, str] = {}
        raw: list[tuple[bytes, bytes]] = []
        for line in lines:
            name, colon, value = line.partition(":")
            if not colon:
                raise httpx.RemoteProtocolError("bad header line")
            key = name.strip().lower()
            value = value.strip()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
            raw.append((key.encode("latin-1"), value.encode("latin-1")))
        if parts[0] == "HTTP/1.0" and headers.get("connection", "").lower() != "keep-alive":
            headers["connection"] = "close"
        return status, headers, raw

    @asynccontextmanager
    async def stream(
        self, method: str, url: httpx.URL, *, content: bytes | None = None, headers: Mapping[str, str] | None = None
    ) -> AsyncIterator[LeanResponse]:
        """Send one request; the response's head is read, its body is the caller's to iterate."""
        async with self._slots:
            conn = await self._checkout()
            response: LeanResponse | None = None
            try:
                try:
                    await conn.stream.send_all(self._request_bytes(method, url, headers or {}, content))
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                    raise httpx.WriteError(f"write failed: {exc!r}") from exc
                while True:
                    status, response_headers, raw = await self._head(conn)
                    if status != 100:  # an interim answer nobody asked for: the real one follows
                        break
                response = LeanResponse(conn, status, response_headers, raw, method)
                yield response
                if not response.reusable and not response._consumed:
                    # Unread: drain a small sized body so the connection can be kept.
                    length = response_headers.get("content-length")
                    if length is not None and length.isdigit() and int(length) <= READ_BYTES:
                        async for _ in response.aiter_bytes():
                            pass
            finally:
                if response is not None and response.reusable and not self._closed:
                    conn.idle_since = time.monotonic()
                    self._idle.append(conn)
                else:
                    await conn.close()

    async def delete(self, url: httpx.URL, *, headers: Mapping[str, str] | None = None) -> None:
        """Send a DELETE and read its answer."""
        async with self.stream("DELETE", url, headers=headers) as response:
            async for _ in response.aiter_bytes():
                pass
