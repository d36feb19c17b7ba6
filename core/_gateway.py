"""The gateway state machine: :meth:`Gateway.handle` turns events into actions.

Theory of operation
-------------------
Clients talk to the gateway, never to a downstream directly. The gateway
terminates each client's MCP session itself (``initialize``, ``ping``,
``tools/list``) and offers a few gateway tools. ``list_servers`` is answered
from configuration; ``get_server_tools`` from the downstream's cached tool
list; ``execute_tool`` is forwarded as ``tools/call`` under a request id of
the downstream connection's own, and the answer travels back with the
client's id restored and its result untouched.

Every decision about who may see or call what goes through one
:class:`~lockgate.core._policy.Policy`, and every gateway tool call ends in
exactly one audit record. Downstream lifecycles, instances and their
health live in :mod:`lockgate.core._downstream`, the choice of instance in
:mod:`lockgate.core._balance`; this module wires clients, downstreams and
timers together.

Downstream timers. Besides each call's timeout, a downstream may have a
``start`` timer (handshake timeout), a ``health`` timer (next ping), a
``ping`` timer (that ping's timeout; also sent at once when a call timed
out, see :meth:`Gateway._suspect`), an ``idle`` timer and a ``restart`` timer (a shared
downstream that failed starts again after its backoff). Each remembers the
connection it was set for, so a timer of an earlier incarnation does nothing.
A call's timer is not moved by progress notifications (that would be two
actions per notification); the call's ``deadline`` moves, and a timer that
fires early is set again for it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, assert_never

from . import __version__
from ._actions import (
    Action,
    Audit,
    CancelTimer,
    CloseClient,
    Log,
    LogLevel,
    SendToClient,
    SendToDownstream,
    SetTimer,
    StartDownstream,
    StopDownstream,
)
from ._balance import DEFAULT_SEED, xorshift64
from ._config import DEFAULT_MAX_TIMEOUT_MS, Config, ServerSpec
from ._downstream import Call, Downstream, Pool, State
from ._errors import ErrorCode, LocalProtocolError
from ._events import (
    ClientClosed,
    ClientId,
    ClientMessageReceived,
    ClientOpened,
    ConfigRejected,
    ConfigReloaded,
    DownstreamExited,
    DownstreamHttpError,
    DownstreamMessageReceived,
    DownstreamSessionLost,
    Event,
    GatewayStarted,
    ShutdownRequested,
    TimerFired,
)
from ._jsonrpc import Invalid, Notification, Request, Response, decode, error, is_request_id, result
from ._metrics import Extra, Metrics, prometheus_text
from ._policy import Refusal
from ._reload import ReloadStatus
from ._session import LOG_LEVELS, ClientSession, negotiate_version
from ._tools import (
    ArgumentError,
    ExecuteTool,
    GetServerTools,
    GetStatus,
    ListServers,
    ToolCall,
    gateway_tools,
    parse_call,
    select_tools,
    tool_result,
)

__all__ = ["Gateway"]

JSONObject = dict[str, Any]

#: The protocol version the gateway offers each downstream it starts.
DOWNSTREAM_PROTOCOL_VERSION = "2025-11-25"

INSTRUCTIONS = (
    "Tools of other MCP servers are reached through this gateway: call list_servers, "
    "then get_server_tools for a server, then execute_tool."
)


@dataclass(frozen=True, slots=True)
class _DownstreamTimer:
    """What a downstream timer is about: see "Downstream timers" above."""

    ds: Downstream
    connection: int | None
    kind: str


class Gateway:
    """The whole gateway as one synchronous state machine.

    Exactly one task may call :meth:`handle`; actions must be performed in the
    order returned. If ``handle`` raises :class:`LocalProtocolError` the shell
    fed an event it cannot have seen; the state is then undefined.
    """

    def __init__(self, config: Config) -> None:
        self._config = config
        self._clients: dict[ClientId, ClientSession] = {}
        self._pools: dict[str, Pool] = {n: Pool.build(s) for n, s in config.servers.items()}
        self._connections: dict[int, Downstream] = {}
        self._timers: dict[int, Call | _DownstreamTimer] = {}
        self._rng = DEFAULT_SEED
        self._now = 0.0
        self._next_connection = 1
        self._next_timer = 1
        self._closing = False
        self._reload = ReloadStatus()
        self._out: list[Action] = []
        self._metrics = Metrics()
        #: ``now`` of the first event and of the latest one: uptime without a clock.
        self._started_at: float | None = None
        self._now = 0.0
        # Streamable HTTP sessions: last activity per session, one lazily re-armed expiry timer.
        self._http_seen: dict[ClientId, float] = {}
        self._expiry_timer: int | None = None
        self._started = False

    @property
    def config(self) -> Config:
        """The configuration new requests are decided under."""
        return self._config

    def handle(self, event: Event) -> list[Action]:
        """Process one event; return the actions it calls for, in order."""
        out: list[Action] = []
        self._out = out
        self._now = event.now
        if self._started_at is None:
            self._started_at = event.now
        match event:
            case ClientMessageReceived():
                if event.client in self._http_seen:
                    self._http_seen[event.client] = event.now
                self._on_client_message(event)
            case DownstreamMessageReceived():
                self._on_downstream_message(event)
            case TimerFired():
                self._on_timer(event)
            case ClientOpened():
                if event.client in self._clients:
                    raise LocalProtocolError(f"client {event.client!r} is already open")
                self._clients[event.client] = ClientSession(id=event.client, transport=event.transport)
                if event.transport == "http":
                    self._on_http_opened(event.client, event.now)
            case ClientClosed():
                self._on_client_closed(event)
            case DownstreamExited():
                ds = self._connections.pop(event.downstream, None)
                if ds is not None:
                    self._connection_failed(ds, event.reason, event.now, stop=False)
            case DownstreamSessionLost():
                self._on_session_lost(event)
            case DownstreamHttpError():
                self._on_http_error(event)
            case GatewayStarted():
                if event.seed:
                    self._rng = event.seed & 0xFFFFFFFFFFFFFFFF or DEFAULT_SEED
                self._started = True
                if self._config.settings.init_strategy == "eager":
                    for pool in self._pools.values():
                        self._start_eager(pool, event.now)  # only idle ones: a reload may have come first
            case ConfigReloaded():
                self._on_config(event)
            case ConfigRejected():
                self._on_config_rejected(event)
            case ShutdownRequested():
                self._on_shutdown(event)
            case _:
                assert_never(event)
        self._out = []
        return out

    # -- clients ---------------------------------------------------------------

    def _on_client_message(self, ev: ClientMessageReceived) -> None:
        session = self._clients.get(ev.client)
        if session is None:
            raise LocalProtocolError(f"message from client {ev.client!r}, which is not open")
        if ev.too_large:
            limit = self._config.settings.max_message_bytes
            self._reply_error(
                session, None, ErrorCode.INVALID_REQUEST, f"Message exceeds the {limit}-byte limit", limit=limit
            )
            return
        msg = decode(ev.data)
        match msg:
            case Request():
                self._on_client_request(session, msg, ev)
            case Notification():
                self._on_client_notification(session, msg, ev.now)
            case Invalid():
                self._on_client_invalid(session, msg, ev)
            case Response():
                # The gateway sends clients no requests, so no answer is awaited.
                self._log("debug", "ignored a response from a client", client=str(session.id), id=msg.id)

    def _on_client_invalid(self, session: ClientSession, msg: Invalid, ev: ClientMessageReceived) -> None:
        """Answer a frame that is not a valid message (unless it was a notification), and audit a refused call.

        A ``tools/call`` refused at the JSON boundary (a lone surrogate in its
        arguments, say) is still a call: it gets its audit record, with what
        could be salvaged of its name and argument keys and the flaw's location.
        """
        if not msg.answer_owed:
            self._log(
                "warning", "ignored an invalid notification or response",
                client=_client_label(session.id), error=msg.message[:200],
            )
            return
        context: JSONObject = {"path": msg.path} if msg.path is not None else {}
        self._reply_error(session, msg.id, msg.code, msg.message, **context)
        salvaged = msg.salvaged
        if salvaged is None or salvaged.get("method") != "tools/call":
            return
        params = salvaged.get("params")
        name = params.get("name") if isinstance(params, dict) else None
        arguments = params.get("arguments") if isinstance(params, dict) else None
        record: JSONObject = {
            "operation": name[:128] if isinstance(name, str) else None,
            "request_bytes": len(ev.data),
            "arg_keys": sorted(arguments) if isinstance(arguments, dict) else [],
            "invalid": msg.message[:300],
        }
        self._audit(record, decision="ERROR", error_code=msg.code.name, latency=0.0)

    def _on_client_request(self, session: ClientSession, req: Request, ev: ClientMessageReceived) -> None:
        method = req.method
        if method == "ping":
            self._reply(session, req.id, {})
        elif method == "initialize":
            self._initialize(session, req)
        elif self._closing:
            self._reply_error(session, req.id, ErrorCode.SERVER_UNAVAILABLE, "The gateway is shutting down")
        elif not session.initialized:
            self._reply_error(session, req.id, ErrorCode.INVALID_REQUEST, "Session not initialized: send initialize first")
        elif req.id in session.calls:
            self._reply_error(session, req.id, ErrorCode.INVALID_REQUEST, f"Request id {req.id!r} is already in use")
        elif method == "tools/list":
            self._reply(session, req.id, {"tools": gateway_tools(debug=self._config.settings.debug)})
        elif method == "tools/call":
            self._tools_call(session, req, ev)
        elif method == "logging/setLevel":
            level = req.params.get("level")
            if level not in LOG_LEVELS:
                self._reply_error(
                    session, req.id, ErrorCode.INVALID_PARAMS, f"Invalid log level: {level!r}", parameter="level"
                )
            else:
                session.log_level = level
                self._reply(session, req.id, {})
        else:
            # server/discover included: a 2026-07-28 client falls back to initialize on -32601.
            self._reply_error(session, req.id, ErrorCode.METHOD_NOT_FOUND, f"Method not found: {method}")

    def _initialize(self, session: ClientSession, req: Request) -> None:
        if session.initialized:
            self._reply_error(session, req.id, ErrorCode.INVALID_REQUEST, "Session already initialized")
            return
        requested = req.params.get("protocolVersion")
        if not isinstance(requested, str):
            self._reply_error(
                session,
                req.id,
                ErrorCode.INVALID_PARAMS,
                "initialize needs a string protocolVersion",
                parameter="protocolVersion",
            )
            return
        session.initialized = True
        session.protocol_version = negotiate_version(requested)
        session.client_info = req.params.get("clientInfo")
        session.capabilities = req.params.get("capabilities")
        self._reply(
            session,
            req.id,
            {
                "protocolVersion": session.protocol_version,
                "capabilities": {"tools": {"listChanged": False}, "logging": {}},
                "serverInfo": {"name": "lockgate", "version": __version__},
                "instructions": INSTRUCTIONS,
            },
        )

    def _on_client_notification(self, session: ClientSession, note: Notification, now: float) -> None:
        if note.method == "notifications/initialized":
            session.ready = True
        elif note.method == "notifications/cancelled":
            request_id = note.params.get("requestId")
            call = session.calls.get(request_id) if is_request_id(request_id) else None
            if call is not None:
                reason = note.params.get("reason")
                self._abandon(call, now, reason if isinstance(reason, str) else "cancelled by the client")

    def _on_client_closed(self, ev: ClientClosed) -> None:
        self._http_seen.pop(ev.client, None)
        session = self._clients.pop(ev.client, None)
        if session is None:
            return
        for call in list(session.calls.values()):
            self._abandon(call, ev.now, "the client went away")
        self._release_client(ev.client)

    # -- HTTP session expiry -------------------------------------------------------

    def _on_http_opened(self, client: ClientId, now: float) -> None:
        self._http_seen[client] = now
        if self._expiry_timer is None:
            self._arm_expiry(now + self._config.settings.session_ttl)

    def _arm_expiry(self, deadline: float) -> None:
        self._expiry_timer = self._next_timer
        self._next_timer += 1
        self._emit(SetTimer(timer=self._expiry_timer, deadline=deadline))

    def _expire_sessions(self, now: float) -> None:
        """End every HTTP session idle for ``session_ttl`` seconds; re-arm for the next one due.

        One timer serves all sessions: activity only records a time, and the
        timer, when it fires, is set again for the oldest session left.
        """
        self._expiry_timer = None
        ttl = self._config.settings.session_ttl
        for client, seen in list(self._http_seen.items()):
            if now - seen < ttl:
                continue
            del self._http_seen[client]
            session = self._clients.pop(client, None)
            if session is not None:
                for call in list(session.calls.values()):
                    self._abandon(call, now, "the session expired")
                self._release_client(client)
            # Session ids are bearer secrets: log a prefix only.
            self._log("info", "session expired", session=_client_label(client), idle_seconds=round(now - seen, 3))
            self._emit(CloseClient(client=client))
        if self._http_seen:
            self._arm_expiry(min(self._http_seen.values()) + ttl)

    # -- gateway tools ---------------------------------------------------------

    def _tools_call(self, session: ClientSession, req: Request, ev: ClientMessageReceived) -> None:
        name = req.params.get("name")
        arguments = req.params.get("arguments")
        if arguments is None:
            arguments = {}
        record: JSONObject = {
            # A client may send any name; keep the audit line bounded.
            "operation": name[:128] if isinstance(name, str) else None,
            "request_bytes": len(ev.data),
            "arg_keys": sorted(arguments) if isinstance(arguments, dict) else [],
        }
        problem: ToolCall | ArgumentError
        if not isinstance(name, str):
            problem = ArgumentError("name", "tools/call needs a tool name")
        elif not isinstance(arguments, dict):
            problem = ArgumentError("arguments", "tools/call arguments must be an object")
        else:
            parsed = parse_call(name, arguments, debug=self._config.settings.debug)
            problem = ArgumentError("name", f"Unknown tool: {name}") if parsed is None else parsed
        if isinstance(problem, ArgumentError):
            self._reply_error(session, req.id, ErrorCode.INVALID_PARAMS, problem.message, parameter=problem.parameter)
            self._audit(record, decision="ERROR", error_code="INVALID_PARAMS", latency=0.0)
            return
        call = problem
        agent = self._config.policy.resolve_agent(call.agent_id, default_agent=self._config.settings.default_agent)
        if isinstance(agent, Refusal):
            self._refuse(session, req.id, record, agent)
            return
        record["agent"] = agent
        match call:
            case ListServers():
                self._list_servers(session, req.id, agent, call, record)
            case GetStatus():
                self._reply(session, req.id, tool_result(self.status()))
                self._audit(record, decision="ALLOW", latency=0.0)
            case GetServerTools():
                self._route(session, req, ev, agent, call.server, None, call, record)
            case ExecuteTool():
                self._route(session, req, ev, agent, call.server, call.tool, call, record)
            case _:
                assert_never(call)

    def _list_servers(
        self, session: ClientSession, request_id: Any, agent: str, call: ListServers, record: JSONObject
    ) -> None:
        servers = self._config.servers
        entries = []
        for name in self._config.policy.visible_servers(agent, servers):
            entries.append(_describe(servers[name], call.include_metadata))
        self._reply(session, request_id, tool_result(entries))
        self._audit(record, decision="ALLOW", latency=0.0)

    def _route(
        self,
        session: ClientSession,
        req: Request,
        ev: ClientMessageReceived,
        agent: str,
        server: str,
        tool: str | None,
        call: GetServerTools | ExecuteTool,
        record: JSONObject,
    ) -> None:
        """Check policy for a server (and tool), then hand the call to its downstream."""
        record["server"] = server
        if tool is not None:
            record["tool"] = tool
        policy = self._config.policy
        decision = policy.decide_server(agent, server) if tool is None else policy.decide(agent, server, tool)
        if not decision.allowed:
            what = f"server '{server}'" if tool is None else f"tool '{tool}' on server '{server}'"
            self._refuse(session, req.id, record, Refusal(ErrorCode.DENIED_BY_POLICY, f"Access to {what} is denied", decision.rule))
            return
        record["rule"] = decision.rule
        pool = self._pools.get(server)
        if pool is None:
            self._reply_error(
                session,
                req.id,
                ErrorCode.SERVER_UNAVAILABLE,
                f"Server '{server}' is not configured",
                server=server,
                reason="not configured",
            )
            self._audit(record, decision="ERROR", error_code="SERVER_UNAVAILABLE", latency=0.0)
            return
        ds = self._choose(pool, session.id, ev.now, prefer_running=tool is None)
        if isinstance(ds, str):
            self._reply_error(
                session, req.id, ErrorCode.SERVER_UNAVAILABLE, f"Server '{server}' is unavailable: {ds}",
                server=server, reason=ds,
            )
            self._audit(record, decision="ERROR", error_code="SERVER_UNAVAILABLE", latency=0.0)
            return
        settings = self._config.settings
        if isinstance(call, ExecuteTool):
            timeout_ms = call.timeout_ms or pool.spec.timeout_ms or settings.call_timeout_ms
        else:
            timeout_ms = settings.call_timeout_ms
        # Progress may extend a call up to this cap, never shorten it.
        cap_ms = max(timeout_ms, pool.spec.max_timeout_ms or DEFAULT_MAX_TIMEOUT_MS)
        meta = req.params.get("_meta")
        c = Call(
            client=session.id,
            request_id=req.id,
            op="execute_tool" if tool is not None else "get_server_tools",
            agent=agent,
            server=server,
            tool=tool,
            rule=decision.rule,
            started=ev.now,
            timer=self._set_timer(ev.now + timeout_ms / 1000),
            timeout_ms=timeout_ms,
            params=call,
            progress_token=meta.get("progressToken") if isinstance(meta, dict) else None,
            request_bytes=record["request_bytes"],
            arg_keys=tuple(record["arg_keys"]),
            deadline=ev.now + timeout_ms / 1000,
            hard_deadline=ev.now + cap_ms / 1000,
        )
        self._timers[c.timer] = c
        session.calls[req.id] = c
        self._assign(ds, c, ev.now)

    def _dispatch(self, ds: Downstream, call: Call, now: float) -> None:
        """Serve a call on a READY downstream: from the cache, or by forwarding it."""
        params = call.params
        if isinstance(params, GetServerTools):
            assert ds.tools is not None
            policy = self._config.policy
            allowed = [t for t in ds.tools if policy.decide(call.agent, ds.name, t.get("name", "")).allowed]
            chosen, used = select_tools(
                allowed, names=params.names, pattern=params.pattern, max_tokens=params.max_schema_tokens
            )
            value = {
                "tools": chosen,
                "server": ds.name,
                "total_available": len(allowed),
                "returned": len(chosen),
                "tokens_used": used,
            }
            self._finish(call, now, response=result(call.request_id, tool_result(value)), decision="ALLOW")
            return
        assert isinstance(params, ExecuteTool)
        if params.tool not in ds.tool_names:
            self._finish(
                call, now,
                response=self._error(
                    call.request_id, ErrorCode.TOOL_NOT_FOUND, f"Tool '{params.tool}' not found on server '{ds.name}'",
                    server=ds.name, tool=params.tool,
                ),
                decision="ERROR", error_code="TOOL_NOT_FOUND",
            )
            return
        wire_id = ds.take_wire_id()
        forwarded: JSONObject = {"name": params.tool, "arguments": params.args}
        if call.progress_token is not None:
            # Our own token, unique per downstream call; mapped back on the way out.
            forwarded["_meta"] = {"progressToken": wire_id}
        call.wire_id = wire_id
        call.connection = ds.connection
        ds.pending[wire_id] = call
        assert ds.connection is not None
        self._emit(
            SendToDownstream(
                downstream=ds.connection,
                message={"jsonrpc": "2.0", "id": wire_id, "method": "tools/call", "params": forwarded},
            )
        )

    def _finish(
        self,
        call: Call,
        now: float,
        *,
        response: JSONObject | None,
        decision: str,
        error_code: str | None = None,
    ) -> None:
        """End a call: forget it, stop its timer, answer (unless cancelled) and audit it."""
        session = self._clients.get(call.client)
        if session is not None:
            session.calls.pop(call.request_id, None)
        if self._timers.pop(call.timer, None) is not None:
            self._emit(CancelTimer(timer=call.timer))
        if response is not None and session is not None:
            self._emit(SendToClient(client=call.client, message=response, request=call.request_id))
        record: JSONObject = {
            "agent": call.agent,
            "operation": call.op,
            "server": call.server,
            "tool": call.tool,
            "rule": call.rule,
            "request_bytes": call.request_bytes,
            "arg_keys": list(call.arg_keys),
        }
        self._audit(record, decision=decision, error_code=error_code, latency=now - call.started)
        owner = self._connections.get(call.connection) if call.connection is not None else None
        if owner is not None:
            owner.last_active = now
            self._arm_idle(owner, now)
            self._retire_if_idle(owner)

    def _abandon(self, call: Call, now: float, reason: str) -> None:
        """Drop a call nobody waits for any more, telling its downstream to stop."""
        self._unlink(call, reason)
        self._finish(call, now, response=None, decision="ERROR", error_code="CANCELLED")

    def _unlink(self, call: Call, reason: str) -> None:
        """Remove a call from its downstream, cancelling the forwarded request if any."""
        ds = self._connections.get(call.connection) if call.connection is not None else None
        if ds is None:
            return
        if call.wire_id is not None and ds.pending.pop(call.wire_id, None) is not None:
            # MCP 2025-11-25, basic/utilities/cancellation.
            assert ds.connection is not None
            self._emit(
                SendToDownstream(
                    downstream=ds.connection,
                    message={
                        "jsonrpc": "2.0",
                        "method": "notifications/cancelled",
                        "params": {"requestId": call.wire_id, "reason": reason},
                    },
                )
            )
        elif call in ds.waiters:
            ds.waiters.remove(call)

    def _refuse(self, session: ClientSession, request_id: Any, record: JSONObject, refusal: Refusal) -> None:
        context: JSONObject = {}
        if refusal.rule is not None:
            context["rule"] = refusal.rule
        self._reply_error(session, request_id, refusal.code, refusal.message, **context)
        decision = "DENY" if refusal.code is ErrorCode.DENIED_BY_POLICY else "ERROR"
        self._audit({**record, "rule": refusal.rule}, decision=decision, error_code=refusal.code.name, latency=0.0)

    # -- downstreams -----------------------------------------------------------

    def _choose(
        self,
        pool: Pool,
        client: ClientId,
        now: float,
        *,
        exclude: tuple[int, ...] = (),
        prefer_running: bool = False,
    ) -> Downstream | str:
        """The downstream to serve a request of ``client``, or why there is none (see :meth:`Pool.choose`)."""
        draw = 0
        if pool.spec.strategy == "random":
            self._rng = xorshift64(self._rng)
            draw = self._rng
        return pool.choose(client, now, exclude=exclude, prefer_running=prefer_running, draw=draw)

    def _assign(self, ds: Downstream, call: Call, now: float) -> None:
        """Hand a call to a downstream: serve it now, or wait for (and start) the connection."""
        call.tried = (*call.tried, ds.instance.index)
        if ds.state is State.READY and ds.suspect is None:
            self._dispatch(ds, call, now)
            return
        if ds.state in (State.IDLE, State.BACKOFF):
            self._start(ds, now)
        call.connection = ds.connection
        ds.waiters.append(call)

    def _start_eager(self, pool: Pool, now: float) -> None:
        """Start a shared server's instances up front, within its process cap."""
        cap = pool.spec.max_processes
        for ds in pool.shared[:cap]:
            if ds.state is State.IDLE:
                self._start(ds, now)

    def _release_client(self, client: ClientId) -> None:
        """A client is gone: stop the downstream sessions it had to itself."""
        for pool in self._pools.values():
            ds = pool.clients.pop(client, None)
            if ds is not None:
                self._stop(ds)

    def _start(self, ds: Downstream, now: float) -> None:
        """Open a new connection to an instance and begin its MCP handshake."""
        connection = self._next_connection
        self._next_connection += 1
        self._cancel_ds_timer(ds, "restart")
        instance = ds.instance
        if instance.breaker(now) == "half_open":
            instance.probing = True
        ds.move(State.STARTING)
        ds.connection = connection
        ds.next_wire_id = 1
        ds.pending = {}
        ds.internal = {}
        ds.listing = []
        ds.garbage_lines = 0
        ds.suspect = None
        instance.starts += 1
        self._connections[connection] = ds
        self._emit(StartDownstream(downstream=connection, server=ds.name, spec=ds.spec, instance=instance.index))
        self._send_initialize(ds, now)

    def _send_initialize(self, ds: Downstream, now: float) -> None:
        """Begin the MCP handshake on ``ds``'s connection, under the start timer."""
        connection = ds.connection
        assert connection is not None
        wire_id = ds.take_wire_id()
        ds.internal[wire_id] = "initialize"
        ds.session_wire = wire_id
        self._emit(
            SendToDownstream(
                downstream=connection,
                message={
                    "jsonrpc": "2.0",
                    "id": wire_id,
                    "method": "initialize",
                    "params": {
                        "protocolVersion": DOWNSTREAM_PROTOCOL_VERSION,
                        "capabilities": {},
                        "clientInfo": {"name": "lockgate", "version": __version__},
                    },
                },
            )
        )
        self._set_ds_timer(ds, "start", now + self._config.settings.start_timeout_ms / 1000)

    def _on_downstream_message(self, ev: DownstreamMessageReceived) -> None:
        ds = self._connections.get(ev.downstream)
        if ds is None:
            return  # a connection we already stopped
        msg = decode(ev.data)
        match msg:
            case Response():
                self._on_downstream_response(ds, msg, ev.now)
            case Notification():
                self._on_downstream_notification(ds, msg, ev.now)
            case Request():
                # No client capabilities were declared downstream, so only ping is owed an answer.
                if msg.method == "ping":
                    reply = result(msg.id, {})
                else:
                    reply = error(msg.id, ErrorCode.METHOD_NOT_FOUND, f"Method not supported by the gateway: {msg.method}")
                self._emit(SendToDownstream(downstream=ev.downstream, message=reply))
            case Invalid():
                self._on_downstream_invalid(ds, msg, ev.now)

    def _on_downstream_invalid(self, ds: Downstream, msg: Invalid, now: float) -> None:
        """A downstream wrote something that is not a valid message.

        An answer to one of our requests that cannot be forwarded (a lone
        surrogate or ``NaN`` in a result, say) still answers it: the call
        fails at once with -32603 instead of waiting for its timeout. A
        request the server sent that way gets the error it earned. Anything
        else is noise on the line, logged a few times.
        """
        wire_id = msg.id
        if isinstance(wire_id, int) and (wire_id in ds.pending or wire_id in ds.internal):
            reason = f"sent an answer that cannot be forwarded ({msg.message[:200]})"
            data: JSONObject = {"code": ErrorCode.INTERNAL_ERROR.name, "server": ds.name, "reason": reason}
            if msg.path is not None:
                data["path"] = msg.path
            err = {"code": int(ErrorCode.INTERNAL_ERROR), "message": f"Server '{ds.name}' {reason}", "data": data}
            self._log("warning", "server sent an answer that cannot be forwarded", server=ds.name, error=msg.message[:200])
            self._on_downstream_response(ds, Response(wire_id, {"jsonrpc": "2.0", "id": wire_id, "error": err}), now)
            return
        if msg.id is not None and msg.answer_owed and msg.salvaged is not None and "method" in msg.salvaged:
            assert ds.connection is not None
            self._emit(SendToDownstream(downstream=ds.connection, message=error(msg.id, msg.code, msg.message)))
            return
        ds.garbage_lines += 1
        # Say it a few times, not once per line of a chatty server.
        level: LogLevel = "warning" if ds.garbage_lines <= 3 else "debug"
        self._log(level, "ignored output that is not JSON-RPC", server=ds.name, error=msg.message[:200])

    def _on_downstream_response(self, ds: Downstream, msg: Response, now: float) -> None:
        wire_id = msg.id
        if not isinstance(wire_id, int):
            return
        call = ds.pending.pop(wire_id, None)
        if call is not None:
            ds.instance.answered()
            raw = msg.raw
            if "error" in raw:
                response = {"jsonrpc": "2.0", "id": call.request_id, "error": raw["error"]}
                self._finish(call, now, response=response, decision="ALLOW", error_code="DOWNSTREAM_ERROR")
            else:
                response = {"jsonrpc": "2.0", "id": call.request_id, "result": raw["result"]}
                self._finish(call, now, response=response, decision="ALLOW")
            return
        kind = ds.internal.pop(wire_id, None)
        if kind == "initialize":
            self._on_initialized(ds, msg, now)
        elif kind == "tools/list":
            self._on_tools_page(ds, wire_id, msg, now)
        elif kind == "ping":
            # Any answer, even an error, shows the instance is alive.
            self._cancel_ds_timer(ds, "ping")
            ds.instance.answered()
            self._schedule_health(ds, now)
            if ds.suspect is not None:
                ds.suspect = None
                self._log("info", "server answered a health check after a call timed out", server=ds.name)
                self._drain_waiters(ds, now)

    def _on_initialized(self, ds: Downstream, msg: Response, now: float) -> None:
        res = msg.raw.get("result")
        if not isinstance(res, dict):
            err = msg.raw.get("error")
            detail = err.get("message") if isinstance(err, dict) else None
            detail = detail[:200] if isinstance(detail, str) else None
            self._fail(ds, f"initialize failed: {detail or 'no result'}", now)
            return
        version = res.get("protocolVersion")
        ds.protocol_version = version if isinstance(version, str) else None
        info = res.get("serverInfo")
        ds.server_info = info if isinstance(info, dict) else None
        assert ds.connection is not None
        self._emit(
            SendToDownstream(
                downstream=ds.connection, message={"jsonrpc": "2.0", "method": "notifications/initialized"}
            )
        )
        ds.move(State.LISTING)
        self._request_tools(ds, None)

    def _request_tools(self, ds: Downstream, cursor: str | None) -> None:
        wire_id = ds.take_wire_id()
        ds.internal[wire_id] = "tools/list"
        ds.listing_wire = wire_id
        message: JSONObject = {"jsonrpc": "2.0", "id": wire_id, "method": "tools/list"}
        if cursor is not None:
            message["params"] = {"cursor": cursor}
        else:
            ds.listing = []
        assert ds.connection is not None
        self._emit(SendToDownstream(downstream=ds.connection, message=message))

    def _on_tools_page(self, ds: Downstream, wire_id: int, msg: Response, now: float) -> None:
        if wire_id != ds.listing_wire:
            return  # superseded by a newer listing after list_changed
        res = msg.raw.get("result")
        if isinstance(res, dict) and isinstance(res.get("tools"), list):
            ds.listing.extend(t for t in res["tools"] if isinstance(t, dict) and isinstance(t.get("name"), str))
            cursor = res.get("nextCursor")
            if isinstance(cursor, str) and cursor:
                self._request_tools(ds, cursor)
                return
        else:
            # A server without tools may answer -32601; it simply offers none.
            self._log("warning", "tools/list failed; serving no tools", server=ds.name)
        ds.listing_wire = None
        ds.set_tools(ds.listing)
        ds.listing = []
        if ds.state is State.LISTING:
            ds.move(State.READY)
            ds.instance.answered()
            self._cancel_ds_timer(ds, "start")
            self._log("info", "server ready", server=ds.name, tools=len(ds.tools or ()), protocol=ds.protocol_version)
            self._schedule_health(ds, now)
            ds.last_active = now
            self._arm_idle(ds, now)
            self._drain_waiters(ds, now)

    def _drain_waiters(self, ds: Downstream, now: float) -> None:
        """Serve the calls that waited for ``ds`` to be READY (and not suspect), in order."""
        # One at a time, the rest still queued: a server a reload retired
        # must not look idle (and be stopped) before the last waiter is sent.
        while ds.waiters and ds.connection is not None and ds.state is State.READY and ds.suspect is None:
            self._dispatch(ds, ds.waiters.pop(0), now)

    def _on_downstream_notification(self, ds: Downstream, note: Notification, now: float) -> None:
        method = note.method
        if method == "notifications/progress":
            token = note.params.get("progressToken")
            call = ds.pending.get(token) if isinstance(token, int) else None
            if call is not None:
                # Progress shows the call is alive: it gets its full timeout again, up to the cap.
                call.deadline = min(now + call.timeout_ms / 1000, call.hard_deadline)
            if call is not None and call.progress_token is not None:
                params = {**note.params, "progressToken": call.progress_token}
                self._emit(
                    SendToClient(
                        client=call.client,
                        message={"jsonrpc": "2.0", "method": "notifications/progress", "params": params},
                        request=call.request_id,
                    )
                )
        elif method == "notifications/tools/list_changed":
            if ds.state is State.READY:
                self._request_tools(ds, None)
        elif method == "notifications/message":
            self._log(
                "info",
                "server log message",
                server=ds.name,
                server_level=note.params.get("level"),
                data=note.params.get("data"),
            )

    def _fail(self, ds: Downstream, reason: str, now: float, *, kill: bool = False) -> None:
        """Give up on a live connection: stop (or, hung, kill) it and fail what depends on it."""
        assert ds.connection is not None
        self._connections.pop(ds.connection, None)
        self._connection_failed(ds, reason, now, stop=True, kill=kill)

    def _connection_failed(self, ds: Downstream, reason: str, now: float, *, stop: bool, kill: bool = False) -> None:
        """A connection is gone (already removed from ``_connections``).

        Calls that never reached it fail over to another instance; forwarded
        calls fail at once unless the server allows ``retry_calls``. A shared
        downstream starts again after its backoff; a per-client one is
        forgotten (its session state died with it), so the client's next use
        starts a fresh one.
        """
        connection = ds.connection
        assert connection is not None
        if stop:
            self._emit(StopDownstream(downstream=connection, kill=kill))
        self._cancel_ds_timers(ds)
        ds.connection = None
        ds.internal = {}
        ds.instance.failed(reason, now)
        ds.move(State.BACKOFF)
        self._log("warning", "server unavailable", server=ds.name, instance=ds.instance.index, reason=reason)
        calls = [*ds.pending.values(), *ds.waiters]
        ds.pending = {}
        ds.waiters = []
        pool = self._pools.get(ds.name)
        current = pool is not None and (
            ds in pool.shared or (ds.client is not None and pool.clients.get(ds.client) is ds)
        )
        if ds.client is not None:
            if pool is not None and current:
                del pool.clients[ds.client]
            ds.move(State.IDLE)
        elif current and not self._closing and not ds.retiring:
            self._set_ds_timer(ds, "restart", ds.instance.retry_at)
        for call in calls:
            reached = call.wire_id is not None
            if pool is not None and current and (not reached or ds.entry.retry_calls) and self._failover(pool, call, now):
                continue
            self._fail_call(ds, call, reason, now)

    def _failover(self, pool: Pool, call: Call, now: float) -> bool:
        """Give a call whose downstream failed to another instance; False when there is none."""
        if call.client not in self._clients or self._closing:
            return False
        ds = self._choose(pool, call.client, now, exclude=call.tried, prefer_running=call.op == "get_server_tools")
        if isinstance(ds, str):
            return False
        call.wire_id = None
        call.connection = None
        self._log("info", "request moved to another instance", server=pool.name, instance=ds.instance.index)
        self._assign(ds, call, now)
        return True

    def _stop(self, ds: Downstream) -> None:
        """Stop a downstream on purpose (idle, client gone, reload, shutdown); nothing must be pending."""
        if ds.state in (State.STARTING, State.LISTING):
            ds.instance.probing = False  # a probe that was stopped proves nothing
        if ds.connection is not None:
            self._connections.pop(ds.connection, None)
            self._emit(StopDownstream(downstream=ds.connection))
            ds.connection = None
        self._cancel_ds_timers(ds)
        ds.internal = {}
        ds.move(State.IDLE)

    def _retire_if_idle(self, ds: Downstream) -> None:
        if ds.retiring and not ds.pending and not ds.waiters:
            self._stop(ds)

    # -- health, idle and downstream timers ------------------------------------

    def _set_ds_timer(self, ds: Downstream, kind: str, deadline: float) -> None:
        self._cancel_ds_timer(ds, kind)
        timer = self._set_timer(deadline)
        self._timers[timer] = _DownstreamTimer(ds, ds.connection, kind)
        ds.timers[kind] = timer

    def _cancel_ds_timer(self, ds: Downstream, kind: str) -> None:
        timer = ds.timers.pop(kind, None)
        if timer is not None and self._timers.pop(timer, None) is not None:
            self._emit(CancelTimer(timer=timer))

    def _cancel_ds_timers(self, ds: Downstream) -> None:
        for kind in list(ds.timers):
            self._cancel_ds_timer(ds, kind)

    def _health_interval(self, ds: Downstream) -> float:
        interval = ds.entry.health_interval
        return self._config.settings.health_interval if interval is None else interval

    def _health_timeout(self, ds: Downstream) -> float:
        timeout = ds.entry.health_timeout
        return self._config.settings.health_timeout if timeout is None else timeout

    def _schedule_health(self, ds: Downstream, now: float) -> None:
        interval = self._health_interval(ds)
        if interval > 0 and ds.state is State.READY:
            self._set_ds_timer(ds, "health", now + interval)

    def _ping(self, ds: Downstream, now: float) -> None:
        """Send a health-check ping (MCP 2025-11-25, basic/utilities/ping) with its own timeout."""
        assert ds.connection is not None
        wire_id = ds.take_wire_id()
        ds.internal[wire_id] = "ping"
        self._emit(SendToDownstream(downstream=ds.connection, message={"jsonrpc": "2.0", "id": wire_id, "method": "ping"}))
        self._set_ds_timer(ds, "ping", now + self._health_timeout(ds))

    def _arm_idle(self, ds: Downstream, now: float) -> None:
        idle = ds.entry.idle_timeout
        if idle is not None and ds.state is State.READY and "idle" not in ds.timers and not ds.in_flight:
            self._set_ds_timer(ds, "idle", ds.last_active + idle)

    def _on_downstream_timer(self, target: _DownstreamTimer, now: float) -> None:
        ds = target.ds
        ds.timers.pop(target.kind, None)
        if ds.connection != target.connection:
            return  # about an earlier connection
        match target.kind:
            case "start":
                if ds.state in (State.STARTING, State.LISTING):
                    seconds = self._config.settings.start_timeout_ms / 1000
                    self._fail(ds, f"did not finish its MCP handshake within {seconds:g} s", now)
            case "health":
                if ds.state is State.READY and "ping" not in ds.timers:
                    self._ping(ds, now)
            case "ping":
                reason = f"did not answer a health check within {self._health_timeout(ds):g} s"
                if ds.suspect is not None:
                    reason = f"stopped answering ({ds.suspect}, and it {reason})"
                self._hung(ds, reason, now)
            case "idle":
                idle = ds.entry.idle_timeout
                if ds.state is not State.READY or ds.in_flight or idle is None:
                    return  # busy: the call that ends last arms it again
                if now < ds.last_active + idle:
                    self._set_ds_timer(ds, "idle", ds.last_active + idle)
                    return
                self._log("info", "stopped an idle server", server=ds.name, instance=ds.instance.index)
                self._stop(ds)
            case "restart":
                if ds.state is State.BACKOFF and not ds.retiring and not self._closing and ds.instance.accepts(now):
                    self._start(ds, now)

    # -- HTTP downstreams: lost sessions and error statuses ----------------------

    def _on_session_lost(self, ev: DownstreamSessionLost) -> None:
        """An HTTP server lost our MCP session: handshake again, then resend what it refused.

        A 404 to a message sent under a session means the server did not
        process it (MCP 2025-11-25, basic/transports, "Session Management"),
        so a refused ``tools/call`` is sent once more, with a new wire id, as
        soon as the new session is READY; until then it waits with the other
        calls, under its own timer. A call refused twice fails with
        ``SERVER_UNAVAILABLE``, and so does the whole connection when the
        session the handshake just opened is lost too. Refusals of messages
        sent under an older session (wire id below the latest ``initialize``)
        need no new handshake.
        """
        ds = self._connections.get(ev.downstream)
        if ds is None:
            return
        sent = decode(ev.data) if ev.data is not None else None
        wire_id = sent.id if isinstance(sent, Request) and isinstance(sent.id, int) else None
        if wire_id is None or wire_id >= ds.session_wire:
            if ds.state is not State.READY:
                self._fail(ds, "lost its MCP session during the handshake", ev.now)
                return
            self._log("info", "server lost our MCP session; opening a new one", server=ds.name)
            # Health, ping and idle timers belong to the lost session; READY arms them again.
            self._cancel_ds_timers(ds)
            ds.move(State.STARTING)
            self._send_initialize(ds, ev.now)
        if wire_id is None:
            return
        ds.internal.pop(wire_id, None)  # a refused tools/list: the new handshake lists again
        call = ds.pending.pop(wire_id, None)
        if call is None:
            return
        if call.resent:
            self._fail_call(ds, call, "lost its MCP session twice in a row", ev.now)
            return
        call.resent = True
        call.wire_id = None
        if ds.state is State.READY:
            self._dispatch(ds, call, ev.now)
        else:
            ds.waiters.append(call)

    def _on_http_error(self, ev: DownstreamHttpError) -> None:
        """Decide what an HTTP error status from a downstream means.

        - 401: the server wants credentials we do not have; nothing on this
          connection can work, so it fails (and restarts with backoff).
        - A request answered 4xx with a JSON-RPC error body: that error is
          the request's answer; the connection is fine.
        - A request answered 4xx without one: that request fails with
          ``SERVER_UNAVAILABLE``, or the connection when it was the
          gateway's own (``initialize``, ``tools/list``).
        - 5xx and anything else on a request: the server is broken; the
          connection fails.
        - A notification or a response: nothing waits for an answer; logged.
        """
        ds = self._connections.get(ev.downstream)
        if ds is None:
            return
        reason = f"HTTP status {ev.status} from the server"
        if ev.status == 401:
            self._fail(ds, "authentication required", ev.now)
            return
        sent = decode(ev.data) if ev.data is not None else None
        if not isinstance(sent, Request) or not isinstance(sent.id, int):
            method = sent.method if isinstance(sent, Notification) else None
            self._log("warning", "server refused a message", server=ds.name, status=ev.status, method=method)
            return
        if 400 <= ev.status < 500:
            err = _jsonrpc_error(ev.body)
            if err is not None:
                answer = {"jsonrpc": "2.0", "id": sent.id, "error": err}
                self._on_downstream_response(ds, Response(sent.id, answer), ev.now)
                return
            call = ds.pending.pop(sent.id, None)
            if call is not None:
                self._fail_call(ds, call, reason, ev.now)
                return
            if sent.id not in ds.internal:
                return  # a request already answered or abandoned
        self._fail(ds, reason, ev.now)

    def _fail_call(self, ds: Downstream, call: Call, reason: str, now: float) -> None:
        """Answer one call with ``SERVER_UNAVAILABLE`` (the connection is not touched)."""
        self._finish(
            call, now,
            response=self._error(
                call.request_id, ErrorCode.SERVER_UNAVAILABLE, f"Server '{ds.name}' is unavailable: {reason}",
                server=ds.name, reason=reason,
            ),
            decision="ERROR", error_code="SERVER_UNAVAILABLE",
        )

    # -- timers, reload, shutdown ----------------------------------------------

    def _set_timer(self, deadline: float) -> int:
        timer = self._next_timer
        self._next_timer += 1
        self._emit(SetTimer(timer=timer, deadline=deadline))
        return timer

    def _on_timer(self, ev: TimerFired) -> None:
        if ev.timer == self._expiry_timer:
            self._expire_sessions(ev.now)
            return
        target = self._timers.pop(ev.timer, None)
        if target is None:
            return  # cancelled after it fired, before we saw it
        if isinstance(target, _DownstreamTimer):
            self._on_downstream_timer(target, ev.now)
            return
        call = target
        if ev.now < call.deadline:
            # Progress moved the deadline on since this timer was set.
            call.timer = self._set_timer(call.deadline)
            self._timers[call.timer] = call
            return
        ds = self._connections.get(call.connection) if call.connection is not None else None
        forwarded = ds is not None and call.wire_id is not None and call.wire_id in ds.pending
        self._unlink(call, f"timed out after {call.timeout_ms} ms")
        context: JSONObject = {"server": call.server, "timeout_ms": call.timeout_ms}
        message = f"No answer from server '{call.server}' within {call.timeout_ms} ms"
        if call.deadline > call.started + call.timeout_ms / 1000:
            waited = round((call.deadline - call.started) * 1000)
            message = f"No answer from server '{call.server}' within {waited} ms (progress extended its {call.timeout_ms} ms timeout)"
            context["waited_ms"] = waited
        self._finish(
            call, ev.now,
            response=self._error(call.request_id, ErrorCode.TIMEOUT, message, **context),
            decision="ERROR", error_code="TIMEOUT",
        )
        if ds is not None and forwarded and ds.connection is not None:
            self._suspect(ds, f"a call timed out after {call.timeout_ms} ms", ev.now)

    def _suspect(self, ds: Downstream, why: str, now: float) -> None:
        """A forwarded call got no answer in time: is the instance alive, or only that call slow?

        A ping goes out at once (unless one is under way). Until it is
        answered, new calls for this connection wait instead of joining the
        ones that may be stuck; they have reached nothing, so whatever the
        ping shows costs them no more than their own timeout. An answer
        clears the doubt (a slow tool is not a broken server); no answer
        means the instance hung (:meth:`_hung`). However many calls time
        out together, they are one suspicion and one ping, not a failure
        each: counting them one by one once pushed the restart backoff of a
        briefly stuck server to its 30 s cap.
        """
        if ds.state is not State.READY or ds.suspect is not None:
            return
        ds.suspect = why
        self._log("warning", "a call timed out; checking that the server is alive", server=ds.name, reason=why)
        self._cancel_ds_timer(ds, "health")
        if "ping" not in ds.timers:
            self._ping(ds, now)

    def _hung(self, ds: Downstream, reason: str, now: float) -> None:
        """A live connection stopped answering (a ping timed out): kill it and serve its waiters anew.

        The process (its whole group) is killed at once: a hung or stopped
        process reacts to neither a closed stdin nor SIGTERM. Forwarded calls
        fail, as for a crash; calls that were waiting never reached it, so
        they are routed again, which starts the instance again at once. A
        server that hung once gets no backoff: only starts that fail in a
        row (a server that crashes on start) wait longer each time.
        """
        waiting, ds.waiters = ds.waiters, []
        self._fail(ds, reason, now, kill=True)
        pool = self._pools.get(ds.name)
        for call in waiting:
            target = self._choose(pool, call.client, now) if pool is not None and call.client in self._clients else None
            if isinstance(target, Downstream):
                call.wire_id = None
                call.connection = None
                self._assign(target, call, now)
            else:
                self._fail_call(ds, call, target or reason, now)

    def _on_config(self, ev: ConfigReloaded) -> None:
        """Swap configuration between two events; running calls finish as they started.

        Policy and descriptions apply from the next request on. A server whose
        spec changed, or that is gone, keeps its connections until their calls
        end (``retiring``); a changed or added one gets a fresh :class:`Pool`,
        started now under the eager strategy.
        """
        new = ev.config
        old_pools = self._pools
        self._config = new
        self._pools = {}
        changed: list[str] = []
        added: list[str] = []
        for name, spec in new.servers.items():
            pool = old_pools.pop(name, None)
            if pool is not None and pool.spec == spec:
                self._pools[name] = pool
                continue
            if pool is not None:
                changed.append(name)
                self._retire(pool)
            else:
                added.append(name)
            fresh = Pool.build(spec)
            self._pools[name] = fresh
            if new.settings.init_strategy == "eager" and not self._closing:
                self._start_eager(fresh, ev.now)
        for pool in old_pools.values():
            self._retire(pool)
        self._reload.succeeded(at=ev.time if ev.time is not None else ev.now, files=ev.files, warnings=new.warnings)
        self._log(
            "notice", "configuration reloaded",
            files=list(ev.files), added=added, removed=sorted(old_pools), changed=changed,
            agents=len(new.policy.agents),
        )
        for warning in new.warnings:
            self._log("warning", warning.message, file=warning.file, path=warning.path)

    def _retire(self, pool: Pool) -> None:
        """A reload removed or changed this server: stop each downstream once it has nothing in flight."""
        for ds in pool.sessions():
            ds.retiring = True
            self._retire_if_idle(ds)

    def _on_config_rejected(self, ev: ConfigRejected) -> None:
        """Record a refused reload and say why; the running configuration stays."""
        self._reload.failed(
            at=ev.time if ev.time is not None else ev.now, files=ev.files, problems=ev.problems, warnings=ev.warnings
        )
        for problem in ev.problems:
            self._log(
                "error", f"configuration rejected, keeping the running one: {problem.message}",
                file=problem.file, path=problem.path,
            )

    def _on_shutdown(self, ev: ShutdownRequested) -> None:
        self._closing = True
        for ds in {id(d): d for d in self._connections.values()}.values():
            calls = [*ds.pending.values(), *ds.waiters]
            ds.pending = {}
            ds.waiters = []
            for call in calls:
                self._finish(
                    call, ev.now,
                    response=self._error(
                        call.request_id, ErrorCode.SERVER_UNAVAILABLE, "The gateway is shutting down",
                        server=call.server, reason="shutting down",
                    ),
                    decision="ERROR", error_code="SERVER_UNAVAILABLE",
                )
            self._stop(ds)
        for pool in self._pools.values():
            for ds in pool.sessions():
                self._cancel_ds_timers(ds)  # restart timers of downstreams that are down

    # -- status, metrics and output helpers ------------------------------------

    def uptime(self, now: float) -> float:
        """Seconds since the first event the gateway handled."""
        return 0.0 if self._started_at is None else max(0.0, now - self._started_at)

    def metrics_json(self, now: float) -> JSONObject:
        """The JSON ``/metrics`` view: call counts, errors and latency per operation, agent and server.

        The shell adds a wall-clock ``timestamp``; the core has no such clock.
        """
        return {
            **self._metrics.snapshot(uptime=self.uptime(now)),
            "clients": len(self._clients),
            "calls_in_flight": sum(len(s.calls) for s in self._clients.values()),
            "reload": self.reload_status(),
        }

    def metrics_prometheus(self, now: float) -> str:
        """The Prometheus text exposition of the same metrics, plus live gauges."""
        extra: Extra = {
            "clients": ("gauge", "Client sessions open now.", {(): len(self._clients)}),
            "calls_in_flight": (
                "gauge",
                "Gateway tool calls waiting for a downstream.",
                {(): sum(len(s.calls) for s in self._clients.values())},
            ),
            "server_state": (
                "gauge",
                "1 for the state each configured server is in (see server_states).",
                {(("server", name), ("state", state)): 1 for name, state in self.server_states().items()},
            ),
            "config_reloads_total": (
                "counter",
                "Configuration reload attempts since start-up, by result.",
                {
                    (("result", "ok"),): self._reload.successes,
                    (("result", "rejected"),): self._reload.failures,
                },
            ),
        }
        return prometheus_text(self._metrics, uptime=self.uptime(now), extra=extra)

    def status(self) -> JSONObject:
        """A JSON snapshot of the gateway for ``get_gateway_status`` and operators."""
        return {
            "version": __version__,
            "uptime_seconds": round(self.uptime(self._now), 3),
            "servers": {name: pool.status(self._now) for name, pool in self._pools.items()},
            "clients": len(self._clients),
            "calls_in_flight": sum(len(s.calls) for s in self._clients.values()),
            "init_strategy": self._config.settings.init_strategy,
            "config_warnings": [str(w) for w in self._config.warnings],
            "reload": self.reload_status(),
            "metrics": self._metrics.snapshot(uptime=self.uptime(self._now)),
        }

    def reload_status(self) -> JSONObject:
        """Configuration reloads so far (see :class:`~.reload.ReloadStatus`), as JSON.

        ``draining`` lists the servers a reload removed or changed whose old
        connection is still finishing calls under the old configuration.
        """
        status = self._reload.snapshot()
        status["draining"] = sorted({ds.name for ds in self._connections.values() if ds.retiring})
        return status

    def server_tools(self, name: str) -> list[JSONObject] | None:
        """A copy of the tool definitions server ``name`` listed, as it sent them.

        ``None`` when the server is not configured or has not listed its tools
        yet. Read-only; for tools like ``lockgate check`` that drive the core.
        """
        pool = self._pools.get(name)
        listed = [ds.tools for ds in pool.sessions() if ds.tools is not None] if pool is not None else []
        return list(listed[0]) if listed else None

    def server_states(self) -> dict[str, str]:
        """Each server's state in one word, for a ``/ready`` endpoint.

        ``ready`` (every instance healthy and one connected), ``degraded``
        (connected, but some instance has failed lately), ``starting``,
        ``idle`` (nothing started yet; it starts on use) or ``unavailable``
        (no instance takes requests now: calls fail at once).
        """
        return {name: pool.summary(self._now) for name, pool in self._pools.items()}

    def readiness(self) -> JSONObject:
        """The ``/ready`` answer: ready once every eager server has finished its first start attempt.

        ``status`` is ``"ready"`` or ``"not_ready"`` (with a ``reason``);
        ``servers`` maps each server to its state either way.
        """
        servers = self.server_states()
        reason: str | None = None
        if not self._started:
            reason = "the gateway has not started its servers yet"
        elif self._closing:
            reason = "the gateway is shutting down"
        elif self._config.settings.init_strategy == "eager":
            waiting = sorted(
                name
                for name, pool in self._pools.items()
                if not all(_first_start_done(ds) for ds in pool.shared[: pool.spec.max_processes])
            )
            if waiting:
                reason = f"waiting for the first start of: {', '.join(waiting)}"
        if reason is not None:
            return {"status": "not_ready", "reason": reason, "servers": servers}
        return {"status": "ready", "servers": servers}

    def _emit(self, action: Action) -> None:
        self._out.append(action)

    def _reply(self, session: ClientSession, request_id: Any, value: JSONObject) -> None:
        self._emit(SendToClient(client=session.id, message=result(request_id, value), request=request_id))

    def _error(self, request_id: Any, code: ErrorCode, message: str, **context: Any) -> JSONObject:
        return error(request_id, code, message, {"code": code.name, **context})

    def _reply_error(
        self, session: ClientSession, request_id: Any, code: ErrorCode, message: str, **context: Any
    ) -> None:
        self._emit(
            SendToClient(client=session.id, message=self._error(request_id, code, message, **context), request=request_id)
        )

    def _audit(self, record: JSONObject, *, decision: str, latency: float, error_code: str | None = None) -> None:
        operation = record.get("operation")
        agent = record.get("agent")
        server = record.get("server")
        # Labels are bounded: only names the configuration defines become label values.
        self._metrics.observe(
            operation=operation if operation in _OPERATIONS else "other",
            agent=agent if isinstance(agent, str) else "none",
            server="none" if server is None else server if server in self._config.servers else "other",
            outcome="ok" if error_code is None else error_code.lower(),
            latency=latency,
        )
        self._emit(
            Audit(
                record={
                    "agent": record.get("agent"),
                    "operation": record.get("operation"),
                    "server": record.get("server"),
                    "tool": record.get("tool"),
                    "decision": decision,
                    "rule": record.get("rule"),
                    "latency_ms": round(latency * 1000, 3),
                    "error_code": error_code,
                    "args": _audit_args(record),
                }
            )
        )

    def _log(self, log_level: LogLevel, message: str, **fields: Any) -> None:
        self._emit(Log(level=log_level, message=message, fields=fields or None))


_OPERATIONS = frozenset({"list_servers", "get_server_tools", "execute_tool", "get_gateway_status"})


def _jsonrpc_error(body: bytes) -> JSONObject | None:
    """The ``error`` object of a JSON-RPC error response in ``body``, if it is one."""
    try:
        obj = json.loads(body)
    except (ValueError, RecursionError):
        return None
    err = obj.get("error") if isinstance(obj, dict) else None
    if isinstance(err, dict) and isinstance(err.get("code"), int) and isinstance(err.get("message"), str):
        return err
    return None


def _audit_args(record: JSONObject) -> JSONObject:
    """The ``args`` of an audit record: argument keys and size, never values.

    ``invalid`` marks a call whose message was refused at the JSON boundary:
    the keys are what could be salvaged (a lone surrogate shows as U+FFFD)
    and it says what could not be recorded, and where.
    """
    args: JSONObject = {"keys": record.get("arg_keys", []), "request_bytes": record.get("request_bytes", 0)}
    invalid = record.get("invalid")
    if invalid is not None:
        args["invalid"] = invalid
    return args


def _client_label(client: ClientId) -> str:
    """A client id for logs: HTTP session ids are bearer secrets, so only their start."""
    return str(client)[:8] if isinstance(client, str) else str(client)


def _first_start_done(ds: Downstream) -> bool:
    """Whether an eagerly started downstream's first start attempt has ended, in success (READY) or failure."""
    if ds.state in (State.READY, State.BACKOFF):
        return True
    starts = ds.instance.starts
    return starts > 1 or (starts == 1 and ds.state is State.IDLE)


def _describe(spec: ServerSpec, metadata: bool) -> JSONObject:
    """One ``list_servers`` entry; never env values or headers (they hold secrets)."""
    entry: JSONObject = {"name": spec.name, "description": spec.description}
    if metadata:
        entry["transport"] = spec.transport
        if spec.transport == "stdio":
            entry["command"] = spec.command
        else:
            entry["url"] = spec.url
    return entry
