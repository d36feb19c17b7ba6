"""The HTTP front's open connections: what each is doing, since when, and the bytes it moves.

:func:`lockgate.core.http.admit` decides what a new connection gets and whom
to close to make room for it; this module keeps the counts it decides from
and carries the decision out. It also reads a request's bytes, so that the
deadlines (head, body, idle; their lengths come from the core) and eviction
apply to every read, and holds the socket-level helpers of
:mod:`.http_exchange` (write, half-close and linger, notice a hang-up).

Each :class:`Link` is ``idle``, ``reading`` or ``busy`` (see "connections"
in :mod:`lockgate.core.http`). Idle and reading links sit in insertion-ordered
dicts, overall and per peer address, entered when they enter the state: the
first of each dict is the oldest, which is the one the core's
:class:`~lockgate.core.http.Evict` names. Every operation is O(1).
"""

from __future__ import annotations

import math
import os
from typing import Literal

import trio

from lockgate.core.http import ConnectionLimits, Evict, Occupancy, admit

from .logs import get_logger

__all__ = ["HUNG_UP", "Closed", "ConnectionTable", "Link", "hung_up", "linger", "receive_some", "watch_hangup", "write"]

_log = get_logger("http")

#: Bytes read from a socket at a time.
READ_CHUNK = 65536

State = Literal["idle", "reading", "busy"]


class Closed(Exception):
    """The connection is done: peer gone, timed out, evicted, or it must close after a response."""


#: What ends a connection quietly: the peer went away, or the shell closed it on purpose.
HUNG_UP = (Closed, trio.BrokenResourceError, trio.ClosedResourceError, OSError)


def hung_up(exc: BaseException) -> bool:
    """Whether ``exc`` (or every exception in a group, from a nursery) only says the connection ended."""
    if isinstance(exc, BaseExceptionGroup):
        return exc.split(HUNG_UP)[1] is None
    return isinstance(exc, HUNG_UP)


class Link:
    """One accepted TCP connection: its stream, its peer address and what it is doing.

    ``deadline`` is when the current part of the request must have arrived
    (``inf`` between requests and while busy); ``scope`` is the read in
    progress, which eviction cancels. ``responded`` says bytes of an answer
    to the current request went out, so a failure can no longer answer 500.
    """

    __slots__ = ("address", "deadline", "evicted", "responded", "scope", "started", "state", "stream")

    def __init__(self, stream: trio.SocketStream, address: str) -> None:
        self.stream = stream
        self.address = address
        self.state: State = "reading"
        #: A byte of the current request has arrived (its head deadline runs).
        self.started = False
        self.deadline = math.inf
        self.scope: trio.CancelScope | None = None
        self.evicted = False
        self.responded = False

    @classmethod
    def accepted(cls, stream: trio.SocketStream) -> Link:
        """A link for a connection just accepted, keyed by the peer's IP address (without the port).

        The address is ``""`` when the socket no longer knows its peer (it is gone already).
        """
        try:
            peer = stream.socket.getpeername()
        except OSError:
            return cls(stream, "")
        return cls(stream, str(peer[0]) if isinstance(peer, tuple) else str(peer))


class _Group:
    """The links of one peer address, or of all: how many, and the idle and reading ones, oldest first."""

    __slots__ = ("idle", "open", "reading")

    def __init__(self) -> None:
        self.open = 0
        self.idle: dict[Link, None] = {}
        self.reading: dict[Link, None] = {}

    def state(self, state: Literal["idle", "reading"]) -> dict[Link, None]:
        return self.idle if state == "idle" else self.reading


class ConnectionTable:
    """The admitted connections, by state and by peer address; see the module docstring."""

    def __init__(self, limits: ConnectionLimits) -> None:
        self.limits = limits
        #: Set by :meth:`shut`: nobody new is admitted, idle links close.
        self.closing = False
        self._all = _Group()
        self._by_address: dict[str, _Group] = {}
        self._members: set[Link] = set()
        self.evicted = 0
        self.refused = 0
        self.timed_out = 0

    # -- admission -------------------------------------------------------------

    def admit(self, link: Link) -> bool:
        """Admit a new connection (``reading`` from now), closing another to make room if the core says so.

        ``False``: there is no room; the caller answers 503 and closes.
        """
        own = self._by_address.get(link.address) or _Group()
        occupancy = Occupancy(
            open=self._all.open,
            idle=len(self._all.idle),
            reading=len(self._all.reading),
            address_open=own.open,
            address_idle=len(own.idle),
            address_reading=len(own.reading),
        )
        match admit(occupancy, self.limits, closing=self.closing):
            case "refuse":
                self.refused += 1
                return False
            case Evict(state=state, own_address=own_address):
                victim = next(iter((own if own_address else self._all).state(state)))
                _log.debug(f"closing the oldest {state} connection to make room", extra={"fields": {"peer": victim.address}})
                self.evict(victim)
            case "serve":
                pass
        group = self._by_address.setdefault(link.address, _Group())
        for g in (self._all, group):
            g.open += 1
            g.reading[link] = None
        self._members.add(link)
        link.state = "reading"
        return True

    def evict(self, link: Link) -> None:
        """Close ``link`` to make room: drop it now and cancel its read (it is idle or reading)."""
        self.evicted += 1
        self._drop(link)

    def _drop(self, link: Link) -> None:
        self.remove(link)
        link.evicted = True
        if link.scope is not None:
            link.scope.cancel()

    def remove(self, link: Link) -> None:
        """Forget ``link`` (closed); nothing happens if it was never admitted or is gone already."""
        if link not in self._members:
            return
        self._members.discard(link)
        group = self._by_address[link.address]
        for g in (self._all, group):
            g.open -= 1
            g.idle.pop(link, None)
            g.reading.pop(link, None)
        if not group.open:
            del self._by_address[link.address]

    def shut(self) -> None:
        """Shutting down: admit nobody, close the idle links now and the others once idle."""
        self.closing = True
        for link in list(self._all.idle):
            self._drop(link)

    # -- states ----------------------------------------------------------------

    def start(self, link: Link, now: float) -> None:
        """A request's first byte arrived: its head must be whole ``head_timeout`` from ``now``.

        A new connection keeps its place among the reading ones (it has been
        reading since its accept); an idle one joins them as the newest.
        """
        link.started = True
        link.deadline = now + self.limits.head_timeout
        if link.state != "reading":
            self._move(link, "reading")

    def head_read(self, link: Link, now: float, body_seconds: float) -> None:
        """The head is in: the body must follow within ``body_seconds`` of ``now``."""
        link.deadline = now + body_seconds

    def busy(self, link: Link) -> None:
        """The request is read; answering it may take as long as it takes, and nobody may close it to make room."""
        link.deadline = math.inf
        self._move(link, "busy")

    def idle(self, link: Link) -> None:
        """The answer is out; the connection waits for its next request (``idle_timeout``)."""
        link.started = False
        link.responded = False
        link.deadline = math.inf
        self._move(link, "idle")

    def _move(self, link: Link, state: State) -> None:
        if link in self._members:
            group = self._by_address[link.address]
            for g in (self._all, group):
                if link.state != "busy":
                    g.state(link.state).pop(link, None)
                if state != "busy":
                    g.state(state)[link] = None
        link.state = state

    # -- reading ---------------------------------------------------------------

    async def receive(self, link: Link) -> bytes:
        """The next bytes of ``link``'s request (``b""``: the peer closed its side).

        Raises:
            Closed: the link was evicted, the read stalled ``idle_timeout``,
                the current part of the request passed its deadline, or the
                endpoint shuts down while the link is idle.
        """
        if link.evicted or (self.closing and link.state == "idle"):
            raise Closed
        now = trio.current_time()
        with trio.CancelScope(deadline=min(link.deadline, now + self.limits.idle_timeout)) as scope:
            link.scope = scope
            try:
                data = await receive_some(link.stream)
            finally:
                link.scope = None
        # Checked even when the read returned: the eviction may have come
        # after the bytes, and the evictor has already given this place away.
        if scope.cancel_called:
            if not link.evicted:
                self.timed_out += 1
                _log.debug(f"closing a {link.state} connection: too slow", extra={"fields": {"peer": link.address}})
            raise Closed
        if data and not link.started:
            self.start(link, trio.current_time())
        return data

    def statistics(self) -> dict[str, int]:
        """Admitted connections, and what was done to keep room.

        ``admitted``, of which ``idle`` and ``reading`` (the rest are busy),
        from ``addresses`` peer addresses; ``evicted``, ``refused`` and
        ``timed_out``: connections closed to make room, turned away with 503,
        and closed for being too slow, so far.
        """
        return {
            "admitted": self._all.open,
            "idle": len(self._all.idle),
            "reading": len(self._all.reading),
            "addresses": len(self._by_address),
            "evicted": self.evicted,
            "refused": self.refused,
            "timed_out": self.timed_out,
        }


# -- bytes ---------------------------------------------------------------------------
#
# trio's SocketStream tries a read before it waits for one, and yields to the
# scheduler after every read and write that succeeds. Under load that is one
# failed system call and two extra passes through the scheduler per request,
# about as much CPU as parsing it. receive_some and write move the same bytes
# over the same non-blocking socket, waiting only when the kernel says so.


async def receive_some(stream: trio.SocketStream) -> bytes:
    """The next bytes the peer sent, waiting for them; ``b""`` once it closed its side."""
    sock = stream.socket
    while True:
        await trio.lowlevel.wait_readable(sock)
        try:
            return os.read(sock.fileno(), READ_CHUNK)
        except BlockingIOError:
            continue  # woken with nothing to read after all


async def write(link: Link, data: bytes) -> None:
    """Send all of ``data``: at once when the socket takes it (the usual case), else through trio."""
    link.responded = True
    try:
        sent = os.write(link.stream.socket.fileno(), data)
    except BlockingIOError:
        sent = 0
    if sent < len(data):
        await link.stream.send_all(memoryview(data)[sent:])


async def watch_hangup(stream: trio.SocketStream, scope: trio.CancelScope, hung_up: trio.Event) -> None:
    """Cancel ``scope`` (a response being streamed) once the peer sends anything or goes away."""
    try:
        await stream.receive_some(READ_CHUNK)
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        pass
    # EOF, an error or unexpected bytes while we stream: either way this
    # response is over and the connection closes after it.
    hung_up.set()
    scope.cancel()


async def linger(stream: trio.SocketStream) -> None:
    """Half-close, then read what the client still sends for a moment, so it gets our answer.

    Raises:
        Closed: always; the connection is done.
    """
    with trio.move_on_after(1):
        try:
            await stream.send_eof()
            while await stream.receive_some(READ_CHUNK):
                pass
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
    raise Closed
