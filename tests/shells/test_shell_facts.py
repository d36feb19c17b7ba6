"""Facts the shells report, and the gateway behaving as before once the core decided.

A stdio server's line over the limit, a server that stops reading its input,
an HTTP client's stream that falls behind, and a request id already in
flight: the shells report what they saw (or ask :mod:`lockgate.core.http`),
the core decides, and clients see what they always saw.
"""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import trio

from lockgate.core import (
    Action,
    ClientFellBehind,
    ClientMessageReceived,
    ClientOpened,
    DownstreamExited,
    DownstreamMessageReceived,
    DownstreamNotReading,
    DropStream,
    Event,
    Gateway,
    GatewayStarted,
    load_config,
    SendToClient,
    Settings,
)
from lockgate.core.http import GET_STREAM
from lockgate.shells.downstream_stdio import StdioDownstream
from lockgate.shells.http_sessions import STREAM_BUFFER, HttpSession
from lockgate.shells.runtime import Runtime

from .helpers import FakeCore, pid_exists
from .test_http import execute, running

RAW = str(Path(__file__).with_name("raw_mcp_server.py"))
RULES = {"agents": {"dev": {"allow": {"servers": ["*"]}}}, "defaults": {"deny_on_missing_agent": False}}
NOTE = {"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": "info", "data": "x"}}


class StdioClient:
    """One client of a real gateway driven through a :class:`Runtime`, as the stdio front would."""

    def __init__(self, runtime: Runtime, core: FakeCore) -> None:
        self.runtime = runtime
        self.core = core
        self.answers: dict[Any, dict[str, Any]] = {}
        self._changed = trio.Event()

    async def send(self, action: SendToClient) -> None:
        if "id" in action.message:
            self.answers[action.message["id"]] = action.message
            self._changed.set()
            self._changed = trio.Event()

    async def message(self, message: dict[str, Any]) -> None:
        await self.runtime.feed(ClientMessageReceived(now=trio.current_time(), client=0, data=json.dumps(message).encode()))

    async def answer(self, request_id: Any) -> dict[str, Any]:
        while request_id not in self.answers:
            await self._changed.wait()
        return self.answers[request_id]

    async def call(self, request_id: Any, tool: str, **args: Any) -> dict[str, Any]:
        """Ask for ``tool`` of the raw server and wait for the answer."""
        await self.message(execute(request_id, tool, **args))
        return await self.answer(request_id)

    def downstream(self) -> StdioDownstream:
        """The one live server connection."""
        [live] = list(self.runtime._downstreams)
        assert isinstance(live, StdioDownstream)
        return live


@asynccontextmanager
async def gateway(tmp_path: Path, *, downstream_buffer: int = 1024, **settings: Any) -> AsyncIterator[StdioClient]:
    """A real gateway over the raw server, its events recorded, one initialized client."""
    config = load_config(
        servers=json.dumps({"mcpServers": {"raw": {"command": sys.executable, "args": [RAW]}}}),
        servers_file="servers.json",
        rules=json.dumps(RULES),
        rules_file="rules.json",
        environ={},
        settings=Settings(audit_log=str(tmp_path / "audit.jsonl"), init_strategy="lazy", **settings),
    )
    core = FakeCore(Gateway(config).handle)
    runtime = Runtime(core, settings=config.settings, downstream_buffer=downstream_buffer)
    client = StdioClient(runtime, core)
    async with trio.open_nursery() as nursery:
        await nursery.start(runtime.run)
        runtime.register_client(0, client.send)
        await runtime.feed(GatewayStarted(now=trio.current_time()))
        await runtime.feed(ClientOpened(now=trio.current_time(), client=0))
        init = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}
        await client.message({"jsonrpc": "2.0", "id": "init", "method": "initialize", "params": init})
        await client.answer("init")
        await client.message({"jsonrpc": "2.0", "method": "notifications/initialized"})
        yield client
        await runtime.aclose()


def reason(answer: dict[str, Any]) -> tuple[int, str]:
    """The error code of a failed call and the reason its server was unavailable."""
    return answer["error"]["code"], answer["error"]["data"]["reason"]


async def test_an_oversized_line_fails_the_call_as_before_and_the_server_is_restarted(tmp_path: Path) -> None:
    with trio.fail_after(20):
        # The downstream limit is the core's: four times the client limit.
        async with gateway(tmp_path, max_message_bytes=100_000) as client:
            assert (await client.call(1, "echo", text="hi"))["result"]["content"][0]["text"] == "hi"
            first = client.downstream()
            failed = await client.call(2, "big", size=500_000)
            assert reason(failed) == (-32001, "sent a message over 400000 bytes")
            # The shell reported the fact; the core stopped the server (nothing comes back about it).
            await first.finished.wait()
            assert first.pid is not None and not pid_exists(first.pid)
            again = await client.call(3, "echo", text="fine")
            assert again["result"]["content"][0]["text"] == "fine"
    too_large = [e for e in client.core.events if isinstance(e, DownstreamMessageReceived) and e.too_large]
    assert [(e.downstream, e.data) for e in too_large] == [(first.downstream, b"")]
    assert not any(isinstance(e, DownstreamExited) and e.downstream == first.downstream for e in client.core.events)


async def test_a_server_that_stops_reading_is_reported_once_stopped_and_its_calls_fail(tmp_path: Path) -> None:
    with trio.fail_after(20):
        async with gateway(tmp_path, downstream_buffer=2) as client:
            assert "result" in await client.call(1, "echo", text="hi")
            server = client.downstream()
            await client.message(execute("deaf", "deaf"))
            # Each call is over the pipe's buffer: the writer's queue fills, then overflows.
            sent = ["deaf"]
            while not client.core.of_type(DownstreamNotReading):
                sent.append(f"e{len(sent)}")
                await client.message(execute(sent[-1], "echo", text="y" * 100_000))
            for request_id in sent:
                assert reason(await client.answer(request_id)) == (-32001, "stopped reading its input")
            await server.finished.wait()
            assert server.pid is not None and not pid_exists(server.pid)
            # Calls go on, to a new process.
            assert (await client.call("after", "echo", text="ok"))["result"]["content"][0]["text"] == "ok"
    reports = client.core.of_type(DownstreamNotReading)
    assert reports == [DownstreamNotReading(now=reports[0].now, downstream=server.downstream)]
    assert not any(isinstance(e, DownstreamExited) for e in client.core.events)


async def test_a_stream_that_falls_behind_is_reported_once_and_dropped_by_the_core(tmp_path: Path) -> None:
    session = HttpSession(id="h")
    burst = STREAM_BUFFER + 10

    def script(event: Event) -> list[Action]:
        if isinstance(event, ClientMessageReceived):
            return [SendToClient(client="h", message=NOTE) for _ in range(burst)]
        if isinstance(event, ClientFellBehind):
            return [DropStream(client=event.client, request=event.request)]
        return []

    core = FakeCore(script)
    runtime = Runtime(core, settings=Settings(audit_log=str(tmp_path / "audit.jsonl")))
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(runtime.run)
            runtime.register_client("h", session.send, drop_stream=session.drop_stream)
            await runtime.feed(ClientOpened(now=trio.current_time(), client="h", transport="http"))
            _, receive = session.attach(GET_STREAM)
            await runtime.feed(ClientMessageReceived(now=trio.current_time(), client="h", data=b"{}"))
            await core.wait_for(lambda events: any(isinstance(e, ClientFellBehind) for e in events))
            frames = [frame async for frame in receive]  # the stream ends: the core dropped it
            await runtime.aclose()
    [behind] = [e for e in core.events if isinstance(e, ClientFellBehind)]
    assert behind == ClientFellBehind(now=behind.now, client="h", request=None)
    assert len(frames) == STREAM_BUFFER and not session.streams
    # Nothing is lost: the client resumes from the buffer with Last-Event-ID.
    replay = session.events.replay(str(STREAM_BUFFER))
    assert replay is not None and len(replay.events) == burst - STREAM_BUFFER


async def test_a_request_id_in_flight_gets_409_from_the_core_and_the_first_is_answered(tmp_path: Path) -> None:
    async with running(tmp_path) as gate:
        session = await gate.initialize()
        first: list[httpx.Response] = []

        async def slow() -> None:
            first.append(await gate.post(execute("d", "sleep", seconds=0.5), session))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(slow)
            with trio.fail_after(10):
                while not gate.gateway.status()["calls_in_flight"]:
                    await trio.sleep(0.02)
            again = await gate.post(execute("d", "echo", text="twice"), session)
            assert again.status_code == 409
            assert again.json()["id"] == "d" and again.json()["error"]["code"] == -32600
        assert first[0].status_code == 200 and first[0].json()["result"]["content"][0]["text"] == "slept"
