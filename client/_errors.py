"""The gateway's refusals as exceptions, one class per family of HTTP status.

Every non-2xx answer of the REST API carries
``{"error": {"code", "message", "status", "data"}}``; :func:`error_from_response`
turns it into the :class:`GatewayError` subclass of its status, so a caller
can catch a family (``except NotFound``) or branch on ``.code``
(``"DENIED_BY_POLICY"``, ``"TOOL_NOT_FOUND"``, ...). An answer without that
body (a reverse proxy's HTML page, say) still becomes the class of its status,
with ``code`` ``"HTTP_<status>"``. A gateway that cannot be reached at all is
:class:`GatewayUnreachable`, whose ``status`` is ``None``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

__all__ = [
    "AuthenticationError",
    "BadRequest",
    "Conflict",
    "DownstreamError",
    "GatewayError",
    "GatewayTimeout",
    "GatewayUnreachable",
    "NotFound",
    "PermissionDenied",
    "RateLimited",
    "Unavailable",
    "error_from_body",
    "parse_retry_after",
]


class GatewayError(Exception):
    """A request the gateway refused or could not serve.

    Attributes:
        code: The gateway's error name (``SERVER_NOT_FOUND``, ``DENIED_BY_POLICY``, ...),
            or ``HTTP_<status>`` when the answer carried no error body.
        status: The HTTP status, or ``None`` when no answer came (:class:`GatewayUnreachable`).
        message: The gateway's human-readable explanation.
        data: The error's ``data`` object as sent (``rule``, ``downstream_code``, ...); ``{}`` when absent.
    """

    def __init__(self, code: str, message: str, status: int | None = None, data: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.status = status
        self.message = message
        self.data: dict[str, Any] = dict(data or {})

    def __str__(self) -> str:
        where = f"{self.status} " if self.status is not None else ""
        return f"{where}{self.code}: {self.message}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, status={self.status!r}, message={self.message!r})"


class BadRequest(GatewayError):
    """400 or 413: the request was malformed, of the wrong types, or too large; ``data["errors"]`` says where."""


class AuthenticationError(GatewayError):
    """401: no credential, or a bad, expired or revoked one."""


class PermissionDenied(GatewayError):
    """403: the credential or the rules do not allow it; ``data["rule"]`` names the rule that decided."""


class NotFound(GatewayError):
    """404: no such server, tool, resource, instance or path."""


class Conflict(GatewayError):
    """409: an instance of that id exists already, or a file instance the registry may not remove."""


class RateLimited(GatewayError):
    """429: a rate limit refused the call; retry after :attr:`retry_after` seconds (``None`` when not said)."""

    def __init__(
        self,
        code: str,
        message: str,
        status: int | None = None,
        data: Mapping[str, Any] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(code, message, status, data)
        self.retry_after = retry_after


class DownstreamError(GatewayError):
    """502: the downstream server answered an error or garbage; ``data["downstream_code"]`` holds its code."""


class Unavailable(GatewayError):
    """503: the server (or the gateway) cannot serve now; the client has retried already."""


class GatewayTimeout(GatewayError):
    """504: the call ran out of time."""


class GatewayUnreachable(GatewayError):
    """No answer at all: the connection was refused, reset or timed out (after the client's retries)."""


_BY_STATUS: dict[int, type[GatewayError]] = {
    400: BadRequest,
    401: AuthenticationError,
    403: PermissionDenied,
    404: NotFound,
    409: Conflict,
    413: BadRequest,
    429: RateLimited,
    502: DownstreamError,
    503: Unavailable,
    504: GatewayTimeout,
}


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """A ``Retry-After`` header in seconds: delay-seconds or an HTTP date (RFC 9110, section 10.2.3); ``None`` if unusable."""
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def error_from_body(status: int, body: bytes, retry_after: str | None = None, reason: str = "") -> GatewayError:
    """The exception for one non-2xx answer: its status's class, filled from the error body when there is one."""
    code, message = f"HTTP_{status}", reason or f"HTTP status {status}"
    data: dict[str, Any] = {}
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = None
        text = body.decode("utf-8", errors="replace").strip()
        if text:
            # A proxy's page: its first line is usually enough to say what happened.
            message = f"{message}: {text.splitlines()[0][:200]}"
    error = parsed.get("error") if isinstance(parsed, dict) else None
    if isinstance(error, dict):
        given = error.get("data")
        data = given if isinstance(given, dict) else {}
        # A JSON-RPC error body (as /mcp answers) has a number for code and the name in data.code.
        name = error.get("code") if isinstance(error.get("code"), str) else data.get("code")
        code = name if isinstance(name, str) and name else code
        message = str(error.get("message") or message)
    elif isinstance(error, str):
        message = error
    cls = _BY_STATUS.get(status, GatewayError)
    if cls is RateLimited:
        seconds = parse_retry_after(retry_after)
        if seconds is None and isinstance(data.get("retry_after_ms"), int | float):
            seconds = data["retry_after_ms"] / 1000
        return RateLimited(code, message, status, data, retry_after=seconds)
    return cls(code, message, status, data)
