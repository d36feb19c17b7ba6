"""The guardian process and the sweep, over real processes (see shells/guardian.py).

Every process a test starts is in its own session, so "is anything left" is
one look at that session; each test ends by checking nothing is.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from lockgate.core import DownstreamMessageReceived, Event, ServerSpec
from lockgate.shells.downstream_stdio import StdioDownstream
from lockgate.shells.guardian import MARKER_VARIABLE, Guardian, current_guardian, gateway_marker, guarding, sweep_leftovers
from lockgate.shells.guardian_script import marker_owner_alive, pid_namespace, start_time

from .helpers import pid_alive, pid_exists, session_members

#: A pid that cannot exist: the kernel's PID_MAX_LIMIT is 2**22.
NO_SUCH_PID = 2**22 + 17
#: Process group ids the guardian may be told about: none can exist either.
FAKE_GROUPS = range(2**22 + 100, 2**22 + 30_100)


def wait_gone(sessions: list[int], timeout: float = 3.0) -> list[int]:
    """Poll until no live process is left in any of ``sessions``; the ones with survivors."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(session_members(s) for s in sessions):
            break
        time.sleep(0.01)
    return [s for s in sessions if session_members(s)]


class Groups:
    """Process groups started by a test (``sh`` plus a background ``sleep``), all killed at the end."""

    def __init__(self) -> None:
        self.started: list[subprocess.Popen[bytes]] = []

    def start(self, env: dict[str, str] | None = None) -> int:
        proc = subprocess.Popen(
            ["sh", "-c", "sleep 60 & exec sleep 60"],
            start_new_session=True,
            stdin=subprocess.DEVNULL,
            env={"PATH": os.environ["PATH"], **(env or {})},
        )
        self.started.append(proc)
        deadline = time.monotonic() + 5
        while len(session_members(proc.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(session_members(proc.pid)) == 2
        return proc.pid

    def cleanup(self) -> None:
        for proc in self.started:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(5)
        assert wait_gone([p.pid for p in self.started]) == []


@pytest.fixture
def groups() -> Iterator[Groups]:
    g = Groups()
    try:
        yield g
    finally:
        g.cleanup()


def unique_marker() -> str:
    """A marker no other process carries, so a test's sweep at end of input touches its own processes only."""
    return f"{os.getpid()}:{time.monotonic_ns()}:test"


def guardian_for_test(marker: str | None = None) -> Guardian:
    guardian = Guardian.spawn(marker=unique_marker() if marker is None else marker)
    assert guardian is not None
    return guardian


def test_end_of_input_kills_registered_groups_only(groups: Groups) -> None:
    kept, dropped, never = groups.start(), groups.start(), groups.start()
    guardian = guardian_for_test()
    guardian.register(kept)
    guardian.register(dropped)
    guardian.unregister(dropped)
    assert guardian.registered == {kept}
    guardian.close()
    assert guardian._process.returncode == 0
    assert wait_gone([kept]) == []  # sh and its background sleep alike
    assert len(session_members(dropped)) == 2
    assert len(session_members(never)) == 2


def test_a_killed_gateway_is_the_same_end_of_input(groups: Groups, tmp_path: Path) -> None:
    # Not close(): the process holding the pipe dies by SIGKILL and the kernel closes it.
    victim = groups.start()
    gateway = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import sys, time
                from lockgate.shells.guardian import Guardian
                guardian = Guardian.spawn(marker="none")
                guardian.register({victim})
                print(guardian.pid, flush=True)
                time.sleep(60)
                """
            ),
        ],
        stdout=subprocess.PIPE,
    )
    assert gateway.stdout is not None
    guardian_pid = int(gateway.stdout.readline())
    gateway.kill()
    gateway.wait(5)
    assert wait_gone([victim]) == []
    deadline = time.monotonic() + 3
    while pid_alive(guardian_pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not pid_alive(guardian_pid)  # it exited


@pytest.mark.parametrize("pause", [0.0, 0.2])
def test_signals_do_not_end_the_guardian(groups: Groups, pause: float) -> None:
    # 0.0: sent while the interpreter still starts, before the handlers are set.
    victim = groups.start()
    guardian = guardian_for_test()
    guardian.register(victim)
    time.sleep(pause)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        os.kill(guardian.pid, sig)
    time.sleep(0.3)
    assert guardian._process.poll() is None
    guardian.close()
    assert wait_gone([victim]) == []


def test_at_the_end_it_also_kills_processes_with_its_marker(groups: Groups) -> None:
    marker = unique_marker()
    escaped = groups.start({MARKER_VARIABLE: marker})  # never registered: left its group, say
    other = groups.start({MARKER_VARIABLE: unique_marker()})
    guardian = guardian_for_test(marker)
    guardian.close()
    assert wait_gone([escaped]) == []
    assert len(session_members(other)) == 2


def test_a_dead_guardian_never_raises_and_warns_once(groups: Groups, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="lockgate")
    victim = groups.start()
    guardian = guardian_for_test()
    guardian._process.kill()
    guardian._process.wait(5)
    guardian.register(victim)
    guardian.register(FAKE_GROUPS[0])
    guardian.unregister(victim)
    guardian.close()
    warnings = [r.getMessage() for r in caplog.records if r.name == "lockgate.guardian"]
    assert len(warnings) == 1 and "the guardian process is gone" in warnings[0]
    assert len(session_members(victim)) == 2


def test_a_guardian_that_stops_reading_never_blocks_the_gateway(groups: Groups) -> None:
    kept, killed = groups.start(), groups.start()
    guardian = guardian_for_test()
    guardian.register(kept)
    os.kill(guardian.pid, signal.SIGSTOP)
    try:
        start = time.monotonic()
        for pgid in FAKE_GROUPS:  # about 300 kB of lines: far more than a pipe holds
            guardian.register(pgid)
            guardian.unregister(pgid)
        guardian.unregister(kept)
        guardian.register(killed)
        assert time.monotonic() - start < 1
    finally:
        os.kill(guardian.pid, signal.SIGCONT)
    guardian.close()  # writes the backlog, in order, before end of input
    assert wait_gone([killed]) == []
    assert len(session_members(kept)) == 2


def test_the_sweep_kills_leftovers_of_gateways_that_are_gone_only(groups: Groups, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="lockgate")
    namespace = pid_namespace()
    me = os.getpid()
    dead_owner = groups.start({MARKER_VARIABLE: f"{NO_SUCH_PID}:1:{namespace}"})
    reused_pid = groups.start({MARKER_VARIABLE: f"{me}:{(start_time(me) or 0) + 1}:{namespace}"})  # same pid, another process
    live_owner = groups.start({MARKER_VARIABLE: gateway_marker()})
    other_namespace = groups.start({MARKER_VARIABLE: f"{NO_SUCH_PID}:1:{(namespace or 0) + 1}"})
    garbled = groups.start({MARKER_VARIABLE: "not a marker"})
    assert marker_owner_alive(gateway_marker()) is True
    assert sweep_leftovers() >= 2  # other runs on this machine may have left some too
    assert wait_gone([dead_owner, reused_pid]) == []
    for kept in (live_owner, other_namespace, garbled):
        assert len(session_members(kept)) == 2
    notices = [r for r in caplog.records if r.name == "lockgate.guardian" and "left behind" in r.getMessage()]
    assert len(notices) == 1 and notices[0].levelname == "NOTICE"


def test_no_leftovers_no_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="lockgate")
    sweep_leftovers()  # whatever an earlier test or run left
    caplog.clear()
    assert sweep_leftovers() == 0
    assert caplog.records == []


class Collector:
    def __init__(self) -> None:
        self.events: list[Event] = []

    async def __call__(self, event: Event) -> None:
        self.events.append(event)


async def test_a_stdio_downstream_carries_the_marker_and_is_registered_while_it_runs() -> None:
    guardian = guardian_for_test()
    collector = Collector()
    spec = ServerSpec(
        name="marked",
        transport="stdio",
        command="sh",
        args=("-c", 'echo "{\\"marker\\": \\"$LOCKGATE_GATEWAY\\"}"; exec sleep 60'),
        env={MARKER_VARIABLE: "forged"},
    )
    ds = StdioDownstream(downstream=1, server="marked", spec=spec, max_message_bytes=1000, emit=collector, guardian=guardian)
    try:
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(ds.run)
                while not collector.events:
                    await trio.sleep(0.01)
                assert ds.pid is not None
                assert guardian.registered == {ds.pid}
                ds.stop()
                await ds.finished.wait()
        assert guardian.registered == set()
        message = collector.events[0]
        assert isinstance(message, DownstreamMessageReceived)
        assert json.loads(message.data) == {"marker": gateway_marker()}
        assert not pid_exists(ds.pid)
    finally:
        guardian.close()


def test_guarding_makes_the_guardian_the_one_downstreams_find(groups: Groups) -> None:
    assert current_guardian() is None

    async def started_downstream_guardian() -> Guardian | None:
        spec = ServerSpec(name="x", transport="stdio", command="true")
        return StdioDownstream(downstream=1, server="x", spec=spec, max_message_bytes=1000, emit=Collector())._guardian

    with guarding() as guardian:
        assert guardian is not None and current_guardian() is guardian
        assert trio.run(started_downstream_guardian) is guardian
        victim = groups.start()
        guardian.register(victim)
    assert current_guardian() is None
    assert guardian._process.returncode == 0
    assert wait_gone([victim]) == []
