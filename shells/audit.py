"""The audit log: one JSON object per line, appended as the core decides.

Each :class:`lockgate.core.Audit` record is written as it comes, with
``"time"`` (UTC, ISO 8601 with milliseconds) as its first key, and flushed at
once so a crash loses nothing already decided. The file and its directory are
created on the first record, not at start-up. If the file cannot be opened or
written, one error is logged and the gateway keeps serving without an audit
log: losing the audit trail must not take the service down. A record that
cannot be encoded (which the core's strict JSON boundary should make
impossible) is never a reason to stop: it is written with the offending
values escaped, or, failing that, as a stub that says so, and later records
are written as usual.

Writes are small, synchronous and local; they happen on the runtime's one
loop task, so records keep the order of the decisions.

Several processes may append to one file (``lockgate serve --workers N``,
replicas on one volume, ``lockgate user`` and ``key`` beside a running
gateway): the file is opened ``O_APPEND`` and each record is one ``write``
of its whole line, so each lands at the end of the file in one piece and no
two interleave (a local file system writes one ``write`` to a regular file
under the file's lock). There is no rotation here to race on: a rotating
tool moves the file aside, and only a process that opens it again writes to
the new one.
"""

from __future__ import annotations

import json
import os
import time
from collections import deque
from datetime import datetime, timezone
from typing import Any

from .logs import get_logger

__all__ = ["RECENT_RECORDS", "AuditLog", "utc_timestamp"]

#: Records kept in memory for the status page.
RECENT_RECORDS = 200

_log = get_logger("audit")
_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str, allow_nan=False)


def utc_timestamp(moment: datetime | None = None) -> str:
    """``2026-05-09T12:00:00.123Z`` for ``moment`` (default: now)."""
    moment = moment if moment is not None else datetime.now(timezone.utc)
    moment = moment.astimezone(timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


class _Clock:
    """``utc_timestamp()`` for now, formatting the date and time once a second (it is per call)."""

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def now(self) -> str:
        moment = time.time()
        second = int(moment)
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(second))
        return f"{self._prefix}{int((moment - second) * 1000):03d}Z"


class AuditLog:
    """Append-only JSON Lines file at ``path``; ``None`` or ``""`` disables it."""

    def __init__(self, path: str | None) -> None:
        self.path = path or None
        #: The file's descriptor, opened ``O_APPEND``.
        self._file: int | None = None
        self._failed = False
        self.records = 0
        self._clock = _Clock()
        #: The latest records, newest last, for the status page (``GET /gateway/audit``), file or not.
        self.recent: deque[dict[str, Any]] = deque(maxlen=RECENT_RECORDS)

    def write(self, record: dict[str, Any]) -> None:
        """Append one record; never raises."""
        stamp = self._clock.now()
        self.recent.append({"time": stamp, **record})
        if self.path is None or self._failed:
            return
        if self._file is None and not self._open():
            return
        assert self._file is not None
        data = (_format(stamp, record) + "\n").encode("utf-8")
        try:
            # One write per record, whole: see the module docstring. Only a full
            # disk or a signal makes a short write; the rest follows then.
            view = memoryview(data)
            while view:
                view = view[os.write(self._file, view):]
        except (OSError, ValueError) as exc:
            self._fail(f"cannot write the audit log: {_describe(exc)}")
            return
        self.records += 1

    def close(self) -> None:
        """Flush and close the file; later records are dropped silently."""
        self._close_file()
        self._failed = True

    def _open(self) -> bool:
        assert self.path is not None
        try:
            directory = os.path.dirname(self.path)
            if directory:
                os.makedirs(directory, exist_ok=True)
            self._file = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o666)
        except OSError as exc:
            self._fail(f"cannot open the audit log {self.path}: {_describe(exc)}; serving without it")
            return False
        return True

    def _fail(self, message: str) -> None:
        _log.error(message)
        self._failed = True
        self._close_file()

    def _close_file(self) -> None:
        if self._file is not None:
            try:
                os.close(self._file)
            except OSError:
                pass
            self._file = None


def _format(stamp: str, record: dict[str, Any]) -> str:
    """One audit line; never raises, whatever the record holds."""
    try:
        if record and "time" not in record:
            # Splice "time" in front without copying the record into a new dict.
            line = f'{{"time":"{stamp}",{_encoder.encode(record)[1:]}'
        else:
            line = _encoder.encode({"time": stamp, **record})
        line.encode("utf-8")  # what the file's write would do: a lone surrogate fails here
        return line
    except (ValueError, TypeError, RecursionError) as exc:  # UnicodeEncodeError is a ValueError
        problem = type(exc).__name__
    _log.error(f"an audit record could not be encoded ({problem}); writing it escaped")
    try:
        # ASCII escapes every lone surrogate; NaN and the like fall through to the stub.
        return json.dumps({"time": stamp, **record, "audit_error": problem}, ensure_ascii=True, default=repr, allow_nan=False)
    except (ValueError, TypeError, RecursionError):
        return json.dumps({"time": stamp, "audit_error": problem, "decision": str(record.get("decision"))}, ensure_ascii=True)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return type(exc).__name__
