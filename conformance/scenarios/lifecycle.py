"""Downstreams that crash, misbehave, page or talk back; progress, cancellation, concurrency and size."""

from __future__ import annotations

from typing import Any

from conformance.clients import Raw, call_params
from conformance.scenarios.base import RAW, SDK, scenario

# -- downstream lifecycle --------------------------------------------------------------


@scenario("crash_and_restart", "a server that dies mid-call: the call fails at once, the next call restarts it")
async def _(raw: Raw) -> None:
    await raw.init()
    await raw.call("execute_tool", agent_id="dev", server="raw", tool="crash")
    await raw.call("execute_tool", agent_id="dev", server="raw", tool="echo", args={"text": "back"})


@scenario("garbage_output", "a server that writes lines that are not JSON-RPC: ignored",
          servers={"raw": {**RAW, "args": ["servers/raw_server.py", "--garbage-at-start"]}})
async def _(raw: Raw) -> None:
    await raw.init()
    await raw.call("execute_tool", agent_id="dev", server="raw", tool="garbage")


@scenario("paged_tools_list", "a server that pages tools/list 4 at a time: the gateway fetches every page",
          servers={"raw": {**RAW, "args": ["servers/raw_server.py", "--page-size", "4"]}})
async def _(raw: Raw) -> None:
    await raw.init()
    await raw.call("get_server_tools", agent_id="dev", server="raw", pattern="*e*")


@scenario("list_changed", "a server announces notifications/tools/list_changed: the gateway lists again")
async def _(raw: Raw) -> None:
    await raw.init()
    await raw.call("execute_tool", agent_id="dev", server="raw", tool="grow")
    await raw.call("execute_tool", agent_id="dev", server="raw", tool="echo", args={"text": "after"})
    await raw.call("get_server_tools", agent_id="dev", server="raw", names="grown")


@scenario("server_talks_back", "a server sends a log notification, a ping and a sampling request: pong, -32601, a log line")
async def _(raw: Raw) -> None:
    await raw.init()
    await raw.call("execute_tool", agent_id="dev", server="raw", tool="log")
    await raw.call("execute_tool", agent_id="dev", server="raw", tool="talk_back")
    await raw.call("execute_tool", agent_id="dev", server="raw", tool="echo", args={"text": "after"})


@scenario("eager_start", "GATEWAY_INIT_STRATEGY=eager: servers start before the first call", env={"GATEWAY_INIT_STRATEGY": "eager"},
          servers={"raw": RAW, "sdk": SDK})
async def _(raw: Raw) -> None:
    await raw.init()
    await raw.call("execute_tool", agent_id="dev", server="sdk", tool="echo", args={"text": "warm"})


@scenario("debug_status", "--debug: the fourth gateway tool get_gateway_status", env={"GATEWAY_DEBUG": "1"})
async def _(raw: Raw) -> None:
    await raw.init()
    await raw.request("tools/list")
    await raw.call("execute_tool", agent_id="dev", server="raw", tool="echo", args={"text": "x"})
    await raw.call("get_gateway_status", agent_id="dev")


# -- progress, cancellation, concurrency, size -----------------------------------------


@scenario("progress_raw", "progress notifications relayed under the client's token (string and integer tokens)")
async def _(raw: Raw) -> None:
    await raw.init()
    await raw.request("tools/call", call_params("execute_tool", {"progressToken": "p-1"}, agent_id="dev", server="raw", tool="slow", args={"steps": 3}))
    await raw.request("tools/call", call_params("execute_tool", {"progressToken": 99}, agent_id="dev", server="raw", tool="slow", args={"steps": 2}))
    await raw.call("execute_tool", agent_id="dev", server="raw", tool="slow", args={"steps": 2})


@scenario("progress_sdk", "SDK Client with a progress callback, SDK server reporting progress", sdk=True, servers={"sdk": SDK})
async def _(client: Any) -> None:
    seen: list[float] = []

    async def progress(value: float, total: float | None, message: str | None) -> None:
        seen.append(value)

    await client.call_tool("execute_tool", {"agent_id": "dev", "server": "sdk", "tool": "slow", "args": {"steps": 3}}, progress_callback=progress)


@scenario("cancellation", "the client cancels a call in flight: the server gets notifications/cancelled, the client no answer")
async def _(raw: Raw) -> None:
    await raw.init()
    await raw.send({"jsonrpc": "2.0", "id": 50, "method": "tools/call",
                    "params": call_params("execute_tool", {"progressToken": "c"}, agent_id="dev", server="raw", tool="hang")})
    await raw.wait(lambda m: isinstance(m, dict) and m.get("method") == "notifications/progress")
    await raw.notify("notifications/cancelled", {"requestId": 50, "reason": "the user gave up"})
    await raw.notify("notifications/cancelled", {"requestId": 404})
    await raw.call("execute_tool", agent_id="dev", server="raw", tool="echo", args={"text": "after the cancel"})


@scenario("client_goes_away", "stdin closes with a call in flight: the call is abandoned and the server told")
async def _(raw: Raw) -> None:
    await raw.init()
    await raw.send({"jsonrpc": "2.0", "id": 60, "method": "tools/call",
                    "params": call_params("execute_tool", {"progressToken": "g"}, agent_id="dev", server="raw", tool="hang")})
    await raw.wait(lambda m: isinstance(m, dict) and m.get("method") == "notifications/progress")


@scenario("concurrent_requests", "several calls in flight at once on one session, answered by id; a duplicate id is refused",
          servers={"raw": RAW, "sdk": SDK})
async def _(raw: Raw) -> None:
    await raw.init()
    await raw.call("execute_tool", agent_id="dev", server="raw", tool="echo", args={"text": "warm"})
    await raw.call("execute_tool", agent_id="dev", server="sdk", tool="echo", args={"text": "warm"})
    await raw.send({"jsonrpc": "2.0", "id": 70, "method": "tools/call", "params": call_params("execute_tool", agent_id="dev", server="raw", tool="hang", timeout_ms=400)})
    await raw.send({"jsonrpc": "2.0", "id": 70, "method": "tools/call", "params": call_params("list_servers", agent_id="dev")})
    ids = list(range(71, 77))
    for i in ids:
        server = "raw" if i % 2 else "sdk"
        await raw.send({"jsonrpc": "2.0", "id": i, "method": "tools/call", "params": call_params("execute_tool", agent_id="dev", server=server, tool="echo", args={"text": f"n{i}"})})
    for i in [70, *ids]:
        await raw.response(i)


@scenario("large_payloads", "a 70 KB result and a 40 KB argument through the gateway, unchanged", servers={"sdk": SDK, "raw": RAW})
async def _(raw: Raw) -> None:
    await raw.init()
    await raw.call("execute_tool", agent_id="dev", server="raw", tool="big", args={"size": 70_000})
    await raw.call("execute_tool", agent_id="dev", server="sdk", tool="echo", args={"text": "y" * 40_000})
