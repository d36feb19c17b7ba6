"""Calls of the gateway tools: from ``tools/call`` through policy to a downstream and back.

Theory of operation
-------------------
A ``tools/call`` names one gateway tool (:mod:`~lockgate.core._tools`).
:meth:`Calls.tools_call` checks its arguments, resolves the agent (for a
session with a verified caller, :func:`~lockgate.core._authorize.act_as`),
takes a token from each rate limit that applies (:mod:`._ratelimit`) and
asks the one :class:`~lockgate.core._policy.Policy`. ``list_servers`` and
``get_gateway_status`` are answered at once. ``get_server_tools`` and
``execute_tool`` become a :class:`~lockgate.core._call.Call` on the link the
pool chooses (:meth:`route`): once the link is ready, :meth:`dispatch`
answers ``get_server_tools`` from the link's cached tool list, filtered by
the same policy, or forwards ``execute_tool`` as ``tools/call`` under a wire
id of the link's own. The server's answer (:meth:`answered`) travels back
with the client's id restored and its result untouched; progress
notifications are relayed under the client's own token.

Every call ends in :meth:`finish`, which answers (unless nobody waits any
more), cancels its timer and writes exactly one audit record, whatever
ended it: an answer, a refusal, a timeout, a failure of its link, or the
client cancelling or going away.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, assert_never

from ._actions import SendToClient, SendToDownstream, TakeTokens
from ._audit import AuditEntry, AuditError, Decision
from ._authorize import CREDENTIAL_TOOLS, act_as, credential_refused, tool_granted
from ._call import Call, CallTrigger, Forward
from ._config import DEFAULT_MAX_TIMEOUT_MS, ServerSpec
from ._context import Context, error_response
from ._downstream_era import client_capabilities
from ._eras import CLIENT_CAPABILITIES_KEY, LOG_LEVEL_KEY
from ._errors import ErrorCode
from ._identity import Principal
from ._jsonrpc import Invalid, Notification, Request, RequestId, Response, answer_bytes, error_with, notification, request, result
from ._link import Link, State
from ._pins import tool_changed_error
from ._policy import Refusal
from ._pool import Unavailable
from ._events import ClientId, TokensTaken
from ._ratelimit import Limit, limits_for, retry_after_ms, shared_key
from ._session import ClientSession
from ._timers import TimerKind
from ._tools import (
    ArgumentError,
    ExecuteTool,
    GetServerTools,
    GetStatus,
    ListServers,
    SearchTools,
    parse_call,
    select_tools,
    tool_result,
)

if TYPE_CHECKING:
    from ._health import Health
    from ._bridge import Bridge
    from ._links import Links
    from ._relays import Relays
    from ._search_tool import Searches
    from ._views import Views

__all__ = ["Calls"]

JSONObject = dict[str, Any]


class Calls:
    """The gateway tools and the life of every call (see the module docstring)."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self.links: Links
        self.bridge: Bridge
        self.relays: Relays
        self.health: Health
        self.views: Views
        self.searches: Searches

    # -- a tools/call arrives ----------------------------------------------------

    def tools_call(self, session: ClientSession, req: Request, request_bytes: int) -> None:
        """Serve one ``tools/call`` of a gateway tool."""
        ctx = self._ctx
        name = req.params.get("name")
        arguments = req.params.get("arguments")
        if arguments is None:
            arguments = {}
        entry = _entry(req, request_bytes, session.principal)
        if not isinstance(name, str):
            parsed: ListServers | SearchTools | GetStatus | GetServerTools | ExecuteTool | ArgumentError = ArgumentError(
                "name", "tools/call needs a tool name"
            )
        elif not isinstance(arguments, dict):
            parsed = ArgumentError("arguments", "tools/call arguments must be an object")
        else:
            parsed = parse_call(name, arguments, debug=ctx.config.settings.debug)
        if isinstance(parsed, ArgumentError):
            ctx.reply_error(session.id, req.id, ErrorCode.INVALID_PARAMS, parsed.message, parameter=parsed.parameter)
            ctx.audit(entry, Decision.ERROR, error=ErrorCode.INVALID_PARAMS)
            return
        if session.principal is None:
            agent = ctx.config.policy.resolve_agent(parsed.agent_id, default_agent=ctx.config.settings.default_agent)
        elif session.refused is not None:
            agent = credential_refused(session.principal, session.refused)
        else:
            agent = act_as(session.principal, parsed.agent_id, ctx.config.policy, ctx.now)
        if isinstance(agent, Refusal):
            self.refuse(session, req.id, entry, agent)
            return
        entry.agent = agent
        tool = parsed  # narrowed: no ArgumentError past this point
        self.limited(session, req.id, agent, entry, lambda: self._serve_tool(session, req, agent, tool, entry))

    def _serve_tool(
        self, session: ClientSession, req: Request, agent: str, parsed: ListServers | SearchTools | GetStatus | GetServerTools | ExecuteTool,
        entry: AuditEntry,
    ) -> None:
        """Serve a gateway tool call that passed its rate limits."""
        ctx = self._ctx
        match parsed:
            case ListServers():
                servers = ctx.config.servers
                listed = [_describe(servers[n], parsed.include_metadata) for n in ctx.config.policy.visible_servers(agent, servers)]
                ctx.reply(session.id, req.id, tool_result(listed))
                ctx.audit(entry, Decision.ALLOW)
            case GetStatus():
                ctx.reply(session.id, req.id, tool_result(self.views.status()))
                ctx.audit(entry, Decision.ALLOW)
            case SearchTools():
                self.searches.start(session, req, agent, parsed, entry)
            case GetServerTools() | ExecuteTool():
                self.route(session, req, agent, parsed, entry)
            case _:
                assert_never(parsed)

    def refused(self, session: ClientSession, req: Request, request_bytes: int, code: ErrorCode, message: str) -> None:
        """Answer and audit a ``tools/call`` refused for the session's state, before it was parsed.

        A reused request id or a gateway shutting down refuses the call, and
        every gateway tool call still ends in exactly one audit record.
        """
        self._ctx.reply_error(session.id, req.id, code, message)
        self._ctx.audit(_entry(req, request_bytes, session.principal), Decision.ERROR, error=code)

    def refused_at_boundary(self, session: ClientSession, msg: Invalid, request_bytes: int) -> None:
        """Audit a ``tools/call`` the strict JSON boundary refused: it is still a call.

        The record has what could be salvaged of its name and argument keys
        (a lone surrogate shows as U+FFFD), and says what could not be recorded.
        """
        salvaged = msg.salvaged
        if salvaged is None or salvaged.get("method") != "tools/call":
            return
        params = salvaged.get("params")
        name = params.get("name") if isinstance(params, dict) else None
        arguments = params.get("arguments") if isinstance(params, dict) else None
        entry = AuditEntry(
            operation=name[:128] if isinstance(name, str) else None,
            request_bytes=request_bytes,
            arg_keys=tuple(sorted(arguments)) if isinstance(arguments, dict) else (),
            invalid=msg.message[:300],
            principal=_principal_id(session.principal),
        )
        self._ctx.audit(entry, Decision.ERROR, error=msg.code)

    def route(
        self, session: ClientSession, req: Request, agent: str, params: GetServerTools | ExecuteTool, entry: AuditEntry
    ) -> None:
        """Check policy for the server (and tool), then give the call to the link the pool chooses."""
        ctx = self._ctx
        server, tool = params.server, params.tool if isinstance(params, ExecuteTool) else None
        entry.server, entry.tool = server, tool
        policy = ctx.config.policy
        decision = policy.decide_server(agent, server) if tool is None else policy.decide(agent, server, tool)
        if not decision.allowed:
            what = f"server '{server}'" if tool is None else f"tool '{tool}' on server '{server}'"
            self.refuse(session, req.id, entry, Refusal(ErrorCode.DENIED_BY_POLICY, f"Access to {what} is denied ({decision.rule})", decision.rule))
            return
        if tool is not None and not tool_granted(session.principal, server, tool):
            assert session.principal is not None
            message = (
                f"Access to tool '{tool}' on server '{server}' is denied: "
                f"credential {session.principal.id} may not call it ({CREDENTIAL_TOOLS})"
            )
            self.refuse(session, req.id, entry, Refusal(ErrorCode.DENIED_BY_POLICY, message, CREDENTIAL_TOOLS))
            return
        entry.rule = decision.rule
        self.start(session, req, agent, server, params, entry, decision.rule)

    def start(
        self,
        session: ClientSession,
        req: Request,
        agent: str,
        server: str,
        params: GetServerTools | ExecuteTool | Forward,
        entry: AuditEntry,
        rule: str | None,
    ) -> None:
        """Give an allowed request to the link ``server``'s pool chooses, as a :class:`Call` with its timer."""
        ctx = self._ctx
        pool = ctx.pools.get(server)
        if pool is None:
            ctx.reply_error(
                session.id, req.id, ErrorCode.SERVER_UNAVAILABLE, f"Server '{server}' is not configured",
                server=server, reason="not configured",
            )
            ctx.audit(entry, Decision.ERROR, error=ErrorCode.SERVER_UNAVAILABLE)
            return
        link = self.links.choose(pool, session.id, prefer_running=isinstance(params, GetServerTools))
        if isinstance(link, Unavailable):
            ctx.reply_error(
                session.id, req.id, ErrorCode.SERVER_UNAVAILABLE, f"Server '{server}' is unavailable: {link.reason}",
                server=server, reason=link.reason,
            )
            ctx.audit(entry, Decision.ERROR, error=ErrorCode.SERVER_UNAVAILABLE)
            return
        settings = ctx.config.settings
        if isinstance(params, ExecuteTool):
            timeout_ms = params.timeout_ms or pool.spec.timeout_ms or settings.call_timeout_ms
        elif isinstance(params, Forward):
            timeout_ms = params.timeout_ms or pool.spec.timeout_ms or settings.call_timeout_ms
        else:
            timeout_ms = settings.call_timeout_ms
        # Progress may extend a call up to this cap, never shorten it.
        cap_ms = max(timeout_ms, pool.spec.max_timeout_ms or DEFAULT_MAX_TIMEOUT_MS)
        meta = req.params.get("_meta")
        now = ctx.now
        call = Call(
            client=session.id,
            request_id=req.id,
            params=params,
            agent=agent,
            server=server,
            rule=rule,
            started=now,
            timer=0,
            timeout_ms=timeout_ms,
            progress_token=meta.get("progressToken") if isinstance(meta, dict) else None,
            request_bytes=entry.request_bytes,
            arg_keys=entry.arg_keys,
            deadline=now + timeout_ms / 1000,
            hard_deadline=now + cap_ms / 1000,
            principal=session.principal,
            transport=entry.transport,
        )
        call.timer = ctx.set_timer(TimerKind.CALL, call.deadline, call=call)
        session.calls[req.id] = call
        self.links.assign(link, call)

    # -- on a ready link -----------------------------------------------------------

    def dispatch(self, link: Link, call: Call) -> None:
        """Serve a call on a READY link: from its cached tool list, or by forwarding it."""
        params = call.params
        if isinstance(params, GetServerTools):
            assert link.tools is not None
            policy = self._ctx.config.policy
            # What is listed is what may be called: the rules, and a delegated token's own tool list.
            allowed = [
                t for t in link.tools
                if policy.decide(call.agent, link.name, t.get("name", "")).allowed
                and tool_granted(call.principal, link.name, t.get("name", ""))
            ]
            chosen, used = select_tools(
                allowed, names=params.names, pattern=params.pattern, max_tokens=params.max_schema_tokens,
                cost=self._ctx.tool_tokens,
            )
            value = {
                "tools": chosen,
                "server": link.name,
                "total_available": len(allowed),
                "returned": len(chosen),
                "tokens_used": used,
            }
            self.finish(call, result(call.request_id, tool_result(value)), Decision.ALLOW)
            return
        method, forwarded = _downstream_request(params)
        tool = params.tool if isinstance(params, ExecuteTool) else params.item if method == "tools/call" else None
        if tool is not None and tool not in link.tool_names:
            held = self._ctx.pins.held_tool(link.name, tool)
            if held is not None:  # quarantined: its definition changed since it was pinned
                self.finish(call, tool_changed_error(call.request_id, link.name, tool, held), Decision.ERROR, error=ErrorCode.TOOL_CHANGED)
                return
            response = error_response(
                call.request_id, ErrorCode.TOOL_NOT_FOUND, f"Tool '{tool}' not found on server '{link.name}'",
                server=link.name, tool=tool,
            )
            self.finish(call, response, Decision.ERROR, error=ErrorCode.TOOL_NOT_FOUND)
            return
        if link.stateless and method in ("resources/subscribe", "resources/unsubscribe"):
            # The stateless era has no (un)subscribe: the gateway's subscriber table (kept by the
            # surface) is the whole of it; updates come over subscriptions/listen, opened again for it.
            self.finish(call, result(call.request_id, {}), Decision.ALLOW)
            self.links.listen(link)
            return
        call.move(CallTrigger.FORWARD)
        self._send(link, call, method, forwarded)

    def _send(self, link: Link, call: Call, method: str, forwarded: JSONObject) -> None:
        """Send a call's request on ``link`` under a new wire id, its ``_meta`` the gateway's own."""
        assert link.downstream is not None
        wire_id = link.take_wire_id()
        meta: JSONObject = {}
        if call.progress_token is not None:
            # Our own token, unique per downstream call; mapped back on the way out.
            meta["progressToken"] = wire_id
        session = self._ctx.clients.get(call.client)
        if link.stateless and session is not None:
            if session.log_level is not None:
                # No logging/setLevel in the stateless era: each request says what its client wants to hear.
                meta[LOG_LEVEL_KEY] = session.log_level
            # What this call's client can be asked, of what the gateway relays: a stateless server
            # then asks only that (or answers -32021), rather than what another client could answer.
            meta[CLIENT_CAPABILITIES_KEY] = client_capabilities(link, session.capabilities)
        if meta:
            forwarded["_meta"] = meta
        call.wire_id = wire_id
        call.downstream = link.downstream
        link.pending[wire_id] = call
        link.instance.calls += 1
        self._ctx.emit(
            SendToDownstream(
                downstream=link.downstream,
                message=request(wire_id, method, forwarded),
            )
        )

    def resend(self, call: Call, inputs: JSONObject) -> None:
        """Send a call again with its client's answers to what a stateless server asked (:mod:`._relays`).

        The stateless era's retry: the same request under a new id, with
        ``inputResponses`` and the server's ``requestState`` (``inputs``).
        """
        link = self._ctx.links.get(call.downstream) if call.downstream is not None else None
        if link is None or link.state is not State.READY:
            self.fail(call, "its connection ended while its client answered what it asked")
            return
        method, forwarded = _downstream_request(call.params)
        self._send(link, call, method, {**forwarded, **inputs})

    def answered(self, link: Link, call: Call, msg: Response) -> None:
        """The server answered a forwarded call: pass the answer on under the client's id, untouched.

        A stateless server's ``input_required`` to a handshake-era client is
        no answer yet: :mod:`._relays` asks the client, and the call goes on.
        """
        link.instance.answered()
        raw = msg.raw
        value = raw.get("result")
        if link.stateless and isinstance(value, dict) and value.get("resultType") == "input_required":
            session = self._ctx.clients.get(call.client)
            if session is not None and session.era != "stateless" and self.relays.ask_client(session, call, link, value):
                return
        # The answer's bytes with the client's id, its result or error not encoded again.
        wire = answer_bytes(msg, call.request_id)
        if "error" in raw:
            response = error_with(call.request_id, raw["error"])
            self.finish(call, response, Decision.ALLOW, error="DOWNSTREAM_ERROR", wire=wire)
        else:
            response = result(call.request_id, raw["result"])
            self.finish(call, response, Decision.ALLOW, wire=wire)

    def progress(self, call: Call, note: Notification) -> None:
        """A progress notification about a forwarded call: the call lives on, and its client hears of it."""
        # Progress shows the call is alive: it gets its full timeout again, up to the cap.
        call.deadline = min(self._ctx.now + call.timeout_ms / 1000, call.hard_deadline)
        if call.progress_token is not None:
            params = {**note.params, "progressToken": call.progress_token}
            self._ctx.emit(
                SendToClient(
                    client=call.client,
                    message=notification("notifications/progress", params),
                    request=call.request_id,
                )
            )

    # -- the end of a call -------------------------------------------------------------

    def finish(
        self, call: Call, response: JSONObject | None, decision: Decision, *, error: AuditError | None = None,
        wire: bytes | None = None,
    ) -> None:
        """End a call: forget it, stop its timer, answer (unless cancelled) and audit it.

        ``wire``: ``response`` already encoded (see :class:`SendToClient`).
        """
        ctx = self._ctx
        call.move(CallTrigger.FINISH)
        if self.bridge.parked(call):
            # Its client's request was answered input_required already: nobody waits for this answer.
            self.bridge.forget(call)
            response = None
        session = ctx.clients.get(call.client)
        if session is not None:
            session.calls.pop(call.request_id, None)
        ctx.cancel_timer(call.timer)
        if response is not None and session is not None:
            ctx.emit(SendToClient(client=call.client, message=response, request=call.request_id, wire=wire))
        entry = AuditEntry(
            agent=call.agent, operation=call.operation, server=call.server, tool=call.tool, rule=call.rule,
            request_bytes=call.request_bytes, arg_keys=call.arg_keys, principal=_principal_id(call.principal),
            transport=call.transport,
        )
        ctx.audit(entry, decision, latency=ctx.now - call.started, error=error)
        owner = ctx.links.get(call.downstream) if call.downstream is not None else None
        if owner is not None:
            self.links.call_done(owner)

    def fail(self, call: Call, reason: str) -> None:
        """Answer one call with ``SERVER_UNAVAILABLE`` (its link is not touched)."""
        response = error_response(
            call.request_id, ErrorCode.SERVER_UNAVAILABLE, f"Server '{call.server}' is unavailable: {reason}",
            server=call.server, reason=reason,
        )
        self.finish(call, response, Decision.ERROR, error=ErrorCode.SERVER_UNAVAILABLE)

    def abandon(self, call: Call, reason: str) -> None:
        """Drop a call nobody waits for any more, telling its downstream to stop."""
        self.unlink(call, reason)
        self.finish(call, None, Decision.ERROR, error=ErrorCode.CANCELLED)

    def unlink(self, call: Call, reason: str) -> None:
        """Take a call off its link, cancelling the forwarded request if any (MCP 2025-11-25, basic/utilities/cancellation)."""
        link = self._ctx.links.get(call.downstream) if call.downstream is not None else None
        if link is None:
            return
        if call.wire_id is not None and link.pending.pop(call.wire_id, None) is not None:
            assert link.downstream is not None
            self._ctx.emit(
                SendToDownstream(
                    downstream=link.downstream,
                    message=notification("notifications/cancelled", {"requestId": call.wire_id, "reason": reason}),
                )
            )
        elif call in link.waiters:
            link.waiters.remove(call)

    def timer_fired(self, call: Call) -> None:
        """A call's timer fell due: set it again if progress moved the deadline, else the call timed out."""
        ctx = self._ctx
        now = ctx.now
        if self.bridge.parked(call) and now >= call.deadline:
            # Its client never came back with the answers its server waits for.
            self.unlink(call, "the client did not answer what the server asked")
            self.finish(call, None, Decision.ERROR, error=ErrorCode.TIMEOUT)
            return
        if now < call.deadline:
            # Progress moved the deadline on since this timer was set.
            call.timer = ctx.set_timer(TimerKind.CALL, call.deadline, call=call)
            return
        link = ctx.links.get(call.downstream) if call.downstream is not None else None
        forwarded = link is not None and call.wire_id is not None and call.wire_id in link.pending
        self.unlink(call, f"timed out after {call.timeout_ms} ms")
        context: JSONObject = {"server": call.server, "timeout_ms": call.timeout_ms}
        message = f"No answer from server '{call.server}' within {call.timeout_ms} ms"
        if call.deadline > call.started + call.timeout_ms / 1000:
            waited = round((call.deadline - call.started) * 1000)
            message = f"No answer from server '{call.server}' within {waited} ms (progress extended its {call.timeout_ms} ms timeout)"
            context["waited_ms"] = waited
        self.finish(call, error_response(call.request_id, ErrorCode.TIMEOUT, message, **context), Decision.ERROR, error=ErrorCode.TIMEOUT)
        if link is not None and forwarded and link.downstream is not None:
            self.health.suspect(link, f"a call timed out after {call.timeout_ms} ms")

    def limited(self, session: ClientSession, request_id: RequestId, agent: str, entry: AuditEntry, proceed: Callable[[], None]) -> None:
        """Serve a call (``proceed``) once it passed every rate limit that applies; refuse it with ``RATE_LIMITED`` otherwise.

        Local limits decide now (:meth:`rate_limited`). Shared ones
        (``GATEWAY_REDIS_URL``) are the store's to decide: the request is
        parked and asks for tokens, and :meth:`tokens_taken` goes on with it.
        """
        ctx = self._ctx
        if not ctx.config.settings.shared_limits:
            if not self.rate_limited(session, request_id, agent, entry):
                proceed()
            return
        limits = limits_for(session.principal, agent, ctx.config)
        if not limits:
            proceed()
            return
        parked = ctx.parked.park(session.id, request_id, entry, limits, proceed)
        ctx.emit(TakeTokens(ticket=parked.ticket, limits=tuple((shared_key(limit), limit.rate.count, limit.rate.period) for limit in limits)))

    def tokens_taken(self, ev: TokensTaken) -> None:
        """The shared store answered a parked request: it goes on, or is refused.

        A store that does not answer refuses the call with
        ``RATE_LIMIT_UNAVAILABLE`` (``GATEWAY_REDIS_FAILURE=closed``) or lets it
        go on unchecked (``open``); the log says when the store goes away and
        when it is back, once each.
        """
        ctx = self._ctx
        mode = ctx.config.settings.redis_failure
        if ev.unavailable is not None and not ctx.parked.store_down:
            ctx.parked.store_down = True
            outcome = "are refused" if mode == "closed" else "go ahead unchecked"
            ctx.log(
                "warning", f"the shared rate limit store does not answer: calls under a rate limit {outcome} until it does",
                reason=ev.unavailable, failure_mode=mode,
            )
        elif ev.unavailable is None and ctx.parked.store_down:
            ctx.parked.store_down = False
            ctx.log("notice", "the shared rate limit store answers again")
        parked = ctx.parked.answered(ev.ticket)
        if parked is None:
            return  # cancelled, or its client went away, while it waited
        if ctx.closing:
            ctx.reply_error(parked.client, parked.request_id, ErrorCode.SERVER_UNAVAILABLE, "The gateway is shutting down")
            ctx.audit(parked.entry, Decision.ERROR, error=ErrorCode.SERVER_UNAVAILABLE)
        elif ev.unavailable is None and ev.refused is not None:
            index, waiting = ev.refused
            self._over_limit(parked.client, parked.request_id, parked.limits[min(max(index, 0), len(parked.limits) - 1)], waiting, parked.entry)
        elif ev.unavailable is None or mode == "open":
            parked.proceed()
        else:
            ctx.reply_error(
                parked.client, parked.request_id, ErrorCode.RATE_LIMIT_UNAVAILABLE,
                "Rate limits are shared through a store that does not answer now: the call is refused (GATEWAY_REDIS_FAILURE=closed)",
                failure_mode="closed",
            )
            parked.entry.rule = "GATEWAY_REDIS_FAILURE"
            ctx.audit(parked.entry, Decision.ERROR, error=ErrorCode.RATE_LIMIT_UNAVAILABLE)

    def is_parked(self, client: ClientId, request_id: RequestId) -> bool:
        """Does a request of ``client`` by this id wait for the shared store (its id is in use)?"""
        return self._ctx.parked.holds(client, request_id)

    def unpark(self, client: ClientId, request_id: RequestId) -> bool:
        """The client cancelled a request that waits for the shared store: it ends, unanswered, audited as cancelled."""
        parked = self._ctx.parked.cancel(client, request_id)
        if parked is None:
            return False
        self._ctx.audit(parked.entry, Decision.ERROR, error=ErrorCode.CANCELLED)
        return True

    def unpark_client(self, client: ClientId) -> None:
        """A client went away: its requests that wait for the shared store end, each audited as cancelled."""
        for parked in self._ctx.parked.release_client(client):
            self._ctx.audit(parked.entry, Decision.ERROR, error=ErrorCode.CANCELLED)

    def rate_limited(self, session: ClientSession, request_id: RequestId, agent: str, entry: AuditEntry) -> bool:
        """Take a token from every rate limit the call must pass, or refuse it with ``RATE_LIMITED``, taking none."""
        ctx = self._ctx
        limits = limits_for(session.principal, agent, ctx.config)
        if not limits:
            return False
        refused = ctx.buckets.first_refusal(((limit.key, limit.rate) for limit in limits), ctx.now)
        if refused is None:
            for limit in limits:
                ctx.buckets.take(limit.key, limit.rate, ctx.now)
            return False
        index, waiting = refused
        self._over_limit(session.id, request_id, limits[index], waiting, entry)
        return True

    def _over_limit(self, client: ClientId, request_id: RequestId, limit: Limit, waiting: float, entry: AuditEntry) -> None:
        """Refuse a call ``limit`` has no token for, for ``waiting`` seconds more, and audit it."""
        ctx = self._ctx
        ms = retry_after_ms(waiting)
        ctx.reply_error(
            client, request_id, ErrorCode.RATE_LIMITED,
            f"Rate limit {limit.rate} of {limit.subject} exceeded: retry in {ms} ms",
            retry_after_ms=ms, limit=str(limit.rate), scope=limit.scope,
        )
        ctx.metrics.rate_limited[limit.scope] += 1
        entry.rule = limit.rule
        ctx.audit(entry, Decision.ERROR, error=ErrorCode.RATE_LIMITED)

    def refuse(self, session: ClientSession, request_id: RequestId, entry: AuditEntry, refusal: Refusal) -> None:
        """Answer a request with ``refusal`` and audit it (a policy refusal is a DENY, anything else an ERROR)."""
        context: JSONObject = {}
        if refusal.rule is not None:
            context["rule"] = refusal.rule
        self._ctx.reply_error(session.id, request_id, refusal.code, refusal.message, **context)
        decision = Decision.DENY if refusal.code is ErrorCode.DENIED_BY_POLICY else Decision.ERROR
        entry.rule = refusal.rule
        self._ctx.audit(entry, decision, error=refusal.code)


def _entry(req: Request, request_bytes: int, principal: Principal | None) -> AuditEntry:
    """The first audit record of a ``tools/call``: its name and argument keys, as sent, and who sent it."""
    name = req.params.get("name")
    arguments = req.params.get("arguments")
    return AuditEntry(
        # A client may send any name; keep the audit line bounded.
        operation=name[:128] if isinstance(name, str) else None,
        request_bytes=request_bytes,
        arg_keys=tuple(sorted(arguments)) if isinstance(arguments, dict) else (),
        principal=_principal_id(principal),
    )


def _principal_id(principal: Principal | None) -> str | None:
    return None if principal is None else principal.id


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


def _downstream_request(params: GetServerTools | ExecuteTool | Forward) -> tuple[str, JSONObject]:
    """The method and params a forwarded call sends its server (a fresh dict each time)."""
    if isinstance(params, ExecuteTool):
        return "tools/call", {"name": params.tool, "arguments": params.args}
    assert isinstance(params, Forward)
    return params.method, dict(params.params)
