"""The loopback redirect of a login: ``http://127.0.0.1:<port>/callback``, served for the duration of one flow.

RFC 8252 (OAuth for native apps), section 7.3: the browser brings the
authorization response to a port on the loopback interface that the app
listens on. :class:`Loopback` binds it before the flow starts (the redirect
URI is part of the client's registration and of the authorization request),
answers every request on it, and hands over the first callback that carries
the state of the authorization request Lockgate made; a callback with another
state, or on another path, is refused and the wait goes on. Closing it
releases the port.
"""

from __future__ import annotations

import html
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import parse_qs, urlsplit

import h11
import trio
from mcp.shared.auth import AuthorizationCodeResult

__all__ = ["CallbackError", "Loopback", "open_loopback"]

#: The most of a request's head the callback reads.
_HEAD_BYTES = 16384
#: How long one browser connection may take to send its request.
_REQUEST_S = 10.0


class CallbackError(Exception):
    """The authorization server redirected back with an error (RFC 6749, section 4.1.2.1), or no callback came in time."""


class Loopback:
    """One login's redirect URI on 127.0.0.1, made by :func:`open_loopback`; :meth:`expect`, then :meth:`wait`."""

    def __init__(self, listener: trio.SocketListener) -> None:
        self._listener = listener
        self._state: str | None = None
        self._result: AuthorizationCodeResult | CallbackError | None = None
        self._arrived = trio.Event()
        self.port: int = listener.socket.getsockname()[1]

    @property
    def redirect_uri(self) -> str:
        return f"http://127.0.0.1:{self.port}/callback"

    def expect(self, state: str) -> None:
        """The state of the authorization request: only a callback carrying it is taken."""
        self._state = state

    async def wait(self, timeout: float) -> AuthorizationCodeResult:
        """The authorization response, once the browser brings it.

        Raises:
            CallbackError: the server sent an error back, or nothing came within ``timeout`` seconds.
        """
        with trio.move_on_after(timeout):
            await self._arrived.wait()
        result = self._result
        if result is None:
            raise CallbackError(f"the login was not finished within {timeout:g} s")
        if isinstance(result, CallbackError):
            raise result
        return result

    async def _serve(self) -> None:
        async with trio.open_nursery() as nursery:
            while True:
                stream = await self._listener.accept()
                nursery.start_soon(self._answer, stream)

    async def _answer(self, stream: trio.SocketStream) -> None:
        async with stream:
            with trio.move_on_after(_REQUEST_S):
                try:
                    target = await _read_target(stream)
                except (h11.RemoteProtocolError, trio.BrokenResourceError, OSError):
                    return
                if target is None:
                    return
                status, page = self._take(target)
                await _reply(stream, status, page)

    def _take(self, target: bytes) -> tuple[int, str]:
        """What a request for ``target`` does to the wait, and the page the browser shows."""
        parts = urlsplit(target.decode("latin-1"))
        if parts.path != "/callback":
            return 404, "Not the Lockgate login callback."
        query = {name: values[0] for name, values in parse_qs(parts.query).items()}
        if self._result is not None:
            return 409, "This login is already over; you can close this tab."
        if query.get("state") != self._state or self._state is None:
            return 400, "This is not the login Lockgate started (its state does not match); it was ignored."
        if "error" in query:
            described = query.get("error_description", "")
            self._result = CallbackError(
                f"the authorization server refused the login: {query['error']}" + (f" ({described[:200]})" if described else "")
            )
            self._arrived.set()
            return 400, f"The login failed: {query['error']}. Lockgate was told; you can close this tab."
        if not query.get("code"):
            return 400, "The callback carries no authorization code."
        self._result = AuthorizationCodeResult(code=query["code"], state=query["state"], iss=query.get("iss"))
        self._arrived.set()
        return 200, "Logged in. Lockgate has its token; you can close this tab."


@asynccontextmanager
async def open_loopback(port: int = 0) -> AsyncIterator[Loopback]:
    """Listen on 127.0.0.1:``port`` (any free port if 0, or if ``port`` is taken) until the block ends."""
    sock = _socket()
    try:
        await sock.bind(("127.0.0.1", port))
    except OSError:
        sock.close()
        if port == 0:
            raise
        # The port a client was registered with is taken: any free one will
        # do, and the caller registers the client again.
        sock = _socket()
        await sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    listener = trio.SocketListener(sock)
    loopback = Loopback(listener)
    try:
        async with listener, trio.open_nursery() as nursery:
            nursery.start_soon(loopback._serve)
            try:
                yield loopback
            finally:
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # The nursery wraps what the block raised in a group: the caller
        # catches it as it was raised.
        if len(group.exceptions) != 1:
            raise
        raise group.exceptions[0] from None


def _socket() -> trio.socket.SocketType:
    """A TCP socket that may bind a port the last login's connections still hold (in TIME_WAIT)."""
    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_STREAM)
    sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_REUSEADDR, 1)
    return sock


async def _read_target(stream: trio.SocketStream) -> bytes | None:
    """The target of the request on ``stream``, or ``None`` if it sent none."""
    connection = h11.Connection(h11.SERVER, max_incomplete_event_size=_HEAD_BYTES)
    while True:
        event = connection.next_event()
        if isinstance(event, h11.Request):
            return bytes(event.target)
        if event is h11.NEED_DATA:
            data = await stream.receive_some(4096)
            connection.receive_data(data)
            if not data:
                return None
            continue
        return None


async def _reply(stream: trio.SocketStream, status: int, text: str) -> None:
    body = f"<!doctype html><title>Lockgate</title><p>{html.escape(text)}</p>\n".encode()
    head = (
        f"HTTP/1.1 {status} {'OK' if status == 200 else 'Error'}\r\n"
        "Content-Type: text/html; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\nCache-Control: no-store\r\n\r\n"
    ).encode()
    try:
        await stream.send_all(head + body)
    except (trio.BrokenResourceError, OSError):
        pass


