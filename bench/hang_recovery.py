"""How long does a hung downstream stop service, and how many calls fail meanwhile?

``callers`` clients keep one ``execute_tool`` echo call each in flight through
``lockgate serve`` (stdio) to ``raw_echo_server.py``, each call with
``timeout_ms``. After a warm-up the echo server gets SIGSTOP: it neither
answers nor dies, and it ignores a closed stdin and SIGTERM until it is
continued. The run goes on until a call succeeds again (only a new process
can answer it) and a few seconds more, or until ``--limit`` seconds.

Reported: seconds from the SIGSTOP to the first successful call, the calls
that failed in that time by error code, whether the stopped process was
killed, and the calls per second before the stop. With ``--against REV`` the
same run is made first against another revision of Lockgate (checked out in
a temporary git worktree), so both behaviours are measured on one machine in
one run.

    python bench/hang_recovery.py [--callers 20] [--timeout-ms 1000]
        [--health-interval 30] [--health-timeout 10] [--against 28b0519] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SERVER = HERE / "raw_echo_server.py"


@dataclass
class Outcome:
    """One run: what happened after the downstream was stopped."""

    revision: str
    recovered_after_s: float | None = None
    failed: Counter[str] = field(default_factory=Counter)
    calls_per_s_before: float = 0.0
    killed: bool = False
    gateway_alive: bool = True


def write_config(directory: Path, marker: str) -> tuple[Path, Path]:
    config = {"mcpServers": {"echo": {"command": sys.executable, "args": [str(SERVER), marker], "description": "echo"}}}
    rules = {"agents": {"bench": {"allow": {"servers": ["*"]}}}, "defaults": {"deny_on_missing_agent": True}}
    (directory / ".mcp.json").write_text(json.dumps(config))
    (directory / "rules.json").write_text(json.dumps(rules))
    return directory / ".mcp.json", directory / "rules.json"


def find_pid(marker: str) -> int | None:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "cmdline").read_bytes():
                    return int(entry.name)
            except OSError:
                continue
    return None


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def source_path(revision: str | None, scratch: Path) -> Path:
    """A directory whose ``lockgate`` package is ``revision`` (the working tree when ``None``)."""
    root = REPO
    if revision is not None:
        root = scratch / "worktree"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(root), revision], check=True, capture_output=True)
    package = scratch / "path" / "lockgate"
    package.mkdir(parents=True)
    (package / "core").symlink_to(root / "core")
    (package / "shells").symlink_to(root / "shells")
    return scratch / "path"


async def run(args: argparse.Namespace, revision: str | None) -> Outcome:
    outcome = Outcome(revision=revision or "working tree")
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        try:
            python_path = source_path(revision, scratch)
            marker = f"hang-bench-{os.getpid()}-{time.monotonic_ns()}"
            config, rules = write_config(scratch, marker)
            env = {
                "PATH": os.environ["PATH"],
                "PYTHONPATH": str(python_path),
                "GATEWAY_AUDIT_LOG": str(scratch / "audit.jsonl"),
                "GATEWAY_HEALTH_INTERVAL": str(args.health_interval),
                "GATEWAY_HEALTH_TIMEOUT": str(args.health_timeout),
            }
            command = [sys.executable, "-m", "lockgate.shells", "serve", "--config", str(config), "--rules", str(rules)]
            await measure(args, outcome, command, env, marker)
        finally:
            if revision is not None:
                subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(scratch / "worktree")], capture_output=True)
    return outcome


async def measure(args: argparse.Namespace, outcome: Outcome, command: list[str], env: dict[str, str], marker: str) -> None:
    process = await trio.lowlevel.open_process(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    assert process.stdin is not None and process.stdout is not None
    waiting: dict[int, trio.MemorySendChannel[dict[str, Any]]] = {}
    next_id = 10
    events: list[tuple[float, float, str]] = []  # (sent at, answered at, "ok" or an error code)
    writing = trio.StrictFIFOLock()

    async def write(data: bytes) -> None:
        assert process.stdin is not None
        async with writing:
            await process.stdin.send_all(data)

    async def send(message: dict[str, Any]) -> dict[str, Any]:
        sender, receiver = trio.open_memory_channel[dict[str, Any]](1)
        waiting[message["id"]] = sender
        await write(json.dumps(message).encode() + b"\n")
        return await receiver.receive()

    async def reader() -> None:
        buffer = b""
        assert process.stdout is not None
        while chunk := await process.stdout.receive_some(65536):
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                message = json.loads(line)
                sender = waiting.pop(message.get("id"), None)
                if sender is not None:
                    sender.send_nowait(message)

    async def caller(stop: trio.Event) -> None:
        nonlocal next_id
        while not stop.is_set():
            next_id += 1
            sent_at = trio.current_time()
            arguments = {"agent_id": "bench", "server": "echo", "tool": "echo", "args": {"text": "hi"}, "timeout_ms": args.timeout_ms}
            answer = await send({"jsonrpc": "2.0", "id": next_id, "method": "tools/call", "params": {"name": "execute_tool", "arguments": arguments}})
            code = "ok" if "result" in answer else str(answer["error"].get("data", {}).get("code", answer["error"]["code"]))
            events.append((sent_at, trio.current_time(), code))
            if code != "ok":
                await trio.sleep(0.001)  # a failing call returns at once: do not spin

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader)
            with trio.fail_after(30):
                await send({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "bench", "version": "1"}}})
                await write(b'{"jsonrpc":"2.0","method":"notifications/initialized"}\n')
            stop = trio.Event()
            for _ in range(args.callers):
                nursery.start_soon(caller, stop)
            started = trio.current_time()
            await trio.sleep(args.warmup)
            pid = find_pid(marker)
            assert pid is not None, "the echo server is not running"
            stopped_at = trio.current_time()
            outcome.calls_per_s_before = sum(1 for _, _, code in events if code == "ok") / (stopped_at - started)
            os.kill(pid, signal.SIGSTOP)
            with trio.move_on_after(args.limit):
                while True:
                    await trio.sleep(0.01)
                    # Only a call sent after the stop proves that a new process serves.
                    ok_after = [at for sent, at, code in events if code == "ok" and sent > stopped_at]
                    if ok_after:
                        outcome.recovered_after_s = min(ok_after) - stopped_at
                        break
            end = stopped_at + (outcome.recovered_after_s or args.limit)
            outcome.failed = Counter(code for _, at, code in events if stopped_at < at <= end and code != "ok")
            outcome.killed = not alive(pid)
            if not outcome.killed:
                os.kill(pid, signal.SIGKILL)
            outcome.gateway_alive = process.returncode is None
            stop.set()
            await trio.sleep(args.timeout_ms / 1000 + 0.5)
            nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            process.terminate()
            with trio.move_on_after(10):
                await process.wait()
            if process.returncode is None:
                process.kill()
                await process.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--callers", type=int, default=20)
    parser.add_argument("--timeout-ms", type=int, default=1000)
    parser.add_argument("--health-interval", type=float, default=30.0)
    parser.add_argument("--health-timeout", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of calls before the SIGSTOP")
    parser.add_argument("--limit", type=float, default=60.0, help="give up waiting for recovery after this many seconds")
    parser.add_argument("--against", metavar="REV", help="also measure this git revision of Lockgate first")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    outcomes = [trio.run(run, args, revision) for revision in ([args.against] if args.against else []) + [None]]
    if args.json:
        print(json.dumps([o.__dict__ | {"failed": dict(o.failed)} for o in outcomes], indent=2))
    else:
        print(f"{args.callers} callers, timeout_ms {args.timeout_ms}, health interval {args.health_interval:g} s, timeout {args.health_timeout:g} s")
        print(f"{'revision':<16} {'calls/s before':>14} {'recovered after':>16} {'failed calls (by code)':<40} {'stopped process killed'}")
        for o in outcomes:
            recovered = f"{o.recovered_after_s:.2f} s" if o.recovered_after_s is not None else f"> {args.limit:g} s"
            failed = ", ".join(f"{n} {code}" for code, n in o.failed.most_common()) or "none"
            print(f"{o.revision:<16} {o.calls_per_s_before:>14.0f} {recovered:>16} {failed:<40} {'yes' if o.killed else 'no'}")
    return 0 if all(o.recovered_after_s is not None and o.gateway_alive for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
