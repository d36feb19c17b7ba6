"""The Streamable HTTP rules, sans-IO: what the endpoint answers, decided from plain values.

MCP 2025-11-25, basic/transports, "Streamable HTTP"
(https://modelcontextprotocol.io/specification/2025-11-25/basic/transports).

Theory of operation
-------------------
The HTTP shell parses bytes with h11 and asks this module what to do, in two
steps, so that every status code and every header it sends is decided here:

1. :func:`check_head` looks at the method, target and headers (names
   lower-cased) of any request and returns a :class:`Reject` (status, headers
   and a JSON body, a JSON-RPC error for ``/mcp``) or a :class:`Route` that
   says what to serve: the MCP endpoint's POST, GET or DELETE, ``/health``,
   ``/ready``, ``/metrics`` or a CORS preflight answer.
2. For a POST to ``/mcp``, once the body is read, :func:`check_post` parses
   it and returns a :class:`Reject` or a :class:`Post` plan: a new session
   for ``initialize``, 202 for notifications and responses, or a request
   that is answered as JSON or as an SSE stream. A request answered as JSON
   gets the status and headers :func:`json_status` gives for the answer:
   200, or 429 with ``Retry-After`` for a call a rate limit refused.

A POST whose ``MCP-Protocol-Version`` is no handshake-era version belongs to
the 2026-07-28 era (GET and DELETE then get 405): :func:`check_head` routes
it as ``stateless`` whatever ``Mcp-Session-Id`` says, :func:`check_post`
checks its envelope and routing headers against the body (400 with -32602,
-32020 or -32022), and its JSON answer gets :func:`stateless_status`
(404 for an unknown method, 400 for the protocol's other errors).

Before either, :func:`check_head_size` caps the head (431), and
:func:`check_head` refuses a request whose body framing is ambiguous (400,
then the connection closes: request smuggling). Then checks run in this
order, DNS rebinding protection first, then the order a client can fix them
in: path (404), ``Host`` (421), ``Origin`` (403), CORS preflight, method
(405), ``Accept`` (406), ``Content-Type`` (415), ``Content-Length`` (413),
``MCP-Protocol-Version`` (400), session (400 missing, 404 unknown).

Which connections the endpoint keeps when clients hold too many, and how
long a request may take to arrive, are decided here too: see
:func:`admit`, :class:`ConnectionLimits` and :func:`body_timeout`.

This module is the public face of four private ones: requests
(:mod:`._http_requests`), refusals and small answers (:mod:`._http_answers`),
server-sent events and resumption (:mod:`._http_sse`), and connections
(:mod:`._http_connections`).

The protocol version is a property of each request and session, never of the
shell: the handshake era sends ``MCP-Protocol-Version`` after ``initialize``
(absent means 2025-03-26); the stateless 2026-07-28 era plugs in here later.

:class:`EventBuffer` numbers the SSE events of one session and keeps the last
few so a client that reconnects with ``Last-Event-ID`` gets what it missed,
on the stream it lost and no other (spec: "Resumability and Redelivery").
"""

from __future__ import annotations

from ._http_answers import (
    MAX_HEADER_FIELDS,
    MAX_HEAD_BYTES,
    Reject,
    bad_http,
    busy,
    cancelled_response,
    duplicate_request,
    ends_request,
    head_too_large,
    health_body,
    Opened,
    opened_session,
    internal_error,
    json_body,
    json_status,
    ops_status,
    auth_unavailable,
    forbidden,
    not_found,
    resource_metadata,
    unauthorized,
    session_gone,
    stream_conflict,
    stream_takeover,
)
from ._http_sse import (
    EventBuffer,
    GET_STREAM,
    Replay,
    StreamKey,
    format_event,
    priming_event,
    sse_headers,
    wants_priming,
)
from ._http_connections import (
    ConnectionLimits,
    DEFAULT_BODY_RATE,
    DEFAULT_IDLE_TIMEOUT,
    Evict,
    Occupancy,
    admit,
    body_timeout,
)
from ._http_requests import (
    AUTH_PREFIX,
    DEFAULT_PROTOCOL_VERSION,
    RESOURCE_METADATA_PATH,
    HttpPolicy,
    MCP_PATH,
    Post,
    Route,
    check_head,
    check_head_size,
    check_post,
    stateless_status,
    host_allowed,
    rest_kind,
    open_to_any_host,
    origin_allowed,
    too_large,
    wants_prometheus,
)

__all__ = [
    "AUTH_PREFIX",
    "RESOURCE_METADATA_PATH",
    "auth_unavailable",
    "forbidden",
    "not_found",
    "resource_metadata",
    "unauthorized",
    "Opened",
    "opened_session",
    "ConnectionLimits",
    "DEFAULT_BODY_RATE",
    "DEFAULT_IDLE_TIMEOUT",
    "DEFAULT_PROTOCOL_VERSION",
    "EventBuffer",
    "Evict",
    "GET_STREAM",
    "HttpPolicy",
    "MAX_HEADER_FIELDS",
    "MAX_HEAD_BYTES",
    "MCP_PATH",
    "Occupancy",
    "Post",
    "Reject",
    "Replay",
    "Route",
    "StreamKey",
    "admit",
    "bad_http",
    "body_timeout",
    "busy",
    "cancelled_response",
    "check_head",
    "check_head_size",
    "check_post",
    "duplicate_request",
    "ends_request",
    "format_event",
    "head_too_large",
    "health_body",
    "host_allowed",
    "rest_kind",
    "internal_error",
    "json_body",
    "json_status",
    "stateless_status",
    "open_to_any_host",
    "ops_status",
    "origin_allowed",
    "priming_event",
    "session_gone",
    "sse_headers",
    "stream_conflict",
    "stream_takeover",
    "too_large",
    "wants_priming",
    "wants_prometheus",
]
