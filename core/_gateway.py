"""The gateway: one synchronous state machine that turns events into actions.

Theory of operation
-------------------
Clients talk to the gateway, never to a downstream directly. The gateway
terminates each client's MCP session itself and offers a few gateway tools;
``execute_tool`` is forwarded to the server as ``tools/call`` under a
request id of the link's own, and the answer travels back with the client's
id restored and its result untouched. Every decision about who may see or
call what goes through one policy, and every gateway tool call ends in
exactly one audit record.

:meth:`Gateway.handle` is the only entry point. It hands each event to the
part that owns it; the parts share one :class:`~lockgate.core._context.Context`
(the state, and the list the actions go to) and call each other directly:

=====================  =====================================================
:mod:`._clients`       client sessions: initialize, ping, notifications,
                       close, HTTP session expiry
:mod:`._stateless`     clients of the 2026-07-28 era: the per-request
                       envelope, ``server/discover``, answers shaped for it
:mod:`._calls`         the gateway tools and each call's life: policy,
                       rate limits, routing, forwarding, the answer, the
                       audit record
:mod:`._authorize`     what a verified caller (a principal) may act as
                       and call, and the audit of authentications
:mod:`._links`         links to servers: choosing, starting, the handshake,
                       failures and failover, reload, shutdown
:mod:`._health`        the links' timers: health pings, hangs, idle stops,
                       restarts
:mod:`._lost_sessions` HTTP servers that lost our session or answer errors
:mod:`._surface`       aggregate mode: the servers' own tools, resources and
                       prompts, merged, filtered and routed
:mod:`._relays`        aggregate mode: what servers ask clients (sampling,
                       elicitation, roots), relayed to the right client
:mod:`._bridge`        the same asked of a stateless client: its call
                       answered input_required, resumed by its retry
:mod:`._reload`        a new configuration taking over between two events
:mod:`._pins`          tool definitions pinned; changed ones quarantined
                       until an operator accepts them
:mod:`._views`         status, readiness and metrics (read-only)
=====================  =====================================================

Reading ``execute_tool`` end to end takes this file and :mod:`._calls`: the
client's message arrives in :meth:`Gateway.handle`, :meth:`Calls.tools_call`
checks and routes it, :meth:`Calls.dispatch` forwards it, and the server's
answer comes back through :meth:`Gateway.handle` to :meth:`Calls.answered`.
"""

from __future__ import annotations

from typing import Any, assert_never

from ._actions import Action
from ._authorize import authentication_record
from ._bridge import Bridge
from ._calls import Calls
from ._clients import Clients
from ._config import Config
from ._context import Context
from ._events import (
    AuthenticationFailed,
    AuthenticationSucceeded,
    ClientClosed,
    ClientFellBehind,
    ClientId,
    ClientMessageReceived,
    ClientOpened,
    ConfigRejected,
    ConfigReloaded,
    DownstreamExited,
    DownstreamHttpError,
    DownstreamUnauthorized,
    DownstreamMessageReceived,
    DownstreamNotReading,
    DownstreamSessionLost,
    Event,
    GatewayStarted,
    PinAccepted,
    PinsLoaded,
    SessionRecord,
    ShutdownRequested,
    TimerFired,
    TokensTaken,
)
from ._health import Health
from ._jsonrpc import Response, decode
from ._links import Links, downstream_message_bytes
from ._lost_sessions import LostSessions
from ._pins import Pins
from ._pool import ServerState
from ._registry import registry_view
from ._reload import Reloads
from ._search_tool import Searches
from ._stateless import StatelessFront
from ._rest_views import RestViews
from ._relays import Relays
from ._surface import Surface, aggregate_enabled
from ._timers import TimerKind
from ._tools import TokenCounter, estimate_bytes
from ._views import Views

__all__ = ["Gateway"]

JSONObject = dict[str, Any]


class Gateway:
    """The whole gateway as one synchronous state machine.

    Build it from a :class:`~lockgate.core.Config`, feed it events with
    :meth:`handle`, and perform the actions it returns, in order. Exactly
    one caller at a time; nothing here does I/O, reads a clock or draws
    random numbers.

    What a shell must know:

    - Every event carries ``now``, the shell's monotonic clock; it must never
      go back.
    - Feed :class:`~lockgate.core.GatewayStarted` once, before anything else
      matters (eager servers start then), and
      :class:`~lockgate.core.ClientOpened` before a client's first message.
      ``ClientOpened(transport="http")`` makes the session expire after
      ``session_ttl`` seconds without a message (the core then emits
      :class:`~lockgate.core.CloseClient`); other transports never expire.
      ``ClientOpened(principal=...)`` binds the session to a caller the
      shell verified: its calls act only as the agents it is granted.
      Report each authentication the shell decides with
      :class:`~lockgate.core.AuthenticationSucceeded` or
      :class:`~lockgate.core.AuthenticationFailed`, for the audit log.
    - Hand in the pin store with :class:`~lockgate.core.PinsLoaded` before
      ``GatewayStarted`` (and again whenever it changes), and write each
      :class:`~lockgate.core.SavePins` to it: until then nothing is pinned.
    - Events about a client, a downstream connection or a timer the core has
      let go of (after :class:`~lockgate.core.CloseClient`,
      :class:`~lockgate.core.StopDownstream`, a reported exit, or
      :class:`~lockgate.core.CancelTimer`) are ignored, so a shell need not
      filter what was already on its way.
    - :meth:`handle` never raises because of what a peer sent: bad input
      becomes an error answer, a closed session or an audit record. It
      raises :class:`~lockgate.core.LocalProtocolError` only when the shell
      misused it (a client opened twice, say) or the core broke one of its
      own lifecycle rules (a bug); the state is then undefined, and a shell
      should contain the damage to the peer whose event it was.
    """

    def __init__(self, config: Config, *, count_tokens: TokenCounter = estimate_bytes, state_key: bytes = b"") -> None:
        """Build the gateway; ``count_tokens`` counts tokens of UTF-8 text (default: bytes / 4, rounded up).

        The shell passes a real tokenizer; token budgets, ``tokens_used``,
        the context figures and ``mode: auto`` count with it. ``state_key``
        signs the ``requestState`` the gateway gives stateless clients
        (:mod:`._bridge`): the shell passes a secret of its own (32 random
        bytes); the empty default is for tests, where the states must be
        predictable.
        """
        self._ctx = ctx = Context(config, count_tokens=count_tokens)
        self._clients = Clients(ctx)
        self._calls = Calls(ctx)
        self._links = Links(ctx)
        self._health = Health(ctx)
        self._lost = LostSessions(ctx)
        self._reloads = Reloads(ctx)
        self._views = Views(ctx)
        self._rest_views = RestViews(ctx)
        self._surface = Surface(ctx)
        self._relays = Relays(ctx)
        self._searches = Searches(ctx)
        self._pins = Pins(ctx)
        self._stateless = StatelessFront(ctx)
        self._bridge = Bridge(ctx, state_key)
        # The parts call one another: wired here, once, in plain sight.
        self._clients.calls, self._clients.links = self._calls, self._links
        self._clients.surface, self._clients.relays = self._surface, self._relays
        self._clients.stateless, self._stateless.surface = self._stateless, self._surface
        self._surface.clients = self._clients
        self._relays.bridge = self._calls.bridge = self._stateless.bridge = self._bridge
        self._relays.calls, self._calls.relays = self._calls, self._relays
        self._surface.calls, self._surface.links = self._calls, self._links
        self._links.surface, self._links.relays = self._surface, self._relays
        self._relays.surface = self._surface
        self._searches.surface = self._surface
        self._surface.searches = self._calls.searches = self._searches
        self._calls.links, self._calls.health, self._calls.views = self._links, self._health, self._views
        self._links.calls, self._links.health = self._calls, self._health
        self._health.links, self._health.calls = self._links, self._calls
        self._lost.links, self._lost.calls, self._lost.health = self._links, self._calls, self._health
        self._reloads.links = self._links
        self._links.pins, self._surface.pins, self._pins.surface = self._pins, self._pins, self._surface

    @property
    def config(self) -> Config:
        """The configuration new requests are decided under."""
        return self._ctx.config

    def handle(self, event: Event) -> list[Action]:
        """Process one event; return the actions it calls for, in order (see the class docstring)."""
        ctx = self._ctx
        out = ctx.begin(event.now)
        match event:
            case ClientMessageReceived():
                self._clients.message(event)
            case DownstreamMessageReceived():
                link = ctx.links.get(event.downstream)
                if link is None:
                    pass  # a connection the core already let go of
                elif event.too_large:
                    # Its output can no longer be matched to calls: start afresh.
                    self._links.fail(link, f"sent a message over {downstream_message_bytes(ctx.config.settings)} bytes")
                else:
                    msg = decode(event.data)
                    if isinstance(msg, Response):
                        self._links.answer(link, msg)  # a call's answer goes on to Calls.answered
                    else:
                        self._links.message(link, msg, related=event.related)
            case DownstreamNotReading():
                link = ctx.links.get(event.downstream)
                if link is not None:
                    self._links.fail(link, "stopped reading its input")
            case ClientFellBehind():
                self._clients.fell_behind(event)
            case TimerFired():
                timer = ctx.fire(event.timer)
                if timer is None:
                    pass  # cancelled after it fell due, before the shell saw the cancellation
                elif timer.kind is TimerKind.CALL:
                    assert timer.call is not None
                    self._calls.timer_fired(timer.call)
                elif timer.kind is TimerKind.SESSION_EXPIRY:
                    self._clients.expire()
                else:
                    self._health.timer_fired(timer)
            case ClientOpened():
                self._clients.opened(event)
            case ClientClosed():
                self._clients.closed(event)
            case DownstreamExited():
                link = ctx.links.pop(event.downstream, None)
                if link is not None:
                    self._links.connection_failed(link, event.reason, stop=False)
            case DownstreamSessionLost():
                self._lost.session_lost(event)
            case DownstreamHttpError():
                self._lost.http_error(event)
            case DownstreamUnauthorized():
                self._lost.unauthorized(event)
            case GatewayStarted():
                ctx.seed(event.seed)
                ctx.started = True
                if ctx.config.settings.init_strategy == "eager":
                    for pool in ctx.pools.values():
                        self._links.start_eager(pool)  # only idle ones: a reload may have come first
            case ConfigReloaded():
                before = self._surface.fingerprints()
                self._reloads.reloaded(event)
                self._surface.reloaded(before)
            case ConfigRejected():
                self._reloads.rejected(event)
            case ShutdownRequested():
                self._links.shutdown()
            case PinsLoaded():
                self._pins.loaded(event)
            case PinAccepted():
                self._pins.accepted(event)
            case TokensTaken():
                self._calls.tokens_taken(event)
            case AuthenticationSucceeded() | AuthenticationFailed():
                ctx.audit_authentication(authentication_record(event), isinstance(event, AuthenticationSucceeded))
                if event.client is not None:
                    self._clients.rechecked(event)
            case _:
                assert_never(event)
        return out

    # -- read-only views, for shells and tools between events ------------------------

    def uptime(self, now: float) -> float:
        """Seconds since the first event the gateway handled, at ``now`` on the event clock."""
        return self._views.uptime(now)

    def metrics_json(self, now: float) -> JSONObject:
        """The JSON ``/metrics`` view (the shell adds a wall-clock ``timestamp``)."""
        return self._views.metrics_json(now)

    def metrics_prometheus(self, now: float) -> str:
        """The Prometheus text exposition of the metrics, plus live gauges."""
        return self._views.metrics_prometheus(now)

    def status(self) -> JSONObject:
        """A JSON snapshot of the gateway, as ``get_gateway_status`` answers."""
        return self._views.status()

    def reload_status(self) -> JSONObject:
        """Configuration reloads so far, as JSON."""
        return self._views.reload_status()

    def server_tools(self, name: str) -> list[JSONObject] | None:
        """A copy of the tool definitions server ``name`` listed, or ``None`` before it listed them."""
        return self._views.server_tools(name)

    def server_states(self) -> dict[str, ServerState]:
        """Each server's state in one word: ready, degraded, starting, idle or unavailable."""
        return self._views.server_states()

    def relays(self) -> bool:
        """Whether servers' requests (sampling, elicitation, roots) are relayed to clients: aggregate mode is on for some."""
        return aggregate_enabled(self._ctx.config)

    def session_record(self, client: ClientId) -> SessionRecord | None:
        """What continues ``client``'s handshake-era session elsewhere (``ClientOpened.restored``); ``None`` if there is none."""
        session = self._ctx.clients.get(client)
        return None if session is None else session.record()

    def server_health(self, name: str) -> JSONObject | None:
        """The REST ``/mcp/{server}/health`` answer; ``None`` for a server that is not configured."""
        return self._rest_views.server_health(name)

    def gateway_health(self, now: float) -> JSONObject:
        """The REST ``/gateway/health`` answer."""
        return self._rest_views.gateway_health(self._views.uptime(now))

    def gateway_stats(self, now: float) -> JSONObject:
        """The REST ``/gateway/stats`` answer: requests, latency, errors, load per instance, health checks."""
        return self._rest_views.stats(self._views.uptime(now), self._views.reload_status())

    def registry_view(self) -> JSONObject:
        """The ``GET /gateway/registry`` body: every server and instance, file or registered (see :func:`~._registry.registry_view`)."""
        return registry_view(self._ctx.pools, self._ctx.now)

    def pins(self) -> JSONObject:
        """Every server's pinned and quarantined tools (the REST admin view; see :mod:`._pins`)."""
        return self._ctx.pins.view()

    def readiness(self) -> JSONObject:
        """The ``/ready`` answer: ready once every eager server has finished its first start attempt."""
        return self._views.readiness()
