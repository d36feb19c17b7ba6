"""Lockgate against agent-mcp-gateway 0.2.5, and both against calling the server directly.

Both gateways get the same downstream (``echo_server.py``, an SDK
``MCPServer``) and the same rules (agent ``bench`` may use everything). One
run measures, interleaved (each measure visits Lockgate, agent-mcp-gateway
and the direct connection in alternating order, block by block):

- ``list_servers`` and ``get_server_tools`` latency (direct: ``tools/list``)
- ``execute_tool`` echo latency, sequential (direct: ``tools/call`` echo),
  and calls per second, sequential and with 10 calls in flight
- start to first response: from spawning the process to the ``initialize``
  result, over several fresh starts
- peak RSS of the gateway process (``VmHWM``; the downstream not included)
- bytes of the gateway's ``tools/list`` result and of one forwarded echo
  result, as sent on the wire (a raw JSON-lines client reads them)

The client is the MCP SDK ``Client`` (``mcp`` 2.3.0, handshake era) for the
timings. agent-mcp-gateway runs from its own virtual environment
(``make bench-compare`` installs it into ``bench/.venv-amg``).

    python bench/compare_gateways.py --amg-python bench/.venv-amg/bin/python [--calls 300] [--json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio
from mcp import Client, StdioServerParameters

HERE = Path(__file__).resolve().parent
ECHO_SERVER = HERE / "echo_server.py"
AGENT = "bench"
SERVER = "echo"
TEXT = "hello, lockgate"
TARGETS = ("lockgate", "amg", "direct")
LABELS = {"lockgate": "Lockgate", "amg": "agent-mcp-gateway", "direct": "direct"}


@dataclass
class Target:
    name: str
    command: list[str]
    env: dict[str, str]
    marker: str
    samples: dict[str, list[float]] = field(default_factory=dict)  # measure -> seconds
    figures: dict[str, float] = field(default_factory=dict)

    def params(self, cwd: str) -> StdioServerParameters:
        return StdioServerParameters(command=self.command[0], args=self.command[1:], env=self.env, cwd=cwd)

    def add(self, measure: str, seconds: float) -> None:
        self.samples.setdefault(measure, []).append(seconds)


def setup(directory: Path, amg_python: str, verbose: bool = False) -> dict[str, Target]:
    """Write the shared servers file and rules; describe how to start each target."""
    servers = {"mcpServers": {SERVER: {"command": sys.executable, "args": [str(ECHO_SERVER)], "description": "echo server"}}}
    everything: dict[str, Any] = {"allow": {"servers": ["*"], "tools": {SERVER: ["*"]}}}
    rules = {"agents": {AGENT: everything, "default": everything}, "defaults": {"deny_on_missing_agent": False}}
    config = directory / ".mcp.json"
    rules_path = directory / ".mcp-gateway-rules.json"
    config.write_text(json.dumps(servers, indent=2))
    rules_path.write_text(json.dumps(rules, indent=2))
    base = {"PATH": os.environ.get("PATH", ""), "HOME": str(directory), "PYTHONUNBUFFERED": "1"}

    def target(name: str, command: list[str], **env: str) -> Target:
        marker = f"{name}-{uuid.uuid4().hex}"
        if not verbose:
            # The SDK client passes the server's stderr through; agent-mcp-gateway logs a lot.
            # exec keeps the process (and its marker) the same.
            env["BENCH_STDERR"] = str(directory / f"{name}.stderr")
            command = ["/bin/sh", "-c", 'exec "$@" 2>>"$BENCH_STDERR"', "sh", *command]
        return Target(name, command, {**base, **env, "BENCH_MARKER": marker}, marker)

    amg_script = str(Path(amg_python).parent / "agent-mcp-gateway")
    return {
        "lockgate": target(
            "lockgate",
            [sys.executable, "-m", "lockgate.shells", "serve", "--config", str(config), "--rules", str(rules_path)],
            GATEWAY_AUDIT_LOG=str(directory / "lockgate-audit.jsonl"),
        ),
        "amg": target(
            "amg",
            [amg_python, amg_script],
            GATEWAY_MCP_CONFIG=str(config),
            GATEWAY_RULES=str(rules_path),
            GATEWAY_AUDIT_LOG=str(directory / "amg-audit.jsonl"),
        ),
        "direct": target("direct", [sys.executable, str(ECHO_SERVER)]),
    }


def peak_rss_mb(marker: str) -> float | None:
    """``VmHWM`` of the process started with ``BENCH_MARKER=marker`` (not its children)."""
    needle = f"BENCH_MARKER={marker}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            parent_env = Path(f"/proc/{parent}/environ").read_bytes().split(b"\0") if parent > 1 else []
            if needle in parent_env:
                continue  # a child that inherited the marker
            for line in (entry / "status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            continue
    return None


def echo_args(target: str) -> tuple[str, dict[str, Any]]:
    if target == "direct":
        return "echo", {"text": TEXT}
    return "execute_tool", {"agent_id": AGENT, "server": SERVER, "tool": "echo", "args": {"text": TEXT}}


def check_echo(result: Any, target: str) -> None:
    text = json.dumps(result.model_dump(mode="json"))
    if result.is_error or TEXT not in text:
        raise RuntimeError(f"{target}: echo returned something else: {text[:300]}")


async def timed(call: Callable[[], Awaitable[Any]]) -> float:
    start = time.perf_counter()
    await call()
    return time.perf_counter() - start


async def measure_sessions(targets: dict[str, Target], args: argparse.Namespace, cwd: str) -> None:
    """Latency and throughput on one long-lived session per target, interleaved block by block."""
    async with (
        Client(targets["lockgate"].params(cwd), mode="legacy", read_timeout_seconds=30) as lockgate,
        Client(targets["amg"].params(cwd), mode="legacy", read_timeout_seconds=30) as amg,
        Client(targets["direct"].params(cwd), mode="legacy", read_timeout_seconds=30) as direct,
    ):
        clients = {"lockgate": lockgate, "amg": amg, "direct": direct}

        def operations(name: str) -> dict[str, Callable[[], Awaitable[Any]]]:
            client = clients[name]
            tool, arguments = echo_args(name)
            ops: dict[str, Callable[[], Awaitable[Any]]] = {"execute_tool": lambda: client.call_tool(tool, arguments)}
            if name == "direct":
                ops["get_server_tools"] = client.list_tools
            else:
                ops["list_servers"] = lambda: client.call_tool("list_servers", {"agent_id": AGENT})
                ops["get_server_tools"] = lambda: client.call_tool("get_server_tools", {"agent_id": AGENT, "server": SERVER})
            return ops

        ops = {name: operations(name) for name in TARGETS}
        for name in TARGETS:  # warm-up, and a check that every side answers right
            check_echo(await ops[name]["execute_tool"](), name)
            for _ in range(args.warmup):
                for op in ops[name].values():
                    await op()

        per_block = max(1, args.calls // args.blocks)
        for block in range(args.blocks):
            order = TARGETS if block % 2 == 0 else TARGETS[::-1]
            for measure in ("list_servers", "get_server_tools", "execute_tool"):
                for name in order:
                    op = ops[name].get(measure)
                    if op is None:
                        continue
                    for _ in range(per_block):
                        targets[name].add(measure, await timed(op))
                    # agent-mcp-gateway starts a downstream process per call; let those
                    # finish before the next target is timed, so it does not pay for them.
                    await trio.sleep(args.settle)
            for name in order:  # 10 calls in flight at once
                for _ in range(max(1, per_block // 10)):
                    start = time.perf_counter()
                    async with trio.open_nursery() as nursery:
                        for _ in range(10):
                            nursery.start_soon(ops[name]["execute_tool"])
                    targets[name].add("concurrent_10", time.perf_counter() - start)
                await trio.sleep(args.settle)

        for name in TARGETS:
            rss = peak_rss_mb(targets[name].marker)
            if rss is not None:
                targets[name].figures["peak_rss_mb"] = rss


async def measure_starts(targets: dict[str, Target], args: argparse.Namespace, cwd: str) -> None:
    """Spawn to ``initialize`` result, several fresh starts each, interleaved."""
    for round_ in range(args.starts):
        order = TARGETS if round_ % 2 == 0 else TARGETS[::-1]
        for name in order:
            start = time.perf_counter()
            async with Client(targets[name].params(cwd), mode="legacy", read_timeout_seconds=30):
                targets[name].add("first_response", time.perf_counter() - start)


async def measure_bytes(targets: dict[str, Target], cwd: str) -> None:
    """Sizes on the wire, read by a raw JSON-lines client: tools/list and one forwarded echo result."""
    for name in TARGETS:
        target = targets[name]
        with open(os.devnull, "wb") as devnull:
            process = await trio.lowlevel.open_process(
                target.command, stdin=-1, stdout=-1, stderr=devnull, cwd=cwd, env=target.env
            )
        assert process.stdin is not None and process.stdout is not None
        buffer = b""

        async def exchange(message: dict[str, Any]) -> bytes:
            nonlocal buffer
            assert process.stdin is not None and process.stdout is not None
            await process.stdin.send_all(json.dumps(message).encode() + b"\n")
            if "id" not in message:
                return b""
            while True:
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    parsed = json.loads(line)
                    if parsed.get("id") == message["id"] and "method" not in parsed:
                        return line
                chunk = await process.stdout.receive_some(1 << 20)
                if not chunk:
                    raise RuntimeError(f"{name}: the process closed its output")
                buffer += chunk

        with trio.fail_after(60):
            init = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "bench", "version": "1"}}
            await exchange({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": init})
            await exchange({"jsonrpc": "2.0", "method": "notifications/initialized"})
            listed = await exchange({"jsonrpc": "2.0", "id": 2, "method": "tools/list"})
            tool, arguments = echo_args(name)
            await exchange({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": tool, "arguments": arguments}})
            result = await exchange({"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": {"name": tool, "arguments": arguments}})
            target.figures["tools_list_bytes"] = len(json.dumps(json.loads(listed)["result"], separators=(",", ":")))
            target.figures["result_bytes"] = len(json.dumps(json.loads(result)["result"], separators=(",", ":")))
            await process.stdin.aclose()
        with trio.move_on_after(10):
            await process.wait()
        if process.returncode is None:
            process.kill()
            await process.wait()


def median_ms(values: list[float] | None) -> float | None:
    return statistics.median(values) * 1000 if values else None


def p95_ms(values: list[float] | None) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)] * 1000


def report(targets: dict[str, Target]) -> dict[str, dict[str, float | None]]:
    out: dict[str, dict[str, float | None]] = {}
    for name, t in targets.items():
        s = t.samples
        execute = median_ms(s.get("execute_tool"))
        concurrent = s.get("concurrent_10")
        out[name] = {
            "list_servers_ms": median_ms(s.get("list_servers")),
            "get_server_tools_ms": median_ms(s.get("get_server_tools")),
            "execute_tool_ms": execute,
            "execute_tool_p95_ms": p95_ms(s.get("execute_tool")),
            "sequential_calls_per_s": 1000 / execute if execute else None,
            "concurrent_10_calls_per_s": 10 / statistics.median(concurrent) if concurrent else None,
            "first_response_s": statistics.median(s["first_response"]) if s.get("first_response") else None,
            "peak_rss_mb": t.figures.get("peak_rss_mb"),
            "tools_list_bytes": t.figures.get("tools_list_bytes"),
            "result_bytes": t.figures.get("result_bytes"),
        }
    return out


ROWS = [
    ("list_servers_ms", "list_servers, median ms", ".2f"),
    ("get_server_tools_ms", "get_server_tools, median ms (direct: tools/list)", ".2f"),
    ("execute_tool_ms", "execute_tool echo, median ms (direct: tools/call)", ".2f"),
    ("execute_tool_p95_ms", "execute_tool echo, p95 ms", ".2f"),
    ("sequential_calls_per_s", "sequential calls/s", ".0f"),
    ("concurrent_10_calls_per_s", "calls/s with 10 in flight", ".0f"),
    ("first_response_s", "start to first response, s", ".3f"),
    ("peak_rss_mb", "peak RSS, MB (gateway process)", ".1f"),
    ("tools_list_bytes", "tools/list result, bytes", ".0f"),
    ("result_bytes", "one echo result, bytes", ".0f"),
]


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_table(figures: dict[str, dict[str, float | None]]) -> None:
    lock, amg, direct = figures["lockgate"], figures["amg"], figures["direct"]
    print(f"| Measure | Lockgate | agent-mcp-gateway | direct | Lockgate / agent-mcp-gateway |")
    print("|---|---|---|---|---|")
    for key, label, spec in ROWS:
        a, b = lock[key], amg[key]
        ratio = f"{a / b:.2f}" if a is not None and b else "-"
        print(f"| {label} | {_fmt(a, spec)} | {_fmt(b, spec)} | {_fmt(direct[key], spec)} | {ratio} |")
    d = direct["execute_tool_ms"]
    if d and lock["execute_tool_ms"] and amg["execute_tool_ms"]:
        added_lock, added_amg = lock["execute_tool_ms"] - d, amg["execute_tool_ms"] - d
        print(
            f"\nexecute_tool against direct: Lockgate {lock['execute_tool_ms'] / d:.2f}x (+{added_lock:.2f} ms), "
            f"agent-mcp-gateway {amg['execute_tool_ms'] / d:.2f}x (+{added_amg:.2f} ms); "
            f"Lockgate adds {added_lock / added_amg:.2f} of what agent-mcp-gateway adds"
            if added_amg > 0 else ""
        )


async def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="lockgate-compare-") as tmp:
        targets = setup(Path(tmp), args.amg_python, args.verbose)
        errors: list[str] = []
        for phase in (measure_sessions, measure_starts, measure_bytes):
            with trio.move_on_after(args.phase_timeout) as scope:
                try:
                    if phase is measure_bytes:
                        await measure_bytes(targets, tmp)
                    else:
                        await phase(targets, args, tmp)
                except Exception as exc:  # report what was measured so far
                    errors.append(f"{phase.__name__}: {describe(exc)}")
            if scope.cancelled_caught:
                errors.append(f"{phase.__name__}: stopped after {args.phase_timeout:g} s")
        return {"figures": report(targets), "errors": errors}


def describe(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(describe(inner) for inner in exc.exceptions)
    return f"{type(exc).__name__}: {exc}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--amg-python", default=str(HERE / ".venv-amg" / "bin" / "python"),
                        help="the Python of the environment agent-mcp-gateway 0.2.5 is installed in")
    parser.add_argument("--calls", type=int, default=300, help="timed calls per measure and target (default 300)")
    parser.add_argument("--blocks", type=int, default=6, help="alternating blocks (default 6)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed rounds per target first (default 10)")
    parser.add_argument("--starts", type=int, default=5, help="fresh starts per target (default 5)")
    parser.add_argument("--settle", type=float, default=1.0, help="pause after each target's block, s (default 1)")
    parser.add_argument("--phase-timeout", type=float, default=240, help="wall-clock limit per phase, s (default 240)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument("--verbose", action="store_true", help="let the gateways' and the server's stderr through")
    args = parser.parse_args(argv)
    if not Path(args.amg_python).exists():
        parser.error(f"{args.amg_python} not found: run `make bench-compare`, which installs agent-mcp-gateway 0.2.5")
    result = trio.run(run, args)
    if args.json:
        print(json.dumps({"settings": vars(args), **result}, indent=2))
    else:
        print(f"Lockgate vs agent-mcp-gateway 0.2.5: {args.calls} calls per measure, {args.blocks} blocks, {args.starts} starts\n")
        print_table(result["figures"])
        for error in result["errors"]:
            print(f"INCOMPLETE: {error}")
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
