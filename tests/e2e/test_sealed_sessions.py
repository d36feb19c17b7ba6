"""Sessions any gateway can serve: real ``lockgate serve`` processes sharing ``GATEWAY_SESSION_KEY``.

The SDK ``Client`` initialises on one gateway; its HTTP client then sends
every request to another, as a load balancer without stickiness would (an
httpx request hook moves each request), and the session goes on without a
second ``initialize``. Raw httpx covers the ids that must not open: forged,
altered, expired, sealed under another key, or another credential's.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp import Client
from mcp.client.streamable_http import create_mcp_http_client, streamable_http_client

from .conftest import RULES, Setup, structured
from .test_http import Served, serve_http
from .test_identity import Keys, auth_setup, database, keys  # noqa: F401 - fixtures

INIT = {
    "jsonrpc": "2.0", "id": 1, "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {"roots": {}}, "clientInfo": {"name": "raw", "version": "1"}},
}
HEADERS = {"content-type": "application/json", "accept": "application/json, text/event-stream"}
LIST = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}
ECHO = {
    "jsonrpc": "2.0", "id": 3, "method": "tools/call",
    "params": {"name": "execute_tool", "arguments": {"agent_id": "dev", "server": "testing", "tool": "echo", "args": {"text": "hi"}}},
}


def new_key() -> str:
    return secrets.token_urlsafe(32)


@contextmanager
def gateways(setup: Setup, *keys: str, extra: tuple[str, ...] = (), **env: str) -> Iterator[list[Served]]:
    """One gateway per ``keys`` entry (its ``GATEWAY_SESSION_KEY``), each with a state folder of its own."""
    with ExitStack() as stack:
        served = []
        for number, key in enumerate(keys):
            # At info, each gateway says when it continues a session (see continued()).
            setup.env.update(GATEWAY_SESSION_KEY=key, GATEWAY_LOG_LEVEL="info", **env)
            if "GATEWAY_DATABASE_URL" not in setup.env:
                # Nothing shared but the key: not even the state folder (and its secret.key).
                setup.env["GATEWAY_STATE_DIR"] = str(setup.tmp / f"state-{number}")
            served.append(stack.enter_context(serve_http(setup, *extra)))
        yield served


class Balancer:
    """Sends each request of an HTTP client to the gateway chosen now, whatever URL it was made for."""

    def __init__(self, url: str) -> None:
        self.url = httpx.URL(url)

    async def route(self, request: httpx.Request) -> None:
        request.url = request.url.copy_with(host=self.url.host, port=self.url.port)
        request.headers["host"] = f"{self.url.host}:{self.url.port}"


def balanced_client(url: str, balancer: Balancer, credential: str | None = None) -> Client:
    http = create_mcp_http_client(headers={"Authorization": f"Bearer {credential}"} if credential else None)
    http.event_hooks = {"request": [balancer.route], "response": []}
    return Client(streamable_http_client(url, http_client=http), mode="legacy", read_timeout_seconds=30)


def initialize(http: httpx.Client, url: str, headers: dict[str, str] | None = None) -> str:
    answer = http.post(url, json=INIT, headers={**HEADERS, **(headers or {})})
    assert answer.status_code == 200, answer.text
    session = answer.headers["mcp-session-id"]
    http.post(url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers={**HEADERS, "mcp-session-id": session, **(headers or {})})
    return session


def post(http: httpx.Client, url: str, session: str, message: dict[str, Any], headers: dict[str, str] | None = None) -> httpx.Response:
    return http.post(url, json=message, headers={**HEADERS, "mcp-session-id": session, "mcp-protocol-version": "2025-06-18", **(headers or {})})


def tool_names(answer: httpx.Response) -> list[str]:
    assert answer.status_code == 200, answer.text
    return [tool["name"] for tool in answer.json()["result"]["tools"]]


def continued(served: Served) -> int:
    return sum("continuing session" in line for line in served.stderr)


@pytest.mark.parametrize("mode", ["on_demand", "aggregate"])
async def test_the_sdk_client_opens_a_session_on_one_gateway_and_goes_on_on_another(setup: Setup, mode: str) -> None:
    key = new_key()
    setup.write({**RULES, "defaults": {"deny_on_missing_agent": False}})  # calls without agent_id act as dev
    with gateways(setup, key, key, GATEWAY_MODE=mode, GATEWAY_DEFAULT_AGENT="dev") as (first, second):
        balancer = Balancer(first.url)
        async with balanced_client(first.url, balancer) as session:
            before = await session.list_tools()
            balancer.url = httpx.URL(second.url)  # the first gateway is never asked again
            after = await session.list_tools()
            assert [t.name for t in after.tools] == [t.name for t in before.tools]
            if mode == "aggregate":
                assert "echo" in [t.name for t in after.tools]  # one server: its own names
                echoed = await session.call_tool("echo", {"text": "hi"})
                assert echoed.structured_content == {"result": "hi"}
            else:
                echoed = await session.call_tool("execute_tool", {"agent_id": "dev", "server": "testing", "tool": "echo", "args": {"text": "hi"}})
                assert structured(echoed) == {"result": "hi"}
            # And back: the first gateway still holds it.
            balancer.url = httpx.URL(first.url)
            again = await session.call_tool("list_servers", {"agent_id": "dev"}) if mode == "on_demand" else await session.list_tools()
            assert again is not None
    assert (continued(first), continued(second)) == (0, 1)


def test_ids_that_must_not_open_are_404(setup: Setup) -> None:
    key = new_key()
    with gateways(setup, key, key, new_key()) as (first, second, stranger), httpx.Client(timeout=30) as http:
        session = initialize(http, first.url)
        assert len(session) < 250 and session.isascii() and session.isprintable()
        assert post(http, second.url, session, ECHO).json()["result"]["structuredContent"] == {"result": "hi"}  # it opens on the second
        tampered = session[:20] + ("A" if session[20] != "A" else "B") + session[21:]
        for forged in (tampered, session[:-2], secrets.token_urlsafe(32), "lockgate"):
            for served in (first, second):
                refused = post(http, served.url, forged, LIST)
                assert refused.status_code == 404, (forged, refused.text)
        # Sealed under another key: nobody else's session.
        assert post(http, stranger.url, session, LIST).status_code == 404
        assert initialize(http, stranger.url) != session


def test_an_expired_id_is_404_everywhere(setup: Setup) -> None:
    key = new_key()
    with gateways(setup, key, key, GATEWAY_SESSION_LIFETIME="3") as (first, second), httpx.Client(timeout=30) as http:
        session = initialize(http, first.url)
        other = initialize(http, first.url)
        assert tool_names(post(http, second.url, other, LIST))  # valid for now
        # Ids carry whole seconds, so each is valid for 2 to 3 seconds here: wait until past that.
        time.sleep(3.2)
        for served in (first, second):
            assert post(http, served.url, session, LIST).status_code == 404
        # Held live on both by now, and ended on both when used past its lifetime.
        for served in (second, first):
            assert post(http, served.url, other, LIST).status_code == 404


def test_a_rotated_key_still_opens_old_ids_and_seals_new_ones(setup: Setup) -> None:
    old, new = new_key(), new_key()
    with gateways(setup, old, f"{new},{old}", new) as (before, during, after), httpx.Client(timeout=30) as http:
        old_session = initialize(http, before.url)
        # Mid-session, on a gateway already rotated: the new key first, the old one kept for the overlap.
        assert tool_names(post(http, during.url, old_session, LIST))
        assert "hi" in post(http, during.url, old_session, ECHO).text
        new_session = initialize(http, during.url)
        assert tool_names(post(http, after.url, new_session, LIST))  # sealed under the new key
        assert post(http, before.url, new_session, LIST).status_code == 404  # which the old gateway does not hold
        assert post(http, after.url, old_session, LIST).status_code == 404  # the old key dropped: its ids are gone


def test_delete_ends_a_continued_session_here_and_last_event_id_opens_a_fresh_stream(setup: Setup) -> None:
    key = new_key()
    with gateways(setup, key, key) as (first, second), httpx.Client(timeout=30) as http:
        session = initialize(http, first.url)
        # Resuming a stream this gateway never had: a fresh GET stream (its events stayed with the first).
        headers = {**HEADERS, "accept": "text/event-stream", "mcp-session-id": session, "last-event-id": "7"}
        with http.stream("GET", second.url, headers=headers) as stream:
            assert stream.status_code == 200 and stream.headers["content-type"].startswith("text/event-stream")
        deleted = http.delete(second.url, headers={"mcp-session-id": session})
        assert deleted.status_code == 200
        assert post(http, second.url, session, LIST).status_code == 404  # never continued here again
        # The first gateway cannot know (the README says so): the id opens there until it expires.
        assert tool_names(post(http, first.url, session, LIST))
        # A DELETE of an id this gateway never held ends it here too.
        third = initialize(http, first.url)
        assert http.delete(second.url, headers={"mcp-session-id": third}).status_code == 200
        assert post(http, second.url, third, LIST).status_code == 404


def test_another_credentials_id_is_404(auth_setup: Setup, keys: Keys) -> None:  # noqa: F811 - fixture
    key = new_key()
    with gateways(auth_setup, key, key, extra=("--auth",)) as (first, second), httpx.Client(timeout=30) as http:
        dev = {"authorization": f"Bearer {keys.dev}"}
        slow = {"authorization": f"Bearer {keys.slow}"}
        session = initialize(http, first.url, dev)
        assert post(http, second.url, session, LIST, slow).status_code == 404
        assert post(http, first.url, session, LIST, slow).status_code == 404
        assert post(http, second.url, session, LIST).status_code == 401  # no credential at all
        assert tool_names(post(http, second.url, session, LIST, dev))
        echoed = post(http, second.url, session, ECHO, dev)
        assert echoed.json()["result"]["structuredContent"] == {"result": "hi"}
        # Now held by the second too: still nobody else's there.
        assert post(http, second.url, session, LIST, slow).status_code == 404
