"""A call: one client request that a downstream serves, and its lifecycle.

Theory of operation
-------------------
``get_server_tools`` and ``execute_tool`` become a :class:`Call` once policy
allowed them and an instance was chosen, and so does a request of the
servers' own surface (aggregate mode: ``tools/call``, ``resources/read``,
``prompts/get``, ``completion/complete``, ``resources/subscribe``…), which
is forwarded as a :class:`Forward`. Rule 1, after h11: every state
change of a call is listed in :data:`_TRANSITIONS` and made by
:meth:`Call.move`, which names any transition the table lacks.

    WAITING ──forward──► FORWARDED ──requeue──► REQUEUED ──forward──► RESENT
       ▲ │                   │                     │ ▲                   │
       │ └──reroute──┐       │                     │ └──────reroute──────┤
       └─────────────┴───reroute (retry_calls)     └─reroute─┐           │
                                                             ▼           │
    any of them ──────────────── finish ─────────────────► FINISHED ◄────┘

- ``WAITING``: not sent yet; it waits for its link to be ready (or for a
  suspect link's ping). It has reached no instance, so it may be *rerouted*
  to another one (failover, or a hung link started again).
- ``FORWARDED``: sent as ``tools/call``; ``wire_id`` names it on the link.
- ``REQUEUED``: an HTTP server lost our MCP session and answered 404, so it
  did not process the call (MCP 2025-11-25, basic/transports, "Session
  Management"): it waits to be sent once more.
- ``RESENT``: sent the second time. A second loss fails it.
- ``FINISHED``: answered, failed, timed out or cancelled; audited once.

Rerouting keeps the memory of a requeue: a requeued or resent call stays
``REQUEUED`` when it moves, so it is never sent more than twice.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Literal

from ._errors import LocalProtocolError
from ._events import ClientId
from ._identity import Principal
from ._tools import ExecuteTool, GetServerTools

__all__ = ["Call", "CallState", "CallTrigger", "Forward", "ForwardMethod"]

#: The client requests aggregate mode forwards to the one server they name.
ForwardMethod = Literal[
    "tools/call", "resources/read", "prompts/get", "completion/complete", "resources/subscribe", "resources/unsubscribe"
]


@dataclass(frozen=True, slots=True)
class Forward:
    """A client request one server serves as it is: the method, the params the server gets, and what it names.

    ``params`` are already in the server's own terms (its tool or prompt
    name, its URI) and without the client's ``_meta``; ``item`` is that name
    or URI, for the audit record.
    """

    method: ForwardMethod
    params: dict[str, Any]
    item: str
    #: The caller's own timeout (a REST call's ``timeout_ms``); ``None``: the server's or the gateway's.
    timeout_ms: int | None = None


class CallState(enum.Enum):
    WAITING = "waiting"
    FORWARDED = "forwarded"
    REQUEUED = "requeued"
    RESENT = "resent"
    FINISHED = "finished"


class CallTrigger(enum.Enum):
    #: Sent on its link.
    FORWARD = "forward"
    #: The server lost our session and refused it (HTTP 404): send it again.
    REQUEUE = "requeue"
    #: Given to another link (or the same one, started again) before an answer.
    REROUTE = "reroute"
    #: Answered, failed, timed out or cancelled.
    FINISH = "finish"


_LIVE = (CallState.WAITING, CallState.FORWARDED, CallState.REQUEUED, CallState.RESENT)

_TRANSITIONS: dict[tuple[CallState, CallTrigger], CallState] = {
    (CallState.WAITING, CallTrigger.FORWARD): CallState.FORWARDED,
    (CallState.WAITING, CallTrigger.REROUTE): CallState.WAITING,
    (CallState.FORWARDED, CallTrigger.REQUEUE): CallState.REQUEUED,
    (CallState.FORWARDED, CallTrigger.REROUTE): CallState.WAITING,
    (CallState.REQUEUED, CallTrigger.FORWARD): CallState.RESENT,
    (CallState.REQUEUED, CallTrigger.REROUTE): CallState.REQUEUED,
    (CallState.RESENT, CallTrigger.REROUTE): CallState.REQUEUED,
    **{(state, CallTrigger.FINISH): CallState.FINISHED for state in _LIVE},
}


@dataclass(slots=True, kw_only=True, eq=False)
class Call:
    """One client request that a downstream serves (or that waits for one).

    ``downstream`` is the connection that serves (or will serve) it and
    ``wire_id`` the id of the forwarded request on it, once sent.
    ``deadline`` moves on with every progress notification, never past
    ``hard_deadline``; ``tried`` lists the instances it was given to, for
    failover; ``timer`` is its timeout timer. ``principal`` is the verified
    caller it was made under, if any: it narrows the tools listed and names
    the caller in the audit record.
    """

    client: ClientId
    request_id: Any
    params: GetServerTools | ExecuteTool | Forward
    agent: str
    server: str
    rule: str | None
    started: float
    timer: int
    timeout_ms: int
    progress_token: Any = None
    request_bytes: int = 0
    arg_keys: tuple[str, ...] = ()
    state: CallState = CallState.WAITING
    wire_id: int | None = None
    downstream: int | None = None
    deadline: float = 0.0
    hard_deadline: float = 0.0
    tried: tuple[int, ...] = ()
    principal: Principal | None = None
    #: The door it came through, when not MCP (``"rest"``), for the audit record.
    transport: str | None = None

    @property
    def tool(self) -> str | None:
        """The downstream tool, prompt or resource the call names; ``None`` for ``get_server_tools``."""
        if isinstance(self.params, Forward):
            return self.params.item
        return self.params.tool if isinstance(self.params, ExecuteTool) else None

    @property
    def operation(self) -> str:
        """The gateway tool, or the forwarded method, this call is, as audited."""
        if isinstance(self.params, Forward):
            return self.params.method
        return "execute_tool" if isinstance(self.params, ExecuteTool) else "get_server_tools"

    @property
    def requeued(self) -> bool:
        """Whether the server already refused it once for a lost session."""
        return self.state in (CallState.REQUEUED, CallState.RESENT)

    def move(self, trigger: CallTrigger) -> None:
        """Take one step of the lifecycle; a step the table does not list is a bug in the core."""
        new = _TRANSITIONS.get((self.state, trigger))
        if new is None:
            raise LocalProtocolError(f"call {self.request_id!r}: can't {trigger.value} when {self.state.value}")
        self.state = new
