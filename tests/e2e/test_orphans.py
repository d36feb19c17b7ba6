"""End to end: no server outlives a `lockgate serve` that is killed, and leftovers are swept at start.

Regression tests for the issue "No single message, connection or stuck server
can stop the gateway": after SIGKILL of the gateway, a server that ignores end
of input on stdin kept running. The servers here ignore end of input, SIGTERM,
SIGINT and SIGHUP, and run behind ``sh -c`` with a grandchild next to them.
Every test also ends with nothing mentioning its folder (see conftest.py).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lockgate.shells.guardian import MARKER_VARIABLE, gateway_marker
from lockgate.shells.guardian_script import pid_namespace

from .conftest import Setup, processes_mentioning

#: A pid that cannot exist: the kernel's PID_MAX_LIMIT is 2**22.
NO_SUCH_PID = 2**22 + 17

STUBBORN = """
import json, signal, sys, time
for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
    signal.signal(sig, signal.SIG_IGN)
if sys.argv[1:] == ["sleep"]:
    time.sleep(3600)
for line in sys.stdin:
    msg = json.loads(line)
    if "id" not in msg or "method" not in msg:
        continue
    if msg["method"] == "initialize":
        result = {
            "protocolVersion": msg["params"]["protocolVersion"],
            "capabilities": {"tools": {}},
            "serverInfo": {"name": "stubborn", "version": "1"},
        }
    elif msg["method"] == "tools/list":
        result = {"tools": []}
    else:
        result = {}
    print(json.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": result}), flush=True)
time.sleep(3600)  # end of input changes nothing
"""

INITIALIZE = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-11-25", "capabilities": {}}}


@pytest.fixture
def stubborn(setup: Setup) -> Setup:
    """Only a stubborn server, behind ``sh -c`` with a stubborn grandchild, started eagerly."""
    script = setup.tmp / "stubborn.py"
    script.write_text(STUBBORN)
    setup.servers.clear()
    setup.add("stubborn", "-c", f"{sys.executable} {script} sleep & {sys.executable} {script}; wait", command="sh")
    setup.env["GATEWAY_INIT_STRATEGY"] = "eager"
    setup.write()
    return setup


def start_gateway(setup: Setup, *extra: str) -> subprocess.Popen[bytes]:
    if not setup.config.exists():
        setup.write()
    log = (setup.tmp / "gateway.log").open("ab")  # read when a test fails
    return subprocess.Popen(
        [sys.executable, *setup.argv(), *extra],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=log,
        env=setup.environ(),
    )


def initialize(gateway: subprocess.Popen[bytes]) -> dict[str, object]:
    assert gateway.stdin is not None and gateway.stdout is not None
    gateway.stdin.write(json.dumps(INITIALIZE).encode() + b"\n")
    gateway.stdin.flush()
    answer: dict[str, object] = json.loads(gateway.stdout.readline())
    return answer


def wait_for(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def guardians_of(gateway_pid: int) -> list[int]:
    """Live guardian processes started by the gateway ``gateway_pid`` (their marker argument names it)."""
    return processes_mentioning(f"guardian_script.py\0{gateway_pid}:")


def kill_and_check(gateway: subprocess.Popen[bytes], setup: Setup) -> None:
    # The gateway, sh, the server and the grandchild.
    assert wait_for(lambda: len(processes_mentioning(str(setup.tmp))) >= 4, 15), (setup.tmp / "gateway.log").read_text()
    assert guardians_of(gateway.pid) != []
    gateway.kill()
    # Nothing else holds the gateway's stdout open (an MCP client waits for EOF there).
    out, _ = gateway.communicate(timeout=5)
    assert gateway.returncode == -signal.SIGKILL
    assert wait_for(lambda: processes_mentioning(str(setup.tmp)) == [], 5), processes_mentioning(str(setup.tmp))
    assert wait_for(lambda: guardians_of(gateway.pid) == [], 5)


def test_sigkill_of_the_gateway_over_stdio_leaves_no_server_behind(stubborn: Setup) -> None:
    gateway = start_gateway(stubborn)
    assert initialize(gateway)["id"] == 1
    kill_and_check(gateway, stubborn)


def test_sigkill_of_the_gateway_over_http_leaves_no_server_behind(stubborn: Setup) -> None:
    gateway = start_gateway(stubborn, "--transport", "http", "--port", "0")
    assert wait_for(lambda: "serving Streamable HTTP at" in (stubborn.tmp / "gateway.log").read_text(), 30)
    kill_and_check(gateway, stubborn)


def test_a_clean_exit_leaves_no_guardian_behind(stubborn: Setup) -> None:
    gateway = start_gateway(stubborn)
    initialize(gateway)
    assert wait_for(lambda: len(processes_mentioning(str(stubborn.tmp))) >= 4, 15)
    assert gateway.stdin is not None
    gateway.stdin.close()
    assert gateway.wait(20) == 0  # sh dies of SIGTERM after 2 s; the rest of its group of SIGKILL
    assert guardians_of(gateway.pid) == []


StartMarked = Callable[[str], "subprocess.Popen[bytes]"]


@pytest.fixture
def marked(setup: Setup) -> Iterator[StartMarked]:
    """Start process groups (``sh``, a sleeper, and its background sleeper) carrying a given marker."""
    started: list[subprocess.Popen[bytes]] = []
    script = setup.tmp / "stubborn.py"
    script.write_text(STUBBORN)

    def start(marker: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            ["sh", "-c", f"{sys.executable} {script} sleep & exec {sys.executable} {script} sleep"],
            env={"PATH": os.environ["PATH"], MARKER_VARIABLE: marker},
            start_new_session=True,
            stdin=subprocess.DEVNULL,
        )
        started.append(proc)
        return proc

    yield start
    for proc in started:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(5)


def group_members(pgid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                found.append(int(entry.name))
    return found


def test_leftovers_of_a_gateway_that_is_gone_are_swept_at_start(setup: Setup, marked: StartMarked) -> None:
    leftover = marked(f"{NO_SUCH_PID}:1:{pid_namespace()}")
    alive_owner = marked(gateway_marker())  # this test process: alive, like another running Lockgate
    assert wait_for(lambda: len(group_members(leftover.pid)) == 2 and len(group_members(alive_owner.pid)) == 2, 10)

    gateway = start_gateway(setup)
    try:
        assert initialize(gateway)["id"] == 1  # the sweep is done before serving
        assert wait_for(lambda: group_members(leftover.pid) == [], 3)
        assert len(group_members(alive_owner.pid)) == 2
        assert "left behind by a gateway that is gone" in (setup.tmp / "gateway.log").read_text()
    finally:
        assert gateway.stdin is not None
        gateway.stdin.close()
        assert gateway.wait(20) == 0
