"""One client's MCP session as the gateway sees it (handshake era), and its lifecycle.

Protocol versions: MCP 2024-11-05 to 2025-11-25 open a session with
``initialize`` and ``notifications/initialized``
(https://modelcontextprotocol.io/specification/2025-11-25/basic/lifecycle).
The negotiated version is a property of the session, not of the transport,
so one gateway serves clients of different revisions side by side.

Theory of operation
-------------------
A session exists from ``ClientOpened`` to ``ClientClosed`` (or, over
Streamable HTTP, until it expires). Rule 1, after h11: every state change is
in :data:`_TRANSITIONS` and made by :meth:`ClientSession.move`.

    OPEN ──initialize answered──► INITIALIZED ──notifications/initialized──► READY
      │                               │                                       │
      └───────────────────────────────┴─────────── close / expire ───────────►┴─► CLOSED

Requests other than ``ping`` and ``initialize`` are served from INITIALIZED
on (the spec lets a server answer before ``notifications/initialized``). A
peer that repeats ``initialize`` or sends ``notifications/initialized`` out
of turn gets an error or nothing; the session does not move.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ._call import Call
from ._eras import HANDSHAKE_VERSIONS, Era
from ._errors import LocalProtocolError
from ._events import ClientId, SessionRecord
from ._identity import Principal
from ._jsonrpc import RequestId

if TYPE_CHECKING:
    from ._relays import Relayed

__all__ = ["HANDSHAKE_VERSIONS", "LOG_LEVELS", "ClientSession", "SessionState", "SessionTrigger", "negotiate_version"]


#: RFC 5424 severities, as MCP's ``logging/setLevel`` names them.
LOG_LEVELS = ("debug", "info", "notice", "warning", "error", "critical", "alert", "emergency")


def negotiate_version(requested: str) -> str:
    """The client's version when we speak it, else the newest one we do (spec: lifecycle)."""
    return requested if requested in HANDSHAKE_VERSIONS else HANDSHAKE_VERSIONS[-1]


class SessionState(enum.Enum):
    OPEN = "open"
    INITIALIZED = "initialized"
    READY = "ready"
    CLOSED = "closed"


class SessionTrigger(enum.Enum):
    INITIALIZE = "initialize"
    INITIALIZED = "initialized"
    CLOSE = "close"


_TRANSITIONS: dict[tuple[SessionState, SessionTrigger], SessionState] = {
    (SessionState.OPEN, SessionTrigger.INITIALIZE): SessionState.INITIALIZED,
    (SessionState.INITIALIZED, SessionTrigger.INITIALIZED): SessionState.READY,
    **{
        (state, SessionTrigger.CLOSE): SessionState.CLOSED
        for state in (SessionState.OPEN, SessionState.INITIALIZED, SessionState.READY)
    },
}


@dataclass(slots=True, kw_only=True)
class ClientSession:
    """What the gateway remembers about one connected client."""

    id: ClientId
    state: SessionState = SessionState.OPEN
    protocol_version: str | None = None
    #: The verified caller (``ClientOpened.principal``); ``None`` without a credential.
    principal: Principal | None = None
    #: Why the principal's credential no longer proves anything (``AuthenticationFailed(client=...)``).
    refused: str | None = None
    #: Requests in flight through a downstream, by the client's request id.
    calls: dict[RequestId, Call] = field(default_factory=dict)
    #: What it serves this client: the gateway tools (on demand) or the servers' own (aggregate),
    #: and the agent its aggregate requests act as by default; both decided at ``initialize``.
    mode: str = "on_demand"
    agent: str | None = None
    #: The capabilities its ``initialize`` declared (sampling, elicitation, roots).
    capabilities: dict[str, object] = field(default_factory=dict)
    #: The lowest severity of server log messages it asked for (``logging/setLevel``).
    log_level: str | None = None
    #: Servers' requests relayed to it and not answered yet, by the gateway's id (``lockgate-<n>``).
    relayed: dict[str, Relayed] = field(default_factory=dict)
    next_relay: int = 0
    #: A REST session's one server (``ClientOpened(transport="rest", server=...)``).
    server: str | None = None
    #: The era it speaks, from its first request (or its transport); ``None`` before one arrived.
    era: Era | None = None
    #: A stateless client's requests not answered yet: each one's method, which shapes its answer.
    methods: dict[RequestId, str] = field(default_factory=dict)
    #: Its open ``subscriptions/listen`` streams, by the listen request's id: the notifications each
    #: carries, and the resources (their URIs as the client knows them) whose updates it carries.
    listens: dict[RequestId, tuple[frozenset[str], frozenset[str]]] = field(default_factory=dict)
    #: A restored aggregate session (``ClientOpened.restored``) whose agent's servers have not told
    #: what they offer here yet: its requests wait for them first, as its ``initialize`` did.
    warming: bool = False

    @property
    def initialized(self) -> bool:
        """``initialize`` has been answered: requests are served from now on."""
        return self.state in (SessionState.INITIALIZED, SessionState.READY)

    def restore(self, record: SessionRecord) -> None:
        """Continue a session another gateway opened: ready at once, as its ``initialize`` left it."""
        self.move(SessionTrigger.INITIALIZE)
        self.move(SessionTrigger.INITIALIZED)
        self.era = "handshake"
        self.protocol_version = record.protocol_version
        self.capabilities = dict(record.capabilities)
        self.agent, self.mode = record.agent, record.mode
        self.warming = record.mode == "aggregate"

    def record(self) -> SessionRecord | None:
        """What :meth:`restore` needs to continue this session elsewhere; ``None`` before ``initialize`` settled it."""
        if self.era != "handshake" or not self.initialized or self.protocol_version is None:
            return None
        if self.mode not in ("on_demand", "aggregate"):
            return None  # auto not settled yet, or a REST session
        return SessionRecord(
            protocol_version=self.protocol_version, capabilities=dict(self.capabilities), agent=self.agent, mode=self.mode,
        )

    def move(self, trigger: SessionTrigger) -> None:
        """Take one step of the lifecycle; a step the table does not list is a bug in the core."""
        new = _TRANSITIONS.get((self.state, trigger))
        if new is None:
            raise LocalProtocolError(f"client {self.id!r}: can't {trigger.value} when {self.state.value}")
        self.state = new
