"""Does Lockgate's memory stay flat over many calls?

``lockgate serve --transport http`` starts with the raw echo server behind
it (``raw_echo_server.py``, eager start), as in ``http_load.py``. This
script opens ``--sessions`` keep-alive sessions once, then loops
``execute_tool`` echo on all of them (a closed loop, plain sockets) for
``--calls`` calls in all, in phases of ``--phase`` calls. After each phase
it reads the gateway's resident set size from ``/proc/PID/statm`` (Linux).
The first ``--warmup`` calls warm the gateway up (caches, pools, the
allocator's arenas); the drift is the RSS at the end against the RSS after
the warm-up, in per cent. The goal is under 5 %.

    python bench/memory_drift.py [--calls 100000] [--warmup 10000] [--phase 10000] [--sessions 20] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from http_load import TEXT, http_request, open_session, start_gateway, stop_gateway  # noqa: E402

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes(pid: int) -> int:
    """The resident set size of process ``pid``."""
    with open(f"/proc/{pid}/statm") as statm:
        return int(statm.read().split()[1]) * PAGE


class Loop:
    """``sessions`` keep-alive connections, each a closed loop of execute_tool echo calls."""

    def __init__(self, host: str, port: int, sessions: int) -> None:
        call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "execute_tool", "arguments": {"agent_id": "bench", "server": "echo", "tool": "echo", "args": {"text": TEXT}}}}
        body = json.dumps(call, separators=(",", ":")).encode()
        self.selector = selectors.DefaultSelector()
        self.state: dict[socket.socket, list[Any]] = {}
        for _ in range(sessions):
            sock, session = open_session(host, port)
            sock.setblocking(False)
            self.state[sock] = [http_request(host, port, body, session), b""]
            self.selector.register(sock, selectors.EVENT_READ)
        self.errors = 0

    def run(self, calls: int) -> None:
        """Make ``calls`` calls (every connection busy until the last ones)."""
        sent = 0
        for sock, st in self.state.items():
            if sent < calls:
                sock.sendall(st[0])
                sent += 1
        done = 0
        expect = TEXT.encode()
        while done < calls:
            for key, _ in self.selector.select(timeout=30):
                sock = key.fileobj  # type: ignore[assignment]
                st = self.state[sock]
                chunk = sock.recv(65536)
                if not chunk:
                    raise SystemExit("the gateway closed a connection")
                st[1] += chunk
                head_end = st[1].find(b"\r\n\r\n")
                if head_end < 0:
                    continue
                head = st[1][:head_end].lower()
                marker = head.find(b"content-length:")
                length = int(head[marker + 15 :].split(b"\r\n", 1)[0]) if marker >= 0 else 0
                if len(st[1]) < head_end + 4 + length:
                    continue
                response, st[1] = st[1][: head_end + 4 + length], st[1][head_end + 4 + length :]
                done += 1
                if not (response.startswith(b"HTTP/1.1 200") and expect in response):
                    self.errors += 1
                if sent < calls:
                    sock.sendall(st[0])
                    sent += 1

    def close(self) -> None:
        for sock in self.state:
            sock.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--warmup", type=int, default=10_000)
    parser.add_argument("--phase", type=int, default=10_000)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    samples: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="lockgate-memory-") as tmp:
        proc, url = start_gateway(Path(tmp), "raw")
        try:
            host, port = url.removeprefix("http://").rsplit(":", 1)
            loop = Loop(host, int(port), args.sessions)
            started = time.perf_counter()
            loop.run(args.warmup)
            samples.append({"calls": args.warmup, "rss_mb": round(rss_bytes(proc.pid) / 2**20, 2)})
            made = 0
            while made < args.calls:
                step = min(args.phase, args.calls - made)
                loop.run(step)
                made += step
                samples.append({"calls": args.warmup + made, "rss_mb": round(rss_bytes(proc.pid) / 2**20, 2)})
            elapsed = time.perf_counter() - started
            loop.close()
        finally:
            stop_gateway(proc)
    first, last = samples[0]["rss_mb"], samples[-1]["rss_mb"]
    report = {
        "calls": args.calls, "warmup": args.warmup, "sessions": args.sessions, "errors": loop.errors,
        "seconds": round(elapsed, 1), "samples": samples,
        "rss_after_warmup_mb": first, "rss_end_mb": last, "drift_percent": round((last - first) / first * 100, 2),
        "max_drift_percent": round((max(s["rss_mb"] for s in samples) - first) / first * 100, 2),
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"{args.calls} calls after {args.warmup} warm-up calls, {args.sessions} sessions, {report['seconds']} s, {loop.errors} errors")
    print("  ".join(f"{s['calls']}: {s['rss_mb']} MB" for s in samples))
    print(f"RSS after warm-up {first} MB, at the end {last} MB: drift {report['drift_percent']} % (largest {report['max_drift_percent']} %)")


if __name__ == "__main__":
    main()
