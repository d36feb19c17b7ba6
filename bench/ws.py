"""WebSocket against Streamable HTTP: the same ``execute_tool`` call through one gateway, both fronts, one run.

One ``lockgate serve --transport http,ws --port 0`` on 127.0.0.1 with the raw
echo server behind it (``raw_echo_server.py``: the gateway's own cost shows;
``--downstream sdk`` puts ``echo_server.py`` there) serves both sides:

- ``HTTP``: ``POST /mcp`` ``tools/call execute_tool`` in a Streamable HTTP
  session each client initialized before the clock starts, on one
  keep-alive connection, answered as JSON;
- ``WS``: the same message as a text message on a WebSocket connection to
  ``/ws`` (subprotocol ``mcp``), after the same ``initialize``.

Both clients are lean on purpose and alike: blocking sockets, request bytes
built once (a WebSocket client frame is masked with a fixed key), responses
read by their length. Two loads, in one run: ``--calls`` (1,000) sequential
calls by one client, in alternating blocks (HTTP then WS, then WS then HTTP,
...) so drift on the machine falls on both alike; then ``--clients`` (100)
concurrent clients, one thread each, each making ``--per-client`` (20)
calls in a closed loop, both sides one after the other, twice, in alternating
order. An untimed warm-up comes first. A call counts when its answer carries
the echoed text.

Reported per load and side: calls/s, p50/p99 latency in ms, errors, then
WS / HTTP ratios (calls/s above 1 and latency below 1 favour WebSocket).
``--json`` prints one JSON object. Bounded: a few seconds per load; the
gateway gets SIGTERM at the end. Exit status 1 when a call failed.

    python bench/ws.py [--calls 1000] [--clients 100] [--per-client 20] [--downstream raw|sdk] [--json]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any, Protocol

sys.path.insert(0, str(Path(__file__).resolve().parent))

import http_load  # noqa: E402  (the sibling benchmark: echo setup, stop, percentiles)

TEXT = "hello, lockgate"
EXPECT = TEXT.encode()
INIT = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "bench-ws", "version": "1"}}}
INITIALIZED = {"jsonrpc": "2.0", "method": "notifications/initialized"}
CALL = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "execute_tool", "arguments": {"agent_id": "bench", "server": "echo", "tool": "echo", "args": {"text": TEXT}}}}
SIDES = ("HTTP", "WS")


class Caller(Protocol):
    def call(self) -> bool: ...

    def close(self) -> None: ...


class HttpCaller:
    """One Streamable HTTP session on one keep-alive connection."""

    def __init__(self, host: str, port: int) -> None:
        self.sock, session = http_load.open_session(host, port)
        self.request = http_load.http_request(host, port, json.dumps(CALL, separators=(",", ":")).encode(), session)

    def call(self) -> bool:
        self.sock.sendall(self.request)
        status, _, body = http_load.read_response(self.sock)
        return status == 200 and EXPECT in body

    def close(self) -> None:
        self.sock.close()


class WsCaller:
    """One WebSocket connection to ``/ws``, MCP initialized."""

    def __init__(self, host: str, port: int) -> None:
        sock = socket.create_connection((host, port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        key = base64.b64encode(os.urandom(16)).decode()
        sock.sendall(
            (f"GET /ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mcp\r\n\r\n").encode()
        )
        self.sock = sock
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            self.buffer += sock.recv(65536)
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101"):
            raise SystemExit(f"the upgrade was refused: {head[:80]!r}")
        sock.sendall(frame(json.dumps(INIT).encode()))
        self.receive()
        sock.sendall(frame(json.dumps(INITIALIZED).encode()))
        self.request = frame(json.dumps(CALL, separators=(",", ":")).encode())

    def _need(self, n: int) -> None:
        while len(self.buffer) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            self.buffer += chunk

    def receive(self) -> bytes:
        """The next text message (pings answered on the way)."""
        while True:
            self._need(2)
            opcode, length = self.buffer[0] & 0x0F, self.buffer[1] & 0x7F
            start = 2
            if length == 126:
                self._need(4)
                length, start = int.from_bytes(self.buffer[2:4], "big"), 4
            elif length == 127:
                self._need(10)
                length, start = int.from_bytes(self.buffer[2:10], "big"), 10
            self._need(start + length)
            payload, self.buffer = self.buffer[start:start + length], self.buffer[start + length:]
            if opcode == 0x9:
                self.sock.sendall(frame(payload, opcode=0xA))
            elif opcode == 0x1:
                return payload
            else:
                raise ConnectionError(f"unexpected opcode {opcode}")

    def call(self) -> bool:
        self.sock.sendall(self.request)
        return EXPECT in self.receive()

    def close(self) -> None:
        self.sock.close()


_MASK = b"\x01\x02\x03\x04"


def frame(payload: bytes, opcode: int = 0x1) -> bytes:
    """One client frame, masked (RFC 6455 requires it of clients; a fixed key is enough for a benchmark)."""
    n = len(payload)
    length = bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + n.to_bytes(2, "big") if n < 65536 else bytes([0x80 | 127]) + n.to_bytes(8, "big")
    masked = bytes(b ^ _MASK[i % 4] for i, b in enumerate(payload))
    return bytes([0x80 | opcode]) + length + _MASK + masked


def make(side: str, host: str, port: int) -> Caller:
    return HttpCaller(host, port) if side == "HTTP" else WsCaller(host, port)


def sequential(host: str, port: int, calls: int, blocks: int) -> dict[str, dict[str, Any]]:
    callers = {side: make(side, host, port) for side in SIDES}
    latencies: dict[str, list[float]] = {side: [] for side in SIDES}
    errors = dict.fromkeys(SIDES, 0)
    elapsed = dict.fromkeys(SIDES, 0.0)
    for side in SIDES:  # warm-up
        for _ in range(50):
            callers[side].call()
    per_block = max(1, calls // blocks)
    for block in range(blocks):
        order = SIDES if block % 2 == 0 else SIDES[::-1]
        for side in order:
            caller = callers[side]
            start = time.perf_counter()
            for _ in range(per_block):
                t0 = time.perf_counter()
                ok = caller.call()
                latencies[side].append(time.perf_counter() - t0)
                errors[side] += not ok
            elapsed[side] += time.perf_counter() - start
    for caller in callers.values():
        caller.close()
    return {side: http_load.summary(latencies[side], errors[side], elapsed[side]) for side in SIDES}


def concurrent(host: str, port: int, clients: int, per_client: int, rounds: int) -> dict[str, dict[str, Any]]:
    latencies: dict[str, list[float]] = {side: [] for side in SIDES}
    errors = dict.fromkeys(SIDES, 0)
    elapsed = dict.fromkeys(SIDES, 0.0)
    for round_ in range(rounds):
        order = SIDES if round_ % 2 == 0 else SIDES[::-1]
        for side in order:
            callers = [make(side, host, port) for _ in range(clients)]
            for caller in callers:
                caller.call()  # warm: each connection's first call is untimed
            lock = threading.Lock()
            go = threading.Barrier(clients + 1)

            def run(caller: Caller) -> None:
                mine: list[float] = []
                bad = 0
                go.wait()
                for _ in range(per_client):
                    t0 = time.perf_counter()
                    ok = caller.call()
                    mine.append(time.perf_counter() - t0)
                    bad += not ok
                with lock:
                    latencies[side].extend(mine)
                    errors[side] += bad

            threads = [threading.Thread(target=run, args=(caller,)) for caller in callers]
            for thread in threads:
                thread.start()
            go.wait()
            start = time.perf_counter()
            for thread in threads:
                thread.join(120)
            elapsed[side] += time.perf_counter() - start
            for caller in callers:
                caller.close()
    return {side: http_load.summary(latencies[side], errors[side], elapsed[side]) for side in SIDES}


def start_gateway(directory: Path, downstream: str) -> tuple[subprocess.Popen[bytes], str, int]:
    """``lockgate serve --transport http,ws --port 0`` on the echo setup; waits for ``/ready``."""
    config, rules = http_load.write_config(directory, downstream)
    env = {**os.environ, "GATEWAY_INIT_STRATEGY": "eager", "GATEWAY_AUDIT_LOG": str(directory / "audit.jsonl")}
    command = [sys.executable, "-m", "lockgate.shells", "serve", "--config", str(config), "--rules", str(rules),
               "--transport", "http,ws", "--port", "0"]
    proc = subprocess.Popen(command, cwd=directory, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    deadline = time.monotonic() + 30
    url = ""
    while not url and time.monotonic() < deadline:
        line = proc.stderr.readline().decode(errors="replace")
        if not line:
            break
        found = re.search(r"at (http://\S+)/mcp", line)
        url = found.group(1) if found else ""
    if not url:
        proc.kill()
        raise SystemExit("the gateway did not start")
    threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()  # type: ignore[union-attr]
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/ready", timeout=5) as response:
                if response.status == 200:
                    host, _, port = url.removeprefix("http://").rpartition(":")
                    return proc, host, int(port)
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("the gateway did not become ready")


def ratios(result: dict[str, dict[str, Any]]) -> dict[str, float]:
    http, ws = result["HTTP"], result["WS"]

    def ratio(key: str) -> float:
        return round(ws[key] / http[key], 3) if http[key] else 0.0

    return {"calls_per_second": ratio("calls_per_second"), "p50_ms": ratio("p50_ms"), "p99_ms": ratio("p99_ms")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=1000, help="sequential calls per side (default 1000)")
    parser.add_argument("--blocks", type=int, default=10, help="alternating blocks the sequential calls come in")
    parser.add_argument("--clients", type=int, default=100, help="concurrent clients per side (default 100)")
    parser.add_argument("--per-client", type=int, default=20, help="calls per concurrent client and round (default 20)")
    parser.add_argument("--rounds", type=int, default=2, help="concurrent rounds per side, in alternating order")
    parser.add_argument("--downstream", choices=("raw", "sdk"), default="raw")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lockgate-bench-ws-") as tmp:
        proc, host, port = start_gateway(Path(tmp), args.downstream)
        try:
            report: dict[str, Any] = {"downstream": args.downstream}
            report["sequential"] = sequential(host, port, args.calls, args.blocks)
            report["concurrent"] = concurrent(host, port, args.clients, args.per_client, args.rounds)
        finally:
            http_load.stop_gateway(proc)
    for load in ("sequential", "concurrent"):
        report[load]["WS/HTTP"] = ratios(report[load])
    failed = any(report[load][side]["errors"] for load in ("sequential", "concurrent") for side in SIDES)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"WebSocket against Streamable HTTP, execute_tool echo through one gateway ({args.downstream} downstream)")
        for load, what in (("sequential", f"{args.calls} sequential calls, one client"),
                           ("concurrent", f"{args.clients} concurrent clients x {args.per_client} calls x {args.rounds} rounds")):
            print(f"\n{what}:")
            print(f"  {'side':<6} {'calls':>6} {'calls/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6}")
            for side in SIDES:
                r = report[load][side]
                print(f"  {side:<6} {r['calls']:>6} {r['calls_per_second']:>9} {r['p50_ms']:>8} {r['p99_ms']:>8} {r['errors']:>6}")
            q = report[load]["WS/HTTP"]
            print(f"  WS/HTTP: calls/s x{q['calls_per_second']}, p50 x{q['p50_ms']}, p99 x{q['p99_ms']}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
