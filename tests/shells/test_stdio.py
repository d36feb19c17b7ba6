"""The stdio front over real pipes, with a scripted fake core."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio
import trio.testing
from trio.lowlevel import FdStream

from lockgate.core import (
    Action,
    ClientClosed,
    ClientMessageReceived,
    ClientOpened,
    CloseClient,
    Event,
    GatewayStarted,
    SendToClient,
    Settings,
    ShutdownRequested,
    StartDownstream,
)
from lockgate.shells.stdio import serve_stdio

from .helpers import FakeCore, child_spec, pid_exists, wait_session_empty


def echo(event: Event) -> list[Action]:
    """Answer each message with what arrived; "close" makes the core close the client."""
    if isinstance(event, ClientMessageReceived):
        if event.data == b'"close"':
            return [CloseClient(client=event.client)]
        body = {"too_large": True} if event.too_large else {"got": event.data.decode()}
        return [SendToClient(client=event.client, message=body)]
    return []


class Pipes:
    def __init__(self, to_gateway: FdStream, from_gateway: FdStream) -> None:
        self.to_gateway = to_gateway
        self.from_gateway = from_gateway
        self._buffer = b""
        self.finished = trio.Event()

    async def read_line(self) -> dict[str, object]:
        while b"\n" not in self._buffer:
            chunk = await self.from_gateway.receive_some()
            assert chunk, "stdout closed"
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return json.loads(line)  # type: ignore[no-any-return]


@asynccontextmanager
async def gateway(core: FakeCore, tmp_path: Path, max_message_bytes: int = 1000) -> AsyncIterator[Pipes]:
    in_read, in_write = os.pipe()
    out_read, out_write = os.pipe()
    settings = Settings(audit_log=str(tmp_path / "audit.jsonl"), max_message_bytes=max_message_bytes)
    async with FdStream(in_read) as stdin, FdStream(out_write) as stdout:
        async with FdStream(in_write) as to_gateway, FdStream(out_read) as from_gateway:
            pipes = Pipes(to_gateway, from_gateway)

            async def serve() -> None:
                await serve_stdio(core, settings, stdin=stdin, stdout=stdout, handle_signals=False)
                pipes.finished.set()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(serve)
                yield pipes


async def test_framing_and_echo(tmp_path: Path) -> None:
    core = FakeCore(echo)
    with trio.fail_after(5):
        async with gateway(core, tmp_path, max_message_bytes=100) as pipes:
            await pipes.to_gateway.send_all(b'{"a"')
            await trio.sleep(0.01)
            await pipes.to_gateway.send_all(b':1}\r\n\n{"b":2}\n')
            assert await pipes.read_line() == {"got": '{"a":1}'}
            assert await pipes.read_line() == {"got": '{"b":2}'}
            await pipes.to_gateway.send_all(b"[" + b"1," * 200)
            await pipes.to_gateway.send_all(b"1" * 5000 + b"]\n[3]\n")
            assert await pipes.read_line() == {"too_large": True}
            assert await pipes.read_line() == {"got": "[3]"}
            await pipes.to_gateway.aclose()  # EOF
    kinds = [type(e) for e in core.events]
    assert kinds[:2] == [GatewayStarted, ClientOpened]
    assert kinds[-2:] == [ClientClosed, ShutdownRequested]
    too_large = [e for e in core.events if isinstance(e, ClientMessageReceived) and e.too_large]
    assert len(too_large) == 1 and too_large[0].data == b""


async def test_close_client_ends_the_session(tmp_path: Path) -> None:
    core = FakeCore(echo)
    with trio.fail_after(5):
        async with gateway(core, tmp_path) as pipes:
            await pipes.to_gateway.send_all(b'"close"\n')
            await pipes.finished.wait()
    assert [type(e) for e in core.events][-2:] == [ClientMessageReceived, ShutdownRequested]


async def test_eof_stops_every_downstream(tmp_path: Path) -> None:
    def script(event: Event) -> list[Action]:
        if isinstance(event, GatewayStarted):
            return [StartDownstream(downstream=i, server="c", spec=child_spec("echo", name="c")) for i in (1, 2)]
        return echo(event)

    def own_children() -> set[int]:
        return {int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and _parent(p) == os.getpid()}

    # Children of this process from before (a session's Redis server, say) are not the gateway's.
    before = own_children()
    core = FakeCore(script)
    with trio.fail_after(10):
        async with gateway(core, tmp_path) as pipes:
            await pipes.to_gateway.send_all(b"[1]\n")
            assert await pipes.read_line() == {"got": "[1]"}
            await trio.sleep(0.2)  # the children are up by now
            children = sorted(own_children() - before)
            assert len(children) >= 2
            await pipes.to_gateway.aclose()
    for pid in children:
        assert not pid_exists(pid)
        assert await wait_session_empty(pid) == []


def _parent(proc: Path) -> int:
    try:
        return int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
    except OSError:
        return -1


async def test_large_answers_to_a_client_that_reads_late_arrive_whole_and_in_order(tmp_path: Path) -> None:
    # Each answer is larger than a pipe's buffer, so writes stop part way and
    # the rest waits for the client; later messages must queue up behind it.
    def answers(event: Event) -> list[Action]:
        if isinstance(event, ClientMessageReceived):
            n = json.loads(event.data)
            return [
                SendToClient(client=event.client, message={"n": n, "part": 1, "pad": "x" * 200_000}),
                SendToClient(client=event.client, message={"n": n, "part": 2}),
            ]
        return []

    core = FakeCore(answers)
    with trio.fail_after(10):
        async with gateway(core, tmp_path) as pipes:
            for n in range(3):
                await pipes.to_gateway.send_all(f"{n}\n".encode())
            await trio.testing.wait_all_tasks_blocked()
            got = [await pipes.read_line() for _ in range(6)]
            await pipes.to_gateway.aclose()
    assert [(m["n"], m["part"]) for m in got] == [(n, part) for n in range(3) for part in (1, 2)]
    assert all(m["pad"] == "x" * 200_000 for m in got if m["part"] == 1)
