"""How much longer than its downstream alone does a fresh Lockgate take to answer its first tool call?

Each round, in turns (gateway first, then the other way round):

- direct: start the echo server over stdio and time from the spawn to the
  answer of its first ``tools/call`` echo (``initialize`` and
  ``notifications/initialized`` first, sent without waiting in between, as a
  fast client does);
- gateway: start ``lockgate serve`` (stdio) with that same server behind it
  and time from the spawn to the answer of the first ``execute_tool`` echo,
  the same three messages sent at once.

Reported: the median and spread of each side over ``--rounds`` and of the
difference (gateway minus direct, per round), in milliseconds. The goal is a
difference of at most 100 ms. ``--mode sdk`` (default) uses the SDK
``echo_server.py``, ``raw`` the plain ``raw_echo_server.py``;
``--against PYTHON`` also measures another checkout's gateway in the same
rounds. ``--strategy`` (default ``eager``: servers start with the gateway;
``lazy``: at the first call) is ``GATEWAY_INIT_STRATEGY``.

    python bench/first_call.py [--rounds 7] [--mode sdk|raw] [--strategy eager|lazy] [--against OTHER/.venv/bin/python] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from stdio_overhead import AGENT, SERVER, TEXT, write_config  # noqa: E402

SCRIPTS = {"sdk": HERE / "echo_server.py", "raw": HERE / "raw_echo_server.py"}
INIT = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "first-call", "version": "1"}}}
INITIALIZED = {"jsonrpc": "2.0", "method": "notifications/initialized"}


def time_first_answer(command: list[str], call: dict[str, Any], cwd: str, env: dict[str, str]) -> float:
    """Seconds from spawning ``command`` to the answer to ``call`` (id 1) on its stdout."""
    lines = b"".join(json.dumps(m, separators=(",", ":")).encode() + b"\n" for m in (INIT, INITIALIZED, call))
    started = time.perf_counter()
    proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=cwd, env=env)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        proc.stdin.write(lines)
        proc.stdin.flush()
        while True:
            line = proc.stdout.readline()
            if not line:
                raise SystemExit(f"{command[:3]} ended before answering")
            message = json.loads(line)
            if message.get("id") == 1:
                elapsed = time.perf_counter() - started
                if TEXT not in line.decode():
                    raise SystemExit(f"unexpected answer: {line[:300]!r}")
                return elapsed
    finally:
        proc.stdin.close()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--mode", choices=("sdk", "raw"), default="sdk")
    parser.add_argument("--against", metavar="PYTHON", help="also measure the gateway run by this interpreter")
    parser.add_argument("--strategy", choices=("eager", "lazy"), default="eager", help="GATEWAY_INIT_STRATEGY (default eager)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    gateway_call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "execute_tool", "arguments": {"agent_id": AGENT, "server": SERVER, "tool": "echo", "args": {"text": TEXT}}}}
    direct_call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "echo", "arguments": {"text": TEXT}}}
    samples: dict[str, list[float]] = {"gateway": [], "direct": []}
    pythons = {"gateway": sys.executable}
    if args.against:
        pythons["baseline"] = args.against
        samples["baseline"] = []
    with tempfile.TemporaryDirectory(prefix="lockgate-first-call-") as tmp:
        config, rules = write_config(Path(tmp), args.mode)
        env = {**os.environ, "GATEWAY_AUDIT_LOG": str(Path(tmp) / "audit.jsonl"), "GATEWAY_INIT_STRATEGY": args.strategy}
        sides = list(samples)
        for index in range(args.rounds):
            for side in sides if index % 2 == 0 else sides[::-1]:
                if side == "direct":
                    command = [sys.executable, str(SCRIPTS[args.mode])]
                    samples[side].append(time_first_answer(command, direct_call, str(HERE), env))
                else:
                    command = [pythons[side], "-m", "lockgate.shells", "serve", "--config", str(config), "--rules", str(rules)]
                    samples[side].append(time_first_answer(command, gateway_call, tmp, env))
    report: dict[str, Any] = {"rounds": args.rounds, "mode": args.mode, "strategy": args.strategy}
    for side, values in samples.items():
        report[side] = _stats(values)
        if side != "direct":
            report[f"{side}_minus_direct"] = _stats([g - d for g, d in zip(values, samples["direct"])])
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"first tool call after start, {args.rounds} rounds, {args.mode} echo server over stdio, {args.strategy} start (ms: median, min, max)")
    for key, value in report.items():
        if isinstance(value, dict):
            print(f"{key:<24} {value['median_ms']:>8.1f} {value['min_ms']:>8.1f} {value['max_ms']:>8.1f}")


def _stats(values: list[float]) -> dict[str, float]:
    return {"median_ms": round(statistics.median(values) * 1000, 1), "min_ms": round(min(values) * 1000, 1), "max_ms": round(max(values) * 1000, 1)}


if __name__ == "__main__":
    main()
