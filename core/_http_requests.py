"""Requests to the Streamable HTTP endpoint: which ones to serve, and what a POST asks for.

MCP 2025-11-25, basic/transports, "Streamable HTTP". :func:`check_head`
decides from a request's head, :func:`check_post` from a POST's body; see
:mod:`lockgate.core.http` for the order of the checks.
"""

from __future__ import annotations

from collections.abc import Container, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal
from urllib.parse import urlsplit

from ._errors import ErrorCode
from ._http_answers import (
    _JSON,
    MAX_HEAD_BYTES,
    MAX_HEADER_FIELDS,
    Headers,
    Reject,
    cancelled_response,
    duplicate_request,
    error_body,
    head_too_large,
    json_status,
    missing_session,
    reject,
    session_gone,
)
from ._http_sse import _SSE
from ._eras import HANDSHAKE_VERSIONS, is_modern_version
from ._jsonrpc import Invalid, Message, Notification, Request, Response, decode, is_request_id
from ._stateless import Refused, read_envelope, unsupported_version

__all__ = ["AUTH_PREFIX", "RESOURCE_METADATA_PATH", "MCP_PATH", "DEFAULT_PROTOCOL_VERSION", "HttpPolicy", "RouteKind", "Route", "Post", "too_large", "check_head_size", "check_head", "check_post", "host_allowed", "origin_allowed", "open_to_any_host", "stateless_status", "wants_prometheus"]

MCP_PATH = "/mcp"


#: What a session assumes when a request carries no ``MCP-Protocol-Version``
#: (spec 2025-11-25, basic/transports, "Protocol Version Header").
DEFAULT_PROTOCOL_VERSION = "2025-03-26"


_LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})


_WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::", "[::]"})


_MCP_METHODS = "GET, POST, DELETE, OPTIONS"


# Mcp-Method and Mcp-Name: a browser client of the 2026-07-28 era sends them with every request.
_ALLOW_HEADERS = "Accept, Authorization, Content-Type, Last-Event-ID, Mcp-Method, Mcp-Name, Mcp-Protocol-Version, Mcp-Session-Id"


_EXPOSE_HEADERS = "Mcp-Session-Id, Mcp-Protocol-Version, Retry-After"


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


RouteKind = Literal["post", "get", "delete", "preflight", "health", "ready", "metrics", "resource_metadata", "auth", "rest", "page"]

#: RFC 9728 "OAuth 2.0 Protected Resource Metadata": where a client learns how to get a token for ``/mcp``.
RESOURCE_METADATA_PATH = "/.well-known/oauth-protected-resource"
#: Sign-in, delegation and the management of users and keys (see ``lockgate.shells.http_auth``).
AUTH_PREFIX = "/auth/"
_AUTH_ALLOW = "GET, POST, PATCH, DELETE"
_AUTH_METHODS = _AUTH_ALLOW + ", OPTIONS"


_OPS_PATHS: dict[str, RouteKind] = {"/health": "health", "/ready": "ready", "/metrics": "metrics"}

#: The REST API (``lockgate.shells.rest``): JSON endpoints that take the same credentials as ``/mcp``.
REST_PREFIXES = (MCP_PATH + "/", "/gateway/")
#: Pages and documents for people and tools, open to anyone who may reach the gateway (no secrets in them).
PAGE_PATHS = frozenset({"/", "/status", "/openapi.json", "/docs", "/redoc"})
PAGE_PREFIXES = ("/status/assets/", "/docs/assets/")
_REST_ALLOW = "GET, POST, DELETE"


def rest_kind(path: str) -> RouteKind | None:
    """``"rest"`` or ``"page"`` for a path of the REST API's door, else ``None``."""
    if path.startswith(REST_PREFIXES):
        return "rest"
    if path in PAGE_PATHS or path.startswith(PAGE_PREFIXES):
        return "page"
    return None


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
    #: The request path, for the ``auth`` routes.
    path: str = ""
    session: str | None = None
    protocol_version: str | None = None
    last_event_id: str | None = None
    query: str = ""
    #: A POST of the 2026-07-28 era (its ``MCP-Protocol-Version`` is no
    #: handshake-era version): no session, one client of the core for the
    #: request alone (:func:`check_post`).
    stateless: bool = False


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
    #: For ``notifications/cancelled``: the request it cancels, and what ends
    #: that request's HTTP response (the core answers a cancelled call with
    #: nothing, but a POST must end; :func:`cancelled_response`).
    cancels: Any = None
    cancel_answer: dict[str, Any] | None = None


def too_large(policy: HttpPolicy, cors: Headers = ()) -> Reject:
    """413: the body is over the limit (declared, or found while reading it)."""
    return reject(
        413, ErrorCode.INVALID_REQUEST, f"Payload Too Large: the limit is {policy.max_body_bytes} bytes", cors
    )


def check_head_size(fields: int, size: int) -> Reject | None:
    """431 when a request head has more than :data:`MAX_HEADER_FIELDS` fields or is over :data:`MAX_HEAD_BYTES`.

    ``size`` counts the request line and every field line. The parser only
    limits a head that is still incomplete, so one that arrives whole in a
    read needs this check, before anything works through its fields.
    """
    if fields > MAX_HEADER_FIELDS or size > MAX_HEAD_BYTES:
        return head_too_large()
    return None


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
            body=error_body(ErrorCode.INVALID_REQUEST, "Bad Request: both Content-Length and Transfer-Encoding"),
            close=True,
        )
    # Not urlsplit: it raises on some malformed targets; a request target is a path here.
    path, _, query = target.partition("?")
    path = path.partition("#")[0]
    origin = headers.get("origin")
    origin_ok = origin is None or origin_allowed(origin, policy)
    cors = _cors_headers(origin) if origin is not None and origin_ok else ()
    ops = _OPS_PATHS.get(path)
    if path in (RESOURCE_METADATA_PATH, RESOURCE_METADATA_PATH + MCP_PATH):
        ops = "resource_metadata"
    auth = path.startswith(AUTH_PREFIX)
    rest = rest_kind(path)
    if path != MCP_PATH and ops is None and not auth and rest is None:
        return reject(404, ErrorCode.INVALID_REQUEST, f"Not Found: the MCP endpoint is {MCP_PATH}", cors)
    if not host_allowed(headers.get("host"), policy):
        return reject(421, ErrorCode.INVALID_REQUEST, "Misdirected Request: invalid Host header")
    if not origin_ok:
        return reject(403, ErrorCode.INVALID_REQUEST, "Forbidden: Origin not allowed")
    if method == "OPTIONS":
        allow = (
            _AUTH_METHODS if auth
            else _REST_ALLOW + ", OPTIONS" if rest == "rest"
            else "GET, OPTIONS" if ops is not None or rest == "page"
            else _MCP_METHODS
        )
        return Route(kind="preflight", headers=(*cors, *_preflight_headers(origin, allow)))
    if auth:
        if method not in ("GET", "POST", "PATCH", "DELETE"):
            return reject(405, ErrorCode.INVALID_REQUEST, "Method Not Allowed", cors, allow=_AUTH_ALLOW)
        return Route(kind="auth", headers=cors, path=path, query=query)
    if rest == "rest":
        # Every method: the REST API answers a wrong one in its own error shape.
        return Route(kind=rest, headers=cors, path=path, query=query)
    if rest == "page":
        if method != "GET":
            return reject(405, ErrorCode.INVALID_REQUEST, "Method Not Allowed", cors, allow="GET")
        return Route(kind=rest, headers=cors, path=path, query=query)
    if ops is not None:
        if method != "GET":
            return reject(405, ErrorCode.INVALID_REQUEST, "Method Not Allowed", cors, allow="GET")
        return Route(kind=ops, headers=cors, query=query)
    if method not in ("GET", "POST", "DELETE"):
        return reject(405, ErrorCode.INVALID_REQUEST, "Method Not Allowed", cors, allow="GET, POST, DELETE")
    version = headers.get("mcp-protocol-version")
    # Any version the handshake era does not know is the stateless era's to
    # serve or refuse (-32022 from check_post), as a dual-era server does.
    stateless = version is not None and version not in HANDSHAKE_VERSIONS
    if version is not None and stateless and method != "POST":
        return reject(
            405, ErrorCode.INVALID_REQUEST, f"Method Not Allowed: MCP {version[:64]} has no {method} stream or session",
            cors, allow="POST",
        )
    accepts_json, accepts_sse = _accepts(headers.get("accept", ""))
    if method == "POST":
        if not (accepts_json and accepts_sse):
            return reject(
                406, ErrorCode.INVALID_REQUEST,
                "Not Acceptable: Client must accept both application/json and text/event-stream", cors,
            )
        if _media_type(headers.get("content-type", "")) != _JSON:
            return reject(415, ErrorCode.INVALID_REQUEST, "Unsupported Media Type: Content-Type must be application/json", cors)
        length = headers.get("content-length")
        if length is not None and length.strip().isdigit() and int(length) > policy.max_body_bytes:
            return too_large(policy, cors)
    elif method == "GET" and not accepts_sse:
        return reject(406, ErrorCode.INVALID_REQUEST, "Not Acceptable: Client must accept text/event-stream", cors)
    if stateless:
        # No session: an Mcp-Session-Id header is ignored, as the spec says.
        return Route(kind="post", headers=cors, protocol_version=version, stateless=True)
    session = headers.get("mcp-session-id")
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


#: Requests during which a server may ask the client something (aggregate mode relays it on their stream).
_RELAYING = frozenset({"tools/call", "prompts/get", "resources/read", "completion/complete"})


def check_post(
    body: bytes, route: Route, in_flight: Container[Any] = (), *, relays: bool = False, headers: Mapping[str, str] | None = None
) -> Reject | Post:
    """Decide what to do with the body of a POST that :func:`check_head` routed.

    Malformed JSON gets 400 with -32700; anything else that is not one
    JSON-RPC message (a batch included, which MCP dropped in 2025-06-18) gets
    400 with the error the core would answer. Within a session, a request the
    strict JSON boundary refused but whose id is sound goes to the core like
    any request, so it is answered (and a refused call audited) exactly as
    over stdio; a refused notification or response is accepted and ignored.
    A request whose id is ``in_flight`` in the session (its POST is still
    waiting for the answer) gets 409: its answer could not be told from the
    first one's. With ``relays`` (aggregate mode: a server's sampling,
    elicitation and roots requests are relayed to the client), a request
    that may cause one is answered as an SSE stream, the only way such a
    request can reach the client while its call is open.

    A stateless POST (``route.stateless``) goes through :func:`_check_stateless`
    instead, with the request's ``headers`` (lower-case names).
    """
    msg = decode(body)
    if route.stateless:
        return _check_stateless(msg, route, headers or {})
    match msg:
        case Invalid() if route.session is not None and msg.salvaged is not None and "method" in msg.salvaged:
            if msg.id is not None and msg.id in in_flight:
                return duplicate_request(msg.id, route.headers)
            if msg.id is not None:
                return Post(action="json", request_id=msg.id)
            if not msg.answer_owed:
                return Post(action="accept")
            return reject(400, msg.code, msg.message, route.headers, request_id=msg.id, path=msg.path)
        case Invalid():
            return reject(400, msg.code, msg.message, route.headers, request_id=msg.id, path=msg.path)
        case Request() if msg.method == "initialize" and route.session is None:
            return Post(action="initialize", request_id=msg.id)
        case Request():
            if route.session is None:
                return missing_session(route.headers, msg.id)
            if msg.id in in_flight:
                return duplicate_request(msg.id, route.headers)
            meta = msg.params.get("_meta")
            # Notifications about a request (progress) can only travel on its
            # own SSE stream; without a progress token none will come.
            streamed = (isinstance(meta, dict) and meta.get("progressToken") is not None) or (relays and msg.method in _RELAYING)
            return Post(action="sse" if streamed else "json", request_id=msg.id)
        case Notification() | Response():
            if route.session is None:
                return missing_session(route.headers)
            if isinstance(msg, Notification) and msg.method == "notifications/cancelled":
                cancelled = msg.params.get("requestId")
                if is_request_id(cancelled):
                    return Post(action="accept", cancels=cancelled, cancel_answer=cancelled_response(cancelled))
            return Post(action="accept")


def _check_stateless(msg: Message, route: Route, headers: Mapping[str, str]) -> Reject | Post:
    """Decide about a 2026-07-28 POST (MCP 2026-07-28, basic/transports): one request, or a notification.

    A request must pass the envelope ladder (:func:`~._stateless.read_envelope`,
    the routing headers included): 400 with its error otherwise. A
    notification is acknowledged (202) and dropped: with no session there is
    nothing for it to act on (a client cancels by closing the response
    stream), and acting on a ``notifications/cancelled`` by request id would
    let one caller cancel another's work. A response has no request to answer.
    """
    match msg:
        case Invalid():
            return reject(400, msg.code, msg.message, route.headers, request_id=msg.id, path=msg.path)
        case Response():
            return reject(400, ErrorCode.INVALID_REQUEST, "Bad Request: a 2026-07-28 client sends no responses", route.headers, request_id=msg.id)
        case Notification():
            if not is_modern_version(route.protocol_version):
                return _refused(unsupported_version(route.protocol_version or ""), None, route.headers)
            return Post(action="accept")
        case Request():
            envelope = read_envelope(msg, headers)
            if isinstance(envelope, Refused):
                return _refused(envelope, msg.id, route.headers)
            meta = msg.params.get("_meta")
            # Notifications about the request (progress) can only travel on its own SSE
            # stream, and a listen request's answer is nothing but notifications.
            streamed = (isinstance(meta, dict) and meta.get("progressToken") is not None) or msg.method == "subscriptions/listen"
            return Post(action="sse" if streamed else "json", request_id=msg.id)


def _refused(refused: Refused, request_id: Any, cors: Headers) -> Reject:
    return reject(refused.http_status, refused.code, refused.message, cors, request_id=request_id, context=refused.data)


#: JSON-RPC errors the stateless era answers with an HTTP status of their own (2026-07-28, basic/transports).
_STATELESS_STATUS = {
    int(ErrorCode.PARSE_ERROR): 400,
    int(ErrorCode.INVALID_REQUEST): 400,
    int(ErrorCode.INVALID_PARAMS): 400,
    int(ErrorCode.HEADER_MISMATCH): 400,
    int(ErrorCode.MISSING_CLIENT_CAPABILITY): 400,
    int(ErrorCode.UNSUPPORTED_PROTOCOL_VERSION): 400,
    int(ErrorCode.METHOD_NOT_FOUND): 404,
}


def stateless_status(message: Mapping[str, Any]) -> tuple[int, Headers]:
    """The status and extra headers of a stateless POST answered with ``message`` as JSON.

    The protocol's own errors carry their status (400; 404 for an unknown
    method); everything else is as for a session's POST (:func:`json_status`).
    """
    error = message.get("error")
    code = error.get("code") if isinstance(error, dict) else None
    status = _STATELESS_STATUS.get(code) if isinstance(code, int) else None
    return (status, ()) if status is not None else json_status(message)


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
        return missing_session(cors)
    if not known:
        return session_gone(cors)
    return None


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
