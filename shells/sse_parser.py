"""An incremental parser for Server-Sent Events (``text/event-stream``).

It follows the WHATWG HTML standard, "Server-sent events", section
"Interpreting an event stream"
(https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation):
lines end in CRLF, LF or CR; a line starting with ``:`` is a comment; a field
is ``name: value`` (one space after the colon is dropped); a blank line
dispatches the event. ``data`` lines are joined with LF; an event without
any ``data`` line is not dispatched, but its ``id`` still becomes the last
event id. (MCP servers send "priming" events, an id and an empty ``data``
line, so a client can resume from them: those come out with empty data.)

Pure and synchronous: feed it bytes as they arrive, in chunks of any size,
and take the finished events. Data stays bytes, so JSON-RPC messages can be
handed on without decoding them.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SseEvent", "SseParser", "SseTooLarge"]

_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True, slots=True)
class SseEvent:
    """One dispatched event: its type (``"message"`` by default), data and id."""

    event: str
    data: bytes
    id: str | None


class SseTooLarge(Exception):
    """An event (or a line) grew past the parser's limit."""


class SseParser:
    """Turn a byte stream into :class:`SseEvent` values; see the module docstring.

    ``last_event_id`` is the id to send as ``Last-Event-ID`` when resuming;
    ``retry`` the reconnection delay in milliseconds the server asked for.
    """

    def __init__(self, max_event_bytes: int) -> None:
        self.max_event_bytes = max_event_bytes
        self.last_event_id: str | None = None
        self.retry: int | None = None
        self._buffer = bytearray()
        self._start = True  # a BOM may open the stream
        self._scanned = 0  # the buffer holds no line end before this offset
        self._skip_lf = False  # the last chunk ended in CR; an LF next belongs to it
        self._data: list[bytes] = []
        self._data_size = 0
        self._event = ""
        self._id: str | None = None

    def feed(self, chunk: bytes) -> list[SseEvent]:
        """Parse ``chunk``; return the events it completed, in order.

        Raises:
            SseTooLarge: an event's data or one line exceeds the limit; the
                parser is then unusable.
        """
        if self._skip_lf and chunk:
            self._skip_lf = False
            if chunk[:1] == b"\n":
                chunk = chunk[1:]
        buffer = self._buffer
        buffer += chunk
        if self._start:
            if len(buffer) < len(_BOM) and _BOM.startswith(bytes(buffer)):
                return []
            if buffer.startswith(_BOM):
                del buffer[: len(_BOM)]
            self._start = False
        events: list[SseEvent] = []
        pos = 0
        size = len(buffer)
        # Resume the search where the last chunk's search ended, so one long
        # line arriving in many chunks is scanned once, not once per chunk.
        scan = self._scanned
        while pos < size:
            lf = buffer.find(b"\n", scan)
            cr = buffer.find(b"\r", scan, lf if lf >= 0 else size)
            if cr >= 0:
                end, after = cr, cr + 1
                if after < size:
                    if buffer[after] == 0x0A:
                        after += 1
                else:
                    self._skip_lf = True
            elif lf >= 0:
                end, after = lf, lf + 1
            else:
                break
            event = self._line(bytes(buffer[pos:end]))
            if event is not None:
                events.append(event)
            pos = scan = after
        del buffer[:pos]
        self._scanned = len(buffer)
        if len(buffer) > self.max_event_bytes:
            raise SseTooLarge(f"an event stream line is over {self.max_event_bytes} bytes")
        return events

    def _line(self, line: bytes) -> SseEvent | None:
        if not line:
            return self._dispatch()
        if line[:1] == b":":
            return None  # a comment (servers send them as keep-alives)
        name, colon, value = line.partition(b":")
        if colon and value[:1] == b" ":
            value = value[1:]
        if name == b"data":
            self._data.append(value)
            self._data_size += len(value) + 1
            if self._data_size > self.max_event_bytes:
                raise SseTooLarge(f"an event is over {self.max_event_bytes} bytes")
        elif name == b"event":
            self._event = value.decode("utf-8", "replace")
        elif name == b"id":
            if b"\0" not in value:
                self._id = value.decode("utf-8", "replace")
        elif name == b"retry":
            if value.isdigit():
                self.retry = int(value)
        return None

    def _dispatch(self) -> SseEvent | None:
        if self._id is not None:
            self.last_event_id = self._id or None  # an empty id resets it
        data, self._data, self._data_size = self._data, [], 0
        event, self._event = self._event or "message", ""
        if not data:
            return None
        return SseEvent(event=event, data=b"\n".join(data), id=self.last_event_id)
