"""Hot reload end to end: a real `lockgate serve`, real files, real servers.

Each test edits the files a running gateway was started with and watches
the effect through the SDK client (``get_gateway_status`` in debug mode).
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trio
from mcp import Client, MCPError

from .conftest import RULES, SERVERS, Setup, processes_mentioning, structured

GATED = str(SERVERS / "gated_server.py")
OPEN_RULES: dict[str, Any] = {"agents": {"dev": {"allow": {"servers": ["*"]}}}}


async def until(check: Callable[[], Awaitable[bool]], seconds: float = 15) -> None:
    """Poll ``check`` until it holds (bounded; the bound is not a timing assertion)."""
    with trio.fail_after(seconds):
        while not await check():
            await trio.sleep(0.02)


async def status(client: Client) -> dict[str, Any]:
    result = structured(await client.call_tool("get_gateway_status", {"agent_id": "dev"}))
    assert isinstance(result, dict)
    return result


async def visible(client: Client, agent: str) -> list[str]:
    return [s["name"] for s in structured(await client.call_tool("list_servers", {"agent_id": agent}))["result"]]


async def execute(client: Client, server: str, tool: str, **args: Any) -> Any:
    result = await client.call_tool("execute_tool", {"agent_id": "dev", "server": server, "tool": tool, "args": args})
    return result.structured_content["result"]


def add_gated(setup: Setup, name: str, version: str) -> None:
    setup.add(name, GATED, "--name", version, "--marker", str(setup.tmp))


async def test_rules_change_applies_and_an_invalid_file_keeps_the_running_rules(setup: Setup) -> None:
    setup.env["GATEWAY_DEBUG"] = "1"
    setup.write()
    async with setup.client() as client:
        assert await visible(client, "guest") == []
        setup.rules.write_text(json.dumps({**RULES, "agents": {**RULES["agents"], "guest": {"allow": {"servers": ["testing"]}}}}))

        async def guest_sees_testing() -> bool:
            return await visible(client, "guest") == ["testing"]

        await until(guest_sees_testing)

        setup.rules.write_text('{"agents": ')

        async def failed(count: int) -> bool:
            return (await status(client))["reload"]["failures"] == count

        await until(lambda: failed(1))
        assert await visible(client, "guest") == ["testing"]  # still the last valid rules
        setup.rules.write_text(json.dumps({"agents": {"dev": {"allow": {"servers": 3}}}}))
        await until(lambda: failed(2))
        reload = (await status(client))["reload"]
        assert (reload["attempts"], reload["successes"], reload["last_result"]) == (3, 1, "rejected")
        assert reload["last_error"]["problems"] == [
            {"file": str(setup.rules), "path": "agents.dev.allow.servers", "message": "expected an array of strings, got 3"}
        ]
        assert reload["files"][str(setup.rules)]["loaded"] is not None
        assert await visible(client, "guest") == ["testing"]


async def test_calls_in_flight_finish_on_changed_and_removed_servers(setup: Setup) -> None:
    setup.env["GATEWAY_DEBUG"] = "1"
    setup.servers = {}
    add_gated(setup, "gated", "v1")
    setup.write(OPEN_RULES)
    results: dict[str, Any] = {}

    async def hold(key: str, server: str) -> None:
        results[key] = await execute(client, server, "wait_for", path=str(setup.tmp / key))

    async def in_flight(server: str, count: int) -> bool:
        servers = (await status(client))["servers"]
        return server in servers and servers[server]["pending_calls"] == count

    async def reloaded(count: int, draining: list[str]) -> bool:
        reload = (await status(client))["reload"]
        return reload["successes"] == count and reload["draining"] == draining

    async with setup.client() as client, trio.open_nursery() as nursery:
        nursery.start_soon(hold, "release1", "gated")
        await until(lambda: in_flight("gated", 1))

        # Change gated (new arguments) and add another server while the call waits.
        setup.servers = {}
        add_gated(setup, "gated", "v2")
        add_gated(setup, "extra", "v3")
        setup.write(OPEN_RULES)
        await until(lambda: reloaded(1, ["gated"]))
        assert await visible(client, "dev") == ["gated", "extra"]
        assert await execute(client, "gated", "whoami") == "v2"  # a new process, the old one still busy
        assert await execute(client, "extra", "whoami") == "v3"
        (setup.tmp / "release1").touch()
        await until(lambda: reloaded(1, []))
        assert results["release1"] == "v1: released"

        # Remove gated while a call waits on it.
        nursery.start_soon(hold, "release2", "gated")
        await until(lambda: in_flight("gated", 1))
        setup.servers = {}
        add_gated(setup, "extra", "v3")
        setup.write(OPEN_RULES)
        await until(lambda: reloaded(2, ["gated"]))
        assert await visible(client, "dev") == ["extra"]
        with pytest.raises(MCPError) as gone:
            await execute(client, "gated", "whoami")
        assert gone.value.data == {"code": "SERVER_UNAVAILABLE", "server": "gated", "reason": "not configured"}
        (setup.tmp / "release2").touch()
        await until(lambda: reloaded(2, []))
        assert results["release2"] == "v2: released"
        assert await execute(client, "extra", "whoami") == "v3"  # the unchanged server kept running


async def test_sighup_reloads_at_once(setup: Setup) -> None:
    setup.env["GATEWAY_DEBUG"] = "1"
    setup.write()
    async with setup.client() as client:
        [gateway] = processes_mentioning(str(setup.config))
        os.kill(gateway, signal.SIGHUP)

        async def reloaded() -> bool:
            return (await status(client))["reload"]["successes"] == 1

        await until(reloaded)
        reload = (await status(client))["reload"]
        assert reload["files"] == {}  # nothing changed: SIGHUP alone


async def test_rapid_writes_give_one_reload(setup: Setup) -> None:
    setup.env["GATEWAY_DEBUG"] = "1"
    setup.write()
    async with setup.client() as client:
        for n in range(5):
            setup.rules.write_text(json.dumps({**RULES, "defaults": {"deny_on_missing_agent": n % 2 == 0}}))
        temporary = setup.tmp / "rules.tmp"
        temporary.write_text(json.dumps({**RULES, "agents": {**RULES["agents"], "late": {}}}))
        os.replace(temporary, setup.rules)

        async def reloaded() -> bool:
            return (await status(client))["reload"]["attempts"] >= 1

        await until(reloaded)
        await trio.sleep(1.0)  # four more polls: nothing else happens
        reload = (await status(client))["reload"]
        assert (reload["attempts"], reload["successes"]) == (1, 1)
        with pytest.raises(MCPError) as denied:
            await client.call_tool("list_servers", {"agent_id": "nobody"})
        assert denied.value.data["rule"] == "agents.nobody: not defined"
        assert await visible(client, "late") == []
