"""The official ``@modelcontextprotocol/server-everything`` behind Lockgate in aggregate mode, against itself reached directly.

One server, ``GATEWAY_MODE=aggregate`` and ``GATEWAY_PREFIX=never``, so the
names through Lockgate are the server's own. The SDK ``Client`` lists tools,
resources, templates and prompts through ``lockgate serve`` (over stdio and
over Streamable HTTP) and straight from the server, and they must be the
same items; then it calls tools (echo, get-sum, a long-running one with
progress, ones that ask the client's model, the person and the roots), reads
resources (a listed one and one from a template), gets a prompt and completes
a prompt argument, each compared with the answer it gets directly, as are the
capabilities (but ``tasks``, which aggregate mode does not offer) and the
instructions.

Both clients declare sampling, elicitation and roots: the gateway offers all
three to its servers, and server-everything adds the tools that use them
(after ``initialized``, announced with ``tools/list_changed``) only to a client
that does. (It also asks for the roots as soon as it is initialized, when no
call is in flight: the gateway refuses that request, as it cannot tell whose
roots they would be; ``get-roots-list`` asks again during its call, relayed.)

server-everything runs on Node 22 (handshake era only; stdio, offline once
installed): ``make unit`` installs both into ``build/node`` (the Makefile's
``NODE_TOOLS_STAMP``, version ``EVERYTHING_VERSION``). Without that install
this test fails and says so: it must not be skipped quietly in ``make test``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import mcp_types as types
import pytest
import trio
from mcp import Client, StdioServerParameters

from .conftest import Setup
from .test_http import serve_http

ROOT = Path(__file__).resolve().parents[2]
NODE_BIN = ROOT / "build" / "node" / "node_modules" / ".bin"
EVERYTHING = NODE_BIN / "mcp-server-everything"
PACKAGE = ROOT / "build" / "node" / "node_modules" / "@modelcontextprotocol" / "server-everything" / "package.json"

RULES: dict[str, Any] = {"agents": {"dev": {"allow": {"servers": ["*"]}}}, "defaults": {"deny_on_missing_agent": False}}

#: A tool server-everything adds only for a client that declared sampling.
SAMPLING_TOOL = "trigger-sampling-request"


def pinned_version() -> str:
    found = re.search(r"^EVERYTHING_VERSION\s*:=\s*(\S+)", (ROOT / "Makefile").read_text(), re.MULTILINE)
    assert found is not None, "the Makefile pins EVERYTHING_VERSION"
    return found.group(1)


@pytest.fixture
def everything() -> Path:
    """server-everything's launcher, after checking that Node 22 and the pinned version are installed."""
    wanted = pinned_version()
    if not EVERYTHING.exists() or not (NODE_BIN / "node").exists() or not PACKAGE.exists():
        pytest.fail(f"@modelcontextprotocol/server-everything@{wanted} is not installed in build/node: run `make unit`")
    installed = json.loads(PACKAGE.read_text())["version"]
    if installed != wanted:
        pytest.fail(f"build/node has server-everything {installed}, the Makefile pins {wanted}: run `make unit`")
    return EVERYTHING


def node_path() -> str:
    """``PATH`` with Node 22 first: the launcher runs ``#!/usr/bin/env node`` (the machine's own Node may be older)."""
    return f"{NODE_BIN}{os.pathsep}{os.environ['PATH']}"


# -- the client's side: a model, a person and roots ----------------------------------------


async def sample(context: Any, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
    return types.CreateMessageResult(role="assistant", content=types.TextContent(type="text", text="forty-two"), model="test-model")


async def elicit(context: Any, params: Any) -> types.ElicitResult:
    return types.ElicitResult(action="decline")


async def roots(context: Any) -> types.ListRootsResult:
    return types.ListRootsResult(roots=[types.Root.model_validate({"uri": "file:///work"})])


CALLBACKS: dict[str, Any] = {"sampling_callback": sample, "elicitation_callback": elicit, "list_roots_callback": roots}


@contextlib.asynccontextmanager
async def direct(everything: Path) -> AsyncIterator[Client]:
    params = StdioServerParameters(command=str(everything), args=["stdio"], env={"PATH": node_path()})
    async with Client(params, mode="legacy", read_timeout_seconds=30, **CALLBACKS) as client:
        yield client


@contextlib.asynccontextmanager
async def through_lockgate(setup: Setup, transport: str) -> AsyncIterator[Client]:
    if transport == "stdio":
        params = StdioServerParameters(command=sys.executable, args=setup.argv(), env=setup.environ())
        async with Client(params, mode="legacy", read_timeout_seconds=30, **CALLBACKS) as client:
            yield client
    else:
        with serve_http(setup) as served:
            async with Client(served.url, mode="legacy", read_timeout_seconds=30, **CALLBACKS) as client:
                yield client


@pytest.fixture
def gateway(setup: Setup, everything: Path) -> Setup:
    setup.servers.clear()
    setup.add("everything", "stdio", command=str(everything))
    setup.write(RULES)
    setup.env.update(PATH=node_path(), GATEWAY_MODE="aggregate", GATEWAY_PREFIX="never", GATEWAY_DEFAULT_AGENT="dev")
    return setup


# -- what a client sees ----------------------------------------------------------------------


def plain(items: list[Any]) -> list[dict[str, Any]]:
    return [item.model_dump(mode="json", by_alias=True, exclude_none=True) for item in items]


async def every_page(fetch: Callable[[str | None], Awaitable[Any]], key: str) -> list[dict[str, Any]]:
    items: list[Any] = []
    cursor: str | None = None
    while True:
        page = await fetch(cursor)
        items.extend(getattr(page, key))
        cursor = page.next_cursor
        if cursor is None:
            return plain(items)


async def catalogue(client: Client) -> dict[str, list[dict[str, Any]]]:
    """Every list the server offers, every page, once its tools have settled.

    server-everything adds its sampling, elicitation and roots tools after
    ``initialized``; a gateway that listed it before then catches up on the
    ``tools/list_changed`` that follows. Either way the list is complete
    once it has the sampling tool.
    """
    with trio.fail_after(15):
        while True:
            tools = await every_page(lambda cursor: client.list_tools(cursor=cursor), "tools")
            if SAMPLING_TOOL in [t["name"] for t in tools]:
                break
            await trio.sleep(0.1)
    return {
        "tools": tools,
        "resources": await every_page(lambda cursor: client.list_resources(cursor=cursor), "resources"),
        "templates": await every_page(lambda cursor: client.list_resource_templates(cursor=cursor), "resource_templates"),
        "prompts": await every_page(lambda cursor: client.list_prompts(cursor=cursor), "prompts"),
    }


async def session(client: Client) -> dict[str, Any]:
    """What a client gets from one round of calls, reads and prompts (each as a plain JSON value)."""
    listed = await catalogue(client)
    reported: list[tuple[float, float | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        reported.append((progress, total))

    def content(result: Any) -> Any:
        return result.model_dump(mode="json", by_alias=True, exclude_none=True, include={"content", "structured_content", "is_error"})

    first = listed["resources"][0]["uri"]
    answers = {
        "echo": content(await client.call_tool("echo", {"message": "through the gateway"})),
        "get-sum": content(await client.call_tool("get-sum", {"a": 2, "b": 3})),
        "long-running": content(await client.call_tool(
            "trigger-long-running-operation", {"duration": 1, "steps": 2}, progress_callback=on_progress)),
        "sampling": content(await client.call_tool(SAMPLING_TOOL, {"prompt": "What is six times seven?", "maxTokens": 10})),
        "elicitation": content(await client.call_tool("trigger-elicitation-request", {})),
        "roots": content(await client.call_tool("get-roots-list", {})),
        "read": (await client.read_resource(first)).model_dump(mode="json", by_alias=True, exclude_none=True, include={"contents"}),
        # Made on each read, with the time of day in its text.
        "read template": re.sub(r"created at [^\"]*", "created at <time>", json.dumps(
            (await client.read_resource("demo://resource/dynamic/text/1")).model_dump(mode="json", by_alias=True, exclude_none=True)["contents"])),
        "prompt": (await client.get_prompt("args-prompt", {"city": "Paris", "state": "Texas"})).model_dump(
            mode="json", by_alias=True, exclude_none=True, include={"description", "messages"}),
        "complete": (await client.complete(
            types.PromptReference(type="ref/prompt", name="completable-prompt"), {"name": "department", "value": "E"})
        ).model_dump(mode="json", by_alias=True, exclude_none=True, include={"completion"}),
    }
    # What the server offers, but tasks: aggregate mode does not offer them (yet).
    offered = client.server_capabilities.model_dump(mode="json", by_alias=True, exclude_none=True, exclude={"tasks"})
    return {"lists": listed, "answers": answers, "progress": reported, "offered": offered, "instructions": client.instructions}


@pytest.mark.parametrize("transport", ["stdio", "http"])
async def test_server_everything_through_lockgate_is_server_everything(gateway: Setup, everything: Path, transport: str) -> None:
    async with direct(everything) as client:
        expected = await session(client)
    async with through_lockgate(gateway, transport) as client:
        got = await session(client)

    # The same items in the same order, field for field: names unchanged (GATEWAY_PREFIX=never).
    for key in ("tools", "resources", "templates", "prompts"):
        assert got["lists"][key] == expected["lists"][key], key
    assert len(expected["lists"]["tools"]) >= 15 and len(expected["lists"]["prompts"]) >= 4
    assert got["answers"] == expected["answers"]
    assert got["offered"] == expected["offered"]
    assert got["instructions"] == expected["instructions"] and "Everything Server" in str(got["instructions"])
    assert got["progress"] == expected["progress"] == [(1.0, 2.0), (2.0, 2.0)]
    assert "forty-two" in got["answers"]["sampling"]["content"][0]["text"]
    assert "declined" in got["answers"]["elicitation"]["content"][0]["text"]
    assert "file:///work" in got["answers"]["roots"]["content"][0]["text"]
    assert got["answers"]["complete"]["completion"]["values"] == ["Engineering"]

    calls = [(r["operation"], r["tool"], r["decision"]) for r in gateway.audit_records() if r.get("server") == "everything"]
    assert ("tools/call", "echo", "ALLOW") in calls and ("tools/call", SAMPLING_TOOL, "ALLOW") in calls
