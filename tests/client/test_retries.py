"""Retries against a real tiny HTTP server on 127.0.0.1: 503 is retried (Retry-After honoured), nothing else is."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from lockgate.client import (
    DownstreamError,
    GatewayClient,
    GatewayUnreachable,
    RateLimited,
    SyncGatewayClient,
    Unavailable,
)

from .conftest import free_port

HEALTH = {"status": "healthy", "version": "test", "uptime_seconds": 1.0, "servers": {}}


class Script:
    """What the server answers, one (status, headers, body) per request, then the last one again; and what it was asked."""

    def __init__(self, *answers: tuple[int, dict[str, str], object]) -> None:
        self.answers = list(answers)
        self.requests: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    def next(self, method: str, path: str) -> tuple[int, dict[str, str], object]:
        with self.lock:
            self.requests.append((method, path))
            return self.answers[min(len(self.requests), len(self.answers)) - 1]


@contextmanager
def scripted(script: Script) -> Iterator[str]:
    """An HTTP server on 127.0.0.1 answering as ``script`` says; its URL."""

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            self.rfile.read(length)
            status, headers, body = script.next(self.command, self.path)
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(status)
            for name, value in {"content-type": "application/json", **headers}.items():
                self.send_header(name, value)
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_DELETE = _answer

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


UNAVAILABLE = (503, {"retry-after": "0"}, {"error": {"code": "SERVER_UNAVAILABLE", "message": "starting", "status": 503, "data": {}}})


async def test_503_twice_then_200_is_retried_until_it_succeeds() -> None:
    script = Script(UNAVAILABLE, UNAVAILABLE, (200, {}, HEALTH))
    with scripted(script) as url:
        async with GatewayClient(url, retries=3, backoff=0.01) as client:
            health = await client.health()
    assert health.status == "healthy"
    assert script.requests == [("GET", "/gateway/health")] * 3


def test_the_sync_facade_retries_the_same_way() -> None:
    script = Script(UNAVAILABLE, UNAVAILABLE, (200, {}, HEALTH))
    with scripted(script) as url, SyncGatewayClient(url, backoff=0.01) as client:
        assert client.health().version == "test"
    assert len(script.requests) == 3


async def test_503_beyond_the_retries_is_raised_as_unavailable() -> None:
    script = Script(UNAVAILABLE)
    with scripted(script) as url:
        async with GatewayClient(url, retries=2, backoff=0.01) as client:
            with pytest.raises(Unavailable) as raised:
                await client.list_tools("testing")
    assert (raised.value.status, raised.value.code, raised.value.message) == (503, "SERVER_UNAVAILABLE", "starting")
    assert len(script.requests) == 3  # the first try and two retries


@pytest.mark.parametrize(
    "answer",
    [
        (502, {}, {"error": {"code": "DOWNSTREAM_ERROR", "message": "bad", "status": 502, "data": {"downstream_code": -1}}}),
        (429, {"retry-after": "7"}, {"error": {"code": "RATE_LIMITED", "message": "slow down", "status": 429, "data": {}}}),
        (500, {}, b"<html>oops</html>"),
    ],
)
async def test_nothing_but_503_is_retried(answer: tuple[int, dict[str, str], object]) -> None:
    script = Script(answer, (200, {}, HEALTH))
    with scripted(script) as url:
        async with GatewayClient(url, backoff=0.01) as client:
            with pytest.raises(Exception) as raised:
                await client.health()
    assert len(script.requests) == 1
    error = raised.value
    if answer[0] == 502:
        assert isinstance(error, DownstreamError) and error.data == {"downstream_code": -1}
    elif answer[0] == 429:
        assert isinstance(error, RateLimited) and error.retry_after == 7.0
    else:
        assert type(error).__name__ == "GatewayError" and error.code == "HTTP_500"  # type: ignore[attr-defined]


async def test_register_and_deregister_are_not_retried_on_503() -> None:
    script = Script(UNAVAILABLE)
    with scripted(script) as url:
        async with GatewayClient(url, backoff=0.01) as client:
            with pytest.raises(Unavailable):
                await client.register("s", endpoint="http://127.0.0.1:9/mcp")
            with pytest.raises(Unavailable):
                await client.deregister("s", "i")
    assert script.requests == [("POST", "/gateway/register"), ("DELETE", "/gateway/deregister/s/i")]


async def test_a_refused_connection_is_retried_then_raised_as_unreachable() -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    async with GatewayClient(url, retries=2, backoff=0.01) as client:
        with pytest.raises(GatewayUnreachable) as raised:
            await client.register("s", endpoint="http://127.0.0.1:9/mcp")  # never sent, so retried too
    assert raised.value.status is None and raised.value.code == "UNREACHABLE"


async def test_a_rate_limit_in_a_batch_keeps_its_retry_after() -> None:
    batch = {"results": [{"ok": False, "status": 429, "error": {"code": "RATE_LIMITED", "message": "m", "status": 429, "data": {"retry_after_ms": 1500}}}]}
    with scripted(Script((200, {}, batch))) as url:
        async with GatewayClient(url) as client:
            [limited] = await client.call_tools([{"server": "s", "name": "t"}])
    assert isinstance(limited, RateLimited) and limited.retry_after == 1.5
