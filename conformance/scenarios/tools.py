"""The gateway tools at work: list_servers, get_server_tools, execute_tool, and real PyPI servers."""

from __future__ import annotations

import json
from typing import Any

from conformance.clients import Raw
from conformance.scenarios.base import GIT, NOTES, RAW, ROOT, SDK, TIME, UTILS, scenario

# -- list, get, execute ----------------------------------------------------------------


@scenario("list_servers", "list_servers for several agents, and with include_metadata", servers={"raw": RAW, "sdk": SDK})
async def _(raw: Raw) -> None:
    await raw.init()
    for agent in ("dev", "blocked", "narrow"):
        await raw.call("list_servers", agent_id=agent)
    await raw.call("list_servers", agent_id="dev", include_metadata=True)


@scenario("get_server_tools_all", "get_server_tools without filters; the policy hides drop_table")
async def _(raw: Raw) -> None:
    await raw.init()
    await raw.call("get_server_tools", agent_id="dev", server="raw")
    await raw.call("get_server_tools", agent_id="reader", server="raw")


@scenario("get_server_tools_names", "get_server_tools with names as a string and as an array, including unknown and denied names")
async def _(raw: Raw) -> None:
    await raw.init()
    await raw.call("get_server_tools", agent_id="dev", server="raw", names="echo,add")
    await raw.call("get_server_tools", agent_id="dev", server="raw", names=["slow", "nope", "drop_table"])


@scenario("get_server_tools_pattern", "get_server_tools with a glob pattern, alone and with names")
async def _(raw: Raw) -> None:
    await raw.init()
    await raw.call("get_server_tools", agent_id="dev", server="raw", pattern="*_user")
    await raw.call("get_server_tools", agent_id="dev", server="raw", pattern="[eg]*", names="echo,get_user,add")


@scenario("get_server_tools_budget", "get_server_tools with max_schema_tokens: 0, small, and enough for all")
async def _(raw: Raw) -> None:
    await raw.init()
    for budget in (0, 60, 100000):
        await raw.call("get_server_tools", agent_id="dev", server="raw", max_schema_tokens=budget)


@scenario("execute_sdk_client", "SDK Client: list_servers, get_server_tools and execute_tool on the SDK server", sdk=True, servers={"sdk": SDK})
async def _(client: Any) -> None:
    await client.call_tool("list_servers", {"agent_id": "dev"})
    await client.call_tool("get_server_tools", {"agent_id": "dev", "server": "sdk", "names": "echo"})
    await client.call_tool("execute_tool", {"agent_id": "dev", "server": "sdk", "tool": "echo", "args": {"text": "hello"}})


@scenario("execute_results", "execute_tool: a result, an isError result, a downstream JSON-RPC error, a 0-byte result")
async def _(raw: Raw) -> None:
    await raw.init()
    await raw.call("execute_tool", agent_id="dev", server="raw", tool="add", args={"a": 2, "b": 3})
    await raw.call("execute_tool", agent_id="dev", server="raw", tool="fail", args={"message": "no luck"})
    await raw.call("execute_tool", agent_id="dev", server="raw", tool="rpc_error")
    await raw.call("execute_tool", agent_id="dev", server="raw", tool="big", args={"size": 0})


@scenario("execute_examples", "SDK Client against the bundled examples: researcher, writer and default agents", sdk=True,
          servers={"notes": NOTES, "utils": UTILS}, rules=json.loads((ROOT / "examples" / ".mcp-gateway-rules.json").read_text()))
async def _(client: Any) -> None:
    from mcp import MCPError

    await client.call_tool("list_servers", {"agent_id": "researcher"})
    await client.call_tool("get_server_tools", {"agent_id": "writer", "server": "notes"})
    await client.call_tool("execute_tool", {"agent_id": "writer", "server": "notes", "tool": "add_note", "args": {"title": "t", "body": "b"}})
    await client.call_tool("execute_tool", {"agent_id": "researcher", "server": "notes", "tool": "list_notes", "args": {}})
    await client.call_tool("execute_tool", {"server": "utils", "tool": "word_count", "args": {"text": "one two three"}})
    for denied in ({"agent_id": "writer", "server": "notes", "tool": "delete_note", "args": {"note_id": 1}},
                   {"agent_id": "researcher", "server": "notes", "tool": "add_note", "args": {}}):
        try:
            await client.call_tool("execute_tool", denied)
        except MCPError:
            pass


@scenario("server_time", "the PyPI mcp-server-time behind the gateway: its tools and a conversion", servers={"time": TIME})
async def _(raw: Raw) -> None:
    await raw.init()
    await raw.call("get_server_tools", agent_id="dev", server="time")
    await raw.call("execute_tool", agent_id="dev", server="time", tool="convert_time",
                   args={"source_timezone": "UTC", "time": "12:00", "target_timezone": "UTC"})


@scenario("server_git", "the PyPI mcp-server-git behind the gateway: status and log of a fixed repository", servers={"git": GIT})
async def _(raw: Raw) -> None:
    await raw.init()
    await raw.call("get_server_tools", agent_id="dev", server="git", names="git_status,git_log")
    await raw.call("execute_tool", agent_id="dev", server="git", tool="git_status", args={"repo_path": "repo"})
    await raw.call("execute_tool", agent_id="dev", server="git", tool="git_log", args={"repo_path": "repo", "max_count": 1})
