"""What a tool call costs over Streamable HTTP in each protocol era, against the handshake era in the same run.

Lockgate serves MCP 2026-07-28 (the stateless era) over Streamable HTTP beside
the handshake era. A stateless request is a lone POST: no ``initialize``, no
session; the version, method and tool name ride in headers
(``MCP-Protocol-Version``, ``Mcp-Method``, ``Mcp-Name``) and the version and
client capabilities again in ``params._meta``. This measures, with the raw
JSON-lines echo server behind the gateway (``raw_echo_server.py``, so the
gateway's own cost shows):

- ``handshake``: the baseline. Each client initializes once (session id from
  ``Mcp-Session-Id``), then calls ``execute_tool`` echo in a closed loop.
- ``stateless``: the same ``execute_tool`` echo call, each a stateless POST.
- ``stateless-agg``: a second gateway, started after the first is stopped,
  with ``GATEWAY_MODE=aggregate`` and ``GATEWAY_PREFIX=never``; each call is a
  stateless ``tools/call echo``, the server's own tool.
- ``handshake-agg``: a reference on that second gateway, ``tools/call echo``
  in an initialized session, so that aggregate mode's own share can be told
  apart from the era's.

Each at two loads: one client making ``--calls`` sequential calls (2,000),
and ``--clients`` concurrent clients (50) in a closed loop for ``--duration``
seconds (5). The run is ``--rounds`` rounds (2); each starts the on-demand
gateway, times one block of each of its modes, stops it, then does the same
with the aggregate gateway; the next round goes the other way round. So each
block has its share of the calls or seconds, the two gateways never run at
once, and a machine growing busier or quieter weighs on every mode alike.
Each gateway's modes are checked, then warmed up (``--warmup`` calls), before
its blocks: one call of each, HTTP 200 with the echoed text, and for a
stateless call ``resultType: complete``. Reported per mode and load: calls/s,
p50/p99 ms, errors, the gateway's CPU time per call (user + system from
``/proc``, Linux; it includes opening the sessions), and the ratio of each
to ``handshake`` at the same load.

The load generator is ``http_load.py``'s kind, in a separate process (this
script with a hidden ``--worker`` flag): plain non-blocking sockets on
keep-alive connections in one ``selectors`` loop, request bytes built once,
so its own cost per call is small and the same for every mode. Everything
listens on 127.0.0.1; every loop is bounded in count and time; the gateway is
stopped at the end, on an error and on Ctrl-C.

    python bench/eras.py [--calls 2000] [--clients 50] [--duration 5] [--rounds 2] [--json]
"""

from __future__ import annotations

import argparse
import json
import re
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

# The gateway's start and stop, /ready, /proc CPU time and the percentiles are http_load.py's.
from http_load import cpu_seconds, open_session, percentiles, start_gateway, stop_gateway  # noqa: E402

TEXT = "hello, lockgate"
MODERN = "2026-07-28"
ENVELOPE = {"io.modelcontextprotocol/protocolVersion": MODERN, "io.modelcontextprotocol/clientCapabilities": {}}
EXECUTE = {"agent_id": "bench", "server": "echo", "tool": "echo", "args": {"text": TEXT}}
# mode -> (gateway, tool name, arguments, stateless)
MODES: dict[str, tuple[str, str, dict[str, Any], bool]] = {
    "handshake": ("on-demand", "execute_tool", EXECUTE, False),
    "stateless": ("on-demand", "execute_tool", EXECUTE, True),
    "stateless-agg": ("aggregate", "echo", {"text": TEXT}, True),
    "handshake-agg": ("aggregate", "echo", {"text": TEXT}, False),
}
GATEWAYS: dict[str, dict[str, str]] = {
    "on-demand": {},
    "aggregate": {"GATEWAY_MODE": "aggregate", "GATEWAY_PREFIX": "never", "GATEWAY_DEFAULT_AGENT": "bench"},
}
# No answer for this long means something is stuck: the worker gives up rather than wait.
STALL_SECONDS = 10.0


# -- the load generator (runs in its own process) --------------------------------------


def call_body(mode: str) -> bytes:
    """The JSON-RPC ``tools/call`` of ``mode``, compact; a stateless one carries the envelope in ``_meta``."""
    _, name, arguments, stateless = MODES[mode]
    params: dict[str, Any] = {"name": name, "arguments": arguments}
    if stateless:
        params["_meta"] = ENVELOPE
    return json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": params}, separators=(",", ":")).encode()


def request_bytes(host: str, port: int, mode: str, session: str | None) -> bytes:
    """The whole HTTP request of one call: in ``session`` (handshake era) or stateless, with the era's headers."""
    _, name, _, stateless = MODES[mode]
    body = call_body(mode)
    lines = [
        b"POST /mcp HTTP/1.1",
        b"Host: %s:%d" % (host.encode(), port),
        b"Accept: application/json, text/event-stream",
        b"Content-Type: application/json",
        b"Content-Length: %d" % len(body),
    ]
    if stateless:
        lines += [b"MCP-Protocol-Version: " + MODERN.encode(), b"Mcp-Method: tools/call", b"Mcp-Name: " + name.encode()]
    else:
        assert session is not None
        lines += [b"Mcp-Session-Id: " + session.encode(), b"Mcp-Protocol-Version: 2025-11-25"]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def connect(host: str, port: int, mode: str) -> tuple[socket.socket, bytes]:
    """One keep-alive connection for ``mode`` and the request it repeats; a handshake-era one is initialized first."""
    if MODES[mode][3]:
        sock = socket.create_connection((host, port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock, request_bytes(host, port, mode, None)
    sock, session = open_session(host, port)
    return sock, request_bytes(host, port, mode, session)


def response_end(data: bytes) -> int | None:
    """Where the first whole HTTP response in ``data`` ends, or ``None`` while it is incomplete.

    JSON answers come with a Content-Length; an answer as an SSE stream (a
    handshake-era session in aggregate mode gets its calls answered so) is
    chunked and ends at the zero-length chunk.
    """
    head_end = data.find(b"\r\n\r\n")
    if head_end < 0:
        return None
    head = data[:head_end]
    if re.search(rb"(?i)transfer-encoding:\s*chunked", head):
        last = data.find(b"\r\n0\r\n\r\n", head_end + 2)
        return None if last < 0 else last + 7
    match = re.search(rb"(?i)content-length:\s*(\d+)", head)
    end = head_end + 4 + (int(match.group(1)) if match else 0)
    return end if len(data) >= end else None


def answer_message(response: bytes) -> dict[str, Any]:
    """The JSON-RPC message of one whole HTTP response: its body, or the last ``data:`` of its SSE stream."""
    head, _, body = response.partition(b"\r\n\r\n")
    if re.search(rb"(?i)transfer-encoding:\s*chunked", head):
        plain = b""
        while True:
            size_line, _, body = body.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                break
            plain, body = plain + body[:size], body[size + 2 :]
        events = [line[5:].strip() for line in plain.splitlines() if line.startswith(b"data:")]
        body = events[-1] if events else b""
    message = json.loads(body)
    if not isinstance(message, dict):
        raise ValueError("not a JSON object")
    return message


def load(host: str, port: int, mode: str, clients: int, max_calls: int, duration: float) -> dict[str, Any]:
    """``clients`` connections, each a closed loop of ``mode``'s call, until ``max_calls`` answers or ``duration`` s.

    A call counts when its answer is HTTP 200 and holds the echoed text; anything
    else is an error (and the loop goes on).
    """
    selector = selectors.DefaultSelector()
    request: dict[socket.socket, bytes] = {}
    buffer: dict[socket.socket, bytes] = {}
    sent_at: dict[socket.socket, float] = {}
    for _ in range(clients):
        sock, req = connect(host, port, mode)
        sock.setblocking(False)
        request[sock], buffer[sock] = req, b""
        selector.register(sock, selectors.EVENT_READ)
    latencies: list[float] = []
    errors = 0
    expect = b'"text":"' + TEXT.encode() + b'"'
    start = time.perf_counter()
    deadline = start + duration
    for sock, req in request.items():
        sent_at[sock] = time.perf_counter()
        sock.sendall(req)
    outstanding = len(request)
    answered = 0
    while outstanding:
        ready = selector.select(timeout=STALL_SECONDS)
        if not ready:
            raise SystemExit(f"{mode}: no answer for {STALL_SECONDS:g} s")
        for key, _ in ready:
            conn = key.fileobj
            assert isinstance(conn, socket.socket)
            chunk = conn.recv(65536)
            if not chunk:
                raise SystemExit(f"{mode}: the gateway closed a connection")
            data = buffer[conn] + chunk
            end = response_end(data)
            if end is None:
                buffer[conn] = data
                continue
            now = time.perf_counter()
            response, buffer[conn] = data[:end], data[end:]
            answered += 1
            if response.startswith(b"HTTP/1.1 200") and expect in response:
                latencies.append(now - sent_at[conn])
            else:
                errors += 1
            if now < deadline and answered + outstanding - 1 < max_calls:
                sent_at[conn] = now
                conn.sendall(request[conn])
            else:
                outstanding -= 1
    elapsed = time.perf_counter() - start
    for sock in request:
        sock.close()
    return {"calls": len(latencies), "errors": errors, "seconds": elapsed, "latencies": latencies}


# -- the orchestrator -------------------------------------------------------------------


def check(host: str, port: int, mode: str) -> None:
    """One call of ``mode``, checked in full before anything is timed: 200, the echoed text, ``resultType`` when stateless."""
    sock, req = connect(host, port, mode)
    try:
        sock.settimeout(STALL_SECONDS)
        sock.sendall(req)
        data = b""
        deadline = time.monotonic() + STALL_SECONDS
        while (end := response_end(data)) is None and time.monotonic() < deadline:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    finally:
        sock.close()
    if end is None or not data.startswith(b"HTTP/1.1 200"):
        raise SystemExit(f"{mode}: not a whole 200 answer: {data[:300]!r}")
    result = answer_message(data[:end]).get("result")
    if not isinstance(result, dict) or result.get("content") != [{"type": "text", "text": TEXT}]:
        raise SystemExit(f"{mode}: not the echo: {data[:500]!r}")
    if MODES[mode][3] and result.get("resultType") != "complete":
        raise SystemExit(f"{mode}: resultType is {result.get('resultType')!r}, not 'complete'")


def run_worker(host: str, port: int, mode: str, clients: int, max_calls: int, duration: float) -> dict[str, Any]:
    """One block of load in a separate process; its latencies come back whole, to be merged over the rounds."""
    command = [sys.executable, __file__, "--worker", mode, "--host", host, "--port", str(port), "--clients", str(clients), "--calls", str(max_calls), "--duration", str(duration)]
    # Bounded: the block's own time, its set-up and the stall limit, with room to spare.
    result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=duration + 4 * STALL_SECONDS + 30)
    if result.returncode != 0:
        raise SystemExit(f"load generator failed ({mode}): {result.stderr.strip()[-2000:]}")
    return dict(json.loads(result.stdout))


def start(directory: Path, gateway: str) -> tuple[subprocess.Popen[bytes], str]:
    """``http_load.start_gateway`` with Ctrl-C held back until it returns, so that no gateway is left running unseen.

    It waits at most 30 s; an interrupt meanwhile stops the gateway once it is known, then goes on.
    """
    interrupted: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, _frame: interrupted.append(signum))
    try:
        proc, url = start_gateway(directory, "raw", GATEWAYS[gateway])
    finally:
        signal.signal(signal.SIGINT, previous)
    if interrupted:
        stop_gateway(proc)
        raise KeyboardInterrupt
    return proc, url


def measure_gateway(gateway: str, modes: list[str], args: argparse.Namespace, into: dict[str, dict[str, dict[str, Any]]]) -> None:
    """Start one gateway, check each of its modes once, warm up, time one block of each mode at each load, stop it.

    The blocks' calls, errors, seconds, latencies and the gateway's CPU time
    are added to ``into[mode][load]``.
    """
    loads = {"1 client": (1, args.calls, args.sequential_limit), f"{args.clients} clients": (args.clients, 10**9, args.duration)}
    with tempfile.TemporaryDirectory(prefix="lockgate-eras-") as tmp:
        proc, url = start(Path(tmp), gateway)
        try:
            host, port_text = url.removeprefix("http://").rsplit(":", 1)
            port = int(port_text)
            for mode in modes:
                check(host, port, mode)
            for mode in modes:
                run_worker(host, port, mode, 1, args.warmup, 30)
            for load_name, (clients, calls, seconds) in loads.items():
                for mode in modes:
                    cpu_before = cpu_seconds(proc.pid)
                    block = run_worker(host, port, mode, clients, -(-calls // args.rounds), seconds / args.rounds)
                    cpu_after = cpu_seconds(proc.pid)
                    total = into.setdefault(mode, {}).setdefault(load_name, {"calls": 0, "errors": 0, "seconds": 0.0, "latencies": [], "cpu": 0.0})
                    for field in ("calls", "errors", "seconds", "latencies"):
                        total[field] += block[field]
                    if cpu_before is None or cpu_after is None:
                        total["cpu"] = None
                    elif total["cpu"] is not None:
                        total["cpu"] += cpu_after - cpu_before
        finally:
            stop_gateway(proc)


def measure(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Every mode at every load, over ``args.rounds`` rounds; the figures per mode and load.

    Each round starts the on-demand gateway, measures, stops it, then does the
    same with the aggregate one (the next round the other way round, and the
    modes within each gateway reversed too), so a machine that grows busier
    or quieter during the run weighs on every mode alike, including the two
    measured on the second gateway against the baseline on the first.
    """
    totals: dict[str, dict[str, dict[str, Any]]] = {mode: {} for mode in MODES}
    for round_index in range(args.rounds):
        plan = [("on-demand", ["handshake", "stateless"]), ("aggregate", ["stateless-agg", "handshake-agg"])]
        if round_index % 2:
            plan = [(gateway, modes[::-1]) for gateway, modes in reversed(plan)]
        for gateway, modes in plan:
            measure_gateway(gateway, modes, args, totals)
    return {
        mode: {
            load_name: {
                "calls": m["calls"],
                "errors": m["errors"],
                "seconds": round(m["seconds"], 3),
                "calls_per_second": round(m["calls"] / m["seconds"], 1) if m["seconds"] else 0.0,
                **percentiles(m["latencies"]),
                "cpu_us_per_call": round(m["cpu"] / m["calls"] * 1e6, 1) if m["cpu"] is not None and m["calls"] else None,
            }
            for load_name, m in per_load.items()
        }
        for mode, per_load in totals.items()
    }


def add_ratios(results: dict[str, dict[str, Any]]) -> None:
    """Each mode's figures over ``handshake``'s at the same load, as ``ratio_*``."""
    for per_load in results.values():
        for load_name, r in per_load.items():
            base = results["handshake"][load_name]
            for field in ("calls_per_second", "p50_ms", "p99_ms", "cpu_us_per_call"):
                ok = r.get(field) is not None and base.get(field)
                r[f"ratio_{field}"] = round(r[field] / base[field], 3) if ok else None


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=2000, help="sequential calls per mode, one client (default 2000)")
    parser.add_argument("--sequential-limit", type=float, default=60.0, help="at most this many seconds per mode for them (default 60)")
    parser.add_argument("--clients", type=int, default=50, help="concurrent clients (default 50)")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds of concurrent load per mode (default 5)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating blocks per load (default 2)")
    parser.add_argument("--warmup", type=int, default=200, help="untimed calls per mode first (default 200)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--worker", choices=tuple(MODES), help=argparse.SUPPRESS)
    parser.add_argument("--host", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(load(args.host, args.port, args.worker, args.clients, args.calls, args.duration)))
        return
    if not (1 <= args.clients <= 1000 and 1 <= args.calls <= 1_000_000 and 0 < args.duration <= 600 and 1 <= args.rounds <= 20):
        parser.error("--clients 1..1000, --calls 1..1,000,000, --duration up to 600 s, --rounds 1..20")
    results = measure(args)
    add_ratios(results)
    if args.json:
        print(json.dumps({"calls": args.calls, "clients": args.clients, "duration": args.duration, "rounds": args.rounds, "modes": results}, indent=2))
        return
    print(f"raw echo downstream; 1 client: {args.calls} calls per mode; {args.clients} clients: {args.duration:g} s per mode; {args.rounds} rounds")
    print(f"{'load':<11} {'mode':<14} {'calls/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'errors':>6} {'CPU µs':>7}   {'× calls/s':>9} {'× p50':>6} {'× p99':>6} {'× CPU':>6}")
    for load_name in results["handshake"]:
        for mode, per_load in results.items():
            r = per_load[load_name]
            ratios = "".join(f" {r[f'ratio_{f}']:>{w}.2f}" if r[f"ratio_{f}"] is not None else f" {'':>{w}}" for f, w in (("calls_per_second", 9), ("p50_ms", 6), ("p99_ms", 6), ("cpu_us_per_call", 6)))
            cpu = f"{r['cpu_us_per_call']:>7.0f}" if r["cpu_us_per_call"] is not None else f"{'':>7}"
            print(f"{load_name:<11} {mode:<14} {r['calls_per_second']:>8.0f} {r['p50_ms']:>7.2f} {r['p99_ms']:>7.2f} {r['errors']:>6} {cpu}  {ratios}")


if __name__ == "__main__":
    main()
