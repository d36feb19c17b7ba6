"""How much CPU does Lockgate spend per tool call over stdio?

A steadier companion to ``stdio_overhead.py`` for busy machines: wall-clock
latency moves with whatever else runs, the gateway's own CPU time much less.
A plain JSON-lines client (no SDK) starts ``lockgate serve`` with the raw
echo server behind it, makes N sequential ``execute_tool`` echo calls and
reads the gateway process's user + system time from ``/proc`` before and
after (Linux only; the clock tick is 10 ms, so use a few thousand calls).

    python bench/stdio_cpu.py [--calls 4000] [--json]

Reported: the median round trip as this client sees it (gateway plus raw echo
server), and the gateway's CPU microseconds per call.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stdio_overhead import AGENT, SERVER, TEXT, lockgate_command, write_config  # noqa: E402


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(calls: int, warmup: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="lockgate-bench-") as tmp:
        directory = Path(tmp)
        config, rules = write_config(directory, "raw")
        gateway = subprocess.Popen(
            [*lockgate_command(), "serve", "--config", str(config), "--rules", str(rules)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            cwd=directory,
            bufsize=0,
        )
        assert gateway.stdin is not None and gateway.stdout is not None
        stdin, stdout = gateway.stdin, gateway.stdout

        def rpc(message: dict[str, Any]) -> dict[str, Any] | None:
            stdin.write(json.dumps(message).encode() + b"\n")
            if "id" not in message:
                return None
            line = stdout.readline()
            if not line:
                raise RuntimeError("the gateway closed its output")
            answer: dict[str, Any] = json.loads(line)
            return answer

        try:
            rpc({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
                "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "bench", "version": "1"}}})
            rpc({"jsonrpc": "2.0", "method": "notifications/initialized"})
            call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
                "name": "execute_tool",
                "arguments": {"agent_id": AGENT, "server": SERVER, "tool": "echo", "args": {"text": TEXT}}}}
            for i in range(warmup):
                call["id"] = i + 1
                answer = rpc(call)
                if TEXT not in json.dumps(answer):
                    raise RuntimeError(f"unexpected answer: {answer}")
            start_cpu = cpu_seconds(gateway.pid)
            latencies = []
            for i in range(calls):
                call["id"] = warmup + i + 1
                started = time.perf_counter_ns()
                rpc(call)
                latencies.append(time.perf_counter_ns() - started)
            used = cpu_seconds(gateway.pid) - start_cpu
        finally:
            stdin.close()
            gateway.wait(timeout=30)
    latencies.sort()
    return {
        "calls": calls,
        "median_round_trip_us": round(latencies[len(latencies) // 2] / 1000, 1),
        "gateway_cpu_us_per_call": round(used / calls * 1e6, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=4000, help="timed calls (default 4000)")
    parser.add_argument("--warmup", type=int, default=50, help="untimed calls first (default 50)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if args.calls < 1:
        parser.error("--calls must be at least 1")
    result = measure(args.calls, args.warmup)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{result['calls']} calls through lockgate serve to the raw echo server:")
        print(f"  median round trip   {result['median_round_trip_us']:8.1f} us")
        print(f"  gateway CPU per call {result['gateway_cpu_us_per_call']:7.1f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
