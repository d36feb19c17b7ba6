"""The runtime: the one loop that feeds the core and performs its actions.

Theory of operation. Transport shells (stdio, Streamable HTTP) read
bytes, stamp ``now = trio.current_time()`` and :meth:`Runtime.feed` events
into one bounded channel; a full channel pushes back on the readers. The
loop in :meth:`Runtime.run` takes events off that channel, calls
``core.handle(event)`` and performs the returned actions in order (an idle
loop lets the feeding task do it, see "Inline handling" below):

==================  ==========================================================
SendToClient        awaits the client's ``send`` callable (stdio writes
                    stdout there; queued transports put it on their own
                    bounded channel and fail at once when it is full, see
                    :class:`~.clients.QueuedSend`)
CloseClient         calls the client's ``close`` callable; nothing is reported
DropStream          calls the client's ``drop_stream`` callable, if it has one
StartDownstream     spawns the task of one instance's connection (a stdio
                    process or a Streamable HTTP session, see
                    :mod:`.downstreams`); the core chose the instance and
                    put how to start it in ``spec``
SendToDownstream    queues the encoded message on the downstream's bounded
                    writer queue; never waits. A full queue means the server
                    is not reading: reported as ``DownstreamNotReading``
StopDownstream      stops it in the background (bounded, shielded cleanup)
SetTimer            arms a timer in :class:`~.timers.Timers` (one task)
CancelTimer         forgets it
Audit               appends a line to the audit log
Log                 writes a log line on stderr
SavePins            queues the record for the pin store's writer, which
                    writes it in a worker thread (see :mod:`.pins`)
TakeTokens          queues the shared rate limit take for Redis (see
                    :mod:`.shared_limits`, whose workers batch them) and
                    ``TokensTaken`` is fed back, always: ``unavailable``
                    when Redis did not answer in time or none is configured
==================  ==========================================================

With a pin store (``pins``), the store is read before the loop starts and
its ``PinsLoaded`` is the first event the core gets; the store is read again
when it changes, and at every configuration reload.

Inline handling. A task feeding an event while the loop waits for work and
nothing is queued hands it to the core itself, in the same code path, and
performs the actions that need no waiting (every action but a
``SendToClient`` the client cannot take at once). It never awaits in between,
so trio's cooperative scheduling keeps the guarantees: one ``handle`` at a
time, events in the order they were fed. When an action would have to wait,
the rest of the batch goes to the loop (a ``_Deferred`` item), which performs
it before anything fed later. This spares two task switches per call.

A failed delivery is a fact for the core to decide on (``ClientClosed``,
``ClientFellBehind``, ``DownstreamNotReading``, ``DownstreamExited``), handled
right after the current batch of actions (:mod:`.clients`, :mod:`.downstreams`).

Last line of defence. The core never raises on what a peer sends, and every
message it emits can be encoded; should either ever fail (a bug), the one
message is contained, logged with its traceback, and the gateway keeps
serving everyone else: a client request whose handling raised is answered
with -32603, an answer that cannot be encoded is replaced by a -32603 for the
same request, and a downstream whose event raised, or whose message cannot
be encoded, is stopped and reported as exited.
The loop also keeps the core's view consistent: events about a client or a
downstream the core already let go of (after ``CloseClient``,
``StopDownstream`` or a reported exit) and timers cancelled after they fell
due are dropped before they reach the core. Downstream ids and timer ids are
the core's counters and are not reused.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, Union, assert_never

import trio

from lockgate.core import Action, ClientId, downstream_message_bytes, Event, internal_error, SessionRecord, Settings

# The actions the loop performs, and the events it looks at before the core does.
from lockgate.core import Audit, CancelTimer, CloseClient, DropStream, Log, SavePins, SendToClient, SendToDownstream, SetTimer, StartDownstream, StopDownstream, TakeTokens, TokensTaken
from lockgate.core import ClientClosed, ClientFellBehind, ClientMessageReceived, ConfigReloaded, TimerFired
from lockgate.core import DownstreamExited, DownstreamHttpError, DownstreamMessageReceived, DownstreamNotReading, DownstreamSessionLost, DownstreamUnauthorized

from .audit import AuditLog
from .clients import Client, Clients, ClientSend, ClientSendNowait, QueuedSend
from .downstreams import Downstreams
from .logs import NOTICE, get_logger
from .oauth import OAuthManager
from .pins import PinKeeper
from .shared_limits import SharedLimits, from_environment
from .timers import Timers

__all__ = ["Core", "GatewayCore", "Runtime", "RuntimeStatistics"]

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
    """What the runtime needs of :class:`lockgate.core.Gateway`."""

    def handle(self, event: Event) -> list[Action]: ...


class GatewayCore(Core, Protocol):
    """What the HTTP front also reads of the gateway (``/health``, ``/ready``, ``/metrics``): pure accessors."""

    def uptime(self, now: float) -> float: ...

    def readiness(self) -> dict[str, Any]: ...

    def metrics_json(self, now: float) -> dict[str, Any]: ...

    def metrics_prometheus(self, now: float) -> str: ...

    def relays(self) -> bool:
        """Whether servers' requests are relayed to clients (aggregate mode): calls are then answered as SSE streams."""
        ...

    def session_record(self, client: ClientId) -> SessionRecord | None:
        """What continues a handshake-era session on another gateway (sealed in its HTTP session id)."""
        ...

    # The REST API's views (lockgate.shells.rest).

    def server_health(self, name: str) -> dict[str, Any] | None: ...

    def gateway_health(self, now: float) -> dict[str, Any]: ...

    def gateway_stats(self, now: float) -> dict[str, Any]: ...

    def registry_view(self) -> dict[str, Any]: ...

    def pins(self) -> dict[str, Any]: ...


@dataclass(frozen=True, slots=True)
class RuntimeStatistics:
    queued_events: int
    clients: int
    downstreams: int
    live_timers: int
    audit_records: int


@dataclass(frozen=True, slots=True)
class _TimerDue:
    timer: int
    generation: int
    now: float


class _Close:
    pass


@dataclass(frozen=True, slots=True)
class _Deferred:
    """Actions an inline handling left to the loop, in order (see the module docstring)."""

    actions: deque[Action]


_Item = Union[Event, _TimerDue, _Close, _Deferred]

#: Events about one downstream, dropped once the runtime has let go of it.
_DOWNSTREAM_EVENTS = (
    DownstreamMessageReceived, DownstreamExited, DownstreamNotReading, DownstreamSessionLost, DownstreamHttpError, DownstreamUnauthorized
)


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
        oauth: OAuthManager | None = None,
        pins: PinKeeper | None = None,
    ) -> None:
        self._core = core
        self._pins = pins
        self._settings = settings
        self._send, self._receive = trio.open_memory_channel[_Item](event_buffer)
        #: Events the shell reports about its own failures, handled after the current batch.
        self._pending: deque[Event] = deque()
        self._clients = Clients(report=self._pending.append)
        self._downstreams = Downstreams(
            emit=self.feed,
            report=self._pending.append,
            queue_size=downstream_buffer,
            environ=environ,
            auth_for=None if oauth is None else oauth.auth_for,
        )
        self._timers = Timers(self._timer_due)
        #: Redis for rate limits shared by replicas (``GATEWAY_REDIS_URL``), else ``None``.
        self.shared_limits: SharedLimits | None = (
            from_environment(os.environ if environ is None else environ, settings.redis_failure, settings.redis_timeout)
            if settings.shared_limits
            else None
        )
        self._audit = AuditLog(settings.audit_log)
        self._nursery: trio.Nursery | None = None
        self._scope = trio.CancelScope()
        self._started = False
        self._done = trio.Event()

    # -- for shells ----------------------------------------------------------

    async def feed(self, event: Event) -> None:
        """Queue ``event`` for the core; waits while the queue is full.

        When the loop is idle and nothing is queued, the event is handled
        right here instead (see the module docstring). After the loop has
        ended the event is dropped.
        """
        statistics = self._receive.statistics()
        # The loop parks in `receive` only with an empty queue and nothing in
        # hand; a value sent to it is handed over directly and it stops
        # waiting, so this says: nobody is handling anything and nothing waits.
        if statistics.tasks_waiting_receive and not statistics.current_buffer_used:
            self._handle_inline(event)
            return
        try:
            await self._send.send(event)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    def register_client(
        self,
        client: ClientId,
        send: ClientSend,
        close: Callable[[], None] | None = None,
        send_nowait: ClientSendNowait | None = None,
        drop_stream: Callable[[Any], None] | None = None,
    ) -> None:
        """Route ``SendToClient`` for ``client`` to ``send`` and ``CloseClient`` to ``close``.

        ``send_nowait``, when given (or when ``send`` is a
        :class:`~.clients.QueuedSend`, which has one), lets inline handling
        deliver without waiting; it raises like ``send``. ``drop_stream``
        takes ``DropStream`` (a transport with a stream per request:
        Streamable HTTP); without it ``DropStream`` is ignored.

        Register before feeding ``ClientOpened``: events from unregistered
        clients are dropped. ``send`` raising one of
        :data:`~.clients.DELIVERY_ERRORS` unregisters the client, calls
        ``close`` and reports ``ClientClosed``. A fed ``ClientClosed``
        unregisters it too (without calling ``close``).
        """
        if send_nowait is None and isinstance(send, QueuedSend):
            send_nowait = send.nowait
        self._clients.add(client, Client(send, close if close is not None else _nothing, send_nowait, drop_stream))

    def recent_audit(self, limit: int) -> list[dict[str, Any]]:
        """The latest ``limit`` audit records, newest first (they carry argument keys, never values)."""
        recent = self._audit.recent
        return [recent[-i] for i in range(1, min(limit, len(recent)) + 1)]

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
                    if self.shared_limits is not None:
                        await outer.start(self.shared_limits.run, self.feed)
                    if self._pins is not None:
                        # The store, before anything the shell feeds (GatewayStarted starts servers).
                        self._send.send_nowait(await self._pins.load_event())
                        await outer.start(self._pins.run, self.feed)
                    try:
                        async with trio.open_nursery() as downstreams:
                            self._nursery = downstreams
                            task_status.started()
                            try:
                                await self._loop()
                            finally:
                                self._receive.close()
                                self._downstreams.stop_all()
                    finally:
                        if self._pins is not None:
                            with trio.CancelScope(shield=True), trio.move_on_after(5):
                                await self._pins.flush()  # pins saved as the last events changed them
                        outer.cancel_scope.cancel()
        finally:
            self._audit.close()
            if self.shared_limits is not None:
                self.shared_limits.close()
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
            if isinstance(item, _Deferred):
                while item.actions:
                    await self._perform(item.actions.popleft())
            elif (event := self._admit(item)) is not None:
                await self._dispatch(event)
            while self._pending:
                await self._dispatch(self._pending.popleft())

    def _admit(self, item: Event | _TimerDue) -> Event | None:
        """The event to hand the core, or ``None`` when the core has let go of its subject."""
        if isinstance(item, _TimerDue):
            if self._timers.claim(item.timer, item.generation):
                return TimerFired(now=item.now, timer=item.timer)
            return None
        if isinstance(item, _DOWNSTREAM_EVENTS):
            if item.downstream not in self._downstreams:
                return None
            if isinstance(item, DownstreamExited):
                self._downstreams.exited(item.downstream)
        elif isinstance(item, (ClientMessageReceived, ClientClosed, ClientFellBehind)):
            if item.client not in self._clients:
                return None
            if isinstance(item, ClientClosed):
                self._clients.forget(item.client)
        elif isinstance(item, ConfigReloaded):
            # New downstreams use the new limits; the audit log keeps its file.
            self._settings = item.config.settings
            if self._pins is not None:
                self._pins.reread()
        return item

    def _handle_inline(self, event: Event) -> None:
        """Handle ``event`` in the feeding task; leave to the loop what would wait.

        Never awaits: that is what keeps it alone with the core.
        """
        admitted = self._admit(event)
        actions: deque[Action] = deque(self._handle(admitted) if admitted is not None else ())
        while True:
            while actions:
                if not self._perform_nowait(actions[0]):
                    # The loop is parked on an empty channel, so this never blocks
                    # and hands the rest straight to it, ahead of any later event.
                    self._send.send_nowait(_Deferred(actions))
                    return
                actions.popleft()
            if not self._pending:
                return
            actions.extend(self._handle(self._pending.popleft()))

    def _perform_nowait(self, action: Action) -> bool:
        """Perform ``action`` if that needs no waiting; ``False`` when it was left alone."""
        if isinstance(action, SendToClient):
            return self._clients.send_nowait(action)
        self._perform_sync(action)
        return True

    async def _dispatch(self, event: Event) -> None:
        for action in self._handle(event):
            await self._perform(action)

    def _handle(self, event: Event) -> list[Action]:
        """``core.handle(event)``; should it raise (a bug), contain the damage to that event's peer."""
        try:
            return self._core.handle(event)
        except Exception:
            _log.exception(f"internal error while handling {type(event).__name__}; the gateway carries on")
        if isinstance(event, ClientMessageReceived):
            answer = internal_error(event.data)
            if answer is not None:
                return [SendToClient(client=event.client, message=answer, request=answer["id"])]
        elif isinstance(event, _DOWNSTREAM_EVENTS) and not isinstance(event, DownstreamExited):
            self._downstreams.drop(event.downstream, "internal error in the gateway (logged)")
        return []

    async def _perform(self, action: Action) -> None:
        if isinstance(action, SendToClient):
            await self._clients.send(action)
        else:
            self._perform_sync(action)

    def _perform_sync(self, action: Action) -> None:
        """Perform any action but ``SendToClient``; none of them waits."""
        match action:
            case SendToClient():
                raise AssertionError("SendToClient needs awaiting: see _perform")
            case CloseClient(client=client):
                self._clients.close(client)
            case DropStream(client=client, request=request):
                self._clients.drop_stream(client, request)
            case StartDownstream():
                assert self._nursery is not None
                self._downstreams.start(action, self._nursery, max_message_bytes=downstream_message_bytes(self._settings))
            case SendToDownstream():
                self._downstreams.send(action)
            case StopDownstream(downstream=downstream, kill=kill):
                self._downstreams.stop(downstream, kill=kill)
            case SetTimer(timer=timer, deadline=deadline):
                self._timers.set(timer, deadline)
            case CancelTimer(timer=timer):
                self._timers.cancel(timer)
            case Audit(record=record):
                self._audit.write(record)
            case Log(level=level, message=message, fields=fields):
                _core_log.log(_LEVELS.get(level, logging.INFO), message, extra={"fields": fields or {}})
            case SavePins(server=server, record=record):
                if self._pins is not None:
                    self._pins.save(server, record)
            case TakeTokens():
                if self.shared_limits is not None:
                    self.shared_limits.submit(action)
                else:
                    assert self._nursery is not None
                    self._nursery.start_soon(self._no_store, action)
            case _:
                assert_never(action)

    async def _no_store(self, action: TakeTokens) -> None:
        """Every TakeTokens gets its answer: without a store, that none answers."""
        await self.feed(TokensTaken(now=trio.current_time(), ticket=action.ticket, unavailable="no shared rate limit store is configured"))

    async def _timer_due(self, timer: int, generation: int, now: float) -> None:
        try:
            await self._send.send(_TimerDue(timer, generation, now))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass


def _nothing() -> None:
    pass
