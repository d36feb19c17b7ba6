"""Client sessions: what a client says to the gateway itself, and when it goes away.

The gateway terminates each client's MCP session (handshake era, MCP
2025-11-25, basic/lifecycle): it answers ``initialize``, ``ping``,
``tools/list`` (the gateway tools) and ``logging/setLevel`` itself, hands
``tools/call`` to :class:`~lockgate.core._calls.Calls`, and cancels a
session's calls when it closes. Streamable HTTP sessions also expire after
``session_ttl`` seconds without a message, on one lazily re-armed timer.

Events about a client the gateway does not know (never opened, closed, or
expired) are ignored: a shell may still hold a message of a client the core
let go of.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, assert_never

from . import __version__
from ._actions import CloseClient, DropStream
from ._call import Call
from ._context import Context
from ._errors import ErrorCode, LocalProtocolError
from ._events import (
    AuthenticationFailed,
    AuthenticationSucceeded,
    ClientClosed,
    ClientFellBehind,
    ClientId,
    ClientMessageReceived,
    ClientOpened,
)
from ._jsonrpc import Invalid, Notification, Request, Response, decode, is_request_id
from ._stateless import speaks_stateless
from ._session import HANDSHAKE_VERSIONS, LOG_LEVELS, ClientSession, SessionState, SessionTrigger, negotiate_version
from ._timers import TimerKind
from ._tools import gateway_tools

if TYPE_CHECKING:
    from ._calls import Calls
    from ._links import Links
    from ._relays import Relays
    from ._stateless import StatelessFront
    from ._surface import Surface

__all__ = ["INSTRUCTIONS", "Clients", "client_label", "on_demand_initialize", "server_info"]

JSONObject = dict[str, Any]

INSTRUCTIONS = (
    "Tools of other MCP servers are reached through this gateway: call list_servers, "
    "then get_server_tools for a server, then execute_tool."
)


def server_info() -> JSONObject:
    """The gateway as ``initialize`` names it."""
    return {"name": "lockgate", "version": __version__}


def client_label(client: ClientId) -> str:
    """A client id for logs: HTTP session ids are bearer secrets, so only their start."""
    return str(client)[:8] if isinstance(client, str) else str(client)


class Clients:
    """Client sessions and what they ask of the gateway itself (see the module docstring)."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self.calls: Calls
        self.links: Links
        self.surface: Surface
        self.relays: Relays
        self.stateless: StatelessFront
        #: Streamable HTTP sessions: the ``now`` of each one's latest message.
        self._http_seen: dict[ClientId, float] = {}
        self._expiry_timer: int | None = None

    # -- opening and closing -----------------------------------------------------

    def opened(self, ev: ClientOpened) -> None:
        if ev.client in self._ctx.clients:
            raise LocalProtocolError(f"client {ev.client!r} is already open")
        session = self._ctx.clients[ev.client] = ClientSession(id=ev.client, principal=ev.principal)
        if ev.transport == "rest":
            # One request of the REST API: no handshake, and the servers' own surface, one server's.
            session.move(SessionTrigger.INITIALIZE)
            session.move(SessionTrigger.INITIALIZED)
            session.protocol_version = HANDSHAKE_VERSIONS[-1]
            session.mode, session.server, session.era = "rest", ev.server, "handshake"
            return
        if ev.transport == "stateless":
            session.era = "stateless"  # one Streamable HTTP request of the 2026-07-28 era
            return
        if ev.restored is not None:
            # A session opened elsewhere: its initialize is over (see ClientOpened.restored).
            session.restore(ev.restored)
        # ``transport="http"`` is the one that matters: such a session expires when idle.
        if ev.transport == "http":
            self._http_seen[ev.client] = ev.now
            if self._expiry_timer is None:
                self._arm_expiry(ev.now + self._ctx.config.settings.session_ttl)

    def rechecked(self, ev: AuthenticationSucceeded | AuthenticationFailed) -> None:
        """The shell checked an open session's credential again: it acts as what that proves now, or not at all."""
        session = None if ev.client is None else self._ctx.clients.get(ev.client)
        if session is None or session.principal is None:
            return  # gone already, or a session without a credential: nothing to bind or refuse
        if isinstance(ev, AuthenticationSucceeded):
            session.principal, session.refused = ev.principal, None
        else:
            session.refused = ev.reason

    def closed(self, ev: ClientClosed) -> None:
        self._http_seen.pop(ev.client, None)
        self._end(ev.client, "the client went away")

    def _end(self, client: ClientId, reason: str) -> None:
        """Forget a session: its calls are cancelled, and the links it had to itself stop."""
        session = self._ctx.clients.pop(client, None)
        if session is None:
            return
        session.move(SessionTrigger.CLOSE)
        for call in list(session.calls.values()):
            self.calls.abandon(call, reason)
        self.calls.unpark_client(client)
        self.surface.drop(session)
        self.relays.drop(session)
        self.links.release_client(client)

    def _arm_expiry(self, deadline: float) -> None:
        self._expiry_timer = self._ctx.set_timer(TimerKind.SESSION_EXPIRY, deadline)

    def expire(self) -> None:
        """End every HTTP session idle for ``session_ttl`` seconds; re-arm for the next one due.

        One timer serves all sessions: activity only records a time, and the
        timer, when it fires, is set again for the oldest session left.
        """
        now = self._ctx.now
        self._expiry_timer = None
        ttl = self._ctx.config.settings.session_ttl
        for client, seen in list(self._http_seen.items()):
            if now - seen < ttl:
                continue
            del self._http_seen[client]
            self._end(client, "the session expired")
            self._ctx.log("info", "session expired", session=client_label(client), idle_seconds=round(now - seen, 3))
            self._ctx.emit(CloseClient(client=client))
        if self._http_seen:
            self._arm_expiry(min(self._http_seen.values()) + ttl)

    def fell_behind(self, ev: ClientFellBehind) -> None:
        """A client does not read one of its streams fast enough: that stream is dropped.

        Its calls go on, and what was sent stays buffered, so the client can
        resume the stream (Streamable HTTP, ``Last-Event-ID``); holding the
        gateway's memory for a reader that does not read is not an option.
        """
        if ev.client not in self._ctx.clients:
            return
        self._ctx.metrics.streams_dropped += 1
        self._ctx.log("info", "a client fell behind on a stream; dropping it", client=client_label(ev.client))
        self._ctx.emit(DropStream(client=ev.client, request=ev.request))

    # -- messages ----------------------------------------------------------------

    def message(self, ev: ClientMessageReceived) -> None:
        session = self._ctx.clients.get(ev.client)
        if session is None:
            return  # a client the core let go of (see the module docstring)
        if ev.client in self._http_seen:
            self._http_seen[ev.client] = ev.now
        if ev.too_large:
            limit = self._ctx.config.settings.max_message_bytes
            self._ctx.reply_error(session.id, None, ErrorCode.INVALID_REQUEST, f"Message exceeds the {limit}-byte limit", limit=limit)
            return
        msg = decode(ev.data)
        match msg:
            case Request():
                self._request(session, msg, ev)
            case Notification():
                self._notification(session, msg)
            case Invalid():
                self._invalid(session, msg, ev)
            case Response():
                # Only a server's relayed request is owed an answer; anything else (twice, never asked) is ignored.
                if not self.relays.client_answer(session, msg):
                    self._ctx.log("debug", "ignored a response from a client", client=client_label(session.id), id=msg.id)
            case _:
                assert_never(msg)

    def _invalid(self, session: ClientSession, msg: Invalid, ev: ClientMessageReceived) -> None:
        """Answer a frame that is not a valid message, unless it was a notification or a response."""
        if not msg.answer_owed:
            self._ctx.log(
                "warning", "ignored an invalid notification or response",
                client=client_label(session.id), error=msg.message[:200],
            )
            return
        context: JSONObject = {"path": msg.path} if msg.path is not None else {}
        self._ctx.reply_error(session.id, msg.id, msg.code, msg.message, **context)
        self.calls.refused_at_boundary(session, msg, len(ev.data))

    def _request(self, session: ClientSession, req: Request, ev: ClientMessageReceived) -> None:
        if session.era is None:
            session.era = "stateless" if speaks_stateless(req) else "handshake"
        if session.era == "stateless":
            if self.stateless.admit(session, req, len(ev.data)):
                self.serve(session, req, len(ev.data))
            return
        if req.method == "ping":
            self._ctx.reply(session.id, req.id, {})
        elif req.method == "initialize":
            self._initialize(session, req)
        elif session.warming:
            self.surface.warm(session, req, len(ev.data))
        else:
            self.serve(session, req, len(ev.data))

    def serve(self, session: ClientSession, req: Request, request_bytes: int) -> None:
        """Serve a request of a session past its opening, of either era (a stateless one has passed :mod:`._stateless`)."""
        ctx = self._ctx
        method = req.method
        if ctx.closing:
            self._refuse(session, req, request_bytes, ErrorCode.SERVER_UNAVAILABLE, "The gateway is shutting down")
        elif not session.initialized:
            ctx.reply_error(session.id, req.id, ErrorCode.INVALID_REQUEST, "Session not initialized: send initialize first")
        elif req.id in session.calls or self.calls.is_parked(session.id, req.id):
            self._refuse(session, req, request_bytes, ErrorCode.INVALID_REQUEST, f"Request id {req.id!r} is already in use")
        elif method == "server/discover" and session.era == "stateless":
            self.surface.discover(session, req)
        elif method == "subscriptions/listen" and session.era == "stateless":
            self.stateless.listen(session, req)
        elif self.surface.request(session, req, request_bytes):
            pass  # aggregate mode: the servers' own surface
        elif method == "tools/list":
            ctx.reply(session.id, req.id, {"tools": gateway_tools(debug=ctx.config.settings.debug)})
        elif method == "tools/call":
            self.calls.tools_call(session, req, request_bytes)
        elif method == "logging/setLevel":
            # Accepted and checked; the gateway sends clients no log messages of its own.
            level = req.params.get("level")
            if level not in LOG_LEVELS:
                ctx.reply_error(session.id, req.id, ErrorCode.INVALID_PARAMS, f"Invalid log level: {level!r}", parameter="level")
            else:
                ctx.reply(session.id, req.id, {})
        else:
            # server/discover included: a 2026-07-28 client falls back to initialize on -32601.
            ctx.reply_error(session.id, req.id, ErrorCode.METHOD_NOT_FOUND, f"Method not found: {method}")

    def _refuse(self, session: ClientSession, req: Request, request_bytes: int, code: ErrorCode, message: str) -> None:
        """Refuse a request for the session's state; a ``tools/call`` is audited too."""
        if req.method == "tools/call":
            self.calls.refused(session, req, request_bytes, code, message)
        else:
            self._ctx.reply_error(session.id, req.id, code, message)

    def _initialize(self, session: ClientSession, req: Request) -> None:
        ctx = self._ctx
        if session.initialized:
            ctx.reply_error(session.id, req.id, ErrorCode.INVALID_REQUEST, "Session already initialized")
            return
        requested = req.params.get("protocolVersion")
        if not isinstance(requested, str):
            ctx.reply_error(
                session.id, req.id, ErrorCode.INVALID_PARAMS, "initialize needs a string protocolVersion",
                parameter="protocolVersion",
            )
            return
        session.move(SessionTrigger.INITIALIZE)
        session.protocol_version = negotiate_version(requested)
        if self.surface.initialize(session, req):
            return  # aggregate (or auto) mode answers once the servers have told what they offer
        ctx.reply(session.id, req.id, on_demand_initialize(session))

    def _notification(self, session: ClientSession, note: Notification) -> None:
        if note.method == "notifications/initialized":
            if session.state is SessionState.INITIALIZED:
                session.move(SessionTrigger.INITIALIZED)
        elif note.method == "notifications/cancelled":
            request_id = note.params.get("requestId")
            call: Call | None = session.calls.get(request_id) if is_request_id(request_id) else None
            if is_request_id(request_id) and session.listens.pop(request_id, None) is not None:
                session.methods.pop(request_id, None)  # a listen stream ends: nothing is owed
            elif call is not None:
                reason = note.params.get("reason")
                self.calls.abandon(call, reason if isinstance(reason, str) else "cancelled by the client")
            elif is_request_id(request_id):
                self.calls.unpark(session.id, request_id)  # one waiting for the shared rate limit store, if any
        elif note.method == "notifications/roots/list_changed" and session.mode == "aggregate":
            self.relays.roots_changed(session)


def on_demand_initialize(session: ClientSession) -> JSONObject:
    """The ``initialize`` answer of an on-demand session: the gateway's own tools, nothing of the servers'."""
    return {
        "protocolVersion": session.protocol_version,
        "capabilities": {"tools": {"listChanged": False}, "logging": {}},
        "serverInfo": server_info(),
        "instructions": INSTRUCTIONS,
    }
