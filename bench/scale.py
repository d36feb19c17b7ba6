"""How far does Lockgate scale past one process: workers on one machine, replicas behind nginx.

One run measures, with the raw echo downstream (``raw_echo_server.py``, so the
figures are the gateway's own cost) and ``execute_tool`` echo calls over
Streamable HTTP:

- the single process (``lockgate serve``, one worker): the baseline;
- ``lockgate serve --workers N`` for each N of ``--workers`` (default 2 and 4);
- three replicas (``lockgate serve`` each) behind a real nginx, round-robin
  with no stickiness, sharing a session key (``tests/cluster.py``); with
  ``--no-nginx`` or when nginx is not installed, this row is left out.

each at every session count of ``--sessions`` (default 100 and 1,000), in a
closed loop (each session sends its next call when the last is answered)
for ``--duration`` seconds, by the load generator of ``http_load.py`` in its
own process. Reported: calls/s, p50 and p99 in milliseconds, errors, and the
ratio of calls/s to the single process at the same session count.

``--rate R`` adds an open-loop row per setup: calls offered at a fixed R per
second across the sessions (latency counted from when each call was due, so
a gateway that falls behind shows it), for the p99 at a given load.

The machine is shared by the gateway processes, nginx and the load
generator: on a machine with few cores the generator's own CPU caps what
can be shown, so read the ratios, not the absolute figures, and compare runs
on the same machine only.

    python bench/scale.py [--sessions 100 1000] [--workers 2 4] [--duration 8] [--rate 2000] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(HERE.parent))

from http_load import (  # noqa: E402
    TEXT,
    cpu_seconds,
    http_request,
    open_session,
    start_gateway,
    stop_gateway,
    summary,
    write_config,
)

#: Connection limits out of the way: the benchmark opens up to thousands of sessions from one address.
ENV = {"GATEWAY_MAX_CONNECTIONS": "5000", "GATEWAY_MAX_CONNECTIONS_PER_ADDRESS": "0", "GATEWAY_LOG_LEVEL": "warning"}
CALL = {
    "jsonrpc": "2.0", "id": 1, "method": "tools/call",
    "params": {"name": "execute_tool", "arguments": {"agent_id": "bench", "server": "echo", "tool": "echo", "args": {"text": TEXT}}},
}


# -- the open-loop generator (runs in its own process) ----------------------------------


def load_rate(host: str, port: int, sessions: int, rate: float, duration: float) -> dict[str, Any]:
    """Calls offered at ``rate`` per second over ``sessions`` keep-alive sessions, one in flight per session.

    Each call is due at ``start + i / rate``; it leaves then on an idle
    session, or when one becomes idle, and its latency runs from when it was
    due, so queueing in front of a slow gateway counts.
    """
    body = json.dumps(CALL, separators=(",", ":")).encode()
    selector = selectors.DefaultSelector()
    idle: list[socket.socket] = []
    requests: dict[socket.socket, bytes] = {}
    buffers: dict[socket.socket, bytes] = {}
    due_of: dict[socket.socket, float] = {}
    for _ in range(sessions):
        sock, session = open_session(host, port)
        sock.setblocking(False)
        requests[sock] = http_request(host, port, body, session)
        buffers[sock] = b""
        selector.register(sock, selectors.EVENT_READ)
        idle.append(sock)
    latencies: list[float] = []
    errors = 0
    start = time.perf_counter()
    total = int(rate * duration)
    sent = 0
    expect = TEXT.encode()
    while sent < total or due_of:
        now = time.perf_counter()
        while sent < total and idle and start + sent / rate <= now:
            sock = idle.pop()
            due_of[sock] = start + sent / rate
            sock.sendall(requests[sock])
            sent += 1
        next_due = start + sent / rate if sent < total else now + 1.0
        timeout = max(0.0, next_due - time.perf_counter()) if idle else 1.0
        for key, _ in selector.select(timeout=min(timeout, 1.0)):
            sock = key.fileobj  # type: ignore[assignment]
            chunk = sock.recv(65536)
            if not chunk:
                raise SystemExit("the gateway closed a connection")
            buffers[sock] += chunk
            data = buffers[sock]
            head_end = data.find(b"\r\n\r\n")
            if head_end < 0:
                continue
            length = 0
            for line in data[:head_end].split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if len(data) < head_end + 4 + length:
                continue
            response, buffers[sock] = data[: head_end + 4 + length], data[head_end + 4 + length :]
            done = time.perf_counter()
            if response.startswith(b"HTTP/1.1 200") and expect in response:
                latencies.append(done - due_of.pop(sock))
            else:
                due_of.pop(sock)
                errors += 1
            idle.append(sock)
        if time.perf_counter() - start > duration + 30:
            raise SystemExit("calls still unanswered 30 s after the run")
    elapsed = time.perf_counter() - start
    for sock in requests:
        sock.close()
    result = summary(latencies, errors, elapsed)
    result["offered_per_second"] = rate
    return result


# -- the orchestrator -------------------------------------------------------------------


def run_worker(args: list[str]) -> dict[str, Any]:
    """Run this script's load generator in its own process; its JSON answer."""
    result = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"load generator failed: {result.stderr.strip()[-2000:]}")
    return dict(json.loads(result.stdout))


def process_tree_cpu(pid: int) -> float:
    """CPU seconds of ``pid`` and its children (workers), read from /proc; 0 where it is missing."""
    total = cpu_seconds(pid) or 0.0
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    return total + sum(process_tree_cpu(int(child)) for child in children)


def measure(host: str, port: int, sessions: int, duration: float, rate: float | None, pids: list[int]) -> dict[str, Any]:
    """One closed-loop row (and an open-loop one with ``rate``) against ``host:port``."""
    before = sum(process_tree_cpu(pid) for pid in pids)
    row = run_worker(["--worker", "closed", "--host", host, "--port", str(port), "--sessions", str(sessions), "--duration", str(duration)])
    after = sum(process_tree_cpu(pid) for pid in pids)
    if row["calls"]:
        row["cpu_us_per_call"] = round((after - before) / row["calls"] * 1e6, 1)
    if rate is not None:
        row["open_loop"] = run_worker(
            ["--worker", "rate", "--host", host, "--port", str(port), "--sessions", str(min(sessions, 200)),
             "--duration", str(duration), "--rate", str(rate)]
        )
    return row


def run_serve(folder: Path, workers: int | None, sessions: list[int], duration: float, rate: float | None) -> dict[int, Any]:
    serve_args = ["--workers", str(workers)] if workers is not None else []
    files = write_config(folder, "raw")
    proc, url = start_gateway(folder, "raw", env_extra=dict(ENV), files=files, serve_args=serve_args)
    try:
        host, port = url.removeprefix("http://").rsplit(":", 1)
        return {n: measure(host, int(port), n, duration, rate, [proc.pid]) for n in sessions}
    finally:
        stop_gateway(proc)


def run_replicas(folder: Path, sessions: list[int], duration: float, rate: float | None) -> dict[int, Any] | None:
    try:
        from tests.cluster import Cluster, new_session_key
        from tests.nginx_server import NginxUnavailable, find_nginx
    except ImportError:
        return None
    if find_nginx() is None:
        return None
    config, rules = write_config(folder, "raw")
    env = {**ENV, "GATEWAY_SESSION_KEY": new_session_key(), "GATEWAY_INIT_STRATEGY": "eager"}
    try:
        cluster = Cluster.start(folder / "cluster", config=config, rules=rules, env=env, nginx_workers=1)
    except NginxUnavailable:
        return None
    try:
        cluster.wait_ready()
        assert cluster.nginx is not None
        pids = [replica.process.pid for replica in cluster.replicas] + [cluster.nginx.process.pid]
        return {n: measure("127.0.0.1", cluster.nginx.port, n, duration, rate, pids) for n in sessions}
    finally:
        cluster.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, nargs="+", default=[100, 1000], help="session counts (default 100 1000)")
    parser.add_argument("--workers", type=int, nargs="*", default=[2, 4], help="worker counts besides 1 (default 2 4)")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds of load per row (default 8)")
    parser.add_argument("--rate", type=float, help="also offer calls at this fixed rate per second (open loop)")
    parser.add_argument("--no-nginx", action="store_true", help="leave out the three replicas behind nginx")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--worker", choices=("closed", "rate"), help=argparse.SUPPRESS)
    parser.add_argument("--host", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker == "closed":
        from http_load import load_http

        print(json.dumps(load_http(args.host, args.port, args.sessions[0], args.duration)))
        return
    if args.worker == "rate":
        print(json.dumps(load_rate(args.host, args.port, args.sessions[0], args.rate, args.duration)))
        return
    results: dict[str, Any] = {"cores": os.cpu_count(), "duration": args.duration, "setups": {}}
    with tempfile.TemporaryDirectory(prefix="lockgate-scale-") as tmp:
        setups: list[tuple[str, int | None]] = [("1 process", None), *((f"{n} workers", n) for n in args.workers)]
        for label, workers in setups:
            folder = Path(tmp) / label.replace(" ", "-")
            folder.mkdir()
            results["setups"][label] = run_serve(folder, workers, args.sessions, args.duration, args.rate)
        if not args.no_nginx:
            folder = Path(tmp) / "replicas"
            folder.mkdir()
            replicas = run_replicas(folder, args.sessions, args.duration, args.rate)
            if replicas is not None:
                results["setups"]["3 replicas + nginx"] = replicas
    base = results["setups"]["1 process"]
    for rows in results["setups"].values():
        for n, row in rows.items():
            single = base[n]["calls_per_second"]
            row["ratio"] = round(row["calls_per_second"] / single, 2) if single else None
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"{results['cores']} cores, {args.duration:g} s per row, raw echo downstream, closed loop")
    print(f"{'setup':<20} {'sessions':>8} {'calls/s':>9} {'ratio':>6} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} {'CPU µs/call':>12}")
    for label, rows in results["setups"].items():
        for n, row in rows.items():
            print(
                f"{label:<20} {n:>8} {row['calls_per_second']:>9.1f} {row['ratio']:>6} {row['p50_ms']:>8.2f} "
                f"{row['p99_ms']:>8.2f} {row['errors']:>7} {row.get('cpu_us_per_call', ''):>12}"
            )
    if args.rate is not None:
        print(f"\nopen loop at {args.rate:g} calls/s offered (up to 200 sessions)")
        print(f"{'setup':<20} {'sessions':>8} {'calls/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
        for label, rows in results["setups"].items():
            for n, row in rows.items():
                o = row["open_loop"]
                print(f"{label:<20} {min(n, 200):>8} {o['calls_per_second']:>9.1f} {o['p50_ms']:>8.2f} {o['p99_ms']:>8.2f} {o['errors']:>7}")


if __name__ == "__main__":
    main()
