"""What does a rate limit shared through Redis cost per call, against the same limit kept in memory?

Two ``lockgate serve --transport http`` on 127.0.0.1, the raw echo server
behind each (``raw_echo_server.py``: the gateway's own cost shows), the same
agent limit on both (``GATEWAY_RATE_LIMIT``, so high that no call is refused):

- ``memory``: the limit in the process's own token buckets (no
  ``GATEWAY_REDIS_URL``);
- ``redis``: ``GATEWAY_REDIS_URL`` set to a ``redis-server`` this run starts
  on 127.0.0.1 (Debian's, ``make redis``; no persistence): each call waits
  for one Lua script in Redis (:mod:`lockgate.shells.shared_limits`).

Each is loaded with http_load.py's lean socket client, ``execute_tool`` echo
calls in a closed loop: one session (sequential: the latency a call adds)
and ``--sessions`` sessions at once (throughput). The blocks alternate in
rounds (memory then redis, then redis then memory, ...) so drift on the
machine falls on both alike; an untimed warm-up of each comes first.

Reported per load and side: calls/s, p50/p95/p99 latency in ms, errors,
and the gateway's CPU per call (user + system, from ``/proc``); then the
ratios redis / memory, and the added p50 latency per call in µs. Redis's
own CPU is not counted in the gateway's. ``--json`` prints one JSON object.
About 30 s by default (``--quick``: about 8 s). The exit status is 1 when a
call failed.

    python bench/shared_limits.py [--rounds 3] [--seconds 2] [--sessions 20] [--quick] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import http_load  # noqa: E402  (the sibling benchmark: gateway start and stop, the load, CPU time, percentiles)

from tests.redis_server import RedisServer  # noqa: E402  (the test suite's throwaway redis-server)

SIDES = ("memory", "redis")
# High enough that no call of the run is refused: what is measured is the check, not refusals.
RATE = "100000000/s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=2.0, help="seconds per block (default 2)")
    parser.add_argument("--sessions", type=int, default=20, help="concurrent sessions of the second load (default 20)")
    parser.add_argument("--quick", action="store_true", help="one round of 1 s blocks")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.seconds = 1, 1.0
    redis = RedisServer.start()
    procs: dict[str, Any] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="lockgate-bench-limits-") as tmp:
            urls: dict[str, tuple[str, int]] = {}
            for side in SIDES:
                folder = Path(tmp) / side
                folder.mkdir()
                env = {"GATEWAY_RATE_LIMIT": RATE}
                if side == "redis":
                    # A second, not 100 ms: on a busy machine a slow answer must not count as a failed call here.
                    env.update(GATEWAY_REDIS_URL=redis.url, GATEWAY_REDIS_TIMEOUT="1")
                proc, url = http_load.start_gateway(folder, "raw", env)
                procs[side] = proc
                host, port = url.removeprefix("http://").rsplit(":", 1)
                urls[side] = (host, int(port))
            loads = {"sequential": 1, "concurrent": args.sessions}
            latencies: dict[tuple[str, str], list[dict[str, Any]]] = {(load, side): [] for load in loads for side in SIDES}
            cpu: dict[tuple[str, str], float] = {key: 0.0 for key in latencies}
            for side in SIDES:  # warm-up, untimed
                http_load.load_http(*urls[side], 2, 0.5)
            for round_ in range(args.rounds):
                order = SIDES if round_ % 2 == 0 else tuple(reversed(SIDES))
                for load, sessions in loads.items():
                    for side in order:
                        before = http_load.cpu_seconds(procs[side].pid) or 0.0
                        result = http_load.load_http(*urls[side], sessions, args.seconds)
                        cpu[(load, side)] += (http_load.cpu_seconds(procs[side].pid) or 0.0) - before
                        latencies[(load, side)].append(result)
    finally:
        for proc in procs.values():
            http_load.stop_gateway(proc)
        redis.stop()
    report: dict[str, Any] = {}
    failed = False
    for load in loads:
        block: dict[str, Any] = {}
        for side in SIDES:
            runs = latencies[(load, side)]
            calls = sum(r["calls"] for r in runs)
            seconds = sum(r["seconds"] for r in runs)
            errors = sum(r["errors"] for r in runs)
            failed = failed or errors > 0
            block[side] = {
                "calls": calls,
                "errors": errors,
                "calls_per_second": round(calls / seconds, 1) if seconds else 0.0,
                # The median of the rounds' percentiles: each round's are over thousands of calls.
                **{q: sorted(r[q] for r in runs)[len(runs) // 2] for q in ("p50_ms", "p95_ms", "p99_ms")},
                "cpu_us_per_call": round(cpu[(load, side)] / calls * 1e6, 1) if calls else None,
            }
        memory, shared = block["memory"], block["redis"]
        block["ratio_redis_over_memory"] = {
            "calls_per_second": round(shared["calls_per_second"] / memory["calls_per_second"], 3) if memory["calls_per_second"] else None,
            "p50_ms": round(shared["p50_ms"] / memory["p50_ms"], 3) if memory["p50_ms"] else None,
            "p99_ms": round(shared["p99_ms"] / memory["p99_ms"], 3) if memory["p99_ms"] else None,
            "cpu_us_per_call": round(shared["cpu_us_per_call"] / memory["cpu_us_per_call"], 3) if memory["cpu_us_per_call"] else None,
        }
        block["added_p50_us_per_call"] = round((shared["p50_ms"] - memory["p50_ms"]) * 1000, 1)
        report[load] = block
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for load, block in report.items():
            print(f"{load} ({loads[load]} session{'s' if loads[load] > 1 else ''}):")
            for side in SIDES:
                s = block[side]
                print(
                    f"  {side:<7} {s['calls_per_second']:>9.1f} calls/s  p50 {s['p50_ms']:.3f} ms  p95 {s['p95_ms']:.3f} ms  "
                    f"p99 {s['p99_ms']:.3f} ms  cpu {s['cpu_us_per_call']} µs/call  errors {s['errors']}"
                )
            r = block["ratio_redis_over_memory"]
            print(
                f"  redis/memory: calls/s x{r['calls_per_second']}  p50 x{r['p50_ms']}  p99 x{r['p99_ms']}  cpu x{r['cpu_us_per_call']}"
                f"  (+{block['added_p50_us_per_call']} µs p50 per call)"
            )
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
