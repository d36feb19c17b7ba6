"""The HTTP shell's view of its sessions: where each message the core sends goes.

Theory of operation. Each Streamable HTTP session is one client of the core,
named by its ``Mcp-Session-Id``. The runtime's loop hands every
``SendToClient`` for it to :meth:`HttpSession.deliver`, which never waits:

- a message about a request (``request`` set) goes to that request's POST:
  a JSON waiter takes only the response; an SSE request gets every message
  numbered in the session's :class:`~lockgate.core.http.EventBuffer` and
  pushed to the attached stream, if any (a client that lost it resumes with
  ``Last-Event-ID``);
- a message about no request goes to the session's GET stream, numbered and
  buffered the same way.

A stream whose reader falls behind is never waited for: the loop never
blocks on one client. The frame that did not fit stays in the buffer, the
stream gets nothing more, and :class:`~.clients.StreamFellBehind` tells the
runtime, which reports ``ClientFellBehind``; the core then ends the stream
(``DropStream``: :meth:`HttpSession.drop_stream`), and the client resumes
from the buffer with ``Last-Event-ID``.
"""

from __future__ import annotations

from collections.abc import Container
from dataclasses import dataclass, field
from typing import Any

import trio

from lockgate.core import encode, SendToClient
from lockgate.core.http import GET_STREAM, EventBuffer, StreamKey, ends_request

from .clients import StreamFellBehind

__all__ = ["HttpSession", "JsonWaiter", "STREAM_BUFFER"]

#: SSE frames queued for one stream before its reader counts as too slow.
STREAM_BUFFER = 256


@dataclass(slots=True)
class JsonWaiter:
    """A POST waiting for its request's response, answered as one JSON body.

    ``message`` stays ``None`` when the session ended first.
    """

    done: trio.Event = field(default_factory=trio.Event)
    message: dict[str, Any] | None = None
    #: ``message`` encoded, when it was delivered by the core (not a stand-in).
    body: bytes | None = None

    def resolve(self, message: dict[str, Any] | None, body: bytes | None = None) -> None:
        if not self.done.is_set():
            self.message = message
            self.body = body
            self.done.set()

    def encoded(self) -> bytes:
        """The answer's bytes, encoded once (``message`` must be set)."""
        assert self.message is not None
        return self.body if self.body is not None else encode(self.message)


@dataclass(slots=True)
class HttpSession:
    """One session: its negotiated version, its event buffer, and who waits for what."""

    #: What the client names it by (``Mcp-Session-Id``; a sealed id, see :mod:`.session_ids`).
    id: str
    #: The core's client id for it: ``id`` unless set (a sealed id is minted only once ``initialize``
    #: is answered, and is long; the core knows the session by a short random name of this gateway's).
    client: str = ""
    protocol_version: str | None = None
    #: The principal whose credential opened it (authentication on); only it may use the session.
    principal_id: str | None = None
    events: EventBuffer = field(default_factory=EventBuffer)
    json_waiters: dict[Any, JsonWaiter] = field(default_factory=dict)
    #: Requests answered over SSE that have no response yet (attached or not).
    sse_requests: set[Any] = field(default_factory=set)
    #: Live SSE responses, by the stream they carry.
    streams: dict[StreamKey, trio.MemorySendChannel[bytes]] = field(default_factory=dict)
    #: Live streams whose reader fell behind, reported and not yet dropped by the core.
    behind: dict[StreamKey, trio.MemorySendChannel[bytes]] = field(default_factory=dict)
    closed: bool = False
    #: When its id stops opening, in Unix seconds (a sealed id); ``None`` for one that never did.
    expires: float | None = None

    def __post_init__(self) -> None:
        if not self.client:
            self.client = self.id

    def in_flight(self, request_id: Any) -> bool:
        """Whether a request with this id waits for its answer (its POST is still open)."""
        return request_id in self.json_waiters or request_id in self.sse_requests

    @property
    def requests_in_flight(self) -> Container[Any]:
        """The ids :meth:`in_flight` is true of, for :func:`lockgate.core.http.check_post` (409)."""
        return _InFlight(self)

    def wait_json(self, request_id: Any) -> JsonWaiter:
        waiter = JsonWaiter()
        self.json_waiters[request_id] = waiter
        return waiter

    def attach(self, key: StreamKey) -> tuple[trio.MemorySendChannel[bytes], trio.MemoryReceiveChannel[bytes]]:
        """Open the live stream ``key``; the caller has checked it is not attached already."""
        send, receive = trio.open_memory_channel[bytes](STREAM_BUFFER)
        self.streams[key] = send
        return send, receive

    def detach(self, key: StreamKey, send: trio.MemorySendChannel[bytes]) -> None:
        """Forget the live stream ``key`` if ``send`` still feeds it (its response ended)."""
        if self.streams.get(key) is send:
            del self.streams[key]
        send.close()

    async def send(self, action: SendToClient) -> None:
        """The runtime's ``send`` callable for this session; never waits."""
        self.deliver(action.message, action.request, action.wire)

    def deliver(self, message: dict[str, Any], request: Any, wire: bytes | None = None) -> None:
        """Route one message to whoever waits for it (``wire``: it encoded already, see ``SendToClient``).

        Raises:
            StreamFellBehind: the message is buffered, but its stream is full.
            Exception: the message cannot be encoded (a bug); nothing changed.
        """
        if self.closed:
            return
        if request is not None:
            waiter = self.json_waiters.get(request)
            if waiter is not None:
                if ends_request(message):
                    # Encoded here, before anything changes, so that a failure
                    # leaves the request waiting for the runtime's replacement.
                    body = encode(message) if wire is None else wire
                    del self.json_waiters[request]
                    waiter.resolve(message, body)
                return  # JSON answers carry nothing but the response
            if request in self.sse_requests:
                data = encode(message) if wire is None else wire
                last = ends_request(message)
                if last:
                    self.sse_requests.discard(request)
                key: StreamKey = ("post", request)
                self._push(key, self.events.add(key, data, last=last), end=last)
            return  # nobody waits for it any more (its client went away)
        self._push(GET_STREAM, self.events.add(GET_STREAM, encode(message)))

    def cancel(self, request_id: Any, response: dict[str, Any]) -> None:
        """End the POST of a request the client cancelled, which the core will not answer."""
        waiter = self.json_waiters.pop(request_id, None)
        if waiter is not None:
            waiter.resolve(response)
        elif request_id in self.sse_requests:
            self.deliver(response, request_id)

    def close(self) -> None:
        """The session ended: wake every waiter and end every stream."""
        self.closed = True
        waiters, self.json_waiters = self.json_waiters, {}
        for waiter in waiters.values():
            waiter.resolve(None)
        streams, self.streams = self.streams, {}
        for send in streams.values():
            send.close()
        self.sse_requests.clear()
        self.behind.clear()

    def drop_stream(self, request: Any) -> None:
        """Stop sending on the stream of ``request`` (``None``: the GET stream), as the core said.

        What it would have carried stays in the event buffer, for the client
        to resume from with ``Last-Event-ID``.
        """
        key: StreamKey = GET_STREAM if request is None else ("post", request)
        behind = self.behind.pop(key, None)
        send = self.streams.get(key)
        if send is None or (behind is not None and send is not behind):
            return  # ended already, or taken over since by a reader that resumed, which keeps up
        del self.streams[key]
        send.close()

    def close_streams(self) -> None:
        """End every live SSE response (shutdown); the session itself stays."""
        streams, self.streams = self.streams, {}
        for send in streams.values():
            send.close()
        self.behind.clear()

    def _push(self, key: StreamKey, frame: bytes, *, end: bool = False) -> None:
        send = self.streams.get(key)
        if send is None or self.behind.get(key) is send:
            return  # nobody listens, or the core is deciding about a slow reader: the buffer has the frame
        try:
            send.send_nowait(frame)
        except trio.WouldBlock:
            # Too slow: a fact for the core (reported once per stream); the
            # buffer has the frame for the client to resume from.
            self.behind[key] = send
            raise StreamFellBehind(key[1]) from None
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            end = True  # its response ended: the buffer still has the frame
        if end:
            del self.streams[key]
            send.close()


@dataclass(frozen=True, slots=True)
class _InFlight:
    """The ids of a session's requests in flight, as a container (see :attr:`HttpSession.requests_in_flight`)."""

    session: HttpSession

    def __contains__(self, request_id: object) -> bool:
        return self.session.in_flight(request_id)
