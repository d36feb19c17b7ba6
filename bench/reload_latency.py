"""How long from writing the rules file to the new rules being in effect?

One SDK ``Client`` talks to ``lockgate serve`` over stdio. The rules file is
rewritten N times, alternately granting and withdrawing agent ``bench``'s
access to server ``echo``; after each write the client calls
``list_servers`` in a tight loop until the answer flips. The time from just
before the write to the first flipped answer is one sample: the gateway's
poll wait, its settle wait, reading and validating both files, and the swap
in the core.

The pause between writes varies over one poll interval, so the writes land
at every phase of the gateway's 250 ms poll. Reported: median, p90, max and
min in milliseconds. Each write has a time limit, and so has the whole run;
the benchmark always stops by itself.

    python bench/reload_latency.py [--writes 20] [--json]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio
from mcp import Client, StdioServerParameters

AGENT = "bench"
SERVER = "echo"
POLL = 0.25  # the gateway's poll interval, to spread the writes over it


def rules(granted: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"allow": {"servers": [SERVER] if granted else []}}
    return {"agents": {AGENT: body}, "defaults": {"deny_on_missing_agent": True}}


def write(path: Path, value: dict[str, Any]) -> None:
    path.write_text(json.dumps(value, indent=2))


async def visible(client: Client) -> bool:
    result = await client.call_tool("list_servers", {"agent_id": AGENT})
    assert isinstance(result.structured_content, dict)
    return bool(result.structured_content["result"])


async def measure(directory: Path, writes: int, per_write_limit: float) -> list[float]:
    servers_path = directory / ".mcp.json"
    rules_path = directory / ".mcp-gateway-rules.json"
    # The server is never started (lazy): list_servers answers from configuration.
    write(servers_path, {"mcpServers": {SERVER: {"command": sys.executable, "args": ["-c", "pass"]}}})
    write(rules_path, rules(False))
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "lockgate.shells", "serve", "--config", str(servers_path), "--rules", str(rules_path)],
        env={
            "PATH": "/usr/bin:/bin",
            "GATEWAY_INIT_STRATEGY": "lazy",
            "GATEWAY_AUDIT_LOG": "/dev/null",
            "GATEWAY_LOG_LEVEL": "warning",  # not one line per reload
        },
        cwd=str(directory),
    )
    samples: list[float] = []
    async with Client(params, mode="legacy", read_timeout_seconds=30) as client:
        state = await visible(client)
        for n in range(writes):
            # Spread the writes over the poll phase: 0.3 s plus a step through one interval.
            await trio.sleep(0.3 + (n * 0.6180339887 % 1.0) * POLL)
            state = not state
            start = time.perf_counter()
            write(rules_path, rules(state))
            with trio.move_on_after(per_write_limit) as scope:
                while await visible(client) != state:
                    pass
            if scope.cancelled_caught:
                print(f"write {n + 1}: no effect within {per_write_limit} s; stopping", file=sys.stderr)
                break
            samples.append((time.perf_counter() - start) * 1000)
    return samples


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(fraction * len(ordered)) - 1)]


def main() -> int:
    parser = argparse.ArgumentParser(description="Time from a rules file write to the new rules in effect.")
    parser.add_argument("--writes", type=int, default=20, help="how many writes to time (default 20)")
    parser.add_argument("--write-timeout", type=float, default=5.0, help="seconds to wait for one write to apply")
    parser.add_argument("--timeout", type=float, default=120.0, help="hard limit for the whole run, in seconds")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()

    async def run() -> list[float]:
        with tempfile.TemporaryDirectory(prefix="lockgate-reload-") as directory:
            with trio.move_on_after(args.timeout):
                return await measure(Path(directory), args.writes, args.write_timeout)
            print(f"stopped after {args.timeout} s", file=sys.stderr)
            return []

    samples = trio.run(run)
    complete = len(samples) == args.writes
    report = {
        "writes": len(samples),
        "complete": complete,
        "median_ms": round(statistics.median(samples), 1) if samples else None,
        "p90_ms": round(percentile(samples, 0.9), 1) if samples else None,
        "max_ms": round(max(samples), 1) if samples else None,
        "min_ms": round(min(samples), 1) if samples else None,
    }
    if args.json:
        print(json.dumps(report))
    elif samples:
        print(
            f"{len(samples)} writes: median {report['median_ms']} ms, p90 {report['p90_ms']} ms, "
            f"max {report['max_ms']} ms, min {report['min_ms']} ms (goal: under 300 ms)"
        )
    return 0 if complete else 1


if __name__ == "__main__":
    sys.exit(main())
