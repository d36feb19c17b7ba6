"""Logging: one line per record, on stderr only.

stdout belongs to MCP when Lockgate serves stdio, and the operator did not ask
for a log file, so every record goes to stderr. Quiet by default: warnings,
errors and the start-up summary (level ``NOTICE``); ``--debug`` or
``GATEWAY_DEBUG`` shows everything down to debug. Structured fields (the
``fields`` of a core :class:`~lockgate.core.actions.Log`, or ``server`` for a
downstream's stderr) are appended as ``key=value``.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any, TextIO

__all__ = ["LOGGER_NAME", "NOTICE", "LineFormatter", "get_logger", "setup_logging"]

LOGGER_NAME = "lockgate"
NOTICE = 25
"""Between INFO and WARNING: shown even when quiet (the start-up summary)."""

logging.addLevelName(NOTICE, "NOTICE")


def get_logger(name: str = "") -> logging.Logger:
    """The ``lockgate`` logger, or its child ``lockgate.<name>``."""
    return logging.getLogger(f"{LOGGER_NAME}.{name}" if name else LOGGER_NAME)


class LineFormatter(logging.Formatter):
    """``2026-05-09T12:00:00.123Z WARNING message key=value ...``, never more than one line."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created, timezone.utc)
        parts = [
            stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z",
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


def _one_line(text: str) -> str:
    return text.replace("\r", "\\r").replace("\n", "\\n")


def _value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    if text == "" or any(c in text for c in ' "=\n\r\t'):
        return json.dumps(text, ensure_ascii=False)
    return text


def setup_logging(*, debug: bool, stream: TextIO | None = None) -> logging.Logger:
    """Send ``lockgate`` records to stderr (or ``stream``), one line each.

    Calling it again replaces the handler it installed before, so a test or a
    reload can change the level.
    """
    logger = get_logger()
    for handler in list(logger.handlers):
        if getattr(handler, "_lockgate", False):
            logger.removeHandler(handler)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(LineFormatter())
    handler._lockgate = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if debug else NOTICE)
    logger.propagate = False
    return logger
