"""A link: the gateway's MCP session with one instance of a server, and its lifecycle.

Theory of operation
-------------------
Under ``shared`` isolation each instance has one link that every client
uses; under ``per_client`` each client session gets its own, on the instance
the strategy picks, started on first use and stopped when the client goes.

A link holds at most one *downstream connection* at a time (a process, or an
HTTP client), named by a ``downstream`` id the core mints afresh at every
start, so events about an earlier connection are recognisably stale. Rule 1,
after h11: every state change is in :data:`_TRANSITIONS`, made by
:meth:`Link.move`.

    IDLE ──use──► STARTING ──initialize ok──► LISTING ──lists done──► READY
                   ▲  │                            │                          │
                   │  └──── exit / error / start or ping timeout ─────────────┤
                   │                                                          ▼
                   └────────── restart after the backoff, or use ──────── BACKOFF

(On a stateless-era connection the ``server/discover`` answer stands for
``initialize``'s: see :mod:`~lockgate.core._downstream_era`.) Any state
goes to IDLE when the link is stopped on purpose (idle timeout,
client gone, reload, shutdown); a per-client link that failed goes from
BACKOFF to IDLE and is dropped. READY goes back to STARTING on the same
connection when an HTTP server lost our MCP session (it expired it, or
restarted): the handshake runs again, and the calls the server refused wait
with the new ones (see :mod:`~lockgate.core._lost_sessions`).

Requests that need a link while it starts wait in ``waiters``; they have
reached no instance yet, so when the start fails they fail over to another
instance. Forwarded calls (``pending``) may have reached it: when the
connection dies they fail at once, unless the server says ``retry_calls``.
While a READY link is *suspect* (a call timed out, and a ping is asking
whether it is alive), new calls wait too (see :mod:`~lockgate.core._health`).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from ._call import Call
from ._config import ServerSpec
from ._eras import Era
from ._errors import LocalProtocolError
from ._events import ClientId
from ._instance import Instance
from ._timers import TimerKind

__all__ = ["LISTS", "Internal", "Link", "State"]

JSONObject = dict[str, Any]


class State(enum.Enum):
    IDLE = "idle"
    STARTING = "starting"
    LISTING = "listing"
    READY = "ready"
    BACKOFF = "backoff"


_TRANSITIONS: dict[State, frozenset[State]] = {
    State.IDLE: frozenset({State.STARTING}),
    State.STARTING: frozenset({State.LISTING, State.BACKOFF, State.IDLE}),
    State.LISTING: frozenset({State.READY, State.BACKOFF, State.IDLE}),
    # READY -> STARTING: an HTTP server lost our session; handshake again.
    State.READY: frozenset({State.STARTING, State.BACKOFF, State.IDLE}),
    State.BACKOFF: frozenset({State.STARTING, State.IDLE}),
}


class Internal(enum.Enum):
    """The gateway's own requests on a link (not a client's)."""

    INITIALIZE = "initialize"
    #: The era probe at a start (see :mod:`~lockgate.core._downstream_era`).
    DISCOVER = "server/discover"
    TOOLS_LIST = "tools/list"
    RESOURCES_LIST = "resources/list"
    TEMPLATES_LIST = "resources/templates/list"
    PROMPTS_LIST = "prompts/list"
    PING = "ping"
    #: ``logging/setLevel`` fanned out to the server: its answer is not awaited by anyone.
    SET_LEVEL = "logging/setLevel"
    #: A subscription renewed on a restarted connection: likewise.
    SUBSCRIBE = "resources/subscribe"
    #: A stateless server's notification stream (2026-07-28): answered only when it ends.
    LISTEN = "subscriptions/listen"


#: The lists of a server's catalogue: which request fetches each, the key of its
#: items in the result, and the key that names an item.
LISTS: dict[Internal, tuple[str, str]] = {
    Internal.TOOLS_LIST: ("tools", "name"),
    Internal.RESOURCES_LIST: ("resources", "uri"),
    Internal.TEMPLATES_LIST: ("resourceTemplates", "uriTemplate"),
    Internal.PROMPTS_LIST: ("prompts", "name"),
}


@dataclass(slots=True, kw_only=True, eq=False)
class Link:
    """The gateway's MCP session with one instance of a server (see the module docstring)."""

    name: str
    #: How to start it: the instance's launch spec.
    spec: ServerSpec
    #: The server's entry, for its pool options (timeouts, health, retry_calls).
    entry: ServerSpec
    instance: Instance
    #: The client this link belongs to under ``per_client`` isolation.
    client: ClientId | None = None
    #: Whose OAuth token its connection carries (``oauth.per_user``); ``None``: the gateway's.
    principal: str | None = None
    state: State = State.IDLE
    #: The id of its current downstream connection; ``None`` without one.
    downstream: int | None = None
    #: Request ids this connection has used; ids are never reused within it.
    next_wire_id: int = 1
    #: Calls forwarded on this connection and not answered yet, by wire id.
    pending: dict[int, Call] = field(default_factory=dict)
    #: Calls waiting for the link to be READY (and not suspect).
    waiters: list[Call] = field(default_factory=list)
    #: The gateway's own requests in flight, by wire id.
    internal: dict[int, Internal] = field(default_factory=dict)
    #: The tools it serves: what it listed, less the quarantined ones (see :mod:`~lockgate.core._pins`).
    tools: list[JSONObject] | None = None
    tool_names: frozenset[str] = frozenset()
    #: Every tool it listed, quarantined ones included, as it listed them.
    listed: list[JSONObject] | None = None
    #: The rest of its catalogue (aggregate mode): resources, resource templates and
    #: prompts, by the request that lists them; a kind the server does not offer is absent.
    catalog: dict[Internal, list[JSONObject]] = field(default_factory=dict)
    #: Pages of each list in progress, and the wire id of its latest request.
    listing: dict[Internal, list[JSONObject]] = field(default_factory=dict)
    listing_wire: dict[Internal, int] = field(default_factory=dict)
    protocol_version: str | None = None
    #: The era its latest connection settled on (kept, like ``protocol_version``, once it stops); ``None`` before any.
    era: Era | None = None
    #: The ``_meta`` envelope every request carries while its connection is stateless; ``None`` otherwise
    #: (handshake era, or not decided yet). See :mod:`~lockgate.core._downstream_era`.
    stamp: JSONObject | None = None
    #: The wire id of its open ``subscriptions/listen`` request (stateless only), if any.
    listen_wire: int | None = None
    server_info: JSONObject | None = None
    #: What its ``initialize`` answer (or, stateless, its ``server/discover`` answer) offered: capabilities and instructions.
    capabilities: JSONObject = field(default_factory=dict)
    instructions: str | None = None
    #: Its tools and catalogue of the connection before, while a new one lists them.
    previous: tuple[list[JSONObject], dict[Internal, list[JSONObject]]] | None = None
    #: The core's timers about this link, by kind (see :mod:`~lockgate.core._timers`).
    timers: dict[TimerKind, int] = field(default_factory=dict)
    #: When it last finished a call or became ready (for the idle timeout).
    last_active: float = 0.0
    #: Lines of its output that were not JSON-RPC, this connection (logged a few times only).
    garbage_lines: int = 0
    #: Set when a reload removed or changed this server: stop once idle.
    retiring: bool = False
    #: Wire id of the latest ``initialize``: lower ids went to an earlier
    #: MCP session of this connection (HTTP servers can lose sessions).
    session_wire: int = 0
    #: Why the gateway doubts this READY link is alive (a forwarded call
    #: timed out), until a ping answers; new calls wait meanwhile.
    suspect: str | None = None

    def move(self, new: State) -> None:
        """Change state, refusing any transition the table does not list."""
        if new is not self.state and new not in _TRANSITIONS[self.state]:
            raise LocalProtocolError(f"link {self.name}: can't go from {self.state.value} to {new.value}")
        self.state = new

    def take_wire_id(self) -> int:
        wire_id = self.next_wire_id
        self.next_wire_id += 1
        return wire_id

    def set_tools(self, tools: list[JSONObject]) -> None:
        self.tools = tools
        self.tool_names = frozenset(t["name"] for t in tools if isinstance(t.get("name"), str))

    def set_list(self, kind: Internal, items: list[JSONObject]) -> None:
        """Keep one list of the catalogue other than tools."""
        self.catalog[kind] = items

    @property
    def serving(self) -> bool:
        """READY and not suspect: a call given to it now is sent at once."""
        return self.state is State.READY and self.suspect is None

    @property
    def stateless(self) -> bool:
        """Whether its current connection speaks the stateless era (2026-07-28)."""
        return self.stamp is not None

    @property
    def in_flight(self) -> int:
        return len(self.pending) + len(self.waiters)
