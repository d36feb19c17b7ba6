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
   that is answered as JSON or as an SSE stream.

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

The protocol version is a property of each request and session, never of the
shell: the handshake era sends ``MCP-Protocol-Version`` after ``initialize``
(absent means 2025-03-26); the stateless 2026-07-28 era plugs in here later.

:class:`EventBuffer` numbers the SSE events of one session and keeps the last
few so a client that reconnects with ``Last-Event-ID`` gets what it missed,
on the stream it lost and no other (spec: "Resumability and Redelivery").
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal
from urllib.parse import urlsplit

from ._config import DEFAULT_HTTP_HEAD_TIMEOUT, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_CONNECTIONS_PER_ADDRESS
from ._errors import ErrorCode, LocalProtocolError
from ._jsonrpc import Invalid, Notification, Request, Response, decode, error, is_request_id
from ._session import HANDSHAKE_VERSIONS

__all__ = [
    "DEFAULT_BODY_RATE",
    "DEFAULT_IDLE_TIMEOUT",
    "DEFAULT_PROTOCOL_VERSION",
    "ConnectionLimits",
    "EventBuffer",
    "Evict",
    "HttpPolicy",
    "MAX_HEAD_BYTES",
    "MAX_HEADER_FIELDS",
    "MCP_PATH",
    "Occupancy",
    "Post",
    "Reject",
    "Replay",
    "Route",
    "StreamKey",
    "GET_STREAM",
    "admit",
    "bad_http",
    "body_timeout",
    "busy",
    "cancelled_response",
    "check_head",
    "check_head_size",
    "check_post",
    "ends_request",
    "format_event",
    "head_too_large",
    "health_body",
    "initialize_succeeded",
    "internal_error",
    "json_body",
    "duplicate_request",
    "host_allowed",
    "origin_allowed",
    "open_to_any_host",
    "ops_status",
    "priming_event",
    "session_gone",
    "sse_headers",
    "stream_conflict",
    "stream_takeover",
    "too_large",
    "wants_priming",
    "wants_prometheus",
]

Headers = tuple[tuple[str, str], ...]

MCP_PATH = "/mcp"

#: What a session assumes when a request carries no ``MCP-Protocol-Version``
#: (spec 2025-11-25, basic/transports, "Protocol Version Header").
DEFAULT_PROTOCOL_VERSION = "2025-03-26"

#: The first revision whose clients expect a priming event and ``retry:`` (SEP-1699).
PRIMING_SINCE = "2025-11-25"

#: Milliseconds a client should wait before reconnecting a lost SSE stream.
RETRY_MS = 1000

_JSON = "application/json"
_SSE = "text/event-stream"
_LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})
_WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::", "[::]"})
_MCP_METHODS = "GET, POST, DELETE, OPTIONS"

#: Most header fields a request head may carry; MCP clients send about ten.
#: Past it, or past MAX_HEAD_BYTES, the answer is 431 (RFC 6585, section 5)
#: and nothing is done with the fields, so their cost stays bounded.
MAX_HEADER_FIELDS = 100
#: Largest request head, request line and header fields together.
MAX_HEAD_BYTES = 64 * 1024

_ALLOW_HEADERS = "Accept, Authorization, Content-Type, Last-Event-ID, Mcp-Protocol-Version, Mcp-Session-Id"
_EXPOSE_HEADERS = "Mcp-Session-Id, Mcp-Protocol-Version"


@dataclass(frozen=True, slots=True, kw_only=True)
class HttpPolicy:
    """Where the endpoint listens and whom it serves; built once from settings.

    ``host`` and ``port`` are the address actually bound (port 0 resolved).
    ``allowed_origins`` are exact ``Origin`` values (``scheme://host[:port]``);
    loopback origins are allowed too when ``host`` is a loopback address.
    ``allowed_hosts`` are extra ``Host`` header values (``name`` or
    ``name:port``) besides the bound address.
    """

    host: str
    port: int
    allowed_origins: frozenset[str] = frozenset()
    allowed_hosts: frozenset[str] = frozenset()
    max_body_bytes: int = 16 * 1024 * 1024

    @property
    def loopback(self) -> bool:
        return _is_loopback(self.host)


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


RouteKind = Literal["post", "get", "delete", "preflight", "health", "ready", "metrics"]
_OPS_PATHS: dict[str, RouteKind] = {"/health": "health", "/ready": "ready", "/metrics": "metrics"}


@dataclass(frozen=True, slots=True, kw_only=True)
class Route:
    """Serve this request.

    ``headers`` go on every response to it (CORS); ``session`` is the
    ``Mcp-Session-Id`` it names, ``protocol_version`` the one it speaks
    (``None`` before a session exists), ``last_event_id`` the resumption
    cursor of a GET, ``query`` the raw query string.
    """

    kind: RouteKind
    headers: Headers = ()
    session: str | None = None
    protocol_version: str | None = None
    last_event_id: str | None = None
    query: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Post:
    """What to do with a POSTed message that passed every check.

    ``action``: ``"initialize"`` (mint a session, feed the message, answer as
    JSON), ``"accept"`` (feed it and answer 202; notifications and
    responses), ``"json"`` or ``"sse"`` (feed the request and answer with its
    response as JSON, or as an SSE stream that may carry notifications about
    it first). ``request_id`` is the id of the request, if it is one.
    """

    action: Literal["initialize", "accept", "json", "sse"]
    request_id: Any = None
    #: For ``notifications/cancelled``: the request it cancels. Its HTTP
    #: response must still end, with :func:`cancelled_response`.
    cancels: Any = None


def check_head(
    method: str,
    target: str,
    headers: Mapping[str, str],
    policy: HttpPolicy,
    *,
    session_known: bool,
) -> Reject | Route:
    """Decide what to do with a request from its head alone.

    Args:
        method: the HTTP method, upper case.
        target: the request target (path and query).
        headers: header values by lower-case name; repeated headers joined by
            ``", "``. :func:`check_head_size` has passed them.
        policy: the bound address and allowed origins and hosts.
        session_known: whether the ``Mcp-Session-Id`` header names a live session.
    """
    if "transfer-encoding" in headers and "content-length" in headers:
        # RFC 9112, section 6.1 (https://www.rfc-editor.org/rfc/rfc9112#section-6.1):
        # a proxy in front may frame the body by Content-Length while we frame
        # it by the chunks, so the rest of the bytes could be a request the
        # proxy never saw (request smuggling). "Regardless, the server MUST
        # close the connection after responding to such a request."
        return Reject(
            status=400,
            headers=(("content-type", _JSON), ("connection", "close")),
            body=_error_body(ErrorCode.INVALID_REQUEST, "Bad Request: both Content-Length and Transfer-Encoding"),
            close=True,
        )
    # Not urlsplit: it raises on some malformed targets; a request target is a path here.
    path, _, query = target.partition("?")
    path = path.partition("#")[0]
    origin = headers.get("origin")
    origin_ok = origin is None or origin_allowed(origin, policy)
    cors = _cors_headers(origin) if origin is not None and origin_ok else ()
    ops = _OPS_PATHS.get(path)
    if path != MCP_PATH and ops is None:
        return _reject(404, ErrorCode.INVALID_REQUEST, f"Not Found: the MCP endpoint is {MCP_PATH}", cors)
    if not host_allowed(headers.get("host"), policy):
        return _reject(421, ErrorCode.INVALID_REQUEST, "Misdirected Request: invalid Host header")
    if not origin_ok:
        return _reject(403, ErrorCode.INVALID_REQUEST, "Forbidden: Origin not allowed")
    if method == "OPTIONS":
        allow = _MCP_METHODS if ops is None else "GET, OPTIONS"
        return Route(kind="preflight", headers=(*cors, *_preflight_headers(origin, allow)))
    if ops is not None:
        if method != "GET":
            return _reject(405, ErrorCode.INVALID_REQUEST, "Method Not Allowed", cors, allow="GET")
        return Route(kind=ops, headers=cors, query=query)
    if method not in ("GET", "POST", "DELETE"):
        return _reject(405, ErrorCode.INVALID_REQUEST, "Method Not Allowed", cors, allow="GET, POST, DELETE")
    accepts_json, accepts_sse = _accepts(headers.get("accept", ""))
    if method == "POST":
        if not (accepts_json and accepts_sse):
            return _reject(
                406, ErrorCode.INVALID_REQUEST,
                "Not Acceptable: Client must accept both application/json and text/event-stream", cors,
            )
        if _media_type(headers.get("content-type", "")) != _JSON:
            return _reject(415, ErrorCode.INVALID_REQUEST, "Unsupported Media Type: Content-Type must be application/json", cors)
        length = headers.get("content-length")
        if length is not None and length.strip().isdigit() and int(length) > policy.max_body_bytes:
            return too_large(policy, cors)
    elif method == "GET" and not accepts_sse:
        return _reject(406, ErrorCode.INVALID_REQUEST, "Not Acceptable: Client must accept text/event-stream", cors)
    session = headers.get("mcp-session-id")
    version = headers.get("mcp-protocol-version")
    if version is not None and version not in HANDSHAKE_VERSIONS:
        supported = ", ".join(HANDSHAKE_VERSIONS)
        return _reject(
            400, ErrorCode.INVALID_REQUEST,
            f"Bad Request: Unsupported protocol version: {version[:64]} (supported: {supported})", cors,
        )
    if method != "POST":
        # A POST may be an initialize, which needs no session: check_post decides.
        problem = _session_problem(session, session_known, cors)
        if problem is not None:
            return problem
    if session is not None and not session_known and method == "POST":
        return session_gone(cors)
    return Route(
        kind="post" if method == "POST" else "get" if method == "GET" else "delete",
        headers=cors,
        session=session,
        protocol_version=version or (DEFAULT_PROTOCOL_VERSION if session is not None else None),
        last_event_id=headers.get("last-event-id") if method == "GET" else None,
    )


def check_post(body: bytes, route: Route) -> Reject | Post:
    """Decide what to do with the body of a POST that :func:`check_head` routed.

    Malformed JSON gets 400 with -32700; anything else that is not one
    JSON-RPC message (a batch included, which MCP dropped in 2025-06-18) gets
    400 with the error the core would answer. Within a session, a request the
    strict JSON boundary refused but whose id is sound goes to the core like
    any request, so it is answered (and a refused call audited) exactly as
    over stdio; a refused notification or response is accepted and ignored.
    """
    msg = decode(body)
    match msg:
        case Invalid() if route.session is not None and msg.salvaged is not None and "method" in msg.salvaged:
            if msg.id is not None:
                return Post(action="json", request_id=msg.id)
            if not msg.answer_owed:
                return Post(action="accept")
            return _reject(400, msg.code, msg.message, route.headers, request_id=msg.id, path=msg.path)
        case Invalid():
            return _reject(400, msg.code, msg.message, route.headers, request_id=msg.id, path=msg.path)
        case Request() if msg.method == "initialize" and route.session is None:
            return Post(action="initialize", request_id=msg.id)
        case Request():
            if route.session is None:
                return _missing_session(route.headers, msg.id)
            meta = msg.params.get("_meta")
            # Notifications about a request (progress) can only travel on its
            # own SSE stream; without a progress token none will come.
            streamed = isinstance(meta, dict) and meta.get("progressToken") is not None
            return Post(action="sse" if streamed else "json", request_id=msg.id)
        case Notification() | Response():
            if route.session is None:
                return _missing_session(route.headers)
            if isinstance(msg, Notification) and msg.method == "notifications/cancelled":
                cancelled = msg.params.get("requestId")
                if is_request_id(cancelled):
                    return Post(action="accept", cancels=cancelled)
            return Post(action="accept")


def cancelled_response(request_id: Any) -> dict[str, Any]:
    """What ends the HTTP response of a request the client cancelled (the core answers nothing)."""
    return error(request_id, ErrorCode.CANCELLED, "Request cancelled by the client", {"code": ErrorCode.CANCELLED.name})


def check_head_size(fields: int, size: int) -> Reject | None:
    """431 when a request head has more than :data:`MAX_HEADER_FIELDS` fields or is over :data:`MAX_HEAD_BYTES`.

    ``size`` counts the request line and every field line. The parser only
    limits a head that is still incomplete, so one that arrives whole in a
    read needs this check, before anything works through its fields.
    """
    if fields > MAX_HEADER_FIELDS or size > MAX_HEAD_BYTES:
        return head_too_large()
    return None


def head_too_large() -> Reject:
    """431: too many header fields, or too many bytes of them; the connection closes."""
    return Reject(
        status=431,
        headers=(("content-type", _JSON), ("connection", "close")),
        body=_error_body(
            ErrorCode.INVALID_REQUEST,
            f"Request Header Fields Too Large: at most {MAX_HEADER_FIELDS} fields and {MAX_HEAD_BYTES} bytes",
        ),
        close=True,
    )


def too_large(policy: HttpPolicy, cors: Headers = ()) -> Reject:
    """413: the body is over the limit (declared, or found while reading it)."""
    return _reject(
        413, ErrorCode.INVALID_REQUEST, f"Payload Too Large: the limit is {policy.max_body_bytes} bytes", cors
    )


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
        body=_error_body(ErrorCode.INVALID_REQUEST, f"Bad HTTP request: {detail[:200]}"),
        close=True,
    )


def internal_error() -> Reject:
    """500: serving the request failed inside the gateway (a bug, logged by the shell); the connection closes."""
    return Reject(
        status=500,
        headers=(("content-type", _JSON), ("connection", "close")),
        body=_error_body(ErrorCode.INTERNAL_ERROR, "Internal Server Error"),
        close=True,
    )


def session_gone(cors: Headers = ()) -> Reject:
    """404: the session is unknown, expired or deleted; the client must initialize again."""
    return _reject(404, ErrorCode.INVALID_REQUEST, "Not Found: Invalid or expired session ID", cors)


def busy() -> Reject:
    """503: the connection limit is reached and every connection is busy; the client should come back later."""
    return Reject(
        status=503,
        headers=(("content-type", _JSON), ("retry-after", "1"), ("connection", "close")),
        body=_error_body(ErrorCode.INTERNAL_ERROR, "Service Unavailable: too many connections, retry later"),
        close=True,
    )


def stream_conflict(cors: Headers = ()) -> Reject:
    """409: the session already has its GET stream open."""
    return _reject(409, ErrorCode.INVALID_REQUEST, "Conflict: Only one SSE stream is allowed per session", cors)


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
    return _reject(
        409, ErrorCode.INVALID_REQUEST, f"Conflict: request id {request_id!r} is already in flight", cors,
        request_id=request_id,
    )


def ends_request(message: Mapping[str, Any]) -> bool:
    """Whether ``message`` is a response (result or error), which ends its request's stream."""
    return "method" not in message and ("result" in message or "error" in message)


def initialize_succeeded(message: Mapping[str, Any]) -> bool:
    """Whether the core's answer to ``initialize`` opened the session (else the shell closes it)."""
    return isinstance(message.get("result"), dict)


def health_body(version: str, uptime_seconds: float) -> bytes:
    """The ``/health`` answer: the process is up and serving."""
    return json_body(
        {"status": "healthy", "service": "lockgate", "version": version, "uptime_seconds": round(uptime_seconds, 3)}
    )


def ops_status(body: Mapping[str, Any]) -> int:
    """The status code for ``/ready``: 200 when ``body["status"]`` says ready, else 503."""
    return 200 if body.get("status") == "ready" else 503


def json_body(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def sse_headers(session: str | None, cors: Headers = ()) -> Headers:
    """Headers of an SSE response; ``X-Accel-Buffering: no`` keeps proxies from holding events back."""
    headers: list[tuple[str, str]] = [
        ("content-type", _SSE),
        ("cache-control", "no-cache, no-transform"),
        ("x-accel-buffering", "no"),
    ]
    if session is not None:
        headers.append(("mcp-session-id", session))
    return (*headers, *cors)


def wants_priming(protocol_version: str | None) -> bool:
    """Whether a stream starts with a priming event and ``retry:`` (2025-11-25 and later).

    Earlier clients may choke on an event with empty data, so they get none.
    """
    return protocol_version is not None and protocol_version >= PRIMING_SINCE


def format_event(event_id: int | None, data: bytes) -> bytes:
    """One SSE ``message`` event; ``data`` is one JSON message (it holds no newline)."""
    head = b"event: message\n" if event_id is None else b"id: %d\nevent: message\n" % event_id
    return head + b"data: " + data + b"\n\n"


def priming_event(event_id: int) -> bytes:
    """The first event of a stream: an id to resume from, empty data, and ``retry:``."""
    return b"id: %d\nretry: %d\nevent: message\ndata: \n\n" % (event_id, RETRY_MS)


# -- connections -----------------------------------------------------------------
#
# Theory of operation. A client can hold a connection without sending a
# request (idle keep-alive), by sending one slowly (slowloris: a byte every
# few seconds), or by asking for something that takes long (a tool call, an
# SSE stream). The shell tracks each open connection in one of three states:
#
#   idle     waiting for the next request on a keep-alive connection;
#   reading  a request under way: a new connection from its accept, a head
#            from its first byte, then the body;
#   busy     the request is read and being answered.
#
# Reading is bounded in time whatever the pace: the head within
# head_timeout of its first byte, the body within body_timeout() of the end
# of the head, and no read may stall idle_timeout. Room is bounded in
# number: when a connection arrives at a limit, admit() names whom to close:
# first an idle connection, then the request that has been reading longest,
# so clients that trickle cannot lock out one that sends its request at
# once. Busy connections are never closed to make room; with only busy ones
# left, the newcomer gets 503. The limit per address keeps one client from
# taking every slot: past it, the newcomer can only displace its own.


#: What ``GATEWAY_*`` does not set: seconds a connection may wait between
#: two requests, or between two reads of one.
DEFAULT_IDLE_TIMEOUT = 30.0
#: The slowest a body may arrive, in bytes per second: a client slower than
#: this is treated as a slowloris (64 KiB/s is about 0.5 Mbit/s).
DEFAULT_BODY_RATE = 64 * 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionLimits:
    """How many connections the endpoint holds, and how long a request may take to arrive.

    ``max_connections`` open at once; ``max_per_address`` from one peer
    address (0: no limit; behind a reverse proxy every connection comes from
    the proxy). ``idle_timeout``: seconds a keep-alive connection may wait
    for its next request, and a request for its next bytes.
    ``head_timeout``: seconds a request head may take from its first byte.
    ``body_rate``: the slowest pace a body may arrive at (see
    :func:`body_timeout`).

    Raises:
        LocalProtocolError: a limit is not positive (``max_per_address`` may be 0).
    """

    max_connections: int = DEFAULT_MAX_CONNECTIONS
    max_per_address: int = DEFAULT_MAX_CONNECTIONS_PER_ADDRESS
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    head_timeout: float = DEFAULT_HTTP_HEAD_TIMEOUT
    body_rate: int = DEFAULT_BODY_RATE

    def __post_init__(self) -> None:
        if self.max_connections < 1 or self.max_per_address < 0 or self.body_rate < 1:
            raise LocalProtocolError(f"connection limits out of range: {self!r}")
        if not (self.idle_timeout > 0 and self.head_timeout > 0):
            raise LocalProtocolError(f"connection timeouts must be positive: {self!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Occupancy:
    """The connections already open when a new one arrives (not counting it), as the shell counts them.

    ``open``, ``idle`` and ``reading`` over every peer (the rest are busy);
    ``address_*`` the same for the newcomer's peer address alone.
    """

    open: int
    idle: int
    reading: int
    address_open: int
    address_idle: int
    address_reading: int

    def __post_init__(self) -> None:
        if self.idle + self.reading > self.open or self.address_idle + self.address_reading > self.address_open:
            raise LocalProtocolError(f"more idle and reading connections than open ones: {self!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Evict:
    """Close one connection to make room, then serve the newcomer.

    The one to close is the oldest in ``state``: the idle connection that has
    waited longest, or the request that began reading longest ago (a new
    connection begins at its accept). With ``own_address``, only the
    newcomer's own address is searched.
    """

    state: Literal["idle", "reading"]
    own_address: bool


def admit(occupancy: Occupancy, limits: ConnectionLimits, *, closing: bool) -> Literal["serve", "refuse"] | Evict:
    """What to do with a new connection; see "connections" above.

    An address at its own limit can only make room among its own
    connections (that frees a place under the global limit too); otherwise,
    at the global limit, any address's connection is closed. Idle ones go
    before reading ones; with neither, the newcomer gets 503 (:func:`busy`),
    as it does while the endpoint shuts down.
    """
    if closing:
        return "refuse"
    if limits.max_per_address and occupancy.address_open >= limits.max_per_address:
        return _make_room(occupancy.address_idle, occupancy.address_reading, own_address=True)
    if occupancy.open >= limits.max_connections:
        return _make_room(occupancy.idle, occupancy.reading, own_address=False)
    return "serve"


def _make_room(idle: int, reading: int, *, own_address: bool) -> Literal["refuse"] | Evict:
    if idle:
        return Evict(state="idle", own_address=own_address)
    if reading:
        return Evict(state="reading", own_address=own_address)
    return "refuse"


def body_timeout(content_length: str | None, policy: HttpPolicy, limits: ConnectionLimits) -> float:
    """Seconds a request body may take to arrive, counted from the end of its head.

    ``limits.head_timeout`` plus the time to read the declared
    ``Content-Length`` (at most the largest body accepted) at
    ``limits.body_rate``. A chunked body declares no size, so it gets the
    time of the largest body. With the defaults: 10 s for an empty body,
    26 s for 1 MiB, 266 s for a chunked body (16 MiB).
    """
    declared = content_length.strip() if content_length is not None else ""
    size = int(declared) if declared.isascii() and declared.isdigit() else policy.max_body_bytes
    return limits.head_timeout + min(size, policy.max_body_bytes) / limits.body_rate


# -- resumption -----------------------------------------------------------------

StreamKey = tuple[str, Any]
"""Which stream of a session an event went out on: ``("get", None)`` or ``("post", request_id)``."""

GET_STREAM: StreamKey = ("get", None)


@dataclass(frozen=True, slots=True, kw_only=True)
class Replay:
    """What a resuming GET gets: the stream it continues and the events it missed, as SSE bytes.

    ``finished`` says the stream's request was answered (it is in ``events``),
    so nothing more will come and the response can end after the replay.
    """

    stream: StreamKey
    events: tuple[bytes, ...]
    finished: bool


@dataclass(slots=True)
class _Stored:
    id: int
    stream: StreamKey
    frame: bytes
    last: bool


@dataclass(slots=True)
class EventBuffer:
    """The numbered SSE events of one session, the last ``limit`` of them kept.

    Event ids increase by one across all streams of the session, so an id
    names both a position and a stream; lookup is by arithmetic, not search.
    Memory is bounded: the oldest events fall out, and a client resuming from
    one of those gets a fresh stream with nothing replayed.
    """

    limit: int = 256
    _events: deque[_Stored] = field(default_factory=deque)
    _next: int = 1

    def add(self, stream: StreamKey, data: bytes | None, *, last: bool = False) -> bytes:
        """Number one message (``None``: a priming event) sent on ``stream``; return its SSE bytes.

        ``last`` marks the response that ends a POST stream.
        """
        event_id = self._next
        self._next += 1
        frame = priming_event(event_id) if data is None else format_event(event_id, data)
        self._events.append(_Stored(event_id, stream, frame if data is not None else b"", last))
        if len(self._events) > self.limit:
            self._events.popleft()
        return frame

    def replay(self, last_event_id: str) -> Replay | None:
        """The events after ``last_event_id`` on its stream, or ``None`` if that id is not held."""
        text = last_event_id.strip()
        if not (text.isascii() and text.isdigit()) or not self._events:
            return None
        first = self._events[0].id
        index = int(text) - first
        if index < 0 or index >= len(self._events):
            return None
        stream = self._events[index].stream
        frames: list[bytes] = []
        finished = False
        for stored in list(self._events)[index + 1 :]:
            if stored.stream == stream:
                if stored.frame:
                    frames.append(stored.frame)
                finished = finished or stored.last
        return Replay(stream=stream, events=tuple(frames), finished=finished)

    def __len__(self) -> int:
        return len(self._events)


# -- header checks ----------------------------------------------------------------


#: Distinct header values remembered by the parsers below: every request of a
#: client repeats the same ``Host`` and ``Accept``, so each is parsed once.
_PARSE_CACHE = 256


@lru_cache(maxsize=_PARSE_CACHE)
def host_allowed(host: str | None, policy: HttpPolicy) -> bool:
    """Whether ``Host`` names this endpoint: the bound address, loopback when bound there, or an allowed host.

    Bound to every interface (``0.0.0.0``) with no allowed hosts configured,
    any host is accepted: the names the machine answers to are unknown here,
    and ``Origin`` still guards browsers.
    """
    if not host:
        return False
    host = host.strip().lower()
    if host in policy.allowed_hosts:
        return True
    name, port = _split_host(host)
    if port is not None and port != policy.port:
        return name in policy.allowed_hosts
    if name in policy.allowed_hosts or name == policy.host.lower().strip("[]") or f"[{name}]" == policy.host:
        return True
    if policy.loopback:
        return name in _LOOPBACK_HOSTS
    return open_to_any_host(policy)


def origin_allowed(origin: str, policy: HttpPolicy) -> bool:
    """Whether a browser page from ``origin`` may call the endpoint (spec: MUST answer 403 otherwise)."""
    origin = origin.strip()
    if origin in policy.allowed_origins or "*" in policy.allowed_origins:
        return True
    if not policy.loopback:
        return False
    try:
        parts = urlsplit(origin)
        hostname = parts.hostname
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and hostname is not None and hostname in _LOOPBACK_HOSTS


def _is_loopback(host: str) -> bool:
    host = host.strip("[]").lower()
    return host in ("localhost", "::1") or host.startswith("127.")


def _split_host(host: str) -> tuple[str, int | None]:
    """``name:port`` into its parts; IPv6 literals keep their brackets off."""
    if host.startswith("["):
        name, _, rest = host[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    else:
        name, _, port_text = host.partition(":")
    port = int(port_text) if port_text.isascii() and port_text.isdigit() else None
    return name, port


@lru_cache(maxsize=_PARSE_CACHE)
def _accepts(accept: str) -> tuple[bool, bool]:
    """(JSON, SSE) acceptable per ``Accept``, wildcards included (RFC 9110, section 12.5.1)."""
    types = {_media_type(part) for part in accept.split(",")}
    anything = "*/*" in types
    return (
        anything or _JSON in types or "application/*" in types,
        anything or _SSE in types or "text/*" in types,
    )


@lru_cache(maxsize=_PARSE_CACHE)
def _media_type(value: str) -> str:
    return value.split(";", 1)[0].strip().lower()


def _cors_headers(origin: str) -> Headers:
    return (
        ("access-control-allow-origin", origin),
        ("access-control-expose-headers", _EXPOSE_HEADERS),
        ("vary", "Origin"),
    )


def _preflight_headers(origin: str | None, allow: str) -> Headers:
    if origin is None:
        return (("allow", allow),)
    return (
        ("access-control-allow-methods", allow),
        ("access-control-allow-headers", _ALLOW_HEADERS),
        ("access-control-max-age", "600"),
    )


def _session_problem(session: str | None, known: bool, cors: Headers) -> Reject | None:
    if session is None:
        return _missing_session(cors)
    if not known:
        return session_gone(cors)
    return None


def _missing_session(cors: Headers, request_id: Any = None) -> Reject:
    return _reject(400, ErrorCode.INVALID_REQUEST, "Bad Request: Missing session ID", cors, request_id=request_id)


def _error_body(code: ErrorCode, message: str, request_id: Any = None, path: str | None = None) -> bytes:
    """A JSON-RPC error with ``data.code`` (and ``data.path``), as every error the gateway makes has."""
    data: dict[str, Any] = {"code": code.name}
    if path is not None:
        data["path"] = path
    return json_body({"jsonrpc": "2.0", "id": request_id, "error": {"code": int(code), "message": message, "data": data}})


def _reject(
    status: int,
    code: ErrorCode,
    message: str,
    cors: Headers = (),
    *,
    allow: str | None = None,
    request_id: Any = None,
    path: str | None = None,
) -> Reject:
    headers: list[tuple[str, str]] = [("content-type", _JSON)]
    if allow is not None:
        headers.append(("allow", allow))
    return Reject(status=status, headers=(*headers, *cors), body=_error_body(code, message, request_id, path))


def open_to_any_host(policy: HttpPolicy) -> bool:
    """Bound to every interface with no allowed hosts listed: no ``Host`` is refused."""
    return policy.host in _WILDCARD_HOSTS and not policy.allowed_hosts


def wants_prometheus(accept: str | None, query: str) -> bool:
    """Whether a ``/metrics`` request asks for the Prometheus text format.

    ``?format=prometheus`` (or ``format=text``) wins; otherwise an ``Accept``
    header that names ``text/plain`` or the OpenMetrics type before any JSON.
    """
    for part in query.split("&"):
        name, _, value = part.partition("=")
        if name == "format":
            return value.lower() in ("prometheus", "text")
    if not accept:
        return False
    for item in accept.split(","):
        media = item.split(";", 1)[0].strip().lower()
        if media in ("application/json", "*/*"):
            return False
        if media in ("text/plain", "application/openmetrics-text"):
            return True
    return False
