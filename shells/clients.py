"""The runtime's clients: where each ``SendToClient`` goes, and what a failed delivery becomes.

A transport shell registers every client it serves with a ``send`` callable
(and a ``close`` one, for ``CloseClient``) through
:meth:`.runtime.Runtime.register_client` before it feeds ``ClientOpened``.
The runtime's one loop delivers through :class:`Clients`, which turns each
failure into a fact for the core or contains it:

- ``send`` raising one of :data:`DELIVERY_ERRORS` says the client is gone: it
  is unregistered, its ``close`` is called and ``ClientClosed`` is reported;
- ``send`` raising :class:`StreamFellBehind` says one of the client's streams
  is full: the message was kept for the client to resume from, and
  ``ClientFellBehind`` is reported; the core decides (``DropStream``);
- any other exception is a bug (a message ``send`` cannot carry): it is
  logged with its traceback, and the message is replaced by the -32603 error
  for the same request that :func:`lockgate.core.internal_error_replacing`
  builds (nothing, when it answered no request).

A ``send_nowait`` (or a :class:`QueuedSend`, which has one) delivers without
waiting when it can; inline handling uses it (see :mod:`.runtime`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import trio

from lockgate.core import ClientClosed, ClientFellBehind, ClientId, Event, internal_error_replacing, SendToClient

from .logs import get_logger

__all__ = ["DELIVERY_ERRORS", "Client", "ClientSend", "ClientSendNowait", "Clients", "QueuedSend", "StreamFellBehind"]

DELIVERY_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)
"""What a client's ``send`` may raise to say the client is gone."""

ClientSend = Callable[[SendToClient], Awaitable[None]]
ClientSendNowait = Callable[[SendToClient], bool]
"""Deliver at once if that needs no waiting and say so; ``False`` means nothing was delivered."""

_log = get_logger("runtime")


class StreamFellBehind(Exception):
    """What a client's ``send`` raises when the stream a message goes on is full.

    The message is kept (buffered for resumption), so it counts as
    delivered; that the reader is too slow is a fact for the core
    (``ClientFellBehind``), which decides what becomes of the stream. Raise
    it once per stream: a burst of messages must not report it many times.
    ``request`` names the stream: the request it carries, ``None`` for the
    client's own stream.
    """

    def __init__(self, request: Any) -> None:
        super().__init__("a client's stream is full")
        self.request = request


@dataclass(frozen=True, slots=True)
class Client:
    """How to reach one client: see :meth:`.runtime.Runtime.register_client`."""

    send: ClientSend
    close: Callable[[], None]
    send_nowait: ClientSendNowait | None
    drop_stream: Callable[[Any], None] | None = None


class Clients:
    """The registered clients, by id; failures go to ``report`` as events for the core."""

    def __init__(self, report: Callable[[Event], None]) -> None:
        self._clients: dict[ClientId, Client] = {}
        self._report = report

    def add(self, client_id: ClientId, client: Client) -> None:
        """Register ``client`` (replacing any client registered under ``client_id``)."""
        self._clients[client_id] = client

    def __contains__(self, client: ClientId) -> bool:
        return client in self._clients

    def __len__(self) -> int:
        return len(self._clients)

    def forget(self, client: ClientId) -> None:
        """The core heard ``ClientClosed``: unregister ``client`` without calling its ``close``."""
        del self._clients[client]

    def close(self, client: ClientId) -> None:
        """Perform ``CloseClient``: unregister ``client`` and call its ``close``; nothing is reported."""
        closed = self._clients.pop(client, None)
        if closed is not None:
            closed.close()

    def drop_stream(self, client: ClientId, request: Any) -> None:
        """Perform ``DropStream``: the client's ``drop_stream``, if it has streams; nothing is reported."""
        found = self._clients.get(client)
        if found is not None and found.drop_stream is not None:
            found.drop_stream(request)

    async def send(self, action: SendToClient) -> None:
        """Perform ``SendToClient``, waiting as long as the client's ``send`` does."""
        client = self._clients.get(action.client)
        if client is None:
            _log.debug("message for a closed client dropped", extra={"fields": {"client": action.client}})
            return
        try:
            await self._deliver(client, action)
        except Exception:
            # A bug in the transport: the request still gets an answer.
            substitute = _undeliverable(action)
            if substitute is not None:
                await self._deliver(client, substitute)

    async def _deliver(self, client: Client, action: SendToClient) -> None:
        """Send one message; a client that fell behind or is gone is dealt with here, anything else raises."""
        try:
            await client.send(action)
        except StreamFellBehind as exc:
            self._fell_behind(action.client, exc)
        except DELIVERY_ERRORS as exc:
            self._gone(action.client, client, exc)

    def send_nowait(self, action: SendToClient) -> bool:
        """Perform ``SendToClient`` if that needs no waiting; ``False``: nothing happened, use :meth:`send`."""
        client = self._clients.get(action.client)
        if client is None:
            _log.debug("message for a closed client dropped", extra={"fields": {"client": action.client}})
            return True
        if client.send_nowait is None:
            return False
        try:
            return client.send_nowait(action)
        except StreamFellBehind as exc:
            self._fell_behind(action.client, exc)
            return True
        except DELIVERY_ERRORS as exc:
            self._gone(action.client, client, exc)
            return True
        except Exception:
            return False  # `send` tries again, and logs and replaces what it cannot carry

    def _fell_behind(self, client_id: ClientId, exc: StreamFellBehind) -> None:
        """A stream of the client is full: report it; the core answers with ``DropStream``."""
        self._report(ClientFellBehind(now=trio.current_time(), client=client_id, request=exc.request))

    def _gone(self, client_id: ClientId, client: Client, exc: BaseException) -> None:
        _log.info(f"client is gone: {type(exc).__name__}", extra={"fields": {"client": client_id}})
        if self._clients.get(client_id) is client:
            del self._clients[client_id]
            client.close()
            self._report(ClientClosed(now=trio.current_time(), client=client_id))


def _undeliverable(action: SendToClient) -> SendToClient | None:
    """A message the client's ``send`` failed on (a bug): log it, and the error that replaces it, if any."""
    _log.exception("internal error while sending a message to a client", extra={"fields": {"client": action.client}})
    answer = internal_error_replacing(action.message)
    return None if answer is None else SendToClient(client=action.client, message=answer, request=action.request)


class QueuedSend:
    """A client ``send`` for transports with their own writer task reading ``channel``.

    It never waits: a full channel means the client is not reading, which is
    reported like a broken connection, so one slow client cannot stall the loop.
    """

    def __init__(self, channel: trio.MemorySendChannel[SendToClient]) -> None:
        self._channel = channel

    def nowait(self, action: SendToClient) -> bool:
        try:
            self._channel.send_nowait(action)
        except trio.WouldBlock:
            raise trio.BrokenResourceError("the client is not reading") from None
        return True

    async def __call__(self, action: SendToClient) -> None:
        self.nowait(action)

