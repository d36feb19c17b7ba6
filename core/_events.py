"""Events: the facts a shell reports to :meth:`Gateway.handle`.

Every event is a frozen, keyword-only dataclass in the past tense, and carries
``now``: seconds on a monotonic clock the shell reads, the only clock the core
knows. Client ids are minted by the shell (an int for the stdio client, a
session id string for HTTP); downstream ids and timer ids are minted by the
core and come back unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Union

from ._identity import Principal

if TYPE_CHECKING:
    from ._config import Config, Problem

__all__ = [
    "AuthenticationFailed",
    "AuthenticationSucceeded",
    "ClientId",
    "ClientClosed",
    "ClientFellBehind",
    "ClientMessageReceived",
    "ClientOpened",
    "ConfigRejected",
    "ConfigReloaded",
    "DownstreamExited",
    "DownstreamHttpError",
    "DownstreamUnauthorized",
    "DownstreamMessageReceived",
    "DownstreamNotReading",
    "DownstreamSessionLost",
    "Event",
    "GatewayStarted",
    "PinAccepted",
    "PinsLoaded",
    "SessionRecord",
    "ShutdownRequested",
    "TimerFired",
    "TokensTaken",
]

ClientId = Union[int, str]


@dataclass(frozen=True, slots=True, kw_only=True)
class GatewayStarted:
    """The shell is up and ready to perform actions (eager downstreams start now).

    ``seed`` is a random number from the shell, the only source of the
    ``random`` load-balancing strategy (see :mod:`lockgate.core._balance`);
    0 leaves the core's fixed default, so runs are reproducible.
    """

    now: float
    seed: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionRecord:
    """What a handshake-era session settled at ``initialize``: enough to continue it without another one.

    A Streamable HTTP shell keeps it sealed in the session's id (see
    :mod:`lockgate.shells.session_ids`), so that any gateway holding the key
    can continue a session another one opened. ``mode`` is settled
    (``on_demand`` or ``aggregate``, never ``auto``); ``agent`` is the
    session's default agent, checked afresh against the credential on every
    request as before.
    """

    protocol_version: str
    capabilities: Mapping[str, Any]
    agent: str | None
    mode: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientOpened:
    """A client connection or session exists and may send messages.

    ``principal`` is the caller the shell verified a credential of (see
    :mod:`lockgate.core._authorize`); its calls act only as the agents it
    is granted. ``None``: no credential (the local user over stdio, or
    authentication off), and calls name their agent as the rules allow.

    ``transport="rest"`` opens a session for one request of the REST API: it
    needs no ``initialize``, never expires, serves only ``server``'s tools,
    resources and prompts under their own names, and ends when the shell
    closes it after the answer.

    ``transport="stateless"`` opens a client for one Streamable HTTP request
    of the 2026-07-28 era (see :mod:`lockgate.core._stateless`): it needs no
    ``initialize``, never expires, and ends when the shell closes it after
    the answer; closed before that (the client dropped the response
    stream), its call is cancelled downstream. Over stdio and WebSocket the
    era is the client's first request's, whatever the transport.

    ``restored`` (``transport="http"``) continues a handshake-era session
    opened elsewhere (another gateway, or this one before a restart): the
    session starts ready, with the version, capabilities, agent and mode of
    its :class:`SessionRecord`, and no ``initialize``. In aggregate mode its
    first requests wait, as ``initialize`` would have, for the agent's
    servers to tell what they offer.
    """

    now: float
    client: ClientId
    transport: str = "stdio"
    principal: Principal | None = None
    #: With ``transport="rest"``: the one server this session serves (a REST
    #: request of ``/mcp/{server}/...``; see :mod:`lockgate.core._rest`).
    server: str | None = None
    #: A handshake-era session continued without ``initialize`` (see above).
    restored: SessionRecord | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthenticationSucceeded:
    """The shell verified a credential: it proves ``principal``.

    For the audit log; the principal reaches a session through
    :class:`ClientOpened`. ``address`` is the peer's address, if known.
    ``operation`` is what the credential was presented for (``authenticate``
    to open a session; ``login``, ``delegate``, ``create_key``, ``revoke_key``,
    ``create_user``, ``update_user`` for the ``/auth/`` endpoints) and
    ``target`` what that acted on, by its public id (``key:3f9a1c2b``).

    ``client``, when set, is an open session whose credential the shell
    checked again (stdio's ``GATEWAY_API_KEY``, whose process outlives any
    one request): its calls act as ``principal`` from now on, which also
    lifts an earlier :class:`AuthenticationFailed` for it.
    """

    now: float
    principal: Principal
    address: str | None = None
    operation: str = "authenticate"
    target: str | None = None
    client: ClientId | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthenticationFailed:
    """The shell refused a credential, or a request that needed one came without it.

    ``reason`` says why in a line (``"unknown API key"``, ``"token expired"``);
    ``credential`` names the credential by its public id (``key:3f9a1c2b``,
    a principal id) when it could be told, and is never the secret itself.
    ``address`` is the peer's address, if known; ``operation`` and
    ``target`` as for :class:`AuthenticationSucceeded` (a refusal for want
    of a role is one too: a good credential, not allowed that operation).

    ``client``, when set, is an open session whose credential no longer
    proves anything (revoked, expired, or the store out of reach): its
    calls are refused (``DENIED_BY_POLICY``, rule ``credential.refused``)
    until an :class:`AuthenticationSucceeded` for it says otherwise.
    """

    now: float
    reason: str
    credential: str | None = None
    address: str | None = None
    operation: str = "authenticate"
    target: str | None = None
    client: ClientId | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientMessageReceived:
    """One framed message arrived from a client, as the bytes it sent.

    The core parses it: malformed JSON is the core's decision to answer, not
    the shell's. ``too_large`` is set instead of ``data`` when the shell
    refused to buffer a message over the configured limit.
    """

    now: float
    client: ClientId
    data: bytes
    too_large: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientClosed:
    """The client went away (EOF, disconnect, session deleted or expired)."""

    now: float
    client: ClientId


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientFellBehind:
    """A client does not read the stream of ``request`` (``None``: its session's own stream) fast enough.

    The shell's queue for that stream is full; what was sent stays buffered
    for resumption. The core decides what becomes of the stream
    (:class:`~lockgate.core.DropStream`).
    """

    now: float
    client: ClientId
    request: object = None


@dataclass(frozen=True, slots=True, kw_only=True)
class DownstreamMessageReceived:
    """One framed message arrived from a downstream server.

    ``too_large`` is set instead of ``data`` when the shell refused to buffer
    a message over the limit the core set for downstreams
    (:func:`~lockgate.core.downstream_message_bytes`).

    ``related`` is the wire id of the gateway's request on whose response
    stream the message came (Streamable HTTP), so a server's request there
    (sampling, elicitation) is known to be about that call; ``None`` when the
    transport cannot tell (stdio, a GET stream).
    """

    now: float
    downstream: int
    data: bytes
    too_large: bool = False
    related: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class DownstreamNotReading:
    """A downstream does not take what the gateway writes: its input queue is full."""

    now: float
    downstream: int


@dataclass(frozen=True, slots=True, kw_only=True)
class DownstreamExited:
    """A downstream is gone: it exited, crashed, could not start, or its pipe broke.

    ``reason`` is a short human-readable explanation that may reach clients
    (no host paths, no secrets), e.g. ``"exited with code 1"`` or
    ``"command not found: foo"``.
    """

    now: float
    downstream: int
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class DownstreamSessionLost:
    """An HTTP downstream no longer knows the MCP session we were using.

    The server answered 404 to a message sent with our ``Mcp-Session-Id``
    (it expired the session or restarted), so per MCP 2025-11-25,
    basic/transports, "Session Management", the message was NOT processed.
    ``data`` is that message as sent; ``None`` when the loss was noticed on
    the notification stream (GET), where no message of ours was refused.
    The shell has already forgotten the session id, so the next
    ``initialize`` opens a new session.
    """

    now: float
    downstream: int
    data: bytes | None


@dataclass(frozen=True, slots=True, kw_only=True)
class DownstreamHttpError:
    """An HTTP downstream answered one of our messages with an error status.

    ``data`` is the message as sent (``None`` for the notification stream),
    ``status`` the HTTP status code and ``body`` the start of the response
    body (a JSON-RPC error, often). 404 on a message sent under a session is
    :class:`DownstreamSessionLost` instead. Whether this fails one call or
    the whole connection is the core's decision.
    """

    now: float
    downstream: int
    data: bytes | None
    status: int
    body: bytes = b""


@dataclass(frozen=True, slots=True, kw_only=True)
class DownstreamUnauthorized:
    """An HTTP downstream wants a token the shell cannot give it now.

    The shell runs OAuth for its HTTP downstreams (refreshing, logging in
    where a person is at hand); it reports this when that is over and the
    message still could not be sent with a token the server takes. ``data``
    is the message (``None`` for the notification stream); ``reason`` says
    why, in words a client may read and with no secret in them; ``login``
    says whether a person logging in (``lockgate auth login``) would help,
    rather than configuration (a refused client secret, say).
    """

    now: float
    downstream: int
    data: bytes | None
    reason: str
    login: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class TimerFired:
    """A timer the core set with :class:`SetTimer` reached its deadline."""

    now: float
    timer: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ConfigReloaded:
    """A new, already validated configuration replaces the running one.

    ``files`` names the configuration files whose content changed since the
    previous attempt (empty when a reload was asked for without a change,
    e.g. by SIGHUP); ``time`` is the wall-clock time the shell read them, as
    an ISO 8601 string, for the reload status. Both are for the record only.
    """

    now: float
    config: Config
    files: tuple[str, ...] = ()
    time: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ConfigRejected:
    """A changed configuration failed to read or validate; the running one stays.

    ``problems`` are the errors (each with file and JSON path), ``warnings``
    what else validation found; ``files`` and ``time`` as in
    :class:`ConfigReloaded`.
    """

    now: float
    problems: tuple[Problem, ...]
    warnings: tuple[Problem, ...] = ()
    files: tuple[str, ...] = ()
    time: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class PinsLoaded:
    """The shell read the pin store: at start-up (before ``GatewayStarted``) and whenever it changed.

    ``pins`` maps each server to its record as :class:`~lockgate.core.SavePins`
    wrote it (``{"tools": {name: {"digest", "definition"}}, ...}``); what it
    says of a tool replaces what the core knew. ``unreadable`` says why the
    store could not be read: every tool is then quarantined (fail closed)
    and nothing is saved. Until the first one, nothing is pinned (see
    :mod:`lockgate.core._pins`).
    """

    now: float
    pins: Mapping[str, Any]
    unreadable: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class PinAccepted:
    """An operator accepted a quarantined tool of ``server`` as it is now (``tool=None``: all of them)."""

    now: float
    server: str
    tool: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ShutdownRequested:
    """The gateway is stopping (EOF on stdio, SIGTERM, SIGINT)."""

    now: float


@dataclass(frozen=True, slots=True, kw_only=True)
class TokensTaken:
    """The shared rate limit store answered a :class:`~lockgate.core.TakeTokens` (or could not).

    ``refused`` is ``None`` when a token was taken from every limit, else
    the index of the first limit that refused and the seconds until it
    would not (nothing was taken from any). ``unavailable`` says why the
    store gave no answer (unreachable, timed out), in words for the log;
    ``refused`` is then ignored.
    """

    now: float
    ticket: int
    refused: tuple[int, float] | None = None
    unavailable: str | None = None


Event = Union[
    GatewayStarted,
    ClientOpened,
    ClientMessageReceived,
    ClientClosed,
    DownstreamMessageReceived,
    DownstreamExited,
    DownstreamNotReading,
    DownstreamSessionLost,
    DownstreamHttpError,
    DownstreamUnauthorized,
    ClientFellBehind,
    TimerFired,
    ConfigReloaded,
    ConfigRejected,
    ShutdownRequested,
    AuthenticationSucceeded,
    AuthenticationFailed,
    PinsLoaded,
    PinAccepted,
    TokensTaken,
]
