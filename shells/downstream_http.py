"""HTTP downstreams: one MCP session over Streamable HTTP per ``StartDownstream``.

Theory of operation. :meth:`HttpDownstream.run` is one task in the runtime's
nursery. It owns one ``httpx.AsyncClient`` (a keep-alive connection pool) for
the life of the downstream connection, and POSTs every message the core
sends, as the bytes the core encoded, to the server's URL (MCP 2025-11-25,
basic/transports, "Streamable HTTP"):

- Requests (``SendToDownstream.expects_answer``) are POSTed concurrently,
  each in its own task, so a slow call never holds up the others.
  Notifications and responses are POSTed in order, each awaited (a 202
  comes at once), so ``notifications/initialized`` reaches the server
  before the requests that follow it.
- The answer to a request is either ``application/json`` (one message) or a
  ``text/event-stream`` (:mod:`.sse_parser`, parsed as it arrives); every
  JSON-RPC message in it becomes one ``DownstreamMessageReceived``, in order.
- The response to ``initialize`` carries the ``Mcp-Session-Id``; it is sent
  on every later request, with ``MCP-Protocol-Version`` set to the version
  in the initialize result. Once a session exists, a GET stream is kept open
  for the server's own notifications (a 405 means the server offers none);
  when it drops it is reopened with ``Last-Event-ID``, after the ``retry``
  delay the server asked for or a growing pause.
- A response stream that breaks before the answer arrived is resumed by GET
  with ``Last-Event-ID`` when the server gave its events ids.
- :meth:`stop` ends everything and DELETEs the session (bounded, shielded).
- A request in the stateless era's envelope (MCP 2026-07-28: its
  ``_meta`` names that protocol version; the core decides the era) is a
  POST of its own, without a session, with the headers that era routes by
  (``MCP-Protocol-Version``, ``Mcp-Method``, ``Mcp-Name``; see
  :func:`lockgate.core.routing_headers`). Such a server has no session, so
  no GET stream and no DELETE; cancelling one of its requests
  (``notifications/cancelled`` from the core) closes that request's
  response stream, which is how that era cancels over HTTP.
- ``auth`` (:mod:`.oauth`) puts the server's OAuth token on every request,
  and gets one on a 401; when none can be had, the message is reported as
  ``DownstreamUnauthorized`` with why.

The shell reports facts and leaves every decision to the core: a 404 to a
message sent under our session is ``DownstreamSessionLost`` (the shell
forgets that session id first); any other status of 300 or more is
``DownstreamHttpError`` with the start of the body; a message over the size
limit is ``DownstreamMessageReceived(too_large=True)``, after which no
message of the connection is delivered (the core stops it: whatever follows
can no longer be matched to calls); a transport failure (connection refused,
reset, connect timeout) ends the downstream with ``DownstreamExited`` and a
reason that names only host and port ("connection refused to
127.0.0.1:8000"), never the URL's path, query or credentials. Tool calls
have no HTTP read timeout: the core's per-call timers own that.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import nullcontext
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import httpx
import trio

from lockgate.core import (
    DownstreamExited,
    DownstreamHttpError,
    DownstreamMessageReceived,
    DownstreamSessionLost,
    DownstreamUnauthorized,
    Event,
    Notification,
    Request,
    ServerSpec,
    decode,
    routing_headers,
)

from .downstream_http_client import LeanClient, LeanResponse, usable
from .downstream_http_replies import (
    TooLarge,
    content_type,
    describe_failure,
    fresh_parser,
    host_and_port,
    initialize_version,
    is_response,
    read_body,
    request_id,
)
from .logs import get_logger
from .oauth.errors import OAuthProblem
from .sse_parser import SseEvent, SseParser, SseTooLarge

__all__ = ["HttpDownstream", "describe_failure"]

Emit = Callable[[Event], Awaitable[None]]

#: How long opening a TCP (and TLS) connection may take.
CONNECT_TIMEOUT_S = 10.0
#: How long the DELETE that ends a session may take at stop.
STOP_S = 2.0
#: Pauses before reopening a dropped GET stream: first, and at most.
LISTEN_RETRY_S = 0.25
LISTEN_RETRY_MAX_S = 10.0
#: Attempts to resume a broken response stream before giving up on it.
RESUME_ATTEMPTS = 3
#: How much of an error response's body the core gets to see.
ERROR_BODY_BYTES = 65536
#: Connections per downstream: each call in flight holds one while its
#: answer streams, and the GET stream holds one. Past the limit, calls wait
#: for a free connection (under their own timeouts). Every one may stay
#: open between calls: a smaller keep-alive pool closes and reopens
#: connections at every call once more calls than it holds are in flight,
#: which cost more CPU than the calls themselves (the server pays it too).
MAX_CONNECTIONS = 100
KEEPALIVE_CONNECTIONS = MAX_CONNECTIONS

_ACCEPT_POST = "application/json, text/event-stream"
#: In the body of every request in the stateless era's envelope: the bytes looked for before parsing one.
_STATELESS_MARK = b'"io.modelcontextprotocol/protocolVersion"'
_CANCELLED_MARK = b'"notifications/cancelled"'
_ACCEPT_SSE = "text/event-stream"

if TYPE_CHECKING:
    from .oauth.session import Challenge

_log = get_logger("downstream")


@runtime_checkable
class TokenSource(Protocol):
    """What an OAuth ``auth`` keeps its token in (``DownstreamAuth.session``), for the lean client's POSTs."""

    async def current(self) -> str | None:
        """The token to send now, or ``None``."""

    async def obtain(self, challenge: Challenge, sent: str | None, *, person: bool = True) -> str:
        """A token for a request that met ``challenge`` when sent with ``sent``."""


def _challenge(response: LeanResponse) -> Challenge | None:
    """The challenge in ``response`` (``oauth.session.challenge_of``, for the lean client's responses)."""
    status = response.status_code
    if status == 401 or (status == 403 and "insufficient_scope" in response.headers.get("www-authenticate", "")):
        from .oauth.session import Challenge  # loaded already: ``auth`` comes from that module

        return Challenge(status, tuple(response.raw_headers))
    return None


class HttpDownstream:
    """One downstream server over Streamable HTTP; see the module docstring."""

    def __init__(
        self,
        *,
        downstream: int,
        server: str,
        spec: ServerSpec,
        max_message_bytes: int,
        emit: Emit,
        queue_size: int = 1024,
        auth: httpx.Auth | None = None,
    ) -> None:
        self.downstream = downstream
        self.server = server
        self._where = host_and_port(spec.url or "")
        # Parsed once: httpx would parse a string again for every request.
        self._url: httpx.URL | None = httpx.URL(spec.url) if spec.url else None
        # Configured headers (Authorization, say) go on every request; the
        # protocol's own headers are set per request and win over them.
        self._base_headers = {name.lower(): value for name, value in spec.headers.items()}
        self._base_headers["content-type"] = "application/json"
        self._max_message_bytes = max_message_bytes
        self._auth = auth
        self._emit_event = emit
        #: Each message, and whether it is a request (POSTed concurrently).
        self._queue_in, self._queue_out = trio.open_memory_channel[tuple[bytes, bool]](queue_size)
        self._scope = trio.CancelScope()
        self._stopped = False
        self._failure: str | None = None
        #: A message over the limit was reported: deliver nothing more.
        self._too_large = False
        self._client: httpx.AsyncClient | None = None
        #: POSTs of a plain HTTP server go by this one (``None``: by ``_client``).
        self._lean: LeanClient | None = None
        #: Where the lean client gets the OAuth token to send (``auth``'s own), when there is ``auth``.
        self._tokens: TokenSource | None = None
        self._nursery: trio.Nursery | None = None
        #: The current MCP session id, and the protocol version it speaks.
        self.session: str | None = None
        self._protocol: str | None = None
        #: Stateless-era requests in flight, by wire id: cancelling one closes its response stream.
        self._stateless: dict[int, trio.CancelScope] = {}
        #: A stateless-era request was sent on this connection (its cancellations are never POSTed).
        self._spoke_stateless = False
        self.finished = trio.Event()
        """Set when :meth:`run` is over (the session is deleted, the pool closed)."""

    def send_nowait(self, data: bytes, *, expects_answer: bool) -> None:
        """Queue one message (the core's encoded bytes) for the server.

        ``expects_answer``: a request, POSTed in a task of its own (see the
        module docstring); anything else is POSTed in order.

        Raises:
            trio.WouldBlock: the queue is full (the server does not keep up).
            trio.BrokenResourceError: the downstream is gone.
        """
        self._queue_in.send_nowait((data, expects_answer))

    def stop(self, kill: bool = False) -> None:
        """End the session in the background; report nothing from now on.

        ``kill`` (a server declared hung) changes nothing here: cancelling is
        already immediate, and the DELETE that ends the session is bounded.
        """
        self._stopped = True
        self._scope.cancel()

    async def run(self) -> None:
        """Serve the connection until :meth:`stop` or a transport failure, which is reported."""
        try:
            await self._run()
        finally:
            self._queue_out.close()
            self.finished.set()
        if self._failure is not None:
            await self._emit(DownstreamExited(now=trio.current_time(), downstream=self.downstream, reason=self._failure))

    async def _emit(self, event: Event) -> None:
        if not self._stopped:
            await self._emit_event(event)

    def _fail(self, reason: str) -> None:
        """Give up on the connection; the first reason is the one reported."""
        if self._failure is None and not self._stopped:
            self._failure = reason
            _log.warning(f"server connection failed: {reason}", extra={"fields": {"server": self.server}})
        self._scope.cancel()

    async def _run(self) -> None:
        if self._url is None:
            self._failure = "no url configured"
            return
        timeout = httpx.Timeout(None, connect=CONNECT_TIMEOUT_S)
        limits = httpx.Limits(max_connections=MAX_CONNECTIONS, max_keepalive_connections=KEEPALIVE_CONNECTIONS)
        tokens = getattr(self._auth, "session", None)
        self._tokens = tokens if isinstance(tokens, TokenSource) else None
        if usable(self._url) and (self._auth is None or self._tokens is not None):
            # Plain HTTP: POSTs go by the lean client (see its module for why).
            self._lean = LeanClient(self._url, max_connections=MAX_CONNECTIONS, connect_timeout=CONNECT_TIMEOUT_S)
        async with (
            httpx.AsyncClient(auth=self._auth, timeout=timeout, limits=limits, follow_redirects=False) as client,
            self._lean or nullcontext(),
        ):
            self._client = client
            try:
                with self._scope:
                    async with trio.open_nursery() as nursery:
                        self._nursery = nursery
                        async for data, expects_answer in self._queue_out:
                            if expects_answer:
                                nursery.start_soon(self._post, data)
                            elif not self._cancelled_stateless(data):
                                await self._post(data)
            finally:
                with trio.CancelScope(shield=True):
                    await self._end_session(client)

    # -- POST: one message each ----------------------------------------------

    def _headers(self, session: str | None, accept: str) -> dict[str, str]:
        headers = dict(self._base_headers)
        headers["accept"] = accept
        if session is not None:
            headers["mcp-session-id"] = session
        if self._protocol is not None:
            headers["mcp-protocol-version"] = self._protocol
        return headers

    def _stream_headers(self, session: str | None, parser: SseParser) -> dict[str, str]:
        """The headers of a GET that opens an event stream, resuming where ``parser`` left off."""
        headers = self._headers(session, _ACCEPT_SSE)
        if parser.last_event_id is not None:
            headers["last-event-id"] = parser.last_event_id
        return headers

    def _stateless_route(self, data: bytes) -> tuple[int, dict[str, str]] | None:
        """The wire id and headers of a request in the stateless era's envelope, else ``None``."""
        if _STATELESS_MARK not in data:
            return None
        msg = decode(data)
        headers = routing_headers(msg) if isinstance(msg, Request) and isinstance(msg.id, int) else None
        if headers is None:
            return None
        assert isinstance(msg, Request) and isinstance(msg.id, int)
        return msg.id, headers

    def _cancelled_stateless(self, data: bytes) -> bool:
        """A ``notifications/cancelled`` on a stateless connection: close that request's stream instead; True when so."""
        if not self._spoke_stateless or self.session is not None or _CANCELLED_MARK not in data:
            return False
        msg = decode(data)
        if not isinstance(msg, Notification) or msg.method != "notifications/cancelled":
            return False
        wire_id = msg.params.get("requestId")
        scope = self._stateless.get(wire_id) if isinstance(wire_id, int) else None
        if scope is not None:
            scope.cancel()
        return True  # that era has no notification for it: a request already answered needs nothing

    async def _post(self, data: bytes) -> None:
        assert self._client is not None and self._url is not None
        route = self._stateless_route(data)
        if route is not None:
            self._spoke_stateless = True
            wire_id, routing = route
            headers = {**self._base_headers, "accept": _ACCEPT_POST, **routing}
            with trio.CancelScope() as scope:
                self._stateless[wire_id] = scope
                try:
                    await self._exchange(data, None, headers)
                finally:
                    del self._stateless[wire_id]
            return
        session = self.session
        await self._exchange(data, session, self._headers(session, _ACCEPT_POST))

    async def _exchange(self, data: bytes, session: str | None, headers: dict[str, str]) -> None:
        """POST one message and hand on what comes back."""
        assert self._client is not None and self._url is not None
        try:
            if self._lean is not None:
                await self._lean_exchange(data, session, headers)
                return
            async with self._client.stream("POST", self._url, content=data, headers=headers) as response:
                await self._on_post_response(data, session, response)
        except httpx.TransportError as exc:
            _log.debug(f"POST failed: {exc!r}", extra={"fields": {"server": self.server}})
            self._fail(describe_failure(exc, self._where))
        except (TooLarge, SseTooLarge):
            await self._report_too_large()
        except OAuthProblem as exc:
            await self._unauthorized(data, exc)

    async def _lean_exchange(self, data: bytes, session: str | None, headers: dict[str, str]) -> None:
        """POST one message by the lean client, with the OAuth token of ``auth`` as its flow would send it.

        The flow of ``oauth.session.DownstreamAuth``: the current token (if
        any); on a challenge, a token obtained for it and one retry; a second
        challenge is an :class:`OAuthProblem`.
        """
        assert self._lean is not None and self._url is not None
        tokens = self._tokens
        token = await tokens.current() if tokens is not None else None
        for attempt in range(2):
            sent = headers if token is None else {**headers, "authorization": f"Bearer {token}"}
            async with self._lean.stream("POST", self._url, content=data, headers=sent) as response:
                challenge = _challenge(response) if tokens is not None else None
                if challenge is None:
                    await self._on_post_response(data, session, response)
                    return
                await read_body(response, ERROR_BODY_BYTES, truncate=True)  # read, so the connection is kept
            if attempt:
                raise OAuthProblem(
                    f"the server refused the token it was just given (HTTP {challenge.status} again); gave up after one retry",
                    login=False,
                )
            assert tokens is not None
            token = await tokens.obtain(challenge, token, person=True)

    async def _unauthorized(self, data: bytes | None, problem: OAuthProblem) -> None:
        """No token the server takes: the core fails what depends on the connection, with why."""
        event = DownstreamUnauthorized(
            now=trio.current_time(), downstream=self.downstream, data=data, reason=problem.reason, login=problem.login
        )
        await self._emit(event)

    async def _on_post_response(self, data: bytes, session: str | None, response: httpx.Response | LeanResponse) -> None:
        status = response.status_code
        minted = response.headers.get("mcp-session-id") if session is None and self.session is None else None
        if minted and status < 300:
            self.session = minted
            # The GET stream opens once the initialize result (and with it
            # the protocol version for its headers) has been read.
            await self._on_answer(data, session, response)
            if self.session == minted:
                self._start_listening(minted)
            return
        await self._on_answer(data, session, response)

    async def _on_answer(self, data: bytes, session: str | None, response: httpx.Response | LeanResponse) -> None:
        status = response.status_code
        if status == 404 and session is not None:
            # MCP 2025-11-25, basic/transports, "Session Management": the
            # session is gone and the message was not processed.
            if self.session == session:
                self.session = None
                self._protocol = None
            await self._emit(DownstreamSessionLost(now=trio.current_time(), downstream=self.downstream, data=data))
            return
        if status >= 300:
            body = await read_body(response, ERROR_BODY_BYTES, truncate=True)
            await self._emit(
                DownstreamHttpError(now=trio.current_time(), downstream=self.downstream, data=data, status=status, body=body)
            )
            return
        if content_type(response) == _ACCEPT_SSE:
            await self._read_response_stream(response, request_id(data))
            return
        body = await read_body(response, self._max_message_bytes)
        if body.strip():  # 202 Accepted has none
            await self._deliver(body)

    async def _report_too_large(self) -> None:
        """A message over the limit: tell the core (once), which stops the connection."""
        if self._too_large:
            return
        self._too_large = True
        _log.warning(f"sent a message over {self._max_message_bytes} bytes", extra={"fields": {"server": self.server}})
        await self._emit(DownstreamMessageReceived(now=trio.current_time(), downstream=self.downstream, data=b"", too_large=True))

    async def _deliver(self, message: bytes, related: int | None = None) -> None:
        if self._too_large:
            # The lost message answered some call we can no longer name, so
            # nothing after it can be trusted to line up; the core is stopping us.
            return
        if self._protocol is None and b'"protocolVersion"' in message:  # an initialize result, perhaps: parsed only then
            self._protocol = initialize_version(message)
        await self._emit(
            DownstreamMessageReceived(now=trio.current_time(), downstream=self.downstream, data=message, related=related)
        )

    async def _deliver_event(self, event: SseEvent, related: int | None = None) -> bool:
        """Hand on one SSE event's message (``related``: the request whose response stream it came on); True if there was one."""
        # Priming events carry an id and empty data; other event types are not MCP.
        if event.event != "message" or not event.data.strip():
            return False
        await self._deliver(event.data, related)
        return True

    async def _read_response_stream(self, response: httpx.Response | LeanResponse, related: int | None) -> None:
        # What a server sends on a request's stream belongs to that request (its
        # sampling or elicitation included): the core learns which by ``related``.
        parser = SseParser(self._max_message_bytes)
        last: bytes | None = None
        try:
            async for chunk in response.aiter_bytes():
                for event in parser.feed(chunk):
                    if await self._deliver_event(event, related):
                        last = event.data
        except httpx.TransportError as exc:
            # The answer comes last: a stream that breaks after it lost nothing
            # (a server that dies between its answer and the stream's end).
            if last is not None and is_response(last):
                return
            if parser.last_event_id is None:
                raise
            _log.info(f"response stream broke ({type(exc).__name__}); resuming", extra={"fields": {"server": self.server}})
        else:
            # Without event ids the server cannot resume, and a stream it
            # ended itself ended after the answer.
            if parser.last_event_id is None or (last is not None and is_response(last)):
                return
        await self._resume(parser, related)

    async def _resume(self, parser: SseParser, related: int | None) -> None:
        """Reopen a broken response stream by GET with ``Last-Event-ID`` until the answer comes."""
        assert self._client is not None and self._url is not None
        session = self.session
        for _ in range(RESUME_ATTEMPTS):
            await trio.sleep(parser.retry / 1000 if parser.retry is not None else LISTEN_RETRY_S)
            try:
                async with self._client.stream("GET", self._url, headers=self._stream_headers(session, parser)) as response:
                    if response.status_code != 200 or content_type(response) != _ACCEPT_SSE:
                        break
                    async for chunk in response.aiter_bytes():
                        for event in parser.feed(chunk):
                            if await self._deliver_event(event, related) and is_response(event.data):
                                return
            except httpx.TransportError:
                continue
            except OAuthProblem as exc:
                await self._unauthorized(None, exc)
                return
        self._fail("lost the answer to a request when its event stream broke")

    # -- the session and its GET stream -----------------------------------------

    def _start_listening(self, session: str) -> None:
        assert self._nursery is not None
        self._nursery.start_soon(self._listen, session)

    async def _listen(self, session: str) -> None:
        """Keep the GET stream for server-sent messages open while ``session`` lasts."""
        assert self._client is not None and self._url is not None
        parser = SseParser(self._max_message_bytes)
        pause = LISTEN_RETRY_S
        while self.session == session:
            try:
                async with self._client.stream("GET", self._url, headers=self._stream_headers(session, parser)) as response:
                    status = response.status_code
                    if status in (405, 409):
                        return  # no stream offered, or another one is already open
                    if status == 404:
                        if self.session == session:
                            self.session = None
                            self._protocol = None
                            await self._emit(
                                DownstreamSessionLost(now=trio.current_time(), downstream=self.downstream, data=None)
                            )
                        return
                    if status == 401:
                        await self._emit(
                            DownstreamHttpError(now=trio.current_time(), downstream=self.downstream, data=None, status=401)
                        )
                        return
                    if status == 200 and content_type(response) == _ACCEPT_SSE:
                        parser = fresh_parser(parser, self._max_message_bytes)
                        async for chunk in response.aiter_bytes():
                            for event in parser.feed(chunk):
                                if await self._deliver_event(event):
                                    pause = LISTEN_RETRY_S
            except httpx.TransportError:
                pass  # the server is away; POSTs will say so if it stays away
            except OAuthProblem as exc:
                await self._unauthorized(None, exc)
                return
            except SseTooLarge:
                await self._report_too_large()
                return
            await trio.sleep(parser.retry / 1000 if parser.retry is not None else pause)
            pause = min(pause * 2, LISTEN_RETRY_MAX_S)

    async def _end_session(self, client: httpx.AsyncClient) -> None:
        """DELETE the session (MCP 2025-11-25, "Session Management"); bounded, errors ignored."""
        session, self.session = self.session, None
        if session is None or self._url is None:
            return
        with trio.move_on_after(STOP_S):
            try:
                await client.delete(self._url, headers=self._headers(session, _ACCEPT_POST))
            except (httpx.HTTPError, OAuthProblem):
                pass
