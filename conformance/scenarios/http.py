"""Streamable HTTP: the SDK Client over ``lockgate serve --transport http``."""

from __future__ import annotations

from typing import Any

from conformance.scenarios.base import RAW, SDK, scenario

# -- Streamable HTTP ---------------------------------------------------------------------
# The SDK Client over HTTP (mode legacy): one core and one wire transcript per
# HTTP session. Only what reaches the core is in them: a request that the
# HTTP layer refuses (a malformed body, a missing session) never does.


@scenario("http_list_get_execute", "over HTTP: SDK Client lists tools, list_servers, get_server_tools, execute_tool on two servers",
          sdk=True, transport="http", servers={"raw": RAW, "sdk": SDK})
async def _(client: Any) -> None:
    await client.list_tools()
    await client.call_tool("list_servers", {"agent_id": "dev"})
    await client.call_tool("get_server_tools", {"agent_id": "dev", "server": "raw", "names": ["echo", "add"]})
    await client.call_tool("execute_tool", {"agent_id": "dev", "server": "sdk", "tool": "echo", "args": {"text": "over http"}})
    await client.call_tool("execute_tool", {"agent_id": "dev", "server": "raw", "tool": "add", "args": {"a": 2, "b": 3}})


@scenario("http_denied", "over HTTP: a wildcard tool deny, a default deny, an unknown agent (-32000 each); the session goes on",
          sdk=True, transport="http")
async def _(client: Any) -> None:
    from mcp import MCPError

    for arguments in ({"agent_id": "dev", "server": "raw", "tool": "drop_table", "args": {"table": "t"}},
                      {"agent_id": "reader", "server": "raw", "tool": "add", "args": {"a": 1, "b": 1}},
                      {"agent_id": "stranger", "server": "raw", "tool": "echo", "args": {"text": "hi"}}):
        try:
            await client.call_tool("execute_tool", arguments)
        except MCPError:
            pass
    await client.call_tool("execute_tool", {"agent_id": "reader", "server": "raw", "tool": "echo", "args": {"text": "allowed"}})


@scenario("http_progress", "over HTTP: a call with a progress token is answered over SSE, its progress before its response",
          sdk=True, transport="http", servers={"sdk": SDK})
async def _(client: Any) -> None:
    async def progress(value: float, total: float | None, message: str | None) -> None:
        pass

    await client.call_tool("execute_tool", {"agent_id": "dev", "server": "sdk", "tool": "slow", "args": {"steps": 3}}, progress_callback=progress)
    await client.call_tool("execute_tool", {"agent_id": "dev", "server": "sdk", "tool": "echo", "args": {"text": "after"}})


@scenario("http_sessions", "over HTTP: two SDK Clients at once on one gateway, sharing the raw server; one transcript per session",
          sdk=True, transport="http", sessions=2, servers={"raw": RAW, "sdk": SDK})
async def _(clients: Any) -> None:
    import trio

    async def progress(value: float, total: float | None, message: str | None) -> None:
        pass

    async def session(client: Any, server: str, lister: str) -> None:
        await client.call_tool("execute_tool", {"agent_id": "dev", "server": server, "tool": "echo", "args": {"text": server}})
        await client.call_tool("execute_tool", {"agent_id": "dev", "server": "raw", "tool": "slow", "args": {"steps": 2}},
                               progress_callback=progress)
        await client.call_tool("get_server_tools", {"agent_id": lister, "server": "raw", "names": "echo,drop_table"})

    async with trio.open_nursery() as both:
        both.start_soon(session, clients[0], "sdk", "dev")
        both.start_soon(session, clients[1], "raw", "reader")
