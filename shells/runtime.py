"""The runtime: the one loop that feeds the core and performs its actions.

Theory of operation. Transport shells (stdio, later HTTP and WebSocket) read
bytes, stamp ``now = trio.current_time()`` and :meth:`Runtime.feed` events
into one bounded channel; a full channel pushes back on the readers. Exactly
one task, the loop in :meth:`Runtime.run`, takes events off that channel,
calls ``core.handle(event)`` and performs the returned actions in order:

==================  ==========================================================
SendToClient        awaits the client's ``send`` callable (stdio writes
                    stdout there; queued transports put it on their own
                    bounded channel and fail at once when it is full)
CloseClient         calls the client's ``close`` callable; nothing is reported
StartDownstream     spawns the task of one instance's connection (a stdio
                    process, see :mod:`.downstream_stdio`, or a Streamable
                    HTTP session, see :mod:`.downstream_http`); the core
                    chose the instance and put how to start it in ``spec``
SendToDownstream    queues the encoded message on the downstream's bounded
                    writer queue; never waits. A full queue means the server
                    is not reading: it is stopped and reported as exited
StopDownstream      stops it in the background (bounded, shielded cleanup)
SetTimer            arms a timer in :class:`~.timers.Timers` (one task)
CancelTimer         forgets it
Audit               appends a line to the audit log
Log                 writes a log line on stderr
==================  ==========================================================

A failed delivery comes back to the core as an event (``ClientClosed``,
``DownstreamExited``), handled right after the current batch of actions.
The loop also keeps the core's view consistent: events about a client or a
downstream the core already let go of (after ``CloseClient``,
``StopDownstream`` or a reported exit) and timers cancelled after they fell
due are dropped before they reach the core. Downstream ids and timer ids are
the core's counters and are not reused.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Protocol, Union, assert_never

import trio

from lockgate.core.actions import (
    Action,
    Audit,
    CancelTimer,
    CloseClient,
    Log,
    SendToClient,
    SendToDownstream,
    SetTimer,
    StartDownstream,
    StopDownstream,
)
from lockgate.core.config import Settings
from lockgate.core.events import (
    ClientClosed,
    ClientId,
    ClientMessageReceived,
    ConfigReloaded,
    DownstreamExited,
    DownstreamHttpError,
    DownstreamMessageReceived,
    DownstreamSessionLost,
    Event,
    TimerFired,
)
from lockgate.core.jsonrpc import encode

from .audit import AuditLog
from .downstream_http import HttpDownstream
from .downstream_stdio import StdioDownstream
from .logs import NOTICE, get_logger
from .timers import Timers

__all__ = [
    "DELIVERY_ERRORS",
    "ClientSend",
    "Core",
    "Downstream",
    "Runtime",
    "RuntimeStatistics",
    "queued_sender",
]

DELIVERY_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)
"""What a client's ``send`` may raise to say the client is gone."""

ClientSend = Callable[[SendToClient], Awaitable[None]]

_log = get_logger("runtime")
_core_log = get_logger("core")
_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "notice": NOTICE,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


class Core(Protocol):
    """What the runtime needs of :class:`lockgate.core.gateway.Gateway`."""

    def handle(self, event: Event) -> list[Action]: ...


class Downstream(Protocol):
    """A running downstream connection, as the runtime drives it."""

    downstream: int
    server: str

    def send_nowait(self, data: bytes) -> None: ...

    def stop(self) -> None: ...

    async def run(self) -> None: ...


#: How much larger than a client's message a downstream's may be.
DOWNSTREAM_MESSAGE_FACTOR = 4


@dataclass(frozen=True, slots=True)
class RuntimeStatistics:
    queued_events: int
    clients: int
    downstreams: int
    live_timers: int
    audit_records: int


@dataclass(frozen=True, slots=True)
class _Client:
    send: ClientSend
    close: Callable[[], None]


@dataclass(frozen=True, slots=True)
class _TimerDue:
    timer: int
    generation: int
    now: float


class _Close:
    pass


_Item = Union[Event, _TimerDue, _Close]


class Runtime:
    """Drive ``core`` from one loop; see the module docstring.

    Usage::

        runtime = Runtime(core, settings=config.settings)
        async with trio.open_nursery() as nursery:
            await nursery.start(runtime.run)
            runtime.register_client(0, send)
            await runtime.feed(ClientOpened(now=trio.current_time(), client=0))
            ...
            await runtime.aclose()
    """

    def __init__(
        self,
        core: Core,
        *,
        settings: Settings,
        event_buffer: int = 1024,
        downstream_buffer: int = 1024,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self._core = core
        self._settings = settings
        self._downstream_buffer = downstream_buffer
        self._environ = environ
        self._send, self._receive = trio.open_memory_channel[_Item](event_buffer)
        self._pending: deque[Event] = deque()
        self._clients: dict[ClientId, _Client] = {}
        self._downstreams: dict[int, Downstream] = {}
        self._timers = Timers(self._timer_due)
        self._audit = AuditLog(settings.audit_log)
        self._nursery: trio.Nursery | None = None
        self._scope = trio.CancelScope()
        self._started = False
        self._done = trio.Event()

    # -- for shells ----------------------------------------------------------

    async def feed(self, event: Event) -> None:
        """Queue ``event`` for the core; waits while the queue is full.

        After the loop has ended the event is dropped.
        """
        try:
            await self._send.send(event)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    def register_client(self, client: ClientId, send: ClientSend, close: Callable[[], None] | None = None) -> None:
        """Route ``SendToClient`` for ``client`` to ``send`` and ``CloseClient`` to ``close``.

        Register before feeding ``ClientOpened``: events from unregistered
        clients are dropped. ``send`` raising one of :data:`DELIVERY_ERRORS`
        unregisters the client, calls ``close`` and reports ``ClientClosed``.
        A fed ``ClientClosed`` unregisters it too (without calling ``close``).
        """
        self._clients[client] = _Client(send, close if close is not None else _nothing)

    def statistics(self) -> RuntimeStatistics:
        return RuntimeStatistics(
            queued_events=self._receive.statistics().current_buffer_used,
            clients=len(self._clients),
            downstreams=len(self._downstreams),
            live_timers=self._timers.statistics().live,
            audit_records=self._audit.records,
        )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the loop until :meth:`aclose`; then stop every downstream and return.

        Downstream cleanup is shielded and bounded, also when this task is
        cancelled or the core raises (which propagates: it is a bug).
        """
        if self._started:
            raise RuntimeError("a Runtime runs once")
        self._started = True
        try:
            with self._scope:
                async with trio.open_nursery() as outer:
                    outer.start_soon(self._timers.run)
                    try:
                        async with trio.open_nursery() as downstreams:
                            self._nursery = downstreams
                            task_status.started()
                            try:
                                await self._loop()
                            finally:
                                self._receive.close()
                                self._stop_all()
                    finally:
                        outer.cancel_scope.cancel()
        finally:
            self._audit.close()
            self._done.set()

    async def aclose(self, *, grace: float = 10.0) -> None:
        """Handle the events queued so far, then end :meth:`run` and wait for it.

        Past ``grace`` seconds (a client that never reads, say) the loop is
        cancelled; downstreams are still stopped and reaped.
        """
        if not self._started:
            return
        with trio.move_on_after(grace):
            try:
                await self._send.send(_Close())
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            await self._done.wait()
            return
        _log.warning("shutdown is taking too long; cancelling")
        self._scope.cancel()
        await self._done.wait()

    # -- the loop ------------------------------------------------------------

    async def _loop(self) -> None:
        while True:
            item = await self._receive.receive()
            if isinstance(item, _Close):
                return
            event = self._admit(item)
            if event is not None:
                await self._dispatch(event)
            while self._pending:
                await self._dispatch(self._pending.popleft())

    def _admit(self, item: Event | _TimerDue) -> Event | None:
        """The event to hand the core, or ``None`` when the core has let go of its subject."""
        if isinstance(item, _TimerDue):
            if self._timers.claim(item.timer, item.generation):
                return TimerFired(now=item.now, timer=item.timer)
            return None
        if isinstance(item, (DownstreamMessageReceived, DownstreamExited, DownstreamSessionLost, DownstreamHttpError)):
            if item.downstream not in self._downstreams:
                return None
            if isinstance(item, DownstreamExited):
                del self._downstreams[item.downstream]
        elif isinstance(item, (ClientMessageReceived, ClientClosed)):
            if item.client not in self._clients:
                return None
            if isinstance(item, ClientClosed):
                del self._clients[item.client]
        elif isinstance(item, ConfigReloaded):
            # New downstreams use the new limits; the audit log keeps its file.
            self._settings = item.config.settings
        return item

    async def _dispatch(self, event: Event) -> None:
        for action in self._core.handle(event):
            await self._perform(action)

    async def _perform(self, action: Action) -> None:
        match action:
            case SendToClient():
                await self._send_to_client(action)
            case CloseClient(client=client):
                closed = self._clients.pop(client, None)
                if closed is not None:
                    closed.close()
            case StartDownstream():
                self._start_downstream(action)
            case SendToDownstream():
                self._send_to_downstream(action)
            case StopDownstream(downstream=downstream):
                stopped = self._downstreams.pop(downstream, None)
                if stopped is not None:
                    stopped.stop()
            case SetTimer(timer=timer, deadline=deadline):
                self._timers.set(timer, deadline)
            case CancelTimer(timer=timer):
                self._timers.cancel(timer)
            case Audit(record=record):
                self._audit.write(record)
            case Log(level=level, message=message, fields=fields):
                _core_log.log(_LEVELS.get(level, logging.INFO), message, extra={"fields": fields or {}})
            case _:
                assert_never(action)

    async def _send_to_client(self, action: SendToClient) -> None:
        client = self._clients.get(action.client)
        if client is None:
            _log.debug("message for a closed client dropped", extra={"fields": {"client": action.client}})
            return
        try:
            await client.send(action)
        except DELIVERY_ERRORS as exc:
            _log.info(f"client is gone: {type(exc).__name__}", extra={"fields": {"client": action.client}})
            if self._clients.get(action.client) is client:
                del self._clients[action.client]
                client.close()
                self._pending.append(ClientClosed(now=trio.current_time(), client=action.client))

    def _start_downstream(self, action: StartDownstream) -> None:
        assert self._nursery is not None
        previous = self._downstreams.pop(action.downstream, None)
        if previous is not None:
            _log.error("downstream id started twice", extra={"fields": {"downstream": action.downstream}})
            previous.stop()
        # `action.spec` describes this one instance (a command or a url); the
        # core has already chosen it, so the shell only picks the transport.
        downstream: Downstream
        if action.spec.transport == "stdio":
            downstream = StdioDownstream(
                downstream=action.downstream,
                server=action.server,
                spec=action.spec,
                # SDK servers send a tool result twice (text and structured), so
                # a result the size of the client limit must still fit.
                max_message_bytes=DOWNSTREAM_MESSAGE_FACTOR * self._settings.max_message_bytes,
                emit=self.feed,
                queue_size=self._downstream_buffer,
                environ=self._environ,
            )
        else:
            downstream = HttpDownstream(
                downstream=action.downstream,
                server=action.server,
                spec=action.spec,
                max_message_bytes=DOWNSTREAM_MESSAGE_FACTOR * self._settings.max_message_bytes,
                emit=self.feed,
                queue_size=self._downstream_buffer,
            )
        self._downstreams[action.downstream] = downstream
        self._nursery.start_soon(downstream.run)

    def _send_to_downstream(self, action: SendToDownstream) -> None:
        downstream = self._downstreams.get(action.downstream)
        if downstream is None:
            _log.debug("message for a stopped downstream dropped", extra={"fields": {"downstream": action.downstream}})
            return
        try:
            downstream.send_nowait(encode(action.message) + b"\n")
        except trio.WouldBlock:
            _log.warning("server is not reading its input; stopping it", extra={"fields": {"server": downstream.server}})
            del self._downstreams[action.downstream]
            downstream.stop()
            self._pending.append(
                DownstreamExited(now=trio.current_time(), downstream=action.downstream, reason="stopped reading its input")
            )
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # It has ended; its DownstreamExited is already on its way.

    def _stop_all(self) -> None:
        for downstream in self._downstreams.values():
            downstream.stop()
        self._downstreams.clear()

    async def _timer_due(self, timer: int, generation: int, now: float) -> None:
        try:
            await self._send.send(_TimerDue(timer, generation, now))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass


def queued_sender(channel: trio.MemorySendChannel[SendToClient]) -> ClientSend:
    """A client ``send`` for transports with their own writer task reading ``channel``.

    It never waits: a full channel means the client is not reading, which is
    reported like a broken connection, so one slow client cannot stall the loop.
    """

    async def send(action: SendToClient) -> None:
        try:
            channel.send_nowait(action)
        except trio.WouldBlock:
            raise trio.BrokenResourceError("the client is not reading") from None

    return send


def _nothing() -> None:
    pass
