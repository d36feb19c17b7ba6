"""core/http.py: every status code and header decision of the Streamable HTTP endpoint, synchronously."""

from __future__ import annotations

import json
from typing import Any

import pytest

from lockgate.core._config import ConfigError, settings_from_env
from lockgate.core._errors import LocalProtocolError
from lockgate.core.http import (
    GET_STREAM,
    MAX_HEAD_BYTES,
    MAX_HEADER_FIELDS,
    ConnectionLimits,
    EventBuffer,
    Evict,
    HttpPolicy,
    Occupancy,
    Post,
    Reject,
    Route,
    stateless_status,
    admit,
    bad_http,
    body_timeout,
    busy,
    cancelled_response,
    check_head,
    check_head_size,
    check_post,
    duplicate_request,
    ends_request,
    format_event,
    health_body,
    host_allowed,
    Opened,
    opened_session,
    internal_error,
    ops_status,
    origin_allowed,
    priming_event,
    sse_headers,
    stream_conflict,
    stream_takeover,
    wants_priming,
)

LOCAL = HttpPolicy(host="127.0.0.1", port=8000, max_body_bytes=1000)
PUBLIC = HttpPolicy(host="0.0.0.0", port=8000, allowed_origins=frozenset({"https://app.example"}))
NAMED = HttpPolicy(host="10.0.0.5", port=9000, allowed_hosts=frozenset({"gw.example", "gw.example:443"}))

BOTH = "application/json, text/event-stream"


def head(method: str = "POST", target: str = "/mcp", *, known: bool = False, policy: HttpPolicy = LOCAL, **headers: str) -> Reject | Route:
    base = {"host": "127.0.0.1:8000", "accept": BOTH, "content-type": "application/json"}
    base.update({k.replace("_", "-"): v for k, v in headers.items()})
    base = {k: v for k, v in base.items() if v != "-"}
    return check_head(method, target, base, policy, session_known=known)


def rejected(result: Any, status: int, code: int | None = -32600) -> dict[str, Any]:
    assert isinstance(result, Reject), result
    assert result.status == status
    assert ("content-type", "application/json") in result.headers
    body = json.loads(result.body)
    if code is not None:
        assert body["jsonrpc"] == "2.0" and body["error"]["code"] == code
    return body


def rejected_headers(result: Reject) -> tuple[tuple[str, str], ...]:
    rejected(result, result.status)
    return result.headers


def body(message: dict[str, Any]) -> bytes:
    return json.dumps(message).encode()


# -- check_head ------------------------------------------------------------------------


def test_a_plain_post_without_a_session_is_routed_for_initialize() -> None:
    assert head() == Route(kind="post")


def test_unknown_paths_get_404() -> None:
    body = rejected(head(target="/other"), 404)
    assert "/mcp" in body["error"]["message"]
    # Below /mcp and /gateway is the REST API's door: the REST API says what is not there, in its own shape.
    assert head(target="/mcp/extra") == Route(kind="rest", path="/mcp/extra")
    assert head("PUT", "/gateway/health") == Route(kind="rest", path="/gateway/health")
    assert head("GET", "/status") == Route(kind="page", path="/status")
    rejected(head("POST", "/docs"), 405)


def test_the_query_string_does_not_change_the_path() -> None:
    assert isinstance(head(target="/mcp?x=1"), Route)
    route = head("GET", "/metrics?format=prometheus")
    assert route == Route(kind="metrics", query="format=prometheus")


@pytest.mark.parametrize("host", ["127.0.0.1:8000", "localhost:8000", "localhost", "[::1]:8000", "127.0.0.1"])
def test_loopback_hosts_are_accepted_when_bound_to_loopback(host: str) -> None:
    assert isinstance(head(host=host), Route)


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8000", "127.0.0.1:9999", "-", ""])
def test_other_hosts_get_421(host: str) -> None:
    rejected(head(host=host), 421)


def test_allowed_hosts_extend_the_bound_address() -> None:
    assert host_allowed("gw.example", NAMED)
    assert host_allowed("gw.example:443", NAMED)
    assert host_allowed("gw.example:1234", NAMED)  # a bare name allows any port
    assert host_allowed("10.0.0.5:9000", NAMED)
    assert not host_allowed("10.0.0.5:9001", NAMED)
    assert not host_allowed("localhost:9000", NAMED)
    assert not host_allowed("other.example", NAMED)


def test_a_wildcard_bind_accepts_any_host_unless_hosts_are_listed() -> None:
    assert host_allowed("anything.example:8000", PUBLIC)
    listed = HttpPolicy(host="0.0.0.0", port=8000, allowed_hosts=frozenset({"gw.example"}))
    assert host_allowed("gw.example:8000", listed)
    assert not host_allowed("anything.example:8000", listed)


def test_ipv6_literals() -> None:
    v6 = HttpPolicy(host="::1", port=8000)
    assert host_allowed("[::1]:8000", v6)
    assert host_allowed("localhost:8000", v6)
    assert not host_allowed("[::2]:8000", v6)


@pytest.mark.parametrize(
    "origin", ["http://localhost:3000", "http://127.0.0.1", "https://localhost", "http://[::1]:6274"]
)
def test_loopback_origins_are_allowed_when_bound_to_loopback(origin: str) -> None:
    route = head(origin=origin)
    assert isinstance(route, Route)
    assert ("access-control-allow-origin", origin) in route.headers
    assert ("access-control-expose-headers", "Mcp-Session-Id, Mcp-Protocol-Version, Retry-After") in route.headers


@pytest.mark.parametrize("origin", ["https://evil.example", "null", "http://localhost.evil.example", "file://", "http://[bad"])
def test_other_origins_get_403_without_cors_headers(origin: str) -> None:
    result = head(origin=origin)
    rejected(result, 403)
    assert isinstance(result, Reject)
    assert not any(name.startswith("access-control") for name, _ in result.headers)


def test_a_public_bind_allows_only_the_configured_origins() -> None:
    assert origin_allowed("https://app.example", PUBLIC)
    assert not origin_allowed("http://localhost:3000", PUBLIC)
    rejected(head(origin="http://localhost:3000", host="gw:8000", policy=PUBLIC), 403)
    assert "*" not in PUBLIC.allowed_origins
    assert origin_allowed("https://any.example", HttpPolicy(host="0.0.0.0", port=1, allowed_origins=frozenset({"*"})))


def test_host_is_checked_before_origin() -> None:
    rejected(head(host="evil.example", origin="https://evil.example"), 421)


def test_preflight_answers_with_cors_headers() -> None:
    route = head("OPTIONS", origin="http://localhost:3000", accept="-", content_type="-")
    assert isinstance(route, Route) and route.kind == "preflight"
    headers = dict(route.headers)
    assert headers["access-control-allow-origin"] == "http://localhost:3000"
    assert headers["access-control-allow-methods"] == "GET, POST, DELETE, OPTIONS"
    assert "Mcp-Session-Id" in headers["access-control-allow-headers"]
    assert "Last-Event-ID" in headers["access-control-allow-headers"]
    assert "Mcp-Method, Mcp-Name" in headers["access-control-allow-headers"]  # the stateless era's routing headers


def test_preflight_from_a_forbidden_origin_gets_403() -> None:
    rejected(head("OPTIONS", origin="https://evil.example"), 403)


def test_options_without_origin_lists_the_methods() -> None:
    assert head("OPTIONS") == Route(kind="preflight", headers=(("allow", "GET, POST, DELETE, OPTIONS"),))
    assert head("OPTIONS", "/health") == Route(kind="preflight", headers=(("allow", "GET, OPTIONS"),))


@pytest.mark.parametrize("method", ["PUT", "PATCH", "HEAD", "TRACE"])
def test_other_methods_on_mcp_get_405_with_allow(method: str) -> None:
    result = head(method)
    rejected(result, 405)
    assert isinstance(result, Reject) and ("allow", "GET, POST, DELETE") in result.headers


@pytest.mark.parametrize("accept", ["application/json", "text/event-stream", "text/html", "-"])
def test_post_must_accept_json_and_sse(accept: str) -> None:
    rejected(head(accept=accept), 406)


@pytest.mark.parametrize(
    "accept", ["*/*", "application/*, text/*", "application/json;q=0.9, text/event-stream;q=1", "TEXT/EVENT-STREAM, Application/JSON"]
)
def test_accept_wildcards_and_parameters(accept: str) -> None:
    assert isinstance(head(accept=accept), Route)


def test_get_must_accept_sse() -> None:
    rejected(head("GET", accept="application/json", mcp_session_id="s", known=True), 406)
    assert isinstance(head("GET", accept="text/event-stream", mcp_session_id="s", known=True), Route)


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "-", "application/jsonx"])
def test_post_must_be_json(content_type: str) -> None:
    rejected(head(content_type=content_type), 415)


def test_content_type_parameters_are_fine() -> None:
    assert isinstance(head(content_type="application/json; charset=utf-8"), Route)


def test_a_declared_body_over_the_limit_gets_413() -> None:
    body = rejected(head(content_length="1001"), 413)
    assert "1000" in body["error"]["message"]
    assert isinstance(head(content_length="1000"), Route)


def test_a_version_the_handshake_era_does_not_know_is_the_stateless_eras() -> None:
    # Served or refused (-32022) by check_post, whatever session the request names.
    for version in ("2026-07-28", "1999-01-01"):
        route = head(mcp_protocol_version=version, mcp_session_id="s", known=True)
        assert route == Route(kind="post", protocol_version=version, stateless=True)
    assert head(mcp_protocol_version="2026-07-28", mcp_session_id="gone") == Route(kind="post", protocol_version="2026-07-28", stateless=True)
    for method in ("GET", "DELETE"):
        body = rejected(head(method, accept="text/event-stream", mcp_protocol_version="2026-07-28", mcp_session_id="s", known=True), 405)
        assert body["error"]["message"] == f"Method Not Allowed: MCP 2026-07-28 has no {method} stream or session"
    assert ("allow", "POST") in head("GET", mcp_protocol_version="2026-07-28").headers  # type: ignore[union-attr]
    # The POST rules of Accept and Content-Type still hold.
    rejected(head(mcp_protocol_version="2026-07-28", accept="application/json"), 406)
    rejected(head(mcp_protocol_version="2026-07-28", content_type="text/plain"), 415)


MODERN_META = {"io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {}}
MODERN_HEADERS = {"mcp-protocol-version": "2026-07-28", "mcp-method": "tools/list"}
STATELESS = Route(kind="post", protocol_version="2026-07-28", stateless=True)


def test_a_stateless_post_is_answered_as_json_or_sse_without_a_session() -> None:
    listing = body({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta": MODERN_META}})
    assert check_post(listing, STATELESS, headers=MODERN_HEADERS) == Post(action="json", request_id=1)
    progress = body({"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {"_meta": {**MODERN_META, "progressToken": 5}}})
    assert check_post(progress, STATELESS, headers=MODERN_HEADERS) == Post(action="sse", request_id=2)
    note = body({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 1}})
    assert check_post(note, STATELESS, headers={}) == Post(action="accept")


def test_a_stateless_post_that_fails_the_envelope_ladder_gets_400_with_its_id() -> None:
    bare = body({"jsonrpc": "2.0", "id": 3, "method": "tools/list", "params": {}})
    refused = rejected(check_post(bare, STATELESS, headers=MODERN_HEADERS), 400, -32602)
    assert refused["id"] == 3 and refused["error"]["data"] == {"code": "INVALID_PARAMS", "parameter": "_meta"}
    listing = body({"jsonrpc": "2.0", "id": 4, "method": "tools/list", "params": {"_meta": MODERN_META}})
    mismatch = rejected(check_post(listing, STATELESS, headers={**MODERN_HEADERS, "mcp-method": "tools/call"}), 400, -32020)
    assert mismatch["id"] == 4 and mismatch["error"]["data"] == {"code": "HEADER_MISMATCH"}
    future_meta = {**MODERN_META, "io.modelcontextprotocol/protocolVersion": "2099-01-01"}
    future = body({"jsonrpc": "2.0", "id": 5, "method": "tools/list", "params": {"_meta": future_meta}})
    route = Route(kind="post", protocol_version="2099-01-01", stateless=True)
    unsupported = rejected(check_post(future, route, headers={**MODERN_HEADERS, "mcp-protocol-version": "2099-01-01"}), 400, -32022)
    assert unsupported["error"]["data"] == {"code": "UNSUPPORTED_PROTOCOL_VERSION", "supported": ["2026-07-28"], "requested": "2099-01-01"}
    # A notification at a version nobody speaks is told so too; a response has nothing to answer.
    note = body({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {}})
    rejected(check_post(note, route, headers={}), 400, -32022)
    rejected(check_post(body({"jsonrpc": "2.0", "id": 1, "result": {}}), STATELESS, headers={}), 400, -32600)
    rejected(check_post(b"{not json", STATELESS, headers={}), 400, -32700)


def test_stateless_answers_carry_the_protocols_status() -> None:
    def answer(code: int) -> dict[str, Any]:
        return {"jsonrpc": "2.0", "id": 1, "error": {"code": code, "message": "m", "data": {}}}

    assert stateless_status(answer(-32601)) == (404, ())
    assert [stateless_status(answer(code))[0] for code in (-32700, -32600, -32602, -32020, -32021, -32022)] == [400] * 6
    assert stateless_status(answer(-32000)) == (200, ())
    assert stateless_status({"jsonrpc": "2.0", "id": 1, "result": {}}) == (200, ())
    limited = {"jsonrpc": "2.0", "id": 1, "error": {"code": -32005, "message": "m", "data": {"code": "RATE_LIMITED", "retry_after_ms": 1500}}}
    assert stateless_status(limited) == (429, (("retry-after", "2"),))


def test_a_missing_protocol_version_means_2025_03_26() -> None:
    route = head(mcp_session_id="s", known=True)
    assert isinstance(route, Route) and route.protocol_version == "2025-03-26" and route.session == "s"
    route = head(mcp_session_id="s", known=True, mcp_protocol_version="2025-06-18")
    assert isinstance(route, Route) and route.protocol_version == "2025-06-18"


@pytest.mark.parametrize("method", ["GET", "DELETE"])
def test_get_and_delete_need_a_known_session(method: str) -> None:
    rejected(head(method), 400)
    rejected(head(method, mcp_session_id="nope"), 404)
    route = head(method, mcp_session_id="s", known=True)
    assert isinstance(route, Route) and route.kind == method.lower() and route.session == "s"


def test_a_post_naming_an_unknown_session_gets_404() -> None:
    rejected(head(mcp_session_id="expired"), 404)


def test_get_carries_the_resumption_cursor() -> None:
    route = head("GET", mcp_session_id="s", known=True, last_event_id="7")
    assert isinstance(route, Route) and route.last_event_id == "7"


def test_operations_endpoints() -> None:
    for path, kind in (("/health", "health"), ("/ready", "ready"), ("/metrics", "metrics")):
        assert head("GET", path, accept="-", content_type="-") == Route(kind=kind)  # type: ignore[arg-type]
        rejected(head("HEAD", path), 405)
        result = head("POST", path)
        rejected(result, 405)
        assert isinstance(result, Reject) and ("allow", "GET") in result.headers
    rejected(head("GET", "/health", host="evil.example"), 421)


# -- check_post ------------------------------------------------------------------------

FRESH = Route(kind="post")
IN_SESSION = Route(kind="post", session="s", protocol_version="2025-11-25")


def test_initialize_without_a_session_opens_one() -> None:
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-11-25"}}
    assert check_post(body(init), FRESH) == Post(action="initialize", request_id=1)
    # In a session it is an ordinary request: the core answers "already initialized".
    assert check_post(body(init), IN_SESSION) == Post(action="json", request_id=1)


def test_malformed_json_gets_400_with_32700() -> None:
    rejected(check_post(b"{not json", IN_SESSION), 400, -32700)
    rejected(check_post(b"\xff\xfe", IN_SESSION), 400, -32700)


def test_batches_and_non_messages_get_400_with_32600() -> None:
    rejected(check_post(b"[]", IN_SESSION), 400)
    rejected(check_post(b'"hello"', IN_SESSION), 400)
    answer = rejected(check_post(b'{"jsonrpc":"2.0","id":5,"method":7}', IN_SESSION), 400)
    assert answer["id"] == 5


def test_requests_need_a_session() -> None:
    rejected(check_post(body({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}), FRESH), 400)
    rejected(check_post(body({"jsonrpc": "2.0", "method": "notifications/initialized"}), FRESH), 400)


def test_requests_are_answered_as_json_unless_they_ask_for_progress() -> None:
    plain = {"jsonrpc": "2.0", "id": "a", "method": "tools/call", "params": {"name": "x"}}
    assert check_post(body(plain), IN_SESSION) == Post(action="json", request_id="a")
    progress = {**plain, "params": {"name": "x", "_meta": {"progressToken": 3}}}
    assert check_post(body(progress), IN_SESSION) == Post(action="sse", request_id="a")
    null_token = {**plain, "params": {"name": "x", "_meta": {"progressToken": None}}}
    assert check_post(body(null_token), IN_SESSION) == Post(action="json", request_id="a")


def test_notifications_and_responses_are_accepted() -> None:
    assert check_post(body({"jsonrpc": "2.0", "method": "notifications/initialized"}), IN_SESSION) == Post(action="accept")
    assert check_post(body({"jsonrpc": "2.0", "id": 9, "result": {}}), IN_SESSION) == Post(action="accept")


# -- small answers ---------------------------------------------------------------------


def test_fixed_rejections() -> None:
    assert busy().status == 503 and ("retry-after", "1") in busy().headers and busy().close
    rejected(stream_conflict(), 409)
    assert not stream_conflict().close
    assert ("connection", "close") in rejected_headers(bad_http(400, "illegal header line"))
    assert bad_http(400, "illegal header line").close
    assert rejected(bad_http(400, "x" * 500), 400)["error"]["message"] == "Bad HTTP request: " + "x" * 200
    # The parser's own 431 (a head still incomplete past its buffer) reads like check_head_size's.
    assert bad_http(431, "Receive buffer too long") == check_head_size(101, 10)
    assert rejected(duplicate_request(4), 409)["id"] == 4


def test_responses_end_requests() -> None:
    assert ends_request({"jsonrpc": "2.0", "id": 1, "result": {}})
    assert ends_request({"jsonrpc": "2.0", "id": 1, "error": {"code": 1, "message": "x"}})
    assert not ends_request({"jsonrpc": "2.0", "method": "notifications/progress", "params": {}})



def test_the_answer_to_initialize_opens_the_session_or_closes_it() -> None:
    assert opened_session({"jsonrpc": "2.0", "id": 1, "result": {"protocolVersion": "2025-06-18"}}) == Opened("2025-06-18")
    assert opened_session({"jsonrpc": "2.0", "id": 1, "result": {}}) == Opened(None)
    assert opened_session({"jsonrpc": "2.0", "id": 1, "error": {"code": -32602, "message": "x"}}) is None


def test_health_and_ready_bodies() -> None:
    assert json.loads(health_body("1.2", 3.14159)) == {
        "status": "healthy", "service": "lockgate", "version": "1.2", "uptime_seconds": 3.142,
    }
    assert ops_status({"status": "ready"}) == 200
    assert ops_status({"status": "not_ready", "reason": "x"}) == 503


def test_sse_framing() -> None:
    assert format_event(3, b'{"a":1}') == b'id: 3\nevent: message\ndata: {"a":1}\n\n'
    assert format_event(None, b"{}") == b"event: message\ndata: {}\n\n"
    assert priming_event(1) == b"id: 1\nretry: 1000\nevent: message\ndata: \n\n"
    headers = dict(sse_headers("sid"))
    assert headers["content-type"] == "text/event-stream"
    assert headers["x-accel-buffering"] == "no"
    assert headers["mcp-session-id"] == "sid"
    assert wants_priming("2025-11-25") and not wants_priming("2025-06-18") and not wants_priming(None)


# -- EventBuffer -----------------------------------------------------------------------


def test_event_ids_increase_across_streams_and_replay_stays_on_one_stream() -> None:
    buf = EventBuffer()
    assert buf.add(GET_STREAM, None) == priming_event(1)
    assert buf.add(("post", 7), None) == priming_event(2)
    assert buf.add(GET_STREAM, b'{"n":1}') == format_event(3, b'{"n":1}')
    buf.add(("post", 7), b'{"progress":1}')
    buf.add(GET_STREAM, b'{"n":2}')
    buf.add(("post", 7), b'{"id":7,"result":{}}', last=True)

    get = buf.replay("1")
    assert get is not None and get.stream == GET_STREAM and not get.finished
    assert get.events == (format_event(3, b'{"n":1}'), format_event(5, b'{"n":2}'))
    assert buf.replay("3") is not None and buf.replay("3").events == (format_event(5, b'{"n":2}'),)  # type: ignore[union-attr]

    post = buf.replay("2")
    assert post is not None and post.stream == ("post", 7) and post.finished
    assert post.events == (format_event(4, b'{"progress":1}'), format_event(6, b'{"id":7,"result":{}}'))
    last = buf.replay("6")
    assert last is not None and last.events == () and last.finished is False


@pytest.mark.parametrize("cursor", ["", "abc", "-1", "0", "99", "1.5", "١"])
def test_unknown_cursors_replay_nothing(cursor: str) -> None:
    buf = EventBuffer()
    assert buf.replay("1") is None
    buf.add(GET_STREAM, b"{}")
    assert buf.replay(cursor) is None


def test_the_buffer_is_bounded_and_forgets_the_oldest() -> None:
    buf = EventBuffer(limit=3)
    for n in range(10):
        buf.add(GET_STREAM, b"%d" % n)
    assert len(buf) == 3
    assert buf.replay("7") is None  # 8, 9, 10 are held
    replay = buf.replay("8")
    assert replay is not None and replay.events == (format_event(9, b"8"), format_event(10, b"9"))


def test_a_request_id_still_in_flight_in_the_session_gets_409() -> None:
    plain = {"jsonrpc": "2.0", "id": "a", "method": "tools/call", "params": {"name": "x"}}
    assert check_post(body(plain), IN_SESSION, in_flight={"b"}) == Post(action="json", request_id="a")
    assert check_post(body(plain), IN_SESSION, in_flight={"a"}) == duplicate_request("a", IN_SESSION.headers)
    poisoned = b'{"jsonrpc":"2.0","id":"a","method":"tools/call","params":{"name":"\\ud800"}}'
    assert check_post(poisoned, IN_SESSION, in_flight={"a"}) == duplicate_request("a", IN_SESSION.headers)


def test_a_cancellation_names_the_request_whose_response_must_end() -> None:
    note = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": "r1", "reason": "x"}}
    assert check_post(body(note), IN_SESSION) == Post(action="accept", cancels="r1", cancel_answer=cancelled_response("r1"))
    bad = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 1.5}}
    assert check_post(body(bad), IN_SESSION) == Post(action="accept")
    assert cancelled_response("r1") == {
        "jsonrpc": "2.0", "id": "r1", "error": {"code": -32008, "message": "Request cancelled by the client", "data": {"code": "CANCELLED"}},
    }


def test_a_resuming_get_replaces_the_open_stream_and_a_fresh_one_conflicts() -> None:
    assert stream_takeover(False, False) == "open"
    assert stream_takeover(False, True) == "open"
    assert stream_takeover(True, False) == "conflict"
    assert stream_takeover(True, True) == "replace"


# -- hostile clients ---------------------------------------------------------------


def test_a_request_with_both_content_length_and_transfer_encoding_is_refused_and_closes() -> None:
    """Regression: it was answered, and the bytes after it served as a second request (smuggling)."""
    for method, target in (("POST", "/mcp"), ("GET", "/health"), ("GET", "/nowhere")):
        result = head(method, target, content_length="4", transfer_encoding="chunked")
        rejected(result, 400)
        assert isinstance(result, Reject) and result.close
        assert ("connection", "close") in result.headers
    assert isinstance(head(transfer_encoding="chunked"), Route)


def test_heads_over_the_field_or_byte_cap_get_431_and_close() -> None:
    """Regression: 10,000 header fields (119 KB) in one read were answered 200."""
    assert check_head_size(MAX_HEADER_FIELDS, MAX_HEAD_BYTES) is None
    for fields, size in ((MAX_HEADER_FIELDS + 1, 100), (10_000, 119_000), (3, MAX_HEAD_BYTES + 1)):
        result = check_head_size(fields, size)
        rejected(result, 431)
        assert result is not None and result.close


def test_an_internal_error_is_a_500_with_32603_and_closes() -> None:
    assert rejected(internal_error(), 500, -32603)["id"] is None
    assert internal_error().close


def occupancy(open: int = 0, idle: int = 0, reading: int = 0, own: tuple[int, int, int] = (0, 0, 0)) -> Occupancy:
    return Occupancy(open=open, idle=idle, reading=reading, address_open=own[0], address_idle=own[1], address_reading=own[2])


LIMITS = ConnectionLimits(max_connections=10, max_per_address=4)


def test_under_every_limit_a_connection_is_served() -> None:
    assert admit(occupancy(9, own=(3, 0, 0)), LIMITS, closing=False) == "serve"
    assert admit(occupancy(9, own=(3, 0, 0)), LIMITS, closing=True) == "refuse"


def test_at_the_limit_idle_connections_go_first_then_the_longest_reading_then_503() -> None:
    assert admit(occupancy(10, idle=1, reading=5), LIMITS, closing=False) == Evict(state="idle", own_address=False)
    assert admit(occupancy(10, idle=0, reading=5), LIMITS, closing=False) == Evict(state="reading", own_address=False)
    assert admit(occupancy(10, idle=0, reading=0), LIMITS, closing=False) == "refuse"


def test_an_address_at_its_limit_can_only_displace_its_own_connections() -> None:
    others_idle = occupancy(5, idle=1, reading=1, own=(4, 0, 0))
    assert admit(others_idle, LIMITS, closing=False) == "refuse"  # all four of its own are busy
    assert admit(occupancy(5, idle=1, own=(4, 1, 2)), LIMITS, closing=False) == Evict(state="idle", own_address=True)
    assert admit(occupancy(10, idle=1, own=(4, 0, 2)), LIMITS, closing=False) == Evict(state="reading", own_address=True)
    # No limit per address (behind a reverse proxy everyone shares one address).
    unlimited = ConnectionLimits(max_connections=10, max_per_address=0)
    assert admit(occupancy(9, own=(9, 0, 0)), unlimited, closing=False) == "serve"


def test_occupancy_and_limits_refuse_impossible_values() -> None:
    with pytest.raises(LocalProtocolError):
        occupancy(2, idle=2, reading=1)
    with pytest.raises(LocalProtocolError):
        occupancy(2, own=(1, 1, 1))
    for bad in ({"max_connections": 0}, {"max_per_address": -1}, {"head_timeout": 0}, {"idle_timeout": -1.0}, {"body_rate": 0}):
        with pytest.raises(LocalProtocolError):
            ConnectionLimits(**bad)  # type: ignore[arg-type]


def test_a_body_gets_the_head_timeout_plus_its_size_at_the_floor_rate() -> None:
    limits = ConnectionLimits(head_timeout=10.0, body_rate=64 * 1024)
    policy = HttpPolicy(host="127.0.0.1", port=8000, max_body_bytes=16 * 1024 * 1024)
    assert body_timeout("0", policy, limits) == 10.0
    assert body_timeout(" 1048576 ", policy, limits) == 26.0
    # Chunked (no size declared) and anything past the limit get the largest body's time.
    assert body_timeout(None, policy, limits) == 10.0 + 256.0
    assert body_timeout("999999999999", policy, limits) == 10.0 + 256.0


def test_connection_settings_from_the_environment() -> None:
    s = settings_from_env(
        {"GATEWAY_MAX_CONNECTIONS": "50", "GATEWAY_MAX_CONNECTIONS_PER_ADDRESS": "0", "GATEWAY_HTTP_HEAD_TIMEOUT": "2.5"}
    )
    assert (s.max_connections, s.max_connections_per_address, s.http_head_timeout) == (50, 0, 2.5)
    d = settings_from_env({})
    assert (d.max_connections, d.max_connections_per_address, d.http_head_timeout) == (1000, 256, 10.0)
    assert ConnectionLimits() == ConnectionLimits(max_connections=1000, max_per_address=256, head_timeout=10.0)
    with pytest.raises(ConfigError) as bad:
        settings_from_env(
            {"GATEWAY_MAX_CONNECTIONS": "0", "GATEWAY_MAX_CONNECTIONS_PER_ADDRESS": "-1", "GATEWAY_HTTP_HEAD_TIMEOUT": "0"}
        )
    assert [p.path for p in bad.value.problems] == [
        "GATEWAY_MAX_CONNECTIONS", "GATEWAY_MAX_CONNECTIONS_PER_ADDRESS", "GATEWAY_HTTP_HEAD_TIMEOUT",
    ]
