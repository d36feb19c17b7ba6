"""Newline framing for stdio: bytes in, whole lines out, never over a limit.

MCP over stdio sends one UTF-8 JSON-RPC message per line (spec 2025-11-25,
basic/transports, "stdio"). :class:`LineSplitter` is sans-IO: feed it the
chunks a stream returned and it hands back complete lines. It never holds more
than ``max_line`` bytes of one line: a longer line is reported once as
:data:`TOO_LONG` and its remaining bytes are dropped up to the next newline,
after which framing carries on normally.
"""

from __future__ import annotations

from typing import Final, Literal

__all__ = ["TOO_LONG", "LineSplitter", "TooLong"]

TooLong = Literal["too long"]
TOO_LONG: Final[TooLong] = "too long"


class LineSplitter:
    """Split a byte stream into lines of at most ``max_line`` bytes.

    A trailing ``b"\\r"`` is stripped (CRLF peers) and blank lines are
    skipped. Bytes after the last newline wait for the next :meth:`feed`;
    at end of stream they are dropped, as a message without its newline is
    not a complete frame.
    """

    def __init__(self, max_line: int) -> None:
        if max_line < 1:
            raise ValueError("max_line must be positive")
        self.max_line = max_line
        self._buffer = bytearray()
        self._discarding = False

    def feed(self, data: bytes | bytearray) -> list[bytes | TooLong]:
        """Take one chunk; return the lines (and overflow marks) it completed, in order."""
        out: list[bytes | TooLong] = []
        start = 0
        end = len(data)
        while start < end:
            newline = data.find(b"\n", start)
            stop = end if newline < 0 else newline
            if self._discarding:
                if newline >= 0:
                    self._discarding = False
            elif len(self._buffer) + (stop - start) > self.max_line + 1:
                # +1 tolerates the "\r" of a CRLF line exactly at the limit;
                # _finish checks the real length.
                self._buffer.clear()
                out.append(TOO_LONG)
                self._discarding = newline < 0
            elif newline < 0:
                self._buffer += data[start:stop]
            else:
                self._buffer += data[start:stop]
                self._finish(out)
            if newline < 0:
                break
            start = newline + 1
        return out

    def _finish(self, out: list[bytes | TooLong]) -> None:
        line = bytes(self._buffer)
        self._buffer.clear()
        if line.endswith(b"\r"):
            line = line[:-1]
        if len(line) > self.max_line:
            out.append(TOO_LONG)
        elif line.strip():
            out.append(line)

    @property
    def pending(self) -> int:
        """Bytes held for an unfinished line."""
        return len(self._buffer)
