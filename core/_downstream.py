"""Downstream servers as the gateway sees them: pools, instances, connections.

Theory of operation
-------------------
Each configured server is a :class:`Pool` of one or more :class:`Instance`
values (the ``instances`` of its entry, or the server itself). An instance is
"a command or a url" plus its health: consecutive failures, when it may be
tried again, and its circuit breaker. A :class:`Downstream` is one MCP
session with an instance: under ``shared`` isolation each instance has one
that every client uses; under ``per_client`` each client session gets its
own, on the instance the strategy picks, started on first use and stopped
when the client goes.

A downstream owns at most one live connection at a time, named by a
connection id the core mints afresh at every start, so events from an
earlier incarnation are recognisably stale:

    IDLE ──use──► STARTING ──initialize ok──► LISTING ──tools/list done──► READY
                   ▲  │                            │                          │
                   │  └──── exit / error / start or ping timeout ─────────────┤
                   │                                                          ▼
                   └────────── restart after the backoff, or use ──────── BACKOFF

Any state goes to IDLE when the downstream is stopped on purpose (idle
timeout, client gone, reload, shutdown); a per-client session that failed
goes from BACKOFF to IDLE and is dropped.

Requests that need a downstream while it starts wait in ``waiters``; they
have reached no instance yet, so when the start fails they fail over to
another instance. Forwarded calls (``pending``) may have reached it: when the
connection dies they fail at once, unless the server says ``retry_calls``.

Circuit breaker (per instance). Failures are: a connection that dies or
cannot start, a handshake or health check that times out. Any answer from
the instance (handshake done, a call answered, even with an error, a ping
answered) resets the count. The breaker is *closed* below
:data:`BREAKER_THRESHOLD` consecutive failures, *open* (the instance takes
nothing) until ``retry_at``, then *half open*: one probe may go, a start;
its success closes the breaker, its failure opens it again for longer
(:func:`backoff_delay`).

Hangs. A call that times out is not a failure by itself (a slow tool is not
a broken server): it makes the connection *suspect*, which sends a ping at
once and holds new calls back in ``waiters``. An answer clears the
suspicion; a ping that times out means the instance hung: it is killed and
started again at once, and the waiting calls go to the new connection (see
``Gateway._suspect`` and ``Gateway._hung``).

An HTTP server may lose our MCP session (it expired it, or restarted) while
the connection stays up: READY goes back to STARTING on the same connection
id, the handshake runs again, and the calls the server refused wait with the
new ones (see ``Gateway._on_session_lost``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from ._balance import Candidate, choose
from ._config import ServerSpec
from ._errors import LocalProtocolError
from ._events import ClientId

__all__ = ["BREAKER_THRESHOLD", "Call", "Downstream", "Instance", "Pool", "State", "backoff_delay"]

JSONObject = dict[str, Any]

#: Longest wait between start attempts of a server that keeps failing.
MAX_BACKOFF = 30.0

#: Consecutive failures that open an instance's circuit breaker.
BREAKER_THRESHOLD = 2


class State(enum.Enum):
    IDLE = "idle"
    STARTING = "starting"
    LISTING = "listing"
    READY = "ready"
    BACKOFF = "backoff"


# Rule 1, after h11: every state transition is listed here and nowhere else.
_TRANSITIONS: dict[State, frozenset[State]] = {
    State.IDLE: frozenset({State.STARTING}),
    State.STARTING: frozenset({State.LISTING, State.BACKOFF, State.IDLE}),
    State.LISTING: frozenset({State.READY, State.BACKOFF, State.IDLE}),
    # READY -> STARTING: an HTTP server lost our session; handshake again.
    State.READY: frozenset({State.STARTING, State.BACKOFF, State.IDLE}),
    State.BACKOFF: frozenset({State.STARTING, State.IDLE}),
}


def backoff_delay(failures: int) -> float:
    """Seconds to wait before start attempt number ``failures + 1``.

    The first failure restarts at once (a crash mid-call should cost the next
    call nothing); repeated failures without an answer in between wait 0.5,
    1, 2, ... seconds, up to :data:`MAX_BACKOFF`.
    """
    if failures < BREAKER_THRESHOLD:
        return 0.0
    return min(MAX_BACKOFF, 0.5 * 2.0 ** (failures - 2))


@dataclass(slots=True, kw_only=True)
class Call:
    """One client request that a downstream serves (or that waits for one).

    ``op`` is ``"get_server_tools"`` or ``"execute_tool"``; ``connection`` is
    the downstream connection that serves (or will serve) it, and ``wire_id``
    the id of the forwarded downstream request once sent. ``deadline`` moves
    on with every progress notification, never past ``hard_deadline``;
    ``tried`` lists the instances it was given to, for failover.
    """

    client: ClientId
    request_id: Any
    op: str
    agent: str
    server: str
    tool: str | None
    rule: str | None
    started: float
    timer: int
    timeout_ms: int
    params: Any = None
    progress_token: Any = None
    request_bytes: int = 0
    arg_keys: tuple[str, ...] = ()
    wire_id: int | None = None
    connection: int | None = None
    deadline: float = 0.0
    hard_deadline: float = 0.0
    tried: tuple[int, ...] = ()
    #: Set once the call was sent again after an HTTP server lost our session.
    resent: bool = False


@dataclass(slots=True, kw_only=True, eq=False)
class Instance:
    """One instance of a server: how to start it, and its health and breaker."""

    index: int
    spec: ServerSpec
    weight: int = 1
    failures: int = 0
    retry_at: float = 0.0
    last_error: str | None = None
    #: The one probe of the half-open breaker (a start) is under way.
    probing: bool = False
    starts: int = 0

    def breaker(self, now: float) -> str:
        """``"closed"``, ``"open"`` or ``"half_open"`` at ``now``."""
        if self.failures < BREAKER_THRESHOLD:
            return "closed"
        return "open" if now < self.retry_at else "half_open"

    def accepts(self, now: float) -> bool:
        """May a new request (or start) go to this instance now?"""
        state = self.breaker(now)
        return state == "closed" or (state == "half_open" and not self.probing)

    def failed(self, reason: str, now: float) -> None:
        self.failures += 1
        self.retry_at = now + backoff_delay(self.failures)
        self.last_error = reason
        self.probing = False

    def answered(self) -> None:
        self.failures = 0
        self.probing = False


@dataclass(slots=True, kw_only=True, eq=False)
class Downstream:
    """One MCP session with one instance of a server (see the module docstring)."""

    name: str
    #: How to start it: the instance's launch spec.
    spec: ServerSpec
    #: The server's entry, for its pool options (timeouts, health, retry_calls).
    entry: ServerSpec
    instance: Instance
    #: The client this session belongs to under ``per_client`` isolation.
    client: ClientId | None = None
    state: State = State.IDLE
    connection: int | None = None
    #: Request ids this connection has used; ids are never reused within it.
    next_wire_id: int = 1
    #: Calls forwarded on this connection and not answered yet, by wire id.
    pending: dict[int, Call] = field(default_factory=dict)
    #: Calls waiting for the connection to become READY.
    waiters: list[Call] = field(default_factory=list)
    #: Wire id of the gateway's own in-flight request (initialize, tools/list, ping).
    internal: dict[int, str] = field(default_factory=dict)
    tools: list[JSONObject] | None = None
    tool_names: frozenset[str] = frozenset()
    #: Pages of a tools/list in progress, and the wire id of its latest request.
    listing: list[JSONObject] = field(default_factory=list)
    listing_wire: int | None = None
    protocol_version: str | None = None
    server_info: JSONObject | None = None
    #: The core's timers about this downstream, by kind ("start", "health",
    #: "ping", "idle", "restart").
    timers: dict[str, int] = field(default_factory=dict)
    #: When it last finished a call or became ready (for the idle timeout).
    last_active: float = 0.0
    garbage_lines: int = 0
    #: Set when a reload removed or changed this server: stop once idle.
    retiring: bool = False
    #: Wire id of the latest ``initialize``: lower ids went to an earlier
    #: MCP session of this connection (HTTP servers can lose sessions).
    session_wire: int = 0
    #: Why the gateway doubts this READY connection is alive (a forwarded
    #: call timed out), until a ping answers; new calls wait meanwhile.
    suspect: str | None = None

    def move(self, new: State) -> None:
        """Change state, refusing any transition the table does not list."""
        if new is not self.state and new not in _TRANSITIONS[self.state]:
            raise LocalProtocolError(f"downstream {self.name}: can't go from {self.state.value} to {new.value}")
        self.state = new

    def take_wire_id(self) -> int:
        wire_id = self.next_wire_id
        self.next_wire_id += 1
        return wire_id

    def set_tools(self, tools: list[JSONObject]) -> None:
        self.tools = tools
        self.tool_names = frozenset(t["name"] for t in tools if isinstance(t.get("name"), str))

    @property
    def in_flight(self) -> int:
        return len(self.pending) + len(self.waiters)


@dataclass(slots=True, kw_only=True, eq=False)
class Pool:
    """Everything the core knows about one configured server: its instances and sessions."""

    name: str
    spec: ServerSpec
    instances: list[Instance]
    #: One downstream per instance under ``shared`` isolation (by instance index).
    shared: list[Downstream]
    #: One downstream per client under ``per_client`` isolation.
    clients: dict[ClientId, Downstream] = field(default_factory=dict)
    #: The load balancer's rotating counter (see :func:`lockgate.core._balance.choose`).
    turn: int = 0

    @classmethod
    def build(cls, spec: ServerSpec) -> Pool:
        instances = [Instance(index=i, spec=s.spec, weight=s.weight) for i, s in enumerate(spec.launch_specs())]
        shared = [] if spec.isolation == "per_client" else [Downstream(name=spec.name, spec=i.spec, entry=spec, instance=i) for i in instances]
        return cls(name=spec.name, spec=spec, instances=instances, shared=shared)

    def choose(
        self,
        client: ClientId,
        now: float,
        *,
        exclude: tuple[int, ...] = (),
        prefer_running: bool = False,
        draw: int = 0,
    ) -> Downstream | str:
        """The downstream to serve a request of ``client``, or why there is none.

        Only instances whose breaker lets requests through are considered,
        minus ``exclude`` (instances a failing-over request already tried);
        with ``prefer_running``, a ready connection wins over starting one.
        Under ``per_client`` isolation the client's own live session is used
        whatever its instance's health (its state lives there); a client
        without one gets a new session (added to :attr:`clients`, not
        started) on the instance the strategy picks. ``max_processes``
        refuses a session that would need one process more. ``draw`` is the
        random number for the ``random`` strategy. Advances :attr:`turn`.
        """
        cap = self.spec.max_processes
        if self.spec.isolation == "per_client":
            own = self.clients.get(client)
            if own is not None and own.connection is not None and own.instance.index not in exclude:
                return own
            if own is not None and own.state is State.IDLE:
                del self.clients[client]  # stopped for idleness: start afresh, maybe elsewhere
                own = None
            if own is not None:
                return self.unavailable(now)
            sessions = self.sessions()
            candidates = [
                Candidate(
                    index=i.index,
                    weight=i.weight,
                    load=sum(1 for ds in sessions if ds.instance is i),
                    failures=i.failures,
                )
                for i in self.instances
                if i.index not in exclude and i.accepts(now)
            ]
            if not candidates:
                return self.unavailable(now)
            if cap is not None and self.live() >= cap:
                return f"all {cap} of its processes are in use (max_processes)"
            instance = self.instances[self._pick(candidates, draw)]
            ds = Downstream(name=self.name, spec=instance.spec, entry=self.spec, instance=instance, client=client)
            self.clients[client] = ds
            return ds
        usable = [ds for ds in self.shared if ds.instance.index not in exclude and ds.instance.accepts(now)]
        if cap is not None and self.live() >= cap:
            usable = [ds for ds in usable if ds.connection is not None]
            if not usable and any(ds.instance.accepts(now) for ds in self.shared):
                return f"all {cap} of its processes are in use (max_processes)"
        if prefer_running and any(ds.state is State.READY for ds in usable):
            usable = [ds for ds in usable if ds.state is State.READY]
        if any(ds.suspect is not None for ds in usable) and any(ds.suspect is None for ds in usable):
            # A connection whose call just timed out waits for its ping; others need not.
            usable = [ds for ds in usable if ds.suspect is None]
        if not usable:
            return self.unavailable(now)
        candidates = [
            Candidate(
                index=ds.instance.index,
                weight=ds.instance.weight,
                load=ds.in_flight,
                failures=ds.instance.failures,
                running=ds.state is State.READY,
            )
            for ds in usable
        ]
        return self.shared[self._pick(candidates, draw)]

    def _pick(self, candidates: list[Candidate], draw: int) -> int:
        index, self.turn = choose(
            self.spec.strategy,
            candidates,
            size=len(self.instances),
            turn=self.turn,
            draw=draw,
            weights=[i.weight for i in self.instances],
        )
        return index

    def unavailable(self, now: float) -> str:
        """Why no instance can take a request now, in words a client may read."""
        if len(self.instances) == 1:
            return self._reason(self.instances[0], now)
        reasons = "; ".join(f"instance {i.index}: {self._reason(i, now)}" for i in self.instances)
        return f"no instance can take the request ({reasons})"

    def _reason(self, instance: Instance, now: float) -> str:
        error = instance.last_error or "not available"
        if instance.breaker(now) == "open":
            wait = f"{instance.retry_at - now:.1f} s"
            running = any(ds.instance is instance and ds.connection is not None for ds in self.sessions())
            return f"{error}; " + (f"not used for another {wait}" if running else f"next start attempt in {wait}")
        if instance.probing:
            return f"{error}; a probe is under way"
        return error

    def sessions(self) -> list[Downstream]:
        """Every downstream of this server, shared ones first."""
        return [*self.shared, *self.clients.values()]

    def live(self) -> int:
        """Downstreams with a connection (started, starting or backing off with one)."""
        return sum(1 for ds in self.sessions() if ds.connection is not None)

    def summary(self, now: float) -> str:
        """One word for ``/ready``: ready, degraded, starting, idle or unavailable."""
        accepting = [i for i in self.instances if i.accepts(now)]
        if not accepting:
            return "unavailable"
        ready = [ds for ds in self.sessions() if ds.state is State.READY and ds.instance.accepts(now)]
        if ready:
            return "ready" if all(i.failures == 0 for i in self.instances) else "degraded"
        if any(ds.state in (State.STARTING, State.LISTING) for ds in self.sessions()):
            return "starting"
        return "idle"

    def status(self, now: float) -> JSONObject:
        """A JSON summary for ``get_gateway_status``."""
        sessions = self.sessions()
        first = next((ds for ds in sessions if ds.tools is not None), sessions[0] if sessions else None)
        instances = []
        for inst in self.instances:
            mine = [ds for ds in sessions if ds.instance is inst]
            states = [ds.state.value for ds in mine]
            instances.append(
                {
                    "transport": inst.spec.transport,
                    "weight": inst.weight,
                    "state": states[0] if len(states) == 1 else states,
                    "health": "healthy" if inst.failures == 0 else "unhealthy",
                    "breaker": inst.breaker(now),
                    "in_use": sum(ds.in_flight for ds in mine),
                    "starts": inst.starts,
                    "consecutive_failures": inst.failures,
                    "last_error": inst.last_error,
                }
            )
        return {
            "state": self.summary(now),
            "transport": self.spec.transport,
            "strategy": self.spec.strategy,
            "isolation": self.spec.isolation,
            "protocol_version": first.protocol_version if first else None,
            "server_info": first.server_info if first else None,
            "tools": None if first is None or first.tools is None else len(first.tools),
            "pending_calls": sum(len(ds.pending) for ds in sessions),
            "waiting_calls": sum(len(ds.waiters) for ds in sessions),
            "sessions": len(sessions),
            "starts": sum(i.starts for i in self.instances),
            "consecutive_failures": min(i.failures for i in self.instances),
            "last_error": next((i.last_error for i in self.instances if i.last_error), None),
            "instances": instances,
        }
