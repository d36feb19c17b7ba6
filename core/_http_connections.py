"""Which connections the HTTP endpoint keeps, and how long a request may take to arrive.

Theory of operation
-------------------
A client can hold a connection without sending a request (idle keep-alive),
by sending one slowly (slowloris: a byte every few seconds), or by asking for
something that takes long (a tool call, an SSE stream). The shell tracks each
open connection in one of three states:

- ``idle``: waiting for the next request on a keep-alive connection;
- ``reading``: a request under way: a new connection from its accept, a head
  from its first byte, then the body;
- ``busy``: the request is read and being answered.

Reading is bounded in time whatever the pace: the head within
``head_timeout`` of its first byte, the body within :func:`body_timeout` of
the end of the head, and no read may stall ``idle_timeout``. Room is bounded
in number: when a connection arrives at a limit, :func:`admit` names whom to
close: first an idle connection, then the request that has been reading
longest, so clients that trickle cannot lock out one that sends its request
at once. Busy connections are never closed to make room; with only busy ones
left, the newcomer gets 503. The limit per address keeps one client from
taking every slot: past it, the newcomer can only displace its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ._config import DEFAULT_HTTP_HEAD_TIMEOUT, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_CONNECTIONS_PER_ADDRESS
from ._errors import LocalProtocolError
from ._http_requests import HttpPolicy

__all__ = ["DEFAULT_IDLE_TIMEOUT", "DEFAULT_BODY_RATE", "ConnectionLimits", "Occupancy", "Evict", "admit", "body_timeout"]

#: What ``GATEWAY_*`` does not set: seconds a connection may wait between
#: two requests, or between two reads of one.
DEFAULT_IDLE_TIMEOUT = 30.0


#: The slowest a body may arrive, in bytes per second: a client slower than
#: this is treated as a slowloris (64 KiB/s is about 0.5 Mbit/s).
DEFAULT_BODY_RATE = 64 * 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionLimits:
    """How many connections the endpoint holds, and how long a request may take to arrive.

    ``max_connections`` open at once; ``max_per_address`` from one peer
    address (0: no limit; behind a reverse proxy every connection comes from
    the proxy). ``idle_timeout``: seconds a keep-alive connection may wait
    for its next request, and a request for its next bytes.
    ``head_timeout``: seconds a request head may take from its first byte.
    ``body_rate``: the slowest pace a body may arrive at (see
    :func:`body_timeout`).

    Raises:
        LocalProtocolError: a limit is not positive (``max_per_address`` may be 0).
    """

    max_connections: int = DEFAULT_MAX_CONNECTIONS
    max_per_address: int = DEFAULT_MAX_CONNECTIONS_PER_ADDRESS
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    head_timeout: float = DEFAULT_HTTP_HEAD_TIMEOUT
    body_rate: int = DEFAULT_BODY_RATE

    def __post_init__(self) -> None:
        if self.max_connections < 1 or self.max_per_address < 0 or self.body_rate < 1:
            raise LocalProtocolError(f"connection limits out of range: {self!r}")
        if not (self.idle_timeout > 0 and self.head_timeout > 0):
            raise LocalProtocolError(f"connection timeouts must be positive: {self!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Occupancy:
    """The connections already open when a new one arrives (not counting it), as the shell counts them.

    ``open``, ``idle`` and ``reading`` over every peer (the rest are busy);
    ``address_*`` the same for the newcomer's peer address alone.
    """

    open: int
    idle: int
    reading: int
    address_open: int
    address_idle: int
    address_reading: int

    def __post_init__(self) -> None:
        if self.idle + self.reading > self.open or self.address_idle + self.address_reading > self.address_open:
            raise LocalProtocolError(f"more idle and reading connections than open ones: {self!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Evict:
    """Close one connection to make room, then serve the newcomer.

    The one to close is the oldest in ``state``: the idle connection that has
    waited longest, or the request that began reading longest ago (a new
    connection begins at its accept). With ``own_address``, only the
    newcomer's own address is searched.
    """

    state: Literal["idle", "reading"]
    own_address: bool


def admit(occupancy: Occupancy, limits: ConnectionLimits, *, closing: bool) -> Literal["serve", "refuse"] | Evict:
    """What to do with a new connection; see "connections" above.

    An address at its own limit can only make room among its own
    connections (that frees a place under the global limit too); otherwise,
    at the global limit, any address's connection is closed. Idle ones go
    before reading ones; with neither, the newcomer gets 503 (:func:`busy`),
    as it does while the endpoint shuts down.
    """
    if closing:
        return "refuse"
    if limits.max_per_address and occupancy.address_open >= limits.max_per_address:
        return _make_room(occupancy.address_idle, occupancy.address_reading, own_address=True)
    if occupancy.open >= limits.max_connections:
        return _make_room(occupancy.idle, occupancy.reading, own_address=False)
    return "serve"


def _make_room(idle: int, reading: int, *, own_address: bool) -> Literal["refuse"] | Evict:
    if idle:
        return Evict(state="idle", own_address=own_address)
    if reading:
        return Evict(state="reading", own_address=own_address)
    return "refuse"


def body_timeout(content_length: str | None, policy: HttpPolicy, limits: ConnectionLimits) -> float:
    """Seconds a request body may take to arrive, counted from the end of its head.

    ``limits.head_timeout`` plus the time to read the declared
    ``Content-Length`` (at most the largest body accepted) at
    ``limits.body_rate``. A chunked body declares no size, so it gets the
    time of the largest body. With the defaults: 10 s for an empty body,
    26 s for 1 MiB, 266 s for a chunked body (16 MiB).
    """
    declared = content_length.strip() if content_length is not None else ""
    size = int(declared) if declared.isascii() and declared.isdigit() else policy.max_body_bytes
    return limits.head_timeout + min(size, policy.max_body_bytes) / limits.body_rate
