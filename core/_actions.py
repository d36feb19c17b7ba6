"""Actions: what :meth:`Gateway.handle` asks the shell to do, in order.

Every action is a frozen, keyword-only dataclass in the imperative. Messages
are JSON-compatible dicts; the shell serialises them with
:func:`lockgate.core._jsonrpc.encode` and frames them for its transport.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Union

from ._config import ServerSpec
from ._events import ClientId
from ._jsonrpc import encode

__all__ = [
    "Action",
    "Audit",
    "CancelTimer",
    "CloseClient",
    "DropStream",
    "Log",
    "SavePins",
    "SendToClient",
    "SendToDownstream",
    "SetTimer",
    "StartDownstream",
    "StopDownstream",
    "TakeTokens",
]

JSONObject = dict[str, Any]
#: ``notice`` sits between info and warning: shown by default, like the
#: start-up summary (a configuration reload, say).
LogLevel = Literal["debug", "info", "notice", "warning", "error"]


@dataclass(frozen=True, slots=True, kw_only=True)
class SendToClient:
    """Deliver one JSON-RPC message to a client.

    ``request`` is the id of the client request this message belongs to (its
    response, or a progress notification about it), or ``None`` for messages
    that belong to no request. Transports with per-request streams (Streamable
    HTTP) route on it; stdio ignores it.

    ``wire``: ``message`` already encoded (one line, no newline), which the
    shell sends instead of encoding it: a server's answer passed on with only
    its envelope rewritten (:func:`~lockgate.core._jsonrpc.answer_bytes`), so
    its result is not encoded again. Not part of what the action means: it
    is left out of comparisons and transcripts, which hold ``message``.
    """

    client: ClientId
    message: JSONObject
    request: Any = None
    wire: bytes | None = field(default=None, compare=False, repr=False)

    def encoded(self) -> bytes:
        """The message's bytes to send: ``wire``, else ``message`` encoded."""
        return self.wire if self.wire is not None else encode(self.message)


@dataclass(frozen=True, slots=True, kw_only=True)
class DropStream:
    """Stop sending on a client's stream of ``request`` (``None``: its session's own stream).

    The client fell behind on it; it may resume from what the shell kept
    (Streamable HTTP, ``Last-Event-ID``).
    """

    client: ClientId
    request: Any = None


@dataclass(frozen=True, slots=True, kw_only=True)
class CloseClient:
    """End a client's session (the shell closes its connection or stream)."""

    client: ClientId


@dataclass(frozen=True, slots=True, kw_only=True)
class StartDownstream:
    """Start a connection to a downstream server under a fresh id.

    The shell spawns the process (or opens the HTTP client) and, once that
    worked, delivers the :class:`SendToDownstream` messages queued for this id
    in order. Failure to start is reported as ``DownstreamExited``.

    ``spec`` says how to start this one instance (a command or a url); the
    shell needs nothing else. ``instance`` is its index among the server's
    instances, for logs. ``principal`` is whose OAuth token the connection
    carries when the server's tokens are per user (``oauth.per_user``): a
    principal id; ``None`` for the gateway's own token.
    """

    downstream: int
    server: str
    spec: ServerSpec
    instance: int = 0
    principal: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class SendToDownstream:
    """Deliver one JSON-RPC message to a downstream."""

    downstream: int
    message: JSONObject

    @property
    def expects_answer(self) -> bool:
        """Whether the message is a request, which the server answers (else a notification or a response)."""
        return "method" in self.message and "id" in self.message


@dataclass(frozen=True, slots=True, kw_only=True)
class StopDownstream:
    """Stop a downstream: close its input, then terminate, then kill.

    With ``kill`` the downstream is hung: kill it (its whole process group)
    at once, since it will react to neither a closed input nor a polite
    signal. The shell reports nothing back; the core has already forgotten
    the id.
    """

    downstream: int
    kill: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class SetTimer:
    """Report ``TimerFired(timer=...)`` once the clock reaches ``deadline``."""

    timer: int
    deadline: float


@dataclass(frozen=True, slots=True, kw_only=True)
class CancelTimer:
    """Forget a timer; it must not fire afterwards."""

    timer: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Audit:
    """Append one record to the audit log; the shell adds the wall-clock time."""

    record: JSONObject


@dataclass(frozen=True, slots=True, kw_only=True)
class Log:
    """Write one log line (to stderr, never to a client's stdout)."""

    level: LogLevel
    message: str
    fields: JSONObject | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class SavePins:
    """Write ``server``'s pin record to the pin store, replacing the one there.

    ``record`` is JSON: ``{"tools": {name: {"digest", "definition"}}}``, and
    ``"quarantined"`` (the same, with ``changed`` and ``reason``) when some
    tool is held back. The shell hands the store back with
    :class:`~lockgate.core.PinsLoaded`.
    """

    server: str
    record: JSONObject


@dataclass(frozen=True, slots=True, kw_only=True)
class TakeTokens:
    """Take one token from each of ``limits`` in the shared rate limit store: from all of them, or from none.

    Emitted only with shared limits on (``GATEWAY_REDIS_URL``): a request
    waits for the answer, which the shell reports as
    :class:`~lockgate.core.TokensTaken` with the same ``ticket``, always,
    exactly once (``unavailable`` when the store did not answer in time).
    Each limit is ``(key, count, period)``: a bucket of ``count`` tokens
    that refills in ``period`` seconds, keyed by a stable string
    (``agent:<name>``, ``credential:<id>``) the shell may prefix.
    """

    ticket: int
    limits: tuple[tuple[str, int, float], ...]


Action = Union[
    SendToClient,
    DropStream,
    CloseClient,
    StartDownstream,
    SendToDownstream,
    StopDownstream,
    SetTimer,
    CancelTimer,
    Audit,
    Log,
    SavePins,
    TakeTokens,
]
