"""Aggregate mode end to end: the SDK ``Client`` sees two real SDK servers through ``lockgate serve`` as one.

Over stdio and over Streamable HTTP: the merged, filtered lists, tool calls,
resources (by URI and through a template), prompts, refusals of what the
rules hide, and a server's sampling, elicitation and roots requests
relayed to the client whose call caused them (over a shared HTTP server
too, where two clients ask at once).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import mcp_types as types
import pytest
import trio
from mcp import Client, MCPError, StdioServerParameters

from .conftest import SERVERS, Setup
from .test_http import serve_http
from .test_http_downstream import free_port

RULES: dict[str, Any] = {
    "agents": {
        "dev": {
            "allow": {"servers": ["*"], "resources": {"catalog": ["notes://today", "notes://day/*"]}},
            "deny": {"tools": {"catalog": ["delete_*"], "testing": ["drop_*", "hang", "crash", "big", "slow", "count", "length"]}},
        },
    },
    "defaults": {"deny_on_missing_agent": False},
}


@pytest.fixture
def aggregate(setup: Setup) -> Setup:
    setup.add("catalog", str(SERVERS / "catalog_server.py"))
    setup.write(RULES)
    setup.env.update(GATEWAY_MODE="aggregate", GATEWAY_DEFAULT_AGENT="dev")
    return setup


@asynccontextmanager
async def connected(setup: Setup, transport: str) -> AsyncIterator[Client]:
    if transport == "stdio":
        async with setup.client() as client:
            yield client
    else:
        with serve_http(setup) as served:
            async with Client(served.url, mode="legacy", read_timeout_seconds=30) as client:
                yield client


@pytest.mark.parametrize("transport", ["stdio", "http"])
async def test_two_sdk_servers_through_lockgate_look_like_one(aggregate: Setup, transport: str) -> None:
    async with connected(aggregate, transport) as client:
        capabilities = client.server_capabilities
        assert capabilities is not None and capabilities.resources is not None and capabilities.prompts is not None
        assert client.instructions == "catalog: Notes live here; read them before you write."

        tools = await client.list_tools()
        assert [t.name for t in tools.tools] == ["catalog__add_note", "catalog__ask", "catalog__confirm", "catalog__roots", "testing__echo"]
        kept = await client.call_tool("catalog__add_note", {"text": "milk"})
        assert kept.structured_content == {"result": "kept: milk"}
        echoed = await client.call_tool("testing__echo", {"text": "hi"})
        assert echoed.structured_content == {"result": "hi"}
        with pytest.raises(MCPError) as denied:
            await client.call_tool("catalog__delete_notes", {})
        assert denied.value.error.message == "Unknown tool: catalog__delete_notes"

        resources = await client.list_resources()
        assert [str(r.uri) for r in resources.resources] == ["notes://today"]
        today = await client.read_resource("notes://today")
        assert today.contents[0].text == "buy milk"  # type: ignore[union-attr]
        templates = await client.list_resource_templates()
        [template] = templates.resource_templates
        assert template.uri_template == "lockgate://catalog/notes://day/{day}"
        monday = await client.read_resource("lockgate://catalog/notes://day/monday")
        assert monday.contents[0].text == "notes of monday"  # type: ignore[union-attr]
        with pytest.raises(MCPError) as hidden:
            await client.read_resource("notes://private")
        assert hidden.value.error.code == -32002

        prompts = await client.list_prompts()
        assert [p.name for p in prompts.prompts] == ["catalog__summarise"]
        prompt = await client.get_prompt("catalog__summarise", {"topic": "milk"})
        assert prompt.messages[0].content.text == "Summarise my notes on milk."  # type: ignore[union-attr]

    records = [r for r in aggregate.audit_records() if r.get("operation") == "tools/call"]
    assert [(r["server"], r["tool"], r["decision"]) for r in records] == [
        ("catalog", "add_note", "ALLOW"), ("testing", "echo", "ALLOW"), (None, None, "ERROR"),
    ]


async def _sample(context: Any, params: Any) -> types.CreateMessageResult:
    question = params.messages[0].content.text
    return types.CreateMessageResult(role="assistant", content=types.TextContent(type="text", text=f"model says {question}"), model="m")


async def _elicit(context: Any, params: Any) -> types.ElicitResult:
    return types.ElicitResult(action="accept", content={"ok": True})


async def _roots(context: Any) -> types.ListRootsResult:
    return types.ListRootsResult(roots=[types.Root(uri="file:///work")])


@pytest.mark.parametrize("transport", ["stdio", "http"])
async def test_sampling_elicitation_and_roots_reach_the_client_whose_call_asked(aggregate: Setup, transport: str) -> None:
    aggregate.servers["catalog"]["isolation"] = "per_client"
    aggregate.write(RULES)
    # Relays of requests a server sends: the handshake era's (a stateless server returns input_required instead).
    aggregate.env["GATEWAY_DOWNSTREAM_ERA"] = "handshake"
    callbacks: dict[str, Any] = {"sampling_callback": _sample, "elicitation_callback": _elicit, "list_roots_callback": _roots}
    if transport == "stdio":
        params = StdioServerParameters(command=sys.executable, args=aggregate.argv(), env=aggregate.environ())
        target: Any = params
        context: Any = contextlib.nullcontext()
    else:
        context = serve_http(aggregate)
    with context as served:
        target = params if transport == "stdio" else served.url
        async with Client(target, mode="legacy", read_timeout_seconds=30, **callbacks) as client:
            asked = await client.call_tool("catalog__ask", {"question": "2+2?"})
            assert asked.structured_content == {"result": "model says 2+2?"}
            confirmed = await client.call_tool("catalog__confirm", {})
            assert confirmed.structured_content == {"result": "accept:ok=True"}
            listed = await client.call_tool("catalog__roots", {})
            assert listed.structured_content == {"result": "file:///work"}
        async with Client(target, mode="legacy", read_timeout_seconds=30) as plain:
            # A client that cannot be asked: the server's request fails, and so does its tool.
            with pytest.raises(MCPError) as refused:
                await plain.call_tool("catalog__ask", {"question": "?"})
            assert "the client does not support sampling/createMessage" in refused.value.error.message


async def test_two_clients_sampling_at_once_through_a_shared_http_server_each_get_their_own(aggregate: Setup, tmp_path: Any) -> None:
    port = free_port()
    server = subprocess.Popen([sys.executable, str(SERVERS / "catalog_server.py"), "--http", str(port)], start_new_session=True)
    try:
        with trio.fail_after(20):
            while True:
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                        break
                except OSError:
                    await trio.sleep(0.1)
        aggregate.servers["catalog"] = {"url": f"http://127.0.0.1:{port}/mcp", "description": "catalog over HTTP"}
        aggregate.write(RULES)
        aggregate.env["GATEWAY_DOWNSTREAM_ERA"] = "handshake"  # relays of server requests: the handshake era's

        async def sampled_by(who: str, context: Any, params: Any) -> types.CreateMessageResult:
            await trio.sleep(0.5)  # both calls are in flight on the one shared server now
            return types.CreateMessageResult(role="assistant", content=types.TextContent(type="text", text=who), model="m")

        answers: dict[str, Any] = {}
        with serve_http(aggregate) as served:

            async def ask(who: str) -> None:
                async def callback(context: Any, params: Any) -> types.CreateMessageResult:
                    return await sampled_by(who, context, params)

                async with Client(served.url, mode="legacy", read_timeout_seconds=30, sampling_callback=callback) as client:
                    answers[who] = (await client.call_tool("catalog__ask", {"question": "who?"})).structured_content

            async with trio.open_nursery() as nursery:
                nursery.start_soon(ask, "alice")
                nursery.start_soon(ask, "bob")
        assert answers == {"alice": {"result": "alice"}, "bob": {"result": "bob"}}
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(10)
