"""The runtime loop with a scripted fake core, real timers and real child processes."""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from lockgate.core import (
    Action,
    Audit,
    CancelTimer,
    ClientClosed,
    ClientMessageReceived,
    ClientOpened,
    CloseClient,
    DownstreamExited,
    DownstreamMessageReceived,
    DownstreamNotReading,
    DropStream,
    encode,
    Event,
    GatewayStarted,
    Log,
    SendToClient,
    SendToDownstream,
    ServerSpec,
    SetTimer,
    Settings,
    StartDownstream,
    StopDownstream,
    TimerFired,
)
from lockgate.shells.clients import QueuedSend
from lockgate.shells.downstream_stdio import StdioDownstream
from lockgate.shells.runtime import Runtime

from .helpers import FakeCore, child_spec, pid_exists, wait_session_empty


@asynccontextmanager
async def running(core: FakeCore, tmp_path: Path, **options: Any) -> AsyncIterator[Runtime]:
    runtime = Runtime(core, settings=Settings(audit_log=str(tmp_path / "logs" / "audit.jsonl")), **options)
    async with trio.open_nursery() as nursery:
        await nursery.start(runtime.run)
        yield runtime
        await runtime.aclose()


def now() -> float:
    return trio.current_time()


async def test_timers_fire_in_order_and_cancelled_ones_never(tmp_path: Path) -> None:
    deadlines: dict[int, float] = {}

    def script(event: Event) -> list[Action]:
        if isinstance(event, GatewayStarted):
            actions: list[Action] = []
            for i in range(2000):
                deadlines[i] = event.now + 0.05 + (i * 7919 % 2000) * 1e-4
                actions.append(SetTimer(timer=i, deadline=deadlines[i]))
            actions += [CancelTimer(timer=i) for i in range(0, 2000, 3)]
            return actions
        return []

    core = FakeCore(script)
    with trio.fail_after(5):
        async with running(core, tmp_path) as runtime:
            await runtime.feed(GatewayStarted(now=now()))
            await core.wait_for(lambda events: len(events) == 1 + 1333)
            await trio.sleep(0.1)
    fired = [e for e in core.events if isinstance(e, TimerFired)]
    assert [e.timer for e in fired] == sorted((i for i in range(2000) if i % 3), key=deadlines.__getitem__)
    assert all(e.now >= deadlines[e.timer] for e in fired)


async def test_client_delivery_failure_comes_back_as_client_closed_once(tmp_path: Path) -> None:
    closed: list[str] = []

    async def broken_send(action: SendToClient) -> None:
        raise trio.BrokenResourceError

    def script(event: Event) -> list[Action]:
        if isinstance(event, ClientMessageReceived):
            return [SendToClient(client="a", message={"n": 1}), SendToClient(client="a", message={"n": 2})]
        return []

    core = FakeCore(script)
    with trio.fail_after(5):
        async with running(core, tmp_path) as runtime:
            runtime.register_client("a", broken_send, lambda: closed.append("a"))
            await runtime.feed(ClientOpened(now=now(), client="a", transport="test"))
            await runtime.feed(ClientMessageReceived(now=now(), client="a", data=b"{}"))
            await runtime.feed(ClientMessageReceived(now=now(), client="a", data=b"{}"))  # dropped: gone
            await runtime.feed(ClientClosed(now=now(), client="a"))  # dropped: already reported
    assert [type(e) for e in core.events] == [ClientOpened, ClientMessageReceived, ClientClosed]
    assert closed == ["a"]


async def test_close_client_calls_close_and_reports_nothing(tmp_path: Path) -> None:
    closed: list[int] = []
    sent: list[SendToClient] = []

    async def send(action: SendToClient) -> None:
        sent.append(action)

    def script(event: Event) -> list[Action]:
        if isinstance(event, ClientMessageReceived):
            return [SendToClient(client=1, message={"bye": True}, request=5), CloseClient(client=1)]
        return []

    core = FakeCore(script)
    with trio.fail_after(5):
        async with running(core, tmp_path) as runtime:
            runtime.register_client(1, send, lambda: closed.append(1))
            await runtime.feed(ClientOpened(now=now(), client=1))
            await runtime.feed(ClientMessageReceived(now=now(), client=1, data=b"{}"))
            await runtime.feed(ClientClosed(now=now(), client=1))
    assert sent == [SendToClient(client=1, message={"bye": True}, request=5)]
    assert closed == [1]
    assert [type(e) for e in core.events] == [ClientOpened, ClientMessageReceived]


async def test_downstream_round_trip_and_stop(tmp_path: Path) -> None:
    def script(event: Event) -> list[Action]:
        if isinstance(event, GatewayStarted):
            return [
                StartDownstream(downstream=1, server="echo", spec=child_spec("echo", name="echo")),
                SendToDownstream(downstream=1, message={"jsonrpc": "2.0", "method": "hi", "params": {"text": "é\n"}}),
            ]
        if isinstance(event, DownstreamMessageReceived):
            return [StopDownstream(downstream=1), SendToDownstream(downstream=1, message={"dropped": True})]
        return []

    core = FakeCore(script)
    with trio.fail_after(10):
        async with running(core, tmp_path) as runtime:
            await runtime.feed(GatewayStarted(now=now()))
            await core.wait_for(lambda events: len(events) == 2)
            assert runtime.statistics().downstreams == 0
            await trio.sleep(0.2)
    received = core.events[1]
    assert isinstance(received, DownstreamMessageReceived)
    assert json.loads(received.data) == {"jsonrpc": "2.0", "method": "hi", "params": {"text": "é\n"}}
    assert len(core.events) == 2  # no DownstreamExited after the stop


async def test_a_downstream_that_stops_reading_is_reported_once_and_stopped_when_the_core_says(tmp_path: Path) -> None:
    big = "x" * 100_000

    def script(event: Event) -> list[Action]:
        if isinstance(event, GatewayStarted):
            return [StartDownstream(downstream=7, server="deaf", spec=child_spec("deaf", name="deaf"))]
        if isinstance(event, ClientOpened):  # the test's cue: the server is up
            return [SendToDownstream(downstream=7, message={"big": big}) for _ in range(20)]
        if isinstance(event, DownstreamNotReading):
            return [StopDownstream(downstream=7)]
        return []

    core = FakeCore(script)
    with trio.fail_after(10):
        async with running(core, tmp_path, downstream_buffer=4) as runtime:
            await runtime.feed(GatewayStarted(now=now()))
            await core.wait_for(lambda events: any(isinstance(e, DownstreamMessageReceived) for e in events))  # {"ready":true}
            [deaf] = list(runtime._downstreams)
            assert isinstance(deaf, StdioDownstream) and deaf.pid is not None
            await runtime.feed(ClientOpened(now=now(), client="cue"))
            await core.wait_for(lambda events: any(isinstance(e, DownstreamNotReading) for e in events))
            await deaf.finished.wait()
            assert not pid_exists(deaf.pid)
    # A burst of sends met the full queue many times; the fact went to the core once.
    reports = [e for e in core.events if isinstance(e, DownstreamNotReading)]
    assert reports == [DownstreamNotReading(now=reports[0].now, downstream=7)]
    assert not any(isinstance(e, DownstreamExited) for e in core.events)  # stopped, so nothing reported


async def test_exit_is_reported_once_and_later_messages_dropped(tmp_path: Path) -> None:
    def script(event: Event) -> list[Action]:
        if isinstance(event, GatewayStarted):
            return [StartDownstream(downstream=3, server="quit", spec=child_spec("exit", "4", name="quit"))]
        if isinstance(event, DownstreamExited):
            return [SendToDownstream(downstream=3, message={"late": True})]
        return []

    core = FakeCore(script)
    with trio.fail_after(10):
        async with running(core, tmp_path) as runtime:
            await runtime.feed(GatewayStarted(now=now()))
            await core.wait_for(lambda events: len(events) == 2)
    assert core.events[1] == DownstreamExited(now=core.events[1].now, downstream=3, reason="exited with code 4")


async def test_an_http_downstream_that_cannot_connect_is_reported_with_host_and_port(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    spec = ServerSpec(name="web", transport="http", url=f"http://user:pw@127.0.0.1:{port}/mcp?key=secret")

    def script(event: Event) -> list[Action]:
        if isinstance(event, GatewayStarted):
            return [StartDownstream(downstream=1, server="web", spec=spec), SendToDownstream(downstream=1, message={"jsonrpc": "2.0", "id": 1, "method": "initialize"})]
        return []

    core = FakeCore(script)
    with trio.fail_after(10):
        async with running(core, tmp_path) as runtime:
            await runtime.feed(GatewayStarted(now=now()))
            await core.wait_for(lambda events: len(events) == 2)
    assert isinstance(core.events[1], DownstreamExited)
    assert core.events[1].reason == f"connection refused to 127.0.0.1:{port}"


async def test_aclose_stops_every_downstream(tmp_path: Path) -> None:
    spec = ServerSpec(name="w", transport="stdio", command="sh", args=("-c", "echo '{}'; sleep 60 & sleep 60"))

    def script(event: Event) -> list[Action]:
        if isinstance(event, GatewayStarted):
            return [StartDownstream(downstream=i, server="w", spec=spec) for i in range(5)]
        return []

    core = FakeCore(script)
    with trio.fail_after(10):
        async with running(core, tmp_path) as runtime:
            await runtime.feed(GatewayStarted(now=now()))
            await core.wait_for(lambda events: len(events) == 6)
            pids = [ds.pid for ds in runtime._downstreams if isinstance(ds, StdioDownstream)]
    assert len(pids) == 5
    for pid in pids:
        assert pid is not None and not pid_exists(pid)
        assert await wait_session_empty(pid) == []
    assert len(core.events) == 6


async def test_audit_and_log_actions(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="lockgate")

    def script(event: Event) -> list[Action]:
        return [
            Audit(record={"event": "tool_call", "agent": "a", "decision": "allow"}),
            Log(level="warning", message="something odd", fields={"server": "s"}),
        ]

    core = FakeCore(script)
    with trio.fail_after(5):
        async with running(core, tmp_path) as runtime:
            await runtime.feed(GatewayStarted(now=now()))
            await runtime.feed(GatewayStarted(now=now()))
    lines = (tmp_path / "logs" / "audit.jsonl").read_text().splitlines()
    assert len(lines) == 2
    record = json.loads(lines[0])
    assert list(record) == ["time", "event", "agent", "decision"]
    assert record["time"].endswith("Z") and len(record["time"]) == len("2026-05-09T12:00:00.123Z")
    logged = [r for r in caplog.records if r.name == "lockgate.core"]
    assert [(r.levelno, r.getMessage(), r.fields) for r in logged] == [  # type: ignore[attr-defined]
        (logging.WARNING, "something odd", {"server": "s"})
    ] * 2


async def test_a_core_bug_is_contained_to_the_request_that_met_it(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    sent: list[SendToClient] = []

    async def send(action: SendToClient) -> None:
        sent.append(action)

    def script(event: Event) -> list[Action]:
        if isinstance(event, ClientMessageReceived):
            if b"boom" in event.data:
                raise RuntimeError("bug in the core")
            return [SendToClient(client=event.client, message={"jsonrpc": "2.0", "id": 2, "result": {}}, request=2)]
        return []

    core = FakeCore(script)
    with trio.fail_after(5):
        async with running(core, tmp_path) as runtime:
            for client in ("a", "b"):
                runtime.register_client(client, send)
                await runtime.feed(ClientOpened(now=now(), client=client))
            await runtime.feed(ClientMessageReceived(now=now(), client="a", data=b'{"jsonrpc":"2.0","id":1,"method":"boom"}'))
            await runtime.feed(ClientMessageReceived(now=now(), client="a", data=b'{"jsonrpc":"2.0","method":"boom"}'))
            await runtime.feed(ClientMessageReceived(now=now(), client="b", data=b'{"jsonrpc":"2.0","id":2,"method":"ok"}'))
            await runtime.feed(ClientMessageReceived(now=now(), client="a", data=b'{"jsonrpc":"2.0","id":2,"method":"ok"}'))
    assert [(a.client, a.message) for a in sent] == [
        # The request that met the bug gets -32603; the notification nothing; both clients carry on.
        ("a", {
            "jsonrpc": "2.0", "id": 1,
            "error": {
                "code": -32603, "message": "Internal error: the gateway failed to handle this request (logged)",
                "data": {"code": "INTERNAL_ERROR"},
            },
        }),
        ("b", {"jsonrpc": "2.0", "id": 2, "result": {}}),
        ("a", {"jsonrpc": "2.0", "id": 2, "result": {}}),
    ]
    assert [r.exc_info is not None for r in caplog.records if "internal error" in r.getMessage()] == [True, True]


async def test_a_core_bug_on_a_downstream_event_stops_that_downstream_and_reports_it(tmp_path: Path) -> None:
    def script(event: Event) -> list[Action]:
        if isinstance(event, GatewayStarted):
            return [
                StartDownstream(downstream=1, server="echo", spec=child_spec("echo", name="echo")),
                SendToDownstream(downstream=1, message={"jsonrpc": "2.0", "id": 1, "method": "ping"}),
            ]
        if isinstance(event, DownstreamMessageReceived):
            raise RuntimeError("bug in the core")
        return []

    core = FakeCore(script)
    with trio.fail_after(10):
        async with running(core, tmp_path) as runtime:
            await runtime.feed(GatewayStarted(now=now()))
            await core.wait_for(lambda events: any(isinstance(e, DownstreamExited) for e in events))
            forgotten = 1 not in runtime._downstreams
    [exited] = core.of_type(DownstreamExited)
    assert exited == DownstreamExited(now=exited.now, downstream=1, reason="internal error in the gateway (logged)")
    assert forgotten  # by the runtime, and stopped


async def test_an_answer_that_cannot_be_encoded_is_replaced_by_an_error(tmp_path: Path) -> None:
    send_channel, receive_channel = trio.open_memory_channel[SendToClient](10)

    def script(event: Event) -> list[Action]:
        if isinstance(event, ClientMessageReceived):
            return [
                SendToClient(client="h", message={"jsonrpc": "2.0", "method": "notifications/x", "params": {"v": float("nan")}}),
                SendToClient(client="h", message={"jsonrpc": "2.0", "id": 4, "result": {"v": "\ud800"}}, request=4),
                SendToClient(client="h", message={"jsonrpc": "2.0", "id": 5, "result": {}}, request=5),
            ]
        return []

    async def strict(action: SendToClient) -> None:
        encode(action.message)  # what a transport's writer does first
        send_channel.send_nowait(action)

    core = FakeCore(script)
    with trio.fail_after(5):
        async with running(core, tmp_path) as runtime:
            runtime.register_client("h", strict)
            await runtime.feed(ClientOpened(now=now(), client="h"))
            await runtime.feed(ClientMessageReceived(now=now(), client="h", data=b"{}"))
    delivered = [receive_channel.receive_nowait() for _ in range(2)]
    assert [(a.request, a.message.get("error", {}).get("code")) for a in delivered] == [(4, -32603), (5, None)]
    assert not any(isinstance(e, ClientClosed) for e in core.events)


async def test_a_queued_client_that_does_not_read_is_closed(tmp_path: Path) -> None:
    send_channel, receive_channel = trio.open_memory_channel[SendToClient](2)
    closed: list[str] = []

    def script(event: Event) -> list[Action]:
        if isinstance(event, ClientMessageReceived):
            return [SendToClient(client="h", message={"n": i}) for i in range(5)]
        return []

    core = FakeCore(script)
    with trio.fail_after(5):
        async with running(core, tmp_path) as runtime:
            runtime.register_client("h", QueuedSend(send_channel), lambda: closed.append("h"))
            await runtime.feed(ClientOpened(now=now(), client="h", transport="http"))
            await runtime.feed(ClientMessageReceived(now=now(), client="h", data=b"{}"))
            await core.wait_for(lambda events: len(events) == 3)
    assert [receive_channel.receive_nowait().message for _ in range(2)] == [{"n": 0}, {"n": 1}]
    assert isinstance(core.events[-1], ClientClosed) and closed == ["h"]


async def test_drop_stream_goes_to_the_clients_drop_stream_and_is_ignored_without_one(tmp_path: Path) -> None:
    dropped: list[object] = []

    async def send(action: SendToClient) -> None:
        pass

    def script(event: Event) -> list[Action]:
        if isinstance(event, ClientMessageReceived):
            return [DropStream(client="h", request=7), DropStream(client="plain"), DropStream(client="gone")]
        return []

    core = FakeCore(script)
    with trio.fail_after(5):
        async with running(core, tmp_path) as runtime:
            runtime.register_client("h", send, drop_stream=dropped.append)
            runtime.register_client("plain", send)
            await runtime.feed(ClientOpened(now=now(), client="h", transport="http"))
            await runtime.feed(ClientMessageReceived(now=now(), client="h", data=b"{}"))
    assert dropped == [7]
    assert [type(e) for e in core.events] == [ClientOpened, ClientMessageReceived]


async def test_an_event_fed_to_an_idle_loop_is_handled_before_feed_returns(tmp_path: Path) -> None:
    sent: list[SendToClient] = []
    send_channel, receive_channel = trio.open_memory_channel[SendToClient](10)

    def script(event: Event) -> list[Action]:
        if isinstance(event, ClientMessageReceived):
            return [SendToClient(client="q", message={"n": len(sent)})]
        return []

    core = FakeCore(script)
    with trio.fail_after(5):
        async with running(core, tmp_path) as runtime:
            runtime.register_client("q", QueuedSend(send_channel))
            await runtime.feed(ClientOpened(now=now(), client="q"))
            await trio.testing.wait_all_tasks_blocked()
            await runtime.feed(ClientMessageReceived(now=now(), client="q", data=b"{}"))
            # Handled inline: the core saw it and the answer is queued, with no
            # scheduling in between.
            assert [type(e) for e in core.events] == [ClientOpened, ClientMessageReceived]
            sent.append(receive_channel.receive_nowait())
    assert sent == [SendToClient(client="q", message={"n": 0})]


async def test_a_send_that_waits_holds_back_later_events_in_order(tmp_path: Path) -> None:
    log: list[str] = []
    release = trio.Event()

    async def slow_send(action: SendToClient) -> None:
        log.append(f"send {action.message['n']} starts")
        if action.message["n"] == 1:
            await release.wait()
        log.append(f"send {action.message['n']} done")

    def script(event: Event) -> list[Action]:
        if isinstance(event, ClientMessageReceived):
            n = int(event.data)
            log.append(f"handle {n}")
            return [
                SendToClient(client="s", message={"n": n}),
                Audit(record={"n": n}),
                SendToClient(client="s", message={"n": n + 10}),
            ]
        return []

    core = FakeCore(script)
    with trio.fail_after(5):
        async with running(core, tmp_path) as runtime:
            runtime.register_client("s", slow_send)
            await runtime.feed(ClientOpened(now=now(), client="s"))
            await trio.testing.wait_all_tasks_blocked()
            async with trio.open_nursery() as nursery:
                await runtime.feed(ClientMessageReceived(now=now(), client="s", data=b"1"))
                nursery.start_soon(runtime.feed, ClientMessageReceived(now=now(), client="s", data=b"2"))
                await trio.testing.wait_all_tasks_blocked()
                assert log == ["handle 1", "send 1 starts"]
                release.set()
            await core.wait_for(lambda events: len(events) == 3)
            await trio.testing.wait_all_tasks_blocked()
    assert log == [
        "handle 1", "send 1 starts", "send 1 done", "send 11 starts", "send 11 done",
        "handle 2", "send 2 starts", "send 2 done", "send 12 starts", "send 12 done",
    ]
    lines = (tmp_path / "logs" / "audit.jsonl").read_text().splitlines()
    assert [json.loads(line)["n"] for line in lines] == [1, 2]
