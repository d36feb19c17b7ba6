"""A server's stderr in the gateway's log: at most a few lines a second, the last ones kept.

A stdio server writes what it likes on stderr: a line per request, a
traceback, a flood. :class:`StderrRelay` logs each line at info with the
server's name, at most ``limit`` lines a second, and keeps the last few, so
that when the server dies while info records are hidden (the default) the
gateway can still show why (:meth:`StderrRelay.log_tail`).
"""

from __future__ import annotations

import logging
from collections import deque

import trio

from .framing import LineSplitter
from .logs import get_logger

__all__ = ["StderrRelay"]

_READ_CHUNK = 65536
_MAX_LINE = 8192
_LINES_PER_S = 20

_log = get_logger("downstream")


class StderrRelay:
    """Log a server's stderr at info, at most ``limit`` lines a second.

    Lines past the limit in a one-second window are counted and reported as
    one ``"N lines suppressed"`` line when the next window opens (or at the end).
    The last few lines are kept, so that when the server dies while info
    records are hidden (the default), :meth:`log_tail` can still show why.
    """

    def __init__(self, server: str, *, limit: int = _LINES_PER_S, tail: int = 5) -> None:
        self.server = server
        self.limit = limit
        self.tail: deque[str] = deque(maxlen=tail)
        self._window = -1.0e18
        self._count = 0
        self._suppressed = 0

    def line(self, text: str, now: float) -> None:
        self.tail.append(text)
        if now - self._window >= 1.0:
            self.flush()
            self._window = now
            self._count = 0
        if self._count < self.limit:
            self._count += 1
            _log.info(text, extra={"fields": {"server": self.server}})
        else:
            self._suppressed += 1

    def flush(self) -> None:
        if self._suppressed:
            _log.info(f"{self._suppressed} lines suppressed", extra={"fields": {"server": self.server}})
            self._suppressed = 0

    def log_tail(self, reason: str) -> None:
        """Log the last lines at warning, unless every line was shown already."""
        if self.tail and not _log.isEnabledFor(logging.INFO):
            _log.warning(f"server {reason}; its last stderr lines follow", extra={"fields": {"server": self.server}})
            for text in self.tail:
                _log.warning(f"stderr: {text}", extra={"fields": {"server": self.server}})

    async def relay(self, stderr: trio.abc.ReceiveStream) -> None:
        """Log the lines of ``stderr`` until it ends or breaks."""
        splitter = LineSplitter(_MAX_LINE)
        try:
            while chunk := await stderr.receive_some(_READ_CHUNK):
                now = trio.current_time()
                for line in splitter.feed(chunk):
                    text = line.decode("utf-8", "replace") if isinstance(line, bytes) else "(overlong line)"
                    self.line(text, now)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        finally:
            self.flush()
