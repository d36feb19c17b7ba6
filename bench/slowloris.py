"""Is a new client served while a thousand connections trickle their requests (slowloris)?

One run, up to two modes; in each, a fresh gateway on 127.0.0.1:

1. ``lockgate serve --transport http --port 0`` starts with the raw echo
   server behind it (eager start; the run waits for ``/ready``), with the
   connection settings of this run (``GATEWAY_MAX_CONNECTIONS`` and friends,
   defaults unless given).
2. Baseline: new clients one after another, each a fresh connection sending
   ``initialize`` at once; the time from ``connect()`` to its whole 200
   answer is its time to be served.
3. The attack, from a separate process: ``--connections`` connections (1,000)
   each send half a request head, then one more byte every ``--interval``
   seconds (2 s; spread so that bytes leave all the time). A connection the
   gateway closes is opened again at its next turn, as slowloris does. Mode
   ``one``: every connection from 127.0.0.1, the new clients' own address;
   mode ``many``: spread over 100 source addresses (127.0.0.2 to
   127.0.0.101; Linux lets any 127.0.0.x be bound as a source).
4. During the attack (``--duration`` seconds, 30), new clients as in 2, five a
   second: served (200), refused (503) or failed (no answer within 5 s).

Reported per mode: the time to be served before and during the attack
(median, p99, max, in ms) and how many new clients were refused or failed;
how many trickling connections the gateway closed, when (per 5 s of the
attack) and at what age (young ones were closed to make room for a
newcomer; those about 10 s old met the head deadline, or were the oldest
when room was needed); and the gateway's CPU
time during the attack. ``--json`` prints one JSON object instead.

Everything listens on and connects to 127.0.0.1 only. The run is bounded: the
attacker stops itself after ``--duration`` seconds (and is killed 30 s
later if it has not), every new client gives up after 5 s, and the gateway
is stopped with SIGTERM (then SIGKILL) at the end of each mode.

    python bench/slowloris.py [--mode one|many|both] [--connections 1000] [--interval 2] [--duration 30] [--json]
"""

from __future__ import annotations

import argparse
import json
import resource
import selectors
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from http_load import cpu_seconds, start_gateway, stop_gateway

HOST = "127.0.0.1"
#: A new client that has no answer after this long counts as failed.
PROBE_TIMEOUT = 5.0
#: New clients per second, during the baseline and the attack.
PROBE_RATE = 5.0
BASELINE_PROBES = 25
MANY_SOURCES = [f"127.0.0.{n}" for n in range(2, 102)]
INIT = json.dumps(
    {"jsonrpc": "2.0", "id": 0, "method": "initialize",
     "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "slowloris-bench", "version": "1"}}}
).encode()


# -- the attacker (runs in its own process) -------------------------------------------


class _Slot:
    """One trickling connection, reopened in place when the gateway closes it."""

    __slots__ = ("connected", "opened", "sock", "source", "started")

    def __init__(self, source: str) -> None:
        self.source = source
        self.sock: socket.socket | None = None
        self.opened = 0.0
        self.connected = False
        #: Its first connection has sent its half head (or failed to connect).
        self.started = False


def attack(port: int, count: int, sources: list[str], interval: float, duration: float) -> dict[str, Any]:
    """Trickle ``count`` request heads for ``duration`` seconds; report every close the gateway made."""
    head = b"POST /mcp HTTP/1.1\r\nHost: %s:%d\r\nAccept: application/json, text/event-stream\r\nX-Pad: " % (HOST.encode(), port)
    selector = selectors.DefaultSelector()
    slots = [_Slot(sources[n % len(sources)]) for n in range(count)]
    closes: list[tuple[float, float]] = []  # (seconds into the attack, age of the connection)
    opened = answered = started = 0
    start = time.monotonic()

    def open_slot(slot: _Slot) -> None:
        nonlocal opened
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.bind((slot.source, 0))
        try:
            sock.connect((HOST, port))
        except BlockingIOError:
            pass
        slot.sock, slot.opened, slot.connected = sock, time.monotonic(), False
        selector.register(sock, selectors.EVENT_WRITE, slot)
        opened += 1

    def begun(slot: _Slot) -> None:
        nonlocal started
        if not slot.started:
            slot.started = True
            started += 1

    def drop(slot: _Slot, now: float) -> None:
        assert slot.sock is not None
        begun(slot)
        if slot.connected:
            closes.append((now - start, now - slot.opened))
        selector.unregister(slot.sock)
        slot.sock.close()
        slot.sock = None

    for slot in slots:
        open_slot(slot)
    ready_at: float | None = None
    # The attack's clock starts once every connection is opened (a burst, as slowloris does).
    end = start + duration
    turn = 0  # slot turns taken so far: slot (turn % count) drips at start + turn * interval / count
    while True:
        now = time.monotonic()
        if now >= end:
            break
        if ready_at is None and started == count:
            # Every connection has sent its half head once (the gateway may
            # have closed some already: from one address, all but 256).
            ready_at = now
            print("ready", flush=True)
        due = start + turn * interval / count
        for key, events in selector.select(timeout=max(0.0, min(due, end) - now)):
            slot = key.data
            now = time.monotonic()
            if events & selectors.EVENT_WRITE:
                try:
                    slot.sock.send(head)
                except OSError:
                    drop(slot, now)
                    continue
                slot.connected = True
                begun(slot)
                selector.modify(slot.sock, selectors.EVENT_READ, slot)
            elif events & selectors.EVENT_READ:
                try:
                    data = slot.sock.recv(65536)
                except OSError:
                    data = b""
                if data:
                    answered += 1  # an answer (503) means the gateway is closing it
                drop(slot, now)
        while start + turn * interval / count <= time.monotonic() < end:
            slot = slots[turn % count]
            turn += 1
            if slot.sock is None:
                open_slot(slot)
            elif slot.connected:
                try:
                    slot.sock.send(b"a")
                except OSError:
                    drop(slot, time.monotonic())
    for slot in slots:
        if slot.sock is not None:
            slot.sock.close()
    return {
        "opened": opened,
        "ready_seconds": round(ready_at - start, 3) if ready_at is not None else None,
        "answered": answered,
        "closes": [(round(at, 3), round(age, 3)) for at, age in closes],
    }


# -- new clients ---------------------------------------------------------------------------


def probe(port: int) -> tuple[str, float]:
    """One new client: connect, send ``initialize`` at once, read the whole answer. ("200", seconds), ("503", …) or ("failed", …)."""
    request = (
        b"POST /mcp HTTP/1.1\r\nHost: %s:%d\r\nAccept: application/json, text/event-stream\r\n"
        b"Content-Type: application/json\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % (HOST.encode(), port, len(INIT))
    ) + INIT
    started = time.perf_counter()
    try:
        with socket.create_connection((HOST, port), timeout=PROBE_TIMEOUT) as sock:
            sock.settimeout(max(0.01, PROBE_TIMEOUT - (time.perf_counter() - started)))
            sock.sendall(request)
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
    except OSError:
        return "failed", time.perf_counter() - started
    elapsed = time.perf_counter() - started
    status = answer[9:12].decode("ascii", "replace")
    return (status if status in ("200", "503") else "failed"), elapsed


def probe_for(port: int, seconds: float | None, count: int | None = None) -> list[tuple[str, float]]:
    """New clients at PROBE_RATE a second, for ``seconds`` or ``count`` of them."""
    results: list[tuple[str, float]] = []
    start = time.monotonic()
    n = 0
    while (seconds is None or time.monotonic() - start < seconds) and (count is None or n < count):
        results.append(probe(port))
        n += 1
        pause = start + n / PROBE_RATE - time.monotonic()
        if pause > 0:
            time.sleep(pause)
    return results


def served_figures(results: list[tuple[str, float]]) -> dict[str, Any]:
    times = sorted(t for status, t in results if status == "200")

    def ms(value: float) -> float:
        return round(value * 1000, 2)

    figures: dict[str, Any] = {
        "clients": len(results),
        "served": len(times),
        "refused": sum(1 for status, _ in results if status == "503"),
        "failed": sum(1 for status, _ in results if status == "failed"),
    }
    if times:
        figures |= {
            "median_ms": ms(statistics.median(times)),
            "p99_ms": ms(times[min(len(times) - 1, int(0.99 * len(times)))]),
            "max_ms": ms(times[-1]),
        }
    return figures


# -- the orchestrator -------------------------------------------------------------------------


def run_mode(mode: str, args: argparse.Namespace) -> dict[str, Any]:
    sources = [HOST] if mode == "one" else MANY_SOURCES
    env_extra = {
        name: str(value)
        for name, value in (
            ("GATEWAY_MAX_CONNECTIONS", args.max_connections),
            ("GATEWAY_MAX_CONNECTIONS_PER_ADDRESS", args.max_per_address),
            ("GATEWAY_HTTP_HEAD_TIMEOUT", args.head_timeout),
        )
        if value is not None
    }
    with tempfile.TemporaryDirectory(prefix="lockgate-slowloris-") as tmp:
        gateway, url = start_gateway(Path(tmp), "raw", env_extra, host=HOST)
        port = int(url.rsplit(":", 1)[1])
        attacker: subprocess.Popen[str] | None = None
        try:
            baseline = probe_for(port, None, BASELINE_PROBES)
            attacker = subprocess.Popen(
                [sys.executable, __file__, "--attacker", "--port", str(port), "--connections", str(args.connections),
                 "--sources", ",".join(sources), "--interval", str(args.interval), "--duration", str(args.duration)],
                stdout=subprocess.PIPE, text=True,
            )
            assert attacker.stdout is not None
            first = attacker.stdout.readline().strip()  # "ready": every connection is open and trickling
            cpu_before = cpu_seconds(gateway.pid)
            during = probe_for(port, args.duration - 1.0) if first == "ready" else []
            cpu_after = cpu_seconds(gateway.pid)
            out, _ = attacker.communicate(timeout=args.duration + 30)
            report = json.loads(out)
        finally:
            if attacker is not None and attacker.poll() is None:
                attacker.kill()
                attacker.wait()
            stop_gateway(gateway)
    closes = report.pop("closes")
    buckets: dict[str, int] = {}
    for at, _ in closes:
        low = int(at // 5) * 5
        buckets[f"{low}-{low + 5}s"] = buckets.get(f"{low}-{low + 5}s", 0) + 1
    ages = sorted(age for _, age in closes)
    deadline = args.head_timeout if args.head_timeout is not None else 10.0
    return {
        "sources": len(sources),
        "before": served_figures(baseline),
        "during": served_figures(during),
        "attacker": report,
        "gateway_closed": len(closes),
        "closed_per_5s": buckets,
        "closed_age_s": {
            "under_1s": sum(1 for a in ages if a < 1),
            # The head deadline runs from the first byte, sent right after the connect.
            "at_head_deadline": sum(1 for a in ages if deadline - 0.5 <= a <= deadline + 1.0),
            "median": round(statistics.median(ages), 2) if ages else None,
            "max": round(ages[-1], 2) if ages else None,
        },
        "gateway_cpu_s": round(cpu_after - cpu_before, 2) if cpu_before is not None and cpu_after is not None else None,
    }


def print_mode(mode: str, result: dict[str, Any], args: argparse.Namespace) -> None:
    where = "127.0.0.1 (the new clients' own address)" if mode == "one" else f"{result['sources']} addresses (127.0.0.2 to 127.0.0.101)"
    print(f"mode {mode}: {args.connections} trickling connections from {where}, a byte every {args.interval:g} s each")
    for phase in ("before", "during"):
        f = result[phase]
        times = f"median {f['median_ms']} ms, p99 {f['p99_ms']} ms, max {f['max_ms']} ms" if f["served"] else "none served"
        print(f"  {phase:<6} the attack: {f['served']}/{f['clients']} new clients served ({times}); "
              f"{f['refused']} refused (503), {f['failed']} failed")
    a = result["attacker"]
    print(f"  trickling connections: {a['opened']} opened ({a['opened'] - args.connections} reopened), "
          f"all {args.connections} open after {a['ready_seconds']} s")
    ages = result["closed_age_s"]
    print(f"  the gateway closed {result['gateway_closed']} of them, aged: under 1 s {ages['under_1s']}, "
          f"about the head deadline {ages['at_head_deadline']}; median {ages['median']} s, max {ages['max']} s")
    print("  closed per 5 s of the attack: " + ", ".join(f"{k} {v}" for k, v in result["closed_per_5s"].items()))
    if result["gateway_cpu_s"] is not None:
        print(f"  gateway CPU during the attack: {result['gateway_cpu_s']} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=("one", "many", "both"), default="both")
    parser.add_argument("--connections", type=int, default=1000, help="trickling connections (default 1000)")
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between two bytes of one connection (default 2)")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of attack per mode (default 30)")
    parser.add_argument("--max-connections", type=int, help="GATEWAY_MAX_CONNECTIONS for the gateway (default: its own)")
    parser.add_argument("--max-per-address", type=int, help="GATEWAY_MAX_CONNECTIONS_PER_ADDRESS (default: its own)")
    parser.add_argument("--head-timeout", type=float, help="GATEWAY_HTTP_HEAD_TIMEOUT (default: its own)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--attacker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--sources", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not 1 <= args.connections <= 5000 or not 1.0 <= args.duration <= 600:
        raise SystemExit("use 1 to 5000 connections and 1 to 600 seconds")
    # Each side holds one descriptor per connection; the gateway inherits this limit.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 4 * args.connections + 1024)), hard))
    if args.attacker:
        print(json.dumps(attack(args.port, args.connections, args.sources.split(","), args.interval, args.duration)))
        return
    modes = ["one", "many"] if args.mode == "both" else [args.mode]
    results = {mode: run_mode(mode, args) for mode in modes}
    if args.json:
        print(json.dumps({"connections": args.connections, "interval": args.interval, "duration": args.duration, **results}, indent=2))
        return
    for mode in modes:
        print_mode(mode, results[mode], args)


if __name__ == "__main__":
    main()
