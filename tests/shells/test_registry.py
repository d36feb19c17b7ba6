"""The live registry over a running gateway: a registered stdio server serves calls, leaves without losing one, and is back after a restart."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import trio

from lockgate.core import ClientMessageReceived, ClientOpened, Config, Gateway, GatewayStarted, SendToClient, load_config
from lockgate.shells.registry import Deregistered, Registered, Registry, RegistrationRefused, load_registrations
from lockgate.shells.runtime import Runtime

ROOT = Path(__file__).resolve().parents[2]
UTILS = str(ROOT / "examples" / "servers" / "utils_server.py")
RULES = {"agents": {"dev": {"allow": {"servers": ["*"]}}}, "defaults": {"deny_on_missing_agent": False}}


def files(tmp_path: Path) -> tuple[Path, Path]:
    servers, rules = tmp_path / "servers.json", tmp_path / "rules.json"
    servers.write_text(json.dumps({"mcpServers": {"utils": {"command": sys.executable, "args": [UTILS]}}}))
    rules.write_text(json.dumps(RULES))
    return servers, rules


def base_config(tmp_path: Path) -> Config:
    servers, rules = files(tmp_path)
    config = load_config(servers=servers.read_text(), rules=rules.read_text(), environ={}, base_dir=str(tmp_path))
    settings = replace(config.settings, init_strategy="eager", health_interval=0, audit_log=str(tmp_path / "audit.jsonl"))
    return replace(config, settings=settings)


class Client:
    """One client of the runtime: sends requests and waits for their answers."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.answers: dict[Any, dict[str, Any]] = {}
        self.arrived = trio.Event()
        runtime.register_client(0, self.deliver)

    async def deliver(self, action: SendToClient) -> None:
        if "id" in action.message:
            self.answers[action.message["id"]] = action.message
            self.arrived.set()
            self.arrived = trio.Event()

    async def send(self, message: dict[str, Any]) -> None:
        await self.runtime.feed(ClientMessageReceived(now=trio.current_time(), client=0, data=json.dumps(message).encode()))

    async def answer(self, id: Any) -> dict[str, Any]:
        with trio.fail_after(30):
            while id not in self.answers:
                await self.arrived.wait()
        return self.answers.pop(id)

    async def request(self, id: Any, method: str, params: dict[str, Any]) -> dict[str, Any]:
        await self.send({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
        return await self.answer(id)


def execute(server: str, tool: str, **args: Any) -> dict[str, Any]:
    return {"name": "execute_tool", "arguments": {"agent_id": "dev", "server": server, "tool": tool, "args": args}}


def text(answer: dict[str, Any]) -> str:
    assert "result" in answer, answer
    return str(answer["result"]["content"][0]["text"])


@asynccontextmanager
async def gateway(registry: Registry) -> AsyncIterator[Client]:
    runtime = Runtime(Gateway(registry.config), settings=registry.config.settings)
    async with trio.open_nursery() as nursery:
        await nursery.start(runtime.run)
        registry.attach(runtime)
        client = Client(runtime)
        await runtime.feed(GatewayStarted(now=trio.current_time()))
        await runtime.feed(ClientOpened(now=trio.current_time(), client=0))
        params = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}
        await client.request("init", "initialize", params)
        await client.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        try:
            yield client
        finally:
            await runtime.aclose()
            nursery.cancel_scope.cancel()


async def test_a_registered_server_serves_leaves_without_losing_a_call_and_is_back_after_a_restart(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'state' / 'lockgate.db'}"
    table, found = load_registrations(url)
    assert (table, found) == (None, [])  # no database yet, and none is made just to look
    assert not (tmp_path / "state").exists()
    registry = Registry(base_config(tmp_path), url=url, environ=os.environ)
    async with gateway(registry) as client:
        # A command that does not exist is refused, and nothing is stored.
        refused = await registry.register({"server": "extra", "command": "no-such-command-anywhere"})
        assert refused == RegistrationRefused(
            400, "INVALID_REQUEST", "command not found: no-such-command-anywhere",
            {"errors": [{"loc": ["command"], "msg": "command not found: no-such-command-anywhere"}]},
        )
        registered = await registry.register(
            {"server": "extra", "command": sys.executable, "args": [UTILS], "instance_id": "e1", "env": {"TOKEN": "t0ps3cret"}}
        )
        assert registered == Registered("extra", "e1", "stdio")
        assert registered.json() == {"server": "extra", "instance_id": "e1", "transport": "stdio", "registered": True}
        assert text(await client.request(1, "tools/call", execute("extra", "echo", text="hi"))) == "hi"
        # A second instance of the file's server: the file's own keeps running.
        assert await registry.register({"server": "utils", "command": sys.executable, "args": [UTILS], "instance_id": "u1"}) == Registered("utils", "u1", "stdio")
        assert isinstance(await registry.register({"server": "utils", "command": sys.executable, "instance_id": "0"}), RegistrationRefused)
        conflict = await registry.register({"server": "extra", "command": sys.executable, "args": [UTILS], "instance_id": "e1"})
        assert isinstance(conflict, RegistrationRefused) and (conflict.status, conflict.code) == (409, "CONFLICT")
        assert [(r.server, r.instance_id, r.env_keys) for r in registry.registrations()] == [("extra", "e1", ("TOKEN",)), ("utils", "u1", ())]
        assert "t0ps3cret" not in repr(registry.registrations())

        # Deregistered with a call in flight: the call is answered, then the instance is gone.
        await client.send({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": execute("extra", "slow", seconds=1.0)})
        await trio.sleep(0.3)  # forwarded
        assert await registry.deregister("extra", "e1") == Deregistered("extra", "e1")
        slow = await client.answer(2)
        assert "result" in slow and not slow["result"].get("isError"), slow
        gone = await client.request(3, "tools/call", execute("extra", "echo", text="hi"))
        assert gone["error"]["data"]["code"] in ("SERVER_NOT_FOUND", "SERVER_UNAVAILABLE"), gone
        # A file instance is not the registry's to remove; an unknown one is not found.
        assert (await registry.deregister("utils", "0")).status == 409  # type: ignore[union-attr]
        assert (await registry.deregister("extra", "e1")).status == 404  # type: ignore[union-attr]
    registry.close()

    # A new process over the same database finds the registration that is left, and serves it.
    servers, rules = files(tmp_path)
    environment = {
        **os.environ, "GATEWAY_DATABASE_URL": url, "GATEWAY_AUDIT_LOG": str(tmp_path / "audit2.jsonl"),
        "GATEWAY_HEALTH_INTERVAL": "0",
    }
    command = [sys.executable, "-m", "lockgate.shells", "serve", "--config", str(servers), "--rules", str(rules)]
    process = await trio.lowlevel.open_process(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=environment)
    try:
        assert process.stdin is not None and process.stdout is not None
        lines = [
            {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}},
            {"jsonrpc": "2.0", "method": "notifications/initialized"},
            {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "list_servers", "arguments": {"agent_id": "dev"}}},
            {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": execute("utils", "echo", text="again")},
            {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": execute("utils", "echo", text="and again")},
        ]
        await process.stdin.send_all(b"".join(json.dumps(line).encode() + b"\n" for line in lines))
        answers: dict[Any, Any] = {}
        buffer = b""
        with trio.fail_after(60):
            while len(answers) < 4:
                chunk = await process.stdout.receive_some()
                assert chunk, "the gateway stopped"
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    message = json.loads(line)
                    if "id" in message:
                        answers[message["id"]] = message
        await process.stdin.aclose()
        assert process.stderr is not None
        log = b""
        with trio.fail_after(30):
            while chunk := await process.stderr.receive_some():
                log += chunk
            await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert [s["name"] for s in answers[1]["result"]["structuredContent"]["result"]] == ["utils"]
    assert {text(answers[2]), text(answers[3])} == {"again", "and again"}
    assert "1 registered instance merged from the registry" in log.decode(), log.decode()
    # The registration left is in the database, with its env, for the next start.
    table, found = load_registrations(url)
    assert table is not None
    assert [(r.server, r.instance_id) for r in found] == [("utils", "u1")]
    table.close()
