"""Server-sent events of the Streamable HTTP endpoint: their framing, and resumption.

MCP 2025-11-25, basic/transports, "Resumability and Redelivery". Every event
of a session is numbered; :class:`EventBuffer` keeps the last few so a client
that reconnects with ``Last-Event-ID`` gets what it missed, on the stream it
lost and no other. Clients from 2025-11-25 on expect a priming event (an id
and ``retry:`` with no data) first (SEP-1699).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from ._http_answers import Headers

__all__ = ["PRIMING_SINCE", "RETRY_MS", "sse_headers", "wants_priming", "format_event", "priming_event", "StreamKey", "GET_STREAM", "Replay", "EventBuffer"]

#: The first revision whose clients expect a priming event and ``retry:`` (SEP-1699).
PRIMING_SINCE = "2025-11-25"


#: Milliseconds a client should wait before reconnecting a lost SSE stream.
RETRY_MS = 1000


_SSE = "text/event-stream"


def sse_headers(session: str | None, cors: Headers = ()) -> Headers:
    """Headers of an SSE response; ``X-Accel-Buffering: no`` keeps proxies from holding events back."""
    headers: list[tuple[str, str]] = [
        ("content-type", _SSE),
        ("cache-control", "no-cache, no-transform"),
        ("x-accel-buffering", "no"),
    ]
    if session is not None:
        headers.append(("mcp-session-id", session))
    return (*headers, *cors)


def wants_priming(protocol_version: str | None) -> bool:
    """Whether a stream starts with a priming event and ``retry:`` (2025-11-25 and later).

    Earlier clients may choke on an event with empty data, so they get none.
    """
    return protocol_version is not None and protocol_version >= PRIMING_SINCE


def format_event(event_id: int | None, data: bytes) -> bytes:
    """One SSE ``message`` event; ``data`` is one JSON message (it holds no newline)."""
    head = b"event: message\n" if event_id is None else b"id: %d\nevent: message\n" % event_id
    return head + b"data: " + data + b"\n\n"


def priming_event(event_id: int) -> bytes:
    """The first event of a stream: an id to resume from, empty data, and ``retry:``."""
    return b"id: %d\nretry: %d\nevent: message\ndata: \n\n" % (event_id, RETRY_MS)


StreamKey = tuple[str, Any]
"""Which stream of a session an event went out on: ``("get", None)`` or ``("post", request_id)``."""


GET_STREAM: StreamKey = ("get", None)


@dataclass(frozen=True, slots=True, kw_only=True)
class Replay:
    """What a resuming GET gets: the stream it continues and the events it missed, as SSE bytes.

    ``finished`` says the stream's request was answered (it is in ``events``),
    so nothing more will come and the response can end after the replay.
    """

    stream: StreamKey
    events: tuple[bytes, ...]
    finished: bool


@dataclass(slots=True)
class _Stored:
    id: int
    stream: StreamKey
    frame: bytes
    last: bool


@dataclass(slots=True)
class EventBuffer:
    """The numbered SSE events of one session, the last ``limit`` of them kept.

    Event ids increase by one across all streams of the session, so an id
    names both a position and a stream; lookup is by arithmetic, not search.
    Memory is bounded: the oldest events fall out, and a client resuming from
    one of those gets a fresh stream with nothing replayed.
    """

    limit: int = 256
    _events: deque[_Stored] = field(default_factory=deque)
    _next: int = 1

    def add(self, stream: StreamKey, data: bytes | None, *, last: bool = False) -> bytes:
        """Number one message (``None``: a priming event) sent on ``stream``; return its SSE bytes.

        ``last`` marks the response that ends a POST stream.
        """
        event_id = self._next
        self._next += 1
        frame = priming_event(event_id) if data is None else format_event(event_id, data)
        self._events.append(_Stored(event_id, stream, frame if data is not None else b"", last))
        if len(self._events) > self.limit:
            self._events.popleft()
        return frame

    def replay(self, last_event_id: str) -> Replay | None:
        """The events after ``last_event_id`` on its stream, or ``None`` if that id is not held."""
        text = last_event_id.strip()
        if not (text.isascii() and text.isdigit()) or not self._events:
            return None
        first = self._events[0].id
        index = int(text) - first
        if index < 0 or index >= len(self._events):
            return None
        stream = self._events[index].stream
        frames: list[bytes] = []
        finished = False
        for stored in list(self._events)[index + 1 :]:
            if stored.stream == stream:
                if stored.frame:
                    frames.append(stored.frame)
                finished = finished or stored.last
        return Replay(stream=stream, events=tuple(frames), finished=finished)

    def __len__(self) -> int:
        return len(self._events)
