"""per_client isolation with several clients: the real core and runtime in this process,
real downstream processes (``servers/raw_server.py``) behind them.

The stdio front serves one client per gateway, so these tests drive the
runtime as a multi-client transport would: each client registers a ``send``
and feeds its messages; ``ClientClosed`` ends its session.
"""

from __future__ import annotations

import itertools
import json
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

from lockgate.core._actions import SendToClient
from lockgate.core._config import load_config
from lockgate.core._events import ClientClosed, ClientMessageReceived, ClientOpened, GatewayStarted, ShutdownRequested
from lockgate.core._gateway import Gateway
from lockgate.shells.runtime import Runtime

from .conftest import RULES, processes_mentioning
from .test_instances import RAW, pid_alive, wait_gone


class Clients:
    """Many clients of one in-process gateway."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.inbox: dict[int, trio.MemoryReceiveChannel[dict[str, Any]]] = {}
        self.ids = itertools.count(1)

    async def open(self, client: int) -> None:
        send_channel, receive_channel = trio.open_memory_channel[dict[str, Any]](100)

        async def send(action: SendToClient) -> None:
            send_channel.send_nowait(action.message)

        self.inbox[client] = receive_channel
        self.runtime.register_client(client, send)
        await self.runtime.feed(ClientOpened(now=trio.current_time(), client=client, transport="test"))
        await self.request(client, "initialize", {"protocolVersion": "2025-11-25", "capabilities": {}})

    async def request(self, client: int, method: str, params: dict[str, Any]) -> dict[str, Any]:
        request_id = next(self.ids)
        data = json.dumps({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}).encode()
        await self.runtime.feed(ClientMessageReceived(now=trio.current_time(), client=client, data=data))
        with trio.fail_after(20):
            async for message in self.inbox[client]:
                if message.get("id") == request_id:
                    return message
        raise AssertionError("inbox closed")

    async def whoami(self, client: int) -> dict[str, Any]:
        args = {"agent_id": "dev", "server": "pool", "tool": "whoami", "args": {}}
        return await self.request(client, "tools/call", {"name": "execute_tool", "arguments": args})

    async def pid(self, client: int) -> int:
        answer = await self.whoami(client)
        return int(answer["result"]["content"][0]["text"].split()[1])

    async def close(self, client: int) -> None:
        await self.runtime.feed(ClientClosed(now=trio.current_time(), client=client))


@asynccontextmanager
async def gateway(tmp_path: Path, **pool: Any) -> AsyncIterator[Clients]:
    instance = {"command": sys.executable, "args": [RAW, "--marker", str(tmp_path)]}
    servers = {"mcpServers": {"pool": {"instances": [instance, instance], "isolation": "per_client", **pool}}}
    config = load_config(
        servers=json.dumps(servers),
        servers_file=".mcp.json",
        rules=json.dumps(RULES),
        rules_file="rules.json",
        environ={"GATEWAY_AUDIT_LOG": "/dev/null", "GATEWAY_INIT_STRATEGY": "lazy"},
    )
    runtime = Runtime(Gateway(config), settings=config.settings)
    async with trio.open_nursery() as nursery:
        await nursery.start(runtime.run)
        await runtime.feed(GatewayStarted(now=trio.current_time(), seed=7))
        try:
            yield Clients(runtime)
        finally:
            await runtime.feed(ShutdownRequested(now=trio.current_time()))
            await runtime.aclose()


async def test_two_clients_get_their_own_sessions_and_keep_them(tmp_path: Path) -> None:
    async with gateway(tmp_path) as clients:
        await clients.open(1)
        await clients.open(2)
        a, b = await clients.pid(1), await clients.pid(2)
        assert a != b
        assert await clients.pid(1) == a and await clients.pid(2) == b
        # The first client leaves: its process stops, the other one is untouched.
        await clients.close(1)
        await wait_gone(a)
        assert await clients.pid(2) == b and pid_alive(b)


async def test_max_processes_refuses_a_third_client_until_one_leaves(tmp_path: Path) -> None:
    async with gateway(tmp_path, max_processes=2) as clients:
        for client in (1, 2, 3):
            await clients.open(client)
        await clients.pid(1)
        await clients.pid(2)
        refused = await clients.whoami(3)
        assert refused["error"]["data"]["reason"] == "all 2 of its processes are in use (max_processes)"
        await clients.close(1)
        assert await clients.pid(3) > 0


async def test_many_client_sessions_come_and_go_and_leave_no_process(tmp_path: Path) -> None:
    pids = set()
    sessions, at_once = 1000, 10

    async def session(client: int) -> None:
        await clients.open(client)
        pids.add(await clients.pid(client))
        await clients.close(client)

    async with gateway(tmp_path) as clients:
        for first in range(0, sessions, at_once):
            async with trio.open_nursery() as nursery:
                for client in range(first, first + at_once):
                    nursery.start_soon(session, client)
        assert len(pids) == sessions  # each session had a process of its own
        with trio.fail_after(20):
            while processes_mentioning(str(tmp_path)):
                await trio.sleep(0.05)
