"""The Streamable HTTP front: an h11 server on trio around the same core as stdio.

MCP 2025-11-25, basic/transports, "Streamable HTTP". The endpoint is ``/mcp``;
``/health``, ``/ready`` and ``/metrics`` sit beside it.

Theory of operation. One task per TCP connection parses HTTP/1.1 with h11
(keep-alive, one request at a time) and asks :mod:`lockgate.core.http` what
to do with each request: every status code and header comes from there. The
shell only moves bytes. (Keep-alive answers with a body are written without
h11, which costs more than building them; the next request then gets a fresh
h11 parser. SSE streams and everything else go through h11.)

- ``initialize`` without a session: mint a session id from :mod:`secrets`,
  register it with the :class:`~.runtime.Runtime` and feed ``ClientOpened``
  then the message; the answer carries ``Mcp-Session-Id``, or, when the core
  refused the initialize, the session is closed again.
- other POSTs: feed the message and answer 202 (notifications, responses),
  the response as JSON, or an SSE stream that carries the request's
  notifications and then its response (see :mod:`.http_sessions`).
- GET opens the session's own SSE stream, or resumes a lost one from
  ``Last-Event-ID``; DELETE feeds ``ClientClosed``.

Bad peers are bounded (the rules are in :mod:`lockgate.core.http`, the
bookkeeping in :mod:`.http_connections`): a request head must arrive whole
within ``GATEWAY_HTTP_HEAD_TIMEOUT`` of its first byte and its body within
a time scaled to its size, whatever the pace; a keep-alive connection may
wait ``read_timeout`` for its next request; at ``GATEWAY_MAX_CONNECTIONS``
(or ``GATEWAY_MAX_CONNECTIONS_PER_ADDRESS`` from one address) a newcomer
closes the oldest idle connection, else the slowest request under way, and
gets 503 only when every connection is busy. A head over 100 fields or
64 KiB gets 431, a body over ``GATEWAY_MAX_MESSAGE_BYTES`` 413 without
being read to the end, ambiguous framing 400; each closes the connection.
A failure inside the shell while serving one request (a bug) is logged,
answered 500 if nothing was sent yet, and closes that connection alone.

Shutdown (SIGTERM, SIGINT, or :meth:`HttpServer.shutdown`): stop accepting,
close idle connections, let POSTs in flight finish for up to
``GATEWAY_SHUTDOWN_GRACE`` seconds, then feed ``ShutdownRequested`` (the core
fails what is left), end the SSE streams and stop every downstream.
"""

from __future__ import annotations

import secrets
import signal
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from functools import partial
from typing import Any, Protocol

import h11
import trio

from lockgate.core import (
    __version__,
    ClientClosed,
    ClientMessageReceived,
    ClientOpened,
    encode,
    GatewayStarted,
    SendToClient,
    Settings,
    ShutdownRequested,
)
from lockgate.core.http import (
    DEFAULT_IDLE_TIMEOUT,
    GET_STREAM,
    MAX_HEAD_BYTES,
    ConnectionLimits,
    HttpPolicy,
    Post,
    Reject,
    Route,
    StreamKey,
    bad_http,
    body_timeout,
    busy,
    cancelled_response,
    check_head,
    check_head_size,
    check_post,
    duplicate_request,
    health_body,
    initialize_succeeded,
    internal_error,
    json_body,
    open_to_any_host,
    ops_status,
    session_gone,
    sse_headers,
    stream_conflict,
    stream_takeover,
    too_large,
    wants_priming,
)
from lockgate.core.http import wants_prometheus

from .audit import utc_timestamp
from .http_connections import HUNG_UP, Closed, ConnectionTable, Link, hung_up, linger, receive_some, watch_hangup, write
from .http_sessions import HttpSession
from .logs import NOTICE, get_logger
from .record import Recorder, WireTap
from .reload import ReloadSource, watch_config
from .runtime import ClientSend, Core, Runtime

__all__ = ["HttpServer", "serve_http"]

_log = get_logger("http")

#: Session ids: 32 random bytes, URL-safe base64 (256 bits, visible ASCII as the spec asks).
_SESSION_BYTES = 32
#: Status lines of the responses _send writes by hand; h11 too leaves the reason phrase out.
_STATUS_LINES = {status: b"HTTP/1.1 %d \r\n" % status for status in (200, 202)}
#: Statuses that carry no body (nor Content-Length): always sent through h11.
_NO_BODY = frozenset({204, 304})
#: The Prometheus text exposition format, version 0.0.4.
PROMETHEUS_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class GatewayCore(Core, Protocol):
    """What the HTTP shell reads of the gateway besides ``handle``: a pure accessor."""

    def readiness(self) -> dict[str, Any]: ...

    def metrics_json(self, now: float) -> dict[str, Any]: ...

    def metrics_prometheus(self, now: float) -> str: ...


def _tapped(send: ClientSend, tap: WireTap) -> ClientSend:
    """``send``, with each message also written to a recorded session's wire transcript."""

    async def send_and_record(action: SendToClient) -> None:
        tap("s2c", encode(action.message))
        await send(action)

    return send_and_record


class HttpServer:
    """Serve the MCP endpoint for one :class:`~.runtime.Runtime`; see the module docstring."""

    def __init__(
        self,
        core: GatewayCore,
        runtime: Runtime,
        policy: HttpPolicy,
        *,
        limits: ConnectionLimits = ConnectionLimits(),
        shutdown_grace: float = 10.0,
        recorder: Recorder | None = None,
    ) -> None:
        self._core = core
        self._recorder = recorder
        #: Wire taps of recorded sessions (``--record``), by session id.
        self._taps: dict[str, WireTap] = {}
        self._runtime = runtime
        self._policy = policy
        self._limits = limits
        self._table = ConnectionTable(limits)
        self._shutdown_grace = shutdown_grace
        self._sessions: dict[str, HttpSession] = {}
        #: Every connection with a task, refused ones included.
        self._connections = 0
        self._in_flight = 0
        self._idle = trio.Event()
        self._idle.set()
        self._started_at = trio.current_time()

    # -- connections -----------------------------------------------------------

    @property
    def _closing(self) -> bool:
        return self._table.closing

    async def handle_connection(self, stream: trio.SocketStream) -> None:
        """Serve one TCP connection until it closes; never raises (but for cancellation)."""
        self._connections += 1
        link = Link.accepted(stream)
        try:
            if self._table.admit(link):
                await self._serve(link)
            else:
                await self._refuse(link)
        except h11.RemoteProtocolError as exc:
            _log.debug(f"HTTP protocol error: {exc}")
        except Exception as exc:
            # The last line of defence: a bug met while serving one request
            # must close that connection, not the server's nursery with it.
            if not hung_up(exc):
                _log.error("failed while serving an HTTP request; closing its connection", exc_info=exc,
                           extra={"fields": {"peer": link.address}})
                await self._answer_failure(link)
        finally:
            self._connections -= 1
            self._table.remove(link)
            with trio.CancelScope(shield=True), trio.move_on_after(1):
                await stream.aclose()

    async def _answer_failure(self, link: Link) -> None:
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

    async def _refuse(self, link: Link) -> None:
        """No room: read the request head for a moment, answer 503, close."""
        conn = _parser()
        with trio.move_on_after(min(self._limits.head_timeout, 2.0)):
            while (event := conn.next_event()) is h11.NEED_DATA:
                conn.receive_data(await receive_some(link.stream))
            if isinstance(event, h11.Request):
                await self._send_reject(conn, link, busy())

    async def _serve(self, link: Link) -> None:
        conn = _parser()
        while True:
            try:
                event = await self._next_event(conn, link)
            except h11.RemoteProtocolError as exc:
                if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                    self._table.busy(link)
                    await self._send_reject(conn, link, bad_http(exc.error_status_hint, str(exc)))
                return
            if not isinstance(event, h11.Request):
                return  # ConnectionClosed
            link.responded = False
            await self._handle(conn, link, event)
            if conn.our_state is h11.SEND_RESPONSE and conn.their_state is h11.DONE:
                # Answered by hand (see _send): h11 never saw the response, so
                # the next request gets a fresh parser with the bytes already read.
                if self._closing:
                    return
                conn = _next_parser(conn)
            elif conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                return
            elif conn.their_state is not h11.DONE:
                return  # we answered before reading the whole body
            else:
                conn.start_next_cycle()
            self._table.idle(link)
            if conn.trailing_data[0]:
                # Pipelined: the next request's bytes are in, so its head deadline runs now.
                self._table.start(link, trio.current_time())

    async def _next_event(self, conn: h11.Connection, link: Link) -> Any:
        """The next h11 event, reading as needed under the link's deadlines (see :meth:`ConnectionTable.receive`)."""
        while True:
            event = conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            conn.receive_data(await self._table.receive(link))

    async def _read_body(self, conn: h11.Connection, link: Link) -> bytes | None:
        """The request body, or ``None`` once it passes the size limit; the request is then busy."""
        parts: list[bytes] = []
        size = 0
        while True:
            event = await self._next_event(conn, link)
            if isinstance(event, h11.Data):
                size += len(event.data)
                if size > self._policy.max_body_bytes:
                    self._table.busy(link)
                    return None
                parts.append(event.data)
            elif isinstance(event, h11.EndOfMessage):
                self._table.busy(link)
                return b"".join(parts)
            else:
                raise Closed

    # -- requests ----------------------------------------------------------------

    async def _handle(self, conn: h11.Connection, link: Link, request: h11.Request) -> None:
        too_large_head = check_head_size(len(request.headers), _head_size(request))
        if too_large_head is not None:
            self._table.busy(link)
            await self._send_reject(conn, link, too_large_head)
            return
        headers: dict[str, str] = {}
        for raw_name, raw_value in request.headers:
            name = raw_name.decode("latin-1")
            value = raw_value.decode("latin-1")
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        session_id = headers.get("mcp-session-id")
        decision = check_head(
            request.method.decode("ascii", "replace"),
            request.target.decode("latin-1"),
            headers,
            self._policy,
            session_known=session_id is not None and session_id in self._sessions,
        )
        seconds = body_timeout(headers.get("content-length"), self._policy, self._limits)
        self._table.head_read(link, trio.current_time(), seconds)
        if isinstance(decision, Reject):
            # Read a small body first: closing on unread input would reset the
            # connection and could destroy the answer before the client reads it.
            # Unless the framing itself is in doubt: then nothing more is read.
            fits = not decision.close and (
                conn.their_state is not h11.SEND_BODY or await self._read_body(conn, link) is not None
            )
            self._table.busy(link)
            await self._send_reject(conn, link, decision, close=not fits)
            return
        route = decision
        # Read the whole request (for GET and friends, its empty body) first:
        # answering before h11 saw its end would cost the keep-alive connection.
        body = await self._read_body(conn, link)
        if body is None:
            await self._send_reject(conn, link, too_large(self._policy, route.headers), close=True)
            return
        match route.kind:
            case "post":
                self._in_flight += 1
                self._idle = trio.Event() if self._in_flight == 1 else self._idle
                try:
                    await self._post(conn, link, route, body)
                finally:
                    self._in_flight -= 1
                    if self._in_flight == 0:
                        self._idle.set()
            case "get":
                await self._get(conn, link, route)
            case "delete":
                assert route.session is not None
                await self.end_session(route.session)
                await self._send(conn, link, 200, list(route.headers), b"")
            case "preflight":
                await self._send(conn, link, 204, list(route.headers), b"")
            case "health":
                uptime = trio.current_time() - self._started_at
                await self._send_json(conn, link, 200, route, health_body(__version__, uptime))
            case "ready":
                readiness = self._core.readiness()
                await self._send_json(conn, link, ops_status(readiness), route, json_body(readiness))
            case "metrics":
                now = trio.current_time()
                if wants_prometheus(headers.get("accept"), route.query):
                    text = self._core.metrics_prometheus(now).encode("utf-8")
                    await self._send(conn, link, 200, [("content-type", PROMETHEUS_TYPE), *route.headers], text)
                else:
                    metrics = {"timestamp": utc_timestamp(), **self._core.metrics_json(now)}
                    await self._send_json(conn, link, 200, route, json_body(metrics))

    async def _post(self, conn: h11.Connection, link: Link, route: Route, body: bytes) -> None:
        plan = check_post(body, route)
        if isinstance(plan, Reject):
            await self._send_reject(conn, link, plan)
            return
        if plan.action == "initialize":
            await self._initialize(conn, link, route, plan, body)
            return
        assert route.session is not None
        session = self._sessions.get(route.session)
        if session is None:
            await self._send_reject(conn, link, session_gone(route.headers))
            return
        if plan.action == "accept":
            await self._feed_message(session, body)
            if plan.cancels is not None:
                session.cancel(plan.cancels, cancelled_response(plan.cancels))
            await self._send(conn, link, 202, list(route.headers), b"")
            return
        if session.in_flight(plan.request_id):
            await self._send_reject(conn, link, duplicate_request(plan.request_id, route.headers))
            return
        if plan.action == "json":
            waiter = session.wait_json(plan.request_id)
            await self._feed_message(session, body)
            await waiter.done.wait()
            if waiter.message is None:
                await self._send_reject(conn, link, session_gone(route.headers))
            else:
                await self._send_json(conn, link, 200, route, waiter.encoded(), session.id)
            return
        key: StreamKey = ("post", plan.request_id)
        session.sse_requests.add(plan.request_id)
        send, receive = session.attach(key)
        first = [session.events.add(key, None)] if wants_priming(session.protocol_version) else []
        await self._feed_message(session, body)
        await self._stream(conn, link, session, key, send, receive, route, first)

    async def _initialize(
        self, conn: h11.Connection, link: Link, route: Route, plan: Post, body: bytes
    ) -> None:
        session = HttpSession(id=secrets.token_urlsafe(_SESSION_BYTES))
        self._sessions[session.id] = session
        send: ClientSend = session.send
        if self._recorder is not None:
            tap = self._taps[session.id] = self._recorder.wire(session.id)
            send = _tapped(session.send, tap)
        self._runtime.register_client(session.id, send, lambda: void(self._forget(session.id)))
        waiter = session.wait_json(plan.request_id)
        now = trio.current_time()
        await self._runtime.feed(ClientOpened(now=now, client=session.id, transport="http"))
        await self._feed_message(session, body, now)
        await waiter.done.wait()
        message = waiter.message
        if message is None:
            await self._send_reject(conn, link, session_gone(route.headers))
            return
        if initialize_succeeded(message):
            version = message["result"].get("protocolVersion")
            session.protocol_version = version if isinstance(version, str) else None
            await self._send_json(conn, link, 200, route, waiter.encoded(), session.id)
        else:
            await self.end_session(session.id)
            await self._send_json(conn, link, 200, route, waiter.encoded())

    async def _get(self, conn: h11.Connection, link: Link, route: Route) -> None:
        assert route.session is not None
        session = self._sessions.get(route.session)
        if session is None:
            await self._send_reject(conn, link, session_gone(route.headers))
            return
        key: StreamKey = GET_STREAM
        frames: list[bytes] = []
        replay = session.events.replay(route.last_event_id) if route.last_event_id else None
        if replay is not None:
            key = replay.stream
            frames.extend(replay.events)
            if key != GET_STREAM and (replay.finished or key[1] not in session.sse_requests):
                # That request is answered (or forgotten): replay and end.
                await self._send_stream_once(conn, link, session, route, frames)
                return
        match stream_takeover(key in session.streams, replay is not None):
            case "conflict":
                await self._send_reject(conn, link, stream_conflict(route.headers))
                return
            case "replace":
                session.streams.pop(key).close()
            case "open":
                pass
        send, receive = session.attach(key)
        if wants_priming(session.protocol_version):
            frames.insert(0, session.events.add(key, None))
        await self._stream(conn, link, session, key, send, receive, route, frames)

    async def _stream(
        self,
        conn: h11.Connection,
        link: Link,
        session: HttpSession,
        key: StreamKey,
        send: trio.MemorySendChannel[bytes],
        receive: trio.MemoryReceiveChannel[bytes],
        route: Route,
        first: list[bytes],
    ) -> None:
        """Answer with an SSE stream: ``first``, then every frame pushed for ``key`` until it ends."""
        hung_up = trio.Event()
        try:
            head = conn.send(h11.Response(status_code=200, headers=list(sse_headers(session.id, route.headers))))
            link.responded = True
            await link.stream.send_all(head + b"".join(conn.send(h11.Data(data=f)) for f in first))
            async with trio.open_nursery() as nursery:
                # A client that hangs up is noticed at once, not at the next event.
                nursery.start_soon(watch_hangup, link.stream, nursery.cancel_scope, hung_up)
                async for frame in receive:
                    await link.stream.send_all(conn.send(h11.Data(data=frame)))
                nursery.cancel_scope.cancel()
            if hung_up.is_set():
                raise Closed
            await link.stream.send_all(conn.send(h11.EndOfMessage()))
        finally:
            session.detach(key, send)
        if self._closing:
            raise Closed

    async def _send_stream_once(
        self, conn: h11.Connection, link: Link, session: HttpSession, route: Route, frames: list[bytes]
    ) -> None:
        headers = list(sse_headers(session.id, route.headers))
        data = conn.send(h11.Response(status_code=200, headers=headers))
        data += b"".join(conn.send(h11.Data(data=f)) for f in frames)
        await write(link, data + conn.send(h11.EndOfMessage()))

    # -- sessions ----------------------------------------------------------------

    async def _feed_message(self, session: HttpSession, body: bytes, now: float | None = None) -> None:
        tap = self._taps.get(session.id)
        if tap is not None:
            tap("c2s", body)
        now = trio.current_time() if now is None else now
        await self._runtime.feed(ClientMessageReceived(now=now, client=session.id, data=body))

    async def end_session(self, session_id: str) -> None:
        """End a session from this side (DELETE, failed initialize): tell the core."""
        if self._forget(session_id):
            await self._runtime.feed(ClientClosed(now=trio.current_time(), client=session_id))

    def _forget(self, session_id: str) -> bool:
        """Drop a session and wake whatever waits on it; the core's ``CloseClient`` lands here too."""
        session = self._sessions.pop(session_id, None)
        self._taps.pop(session_id, None)
        if session is None:
            return False
        session.close()
        return True

    # -- responses ---------------------------------------------------------------

    async def _send_reject(
        self, conn: h11.Connection, link: Link, reject: Reject, *, close: bool = False
    ) -> None:
        headers = list(reject.headers)
        close = close or reject.close
        if close and ("connection", "close") not in headers:
            headers.append(("connection", "close"))
        # Through h11: a reject may answer HEAD, HTTP/1.0 or a half-read request.
        await self._send_h11(conn, link, reject.status, headers, reject.body)
        if close:
            await linger(link.stream)

    async def _send_json(
        self,
        conn: h11.Connection,
        link: Link,
        status: int,
        route: Route,
        body: bytes,
        session_id: str | None = None,
    ) -> None:
        headers = [("content-type", "application/json")]
        if session_id is not None:
            headers.append(("mcp-session-id", session_id))
        await self._send(conn, link, status, [*headers, *route.headers], body)

    async def _send(
        self, conn: h11.Connection, link: Link, status: int, headers: list[tuple[str, str]], body: bytes
    ) -> None:
        """Answer a routed request (never HEAD: :func:`check_head` refuses it) with a whole body."""
        if self._closing and conn.their_state is h11.DONE:
            headers = [*headers, ("connection", "close")]
        # The common case, a keep-alive request read to its end (h11 says DONE,
        # not MUST_CLOSE, only then), is written by hand: building and checking
        # an h11.Response costs more than the rest of the shell's work per call.
        # h11 still parsed the request; _serve gives the next one a new parser.
        if conn.our_state is h11.SEND_RESPONSE and conn.their_state is h11.DONE and status not in _NO_BODY:
            await write(link, _response_bytes(status, headers, body))
            return
        await self._send_h11(conn, link, status, headers, body)

    async def _send_h11(
        self, conn: h11.Connection, link: Link, status: int, headers: list[tuple[str, str]], body: bytes
    ) -> None:
        if self._closing and conn.their_state is h11.DONE and ("connection", "close") not in headers:
            headers = [*headers, ("connection", "close")]
        head = h11.Response(status_code=status, headers=[*headers, ("content-length", str(len(body)))])
        data = conn.send(head)
        if body:
            data += conn.send(h11.Data(data=body))
        await write(link, data + conn.send(h11.EndOfMessage()))

    # -- shutdown ----------------------------------------------------------------

    async def shutdown(self) -> None:
        """Stop serving: idle connections close, POSTs in flight get ``shutdown_grace`` to finish.

        Then the core hears ``ShutdownRequested`` and every SSE stream ends.
        The caller stops accepting connections first.
        """
        self._table.shut()
        with trio.move_on_after(self._shutdown_grace):
            await self._idle.wait()
        if self._in_flight:
            _log.warning(f"{self._in_flight} request(s) still running after the shutdown grace period")
        await self._runtime.feed(ShutdownRequested(now=trio.current_time()))
        # The core now fails what is left; let those answers reach their POSTs.
        with trio.move_on_after(2):
            await self._idle.wait()
        for session in self._sessions.values():
            session.close_streams()

    def statistics(self) -> dict[str, int]:
        """Counts for operators and tests: connections, sessions, requests in flight.

        ``connections`` counts every connection with a task, refused ones
        included; the rest come from :meth:`.ConnectionTable.statistics`.
        """
        return {
            "connections": self._connections,
            "sessions": len(self._sessions),
            "requests_in_flight": self._in_flight,
            **self._table.statistics(),
        }


async def serve_http(
    core: GatewayCore,
    settings: Settings,
    *,
    host: str | None = None,
    port: int | None = None,
    handle_signals: bool = True,
    read_timeout: float = DEFAULT_IDLE_TIMEOUT,
    environ: Mapping[str, str] | None = None,
    on_listening: Callable[[str], None] | None = None,
    stop: trio.Event | None = None,
    reload: ReloadSource | None = None,
    recorder: Recorder | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``core`` over Streamable HTTP until SIGTERM/SIGINT (or ``stop`` is set).

    With ``reload``, the configuration files are watched and SIGHUP reloads
    them (see :mod:`.reload`), as for stdio. With ``recorder`` (``--record``;
    ``core`` must then be ``recorder.wrap(...)``), each session's wire
    transcript is written too.

    Reports the bound port through ``task_status`` and calls ``on_listening``
    with the endpoint URL once it accepts connections. ``read_timeout`` is
    how long a connection may wait for its next request, or a request for
    its next bytes; the other connection limits come from ``settings``.
    """
    host = settings.http_host if host is None else host
    port = settings.http_port if port is None else port
    listeners = await trio.open_tcp_listeners(port, host=host)
    bound = listeners[0].socket.getsockname()[1]
    policy = HttpPolicy(
        host=host,
        port=bound,
        allowed_origins=frozenset(settings.cors_origins),
        allowed_hosts=frozenset(h.lower() for h in settings.allowed_hosts),
        max_body_bytes=settings.max_message_bytes,
    )
    limits = ConnectionLimits(
        max_connections=settings.max_connections,
        max_per_address=settings.max_connections_per_address,
        idle_timeout=read_timeout,
        head_timeout=settings.http_head_timeout,
    )
    runtime = Runtime(core, settings=settings, environ=environ)
    server = HttpServer(core, runtime, policy, limits=limits, shutdown_grace=settings.shutdown_grace, recorder=recorder)
    stop = stop if stop is not None else trio.Event()
    url = f"http://{_url_host(host)}:{bound}/mcp"
    with _signals(handle_signals) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(runtime.run)
            # The seed is the randomness of the `random` balancing strategy.
            await runtime.feed(GatewayStarted(now=trio.current_time(), seed=secrets.randbits(64)))
            if reload is not None:
                # After GatewayStarted: a reload must not race the eager start.
                await nursery.start(partial(watch_config, handle_sighup=handle_signals), runtime, reload)
            if signals is not None:
                nursery.start_soon(_watch_signals, signals, stop)
            async with trio.open_nursery() as connections:
                accept_scope = trio.CancelScope()

                async def accept() -> None:
                    with accept_scope:
                        await trio.serve_listeners(server.handle_connection, listeners, handler_nursery=connections)

                connections.start_soon(accept)
                _log.log(NOTICE, f"serving Streamable HTTP at {url}")
                if open_to_any_host(policy):
                    _log.warning(
                        f"bound to {host} with no GATEWAY_ALLOWED_HOSTS: any Host header is accepted; "
                        "list the names clients use to keep DNS rebinding protection"
                    )
                if on_listening is not None:
                    on_listening(url)
                task_status.started(bound)
                await stop.wait()
                accept_scope.cancel()
                for listener in listeners:
                    await listener.aclose()
                await server.shutdown()
                # Let the ended SSE responses write their last bytes.
                with trio.move_on_after(1):
                    while server.statistics()["connections"]:
                        await trio.sleep(0.01)
                connections.cancel_scope.cancel()
            await runtime.aclose(grace=settings.shutdown_grace)
            nursery.cancel_scope.cancel()


def _next_parser(conn: h11.Connection) -> h11.Connection:
    """A fresh h11 parser for the connection's next request, fed what ``conn`` read past the last one."""
    data, closed = conn.trailing_data
    fresh = _parser()
    if data:
        fresh.receive_data(data)
    if closed:
        fresh.receive_data(b"")
    return fresh


def _parser() -> h11.Connection:
    """A server-side h11 parser that buffers at most one head (more gets 431)."""
    return h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)


def _head_size(request: h11.Request) -> int:
    """Bytes of the request line and header field lines, as sent but for optional whitespace."""
    line = len(request.method) + len(request.target) + len(b"  HTTP/1.1\r\n")
    return line + sum(len(name) + len(value) + len(b": \r\n") for name, value in request.headers)


def _response_bytes(status: int, headers: list[tuple[str, str]], body: bytes) -> bytes:
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


def void(_: object) -> None:
    """Discard a value (a close callback returns nothing)."""


def _url_host(host: str) -> str:
    if host in ("", "0.0.0.0", "::"):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


@contextmanager
def _signals(enabled: bool) -> Iterator[Any]:
    if not enabled:
        yield None
        return
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        yield signals


async def _watch_signals(signals: Any, stop: trio.Event) -> None:
    async for signum in signals:
        if stop.is_set():
            _log.warning(f"received {signal.Signals(signum).name} again; still stopping")
        else:
            _log.info(f"received {signal.Signals(signum).name}; shutting down")
            stop.set()

