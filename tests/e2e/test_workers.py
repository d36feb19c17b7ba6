"""``lockgate serve --workers N``: a supervisor and N gateway processes on one port, as real processes.

The downstream (``servers/process_server.py``) answers its own pid and its
parent's, which is the worker that started it: that tells the workers apart
from outside. Clients use the stateless era (the SDK's ``mode="auto"``), so
every request stands alone and any worker can serve it. Processes are found
through ``/proc``; every wait is bounded.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from mcp import Client

from lockgate.shells.workers import resolve_workers

from .conftest import Setup
from .test_http import Served

PROCESS_SERVER = str(Path(__file__).parent / "servers" / "process_server.py")

pytestmark = pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="finds processes through /proc")


def children(pid: int) -> set[int]:
    """The live (not zombie) children of ``pid``."""
    found: set[int] = set()
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return found
    for task in tasks:
        try:
            found.update(int(child) for child in (task / "children").read_text().split())
        except OSError:
            continue
    return {child for child in found if alive(child)}


def alive(pid: int) -> bool:
    """``pid`` is a process that has not exited (a zombie has)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def wait_until(condition: Any, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


class Workers(Served):
    """A running ``lockgate serve --workers N`` and its stderr so far."""

    def serving(self, index: int) -> int:
        """How many times worker ``index`` logged that it serves (once per start)."""
        pattern = re.compile(rf"serving Streamable HTTP at \S+ worker={index}\b")
        return sum(1 for line in list(self.stderr) if pattern.search(line))

    def wait_serving(self, count: int, *, times: int = 1, seconds: float = 60) -> None:
        wait_until(lambda: all(self.serving(i) >= times for i in range(count)), seconds, f"{count} workers serving")


@contextmanager
def serve_workers(setup: Setup, *extra: str) -> Iterator[Workers]:
    if not setup.config.exists():
        setup.write()
    process = subprocess.Popen(
        [sys.executable, *setup.argv(), "--transport", "http", "--port", "0", *extra],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=setup.environ(),
    )
    served = Workers(process)
    try:
        assert served.url_ready.wait(60), "".join(served.stderr)
        yield served
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        print("".join(served.stderr))  # shown when the test fails


@pytest.fixture
def workers_setup(tmp_path: Path) -> Setup:
    s = Setup(tmp_path)
    s.add("process", PROCESS_SERVER, "--marker", str(tmp_path))
    return s


async def whoami(url: str) -> dict[str, int]:
    """One call on a new connection: the pid of the downstream that served it and of its worker."""
    with trio.fail_after(60):
        async with Client(url, mode="auto", read_timeout_seconds=30) as client:
            result = await client.call_tool(
                "execute_tool", {"agent_id": "dev", "server": "process", "tool": "whoami", "args": {}}
            )
    content = result.structured_content
    assert isinstance(content, dict)
    answer = content.get("result", content)
    assert isinstance(answer, dict) and set(answer) >= {"pid", "parent"}, content
    return {"pid": int(answer["pid"]), "parent": int(answer["parent"])}


async def reach_every_worker(url: str, workers: set[int], *, at_most: int = 200) -> dict[int, set[int]]:
    """New connections until each worker in ``workers`` served one; each worker's downstream pids."""
    seen: dict[int, set[int]] = {}
    for _ in range(at_most):
        answer = await whoami(url)
        seen.setdefault(answer["parent"], set()).add(answer["pid"])
        if set(seen) >= workers:
            break
    assert set(seen) == workers, f"served by {sorted(seen)}, workers {sorted(workers)}"
    return seen


async def test_connections_reach_every_worker_a_killed_one_is_replaced_and_sigterm_leaves_nothing(
    workers_setup: Setup,
) -> None:
    with serve_workers(workers_setup, "--workers", "2") as served:
        served.wait_serving(2)
        supervisor = served.process.pid
        workers = children(supervisor)
        assert len(workers) == 2
        downstreams = await reach_every_worker(served.url, workers)
        # Each worker starts its own downstream: its parent is that worker.
        assert all(len(pids) == 1 for pids in downstreams.values())

        victim = min(workers)
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: len(children(supervisor)) == 2 and victim not in children(supervisor), 60, "a replacement")
        (replacement,) = children(supervisor) - workers
        # Three "serving" lines: the two first workers', then the replacement's.
        wait_until(lambda: sum(served.serving(i) for i in range(2)) >= 3, 60, "the replacement serving")
        # The killed worker's downstream went with it (its guardian saw it die).
        wait_until(lambda: not any(alive(pid) for pid in downstreams[victim]), 30, "the killed worker's downstream to die")
        assert any("restarting it in" in line for line in served.stderr)

        now = {replacement, *(workers - {victim})}
        after = await reach_every_worker(served.url, now)
        every_downstream = {pid for pids in (*downstreams.values(), *after.values()) for pid in pids}

        served.process.send_signal(signal.SIGTERM)
        assert served.process.wait(60) == 0
        for pid in now | every_downstream:
            assert not alive(pid), f"process {pid} outlived the supervisor"


def leaf(exc: BaseException) -> str:
    """The innermost exception of ``exc`` (through exception groups), as ``Type: message``."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}"


async def test_a_worker_killed_under_load_fails_only_its_calls_and_loses_no_acknowledged_audit_record(
    workers_setup: Setup,
) -> None:
    with serve_workers(workers_setup, "--workers", "2") as served:
        served.wait_serving(2)
        supervisor = served.process.pid
        workers = children(supervisor)
        await reach_every_worker(served.url, workers)
        victim = min(workers)
        tasks = 8
        answered: list[int] = []  # the worker of each call answered
        failed: list[str] = []
        killed = trio.Event()
        after_kill = [0] * tasks

        async def caller(n: int) -> None:
            # A new client (so a new connection) per call: the kernel spreads them over both workers.
            while after_kill[n] < 3:
                try:
                    with trio.fail_after(60):
                        async with Client(served.url, mode="auto", read_timeout_seconds=30) as client:
                            result = await client.call_tool(
                                "execute_tool",
                                {"agent_id": "dev", "server": "process", "tool": "nap", "args": {"seconds": 1.0}},
                            )
                    content = result.structured_content
                    assert isinstance(content, dict)
                    answered.append(int(content.get("result", content)["parent"]))
                    if killed.is_set():
                        after_kill[n] += 1
                except Exception as exc:  # the calls in flight on the killed worker
                    failed.append(leaf(exc))

        with trio.fail_after(240):
            async with trio.open_nursery() as nursery:
                for n in range(tasks):
                    nursery.start_soon(caller, n)
                while answered.count(victim) < 3:
                    await trio.sleep(0.05)
                os.kill(victim, signal.SIGKILL)
                killed.set()
        print(f"{len(answered)} calls answered, {len(failed)} failed: {failed}")  # shown when the test fails
        # Each caller has one call in flight at most: no more failed than that, and every caller went on.
        assert len(failed) <= tasks, failed
        # And each failed as a broken connection, not as a wrong answer or a hang.
        assert all(f.startswith(("ReadError", "RemoteProtocolError", "WriteError")) or "onnection" in f for f in failed), failed
        assert all(n >= 3 for n in after_kill)
        wait_until(lambda: len(children(supervisor)) == 2, 60, "a replacement")
        served.process.send_signal(signal.SIGTERM)
        assert served.process.wait(60) == 0
    # Every call answered was audited, whichever worker answered it, and the shared file holds whole lines only.
    records = workers_setup.audit_records()
    calls = [r for r in records if r.get("operation") == "execute_tool" and r.get("decision") == "ALLOW"]
    assert len(calls) >= len(answered)


async def test_a_killed_supervisor_takes_its_workers_and_their_downstreams_along(workers_setup: Setup) -> None:
    with serve_workers(workers_setup, "--workers", "2") as served:
        served.wait_serving(2)
        workers = children(served.process.pid)
        downstreams = await reach_every_worker(served.url, workers)
        served.process.kill()
        served.process.wait()
        left = workers | {pid for pids in downstreams.values() for pid in pids}
        wait_until(lambda: not any(alive(pid) for pid in left), 60, "the workers and downstreams to exit")
        assert any(
            "supervising process is gone" in line or "received SIGTERM; shutting down" in line for line in served.stderr
        )


async def test_sighup_reaches_every_worker(workers_setup: Setup) -> None:
    with serve_workers(workers_setup, "--workers", "2", "--debug") as served:
        served.wait_serving(2)
        served.process.send_signal(signal.SIGHUP)
        wait_until(
            lambda: all(any("SIGHUP" in line and f"worker={i}" in line for line in served.stderr) for i in range(2)),
            60, "each worker to hear SIGHUP",
        )
        assert await whoami(served.url)


async def test_workers_auto_starts_one_per_core(workers_setup: Setup) -> None:
    expected = resolve_workers("auto")
    with serve_workers(workers_setup, "--workers", "auto") as served:
        if expected == 1:  # one core: auto is the single gateway, no supervisor
            assert "workers" not in "".join(served.stderr)
        else:
            served.wait_serving(expected)
            assert len(children(served.process.pid)) == expected
            assert f"with {expected} workers" in "".join(served.stderr)
        assert await whoami(served.url)
    assert served.process.returncode == 0


async def test_a_worker_that_keeps_dying_is_a_crash_loop_that_stops_everything(workers_setup: Setup) -> None:
    with serve_workers(workers_setup, "--workers", "2") as served:
        served.wait_serving(2)
        supervisor = served.process.pid
        downstreams = await reach_every_worker(served.url, children(supervisor))
        before = children(supervisor)
        victim = min(before)
        # Kill one slot's worker, then each of its replacements as soon as it appears.
        for _ in range(10):
            os.kill(victim, signal.SIGKILL)
            known = before | {victim}
            wait_until(
                lambda: served.process.poll() is not None or bool(children(supervisor) - known), 60, "a replacement"
            )
            if served.process.poll() is not None:
                break
            (victim,) = children(supervisor) - known
            before = known
        assert served.process.wait(60) == 1
        assert any("a crash loop; stopping" in line for line in served.stderr)
        left = before | {pid for pids in downstreams.values() for pid in pids}
        wait_until(lambda: not any(alive(pid) for pid in left), 30, "every worker and downstream to exit")


async def test_a_worker_whose_configuration_is_refused_stops_everything_with_status_2(workers_setup: Setup) -> None:
    with serve_workers(workers_setup, "--workers", "2") as served:
        served.wait_serving(2)
        workers = children(served.process.pid)
        workers_setup.rules.write_text("{ not json")  # the running workers log it and keep the old rules
        os.kill(min(workers), signal.SIGKILL)  # the replacement reads the broken file
        assert served.process.wait(60) == 2
        assert any("its configuration is refused; stopping" in line for line in served.stderr)
        wait_until(lambda: not any(alive(pid) for pid in workers), 30, "the workers to exit")


def refused(setup: Setup, *extra: str) -> str:
    """Run ``serve`` with ``extra``; it must exit 2 quickly, and this is its stderr."""
    if not setup.config.exists():
        setup.write()
    done = subprocess.run(
        [sys.executable, *setup.argv(), *extra], stdin=subprocess.DEVNULL, capture_output=True, env=setup.environ(), timeout=60
    )
    assert done.returncode == 2, done.stderr
    return done.stderr.decode()


@pytest.mark.parametrize("value", ["0", "-1", "x", "1.5", ""])
def test_a_bad_number_of_workers_is_refused(workers_setup: Setup, value: str) -> None:
    stderr = refused(workers_setup, "--transport", "http", "--port", "0", f"--workers={value}")
    assert f"{value!r} is not a number of workers: give a whole number of 1 or more, or auto" in stderr


def test_workers_over_stdio_are_refused(workers_setup: Setup) -> None:
    stderr = refused(workers_setup, "--workers", "2")
    assert "--workers 2 needs the HTTP or WebSocket front" in stderr


def test_workers_with_a_recording_are_refused(workers_setup: Setup, tmp_path: Path) -> None:
    stderr = refused(workers_setup, "--transport", "http", "--port", "0", "--workers", "2", "--record", str(tmp_path / "rec"))
    assert "record with one worker" in stderr


def test_a_taken_port_is_refused_by_the_supervisor_as_by_one_gateway(workers_setup: Setup) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        stderr = refused(workers_setup, "--transport", "http", "--port", str(port), "--workers", "2")
    assert f"cannot listen on 127.0.0.1:{port}: address already in use" in stderr


async def test_handshake_sessions_move_between_workers_under_the_key_the_supervisor_shares(workers_setup: Setup) -> None:
    import httpx
    from mcp.client.streamable_http import streamable_http_client

    # No session key configured, and no state folder yet: the supervisor draws one for its workers.
    assert "GATEWAY_SESSION_KEY" not in workers_setup.environ() and not (workers_setup.tmp / "state").exists()
    with serve_workers(workers_setup, "--workers", "2") as served:
        served.wait_serving(2)
        # No keep-alive: each request of the one SDK session is a new connection, and the kernel
        # gives each to either worker, as a load balancer without stickiness would.
        http = httpx.AsyncClient(limits=httpx.Limits(max_keepalive_connections=0), timeout=30)
        parents: list[int] = []
        async with http, Client(streamable_http_client(served.url, http_client=http), mode="legacy", read_timeout_seconds=30) as client:
            for _ in range(60):
                result = await client.call_tool(
                    "execute_tool", {"agent_id": "dev", "server": "process", "tool": "whoami", "args": {}}
                )
                content = result.structured_content
                assert isinstance(content, dict) and not result.is_error, content
                answer = content.get("result", content)
                parents.append(int(answer["parent"]))
                if len(set(parents)) == 2 and len(parents) >= 10:
                    break
        # One session, served by both workers, without an error or a new initialize.
        assert set(parents) == children(served.process.pid), parents
