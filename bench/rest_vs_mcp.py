"""Is a tool call through the REST API as fast as the same call over MCP?

One ``lockgate serve --transport http`` on 127.0.0.1 with the raw echo server
behind it (``raw_echo_server.py``: shows the gateway's own cost; ``--downstream
sdk`` puts ``echo_server.py`` there instead) is called two ways, in one run:

- ``MCP``: ``POST /mcp`` ``tools/call execute_tool`` ``{"agent_id": "bench",
  "server": "echo", "tool": "echo", "args": {...}}`` in a Streamable HTTP
  session each client initialized once, before the clock starts;
- ``REST``: ``POST /mcp/echo/tools/call`` ``{"name": "echo", "arguments":
  {...}, "agent_id": "bench"}`` (no session: each request is one short-lived
  session of the core).

Each client holds one keep-alive connection and makes its next call as soon
as the previous answer is in (a closed loop). The client is ``httpx.Client``
(one per connection, a thread each when there are several), or with
``--client socket`` http_load.py's lean one: request bytes built once, plain
non-blocking sockets in one ``selectors`` loop. Two loads: one client
(sequential) and ``--concurrency`` clients (8). The blocks alternate in
rounds (MCP then REST, then REST then MCP, ...) so drift on the machine falls
on both alike; an untimed warm-up of each side and load comes first. A call
counts when its answer is HTTP 200 and carries the echoed text.

Reported per load and side: calls/s, p50/p95/p99 latency in ms (over all the
rounds' calls), errors, and the gateway's CPU time per call (user + system
from ``/proc``, Linux), then each figure as a ratio REST / MCP. The goal:
REST no slower than MCP (p50 ratio <= 1.0). ``--json`` prints one JSON object.

Bounded: the default run takes about 55 s (``--quick``: about 8 s); a hard
limit (``--timeout``, 120 s) stops the rounds and reports what was measured,
marked incomplete. The gateway gets SIGTERM (then SIGKILL) at the end. The
exit status is 1 when a call failed or the run was incomplete.

    python bench/rest_vs_mcp.py [--rounds 6] [--seconds 2] [--concurrency 8] [--client httpx|socket] [--quick] [--json]
"""

from __future__ import annotations

import argparse
import json
import re
import selectors
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

import http_load  # noqa: E402  (the sibling benchmark: gateway start and stop, CPU time, percentiles)

SIDES = ("MCP", "REST")
AGENT = "bench"
SERVER = "echo"
TEXT = "hello, lockgate"
EXPECT = TEXT.encode()
INIT = {
    "jsonrpc": "2.0",
    "id": 0,
    "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "rest_vs_mcp", "version": "1"}},
}
INITIALIZED = {"jsonrpc": "2.0", "method": "notifications/initialized"}
MCP_CALL = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "tools/call",
    "params": {"name": "execute_tool", "arguments": {"agent_id": AGENT, "server": SERVER, "tool": "echo", "args": {"text": TEXT}}},
}
REST_CALL = {"name": "echo", "arguments": {"text": TEXT}, "agent_id": AGENT}
REST_PATH = f"/mcp/{SERVER}/tools/call"


def compact(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode()


# -- clients: one keep-alive connection each, a closed loop of calls per block ------------


class Load:
    """N clients of one side, connected (and for MCP initialized) once; ``block`` runs them for a while."""

    def block(self, seconds: float) -> tuple[list[float], int]:
        """Every client calls in a closed loop until ``seconds`` have passed; (latencies in s, errors)."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class HttpxLoad(Load):
    """``httpx.Client``s, one connection each; several run in threads, released together."""

    def __init__(self, base: str, side: str, clients: int) -> None:
        self._clients: list[tuple[httpx.Client, bytes, str, dict[str, str]]] = []
        for _ in range(clients):
            client = httpx.Client(base_url=base, timeout=10.0, limits=httpx.Limits(max_connections=1, max_keepalive_connections=1))
            if side == "MCP":
                headers = {"content-type": "application/json", "accept": "application/json, text/event-stream"}
                answer = client.post("/mcp", content=compact(INIT), headers=headers)
                answer.raise_for_status()
                headers |= {"mcp-session-id": answer.headers["mcp-session-id"], "mcp-protocol-version": "2025-11-25"}
                client.post("/mcp", content=compact(INITIALIZED), headers=headers).raise_for_status()
                self._clients.append((client, compact(MCP_CALL), "/mcp", headers))
            else:
                headers = {"content-type": "application/json", "accept": "application/json"}
                self._clients.append((client, compact(REST_CALL), REST_PATH, headers))

    def block(self, seconds: float) -> tuple[list[float], int]:
        results: list[tuple[list[float], int]] = [([], 0)] * len(self._clients)
        start = threading.Barrier(len(self._clients))

        def run(index: int) -> None:
            client, body, path, headers = self._clients[index]
            latencies: list[float] = []
            errors = 0
            start.wait()
            deadline = time.perf_counter() + seconds
            now = time.perf_counter()
            while now < deadline:
                sent = now
                try:
                    answer = client.post(path, content=body, headers=headers)
                    ok = answer.status_code == 200 and EXPECT in answer.content
                except httpx.HTTPError:
                    ok = False
                now = time.perf_counter()
                if ok:
                    latencies.append(now - sent)
                else:
                    errors += 1
            results[index] = (latencies, errors)

        if len(self._clients) == 1:
            run(0)
        else:
            threads = [threading.Thread(target=run, args=(i,)) for i in range(len(self._clients))]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        return [t for latencies, _ in results for t in latencies], sum(errors for _, errors in results)

    def close(self) -> None:
        for client, *_ in self._clients:
            client.close()


def _request_bytes(host: str, port: int, path: str, body: bytes, headers: list[bytes]) -> bytes:
    head = [
        b"POST %s HTTP/1.1" % path.encode(),
        b"Host: %s:%d" % (host.encode(), port),
        b"Content-Type: application/json",
        b"Content-Length: %d" % len(body),
        *headers,
    ]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


class SocketLoad(Load):
    """http_load.py's generator: prebuilt request bytes, non-blocking sockets, one ``selectors`` loop."""

    def __init__(self, base: str, side: str, clients: int) -> None:
        host, port_text = base.removeprefix("http://").rsplit(":", 1)
        port = int(port_text)
        self._socks: dict[socket.socket, list[Any]] = {}
        self._selector = selectors.DefaultSelector()
        for _ in range(clients):
            if side == "MCP":
                sock, session = http_load.open_session(host, port)
                request = http_load.http_request(host, port, compact(MCP_CALL), session)
            else:
                sock = socket.create_connection((host, port))
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                request = _request_bytes(host, port, REST_PATH, compact(REST_CALL), [b"Accept: application/json"])
            sock.setblocking(False)
            # [request, bytes read so far, when the call left]
            self._socks[sock] = [request, b"", 0.0]
            self._selector.register(sock, selectors.EVENT_READ)

    def block(self, seconds: float) -> tuple[list[float], int]:
        latencies: list[float] = []
        errors = 0
        deadline = time.perf_counter() + seconds
        for sock, st in self._socks.items():
            st[2] = time.perf_counter()
            sock.sendall(st[0])
        outstanding = len(self._socks)
        while outstanding:
            events = self._selector.select(timeout=10)
            if not events:
                raise SystemExit("no answer from the gateway for 10 s")
            for key, _ in events:
                conn = key.fileobj
                assert isinstance(conn, socket.socket)
                st = self._socks[conn]
                chunk = conn.recv(65536)
                if not chunk:
                    raise SystemExit("the gateway closed a connection")
                st[1] += chunk
                head_end = st[1].find(b"\r\n\r\n")
                if head_end < 0:
                    continue
                match = re.search(rb"(?i)content-length:\s*(\d+)", st[1][:head_end])
                if match is None:
                    raise SystemExit("an answer without Content-Length (use --client httpx)")
                end = head_end + 4 + int(match.group(1))
                if len(st[1]) < end:
                    continue
                now = time.perf_counter()
                response, st[1] = st[1][:end], st[1][end:]
                if response.startswith(b"HTTP/1.1 200") and EXPECT in response:
                    latencies.append(now - st[2])
                else:
                    errors += 1
                if now < deadline:
                    st[2] = now
                    conn.sendall(st[0])
                else:
                    outstanding -= 1
        return latencies, errors

    def close(self) -> None:
        self._selector.close()
        for sock in self._socks:
            sock.close()


CLIENTS: dict[str, Callable[[str, str, int], Load]] = {"httpx": HttpxLoad, "socket": SocketLoad}


# -- the run --------------------------------------------------------------------------------


@dataclass
class Cell:
    """What one side measured under one load, over all its timed blocks."""

    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    seconds: float = 0.0
    cpu: float | None = 0.0
    block_p50: list[float] = field(default_factory=list)

    def add(self, latencies: list[float], errors: int, seconds: float, cpu: float | None) -> None:
        self.latencies += latencies
        self.errors += errors
        self.seconds += seconds
        self.cpu = None if cpu is None or self.cpu is None else self.cpu + cpu
        if latencies:
            self.block_p50.append(statistics.median(latencies))

    def report(self) -> dict[str, Any]:
        calls = len(self.latencies)
        figures: dict[str, Any] = {
            "calls": calls,
            "errors": self.errors,
            "seconds": round(self.seconds, 3),
            "calls_per_second": round(calls / self.seconds, 1) if self.seconds else 0.0,
            **http_load.percentiles(self.latencies),
        }
        figures["cpu_us_per_call"] = round(self.cpu / calls * 1e6, 1) if self.cpu is not None and calls else None
        return figures


def timed(load: Load, seconds: float, pid: int) -> tuple[list[float], int, float, float | None]:
    cpu_before = http_load.cpu_seconds(pid)
    started = time.perf_counter()
    latencies, errors = load.block(seconds)
    elapsed = time.perf_counter() - started
    cpu_after = http_load.cpu_seconds(pid)
    cpu = cpu_after - cpu_before if cpu_before is not None and cpu_after is not None else None
    return latencies, errors, elapsed, cpu


def ratio(rest: float | None, mcp: float | None) -> float | None:
    return round(rest / mcp, 3) if rest is not None and mcp else None


def run(args: argparse.Namespace) -> dict[str, Any]:
    hard_stop = time.monotonic() + args.timeout
    loads = [1] if args.concurrency <= 1 else [1, args.concurrency]
    cells = {(n, side): Cell() for n in loads for side in SIDES}
    complete = True
    with tempfile.TemporaryDirectory(prefix="lockgate-rest-vs-mcp-") as tmp:
        proc, base = http_load.start_gateway(Path(tmp), args.downstream)
        clients: dict[tuple[int, str], Load] = {}
        try:
            for n in loads:
                for side in SIDES:
                    clients[n, side] = CLIENTS[args.client](base, side, n)
                    clients[n, side].block(args.warmup)  # warm-up, not counted
            for index in range(args.rounds):
                order = SIDES if index % 2 == 0 else SIDES[::-1]
                for n in loads:
                    for side in order:
                        if time.monotonic() + args.seconds > hard_stop:
                            complete = False
                            break
                        cells[n, side].add(*timed(clients[n, side], args.seconds, proc.pid))
                if not complete:
                    break
        finally:
            for load in clients.values():
                load.close()
            http_load.stop_gateway(proc)
    result: dict[str, Any] = {
        "downstream": args.downstream,
        "client": args.client,
        "rounds": args.rounds,
        "seconds": args.seconds,
        "warmup": args.warmup,
        "complete": complete,
        "loads": {},
    }
    for n in loads:
        mcp, rest = cells[n, "MCP"].report(), cells[n, "REST"].report()
        ratios: dict[str, Any] = {key: ratio(rest[key], mcp[key]) for key in ("calls_per_second", "p50_ms", "p95_ms", "p99_ms", "cpu_us_per_call")}
        per_block = [r / m for r, m in zip(cells[n, "REST"].block_p50, cells[n, "MCP"].block_p50, strict=False)]
        ratios["p50_per_round"] = [round(r, 3) for r in per_block]
        result["loads"][str(n)] = {"MCP": mcp, "REST": rest, "REST/MCP": ratios}
    return result


def print_table(result: dict[str, Any]) -> None:
    print(
        f"lockgate serve --transport http, {result['downstream']} echo downstream, {result['client']} client; "
        f"{result['rounds']} rounds of {result['seconds']:g} s per side and load (alternating), {result['warmup']:g} s warm-up"
        + ("" if result["complete"] else "; INCOMPLETE (hit --timeout)")
    )
    print(f"{'clients':>7} {'side':<8} {'calls/s':>9} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'calls':>7} {'errors':>6} {'CPU µs/call':>11}")

    def cell(value: Any, width: int, digits: int) -> str:
        return f"{value:>{width}.{digits}f}" if isinstance(value, float | int) else f"{'-':>{width}}"

    for n, figures in result["loads"].items():
        for side in SIDES:
            r = figures[side]
            print(
                f"{n:>7} {side:<8} {cell(r['calls_per_second'], 9, 1)} {cell(r['p50_ms'], 8, 3)} {cell(r['p95_ms'], 8, 3)} "
                f"{cell(r['p99_ms'], 8, 3)} {r['calls']:>7} {r['errors']:>6} {cell(r['cpu_us_per_call'], 11, 1)}"
            )
        q = figures["REST/MCP"]
        print(
            f"{n:>7} {'REST/MCP':<8} {cell(q['calls_per_second'], 9, 3)} {cell(q['p50_ms'], 8, 3)} {cell(q['p95_ms'], 8, 3)} "
            f"{cell(q['p99_ms'], 8, 3)} {'':>7} {'':>6} {cell(q['cpu_us_per_call'], 11, 3)}"
        )
    for n, figures in result["loads"].items():
        q = figures["REST/MCP"]
        verdict = "met" if q["p50_ms"] is not None and q["p50_ms"] <= 1.0 else "NOT met"
        spread = q["p50_per_round"]
        extra = f" (per block {min(spread):.3f} to {max(spread):.3f})" if spread else ""
        print(f"{n} client{'s' if n != '1' else ''}: REST/MCP p50 {q['p50_ms']}{extra}; goal <= 1.0 {verdict}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=6, help="alternating rounds (default 6)")
    parser.add_argument("--seconds", type=float, default=2.0, help="seconds per block, side and load (default 2)")
    parser.add_argument("--warmup", type=float, default=0.5, help="untimed seconds per side and load first (default 0.5)")
    parser.add_argument("--concurrency", type=int, default=8, help="clients of the concurrent load (default 8; 1: sequential only)")
    parser.add_argument("--client", choices=sorted(CLIENTS), default="httpx", help="httpx.Client per connection (default) or raw sockets")
    parser.add_argument("--downstream", choices=("raw", "sdk"), default="raw", help="raw_echo_server.py (default) or echo_server.py")
    parser.add_argument("--timeout", type=float, default=120.0, help="hard limit on the rounds, seconds (default 120)")
    parser.add_argument("--quick", action="store_true", help="a short run: 2 rounds of 0.5 s, 0.2 s warm-up")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.seconds, args.warmup = 2, 0.5, 0.2
    result = run(args)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_table(result)
    failed = any(figures[side]["errors"] for figures in result["loads"].values() for side in SIDES)
    return 1 if failed or not result["complete"] else 0


if __name__ == "__main__":
    sys.exit(main())
