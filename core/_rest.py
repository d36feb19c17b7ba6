"""The REST API's requests and answers, in the core's terms.

The HTTP front offers a second door beside ``/mcp``: plain JSON endpoints per
server (``GET /mcp/{server}/tools/list``, ``POST /mcp/{server}/tools/call``,
...), as the Enhanced MCP Gateway's users script against. Behind the door it
is the same gateway: each REST request is one short-lived client session of
the core (``ClientOpened(transport="rest", server=...)``), which needs no
handshake and serves that one server's tools, resources and prompts under
their own names (:mod:`._surface`). So policy, credentials, rate limits,
timeouts, failover, metrics and the audit record (``"transport": "rest"``)
are those of an MCP request, decided in one place.

:func:`rest_message` turns a REST request into the JSON-RPC request the
session is fed; :func:`rest_answer` turns the core's answer into an HTTP
status and a JSON body: a result as it is, an error as
``{"error": {"code", "message", "status", "data"}}`` with the status that
fits its code (:data:`STATUS`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ._errors import ErrorCode
from ._jsonrpc import encode, request

__all__ = ["RestAnswer", "STATUS", "UNKNOWN_SERVER", "rest_answer", "rest_error", "rest_message", "rest_refusal"]

JSONObject = dict[str, Any]

#: How the core's refusal of an unconfigured server begins (a 404 of its own name).
UNKNOWN_SERVER = "Unknown server"

#: The HTTP status of each gateway error code.
STATUS: dict[ErrorCode, int] = {
    ErrorCode.PARSE_ERROR: 400,
    ErrorCode.INVALID_REQUEST: 400,
    ErrorCode.METHOD_NOT_FOUND: 404,
    ErrorCode.INVALID_PARAMS: 400,
    ErrorCode.INTERNAL_ERROR: 500,
    ErrorCode.DENIED_BY_POLICY: 403,
    ErrorCode.SERVER_UNAVAILABLE: 503,
    ErrorCode.TOOL_NOT_FOUND: 404,
    # A credential may not act as that agent: a refusal, not a malformed request.
    ErrorCode.INVALID_AGENT_ID: 403,
    ErrorCode.TIMEOUT: 504,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.NO_FALLBACK_CONFIGURED: 400,
    ErrorCode.FALLBACK_AGENT_NOT_IN_RULES: 403,
    # Cancelled by the gateway itself (shutting down): try again, elsewhere.
    ErrorCode.CANCELLED: 503,
    # The tool is there, but held back until an operator accepts its new definition.
    ErrorCode.TOOL_CHANGED: 409,
    # The shared rate limit store does not answer (GATEWAY_REDIS_FAILURE=closed): try again later.
    ErrorCode.RATE_LIMIT_UNAVAILABLE: 503,
    ErrorCode.HEADER_MISMATCH: 400,
    ErrorCode.MISSING_CLIENT_CAPABILITY: 400,
    ErrorCode.UNSUPPORTED_PROTOCOL_VERSION: 400,
}

#: A server's own JSON-RPC errors, which carry no gateway code: the ones a caller can act on.
_DOWNSTREAM: dict[int, tuple[int, str]] = {
    -32700: (400, "PARSE_ERROR"),
    -32600: (400, "INVALID_REQUEST"),
    -32602: (400, "INVALID_PARAMS"),
    -32601: (404, "METHOD_NOT_FOUND"),
    # MCP's "Resource not found" (server/resources, "Error Handling").
    -32002: (404, "RESOURCE_NOT_FOUND"),
}


@dataclass(frozen=True, slots=True)
class RestAnswer:
    """What to answer a REST request: status, JSON body, and extra headers (``Retry-After``)."""

    status: int
    body: JSONObject
    headers: tuple[tuple[str, str], ...] = ()


def rest_message(
    operation: str,
    params: JSONObject,
    *,
    request_id: int = 1,
    agent_id: str | None = None,
    timeout_ms: int | None = None,
) -> bytes:
    """The JSON-RPC request a REST session is fed for ``operation`` with ``params`` (already validated).

    ``agent_id`` and ``timeout_ms`` travel in ``_meta``, where an MCP
    client puts its agent too; the server never sees them.
    """
    meta: JSONObject = {}
    if agent_id is not None:
        meta["agent_id"] = agent_id
    if timeout_ms is not None:
        meta["timeout_ms"] = timeout_ms
    return encode(request(request_id, operation, {**params, "_meta": meta} if meta else params))


def rest_refusal(status: int, headers: tuple[tuple[str, str], ...], body: bytes, code: str) -> bytes:
    """The REST form of a refusal the HTTP front made for ``/mcp`` (401, 503): its message, under ``code``.

    ``headers`` stay as they are (``WWW-Authenticate``, ``Retry-After``); only the body changes shape.
    """
    try:
        message = json.loads(body)["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = ""
    return encode(rest_error(status, code, message if isinstance(message, str) else ""))


def rest_error(status: int, code: str, message: str, data: JSONObject | None = None) -> JSONObject:
    """The REST error body: ``{"error": {"code", "message", "status", "data"}}``."""
    return {"error": {"code": code, "message": message, "status": status, "data": data or {}}}


def rest_answer(message: JSONObject, operation: str | None = None) -> RestAnswer:
    """The HTTP answer to a REST request, from the JSON-RPC answer the core sent its session.

    ``operation`` is the REST operation asked: a server's -32602 to
    ``resources/read`` is "Resource not found", as MCP 2026-07-28 says it
    (earlier revisions used -32002, which is one too).
    """
    if "result" in message:
        result = message["result"]
        return RestAnswer(200, result if isinstance(result, dict) else {"result": result})
    err = message.get("error")
    if not isinstance(err, dict):
        return RestAnswer(502, rest_error(502, "DOWNSTREAM_ERROR", "The answer was neither a result nor an error"))
    code = err.get("code")
    text = err.get("message")
    text = text if isinstance(text, str) else ""
    raw = err.get("data")
    data: JSONObject = dict(raw) if isinstance(raw, dict) else {}
    name = data.pop("code", None)
    gateway = _gateway_code(code, name)
    headers: tuple[tuple[str, str], ...] = ()
    if gateway is not None:
        status = STATUS.get(gateway, 500)
        label = gateway.name
        if gateway is ErrorCode.TOOL_NOT_FOUND and text.startswith(UNKNOWN_SERVER):
            label = "SERVER_NOT_FOUND"
        retry = data.get("retry_after_ms")
        if gateway is ErrorCode.RATE_LIMITED and isinstance(retry, int) and not isinstance(retry, bool):
            # Whole seconds, rounded up: RFC 9110 section 10.2.3.
            headers = (("retry-after", str(max(1, -(-retry // 1000)))),)
        return RestAnswer(status, rest_error(status, label, text, data), headers)
    if operation == "resources/read" and code == -32602:
        return RestAnswer(404, rest_error(404, "RESOURCE_NOT_FOUND", text, data))
    if isinstance(code, int) and not isinstance(code, bool) and code in _DOWNSTREAM:
        status, label = _DOWNSTREAM[code]
        return RestAnswer(status, rest_error(status, label, text, data))
    if isinstance(raw, dict):
        data = dict(raw)
    elif raw is not None:
        data = {"data": raw}
    data["downstream_code"] = code
    return RestAnswer(502, rest_error(502, "DOWNSTREAM_ERROR", text, data))


def _gateway_code(code: object, name: object) -> ErrorCode | None:
    """The gateway's error code of an error the gateway made (its ``data.code`` names it), else ``None``."""
    if not isinstance(code, int) or isinstance(code, bool) or not isinstance(name, str):
        return None
    try:
        gateway = ErrorCode(code)
    except ValueError:
        return None
    return gateway if gateway.name == name else None
