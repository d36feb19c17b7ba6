"""What every part of the gateway shares while it handles an event.

:class:`Context` holds the gateway's state (configuration, client sessions,
server pools, live links, timers, counters) and is where actions go: every
part appends to the one list :meth:`Gateway.handle` returns, in the order
things happen. The parts (:mod:`._clients`, :mod:`._calls`, :mod:`._links`,
:mod:`._health`, :mod:`._lost_sessions`, :mod:`._views`) each own a piece of
the logic and read and change this state; none keeps state of its own.
"""

from __future__ import annotations

from typing import Any

from ._actions import Action, Audit, Log, LogLevel, SendToClient, SendToDownstream
from ._audit import OPERATIONS, AuditEntry, AuditError, Decision, error_name
from ._balance import DEFAULT_SEED, xorshift64
from ._call import Call
from ._config import Config
from ._downstream_era import shape_downstream
from ._errors import ErrorCode
from ._events import ClientId
from ._jsonrpc import RequestId, error, result
from ._link import Link
from ._metrics import Metrics
from ._pins import PinState
from ._pool import Pool
from ._ratelimit import Buckets, Parked
from ._reload import ReloadStatus
from ._session import ClientSession
from ._stateless import shape_outgoing
from ._timers import Timer, TimerKind, Timers
from ._tools import TokenCounter, ToolTokens, estimate_bytes

__all__ = ["Context"]

JSONObject = dict[str, Any]


class Context:
    """The gateway's state and its outbox (see the module docstring)."""

    def __init__(self, config: Config, *, count_tokens: TokenCounter = estimate_bytes) -> None:
        self.config = config
        #: Tokens a piece of text costs in context: the shell's tokenizer, or the bytes/4 estimate.
        self.count_tokens = count_tokens
        #: The same for tool definitions, each counted once (see :class:`~._tools.ToolTokens`).
        self.tool_tokens = ToolTokens(count_tokens)
        #: ``now`` of the event being handled: the only clock the core knows.
        self.now = 0.0
        #: ``now`` of the first event: uptime without a clock.
        self.started_at: float | None = None
        #: ``GatewayStarted`` arrived: the shell performs actions.
        self.started = False
        #: ``ShutdownRequested`` arrived: nothing new starts.
        self.closing = False
        self.clients: dict[ClientId, ClientSession] = {}
        self.pools: dict[str, Pool] = {name: Pool.build(spec) for name, spec in config.servers.items()}
        #: Links with a live downstream connection, by its ``downstream`` id.
        self.links: dict[int, Link] = {}
        self.timers = Timers()
        self.metrics = Metrics()
        #: Rate limit buckets, by credential and by agent; a reload keeps them.
        self.buckets = Buckets()
        #: Requests waiting for the shared rate limit store (with ``GATEWAY_REDIS_URL``).
        self.parked = Parked()
        self.reload = ReloadStatus()
        #: Moves whenever a link's catalogue changes: aggregate mode's merged views made before are stale.
        self.catalog_epoch = 0
        #: Aggregate mode's resource subscriptions: the clients subscribed to each (server, URI).
        self.subscriptions: dict[tuple[str, str], set[ClientId]] = {}
        #: URL-mode elicitations relayed and not completed yet: the client each is for, by (server, elicitation id).
        self.elicitations: dict[tuple[str, str], ClientId] = {}
        #: Tool pins and quarantines (:mod:`._pins`).
        self.pins = PinState()
        self._rng = DEFAULT_SEED
        self._next_downstream = 1
        self._out: list[Action] = []

    # -- an event at a time ------------------------------------------------------

    def begin(self, now: float) -> list[Action]:
        """Start handling an event at ``now``; the list its actions go to."""
        self.now = now
        if self.started_at is None:
            self.started_at = now
        self._out = []
        return self._out

    def seed(self, seed: int) -> None:
        """Take the shell's random seed for the ``random`` strategy (0 keeps the fixed default)."""
        if seed:
            self._rng = seed & 0xFFFFFFFFFFFFFFFF or DEFAULT_SEED

    def draw(self) -> int:
        """The next random number for the ``random`` strategy."""
        self._rng = xorshift64(self._rng)
        return self._rng

    def new_downstream(self) -> int:
        """A fresh ``downstream`` id for a connection about to start; never reused."""
        downstream = self._next_downstream
        self._next_downstream += 1
        return downstream

    # -- output ------------------------------------------------------------------

    def emit(self, action: Action) -> None:
        if type(action) is SendToClient:
            session = self.clients.get(action.client)
            if session is not None and session.era == "stateless":
                # The one place every message to a client passes: shaped for the stateless era here.
                self._out.extend(shape_outgoing(session, action))
                return
        elif type(action) is SendToDownstream and (link := self.links.get(action.downstream)) is not None and link.stateless:
            # Every message to a server passes here: a stateless one's takes that era's shape (see _downstream_era).
            shaped = shape_downstream(link, action)
            if shaped is None:
                return
            action = shaped
        self._out.append(action)

    def log(self, level: LogLevel, message: str, **fields: Any) -> None:
        self.emit(Log(level=level, message=message, fields=fields or None))

    def reply(self, client: ClientId, request_id: RequestId, value: JSONObject) -> None:
        self.emit(SendToClient(client=client, message=result(request_id, value), request=request_id))

    def reply_error(self, client: ClientId, request_id: RequestId | None, code: ErrorCode, message: str, **context: Any) -> None:
        self.emit(SendToClient(client=client, message=error_response(request_id, code, message, **context), request=request_id))

    def audit(self, entry: AuditEntry, decision: Decision, *, latency: float = 0.0, error: AuditError | None = None) -> None:
        """The one audit record of a gateway tool call, and its observation in the metrics."""
        # Labels are bounded: only names the configuration defines become label values.
        name = error_name(error)
        self.metrics.observe(
            operation=entry.operation if entry.operation in OPERATIONS else "other",
            agent=entry.agent if entry.agent is not None else "none",
            server="none" if entry.server is None else entry.server if entry.server in self.config.servers else "other",
            outcome="ok" if name is None else name.lower(),
            latency=latency,
        )
        self.emit(Audit(record=entry.record(decision, latency, error)))

    def audit_authentication(self, record: JSONObject, succeeded: bool) -> None:
        """The audit record of an authentication the shell reported, and its count in the metrics."""
        self.metrics.authentications["success" if succeeded else "failure"] += 1
        self.emit(Audit(record=record))

    # -- timers ------------------------------------------------------------------

    def set_timer(self, kind: TimerKind, deadline: float, *, call: Call | None = None, link: Link | None = None) -> int:
        timer, action = self.timers.arm(kind, deadline, call=call, link=link)
        self.emit(action)
        return timer.id

    def cancel_timer(self, timer_id: int) -> None:
        action = self.timers.cancel(timer_id)
        if action is not None:
            self.emit(action)

    def fire(self, timer_id: int) -> Timer | None:
        return self.timers.fire(timer_id)


def error_response(request_id: RequestId | None, code: ErrorCode, message: str, **context: Any) -> JSONObject:
    """A JSON-RPC error the gateway makes: ``data.code`` names ``code``, ``context`` adds to ``data``."""
    return error(request_id, code, message, {"code": code.name, **context})
