"""The answers of the Streamable HTTP endpoint that are not MCP: refusals and small bodies.

Every refusal is a :class:`Reject`: a status, headers and a JSON-RPC error
body whose ``data.code`` names the error, as every error the gateway makes
has. ``close`` tells the shell to close the connection after it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from ._errors import ErrorCode
from ._jsonrpc import error, error_with

__all__ = ["Headers", "MAX_HEADER_FIELDS", "MAX_HEAD_BYTES", "Reject", "json_body", "bad_http", "head_too_large", "internal_error", "session_gone", "busy", "stream_conflict", "stream_takeover", "duplicate_request", "cancelled_response", "ends_request", "Opened", "opened_session", "health_body", "ops_status", "error_body", "reject", "missing_session", "json_status", "unauthorized", "forbidden", "not_found", "auth_unavailable", "resource_metadata"]

Headers = tuple[tuple[str, str], ...]


_JSON = "application/json"


#: Most header fields a request head may carry; MCP clients send about ten.
#: Past it, or past MAX_HEAD_BYTES, the answer is 431 (RFC 6585, section 5)
#: and nothing is done with the fields, so their cost stays bounded.
MAX_HEADER_FIELDS = 100


#: Largest request head, request line and header fields together.
MAX_HEAD_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class Reject:
    """Answer at once with ``status``, ``headers`` and ``body``; serve nothing.

    ``close``: the connection must close after this answer, and nothing
    more is read from it as a request (its framing cannot be trusted, or the
    client is to go away).
    """

    status: int
    headers: Headers
    body: bytes
    close: bool = False


def error_body(
    code: ErrorCode, message: str, request_id: Any = None, path: str | None = None, context: Mapping[str, Any] | None = None
) -> bytes:
    """A JSON-RPC error with ``data.code`` (and ``data.path``, and ``context``), as every error the gateway makes has."""
    data: dict[str, Any] = {"code": code.name, **(context or {})}
    if path is not None:
        data["path"] = path
    return json_body(error_with(request_id, {"code": int(code), "message": message, "data": data}))


def reject(
    status: int,
    code: ErrorCode,
    message: str,
    cors: Headers = (),
    *,
    allow: str | None = None,
    request_id: Any = None,
    path: str | None = None,
    context: Mapping[str, Any] | None = None,
) -> Reject:
    headers: list[tuple[str, str]] = [("content-type", _JSON)]
    if allow is not None:
        headers.append(("allow", allow))
    return Reject(status=status, headers=(*headers, *cors), body=error_body(code, message, request_id, path, context))


def missing_session(cors: Headers, request_id: Any = None) -> Reject:
    return reject(400, ErrorCode.INVALID_REQUEST, "Bad Request: Missing session ID", cors, request_id=request_id)


def json_body(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def bad_http(status: int, detail: str) -> Reject:
    """The request is not valid HTTP/1.1 (``status`` is the parser's hint, usually 400); the connection closes.

    The hint 431 means the head outgrew the parser's buffer: the same
    answer as :func:`check_head_size` gives.
    """
    if status == 431:
        return head_too_large()
    return Reject(
        status=status,
        headers=(("content-type", _JSON), ("connection", "close")),
        body=error_body(ErrorCode.INVALID_REQUEST, f"Bad HTTP request: {detail[:200]}"),
        close=True,
    )


def head_too_large() -> Reject:
    """431: too many header fields, or too many bytes of them; the connection closes."""
    return Reject(
        status=431,
        headers=(("content-type", _JSON), ("connection", "close")),
        body=error_body(
            ErrorCode.INVALID_REQUEST,
            f"Request Header Fields Too Large: at most {MAX_HEADER_FIELDS} fields and {MAX_HEAD_BYTES} bytes",
        ),
        close=True,
    )


def internal_error() -> Reject:
    """500: serving the request failed inside the gateway (a bug, logged by the shell); the connection closes."""
    return Reject(
        status=500,
        headers=(("content-type", _JSON), ("connection", "close")),
        body=error_body(ErrorCode.INTERNAL_ERROR, "Internal Server Error"),
        close=True,
    )


def session_gone(cors: Headers = ()) -> Reject:
    """404: the session is unknown, expired or deleted; the client must initialize again."""
    return reject(404, ErrorCode.INVALID_REQUEST, "Not Found: Invalid or expired session ID", cors)


def unauthorized(metadata_url: str, reason: str, *, presented: bool, cors: Headers = ()) -> Reject:
    """401: no credential, or one that proves nothing.

    ``WWW-Authenticate`` names the bearer scheme and the protected-resource
    metadata (MCP 2025-11-25 "Authorization"; RFC 9728, section 5.1), with
    ``error="invalid_token"`` when a credential was presented (RFC 6750,
    section 3.1). ``reason`` is a few words (never the credential).
    """
    challenge = f'Bearer resource_metadata="{metadata_url}"'
    if presented:
        challenge += ', error="invalid_token"'
    refused = reject(401, ErrorCode.INVALID_REQUEST, f"Unauthorized: {reason}", cors)
    return Reject(status=401, headers=(*refused.headers, ("www-authenticate", challenge)), body=refused.body)


def not_found(reason: str, cors: Headers = ()) -> Reject:
    """404 for a path that exists only in another setup (``/auth/`` with authentication off)."""
    return reject(404, ErrorCode.INVALID_REQUEST, f"Not Found: {reason}", cors)


def forbidden(reason: str, cors: Headers = ()) -> Reject:
    """403: the credential is good but may not do this (a ``user`` at an admin endpoint)."""
    return reject(403, ErrorCode.INVALID_REQUEST, f"Forbidden: {reason}", cors)


def auth_unavailable(cors: Headers = ()) -> Reject:
    """503: the credential store does not answer, so no credential can be checked; fail closed."""
    refused = reject(503, ErrorCode.INVALID_REQUEST, "Service Unavailable: credentials cannot be checked right now", cors)
    return Reject(status=503, headers=(*refused.headers, ("retry-after", "1")), body=refused.body)


def resource_metadata(resource: str, authorization_servers: tuple[str, ...]) -> bytes:
    """The protected-resource metadata document of ``/mcp`` (RFC 9728, section 2)."""
    document: dict[str, Any] = {
        "resource": resource,
        "authorization_servers": list(authorization_servers),
        "bearer_methods_supported": ["header"],
        "resource_name": "Lockgate MCP gateway",
    }
    return json_body(document)


def busy() -> Reject:
    """503: the connection limit is reached and every connection is busy; the client should come back later."""
    return Reject(
        status=503,
        headers=(("content-type", _JSON), ("retry-after", "1"), ("connection", "close")),
        body=error_body(ErrorCode.INTERNAL_ERROR, "Service Unavailable: too many connections, retry later"),
        close=True,
    )


def stream_conflict(cors: Headers = ()) -> Reject:
    """409: the session already has its GET stream open."""
    return reject(409, ErrorCode.INVALID_REQUEST, "Conflict: Only one SSE stream is allowed per session", cors)


def stream_takeover(attached: bool, resuming: bool) -> Literal["open", "replace", "conflict"]:
    """What a GET does about the stream it would carry.

    A fresh GET while the session's stream is open is a conflict (409). A GET
    with ``Last-Event-ID`` replaces the open stream: a client resumes because
    it lost that stream, and the server may not have noticed yet.
    """
    if not attached:
        return "open"
    return "replace" if resuming else "conflict"


def duplicate_request(request_id: Any, cors: Headers = ()) -> Reject:
    """409: a request with this id is still in flight in this session."""
    return reject(
        409, ErrorCode.INVALID_REQUEST, f"Conflict: request id {request_id!r} is already in flight", cors,
        request_id=request_id,
    )


def cancelled_response(request_id: Any) -> dict[str, Any]:
    """What ends the HTTP response of a request the client cancelled (the core answers nothing)."""
    return error(request_id, ErrorCode.CANCELLED, "Request cancelled by the client", {"code": ErrorCode.CANCELLED.name})


def ends_request(message: Mapping[str, Any]) -> bool:
    """Whether ``message`` is a response (result or error), which ends its request's stream."""
    return "method" not in message and ("result" in message or "error" in message)


@dataclass(frozen=True, slots=True)
class Opened:
    """The core's answer to ``initialize`` opened the HTTP session, which speaks ``protocol_version``."""

    protocol_version: str | None


def opened_session(answer: Mapping[str, Any]) -> Opened | None:
    """What the core's answer to ``initialize`` means for the HTTP session: ``None`` when refused (close it)."""
    result = answer.get("result")
    if not isinstance(result, dict):
        return None
    version = result.get("protocolVersion")
    return Opened(version if isinstance(version, str) else None)


def json_status(message: Mapping[str, Any]) -> tuple[int, Headers]:
    """The status and extra headers of a POST answered with the single JSON-RPC message ``message``.

    200, except for a ``RATE_LIMITED`` error: 429 with ``Retry-After`` in
    whole seconds, rounded up (RFC 6585, section 4; RFC 9110, section 10.2.3),
    so HTTP clients and proxies back off as they already know how to.
    """
    error = message.get("error")
    if not isinstance(error, dict) or error.get("code") != ErrorCode.RATE_LIMITED:
        return 200, ()
    data = error.get("data")
    if not isinstance(data, dict) or data.get("code") != ErrorCode.RATE_LIMITED.name:
        return 200, ()
    waiting = data.get("retry_after_ms")
    if isinstance(waiting, bool) or not isinstance(waiting, int) or waiting < 0:
        return 200, ()
    return 429, (("retry-after", str(max(1, math.ceil(waiting / 1000)))),)


def health_body(version: str, uptime_seconds: float) -> bytes:
    """The ``/health`` answer: the process is up and serving."""
    return json_body(
        {"status": "healthy", "service": "lockgate", "version": version, "uptime_seconds": round(uptime_seconds, 3)}
    )


def ops_status(body: Mapping[str, Any]) -> int:
    """The status code for ``/ready``: 200 when ``body["status"]`` says ready or degraded, else 503."""
    return 200 if body.get("status") in ("ready", "degraded") else 503
