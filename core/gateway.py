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
:class:`~lockgate.core.policy.Policy`, and every gateway tool call ends in
exactly one audit record. Downstream lifecycles live in
:mod:`lockgate.core.downstream`; this module wires clients, downstreams and
timers together.
"""

from __future__ import annotations

from typing import Any, assert_never

from . import __version__
from .actions import (
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
from .config import Config, ServerSpec
from .downstream import Call, Downstream, State, backoff_delay
from .errors import ErrorCode, LocalProtocolError
from .events import (
    ClientClosed,
    ClientId,
    ClientMessageReceived,
    ClientOpened,
    ConfigRejected,
    ConfigReloaded,
    DownstreamExited,
    DownstreamMessageReceived,
    Event,
    GatewayStarted,
    ShutdownRequested,
    TimerFired,
)
from .jsonrpc import Invalid, Notification, Request, Response, decode, error, is_request_id, result
from .metrics import Extra, Metrics, prometheus_text
from .policy import Refusal
from .reload import ReloadStatus
from .session import LOG_LEVELS, ClientSession, negotiate_version
from .tools import (
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


class Gateway:
    """The whole gateway as one synchronous state machine.

    Exactly one task may call :meth:`handle`; actions must be performed in the
    order returned. If ``handle`` raises :class:`LocalProtocolError` the shell
    fed an event it cannot have seen; the state is then undefined.
    """

    def __init__(self, config: Config) -> None:
        self._config = config
        self._clients: dict[ClientId, ClientSession] = {}
        self._servers: dict[str, Downstream] = {n: Downstream(name=n, spec=s) for n, s in config.servers.items()}
        self._connections: dict[int, Downstream] = {}
        self._timers: dict[int, Call | tuple[Downstream, int]] = {}
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
            case GatewayStarted():
                self._started = True
                if self._config.settings.init_strategy == "eager":
                    for ds in self._servers.values():
                        if ds.state is State.IDLE:  # a reload may have started it already
                            self._start(ds, event.now)
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
                self._reply_error(session, msg.id, msg.code, msg.message)
            case Response():
                # The gateway sends clients no requests, so no answer is awaited.
                self._log("debug", "ignored a response from a client", client=str(session.id), id=msg.id)

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
            # Session ids are bearer secrets: log a prefix only.
            self._log("info", "session expired", session=str(client)[:8], idle_seconds=round(now - seen, 3))
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
        ds = self._servers.get(server)
        if ds is None:
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
        if ds.state is State.BACKOFF and ev.now < ds.retry_at:
            reason = f"{ds.last_error}; next start attempt in {ds.retry_at - ev.now:.1f} s"
            self._reply_error(
                session, req.id, ErrorCode.SERVER_UNAVAILABLE, f"Server '{server}' is unavailable: {reason}",
                server=server, reason=reason,
            )
            self._audit(record, decision="ERROR", error_code="SERVER_UNAVAILABLE", latency=0.0)
            return
        settings = self._config.settings
        if isinstance(call, ExecuteTool):
            timeout_ms = call.timeout_ms or ds.spec.timeout_ms or settings.call_timeout_ms
        else:
            timeout_ms = settings.call_timeout_ms
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
        )
        self._timers[c.timer] = c
        session.calls[req.id] = c
        if ds.state is State.READY:
            self._dispatch(ds, c, ev.now)
        else:
            if ds.state in (State.IDLE, State.BACKOFF):
                self._start(ds, ev.now)
            c.connection = ds.connection
            ds.waiters.append(c)

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

    def _start(self, ds: Downstream, now: float) -> None:
        """Open a new connection to a server and begin its MCP handshake."""
        connection = self._next_connection
        self._next_connection += 1
        ds.move(State.STARTING)
        ds.connection = connection
        ds.next_wire_id = 1
        ds.pending = {}
        ds.internal = {}
        ds.listing = []
        ds.garbage_lines = 0
        ds.starts += 1
        self._connections[connection] = ds
        self._emit(StartDownstream(downstream=connection, server=ds.name, spec=ds.spec))
        wire_id = ds.take_wire_id()
        ds.internal[wire_id] = "initialize"
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
        ds.start_timer = self._set_timer(now + self._config.settings.start_timeout_ms / 1000)
        self._timers[ds.start_timer] = (ds, connection)

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

    def _on_initialized(self, ds: Downstream, msg: Response, now: float) -> None:
        res = msg.raw.get("result")
        if not isinstance(res, dict):
            err = msg.raw.get("error")
            detail = err.get("message") if isinstance(err, dict) else None
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
            ds.failures = 0
            ds.last_error = None
            if ds.start_timer is not None and self._timers.pop(ds.start_timer, None) is not None:
                self._emit(CancelTimer(timer=ds.start_timer))
            ds.start_timer = None
            self._log("info", "server ready", server=ds.name, tools=len(ds.tools or ()), protocol=ds.protocol_version)
            # One at a time, the rest still queued: a server a reload retired
            # must not look idle (and be stopped) before the last waiter is sent.
            while ds.waiters and ds.connection is not None:
                self._dispatch(ds, ds.waiters.pop(0), now)

    def _on_downstream_notification(self, ds: Downstream, note: Notification, now: float) -> None:
        method = note.method
        if method == "notifications/progress":
            token = note.params.get("progressToken")
            call = ds.pending.get(token) if isinstance(token, int) else None
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

    def _fail(self, ds: Downstream, reason: str, now: float) -> None:
        """Give up on a live connection: stop it and fail what depends on it."""
        assert ds.connection is not None
        self._connections.pop(ds.connection, None)
        self._connection_failed(ds, reason, now, stop=True)

    def _connection_failed(self, ds: Downstream, reason: str, now: float, *, stop: bool) -> None:
        """A connection is gone (already removed from ``_connections``): fail its calls at once."""
        connection = ds.connection
        assert connection is not None
        if stop:
            self._emit(StopDownstream(downstream=connection))
        if ds.start_timer is not None and self._timers.pop(ds.start_timer, None) is not None:
            self._emit(CancelTimer(timer=ds.start_timer))
        ds.start_timer = None
        ds.connection = None
        ds.failures += 1
        ds.retry_at = now + backoff_delay(ds.failures)
        ds.last_error = reason
        ds.move(State.BACKOFF)
        self._log("warning", "server unavailable", server=ds.name, reason=reason)
        calls = [*ds.pending.values(), *ds.waiters]
        ds.pending = {}
        ds.waiters = []
        for call in calls:
            self._finish(
                call, now,
                response=self._error(
                    call.request_id, ErrorCode.SERVER_UNAVAILABLE, f"Server '{ds.name}' is unavailable: {reason}",
                    server=ds.name, reason=reason,
                ),
                decision="ERROR", error_code="SERVER_UNAVAILABLE",
            )

    def _stop(self, ds: Downstream) -> None:
        """Stop a server's connection on purpose (reload, shutdown); nothing must be pending."""
        if ds.connection is not None:
            self._connections.pop(ds.connection, None)
            self._emit(StopDownstream(downstream=ds.connection))
            ds.connection = None
        if ds.start_timer is not None and self._timers.pop(ds.start_timer, None) is not None:
            self._emit(CancelTimer(timer=ds.start_timer))
        ds.start_timer = None
        ds.move(State.IDLE)

    def _retire_if_idle(self, ds: Downstream) -> None:
        if ds.retiring and not ds.pending and not ds.waiters:
            self._stop(ds)

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
        if isinstance(target, Call):
            call = target
            self._unlink(call, f"timed out after {call.timeout_ms} ms")
            self._finish(
                call, ev.now,
                response=self._error(
                    call.request_id, ErrorCode.TIMEOUT,
                    f"No answer from server '{call.server}' within {call.timeout_ms} ms",
                    server=call.server, timeout_ms=call.timeout_ms,
                ),
                decision="ERROR", error_code="TIMEOUT",
            )
            return
        ds, connection = target
        if ds.connection == connection and ds.state in (State.STARTING, State.LISTING):
            ds.start_timer = None
            seconds = self._config.settings.start_timeout_ms / 1000
            self._fail(ds, f"did not finish its MCP handshake within {seconds:g} s", ev.now)

    def _on_config(self, ev: ConfigReloaded) -> None:
        """Swap configuration between two events; running calls finish as they started.

        Policy and descriptions apply from the next request on. A server whose
        spec changed, or that is gone, keeps its connection until its calls
        end (``retiring``); a changed or added one gets a fresh
        :class:`Downstream`, started now under the eager strategy.
        """
        new = ev.config
        old_servers = self._servers
        self._config = new
        self._servers = {}
        changed: list[str] = []
        added: list[str] = []
        for name, spec in new.servers.items():
            ds = old_servers.pop(name, None)
            if ds is not None and ds.spec == spec:
                self._servers[name] = ds
                continue
            if ds is not None:
                changed.append(name)
                ds.retiring = True
                self._retire_if_idle(ds)
            else:
                added.append(name)
            fresh = Downstream(name=name, spec=spec)
            self._servers[name] = fresh
            if new.settings.init_strategy == "eager" and not self._closing:
                self._start(fresh, ev.now)
        for ds in old_servers.values():
            ds.retiring = True
            self._retire_if_idle(ds)
        self._reload.succeeded(at=ev.time if ev.time is not None else ev.now, files=ev.files, warnings=new.warnings)
        self._log(
            "notice", "configuration reloaded",
            files=list(ev.files), added=added, removed=sorted(old_servers), changed=changed,
            agents=len(new.policy.agents),
        )
        for warning in new.warnings:
            self._log("warning", warning.message, file=warning.file, path=warning.path)

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
                "1 for the state each configured server is in.",
                {(("server", name), ("state", ds.state.value)): 1 for name, ds in self._servers.items()},
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
            "servers": {name: ds.status() for name, ds in self._servers.items()},
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
        ds = self._servers.get(name)
        if ds is None or ds.tools is None:
            return None
        return list(ds.tools)

    def readiness(self) -> JSONObject:
        """The ``/ready`` answer: ready once every eager server has finished its first start attempt.

        ``status`` is ``"ready"`` or ``"not_ready"`` (with a ``reason``);
        ``servers`` maps each server to its state either way.
        """
        servers = {name: ds.state.value for name, ds in self._servers.items()}
        reason: str | None = None
        if not self._started:
            reason = "the gateway has not started its servers yet"
        elif self._closing:
            reason = "the gateway is shutting down"
        elif self._config.settings.init_strategy == "eager":
            waiting = sorted(name for name, ds in self._servers.items() if not _first_start_done(ds))
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
                    "args": {"keys": record.get("arg_keys", []), "request_bytes": record.get("request_bytes", 0)},
                }
            )
        )

    def _log(self, log_level: LogLevel, message: str, **fields: Any) -> None:
        self._emit(Log(level=log_level, message=message, fields=fields or None))


_OPERATIONS = frozenset({"list_servers", "get_server_tools", "execute_tool", "get_gateway_status"})


def _first_start_done(ds: Downstream) -> bool:
    """Whether a server's first start attempt has ended, in success (READY) or failure."""
    if ds.state in (State.READY, State.BACKOFF):
        return True
    return ds.starts > 1 or (ds.starts == 1 and ds.state is State.IDLE)


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
