"""What does Lockgate add to a tool call over stdio?

One run, two modes (the downstream is the SDK echo server, then the raw
no-SDK echo server). In each mode one SDK ``Client`` talks to
``lockgate serve`` (which runs the echo server behind it) and another talks
to the same echo server script directly. Both make sequential echo calls:
through the gateway with ``execute_tool`` (with ``--aggregate``: the same
``tools/call echo`` as the direct side, Lockgate in aggregate mode passing
the one server's names through), directly with ``tools/call``. The
calls alternate in blocks (gateway then direct, then direct then gateway, and
so on) so that drift (CPU frequency, other load) falls on both sides alike;
warm-up calls come first and are not counted.

Reported per mode: median and p95 latency of each side in milliseconds, the
ratio of the medians (gateway / direct) and the added time in microseconds
(gateway median minus direct median). Everything runs over stdio pipes; no
network. Each mode has a hard wall-clock limit; when it runs out the mode
stops and reports what it measured so far.

    python bench/stdio_overhead.py [--calls 1000] [--blocks 10] [--json]
                                   [--instances 3 --strategy least_connections]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import trio
from mcp import Client, StdioServerParameters
from mcp.types import CallToolResult, TextContent

HERE = Path(__file__).resolve().parent
Mode = Literal["sdk", "raw"]
SERVER_SCRIPTS: dict[Mode, Path] = {
    "sdk": HERE / "echo_server.py",
    "raw": HERE / "raw_echo_server.py",
}
AGENT = "bench"
SERVER = "echo"
TEXT = "hello, lockgate"


def lockgate_command() -> list[str]:
    """The command that starts Lockgate with this same Python."""
    return [sys.executable, "-m", "lockgate.shells"]


def write_config(directory: Path, mode: Mode, instances: int = 1, strategy: str = "round_robin") -> tuple[Path, Path]:
    """Write a ``.mcp.json`` with the echo server and rules that allow everything.

    With ``instances`` > 1 the gateway balances over that many echo servers.
    """
    launch = {"command": sys.executable, "args": [str(SERVER_SCRIPTS[mode])]}
    entry: dict[str, Any] = {**launch, "description": f"echo server ({mode})"}
    if instances > 1:
        entry = {"instances": [launch] * instances, "strategy": strategy, "description": entry["description"]}
    servers = {"mcpServers": {SERVER: entry}}
    allow_all: dict[str, Any] = {"allow": {"servers": ["*"], "tools": {SERVER: ["*"]}}}
    rules = {
        "agents": {AGENT: allow_all, "default": allow_all},
        "defaults": {"deny_on_missing_agent": False},
    }
    config_path = directory / ".mcp.json"
    rules_path = directory / ".mcp-gateway-rules.json"
    config_path.write_text(json.dumps(servers, indent=2))
    rules_path.write_text(json.dumps(rules, indent=2))
    return config_path, rules_path


@dataclass
class Side:
    """Latencies of one side (gateway or direct) in nanoseconds."""

    samples_ns: list[int] = field(default_factory=list)

    def summary(self) -> dict[str, float | int | None]:
        n = len(self.samples_ns)
        if n == 0:
            return {"calls": 0, "median_ms": None, "p95_ms": None, "mean_ms": None}
        ordered = sorted(self.samples_ns)
        p95 = ordered[max(0, math.ceil(0.95 * n) - 1)]  # nearest rank
        return {
            "calls": n,
            "median_ms": statistics.median(ordered) / 1e6,
            "p95_ms": p95 / 1e6,
            "mean_ms": statistics.fmean(ordered) / 1e6,
        }


@dataclass
class ModeResult:
    """Everything measured in one mode."""

    mode: Mode
    gateway: Side = field(default_factory=Side)
    direct: Side = field(default_factory=Side)
    complete: bool = False
    error: str | None = None
    seconds: float = 0.0

    def report(self) -> dict[str, Any]:
        gateway, direct = self.gateway.summary(), self.direct.summary()
        ratio: float | None = None
        added_us: float | None = None
        g_med, d_med = gateway["median_ms"], direct["median_ms"]
        if g_med is not None and d_med is not None:
            ratio = g_med / d_med if d_med > 0 else None
            added_us = (g_med - d_med) * 1000
        return {
            "mode": self.mode,
            "downstream": SERVER_SCRIPTS[self.mode].name,
            "complete": self.complete,
            "error": self.error,
            "seconds": round(self.seconds, 3),
            "gateway": gateway,
            "direct": direct,
            "ratio_of_medians": ratio,
            "added_us": added_us,
        }


def check_echo(result: CallToolResult, side: str) -> None:
    """Fail loudly if an echo call did not echo (a benchmark of errors measures nothing)."""
    block = result.content[0] if result.content else None
    if result.is_error or not isinstance(block, TextContent) or block.text != TEXT:
        raise RuntimeError(f"{side} echo returned something else: {result!r}")


async def run_mode(mode: Mode, args: argparse.Namespace, result: ModeResult) -> None:
    """Measure one mode, appending samples to ``result`` as they come."""
    with tempfile.TemporaryDirectory(prefix="lockgate-bench-") as tmp:
        config_path, rules_path = write_config(Path(tmp), mode, args.instances, args.strategy)
        command = lockgate_command()
        gateway_params = StdioServerParameters(
            command=command[0],
            args=[*command[1:], "serve", "--config", str(config_path), "--rules", str(rules_path)],
            cwd=tmp,  # the audit log and anything else relative lands in the temp dir
            env={"PYTHONUNBUFFERED": "1", **({"GATEWAY_MODE": "aggregate", "GATEWAY_PREFIX": "never"} if args.aggregate else {})},
        )
        direct_params = StdioServerParameters(command=sys.executable, args=[str(SERVER_SCRIPTS[mode])], cwd=tmp)
        # With --direct-only the "gateway" side is a second direct client, so the
        # harness itself can be checked (and its symmetry seen) without Lockgate.
        async with (
            Client(direct_params if args.direct_only else gateway_params, mode="legacy") as gateway,
            Client(direct_params, mode="legacy") as direct,
        ):

            async def via_gateway() -> CallToolResult:
                if args.direct_only or args.aggregate:
                    # Aggregate mode with one server and no prefix: the very call the direct side makes.
                    return await gateway.call_tool("echo", {"text": TEXT})
                return await gateway.call_tool(
                    "execute_tool",
                    {"agent_id": AGENT, "server": SERVER, "tool": "echo", "args": {"text": TEXT}},
                )

            async def straight() -> CallToolResult:
                return await direct.call_tool("echo", {"text": TEXT})

            await measure(via_gateway, straight, args, result)
    result.complete = True


Call = Callable[[], Awaitable[CallToolResult]]


async def measure(via_gateway: Call, straight: Call, args: argparse.Namespace, result: ModeResult) -> None:
    """Warm up, then time ``args.calls`` calls per side in alternating blocks, then check both still echo."""
    for _ in range(args.warmup):
        check_echo(await via_gateway(), "gateway")
        check_echo(await straight(), "direct")
    per_block = max(1, args.calls // args.blocks)
    sides: list[tuple[Call, Side]] = [(via_gateway, result.gateway), (straight, result.direct)]
    done = 0
    block = 0
    while done < args.calls:
        count = min(per_block, args.calls - done)
        # Alternate which side goes first, so neither always runs on a warmer machine.
        order = sides if block % 2 == 0 else sides[::-1]
        for call, side in order:
            for _ in range(count):
                start = time.perf_counter_ns()
                await call()
                side.samples_ns.append(time.perf_counter_ns() - start)
        done += count
        block += 1
    check_echo(await via_gateway(), "gateway")
    check_echo(await straight(), "direct")


def describe(exc: BaseException) -> str:
    """One line per leaf exception, with task groups unwrapped."""
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(describe(inner) for inner in exc.exceptions)
    return f"{type(exc).__name__}: {exc}"


RunMode = Callable[[Any, argparse.Namespace, ModeResult], Awaitable[None]]


async def run_modes(
    args: argparse.Namespace, run: RunMode, summarise: Callable[[ModeResult], dict[str, Any]]
) -> list[ModeResult]:
    """Run each of ``args.modes`` under its time limit; a failing mode is reported and the next one runs."""
    results: list[ModeResult] = []
    for mode in args.modes:
        result = ModeResult(mode=mode)
        results.append(result)
        started = time.monotonic()
        with trio.move_on_after(args.phase_timeout) as scope:
            try:
                await run(mode, args, result)
            except Exception as exc:  # report and go on to the next mode
                result.error = describe(exc)
        if scope.cancelled_caught:
            result.error = f"stopped after the {args.phase_timeout:g}s limit"
        result.seconds = time.monotonic() - started
        if not args.json:
            print_mode(summarise(result))
    return results


async def run_all(args: argparse.Namespace) -> list[ModeResult]:
    return await run_modes(args, run_mode, ModeResult.report)


def _fmt(value: float | int | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_mode(report: dict[str, Any]) -> None:
    g, d = report["gateway"], report["direct"]
    status = "complete" if report["complete"] else f"INCOMPLETE ({report['error']})"
    print(f"\n== downstream: {report['downstream']} ({report['mode']}), {report['seconds']:.1f}s, {status}")
    print(f"   {'':8} {'calls':>6} {'median ms':>10} {'p95 ms':>8}")
    for name, side in (("gateway", g), ("direct", d)):
        print(f"   {name:8} {side['calls']:>6} {_fmt(side['median_ms'], '.3f'):>10} {_fmt(side['p95_ms'], '.3f'):>8}")
    print(
        f"   ratio of medians (gateway/direct): {_fmt(report['ratio_of_medians'], '.2f')}; "
        f"added per call: {_fmt(report['added_us'], '.0f')} us"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=1000, help="timed calls per side and mode (default 1000)")
    parser.add_argument("--blocks", type=int, default=10, help="alternating blocks per side (default 10)")
    parser.add_argument("--warmup", type=int, default=50, help="untimed calls per side first (default 50)")
    parser.add_argument(
        "--phase-timeout", type=float, default=120.0, help="wall-clock limit per mode in seconds (default 120)"
    )
    parser.add_argument(
        "--mode", choices=["sdk", "raw", "both"], default="both", help="which downstream (default both)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    parser.add_argument(
        "--instances", type=int, default=1, help="echo servers the gateway balances over (default 1; direct uses one)"
    )
    parser.add_argument(
        "--strategy",
        choices=["round_robin", "least_connections", "weighted", "health_based", "random"],
        default="round_robin",
        help="balancing strategy with --instances > 1 (default round_robin)",
    )
    parser.add_argument(
        "--aggregate",
        action="store_true",
        help="serve in aggregate mode (one server, GATEWAY_PREFIX=never): the gateway side calls echo as the direct side does",
    )
    parser.add_argument(
        "--direct-only",
        action="store_true",
        help="replace the gateway side by a second direct client (checks the harness without Lockgate)",
    )
    args = parser.parse_args(argv)
    if args.calls < 1 or args.blocks < 1 or args.warmup < 0 or args.phase_timeout <= 0 or args.instances < 1:
        parser.error("--calls and --blocks must be positive, --warmup >= 0, --phase-timeout > 0")
    args.modes = ["sdk", "raw"] if args.mode == "both" else [args.mode]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.json:
        print(
            f"Lockgate stdio overhead: {args.calls} calls per side, {args.blocks} alternating blocks, "
            f"{args.warmup} warm-up calls, limit {args.phase_timeout:g}s per mode"
        )
        if args.direct_only:
            print("--direct-only: the 'gateway' rows are a second direct client (no Lockgate)")
        else:
            print(f"gateway command: {' '.join(lockgate_command())} serve ...")
    results = trio.run(run_all, args)
    reports = [r.report() for r in results]
    if args.json:
        meta = {
            "calls": args.calls,
            "blocks": args.blocks,
            "warmup": args.warmup,
            "phase_timeout_s": args.phase_timeout,
            "python": sys.version.split()[0],
            "platform": sys.platform,
            "direct_only": args.direct_only,
        }
        print(json.dumps({"settings": meta, "modes": reports}, indent=2))
    return 0 if all(r.complete for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
