"""The MCP endpoint of the Streamable HTTP front: sessions, POST, GET, DELETE, and the ops routes.

MCP 2025-11-25, basic/transports, "Streamable HTTP". The endpoint is ``/mcp``;
``/health``, ``/ready`` and ``/metrics`` sit beside it.

Theory of operation. :meth:`McpEndpoint.handle` gets each request as an
:class:`~.http_exchange.Exchange` and asks :mod:`lockgate.core.http` what to
do with it: every status code and header comes from there.

- ``initialize`` without a session: register a client of the core under a
  random name with the :class:`~.runtime.Runtime` and feed ``ClientOpened``
  then the message; the answer carries ``Mcp-Session-Id``, the session's
  record sealed (:mod:`.session_ids`), or, when the core refused the
  initialize, the session is closed again.
- a request naming a session this gateway does not hold, by an id that
  opens (another gateway's, or this one's before a restart): the session is
  continued from the id, ``ClientOpened(restored=...)``, when its credential
  is the request's; any other unknown id is 404, as one that ended.
- other POSTs: feed the message and answer 202 (notifications, responses),
  the response as JSON, or an SSE stream that carries the request's
  notifications and then its response (see :mod:`.http_sessions`). The core
  refuses a request whose id is still in flight in its session (409), and
  says what ends the POST of a request the client cancelled.
- GET opens the session's own SSE stream, or resumes a lost one from
  ``Last-Event-ID``; DELETE feeds ``ClientClosed``.

Each session is one client of the core. With ``--record``, each session's
messages also go to its wire transcript (see :mod:`.record`).
"""

from __future__ import annotations

import secrets
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import trio

from lockgate.core import (
    ClientClosed,
    ClientFellBehind,
    ClientMessageReceived,
    ClientOpened,
    Principal,
    SendToClient,
    ShutdownRequested,
    __version__,
)
from lockgate.core.http import (
    GET_STREAM,
    HttpPolicy,
    Post,
    Reject,
    Route,
    StreamKey,
    check_head,
    check_post,
    health_body,
    opened_session,
    json_body,
    json_status,
    not_found,
    ops_status,
    session_gone,
    sse_headers,
    stateless_status,
    stream_conflict,
    stream_takeover,
    too_large,
    wants_priming,
    wants_prometheus,
)

from .audit import utc_timestamp
from .clients import ClientSend, StreamFellBehind
from .http_connections import Closed
from .http_exchange import Exchange
from .http_sessions import HttpSession
from .logs import get_logger
from .record import Recorder, WireTap
from .runtime import GatewayCore, Runtime
from .sealed import KeyRing, SecretBox
from .session_ids import SessionClaims, SessionIds
from .shared_limits import readiness as shared_readiness

if TYPE_CHECKING:
    # Only with authentication on: it brings the database and JOSE libraries.
    from .http_auth import HttpAuth
    from .rest.api import RestApi

__all__ = ["PROMETHEUS_TYPE", "McpEndpoint"]

_log = get_logger("http")

#: The core's names of sessions (never shown to a client): 16 random bytes, URL-safe base64.
_CLIENT_BYTES = 16
#: Seconds a session id opens for when none are given (tests): a day.
_LIFETIME = 86400.0
#: Clients of the core for one 2026-07-28 request: never a session id, so never confused with one.
_STATELESS_PREFIX = "request-"
#: Seconds a stateless request's answer may take before its connection is watched for a hang-up (a cancel).
_WATCH_AFTER = 0.05
#: The Prometheus text exposition format, version 0.0.4.
PROMETHEUS_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class McpEndpoint:
    """The sessions of one :class:`~.runtime.Runtime` and the requests about them; see the module docstring."""

    def __init__(
        self,
        core: GatewayCore,
        runtime: Runtime,
        policy: HttpPolicy,
        recorder: Recorder | None = None,
        auth: HttpAuth | None = None,
        rest: RestApi | None = None,
        session_ids: SessionIds | None = None,
    ) -> None:
        self._core = core
        # None: a key of this process alone (its sessions are continued nowhere else).
        self._ids = session_ids if session_ids is not None else SessionIds(KeyRing([SecretBox(secrets.token_bytes(32))]), _LIFETIME)
        self._auth = auth
        self._rest = rest
        self._runtime = runtime
        self._policy = policy
        self._recorder = recorder
        #: Wire taps of recorded sessions (``--record``), by the core's client id.
        self._taps: dict[str, WireTap] = {}
        #: Live sessions, by the id their client names them by.
        self._sessions: dict[str, HttpSession] = {}
        #: 2026-07-28 requests served so far: each one's client id.
        self._stateless_requests = 0
        #: POSTs being answered; ``_idle`` is set while there are none.
        self.in_flight = 0
        self._idle = trio.Event()
        self._idle.set()

    @property
    def sessions(self) -> int:
        """How many sessions are open."""
        return len(self._sessions)

    async def handle(self, exchange: Exchange) -> None:
        """Answer one request (the :data:`~.http_exchange.Handler` of every connection)."""
        headers = exchange.headers
        session_id = headers.get("mcp-session-id")
        held = self._sessions.get(session_id) if session_id is not None else None
        if held is not None and held.expires is not None and held.expires <= time.time():
            # Its id expired: the session ends here as it would be refused everywhere else.
            await self._close(held)
            held = None
        known = held is not None
        # An id this gateway does not hold may still open: a session to continue here.
        claims = self._ids.open(session_id) if session_id is not None and not known else None
        decision = check_head(
            exchange.method,
            exchange.target,
            headers,
            self._policy,
            session_known=known or claims is not None,
        )
        if isinstance(decision, Reject):
            await exchange.refuse(decision)
            return
        route = decision
        # Read the whole request (for GET and friends, its empty body) first:
        # answering before h11 saw its end would cost the keep-alive connection.
        body = await exchange.read_body()
        if body is None:
            if route.kind == "rest" and self._rest is not None:
                await self._rest.too_large(exchange, route, self._policy.max_body_bytes)
            else:
                await exchange.reject(too_large(self._policy, route.headers), close=True)
            return
        principal: Principal | None = None
        # /metrics names every agent and server: with authentication on, it takes a credential too.
        if self._auth is not None and route.kind in ("post", "get", "delete", "metrics", "rest"):
            principal = await self._auth.principal(exchange, route)
            if principal is None:
                return  # answered 401 or 503
            bound = self._sessions.get(route.session) if route.session is not None else None
            if bound is not None and bound.principal_id != principal.id:
                # Another credential's session is no session of this one's: as if unknown.
                await exchange.reject(session_gone(route.headers))
                return
        if (
            claims is not None and route.kind in ("post", "get", "delete") and route.session is not None
            and route.session not in self._sessions and not route.stateless
        ):
            if claims.principal_id != (None if principal is None else principal.id):
                # Another credential's session (or one opened with a credential, now without): as if unknown.
                await exchange.reject(session_gone(route.headers))
                return
            if route.kind == "delete":
                # Nothing of it is here to end: it is only never continued here again.
                self._ids.ended(route.session, claims.expires)
                await exchange.respond(200, list(route.headers), b"")
                return
            if route.kind == "get":
                await self._restore(exchange, route.session, claims, principal)
            # A POST is continued once its body is known not to be an initialize (see _post).
        else:
            claims = None
        match route.kind:
            case "post":
                self.in_flight += 1
                self._idle = trio.Event() if self.in_flight == 1 else self._idle
                try:
                    await self._post(exchange, route, body, principal, claims)
                finally:
                    self.in_flight -= 1
                    if self.in_flight == 0:
                        self._idle.set()
            case "get":
                await self._get(exchange, route)
            case "delete":
                assert route.session is not None
                await self.end_session(route.session)
                await exchange.respond(200, list(route.headers), b"")
            case "preflight":
                await exchange.respond(204, list(route.headers), b"")
            case "health":
                uptime = self._core.uptime(trio.current_time())
                await _send_json(exchange, 200, route, health_body(__version__, uptime))
            case "ready":
                readiness = self._core.readiness()
                if self._auth is not None and not self._auth.available:
                    # No credential can be checked, so no request can be served.
                    readiness = {**readiness, "status": "unavailable", "reason": "the credential store does not answer"}
                readiness = shared_readiness(readiness, self._runtime.shared_limits)
                await _send_json(exchange, ops_status(readiness), route, json_body(readiness))
            case "metrics":
                now = trio.current_time()
                if wants_prometheus(headers.get("accept"), route.query):
                    text = self._core.metrics_prometheus(now).encode("utf-8")
                    await exchange.respond(200, [("content-type", PROMETHEUS_TYPE), *route.headers], text)
                else:
                    metrics = {"timestamp": utc_timestamp(), **self._core.metrics_json(now)}
                    await _send_json(exchange, 200, route, json_body(metrics))
            case "resource_metadata" | "auth" if self._auth is None:
                await exchange.reject(not_found("authentication is off", route.headers))
            case "resource_metadata":
                assert self._auth is not None
                await self._auth.metadata(exchange, route)
            case "auth":
                assert self._auth is not None
                await self._auth.handle(exchange, route, body)
            case "rest" | "page" if self._rest is None:
                await exchange.reject(not_found("the REST API is off", route.headers))
            case "rest":
                assert self._rest is not None
                await self._rest.handle(exchange, route, body, principal)
            case "page":
                assert self._rest is not None
                await self._rest.page(exchange, route)

    # -- POST --------------------------------------------------------------------

    async def _post(
        self, exchange: Exchange, route: Route, body: bytes, principal: Principal | None, claims: SessionClaims | None = None,
    ) -> None:
        session = self._sessions.get(route.session) if route.session is not None else None
        # The core answers 409 to a request whose id is in flight: it needs to know which are.
        plan = check_post(
            body, route, session.requests_in_flight if session is not None else (), relays=self._core.relays(),
            headers=exchange.headers,
        )
        if isinstance(plan, Reject):
            await exchange.reject(plan)
            return
        if route.stateless:
            await self._stateless(exchange, route, plan, body, principal)
            return
        if plan.action == "initialize":
            await self._initialize(exchange, route, plan, body, principal)
            return
        if session is None and claims is not None and route.session is not None and route.session not in self._sessions:
            await self._restore(exchange, route.session, claims, principal)
            session = self._sessions.get(route.session)
        elif session is None and route.session is not None:
            session = self._sessions.get(route.session)  # continued meanwhile by another request
        if session is None:
            # It ended while the body was read (check_head knew it).
            await exchange.reject(session_gone(route.headers))
            return
        if plan.action == "accept":
            await self._feed_message(session, body)
            if plan.cancel_answer is not None:
                await self._cancel(session, plan.cancels, plan.cancel_answer)
            await exchange.respond(202, list(route.headers), b"")
            return
        if plan.action == "json":
            waiter = session.wait_json(plan.request_id)
            await self._feed_message(session, body)
            await waiter.done.wait()
            if waiter.message is None:
                await exchange.reject(session_gone(route.headers))
            else:
                status, extra = json_status(waiter.message)
                await _send_json(exchange, status, route, waiter.encoded(), session.id, extra)
            return
        key: StreamKey = ("post", plan.request_id)
        session.sse_requests.add(plan.request_id)
        send, receive = session.attach(key)
        first = [session.events.add(key, None)] if wants_priming(session.protocol_version) else []
        await self._feed_message(session, body)
        await self._stream(exchange, session, key, send, receive, route, first)

    async def _initialize(self, exchange: Exchange, route: Route, plan: Post, body: bytes, principal: Principal | None) -> None:
        # Known to the core by a random name until the answer settles what its id seals.
        client = secrets.token_urlsafe(_CLIENT_BYTES)
        session = HttpSession(id=client, principal_id=None if principal is None else principal.id)
        self._open_client(session)
        waiter = session.wait_json(plan.request_id)
        if principal is not None and self._auth is not None:
            await self._auth.opened(exchange, principal)
        now = trio.current_time()
        await self._runtime.feed(ClientOpened(now=now, client=session.client, transport="http", principal=principal))
        await self._feed_message(session, body, now)
        await waiter.done.wait()
        message = waiter.message
        if message is None or session.closed:
            await exchange.reject(session_gone(route.headers))
            return
        opened = opened_session(message)
        if opened is None:
            await self._close(session)
            await _send_json(exchange, 200, route, waiter.encoded())
            return
        session.protocol_version = opened.protocol_version
        record = self._core.session_record(session.client)
        if record is not None:
            session.id, session.expires = self._ids.mint(record, session.principal_id)
        # else (no record to seal, which the core gives once initialize is answered): the random name, good here only.
        self._sessions[session.id] = session
        await _send_json(exchange, 200, route, waiter.encoded(), session.id)

    async def _restore(self, exchange: Exchange, session_id: str, claims: SessionClaims, principal: Principal | None) -> None:
        """Continue here the session ``session_id`` names, which opened elsewhere (or here, before a restart)."""
        session = HttpSession(
            id=session_id, client=secrets.token_urlsafe(_CLIENT_BYTES), principal_id=claims.principal_id,
            protocol_version=claims.record.protocol_version, expires=claims.expires,
        )
        # Held before anything waits: a request for the same id meanwhile finds it, and restores nothing.
        self._sessions[session_id] = session
        self._open_client(session)
        if principal is not None and self._auth is not None:
            await self._auth.opened(exchange, principal)
        opened = utc_timestamp(datetime.fromtimestamp(claims.created, timezone.utc))
        _log.info(f"continuing session {session.client} from its id (opened {opened})")
        await self._runtime.feed(
            ClientOpened(now=trio.current_time(), client=session.client, transport="http", principal=principal, restored=claims.record)
        )

    def _open_client(self, session: HttpSession) -> None:
        """Make ``session`` a client of the runtime: what the core sends it, and its ``CloseClient``."""
        send: ClientSend = session.send
        if self._recorder is not None:
            tap = self._taps[session.client] = self._recorder.wire(session.client)
            send = _tapped(session.send, tap)
        self._runtime.register_client(session.client, send, lambda: self._forget(session), drop_stream=session.drop_stream)

    async def _stateless(self, exchange: Exchange, route: Route, plan: Post, body: bytes, principal: Principal | None) -> None:
        """Answer a 2026-07-28 POST: a client of the core for this one request, closed once it is answered.

        The client hanging up before the answer closes it early, which
        cancels its call downstream: in this era, closing the response
        stream is how a client cancels.
        """
        if plan.action == "accept":
            await exchange.respond(202, list(route.headers), b"")
            return
        # Never shown to anyone, so a counter: unique is all it needs to be.
        self._stateless_requests += 1
        session = HttpSession(id=f"{_STATELESS_PREFIX}{self._stateless_requests}")
        self._runtime.register_client(session.id, session.send, session.close, drop_stream=session.drop_stream)
        now = trio.current_time()
        await self._runtime.feed(ClientOpened(now=now, client=session.id, transport="stateless", principal=principal))
        try:
            if plan.action == "json":
                waiter = session.wait_json(plan.request_id)
                await self._feed_message(session, body, now)
                # Most answers come at once: only a late one is worth watching the connection for.
                with trio.move_on_after(_WATCH_AFTER):
                    await waiter.done.wait()
                if not waiter.done.is_set():
                    try:
                        await exchange.while_connected(waiter.done.wait)
                    except Closed:
                        return
                if waiter.message is None:
                    await exchange.reject(session_gone(route.headers))
                else:
                    status, extra = stateless_status(waiter.message)
                    await _send_json(exchange, status, route, waiter.encoded(), None, extra)
                return
            key: StreamKey = ("post", plan.request_id)
            session.sse_requests.add(plan.request_id)
            send, receive = session.attach(key)
            await self._feed_message(session, body, now)
            try:
                await exchange.stream_events(list(sse_headers(None, route.headers)), [], receive)
            finally:
                session.detach(key, send)
        finally:
            session.close()
            await self._runtime.feed(ClientClosed(now=trio.current_time(), client=session.id))

    async def _cancel(self, session: HttpSession, request_id: Any, answer: dict[str, Any]) -> None:
        """End the POST of a request the client cancelled with ``answer`` (the core answers it with nothing)."""
        try:
            session.cancel(request_id, answer)
        except StreamFellBehind as exc:
            # Delivered outside the runtime, so reported here: the core decides about the stream.
            await self._runtime.feed(ClientFellBehind(now=trio.current_time(), client=session.client, request=exc.request))

    # -- GET and SSE streams -----------------------------------------------------

    async def _get(self, exchange: Exchange, route: Route) -> None:
        session = await self._session(exchange, route)
        if session is None:
            return
        key: StreamKey = GET_STREAM
        frames: list[bytes] = []
        replay = session.events.replay(route.last_event_id) if route.last_event_id else None
        if replay is not None:
            key = replay.stream
            frames.extend(replay.events)
            if key != GET_STREAM and (replay.finished or key[1] not in session.sse_requests):
                # That request is answered (or forgotten): replay and end.
                await exchange.send_events(list(sse_headers(session.id, route.headers)), frames)
                return
        match stream_takeover(key in session.streams, replay is not None):
            case "conflict":
                await exchange.reject(stream_conflict(route.headers))
                return
            case "replace":
                session.streams.pop(key).close()
            case "open":
                pass
        send, receive = session.attach(key)
        if wants_priming(session.protocol_version):
            frames.insert(0, session.events.add(key, None))
        await self._stream(exchange, session, key, send, receive, route, frames)

    async def _stream(
        self,
        exchange: Exchange,
        session: HttpSession,
        key: StreamKey,
        send: trio.MemorySendChannel[bytes],
        receive: trio.MemoryReceiveChannel[bytes],
        route: Route,
        first: list[bytes],
    ) -> None:
        """Answer with an SSE stream: ``first``, then every frame pushed for ``key`` until it ends."""
        try:
            await exchange.stream_events(list(sse_headers(session.id, route.headers)), first, receive)
        finally:
            session.detach(key, send)

    # -- sessions ----------------------------------------------------------------

    async def _session(self, exchange: Exchange, route: Route) -> HttpSession | None:
        """The session ``route`` names, or ``None`` once the request is answered 404 (it has ended)."""
        assert route.session is not None
        session = self._sessions.get(route.session)
        if session is None:
            await exchange.reject(session_gone(route.headers))
        return session

    async def _feed_message(self, session: HttpSession, body: bytes, now: float | None = None) -> None:
        tap = self._taps.get(session.client)
        if tap is not None:
            tap("c2s", body)
        now = trio.current_time() if now is None else now
        await self._runtime.feed(ClientMessageReceived(now=now, client=session.client, data=body))

    async def end_session(self, session_id: str) -> None:
        """End a session from this side (DELETE): tell the core."""
        session = self._sessions.get(session_id)
        if session is not None:
            await self._close(session)

    async def _close(self, session: HttpSession) -> None:
        """End ``session`` from this side (DELETE, refused initialize): tell the core."""
        if not session.closed:
            self._forget(session)
            await self._runtime.feed(ClientClosed(now=trio.current_time(), client=session.client))

    def _forget(self, session: HttpSession) -> None:
        """Drop a session and wake whatever waits on it; the core's ``CloseClient`` lands here too.

        Its id is never continued here again (until it expires, when it
        would not open anyway): ended is ended, on this gateway at least.
        """
        if self._sessions.get(session.id) is session:
            del self._sessions[session.id]
        self._taps.pop(session.client, None)
        if session.expires is not None:
            self._ids.ended(session.id, session.expires)
        session.close()

    # -- shutdown ----------------------------------------------------------------

    async def shutdown(self, grace: float) -> None:
        """Let POSTs in flight finish for up to ``grace`` seconds, then tell the core and end every SSE stream."""
        with trio.move_on_after(grace):
            await self._idle.wait()
        if self.in_flight:
            _log.warning(f"{self.in_flight} request(s) still running after the shutdown grace period")
        await self._runtime.feed(ShutdownRequested(now=trio.current_time()))
        # The core now fails what is left; let those answers reach their POSTs.
        with trio.move_on_after(2):
            await self._idle.wait()
        for session in self._sessions.values():
            session.close_streams()


async def _send_json(
    exchange: Exchange,
    status: int,
    route: Route,
    body: bytes,
    session_id: str | None = None,
    extra: tuple[tuple[str, str], ...] = (),
) -> None:
    headers = [("content-type", "application/json")]
    if session_id is not None:
        headers.append(("mcp-session-id", session_id))
    await exchange.respond(status, [*headers, *extra, *route.headers], body)


def _tapped(send: ClientSend, tap: WireTap) -> ClientSend:
    """``send``, with each message also written to a recorded session's wire transcript."""

    async def send_and_record(action: SendToClient) -> None:
        tap("s2c", action.encoded())
        await send(action)

    return send_and_record
