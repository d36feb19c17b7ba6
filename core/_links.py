"""Links to downstream servers: choosing one, starting it, its handshake, its failures, reload and shutdown.

Theory of operation
-------------------
A call goes to the link its server's pool chooses (:meth:`Links.choose`,
see :mod:`~lockgate.core._pool`); :meth:`Links.assign` serves it at once on
a link that is serving, else queues it and starts the link. A start mints a
fresh ``downstream`` id (:class:`~lockgate.core.StartDownstream`) and runs
the MCP handshake (MCP 2025-11-25, basic/lifecycle): ``initialize``,
``notifications/initialized``, then every page of ``tools/list``, under the
start timer. With a server that speaks the stateless era (2026-07-28), a
``server/discover`` answer stands for the first two, and every request
carries the era's ``_meta`` envelope; which era a connection speaks is
decided at its start (see :mod:`~lockgate.core._downstream_era`). The
tool list is cached for ``get_server_tools`` and refreshed on
``notifications/tools/list_changed``. Once READY, the waiting calls go
out in order.

When a connection fails (it exited, its handshake or a health check timed
out, an HTTP error broke it), :meth:`connection_failed` decides what becomes
of its calls: those that never reached it fail over to another instance;
forwarded ones fail at once unless the server allows ``retry_calls``. A
shared link starts again after its backoff; a per-client one is forgotten.
Health checks, idle stops and hangs are :mod:`~lockgate.core._health`'s;
lost HTTP sessions and error statuses :mod:`~lockgate.core._lost_sessions`'.

A reload (:mod:`~lockgate.core._reload`) retires the links of a changed or
removed server: they stop once their calls end (:meth:`Links.retire_if_idle`).
Shutdown fails what is left and stops every link.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, assert_never

from . import __version__
from ._actions import SendToDownstream, StartDownstream, StopDownstream
from ._audit import Decision
from ._call import Call, CallTrigger
from ._config import Settings
from ._context import Context, error_response
from ._downstream_era import STATELESS_VERSION, discover_request, envelope, opening, speaks_stateless, unsupported_versions
from ._errors import ErrorCode
from ._events import ClientId
from ._jsonrpc import Invalid, Notification, Request, Response, error, error_with, notification, request, result
from ._link import LISTS, Internal, Link, State
from ._pool import Pool, Unavailable
from ._relays import CLIENT_CAPABILITIES
from ._surface import aggregate_enabled
from ._timers import TimerKind

if TYPE_CHECKING:
    from ._calls import Calls
    from ._health import Health
    from ._pins import Pins
    from ._relays import Relays
    from ._surface import Surface

__all__ = ["DOWNSTREAM_MESSAGE_FACTOR", "DOWNSTREAM_PROTOCOL_VERSION", "Links", "downstream_message_bytes"]

JSONObject = dict[str, Any]

#: The protocol version the gateway offers each downstream it starts.
DOWNSTREAM_PROTOCOL_VERSION = "2025-11-25"

#: How much larger than a client's message a server's may be: SDK servers
#: send a tool result twice (as text and as structured content), so a result
#: the size of the client limit must still fit.
DOWNSTREAM_MESSAGE_FACTOR = 4


#: Which list each ``list_changed`` notification is about.
_LIST_CHANGED = {
    "notifications/tools/list_changed": Internal.TOOLS_LIST,
    "notifications/resources/list_changed": Internal.RESOURCES_LIST,
    "notifications/prompts/list_changed": Internal.PROMPTS_LIST,
}


def downstream_message_bytes(settings: Settings) -> int:
    """The largest message a downstream may send; past it the shell reports ``too_large``."""
    return DOWNSTREAM_MESSAGE_FACTOR * settings.max_message_bytes


class Links:
    """The links to downstream servers (see the module docstring)."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self.calls: Calls
        self.health: Health
        self.surface: Surface
        self.relays: Relays
        self.pins: Pins

    # -- giving a call to a link -----------------------------------------------------

    def choose(
        self, pool: Pool, client: ClientId, *, exclude: tuple[int, ...] = (), prefer_running: bool = False
    ) -> Link | Unavailable:
        """The link to serve a request of ``client``, or why there is none (see :meth:`Pool.choose`)."""
        if pool.spec.per_user and self._principal(client) is None:
            # Whose token would it carry? Never the gateway's, nor another's.
            return Unavailable("its OAuth tokens are per user (oauth.per_user), and this caller has no identity: "
                               "turn authentication on (GATEWAY_AUTH=required)")
        draw = self._ctx.draw() if pool.spec.strategy == "random" else 0
        return pool.choose(client, self._ctx.now, exclude=exclude, prefer_running=prefer_running, draw=draw)

    def assign(self, link: Link, call: Call) -> None:
        """Give a call to a link: serve it now, or queue it (starting the link when it is down)."""
        call.tried = (*call.tried, link.instance.index)
        if link.serving:
            self.calls.dispatch(link, call)
            return
        if link.state in (State.IDLE, State.BACKOFF):
            self.start(link)
        call.downstream = link.downstream
        link.waiters.append(call)

    def drain_waiters(self, link: Link) -> None:
        """Serve the calls that waited for ``link`` to be serving, in order."""
        # One at a time, the rest still queued: a link a reload retired must
        # not look idle (and be stopped) before the last waiter is sent.
        while link.waiters and link.downstream is not None and link.serving:
            self.calls.dispatch(link, link.waiters.pop(0))

    def call_done(self, link: Link) -> None:
        """A call on ``link`` ended: it may now be idle, or done retiring."""
        link.last_active = self._ctx.now
        self.health.arm_idle(link)
        self.retire_if_idle(link)

    # -- starting and the handshake --------------------------------------------------

    def start_eager(self, pool: Pool) -> None:
        """Start a shared server's instances up front, within its process cap."""
        for link in pool.shared[: pool.spec.max_processes]:
            if link.state is State.IDLE:
                self.start(link)

    def start(self, link: Link) -> None:
        """Open a new connection to an instance and begin its MCP handshake."""
        ctx = self._ctx
        downstream = ctx.new_downstream()
        self.health.cancel_timer(link, TimerKind.RESTART)
        instance = link.instance
        instance.starting(ctx.now)
        link.move(State.STARTING)
        link.downstream = downstream
        link.next_wire_id = 1
        link.pending = {}
        link.internal = {}
        link.listing = {}
        link.listing_wire = {}
        link.garbage_lines = 0
        link.suspect = None
        link.stamp = None  # a new connection: its era is decided again
        link.listen_wire = None
        instance.starts += 1
        ctx.links[downstream] = link
        link.principal = self._principal(link.client) if link.entry.per_user and link.client is not None else None
        ctx.emit(
            StartDownstream(
                downstream=downstream, server=link.name, spec=link.spec, instance=instance.index, principal=link.principal
            )
        )
        era = ctx.config.settings.downstream_era
        if era == "handshake" or (era == "auto" and instance.skip_discover):
            self.send_initialize(link)
        else:
            self._send_discover(link)

    def _principal(self, client: ClientId) -> str | None:
        """On whose behalf ``client``'s session calls (its per-user OAuth tokens are theirs), if it has a principal."""
        session = self._ctx.clients.get(client)
        return None if session is None or session.principal is None else session.principal.on_behalf_of

    def _client_capabilities(self) -> JSONObject:
        """What the gateway tells a server its clients can be asked: on-demand mode relays nothing a server asks."""
        return CLIENT_CAPABILITIES if aggregate_enabled(self._ctx.config) else {}

    def _send_discover(self, link: Link) -> None:
        """Probe a new connection's era with ``server/discover``, under the start timer (see :mod:`._downstream_era`)."""
        assert link.downstream is not None
        wire_id = link.take_wire_id()
        link.internal[wire_id] = Internal.DISCOVER
        self._ctx.emit(SendToDownstream(downstream=link.downstream, message=discover_request(wire_id, self._client_capabilities())))
        self.health.set_timer(link, TimerKind.START, self._ctx.now + self._ctx.config.settings.start_timeout_ms / 1000)

    def send_initialize(self, link: Link, *, timer: bool = True) -> None:
        """Begin the MCP handshake on ``link``'s connection, under the start timer.

        ``timer``: set the start timer; an ``initialize`` that follows an
        era probe stays under the probe's, so a start never takes longer
        than ``start_timeout_ms``.
        """
        downstream = link.downstream
        assert downstream is not None
        wire_id = link.take_wire_id()
        link.internal[wire_id] = Internal.INITIALIZE
        link.session_wire = wire_id
        self._ctx.emit(
            SendToDownstream(
                downstream=downstream,
                message=request(
                    wire_id,
                    "initialize",
                    {
                        "protocolVersion": DOWNSTREAM_PROTOCOL_VERSION,
                        # On-demand mode relays nothing a server asks a client.
                        "capabilities": self._client_capabilities(),
                        "clientInfo": {"name": "lockgate", "version": __version__},
                    },
                ),
            )
        )
        if timer:
            self.health.set_timer(link, TimerKind.START, self._ctx.now + self._ctx.config.settings.start_timeout_ms / 1000)

    # -- what a link's server says ---------------------------------------------------

    def message(self, link: Link, msg: Request | Notification | Response | Invalid, *, related: int | None = None) -> None:
        """One message from ``link``'s server, other than the answer to a call (see :meth:`Calls.answered`).

        ``related``: the wire id of the request on whose response stream it came, when the transport knows.
        """
        match msg:
            case Response():
                self._internal_answer(link, msg)
            case Notification():
                self._notification(link, msg, related)
            case Request():
                assert link.downstream is not None
                if msg.method == "ping":
                    self._ctx.emit(SendToDownstream(downstream=link.downstream, message=result(msg.id, {})))
                elif aggregate_enabled(self._ctx.config):
                    # Client capabilities were declared on the clients' behalf: relay it.
                    self.relays.server_request(link, msg, related)
                else:
                    reply = error(msg.id, ErrorCode.METHOD_NOT_FOUND, f"Method not supported by the gateway: {msg.method}")
                    self._ctx.emit(SendToDownstream(downstream=link.downstream, message=reply))
            case Invalid():
                self._invalid(link, msg)
            case _:
                assert_never(msg)

    def _invalid(self, link: Link, msg: Invalid) -> None:
        """The server wrote something that is not a valid message.

        An answer to one of our requests that cannot be forwarded (a lone
        surrogate or ``NaN`` in a result, say) still answers it: the call
        fails at once with -32603 instead of waiting for its timeout. A
        request the server sent that way gets the error it earned. Anything
        else is noise on the line, logged a few times.
        """
        ctx = self._ctx
        wire_id = msg.id
        if isinstance(wire_id, int) and (wire_id in link.pending or wire_id in link.internal):
            reason = f"sent an answer that cannot be forwarded ({msg.message[:200]})"
            data: JSONObject = {"code": ErrorCode.INTERNAL_ERROR.name, "server": link.name, "reason": reason}
            if msg.path is not None:
                data["path"] = msg.path
            err = {"code": int(ErrorCode.INTERNAL_ERROR), "message": f"Server '{link.name}' {reason}", "data": data}
            ctx.log("warning", "server sent an answer that cannot be forwarded", server=link.name, error=msg.message[:200])
            self.answer(link, Response(wire_id, error_with(wire_id, err)))
            return
        if msg.id is not None and msg.answer_owed and msg.salvaged is not None and "method" in msg.salvaged:
            assert link.downstream is not None
            ctx.emit(SendToDownstream(downstream=link.downstream, message=error(msg.id, msg.code, msg.message)))
            return
        link.garbage_lines += 1
        # Say it a few times, not once per line of a chatty server.
        ctx.log("warning" if link.garbage_lines <= 3 else "debug", "ignored output that is not JSON-RPC", server=link.name, error=msg.message[:200])

    def answer(self, link: Link, msg: Response) -> None:
        """An answer on ``link``: to a call, or to one of the gateway's own requests."""
        wire_id = msg.id
        if not isinstance(wire_id, int):
            return
        call = link.pending.pop(wire_id, None)
        if call is not None:
            self.calls.answered(link, call, msg)
        else:
            self._internal_answer(link, msg)

    def _internal_answer(self, link: Link, msg: Response) -> None:
        wire_id = msg.id
        kind = link.internal.pop(wire_id, None) if isinstance(wire_id, int) else None
        if kind is Internal.INITIALIZE:
            self._initialized(link, msg)
        elif kind is Internal.DISCOVER:
            self._discovered(link, msg)
        elif kind in LISTS:
            assert isinstance(wire_id, int) and kind is not None
            self._list_page(link, kind, wire_id, msg)
        elif kind is Internal.PING:
            self.health.pong(link)
        elif kind is Internal.LISTEN:
            # The server ended the stream (or never had one): its changes now come to nobody, which
            # the next start mends; listening again at once could loop with a server that ends it at once.
            if link.listen_wire == wire_id:
                link.listen_wire = None
            self._ctx.log("info", "server ended its notification stream", server=link.name, error=msg.raw.get("error"))

    def _discovered(self, link: Link, msg: Response) -> None:
        """The answer to the era probe: a stateless server's offer, or a reason to handshake instead."""
        res = msg.raw.get("result")
        if speaks_stateless(res):
            assert isinstance(res, dict)
            link.stamp = envelope(self._client_capabilities())
            link.era = "stateless"
            link.protocol_version = STATELESS_VERSION
            link.capabilities, link.instructions, link.server_info = opening(res)
            self._opened(link)
            return
        err = msg.raw.get("error")
        code = err.get("code") if isinstance(err, dict) else None
        self.not_stateless(link, f"error {code}" if isinstance(code, int) else "no 2026-07-28 among its versions", err)

    def not_stateless(self, link: Link, why: str, err: object = None) -> None:
        """The era probe says the server does not speak 2026-07-28: ``initialize`` on the same connection.

        Any error falls back, as the SDK client's does: a handshake-era
        server answers -32601, an HTTP one may refuse the probe with a 4xx.
        Under ``GATEWAY_DOWNSTREAM_ERA=stateless`` the start fails instead.
        """
        ctx = self._ctx
        if ctx.config.settings.downstream_era == "stateless":
            self.fail(link, f"does not speak MCP {STATELESS_VERSION} ({why}), and GATEWAY_DOWNSTREAM_ERA is stateless")
            return
        disjoint = unsupported_versions(err)
        if disjoint is not None:
            # It names versions, none the gateway speaks: initialize will most likely fail, and say so.
            ctx.log("warning", "server supports no protocol version the gateway speaks", server=link.name, supported=disjoint)
        else:
            ctx.log("debug", "server does not speak the stateless era; using initialize", server=link.name, reason=why)
        self.send_initialize(link, timer=False)

    def _initialized(self, link: Link, msg: Response) -> None:
        res = msg.raw.get("result")
        if not isinstance(res, dict):
            err = msg.raw.get("error")
            detail = err.get("message") if isinstance(err, dict) else None
            detail = detail[:200] if isinstance(detail, str) else None
            self.fail(link, f"initialize failed: {detail or 'no result'}")
            return
        version = res.get("protocolVersion")
        link.protocol_version = version if isinstance(version, str) else None
        link.era = "handshake"
        info = res.get("serverInfo")
        link.server_info = info if isinstance(info, dict) else None
        capabilities = res.get("capabilities")
        link.capabilities = capabilities if isinstance(capabilities, dict) else {}
        instructions = res.get("instructions")
        link.instructions = instructions if isinstance(instructions, str) else None
        assert link.downstream is not None
        self._ctx.emit(
            SendToDownstream(downstream=link.downstream, message=notification("notifications/initialized"))
        )
        self._opened(link)

    def _opened(self, link: Link) -> None:
        """The server said what it offers (``initialize``, or stateless ``server/discover``): list its catalogue."""
        link.move(State.LISTING)
        # What it offered before (a restart): clients whose view changes are told once it is ready.
        link.previous = (link.tools, link.catalog) if link.tools is not None else None
        link.catalog = {}
        self._ctx.catalog_epoch += 1
        self.request_list(link, Internal.TOOLS_LIST, None)
        if aggregate_enabled(self._ctx.config):
            # Aggregate mode serves the rest of the catalogue too, from the same cache.
            if isinstance(link.capabilities.get("resources"), dict):
                self.request_list(link, Internal.RESOURCES_LIST, None)
                self.request_list(link, Internal.TEMPLATES_LIST, None)
            if isinstance(link.capabilities.get("prompts"), dict):
                self.request_list(link, Internal.PROMPTS_LIST, None)

    def request_list(self, link: Link, kind: Internal, cursor: str | None) -> None:
        """Ask ``link``'s server for (the next page of) one list of its catalogue."""
        wire_id = link.take_wire_id()
        link.internal[wire_id] = kind
        link.listing_wire[kind] = wire_id
        message: JSONObject = request(wire_id, kind.value)
        if cursor is not None:
            message["params"] = {"cursor": cursor}
        else:
            link.listing[kind] = []
        assert link.downstream is not None
        self._ctx.emit(SendToDownstream(downstream=link.downstream, message=message))

    def _list_page(self, link: Link, kind: Internal, wire_id: int, msg: Response) -> None:
        ctx = self._ctx
        if wire_id != link.listing_wire.get(kind):
            return  # superseded by a newer listing after list_changed
        key, name = LISTS[kind]
        res = msg.raw.get("result")
        pages = link.listing.setdefault(kind, [])
        if isinstance(res, dict) and isinstance(res.get(key), list):
            pages.extend(t for t in res[key] if isinstance(t, dict) and isinstance(t.get(name), str))
            cursor = res.get("nextCursor")
            if isinstance(cursor, str) and cursor:
                self.request_list(link, kind, cursor)
                return
        else:
            # A server without tools may answer -32601; it simply offers none.
            ctx.log("warning", f"{kind.value} failed; serving none", server=link.name)
        del link.listing_wire[kind]
        listed = link.listing.pop(kind)
        if kind is Internal.TOOLS_LIST:
            old = link.tools or []
            link.set_tools(self.pins.listed(link, listed))  # less the quarantined tools
        else:
            old = link.catalog.get(kind, [])
            link.set_list(kind, listed)
        ctx.catalog_epoch += 1
        if link.state is State.LISTING:
            if not link.listing_wire:
                self._ready(link)
        elif link.state is State.READY:
            self.surface.catalog_changed(link, kind, old)
            self.surface.settled()  # a REST list may wait for it (Surface._list_first)

    def _ready(self, link: Link) -> None:
        """The handshake and every first listing are done: serve."""
        ctx = self._ctx
        link.move(State.READY)
        link.instance.answered()
        self.health.cancel_timer(link, TimerKind.START)
        ctx.log("info", "server ready", server=link.name, tools=len(link.tools or ()), protocol=link.protocol_version)
        self.health.schedule(link)
        link.last_active = ctx.now
        self.health.arm_idle(link)
        self.listen(link)
        self.drain_waiters(link)
        pool = ctx.pools.get(link.name)
        if pool is not None and not link.retiring:
            pool.known = link
        previous, link.previous = link.previous, None
        if aggregate_enabled(ctx.config):
            # A first start changes views too: a server that joins, or starts late, adds to them.
            self.surface.restarted(link, *(previous or ([], {})))
        self.surface.settled()

    def listen(self, link: Link) -> None:
        """Open (again) a stateless link's ``subscriptions/listen`` stream, for what it can tell the gateway.

        A stateless server sends notifications outside a call only on such a
        stream (MCP 2026-07-28): its list changes, as its capabilities offer
        them, and updates of the resources clients subscribed to through the
        gateway. Called when the link is ready and whenever those
        subscriptions change; the stream before is cancelled (over HTTP,
        its response stream closed).
        """
        ctx = self._ctx
        if not link.stateless or link.downstream is None or link.state is not State.READY:
            return
        wanted: JSONObject = {}
        for key, capability in (("toolsListChanged", "tools"), ("promptsListChanged", "prompts"), ("resourcesListChanged", "resources")):
            offered = link.capabilities.get(capability)
            if isinstance(offered, dict) and offered.get("listChanged") is True:
                wanted[key] = True
        resources = link.capabilities.get("resources")
        uris = sorted(uri for (server, uri), subscribers in ctx.subscriptions.items() if server == link.name and subscribers)
        if uris and isinstance(resources, dict) and resources.get("subscribe") is True:
            wanted["resourceSubscriptions"] = uris
        if link.listen_wire is not None:
            link.internal.pop(link.listen_wire, None)
            ctx.emit(SendToDownstream(downstream=link.downstream, message=notification(
                "notifications/cancelled", {"requestId": link.listen_wire, "reason": "listening again"})))
            link.listen_wire = None
        if not wanted:
            return
        wire_id = link.take_wire_id()
        link.internal[wire_id] = Internal.LISTEN
        link.listen_wire = wire_id
        ctx.emit(SendToDownstream(downstream=link.downstream, message=request(wire_id, "subscriptions/listen", {"notifications": wanted})))

    def _notification(self, link: Link, note: Notification, related: int | None = None) -> None:
        method = note.method
        if method == "notifications/progress":
            token = note.params.get("progressToken")
            call = link.pending.get(token) if isinstance(token, int) else None
            if call is not None:
                self.calls.progress(call, note)
        elif method in _LIST_CHANGED:
            kind = _LIST_CHANGED[method]
            # A kind it never listed (on-demand mode lists tools only) stays unlisted.
            if link.state is State.READY and (kind is Internal.TOOLS_LIST or kind in link.catalog):
                self.request_list(link, kind, None)
                if kind is Internal.RESOURCES_LIST and Internal.TEMPLATES_LIST in link.catalog:
                    self.request_list(link, Internal.TEMPLATES_LIST, None)
        elif method == "notifications/message":
            self._ctx.log(
                "info", "server log message",
                server=link.name, server_level=note.params.get("level"), data=note.params.get("data"),
            )
            self.surface.log_message(link, note, related)
        elif method in ("notifications/cancelled", "notifications/elicitation/complete"):
            self.relays.notification(link, note)
        else:
            self.surface.notification(link, note)

    # -- failures --------------------------------------------------------------------

    def fail(self, link: Link, reason: str, *, kill: bool = False) -> None:
        """Give up on a live connection: stop (or, hung, kill) it and fail what depends on it."""
        assert link.downstream is not None
        self._ctx.links.pop(link.downstream, None)
        self.connection_failed(link, reason, stop=True, kill=kill)

    def unauthorized(self, link: Link, reason: str) -> None:
        """The server wants a token the shell does not have: fail what depends on the link, and stop it.

        Not the instance's fault: its breaker and backoff are untouched, so
        other principals' links to it keep working, and a call after a
        login starts the link afresh at once.
        """
        ctx = self._ctx
        ctx.log("warning", "server needs authorization", server=link.name, instance=link.instance.index, reason=reason)
        calls = [*link.pending.values(), *link.waiters]
        link.pending = {}
        link.waiters = []
        pool = ctx.pools.get(link.name)
        if link.client is not None and pool is not None and pool.clients.get(link.client) is link:
            del pool.clients[link.client]
        self.stop(link)
        for call in calls:
            self.calls.fail(call, reason)
        self.surface.settled()

    def connection_failed(self, link: Link, reason: str, *, stop: bool, kill: bool = False) -> None:
        """A connection is gone (already out of ``ctx.links``); see the module docstring for its calls."""
        ctx = self._ctx
        downstream = link.downstream
        assert downstream is not None
        if stop:
            ctx.emit(StopDownstream(downstream=downstream, kill=kill))
        self.health.cancel_timers(link)
        self.relays.link_gone(downstream)
        link.downstream = None
        link.internal = {}
        instance = link.instance
        repeated = instance.last_error == reason
        instance.failed(reason, ctx.now)
        link.move(State.BACKOFF)
        # A server that keeps failing the same way (a missing command, say) is
        # retried every 30 s for ever; its warning comes at failures 1, 2, 4,
        # 8, ... so the log says it once and then ever more rarely.
        loud = not repeated or instance.failures & (instance.failures - 1) == 0
        ctx.log(
            "warning" if loud else "debug", "server unavailable",
            server=link.name, instance=instance.index, reason=reason,
        )
        calls = [*link.pending.values(), *link.waiters]
        link.pending = {}
        link.waiters = []
        pool = ctx.pools.get(link.name)
        current = pool is not None and (
            link in pool.shared or (link.client is not None and pool.clients.get(link.client) is link)
        )
        if link.client is not None:
            if pool is not None and current:
                del pool.clients[link.client]
            link.move(State.IDLE)
        elif current and not ctx.closing and not link.retiring:
            self.health.set_timer(link, TimerKind.RESTART, link.instance.retry_at)
        for call in calls:
            reached = call.wire_id is not None
            if pool is not None and current and (not reached or link.entry.retry_calls) and self._failover(pool, call):
                continue
            self.calls.fail(call, reason)
        # Lists waiting for this server go on without it.
        self.surface.settled()

    def _failover(self, pool: Pool, call: Call) -> bool:
        """Give a call whose link failed to another instance; False when there is none."""
        if call.client not in self._ctx.clients or self._ctx.closing:
            return False
        link = self.choose(pool, call.client, exclude=call.tried, prefer_running=call.tool is None)
        if isinstance(link, Unavailable):
            return False
        self._ctx.log("info", "request moved to another instance", server=pool.name, instance=link.instance.index)
        self.reroute(link, call)
        return True

    def reroute(self, link: Link, call: Call) -> None:
        """Give a call that has not been answered to ``link`` (another instance, or its own started again)."""
        call.move(CallTrigger.REROUTE)
        call.wire_id = None
        call.downstream = None
        self.assign(link, call)

    # -- stopping on purpose ---------------------------------------------------------

    def stop(self, link: Link) -> None:
        """Stop a link on purpose (idle, client gone, reload, shutdown); nothing must be pending."""
        if link.state in (State.STARTING, State.LISTING):
            link.instance.stopped_starting()
        if link.downstream is not None:
            self._ctx.links.pop(link.downstream, None)
            self._ctx.emit(StopDownstream(downstream=link.downstream))
            self.relays.link_gone(link.downstream)
            link.downstream = None
        self.health.cancel_timers(link)
        link.internal = {}
        link.move(State.IDLE)
        # A list may wait for this link's start.
        self.surface.settled()

    def retire_if_idle(self, link: Link) -> None:
        if link.retiring and not link.pending and not link.waiters:
            self.stop(link)

    def release_client(self, client: ClientId) -> None:
        """A client is gone: stop the links it had to itself."""
        for pool in self._ctx.pools.values():
            link = pool.clients.pop(client, None)
            if link is not None:
                self.stop(link)

    # -- shutdown --------------------------------------------------------------------

    def shutdown(self) -> None:
        """Fail every call still on a link, stop every link, and start nothing again."""
        ctx = self._ctx
        ctx.closing = True
        for link in list(ctx.links.values()):
            calls = [*link.pending.values(), *link.waiters]
            link.pending = {}
            link.waiters = []
            for call in calls:
                response = error_response(
                    call.request_id, ErrorCode.SERVER_UNAVAILABLE, "The gateway is shutting down",
                    server=call.server, reason="shutting down",
                )
                self.calls.finish(call, response, Decision.ERROR, error=ErrorCode.SERVER_UNAVAILABLE)
            self.stop(link)
        for pool in ctx.pools.values():
            for link in pool.links():
                self.health.cancel_timers(link)  # restart timers of links that are down
