"""Logging: one line per record, on stderr only.

stdout belongs to MCP when Lockgate serves stdio, and the operator did not ask
for a log file, so every record goes to stderr. Quiet by default: warnings,
errors and the start-up summary (level ``NOTICE``); ``GATEWAY_LOG_LEVEL``
picks another threshold, and ``--debug`` or ``GATEWAY_DEBUG`` shows
everything down to debug when no level is set. Structured fields (the
``fields`` of a core :class:`lockgate.core.Log`, or ``server`` for a
downstream's stderr) are appended as ``key=value``, or, with
``GATEWAY_LOG_FORMAT=json``, become keys of one JSON object per line.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any, TextIO

__all__ = ["LOGGER_NAME", "NOTICE", "JsonFormatter", "LineFormatter", "get_logger", "log_threshold", "setup_logging"]

LOGGER_NAME = "lockgate"
NOTICE = 25
"""Between INFO and WARNING: shown even when quiet (the start-up summary)."""

logging.addLevelName(NOTICE, "NOTICE")

_THRESHOLDS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def get_logger(name: str = "") -> logging.Logger:
    """The ``lockgate`` logger, or its child ``lockgate.<name>``."""
    return logging.getLogger(f"{LOGGER_NAME}.{name}" if name else LOGGER_NAME)


def _stamp(record: logging.LogRecord) -> str:
    stamp = datetime.fromtimestamp(record.created, timezone.utc)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"


class LineFormatter(logging.Formatter):
    """``2026-05-09T12:00:00.123Z WARNING message key=value ...``, never more than one line."""

    def format(self, record: logging.LogRecord) -> str:
        parts = [
            _stamp(record),
            record.levelname,
            _one_line(record.getMessage()),
        ]
        fields = getattr(record, "fields", None)
        if isinstance(fields, Mapping):
            parts.extend(f"{key}={_value(value)}" for key, value in fields.items())
        if record.exc_info and record.levelno >= logging.ERROR:
            # Tracebacks are for the operator's terminal, still one record.
            parts.append(_one_line(self.formatException(record.exc_info)))
        return " ".join(parts)


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ``time``, ``level``, ``logger``, ``message``, then the fields.

    A field named like one of those four keys cannot replace it; it moves
    under ``fields`` instead. JSON escapes newlines, so a record stays one line.
    """

    _OWN = frozenset({"time", "level", "logger", "message", "fields", "exception"})

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": _stamp(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, Mapping):
            clashing = {}
            for key, value in fields.items():
                if str(key) in self._OWN:
                    clashing[str(key)] = value
                else:
                    line[str(key)] = value
            if clashing:
                line["fields"] = clashing
        if record.exc_info and record.levelno >= logging.ERROR:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def _one_line(text: str) -> str:
    return text.replace("\r", "\\r").replace("\n", "\\n")


def _value(value: Any) -> str:
    if not isinstance(value, str):
        # Numbers, lists and objects as compact JSON, quoted only if they hold whitespace.
        text = json.dumps(value, ensure_ascii=False, default=str, separators=(",", ":"))
        return json.dumps(text, ensure_ascii=False) if any(c in text for c in " \n\r\t") else text
    if value == "" or any(c in value for c in ' "=\n\r\t'):
        return json.dumps(value, ensure_ascii=False)
    return value


def log_threshold(*, debug: bool = False, level: str | None = None) -> int:
    """The lowest level shown: ``level`` if given, else debug or the quiet ``NOTICE``."""
    if level is not None:
        return _THRESHOLDS[level]
    return logging.DEBUG if debug else NOTICE


def setup_logging(
    *,
    debug: bool = False,
    level: str | None = None,
    log_format: str = "text",
    stream: TextIO | None = None,
) -> logging.Logger:
    """Send ``lockgate`` records to stderr (or ``stream``), one line each.

    Args:
        debug: show everything down to debug, unless ``level`` says otherwise.
        level: ``debug``, ``info``, ``warning`` or ``error`` (``GATEWAY_LOG_LEVEL``).
        log_format: ``text`` or ``json`` (``GATEWAY_LOG_FORMAT``).
        stream: where to write instead of stderr (tests).

    Calling it again replaces the handler it installed before, so a test or a
    reload can change the level.
    """
    logger = get_logger()
    for handler in list(logger.handlers):
        if getattr(handler, "_lockgate", False):
            logger.removeHandler(handler)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else LineFormatter())
    handler._lockgate = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(log_threshold(debug=debug, level=level))
    logger.propagate = False
    return logger
