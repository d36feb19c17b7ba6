"""How many calls per second reach an HTTP downstream through Lockgate, and at what CPU cost?

One run, two sides, taken in turns (``--rounds``, default 2: gateway,
direct, direct, gateway, ...), against one SDK echo server over Streamable
HTTP (``echo_server.py --http-fd N``, or ``--mode raw`` for
``raw_http_echo_server.py``) started once for the whole run:

- gateway: ``lockgate serve --transport http`` with that server configured by
  URL (eager start); N sessions (default 50) each loop ``execute_tool`` echo
  on their own keep-alive connection (a closed loop), for ``--duration``
  seconds. Lockgate holds one MCP session to the server.
- direct: the same N sessions, each its own MCP session with the server,
  loop ``tools/call`` echo on the server itself.

The load generator is the one of ``http_load.py`` (a separate process, plain
sockets, one ``selectors`` loop), extended to read chunked SSE answers.
Reported per side: calls/s, p50/p99 in ms; for the gateway its CPU time per
call (user + system from ``/proc``) in microseconds; and the throughput ratio
gateway / direct per round with its spread.

    python bench/http_downstream_load.py [--sessions 50] [--duration 5] [--rounds 2] [--mode sdk|raw]
        [--against OTHER_CHECKOUT/.venv/bin/python] [--json]

``--against`` starts a second gateway from another checkout and measures it
in the same rounds ("baseline"), so before and after share one run.
"""

from __future__ import annotations

import argparse
import json
import selectors
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from http_downstream import SERVER_SCRIPTS, http_server, write_config  # noqa: E402
from http_load import cpu_seconds, http_request, percentiles, start_gateway, stop_gateway  # noqa: E402

TEXT = "hello, lockgate"


def _complete(buffer: bytes) -> int:
    """The length of the first whole HTTP response in ``buffer`` (Content-Length or chunked), else 0."""
    head_end = buffer.find(b"\r\n\r\n")
    if head_end < 0:
        return 0
    head = buffer[:head_end].lower()
    body_start = head_end + 4
    marker = head.find(b"content-length:")
    if marker >= 0:
        length = int(head[marker + 15 :].split(b"\r\n", 1)[0])
        return body_start + length if len(buffer) >= body_start + length else 0
    if b"transfer-encoding: chunked" in head:
        end = buffer.find(b"\r\n0\r\n\r\n", body_start - 2)
        return end + 7 if end >= 0 else 0
    return 0


def _read_one(sock: socket.socket, buffer: bytes = b"") -> tuple[bytes, bytes]:
    while not (size := _complete(buffer)):
        chunk = sock.recv(65536)
        if not chunk:
            raise SystemExit("connection closed during set-up")
        buffer += chunk
    return buffer[:size], buffer[size:]


def _open(host: str, port: int) -> tuple[socket.socket, str]:
    sock = socket.create_connection((host, port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    init = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "load", "version": "1"}}}
    sock.sendall(http_request(host, port, json.dumps(init).encode(), None))
    response, _ = _read_one(sock)
    head = response.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    session = next(line.split(":", 1)[1].strip() for line in head.split("\r\n") if line.lower().startswith("mcp-session-id:"))
    sock.sendall(http_request(host, port, b'{"jsonrpc":"2.0","method":"notifications/initialized"}', session))
    _read_one(sock)
    return sock, session


def load(host: str, port: int, sessions: int, duration: float, body: bytes) -> dict[str, Any]:
    """N keep-alive connections, each a closed loop of ``body``; answers may be JSON or SSE."""
    selector = selectors.DefaultSelector()
    state: dict[socket.socket, list[Any]] = {}
    for _ in range(sessions):
        sock, session = _open(host, port)
        sock.setblocking(False)
        state[sock] = [http_request(host, port, body, session), b"", 0.0]
        selector.register(sock, selectors.EVENT_READ)
    latencies: list[float] = []
    errors = 0
    start = time.perf_counter()
    deadline = start + duration
    for sock, st in state.items():
        st[2] = time.perf_counter()
        sock.sendall(st[0])
    outstanding = len(state)
    expect = TEXT.encode()
    while outstanding:
        for key, _ in selector.select(timeout=10):
            sock = key.fileobj  # type: ignore[assignment]
            st = state[sock]
            chunk = sock.recv(65536)
            if not chunk:
                raise SystemExit("the server closed a connection")
            st[1] += chunk
            size = _complete(st[1])
            if not size:
                continue
            now = time.perf_counter()
            response, st[1] = st[1][:size], st[1][size:]
            if response.startswith(b"HTTP/1.1 200") and expect in response:
                latencies.append(now - st[2])
            else:
                errors += 1
            if now < deadline:
                st[2] = now
                sock.sendall(st[0])
            else:
                outstanding -= 1
    elapsed = time.perf_counter() - start
    for sock in state:
        sock.close()
    return {"calls": len(latencies), "errors": errors, "seconds": round(elapsed, 3),
            "calls_per_second": round(len(latencies) / elapsed, 1), **percentiles(latencies)}


GATEWAY_CALL = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "execute_tool", "arguments": {"agent_id": "bench", "server": "echo", "tool": "echo", "args": {"text": TEXT}}}}
DIRECT_CALL = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "echo", "arguments": {"text": TEXT}}}


def run_worker(host: str, port: int, sessions: int, duration: float, side: str) -> dict[str, Any]:
    args = ["--worker", side, "--host", host, "--port", str(port), "--sessions", str(sessions), "--duration", str(duration)]
    result = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"load generator failed: {result.stderr.strip()[-2000:]}")
    return dict(json.loads(result.stdout))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=50)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=2, help="gateway+direct pairs, order alternating (default 2)")
    parser.add_argument("--mode", choices=("sdk", "raw"), default="sdk")
    parser.add_argument("--against", metavar="PYTHON", help="also measure the gateway run by this interpreter (another checkout's venv)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--worker", choices=("gateway", "direct"), help=argparse.SUPPRESS)
    parser.add_argument("--host", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        call = GATEWAY_CALL if args.worker == "gateway" else DIRECT_CALL
        print(json.dumps(load(args.host, args.port, args.sessions, args.duration, json.dumps(call, separators=(",", ":")).encode())))
        return
    rounds: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="lockgate-http-ds-") as tmp, http_server(args.mode) as url:
        config, rules = write_config(Path(tmp), url)
        gateways = {"gateway": start_gateway(Path(tmp), "sdk", files=(config, rules))}
        if args.against:
            gateways["baseline"] = start_gateway(Path(tmp), "sdk", files=(config, rules), python=args.against)
        try:
            dhost, dport = url.removeprefix("http://").split("/", 1)[0].rsplit(":", 1)
            targets = {side: base.removeprefix("http://").rsplit(":", 1) for side, (_, base) in gateways.items()}
            targets["direct"] = [dhost, dport]
            for side, (host, port) in targets.items():  # warm-up, untimed
                run_worker(host, int(port), 4, 1.0, "direct" if side == "direct" else "gateway")
            order = list(targets)
            for index in range(args.rounds):
                one: dict[str, Any] = {}
                for side in order if index % 2 == 0 else order[::-1]:
                    host, port = targets[side]
                    proc = gateways[side][0] if side in gateways else None
                    before = cpu_seconds(proc.pid) if proc else None
                    one[side] = run_worker(host, int(port), args.sessions, args.duration, "direct" if side == "direct" else "gateway")
                    after = cpu_seconds(proc.pid) if proc else None
                    if before is not None and after is not None and one[side]["calls"]:
                        one[side]["cpu_us_per_call"] = round((after - before) / one[side]["calls"] * 1e6, 1)
                one["ratio"] = round(one["gateway"]["calls_per_second"] / max(one["direct"]["calls_per_second"], 0.1), 3)
                if "baseline" in one:
                    one["baseline_ratio"] = round(one["baseline"]["calls_per_second"] / max(one["direct"]["calls_per_second"], 0.1), 3)
                rounds.append(one)
        finally:
            for proc, _ in gateways.values():
                stop_gateway(proc)
    ratios = [r["ratio"] for r in rounds]
    cpus = [r["gateway"].get("cpu_us_per_call", 0.0) for r in rounds]
    summary = {"sessions": args.sessions, "duration": args.duration, "mode": args.mode, "rounds": rounds,
               "ratio_median": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
               "cpu_us_median": statistics.median(cpus), "cpu_us_min": min(cpus), "cpu_us_max": max(cpus)}
    if args.json:
        print(json.dumps(summary, indent=2))
        return
    print(f"{args.sessions} sessions, {args.duration:g} s per side, {args.rounds} rounds, {args.mode} HTTP downstream")
    sides = [side for side in ("gateway", "baseline", "direct") if side in rounds[0]]
    print(f"{'round':<6} {'side':<8} {'calls/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} {'CPU µs/call':>12}")
    for index, r in enumerate(rounds):
        for side in sides:
            s = r[side]
            print(f"{index:<6} {side:<8} {s['calls_per_second']:>9.1f} {s['p50_ms']:>8.2f} {s['p99_ms']:>8.2f} {s['errors']:>7} {s.get('cpu_us_per_call', ''):>12}")
    print(f"throughput gateway/direct: median {summary['ratio_median']:.3f} (min {min(ratios):.3f}, max {max(ratios):.3f}); "
          f"gateway CPU µs/call: median {summary['cpu_us_median']:.0f} (min {min(cpus):.0f}, max {max(cpus):.0f})")
    if args.against:
        base_ratios = [r["baseline_ratio"] for r in rounds]
        base_cpus = [r["baseline"].get("cpu_us_per_call", 0.0) for r in rounds]
        print(f"baseline ({args.against}) throughput/direct: median {statistics.median(base_ratios):.3f} "
              f"(min {min(base_ratios):.3f}, max {max(base_ratios):.3f}); CPU µs/call: median {statistics.median(base_cpus):.0f} "
              f"(min {min(base_cpus):.0f}, max {max(base_cpus):.0f})")


if __name__ == "__main__":
    main()
