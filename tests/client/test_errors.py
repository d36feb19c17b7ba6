"""How an answer becomes an exception: the class of its status, the body's fields, Retry-After in seconds."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from lockgate.client import (
    AuthenticationError,
    BadRequest,
    Conflict,
    DownstreamError,
    GatewayError,
    GatewayTimeout,
    NotFound,
    PermissionDenied,
    RateLimited,
    Unavailable,
)
from lockgate.client._errors import error_from_body, parse_retry_after


@pytest.mark.parametrize(
    ("status", "cls"),
    [(400, BadRequest), (401, AuthenticationError), (403, PermissionDenied), (404, NotFound), (409, Conflict),
     (413, BadRequest), (429, RateLimited), (502, DownstreamError), (503, Unavailable), (504, GatewayTimeout), (500, GatewayError)],
)
def test_each_status_has_its_class(status: int, cls: type[GatewayError]) -> None:
    body = b'{"error": {"code": "SOME_CODE", "message": "what happened", "status": %d, "data": {"rule": "r"}}}' % status
    error = error_from_body(status, body)
    assert type(error) is cls
    assert (error.code, error.message, error.status, error.data) == ("SOME_CODE", "what happened", status, {"rule": "r"})
    assert str(error) == f"{status} SOME_CODE: what happened"


def test_an_answer_without_the_error_body_still_has_its_class() -> None:
    error = error_from_body(502, b"<html>\n<title>502 Bad Gateway</title></html>", reason="Bad Gateway")
    assert isinstance(error, DownstreamError)
    assert (error.code, error.message, error.data) == ("HTTP_502", "Bad Gateway: <html>", {})


def test_retry_after_from_the_header_else_from_the_data() -> None:
    limited = error_from_body(429, b'{"error": {"code": "RATE_LIMITED", "message": "m", "data": {"retry_after_ms": 2500}}}', "3")
    assert isinstance(limited, RateLimited) and limited.retry_after == 3.0
    from_data = error_from_body(429, b'{"error": {"code": "RATE_LIMITED", "message": "m", "data": {"retry_after_ms": 2500}}}')
    assert isinstance(from_data, RateLimited) and from_data.retry_after == 2.5


def test_parse_retry_after() -> None:
    now = datetime(2026, 12, 1, 10, 0, 0, tzinfo=UTC)
    assert parse_retry_after("2") == 2.0
    assert parse_retry_after("Tue, 01 Dec 2026 10:00:30 GMT", now) == 30.0
    assert parse_retry_after("Tue, 01 Dec 2026 09:00:00 GMT", now) == 0.0  # a date past is now
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


def test_a_json_rpc_error_body_gives_its_name_from_data() -> None:
    body = b'{"jsonrpc": "2.0", "id": null, "error": {"code": -32600, "message": "Unauthorized: no credential", "data": {"code": "INVALID_REQUEST"}}}'
    error = error_from_body(401, body)
    assert isinstance(error, AuthenticationError)
    assert (error.code, error.message) == ("INVALID_REQUEST", "Unauthorized: no credential")
