"""What does Lockgate add to a tool call when the downstream speaks Streamable HTTP?

One run, two modes (the downstream is the SDK echo server over Streamable
HTTP, then the raw no-SDK HTTP echo server). In each mode the server runs as
a subprocess on a listening socket this script binds on a free port of
127.0.0.1. One SDK ``Client`` talks to ``lockgate serve`` over stdio, and
Lockgate talks to the server over HTTP; a second SDK ``Client`` talks to the
same server straight over HTTP. Both make sequential echo calls, through the
gateway with ``execute_tool`` and directly with ``tools/call``, in
alternating blocks after untimed warm-up calls (see ``stdio_overhead.py``).

Reported per mode: median and p95 latency of each side in milliseconds, the
ratio of the medians (gateway / direct) and the added time in microseconds.
Each mode has a hard wall-clock limit.

    python bench/http_downstream.py [--calls 1000] [--blocks 10] [--mode sdk|raw|both] [--json]
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import trio
from mcp import Client, StdioServerParameters
from mcp.types import CallToolResult

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from stdio_overhead import ModeResult, measure, run_modes  # noqa: E402

Mode = Literal["sdk", "raw"]
SERVER_SCRIPTS: dict[Mode, Path] = {
    "sdk": HERE / "echo_server.py",
    "raw": HERE / "raw_http_echo_server.py",
}
AGENT = "bench"
SERVER = "echo"
TEXT = "hello, lockgate"


@contextmanager
def http_server(mode: Mode) -> Iterator[str]:
    """Run the mode's echo server on a free port; yield its URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    fd = sock.fileno()
    proc = subprocess.Popen(
        [sys.executable, str(SERVER_SCRIPTS[mode]), "--http-fd", str(fd)], pass_fds=[fd], cwd=str(HERE)
    )
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/mcp"
    finally:
        proc.kill()
        proc.wait()
        sock.close()


def write_config(directory: Path, url: str) -> tuple[Path, Path]:
    """Write a ``.mcp.json`` with the HTTP echo server and rules that allow everything."""
    servers = {"mcpServers": {SERVER: {"url": url, "description": "echo server over HTTP"}}}
    allow_all: dict[str, Any] = {"allow": {"servers": ["*"], "tools": {SERVER: ["*"]}}}
    rules = {"agents": {AGENT: allow_all, "default": allow_all}, "defaults": {"deny_on_missing_agent": False}}
    config_path = directory / ".mcp.json"
    rules_path = directory / ".mcp-gateway-rules.json"
    config_path.write_text(json.dumps(servers, indent=2))
    rules_path.write_text(json.dumps(rules, indent=2))
    return config_path, rules_path


async def run_mode(mode: Mode, args: argparse.Namespace, result: ModeResult) -> None:
    """Measure one mode, appending samples to ``result`` as they come."""
    with tempfile.TemporaryDirectory(prefix="lockgate-bench-") as tmp, http_server(mode) as url:
        config_path, rules_path = write_config(Path(tmp), url)
        gateway_params = StdioServerParameters(
            command=sys.executable,
            args=["-m", "lockgate.shells", "serve", "--config", str(config_path), "--rules", str(rules_path)],
            cwd=tmp,
            env={"PYTHONUNBUFFERED": "1"},
        )
        async with Client(gateway_params, mode="legacy") as gateway, Client(url, mode="legacy") as direct:

            async def via_gateway() -> CallToolResult:
                return await gateway.call_tool(
                    "execute_tool", {"agent_id": AGENT, "server": SERVER, "tool": "echo", "args": {"text": TEXT}}
                )

            async def straight() -> CallToolResult:
                return await direct.call_tool("echo", {"text": TEXT})

            await measure(via_gateway, straight, args, result)
    result.complete = True


async def run_all(args: argparse.Namespace) -> list[ModeResult]:
    return await run_modes(args, run_mode, report)


def report(result: ModeResult) -> dict[str, Any]:
    out = result.report()
    out["downstream"] = SERVER_SCRIPTS[result.mode].name  # type: ignore[index]
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=1000, help="timed calls per side and mode (default 1000)")
    parser.add_argument("--blocks", type=int, default=10, help="alternating blocks per side (default 10)")
    parser.add_argument("--warmup", type=int, default=50, help="untimed calls per side first (default 50)")
    parser.add_argument("--phase-timeout", type=float, default=180.0, help="wall-clock limit per mode in seconds (default 180)")
    parser.add_argument("--mode", choices=["sdk", "raw", "both"], default="both", help="which downstream (default both)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    args = parser.parse_args(argv)
    if args.calls < 1 or args.blocks < 1 or args.warmup < 0 or args.phase_timeout <= 0:
        parser.error("--calls and --blocks must be positive, --warmup >= 0, --phase-timeout > 0")
    args.modes = ["sdk", "raw"] if args.mode == "both" else [args.mode]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.json:
        print(
            f"Lockgate HTTP downstream overhead: {args.calls} calls per side, {args.blocks} alternating blocks, "
            f"{args.warmup} warm-up calls, limit {args.phase_timeout:g}s per mode"
        )
    results = trio.run(run_all, args)
    if args.json:
        meta = {"calls": args.calls, "blocks": args.blocks, "warmup": args.warmup, "python": sys.version.split()[0]}
        print(json.dumps({"settings": meta, "modes": [report(r) for r in results]}, indent=2))
    return 0 if all(r.complete for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
