"""The state of one downstream server as the gateway sees it.

Theory of operation
-------------------
Each configured server has one :class:`Downstream`. It owns at most one live
connection at a time, named by a connection id that the core mints afresh at
every start, so events from an earlier incarnation are recognisably stale.

    IDLE ──need──► STARTING ──initialize ok──► LISTING ──tools/list done──► READY
      ▲               │                            │                          │
      │               └──────── exit / error / start timeout ─────────────────┤
      │                                                                       ▼
      └──────────── (stopped by reload or shutdown)                        BACKOFF

A connection is started once and kept for every later call (the MCP session
lives as long as the process). Requests that need the server while it starts
wait in ``waiters``. When a connection dies, its pending calls fail at once;
the next use restarts it, unless it has failed repeatedly without reaching
READY, in which case further uses fail at once until the backoff delay passes.

An HTTP server may lose our MCP session (it expired it, or restarted) while
the connection stays up: READY goes back to STARTING on the same connection
id, the handshake runs again, and the calls the server refused wait with the
new ones (see ``Gateway._on_session_lost``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from .config import ServerSpec
from .errors import LocalProtocolError
from .events import ClientId

__all__ = ["Call", "Downstream", "State", "backoff_delay"]

JSONObject = dict[str, Any]

#: Longest wait between start attempts of a server that keeps failing.
MAX_BACKOFF = 30.0


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
    call nothing); repeated failures without a successful handshake wait 0.5,
    1, 2, ... seconds, up to :data:`MAX_BACKOFF`.
    """
    if failures <= 1:
        return 0.0
    return min(MAX_BACKOFF, 0.5 * 2.0 ** (failures - 2))


@dataclass(slots=True, kw_only=True)
class Call:
    """One client request that a downstream serves (or that waits for one).

    ``op`` is ``"get_server_tools"`` or ``"execute_tool"``; ``connection`` is
    the downstream connection that serves (or will serve) it, and ``wire_id``
    the id of the forwarded downstream request once sent.
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
    #: Set once the call was sent again after an HTTP server lost our session.
    resent: bool = False


@dataclass(slots=True, kw_only=True)
class Downstream:
    """Everything the core knows about one configured server."""

    name: str
    spec: ServerSpec
    state: State = State.IDLE
    connection: int | None = None
    #: Request ids this connection has used; ids are never reused within it.
    next_wire_id: int = 1
    #: Calls forwarded on this connection and not answered yet, by wire id.
    pending: dict[int, Call] = field(default_factory=dict)
    #: Calls waiting for the connection to become READY.
    waiters: list[Call] = field(default_factory=list)
    #: Wire id of the gateway's own in-flight request (initialize, tools/list).
    internal: dict[int, str] = field(default_factory=dict)
    tools: list[JSONObject] | None = None
    tool_names: frozenset[str] = frozenset()
    #: Pages of a tools/list in progress, and the wire id of its latest request.
    listing: list[JSONObject] = field(default_factory=list)
    listing_wire: int | None = None
    protocol_version: str | None = None
    server_info: JSONObject | None = None
    start_timer: int | None = None
    failures: int = 0
    retry_at: float = 0.0
    last_error: str | None = None
    starts: int = 0
    garbage_lines: int = 0
    #: Set when a reload removed or changed this server: stop once idle.
    retiring: bool = False
    #: Wire id of the latest ``initialize``: lower ids went to an earlier
    #: MCP session of this connection (HTTP servers can lose sessions).
    session_wire: int = 0

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

    def status(self) -> JSONObject:
        """A JSON summary for ``get_gateway_status``."""
        return {
            "state": self.state.value,
            "transport": self.spec.transport,
            "protocol_version": self.protocol_version,
            "server_info": self.server_info,
            "tools": None if self.tools is None else len(self.tools),
            "pending_calls": len(self.pending),
            "waiting_calls": len(self.waiters),
            "starts": self.starts,
            "consecutive_failures": self.failures,
            "last_error": self.last_error,
        }
