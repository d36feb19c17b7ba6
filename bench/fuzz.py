"""Fuzz a live gateway for minutes: does any frame stop it, hang it or lose an answer?

The long-running version of ``tests/e2e/test_fuzz.py``. It draws frames with
``tests/fuzzing.py`` (a seeded generator: well-formed JSON-RPC and tool calls,
every poison class of the strict JSON boundary, unsound ids, batches, byte
noise, invalid UTF-8, blank lines, CRLF, lines at and over the size limit),
starts ``lockgate serve`` in a temporary directory with one downstream behind
it, and sends them as fast as the gateway takes them, with at most
``--window`` requests unanswered at a time. Every request with a sound id must
get exactly one answer with that id, in any order; no answer may carry an id
nobody asked; the gateway must still run at the end and exit 0.

    python bench/fuzz.py                                # 100,000 frames over stdio, at most 300 s
    python bench/fuzz.py --frames 20000 --transport both --json
    python bench/fuzz.py --seed 7 --downstream sdk      # the SDK testing server behind it

Reported per transport: frames sent, frames/s, requests asked and answered,
answers missing, doubled or with an id nobody asked, -32603 answers, the
gateway's RSS before and after (and its peak), whether it was still running,
its exit status, tracebacks in its stderr, and the first discrepancies with
the frame that caused each. Sending stops after ``--seconds``; answers still
due get ``--drain`` seconds more. The exit status is 1 when anything was wrong.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import trio

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
from tests.fuzzing import (  # noqa: E402
    HTTP_HEADERS,
    Discrepancy,
    Frame,
    FrameMaker,
    Ledger,
    RawGateway,
    encode,
    http_messages,
    open_http_session,
    rss_kib,
)

DOWNSTREAMS = {
    "raw": HERE / "raw_echo_server.py",
    "sdk": ROOT / "tests" / "e2e" / "servers" / "testing_server.py",
}
SERVER = "testing"  # the name FrameMaker's calls use
AGENT = "dev"
CHUNK = 64 * 1024


def write_config(directory: Path, downstream: str) -> list[str]:
    """Write the server and rules files; return the arguments of ``lockgate serve``."""
    servers = {"mcpServers": {SERVER: {"command": sys.executable, "args": [str(DOWNSTREAMS[downstream])], "description": "fuzzed"}}}
    rules = {
        "agents": {AGENT: {"allow": {"servers": ["*"]}, "deny": {"tools": {SERVER: ["drop_*"]}}}},
        "defaults": {"deny_on_missing_agent": True},
    }
    (directory / ".mcp.json").write_text(json.dumps(servers))
    (directory / "rules.json").write_text(json.dumps(rules))
    return [sys.executable, "-m", "lockgate.shells", "serve", "--config", str(directory / ".mcp.json"), "--rules", str(directory / "rules.json")]


def environ(directory: Path, args: argparse.Namespace) -> dict[str, str]:
    return {
        **os.environ,
        "GATEWAY_AUDIT_LOG": str(directory / "audit.jsonl"),
        "GATEWAY_MAX_MESSAGE_BYTES": str(args.max_bytes),
        "GATEWAY_INIT_STRATEGY": "lazy",
    }


def check_call(request_id: str) -> tuple[Frame, dict[str, Any]]:
    message = {
        "jsonrpc": "2.0", "id": request_id, "method": "tools/call",
        "params": {"name": "execute_tool", "arguments": {"agent_id": AGENT, "server": SERVER, "tool": "echo", "args": {"text": "still here"}}},
    }
    body = encode(message)
    return Frame(kind="check", line=body + b"\n", body=body, asked=request_id), message


def echoed(answer: Any) -> bool:
    result = answer.get("result") if isinstance(answer, dict) else None
    return isinstance(result, dict) and "still here" in json.dumps(result)


class Run:
    """What one transport's run measured."""

    def __init__(self, transport: str, planned: int) -> None:
        self.transport = transport
        self.planned = planned
        self.ledger = Ledger()
        self.sent = 0
        self.bytes = 0
        self.kinds: Counter[str] = Counter()
        self.seconds = 0.0
        self.rss_before: int | None = None
        self.rss_after: int | None = None
        self.rss_peak: int | None = None
        self.alive_at_end = False
        self.check_ok = False
        self.exit_status: int | None = None
        self.tracebacks = 0
        self.stderr_tail = ""
        self.statuses: Counter[int] = Counter()
        self.extra: list[Discrepancy] = []
        self.error: str | None = None

    def note(self, index: int, frame: Frame) -> None:
        self.ledger.sent(index, frame)
        self.sent += 1
        self.bytes += len(frame.line if self.transport == "stdio" else frame.body)
        self.kinds[frame.kind] += 1

    def finish(self, stderr: str) -> None:
        self.tracebacks = stderr.count("Traceback")
        if self.tracebacks:
            self.stderr_tail = stderr[max(0, stderr.index("Traceback") - 300) :][:4000]

    def report(self) -> dict[str, Any]:
        problems = [*self.extra, *self.ledger.discrepancies()]
        answered = self.ledger.asked - len(self.ledger.missing())
        report = {
            "transport": self.transport,
            "frames_planned": self.planned,
            "frames_sent": self.sent,
            "bytes_sent": self.bytes,
            "seconds": round(self.seconds, 2),
            "frames_per_s": round(self.sent / self.seconds, 1) if self.seconds else None,
            "requests_asked": self.ledger.asked,
            "requests_answered": answered,
            "answers": self.ledger.answers,
            "null_id_answers": self.ledger.null_answers,
            "problems": dict(Counter(p.problem.split(":")[0] for p in problems)),
            "first_problems": [p.describe(200) for p in problems[:5]],
            "normal_call_after": self.check_ok,
            "alive_at_end": self.alive_at_end,
            "exit_status": self.exit_status,
            "rss_kib_before": self.rss_before,
            "rss_kib_after": self.rss_after,
            "rss_kib_peak": self.rss_peak,
            "tracebacks": self.tracebacks,
            "first_traceback": self.stderr_tail or None,
            "http_statuses": dict(sorted(self.statuses.items())) or None,
            "frame_kinds": dict(self.kinds.most_common()),
            "error": self.error,
        }
        report["clean"] = bool(
            not problems and self.alive_at_end and self.exit_status == 0 and not self.tracebacks and self.check_ok and not self.error
        )
        return report


async def run_stdio(args: argparse.Namespace, frames: list[Frame], run: Run) -> None:
    with tempfile.TemporaryDirectory(prefix="lockgate-fuzz-") as tmp:
        directory = Path(tmp)
        argv = write_config(directory, args.downstream)
        gateway: RawGateway | None = None
        try:
            async with RawGateway.start(argv, environ(directory, args), cwd=directory) as gateway:
                await drive_stdio(args, frames, run, gateway)
        finally:
            if gateway is not None:  # it has exited (or been killed) by now
                run.exit_status = gateway.returncode
                run.finish(gateway.stderr.decode(errors="replace"))


async def drive_stdio(args: argparse.Namespace, frames: list[Frame], run: Run, gateway: RawGateway) -> None:
    with trio.fail_after(60):
        await gateway.initialize()
        _, warm = check_call("warm-up")
        if not echoed(await gateway.request(warm)):
            raise RuntimeError("the warm-up call did not echo")
    run.rss_before = gateway.rss_kib()
    gateway.listener = run.ledger.received
    started = time.monotonic()
    deadline = started + args.seconds
    index = 0
    try:
        while index < len(frames) and time.monotonic() < deadline:
            # At most --window requests unanswered: forwarded calls queue at the downstream.
            with trio.move_on_after(max(0.0, deadline - time.monotonic())):
                await gateway.wait_until(lambda: run.ledger.outstanding < args.window)
            chunk = bytearray()
            while index < len(frames) and len(chunk) < CHUNK and run.ledger.outstanding < args.window:
                run.note(index, frames[index])
                chunk += frames[index].line
                index += 1
            await gateway.send(bytes(chunk))
    finally:
        run.seconds = time.monotonic() - started
    check, message = check_call("check#after")
    run.ledger.sent(len(frames), check)
    with trio.move_on_after(args.drain):
        run.check_ok = echoed(await gateway.request(message))
        await gateway.wait_until(lambda: run.ledger.outstanding == 0)
    run.rss_after = gateway.rss_kib()
    run.rss_peak = rss_kib(gateway.process.pid, "VmHWM")
    run.alive_at_end = gateway.alive
    for line in gateway.unreadable:
        run.ledger.unreadable(line)


async def run_http(args: argparse.Namespace, frames: list[Frame], run: Run) -> None:
    with tempfile.TemporaryDirectory(prefix="lockgate-fuzz-") as tmp:
        directory = Path(tmp)
        argv = [*write_config(directory, args.downstream), "--transport", "http", "--port", "0"]
        process = await trio.lowlevel.open_process(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=environ(directory, args), cwd=tmp
        )
        stderr = bytearray()
        url_found, stderr_done = trio.Event(), trio.Event()

        async def read_stderr() -> None:
            assert process.stderr is not None
            async for chunk in process.stderr:
                stderr.extend(chunk)
                if not url_found.is_set() and re.search(rb"at (http://\S+/mcp)", stderr):
                    url_found.set()
            stderr_done.set()

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(read_stderr)
                try:
                    with trio.fail_after(30):
                        await url_found.wait()
                    found = re.search(rb"at (http://\S+/mcp)", stderr)
                    assert found is not None
                    await drive_http(args, frames, run, process, found.group(1).decode())
                finally:
                    with trio.CancelScope(shield=True):
                        if process.returncode is None:
                            process.send_signal(signal.SIGTERM)
                        with trio.move_on_after(30):
                            await process.wait()
                        if process.returncode is None:
                            process.kill()
                            await process.wait()
                        with trio.move_on_after(5):
                            await stderr_done.wait()
                    nursery.cancel_scope.cancel()
        finally:
            run.exit_status = process.returncode
            run.finish(stderr.decode(errors="replace"))


async def drive_http(args: argparse.Namespace, frames: list[Frame], run: Run, process: trio.Process, url: str) -> None:
    limits = httpx.Limits(max_connections=args.http_workers + 2)
    async with httpx.AsyncClient(timeout=60, limits=limits) as http:
        session = await open_http_session(http, url)
        _, warm = check_call("warm-up")
        if not echoed((await http.post(url, json=warm, headers=session)).json()):
            raise RuntimeError("the warm-up call did not echo")
        run.rss_before = rss_kib(process.pid)
        # Most frames go to the session; some to none, some to a session that does not exist.
        routes = random.Random(args.seed + 3).choices(["session", "none", "unknown"], [90, 6, 4], k=len(frames))
        unknown = {**session, "mcp-session-id": "no-such-session"}
        started = time.monotonic()
        deadline = started + args.seconds
        next_index = 0
        new_sessions: list[str] = []

        async def worker() -> None:
            nonlocal next_index
            while next_index < len(frames) and time.monotonic() < deadline:
                index = next_index
                next_index += 1
                frame, route = frames[index], routes[index]
                if route != "session" and frame.asked is not None:
                    frame = replace(frame, asked=None, tolerated=frame.asked)
                run.note(index, frame)
                headers = session if route == "session" else HTTP_HEADERS if route == "none" else unknown
                try:
                    response = await http.post(url, content=frame.body, headers=headers)
                except httpx.TransportError as exc:
                    run.extra.append(Discrepancy(f"no HTTP answer: {type(exc).__name__}", index, frame, str(exc)))
                    continue
                run.statuses[response.status_code] += 1
                if response.status_code not in (200, 202, 400, 404, 413):
                    run.extra.append(Discrepancy(f"HTTP {response.status_code}", index, frame, response.text[:200]))
                if route == "none" and "mcp-session-id" in response.headers:
                    new_sessions.append(response.headers["mcp-session-id"])
                try:
                    messages = http_messages(response.headers.get("content-type"), response.content)
                except ValueError:
                    run.extra.append(Discrepancy("an HTTP body that is not JSON-RPC", index, frame, response.text[:200]))
                    continue
                for message in messages:
                    if not (isinstance(message, dict) and "method" in message):
                        run.ledger.received(message)

        async with trio.open_nursery() as nursery:
            for _ in range(args.http_workers):
                nursery.start_soon(worker)
        run.seconds = time.monotonic() - started
        check, message = check_call("check#after")
        run.ledger.sent(len(frames), check)
        with trio.move_on_after(args.drain):
            response = await http.post(url, json=message, headers=session)
            run.check_ok = response.status_code == 200 and echoed(response.json())
            run.ledger.received(response.json())
        for stale in new_sessions:
            await http.delete(url, headers={**HTTP_HEADERS, "mcp-session-id": stale})
        run.rss_after = rss_kib(process.pid)
        run.rss_peak = rss_kib(process.pid, "VmHWM")
        run.alive_at_end = process.poll() is None


async def run_all(args: argparse.Namespace, frames: list[Frame]) -> list[Run]:
    runs = []
    for transport in args.transports:
        run = Run(transport, len(frames))
        runs.append(run)
        try:
            await (run_stdio if transport == "stdio" else run_http)(args, frames, run)
        except Exception as exc:  # report it, and go on to the next transport
            run.error = describe(exc)
        if not args.json:
            print_run(run.report())
    return runs


def describe(exc: BaseException) -> str:
    """The first line of each leaf exception, task groups unwrapped."""
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(describe(inner) for inner in exc.exceptions)
    text = str(exc).splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _mib(kib: int | None) -> str:
    return "-" if kib is None else f"{kib / 1024:.1f}"


def print_run(r: dict[str, Any]) -> None:
    verdict = "clean" if r["clean"] else "PROBLEMS"
    print(f"\n== {r['transport']}: {verdict}" + (f" (error: {r['error']})" if r["error"] else ""))
    stopped = "" if r["frames_sent"] == r["frames_planned"] else " (stopped by the error)" if r["error"] else " (time limit)"
    rows = [
        ("frames sent", f"{r['frames_sent']:,} of {r['frames_planned']:,}{stopped}, {r['bytes_sent'] / 1e6:.1f} MB"),
        ("seconds sending", f"{r['seconds']:.1f}"),
        ("frames/s", f"{r['frames_per_s']:,.0f}" if r["frames_per_s"] else "-"),
        ("requests asked (sound id)", f"{r['requests_asked']:,}"),
        ("requests answered", f"{r['requests_answered']:,}"),
        ("answers (all / id null)", f"{r['answers']:,} / {r['null_id_answers']:,}"),
        ("discrepancies", ", ".join(f"{k}: {v}" for k, v in r["problems"].items()) or "none"),
        ("normal call afterwards", "ok" if r["normal_call_after"] else "FAILED"),
        ("still running at the end", "yes" if r["alive_at_end"] else "NO"),
        ("exit status", str(r["exit_status"])),
        ("RSS before / after / peak MiB", f"{_mib(r['rss_kib_before'])} / {_mib(r['rss_kib_after'])} / {_mib(r['rss_kib_peak'])}"),
        ("tracebacks in stderr", str(r["tracebacks"])),
    ]
    if r["http_statuses"]:
        rows.append(("HTTP statuses", ", ".join(f"{k}: {v:,}" for k, v in r["http_statuses"].items())))
    for name, value in rows:
        print(f"   {name:<30} {value}")
    for line in r["first_problems"]:
        print(f"   - {line}")
    if r["first_traceback"]:
        print("   first traceback:\n" + r["first_traceback"])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--frames", type=int, default=100_000, help="frames per transport (default 100000)")
    parser.add_argument("--seconds", type=float, default=300.0, help="stop sending after this long, per transport (default 300)")
    parser.add_argument("--drain", type=float, default=60.0, help="seconds to wait for answers still due afterwards (default 60)")
    parser.add_argument("--seed", type=int, default=1, help="the generator's seed (default 1)")
    parser.add_argument("--transport", choices=["stdio", "http", "both"], default="stdio", help="default stdio")
    parser.add_argument("--downstream", choices=sorted(DOWNSTREAMS), default="raw",
                        help="raw: bench/raw_echo_server.py (fast, default); sdk: the SDK testing server of the e2e tests")
    parser.add_argument("--window", type=int, default=256, help="stdio: requests unanswered at most (default 256)")
    parser.add_argument("--http-workers", type=int, default=8, help="http: POSTs in flight (default 8)")
    parser.add_argument("--max-bytes", type=int, default=65536, help="GATEWAY_MAX_MESSAGE_BYTES (default 65536)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    args = parser.parse_args(argv)
    if args.frames < 1 or args.seconds <= 0 or args.window < 1 or args.http_workers < 1 or args.max_bytes < 1024:
        parser.error("--frames, --seconds, --window and --http-workers must be positive, --max-bytes at least 1024")
    args.transports = ["stdio", "http"] if args.transport == "both" else [args.transport]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    frames = FrameMaker(args.seed, max_bytes=args.max_bytes, server=SERVER, agent=AGENT).frames(args.frames)
    generated = time.monotonic() - started
    if not args.json:
        size = sum(len(f.line) for f in frames) / 1e6
        print(
            f"Lockgate fuzz: {args.frames:,} frames (seed {args.seed}, {size:.1f} MB, drawn in {generated:.1f} s), "
            f"limit {args.seconds:g} s per transport, GATEWAY_MAX_MESSAGE_BYTES {args.max_bytes}, "
            f"downstream {DOWNSTREAMS[args.downstream].name}"
        )
    runs = trio.run(run_all, args, frames)
    if args.json:
        settings = {k: getattr(args, k) for k in ("frames", "seconds", "drain", "seed", "downstream", "window", "http_workers", "max_bytes")}
        print(json.dumps({"settings": settings, "generated_s": round(generated, 2), "runs": [r.report() for r in runs]}, indent=2))
    return 0 if all(run.report()["clean"] for run in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
