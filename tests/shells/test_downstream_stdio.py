"""Stdio downstreams over real child processes and pipes."""

from __future__ import annotations

import logging
import os
import signal
import sys

import pytest
import trio

from lockgate.core import DownstreamExited, DownstreamMessageReceived, Event, ServerSpec
from lockgate.shells.downstream_stdio import StdioDownstream, child_environment, describe_exit, resolve_command

from .helpers import CHILD, child_spec, pid_exists, session_members, wait_session_empty


class Collector:
    def __init__(self) -> None:
        self.events: list[Event] = []
        self.changed = trio.Event()

    async def __call__(self, event: Event) -> None:
        self.events.append(event)
        self.changed.set()
        self.changed = trio.Event()

    async def wait_for(self, count: int) -> None:
        while len(self.events) < count:
            await self.changed.wait()

    def messages(self) -> list[bytes]:
        return [e.data for e in self.events if isinstance(e, DownstreamMessageReceived)]

    def exits(self) -> list[str]:
        return [e.reason for e in self.events if isinstance(e, DownstreamExited)]


def downstream(spec: ServerSpec, collector: Collector, *, max_message_bytes: int = 1 << 20) -> StdioDownstream:
    return StdioDownstream(downstream=1, server=spec.name, spec=spec, max_message_bytes=max_message_bytes, emit=collector)


async def wait_until_started(ds: StdioDownstream) -> int:
    while ds.pid is None:
        await trio.sleep(0.01)
    return ds.pid


async def test_messages_queued_before_start_arrive_in_order_and_stop_reports_nothing() -> None:
    collector = Collector()
    ds = downstream(child_spec("echo"), collector)
    ds.send_nowait(b'{"n":1}\n')
    ds.send_nowait(b'{"n":2}\n')
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ds.run)
            await collector.wait_for(2)
            pid = await wait_until_started(ds)
            ds.stop()
            await ds.finished.wait()
    assert collector.messages() == [b'{"n":1}', b'{"n":2}']
    assert collector.exits() == []
    assert not pid_exists(pid)  # reaped, not a zombie
    with pytest.raises(trio.BrokenResourceError):
        ds.send_nowait(b"{}\n")


async def test_exit_code_is_reported_after_the_output() -> None:
    collector = Collector()
    ds = downstream(ServerSpec(name="sh", transport="stdio", command="sh", args=("-c", 'echo "{}"; exit 3')), collector)
    with trio.fail_after(10):
        await ds.run()
    assert collector.messages() == [b"{}"]
    assert collector.exits() == ["exited with code 3"]


async def test_killed_by_signal() -> None:
    collector = Collector()
    with trio.fail_after(10):
        await downstream(child_spec("kill-self"), collector).run()
    assert collector.exits() == ["killed by signal SIGKILL"]


async def test_command_not_found_names_the_command_but_no_host_path() -> None:
    collector = Collector()
    with trio.fail_after(5):
        await downstream(ServerSpec(name="x", transport="stdio", command="no-such-command-lockgate"), collector).run()
        await downstream(ServerSpec(name="x", transport="stdio", command="/secret/dir/tool"), collector).run()
    assert collector.exits() == ["command not found: no-such-command-lockgate", "command not found: tool"]


async def test_failed_to_start(tmp_path: os.PathLike[str]) -> None:
    script = os.path.join(tmp_path, "not-executable")
    with open(script, "w") as f:
        f.write("#!/bin/sh\n")
    collector = Collector()
    with trio.fail_after(5):
        await downstream(ServerSpec(name="x", transport="stdio", command=script), collector).run()
        await downstream(ServerSpec(name="x", transport="stdio", command="sh", cwd="/no/such/dir"), collector).run()
    assert collector.exits() == ["failed to start: Permission denied", "failed to start: working directory not found"]


async def test_wrapper_leaves_no_process_behind_after_stop() -> None:
    collector = Collector()
    spec = ServerSpec(name="wrapped", transport="stdio", command="sh", args=("-c", "sleep 60 & sleep 60"))
    ds = downstream(spec, collector)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ds.run)
            pid = await wait_until_started(ds)
            while len(session_members(pid)) < 2:  # sh and its background sleep at least
                await trio.sleep(0.01)
            ds.stop()
            await ds.finished.wait()
    assert await wait_session_empty(pid) == []
    assert collector.events == []


async def test_orphans_die_when_the_leader_exits() -> None:
    collector = Collector()
    spec = ServerSpec(name="wrapped", transport="stdio", command="sh", args=("-c", "sleep 60 & echo '{}'; exit 0"))
    ds = downstream(spec, collector)
    with trio.fail_after(10):
        await ds.run()
    assert ds.pid is not None
    assert await wait_session_empty(ds.pid) == []
    assert collector.exits() == ["exited with code 0"]


async def test_stubborn_server_is_killed_within_bounds() -> None:
    collector = Collector()
    ds = downstream(child_spec("stubborn"), collector)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ds.run)
            await collector.wait_for(1)  # {"ready":true}: SIGTERM is ignored from now on
            pid = await wait_until_started(ds)
            start = trio.current_time()
            ds.stop()
            await ds.finished.wait()
            elapsed = trio.current_time() - start
    assert 3.5 < elapsed < 6
    assert not pid_exists(pid)
    assert collector.exits() == []


async def test_cancellation_still_kills_and_reaps() -> None:
    collector = Collector()
    ds = downstream(child_spec("echo"), collector)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ds.run)
            pid = await wait_until_started(ds)
            nursery.cancel_scope.cancel()
    assert not pid_exists(pid)


async def test_an_oversize_line_is_reported_to_the_core_and_nothing_after_it_is_read(caplog: pytest.LogCaptureFixture) -> None:
    # The lost message answered some call: what follows cannot be trusted to line
    # up, so the shell reads no more and the core decides (it stops the server).
    collector = Collector()
    ds = downstream(child_spec("long", "5000"), collector, max_message_bytes=1000)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ds.run)
            await collector.wait_for(1)
            ds.send_nowait(b'{"n":1}\n')  # echoed after {"after":true}: neither is read
            await trio.sleep(0.3)
            ds.stop()  # the core's StopDownstream
            await ds.finished.wait()
    [event] = collector.events
    assert event == DownstreamMessageReceived(now=event.now, downstream=1, data=b"", too_large=True)
    assert any("over 1000 bytes" in r.getMessage() for r in caplog.records)


async def test_stderr_is_logged_with_the_server_name_and_rate_limited(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="lockgate")
    collector = Collector()
    ds = downstream(child_spec("stderr", "100", name="noisy"), collector)
    with trio.fail_after(10):
        await _run_briefly(ds)
    records = [r for r in caplog.records if r.name == "lockgate.downstream" and r.levelno == logging.INFO]
    lines = [r.getMessage() for r in records if getattr(r, "fields", {}).get("server") == "noisy"]
    assert lines[0] == "line 0 on stderr"
    shown = [line for line in lines if not line.endswith("lines suppressed")]
    suppressed = sum(int(line.split()[0]) for line in lines if line.endswith("lines suppressed"))
    assert 20 <= len(shown) < 100
    assert len(shown) + suppressed == 100
    assert lines[-1].endswith("lines suppressed")


async def _run_briefly(ds: StdioDownstream) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ds.run)
        await trio.sleep(0.5)
        ds.stop()


async def test_write_to_a_closed_input_is_reported() -> None:
    collector = Collector()
    ds = downstream(child_spec("close-stdin"), collector)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ds.run)
            await collector.wait_for(1)
            ds.send_nowait(b'{"n":1}\n')
    assert collector.exits() == ["closed its input"]


def test_environment_is_a_safe_subset_with_overrides() -> None:
    environ = {"PATH": "/bin", "HOME": "/h", "SECRET_TOKEN": "x", "LANG": "C.UTF-8", "SHELL": "() { :; }"}
    env = child_environment(environ, {"API_KEY": "k", "PATH": "/opt/bin"})
    assert env == {"PATH": "/opt/bin", "HOME": "/h", "LANG": "C.UTF-8", "API_KEY": "k"}


async def test_the_child_sees_only_the_safe_environment() -> None:
    collector = Collector()
    spec = ServerSpec(
        name="env",
        transport="stdio",
        command="sh",
        args=("-c", 'printf "%s|%s|%s\\n" "$LOCKGATE_TEST_SECRET" "$EXTRA" "${PATH:+path}"'),
        env={"EXTRA": "yes"},
    )
    ds = StdioDownstream(
        downstream=1,
        server="env",
        spec=spec,
        max_message_bytes=1000,
        emit=collector,
        environ={"PATH": os.environ["PATH"], "LOCKGATE_TEST_SECRET": "leak"},
    )
    with trio.fail_after(10):
        await ds.run()
    assert collector.messages() == [b"|yes|path"]


def test_resolve_command(tmp_path: os.PathLike[str]) -> None:
    assert resolve_command("sh", path=os.environ["PATH"], cwd=None) is not None
    assert resolve_command("sh", path="/nonexistent", cwd=None) is None
    assert resolve_command(sys.executable, path="", cwd=None) == sys.executable
    assert resolve_command("./child_server.py", path="", cwd=os.path.dirname(__file__)) is not None


def test_describe_exit() -> None:
    assert describe_exit(0) == "exited with code 0"
    assert describe_exit(-9) == "killed by signal SIGKILL"
    assert describe_exit(-15) == "killed by signal SIGTERM"


async def test_a_dying_server_leaves_its_last_stderr_lines_in_the_quiet_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="lockgate")
    collector = Collector()
    spec = ServerSpec(name="dies", transport="stdio", command="sh", args=("-c", "echo starting >&2; echo 'boom: no module' >&2; exit 1"))
    with trio.fail_after(10):
        await downstream(spec, collector).run()
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert messages == ["server exited with code 1; its last stderr lines follow", "stderr: starting", "stderr: boom: no module"]
    assert collector.exits() == ["exited with code 1"]


async def test_kill_ends_a_stopped_server_at_once() -> None:
    # A hung server: SIGSTOPped, it reacts to neither end of input nor SIGTERM.
    collector = Collector()
    spec = ServerSpec(name="hung", transport="stdio", command="sh", args=("-c", f"sleep 60 & exec {sys.executable} {CHILD} stubborn"))
    ds = downstream(spec, collector)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ds.run)
            await collector.wait_for(1)  # {"ready":true}
            pid = await wait_until_started(ds)
            os.killpg(pid, signal.SIGSTOP)
            start = trio.current_time()
            ds.stop(kill=True)
            await ds.finished.wait()
            elapsed = trio.current_time() - start
    assert elapsed < 1
    assert not pid_exists(pid)  # reaped
    assert await wait_session_empty(pid) == []  # the background sleep too
    assert collector.exits() == []


async def test_kill_cuts_short_a_gentle_stop_under_way() -> None:
    collector = Collector()
    ds = downstream(child_spec("stubborn"), collector)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ds.run)
            await collector.wait_for(1)  # SIGTERM is ignored from now on
            pid = await wait_until_started(ds)
            start = trio.current_time()
            ds.stop()
            await trio.sleep(0.5)  # inside the first grace period
            assert pid_exists(pid)
            ds.stop(kill=True)
            await ds.finished.wait()
            elapsed = trio.current_time() - start
    assert elapsed < 1.5  # not the 4 s of two grace periods
    assert not pid_exists(pid)
