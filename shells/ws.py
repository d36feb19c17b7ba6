"""The WebSocket front: MCP JSON-RPC over WebSocket at ``/ws``, on the HTTP front's port.

RFC 6455 with wsproto, in trio, beside the h11 shell. ``lockgate serve
--transport ws`` serves WebSocket alone (the Streamable HTTP endpoint and the
REST API answer 404; ``/health``, ``/ready``, ``/metrics`` and ``/auth/``
stay), ``--transport http,ws`` both on one port. Every rule is in
:mod:`lockgate.core.ws`; this module only moves and frames bytes.

Theory of operation. :class:`WsFront` is the handler of every HTTP
connection (:mod:`.http_exchange`): a request for ``/ws`` goes to
:func:`~lockgate.core.ws.check_upgrade` (421, 403, 405, 426, 400 refuse it,
and the connection serves HTTP on), then to the credential check of
:mod:`.http_auth` (401) when authentication is on; anything else goes to the
MCP endpoint. An accepted upgrade is answered ``101`` through h11, and the
connection's socket, with the bytes h11 had read past the request, is
handed to a :class:`WsConnection` on wsproto.

Each :class:`WsConnection` is one client of the core, as the stdio client is
one: ``ClientOpened(transport="ws")`` under the upgrade's principal, one
``ClientMessageReceived`` per text message, one text message per
``SendToClient``, and ``ClientClosed`` when it ends. Three tasks serve it: the
reader (frames in, :class:`~lockgate.core.ws.Inbound` puts messages together
and refuses what it must), the writer (frames out, in order) and the
keep-alive (:class:`~lockgate.core.ws.KeepAlive` says when to ping and when
to give up). The runtime writes a message straight to the socket when the
socket takes it; otherwise it joins the connection's queue, which holds at
most :data:`QUEUE_LIMIT` frames: a client that lets it fill up is not
reading, and is closed (1008) rather than let hold the gateway's memory.

A close, whoever starts it, sends the close frame after what was queued,
then waits at most :data:`CLOSE_TIMEOUT` seconds for the client's close frame
(or its hang-up) before the socket closes.

With authentication on, the credential of the upgrade request is checked
again every :data:`~.identity.REFRESH` seconds while the connection is open
(one task for all of them, no database read): a change is reported to the
core (``AuthenticationSucceeded``/``AuthenticationFailed`` with
``client=``), and a revoked or expired credential closes the connection with
1008.

Shutdown (:meth:`WsFront.shutdown`): no new upgrade; requests in flight get
the grace period the HTTP front's POSTs get; then every connection closes
with 1001.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import trio
from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage
from wsproto.utilities import LocalProtocolError

from lockgate.core import (
    AuthenticationFailed,
    AuthenticationSucceeded,
    ClientClosed,
    ClientMessageReceived,
    ClientOpened,
    Principal,
    SendToClient,
)
from lockgate.core.http import HttpPolicy, Reject, Route, ends_request
from lockgate.core.ws import (
    Inbound,
    KeepAlive,
    SendPing,
    WaitUntil,
    WsClose,
    answer_close,
    check_upgrade,
    credential_refused,
    fell_behind,
    going_away,
    internal_failure,
    is_ws_target,
    opened_request,
    protocol_failure,
    session_ended,
    shutting_down,
    streamable_off,
)

from .http_connections import HUNG_UP, receive_some
from .http_exchange import Exchange, Handler
from .identity import REFRESH, Refused, presented_credential
from .logs import get_logger
from .record import Recorder, WireTap
from .runtime import Runtime

if TYPE_CHECKING:
    from .http_auth import HttpAuth

__all__ = ["CLOSE_TIMEOUT", "QUEUE_LIMIT", "WsConnection", "WsFront"]

_log = get_logger("ws")

#: Frames a connection may have queued for a client that does not read (as an SSE stream may).
QUEUE_LIMIT = 256
#: Seconds a closing connection waits for the client's close frame.
CLOSE_TIMEOUT = 1.0


class WsFront:
    """The WebSocket connections of one HTTP listener, and the handler that routes upgrades to them."""

    def __init__(
        self,
        runtime: Runtime,
        policy: HttpPolicy,
        *,
        endpoint: Handler,
        streamable: bool = True,
        ping_interval: float,
        ping_timeout: float,
        auth: HttpAuth | None = None,
        recorder: Recorder | None = None,
    ) -> None:
        self._runtime = runtime
        self._policy = policy
        self._endpoint = endpoint
        self._streamable = streamable
        self._ping_interval = ping_interval
        self._ping_timeout = ping_timeout
        self._auth = auth
        self._recorder = recorder
        self._ids = itertools.count(1)
        self._closing = False
        self.connections: set[WsConnection] = set()

    # -- routing ---------------------------------------------------------------------

    async def handle(self, exchange: Exchange) -> None:
        """Answer one HTTP request: upgrade ``/ws``, refuse Streamable HTTP when it is off, else the endpoint's."""
        if is_ws_target(exchange.target):
            await self._upgrade(exchange)
            return
        if not self._streamable:
            refusal = streamable_off(exchange.target)
            if refusal is not None:
                await exchange.refuse(refusal)
                return
        await self._endpoint(exchange)

    async def _upgrade(self, exchange: Exchange) -> None:
        decision = check_upgrade(exchange.method, exchange.target, exchange.headers, self._policy)
        if isinstance(decision, Reject):
            await exchange.refuse(decision)
            return
        if self._closing:
            await exchange.refuse(shutting_down())
            return
        if await exchange.read_body() is None:  # check_upgrade refused a body; this reads its end
            return
        principal: Principal | None = None
        credential: str | None = None
        if self._auth is not None:
            principal = await self._auth.principal(exchange, Route(kind="get"))
            if principal is None:
                return  # answered 401 or 503
            credential = presented_credential(exchange.headers)
        stream, trailing = await exchange.switch_protocols(decision.headers)
        client = f"ws-{next(self._ids)}"
        connection = WsConnection(
            self, client, stream, trailing, principal=principal, credential=credential,
            tap=None if self._recorder is None else self._recorder.wire(client),
        )
        self.connections.add(connection)
        try:
            if principal is not None and self._auth is not None:
                await self._auth.opened(exchange, principal)
            await connection.serve()
        finally:
            self.connections.discard(connection)

    # -- credentials -----------------------------------------------------------------

    async def recheck_credentials(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Check every open connection's credential again every ``REFRESH`` seconds, for ever (with authentication on)."""
        task_status.started()
        if self._auth is None:
            return
        while True:
            await trio.sleep(REFRESH)
            for connection in list(self.connections):
                await connection.recheck(self._auth)

    # -- shutdown ----------------------------------------------------------------------

    def stop_accepting(self) -> None:
        """Refuse new upgrades (503) from now on."""
        self._closing = True

    async def wait_idle(self) -> None:
        """Until no connection has a request in flight (the caller bounds the wait)."""
        while any(connection.in_flight for connection in self.connections):
            await trio.sleep(0.02)

    async def close_all(self) -> None:
        """Close every connection with 1001 and wait for them to end (each is bounded by :data:`CLOSE_TIMEOUT`)."""
        self._closing = True
        for connection in list(self.connections):
            connection.close(going_away())
        with trio.move_on_after(CLOSE_TIMEOUT + 1):
            while self.connections:
                await trio.sleep(0.01)

    async def shutdown(self, grace: float, then: Callable[[float], Awaitable[None]]) -> None:
        """Stop: requests in flight get up to ``grace`` seconds, ``then`` (the HTTP front's shutdown) gets the rest, and every connection closes with 1001."""
        self.stop_accepting()
        deadline = trio.current_time() + grace
        with trio.move_on_at(deadline):
            await self.wait_idle()
        await then(max(0.0, deadline - trio.current_time()))
        await self.close_all()


class WsConnection:
    """One WebSocket client of the core; see the module docstring."""

    def __init__(
        self,
        front: WsFront,
        client: str,
        stream: trio.SocketStream,
        trailing: bytes,
        *,
        principal: Principal | None,
        credential: str | None,
        tap: WireTap | None = None,
    ) -> None:
        self.client = client
        self._front = front
        self._runtime = front._runtime
        self._stream = stream
        self._fd = stream.socket.fileno()
        self._principal = principal
        self._credential = credential
        self._checked: object = None if principal is None else _outcome(principal)
        self._tap = tap
        self._ws = Connection(ConnectionType.SERVER)
        self._trailing = trailing
        self._inbound = Inbound(front._policy.max_body_bytes)
        self._keepalive = KeepAlive(front._ping_interval, front._ping_timeout, trio.current_time())
        self._pong = trio.Event()
        #: Frames (or the rest of one) waiting for the writer, oldest first.
        self._queue: deque[bytes] = deque()
        self._wake = trio.Event()
        #: The writer is in the middle of a frame: nothing else may write.
        self._writing = False
        #: Set once the close frame is queued: why the connection ends.
        self.closing: WsClose | None = None
        self._fell_behind = False
        #: The core let go of the client (``CloseClient``, or a delivery found it gone).
        self._core_done = False
        self._done = trio.Event()
        self._nursery: trio.Nursery | None = None
        #: Requests the client sent and the core has not answered yet.
        self.in_flight: set[Any] = set()

    # -- serving -------------------------------------------------------------------------

    async def serve(self) -> None:
        """Serve the client until the connection ends; then tell the core. Never raises (but for cancellation)."""
        runtime = self._runtime
        runtime.register_client(self.client, self._send, self._core_closed, self._send_nowait)
        await runtime.feed(ClientOpened(now=trio.current_time(), client=self.client, transport="ws", principal=self._principal))
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._read)
                nursery.start_soon(self._write)
                nursery.start_soon(self._keep_alive)
                await self._done.wait()
                nursery.cancel_scope.cancel()
        except Exception as exc:
            if not _hung_up(exc):
                # A bug met while serving one client must end that client alone.
                _log.error("failed while serving a WebSocket client; closing it", exc_info=exc,
                           extra={"fields": {"client": self.client}})
                await self._last_words(internal_failure())
        finally:
            self._nursery = None
            if not self._core_done:
                self._core_done = True
                with trio.CancelScope(shield=True) as scope:
                    scope.deadline = trio.current_time() + 5  # a runtime that stopped drops it at once
                    await runtime.feed(ClientClosed(now=trio.current_time(), client=self.client))

    async def _read(self) -> None:
        """Frames in: messages to the core, pings answered, pongs to the keep-alive, closes handled."""
        data = self._trailing
        try:
            while True:
                if data:
                    self._ws.receive_data(data)
                    await self._events()
                    if self._ws.state is ConnectionState.CLOSED:
                        # Both close frames exist; once ours is written (else the writer sees to it), the end.
                        if not self._queue and not self._writing:
                            self._ended()
                        return
                data = await receive_some(self._stream)
                if not data:
                    self._done.set()  # hung up, with or without a close frame
                    return
        except HUNG_UP:
            self._done.set()

    async def _events(self) -> None:
        for event in self._ws.events():
            if isinstance(event, TextMessage):
                if self.closing is not None:
                    continue  # said after our close frame: nobody is listening any more
                verdict = self._inbound.text(
                    event.data.encode("utf-8"), frame_finished=event.frame_finished, message_finished=event.message_finished
                )
                if isinstance(verdict, WsClose):
                    self.close(verdict)
                elif verdict is not None:
                    await self._received(verdict)
            elif isinstance(event, BytesMessage):
                if self.closing is None:
                    self.close(self._inbound.binary())
            elif isinstance(event, Ping):
                if self._ws.state is ConnectionState.OPEN:
                    self._push(self._ws.send(event.response()))
            elif isinstance(event, Pong):
                if self._keepalive.pong(event.payload):
                    self._pong.set()
            elif isinstance(event, CloseConnection):
                if self._ws.state is ConnectionState.REMOTE_CLOSING:
                    self.close(answer_close(event.code))  # the client closes: say the same back
                elif self._ws.state is ConnectionState.OPEN:
                    # The frame parser refused the bytes (wsproto reports it as a close it did not change state for).
                    self.close(protocol_failure(event.code, event.reason or "protocol error"))
                    return
                # CLOSED: the client answered our close frame; the reader ends the connection.

    async def _received(self, data: bytes) -> None:
        if self._tap is not None:
            self._tap("c2s", data)
        request = opened_request(data)
        if request is not None:
            self.in_flight.add(request)
        await self._runtime.feed(ClientMessageReceived(now=trio.current_time(), client=self.client, data=data))

    async def _write(self) -> None:
        """Frames out, in order, as the socket takes them."""
        try:
            while True:
                while not self._queue:
                    if self._close_written():
                        return
                    self._wake = trio.Event()
                    await self._wake.wait()
                data = self._queue.popleft()
                self._writing = True
                await self._stream.send_all(data)
                self._writing = False
        except HUNG_UP:
            self._done.set()

    def _close_written(self) -> bool:
        """Everything up to the close frame is out: end now if the client's close frame came too, else soon."""
        if self.closing is None:
            return False
        if self._ws.state is ConnectionState.CLOSED:
            self._ended()
        return True

    async def _keep_alive(self) -> None:
        while self.closing is None:
            step = self._keepalive.poll(trio.current_time())
            if isinstance(step, SendPing):
                self._push(self._ws.send(Ping(payload=step.payload)))
            elif isinstance(step, WaitUntil):
                with trio.move_on_at(step.deadline):
                    await self._pong.wait()
                self._pong = trio.Event()
            else:
                self.close(step)

    # -- closing -------------------------------------------------------------------------

    def close(self, close: WsClose) -> None:
        """Queue the close frame after what is queued; the connection ends once it is answered, or after :data:`CLOSE_TIMEOUT`."""
        if self.closing is not None or self._ws.state not in (ConnectionState.OPEN, ConnectionState.REMOTE_CLOSING):
            return
        self.closing = close
        if close.code != 1000 or self._ws.state is not ConnectionState.REMOTE_CLOSING:
            _log.info(f"closing a WebSocket connection: {close.code} {close.reason}", extra={"fields": {"client": self.client}})
        self._queue.append(self._ws.send(CloseConnection(code=close.code, reason=close.reason)))
        self._wake.set()
        if self._nursery is not None:
            self._nursery.start_soon(self._expire)

    async def _expire(self) -> None:
        await trio.sleep(CLOSE_TIMEOUT)
        self._done.set()

    def _ended(self) -> None:
        """Both close frames are through: the server closes the TCP connection first (RFC 6455, section 7.1.1)."""
        self._done.set()

    async def _last_words(self, close: WsClose) -> None:
        """After a failure: a close frame if one can still go out, within :data:`CLOSE_TIMEOUT`."""
        if self._ws.state not in (ConnectionState.OPEN, ConnectionState.REMOTE_CLOSING) or self._writing:
            return
        with trio.move_on_after(CLOSE_TIMEOUT), trio.CancelScope(shield=True):
            try:
                await self._stream.send_all(b"".join(self._queue) + self._ws.send(CloseConnection(code=close.code, reason=close.reason)))
            except (*HUNG_UP, LocalProtocolError):
                pass

    def _core_closed(self) -> None:
        """The runtime let go of the client: ``CloseClient``, or its queue overflowed (see :meth:`_send_nowait`)."""
        self._core_done = True
        self.close(fell_behind() if self._fell_behind else session_ended())

    # -- the core's messages ---------------------------------------------------------------

    async def _send(self, action: SendToClient) -> None:
        self._send_nowait(action)

    def _send_nowait(self, action: SendToClient) -> bool:
        """Frame one message and write it now if the socket takes it, else queue it; never waits.

        Raises:
            trio.BrokenResourceError: the queue is full (the client is not
                reading), or the socket is broken: the runtime reports the
                client gone and closes it.
        """
        if action.request is not None and ends_request(action.message):
            self.in_flight.discard(action.request)
        if self.closing is not None:
            return True  # too late for this client: its close frame is queued
        data = action.encoded()
        if self._tap is not None:
            self._tap("s2c", data)
        if len(self._queue) >= QUEUE_LIMIT:
            self._fell_behind = True
            raise trio.BrokenResourceError("the WebSocket client is not reading")
        self._push(self._ws.send(TextMessage(data=data.decode("utf-8"))))
        return True

    def _push(self, frame: bytes) -> None:
        """Write ``frame`` at once when nothing is ahead of it and the socket takes it; queue what is left."""
        if not self._queue and not self._writing:
            try:
                written = os.write(self._fd, frame)
            except BlockingIOError:
                written = 0
            except OSError as exc:
                raise trio.BrokenResourceError(str(exc)) from exc
            if written == len(frame):
                return
            frame = frame[written:]
        self._queue.append(frame)
        self._wake.set()

    # -- credentials -----------------------------------------------------------------------

    async def recheck(self, auth: HttpAuth) -> None:
        """Check the upgrade's credential again; report a change to the core, and close on a refusal that calls for it."""
        if self._credential is None or self.closing is not None:
            return
        now = trio.current_time()
        checked = auth.check(self._credential, now)
        outcome = _outcome(checked)
        if outcome == self._checked:
            return
        self._checked = outcome
        if isinstance(checked, Principal):
            await self._runtime.feed(AuthenticationSucceeded(now=now, principal=checked, client=self.client))
            return
        await self._runtime.feed(
            AuthenticationFailed(now=now, reason=checked.reason, credential=checked.credential, client=self.client)
        )
        close = credential_refused(checked.status, checked.reason)
        if close is not None:
            self.close(close)


def _outcome(checked: Principal | Refused) -> object:
    """What matters of a check for telling a change: the principal but for its expiry's clock, or the refusal."""
    return dataclasses.replace(checked, expires=None) if isinstance(checked, Principal) else checked


def _hung_up(exc: BaseException) -> bool:
    if isinstance(exc, BaseExceptionGroup):
        return exc.split(HUNG_UP)[1] is None
    return isinstance(exc, HUNG_UP)
