"""A configured server as the gateway sees it: a pool of instances and the links to them.

Each configured server is a :class:`Pool` of one or more
:class:`~lockgate.core._instance.Instance` values and the
:class:`~lockgate.core._link.Link` values that talk to them: one per instance
under ``shared`` isolation, one per client session under ``per_client``.
:meth:`Pool.choose` picks the link for a request (through the strategies of
:mod:`lockgate.core._balance`), or says why there is none.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from ._balance import Candidate, choose
from ._config import ServerSpec
from ._eras import Era
from ._events import ClientId
from ._instance import Breaker, Instance
from ._link import Link, State

__all__ = ["Pool", "ServerState", "Unavailable"]

JSONObject = dict[str, Any]


class ServerState(enum.StrEnum):
    """A server's state in one word, for ``/ready`` and the status."""

    #: Every instance healthy, and one connected.
    READY = "ready"
    #: Connected, but some instance has failed lately.
    DEGRADED = "degraded"
    STARTING = "starting"
    #: Nothing started yet; it starts on use.
    IDLE = "idle"
    #: No instance takes requests now: calls fail at once.
    UNAVAILABLE = "unavailable"


@dataclass(frozen=True, slots=True)
class Unavailable:
    """No link can take a request now, and why, in words a client may read."""

    reason: str


@dataclass(slots=True, kw_only=True, eq=False)
class Pool:
    """Everything the core knows about one configured server: its instances and links."""

    name: str
    spec: ServerSpec
    instances: list[Instance]
    #: One link per instance under ``shared`` isolation (by instance index).
    shared: list[Link]
    #: One link per client under ``per_client`` isolation.
    clients: dict[ClientId, Link] = field(default_factory=dict)
    #: The load balancer's rotating counter (see :func:`lockgate.core._balance.choose`).
    turn: int = 0
    #: The link that last finished its handshake: its cached catalogue stands for the server
    #: when a client has no link of its own (a per-client one that failed is dropped).
    known: Link | None = None

    @classmethod
    def build(cls, spec: ServerSpec) -> Pool:
        instances = [Instance(index=i, id=s.id, spec=s.spec, weight=s.weight) for i, s in enumerate(spec.launch_specs())]
        shared = [] if spec.isolation == "per_client" else [cls.link_for(spec, i) for i in instances]
        return cls(name=spec.name, spec=spec, instances=instances, shared=shared)

    @staticmethod
    def link_for(spec: ServerSpec, instance: Instance) -> Link:
        """A new shared link to ``instance`` of server ``spec``."""
        return Link(name=spec.name, spec=instance.spec, entry=spec, instance=instance)

    def choose(
        self,
        client: ClientId,
        now: float,
        *,
        exclude: tuple[int, ...] = (),
        prefer_running: bool = False,
        draw: int = 0,
    ) -> Link | Unavailable:
        """The link to serve a request of ``client``, or why there is none.

        Only instances whose breaker lets requests through are considered,
        minus ``exclude`` (instances a failing-over request already tried);
        with ``prefer_running``, a ready link wins over starting one, and a
        suspect one loses to any other. Under ``per_client`` isolation the
        client's own connected link is used whatever its instance's health
        (its state lives there); a client without one gets a new link (added
        to :attr:`clients`, not started) on the instance the strategy picks.
        ``max_processes`` refuses a link that would need one process more.
        ``draw`` is the random number for the ``random`` strategy. Advances
        :attr:`turn`.
        """
        cap = self.spec.max_processes
        if self.spec.isolation == "per_client":
            own = self.clients.get(client)
            if own is not None and own.downstream is not None and own.instance.index not in exclude:
                return own
            if own is not None and own.state is State.IDLE:
                del self.clients[client]  # stopped for idleness: start afresh, maybe elsewhere
                own = None
            if own is not None:
                return self.unavailable(now)
            links = self.links()
            candidates = [
                Candidate(
                    index=i.index,
                    weight=i.weight,
                    load=sum(1 for link in links if link.instance is i),
                    failures=i.failures,
                )
                for i in self.instances
                if i.index not in exclude and i.accepts(now)
            ]
            if not candidates:
                return self.unavailable(now)
            if cap is not None and self.live() >= cap:
                return Unavailable(f"all {cap} of its processes are in use (max_processes)")
            instance = self.instances[self._pick(candidates, draw)]
            link = Link(name=self.name, spec=instance.spec, entry=self.spec, instance=instance, client=client)
            self.clients[client] = link
            return link
        usable = [link for link in self.shared if link.instance.index not in exclude and link.instance.accepts(now)]
        if cap is not None and self.live() >= cap:
            usable = [link for link in usable if link.downstream is not None]
            if not usable and any(link.instance.accepts(now) for link in self.shared):
                return Unavailable(f"all {cap} of its processes are in use (max_processes)")
        if prefer_running and any(link.state is State.READY for link in usable):
            usable = [link for link in usable if link.state is State.READY]
        if any(link.suspect is not None for link in usable) and any(link.suspect is None for link in usable):
            # A link whose call just timed out waits for its ping; others need not.
            usable = [link for link in usable if link.suspect is None]
        if not usable:
            return self.unavailable(now)
        candidates = [
            Candidate(
                index=link.instance.index,
                weight=link.instance.weight,
                load=link.in_flight,
                failures=link.instance.failures,
                running=link.state is State.READY,
            )
            for link in usable
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

    def unavailable(self, now: float) -> Unavailable:
        """Why no instance can take a request now."""
        if len(self.instances) == 1:
            return Unavailable(self._reason(self.instances[0], now))
        reasons = "; ".join(f"instance {i.index}: {self._reason(i, now)}" for i in self.instances)
        return Unavailable(f"no instance can take the request ({reasons})")

    def _reason(self, instance: Instance, now: float) -> str:
        error = instance.last_error or "not available"
        if instance.breaker(now) is Breaker.OPEN:
            wait = f"{instance.retry_at - now:.1f} s"
            running = any(link.instance is instance and link.downstream is not None for link in self.links())
            return f"{error}; " + (f"not used for another {wait}" if running else f"next start attempt in {wait}")
        if instance.probing:
            return f"{error}; a probe is under way"
        return error

    def links(self) -> list[Link]:
        """Every link of this server, shared ones first."""
        return [*self.shared, *self.clients.values()]

    @property
    def era(self) -> Era | None:
        """The era of MCP it speaks, as the link that stands for it decided (see ``protocol_version``); None before any."""
        links = self.links()
        first = next((link for link in links if link.tools is not None), links[0] if links else None)
        return first.era if first is not None else None

    def live(self) -> int:
        """Links with a downstream connection (started, starting or backing off with one)."""
        return sum(1 for link in self.links() if link.downstream is not None)

    def summary(self, now: float) -> ServerState:
        """One word for ``/ready`` (see :class:`ServerState`)."""
        accepting = [i for i in self.instances if i.accepts(now)]
        if not accepting:
            return ServerState.UNAVAILABLE
        ready = [link for link in self.links() if link.state is State.READY and link.instance.accepts(now)]
        if ready:
            return ServerState.READY if all(i.failures == 0 for i in self.instances) else ServerState.DEGRADED
        if any(link.state in (State.STARTING, State.LISTING) for link in self.links()):
            return ServerState.STARTING
        return ServerState.IDLE

    def status(self, now: float) -> JSONObject:
        """A JSON summary for ``get_gateway_status``."""
        links = self.links()
        first = next((link for link in links if link.tools is not None), links[0] if links else None)
        instances = []
        for inst in self.instances:
            mine = [link for link in links if link.instance is inst]
            states = [link.state.value for link in mine]
            breaker = inst.breaker(now)
            instances.append(
                {
                    "transport": inst.spec.transport,
                    "weight": inst.weight,
                    "state": states[0] if len(states) == 1 else states,
                    # The era its connection speaks: "stateless" (2026-07-28) or "handshake"; None before any.
                    "era": next((link.era for link in mine if link.era is not None), None),
                    "health": "healthy" if inst.failures == 0 else "unhealthy",
                    # A probe under way shows as half open, the breaker's state to clients.
                    "breaker": Breaker.HALF_OPEN.value if breaker is Breaker.PROBING else breaker.value,
                    "in_use": sum(link.in_flight for link in mine),
                    "starts": inst.starts,
                    "consecutive_failures": inst.failures,
                    "last_error": inst.last_error,
                }
            )
        return {
            "state": self.summary(now).value,
            "transport": self.spec.transport,
            "strategy": self.spec.strategy,
            "isolation": self.spec.isolation,
            "protocol_version": first.protocol_version if first else None,
            "era": self.era,
            "server_info": first.server_info if first else None,
            "tools": None if first is None or first.tools is None else len(first.tools),
            "pending_calls": sum(len(link.pending) for link in links),
            "waiting_calls": sum(len(link.waiters) for link in links),
            "sessions": len(links),
            "starts": sum(i.starts for i in self.instances),
            "consecutive_failures": min(i.failures for i in self.instances),
            "last_error": next((i.last_error for i in self.instances if i.last_error), None),
            "instances": instances,
        }
