"""How many tool calls per second does Lockgate carry over Streamable HTTP, and how fast?

One run, up to two modes: the downstream is the raw JSON-lines echo server
(``raw_echo_server.py``: shows the gateway's own cost) and then the SDK echo
server (``echo_server.py``). In each mode:

1. ``lockgate serve --transport http --port 0`` starts with that downstream
   (eager start; the run waits for ``/ready``).
2. A load generator in a separate process opens N sessions (default 100),
   each on its own keep-alive connection: ``initialize``, then
   ``execute_tool`` echo in a closed loop (the next call leaves as soon as the
   previous answer is in) for a bounded time. It is cheap on purpose: plain
   non-blocking sockets, one ``selectors`` loop, request bytes built once.
3. The direct figure, in the same run: the same generator drives the same
   downstream script over its own stdin/stdout with N calls in flight at
   once (the way the gateway talks to it), for the same time.

Reported per mode and side: calls/s, p50/p95/p99 latency in milliseconds and
errors; for the gateway also its CPU time per call in microseconds (user +
system, read from ``/proc`` on Linux), which moves far less than the
throughput when other programs share the machine. ``--json`` prints one JSON
object instead.

    python bench/http_load.py [--sessions 100] [--duration 10] [--mode raw|sdk|both] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SERVERS = {"raw": HERE / "raw_echo_server.py", "sdk": HERE / "echo_server.py"}
TEXT = "hello, lockgate"


# -- the load generator (runs in its own process) --------------------------------------


def percentiles(latencies: list[float]) -> dict[str, float]:
    if not latencies:
        return {"p50_ms": 0.0, "p95_ms": 0.0, "p99_ms": 0.0}
    ordered = sorted(latencies)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 3)

    return {"p50_ms": at(0.50), "p95_ms": at(0.95), "p99_ms": at(0.99)}


def summary(latencies: list[float], errors: int, elapsed: float) -> dict[str, Any]:
    return {
        "calls": len(latencies),
        "errors": errors,
        "seconds": round(elapsed, 3),
        "calls_per_second": round(len(latencies) / elapsed, 1) if elapsed else 0.0,
        **percentiles(latencies),
    }


def http_request(host: str, port: int, body: bytes, session: str | None, credential: str | None = None) -> bytes:
    lines = [
        b"POST /mcp HTTP/1.1",
        b"Host: %s:%d" % (host.encode(), port),
        b"Accept: application/json, text/event-stream",
        b"Content-Type: application/json",
        b"Content-Length: %d" % len(body),
    ]
    if session is not None:
        lines += [b"Mcp-Session-Id: " + session.encode(), b"Mcp-Protocol-Version: 2025-11-25"]
    if credential is not None:
        lines.append(b"Authorization: Bearer " + credential.encode())
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One whole HTTP response with a Content-Length, blocking (set-up only)."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, rest = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        rest += sock.recv(65536)
    return int(status_line.split()[1]), headers, rest[:length]


def open_session(host: str, port: int, credential: str | None = None) -> tuple[socket.socket, str]:
    sock = socket.create_connection((host, port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    init = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "http_load", "version": "1"}}}
    sock.sendall(http_request(host, port, json.dumps(init).encode(), None, credential))
    status, headers, _ = read_response(sock)
    if status != 200:
        raise SystemExit(f"initialize failed with HTTP {status}")
    session = headers["mcp-session-id"]
    sock.sendall(http_request(host, port, b'{"jsonrpc":"2.0","method":"notifications/initialized"}', session, credential))
    read_response(sock)
    return sock, session


def load_http(host: str, port: int, sessions: int, duration: float, credential: str | None = None) -> dict[str, Any]:
    """N keep-alive connections, each a closed loop of execute_tool echo calls."""
    call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "execute_tool", "arguments": {"agent_id": "bench", "server": "echo", "tool": "echo", "args": {"text": TEXT}}}}
    body = json.dumps(call, separators=(",", ":")).encode()
    selector = selectors.DefaultSelector()
    state: dict[socket.socket, list[Any]] = {}
    for _ in range(sessions):
        sock, session = open_session(host, port, credential)
        sock.setblocking(False)
        state[sock] = [http_request(host, port, body, session, credential), b"", 0.0]
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
        for key, _ in selector.select(timeout=5):
            sock = key.fileobj  # type: ignore[assignment]
            st = state[sock]
            chunk = sock.recv(65536)
            if not chunk:
                raise SystemExit("the gateway closed a connection")
            st[1] += chunk
            head_end = st[1].find(b"\r\n\r\n")
            if head_end < 0:
                continue
            match = re.search(rb"(?i)content-length:\s*(\d+)", st[1][:head_end])
            length = int(match.group(1)) if match else 0
            if len(st[1]) < head_end + 4 + length:
                continue
            now = time.perf_counter()
            response, st[1] = st[1][: head_end + 4 + length], st[1][head_end + 4 + length :]
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
    return summary(latencies, errors, elapsed)


def load_stdio(script: str, sessions: int, duration: float) -> dict[str, Any]:
    """The downstream alone over its stdin/stdout, with ``sessions`` calls in flight at once."""
    proc = subprocess.Popen([sys.executable, script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdin is not None and proc.stdout is not None
    out = proc.stdout

    def send(message: dict[str, Any]) -> None:
        proc.stdin.write(json.dumps(message, separators=(",", ":")).encode() + b"\n")  # type: ignore[union-attr]
        proc.stdin.flush()  # type: ignore[union-attr]

    send({"jsonrpc": "2.0", "id": "init", "method": "initialize", "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "http_load", "version": "1"}}})
    while b'"init"' not in out.readline():
        pass
    send({"jsonrpc": "2.0", "method": "notifications/initialized"})
    sent: dict[int, float] = {}
    next_id = 1
    latencies: list[float] = []
    errors = 0

    def call() -> None:
        nonlocal next_id
        sent[next_id] = time.perf_counter()
        send({"jsonrpc": "2.0", "id": next_id, "method": "tools/call", "params": {"name": "echo", "arguments": {"text": TEXT}}})
        next_id += 1

    start = time.perf_counter()
    deadline = start + duration
    for _ in range(sessions):
        call()
    while sent:
        line = out.readline()
        if not line:
            break
        now = time.perf_counter()
        try:
            message = json.loads(line)
        except ValueError:
            continue
        started = sent.pop(message.get("id"), None) if isinstance(message.get("id"), int) else None
        if started is None:
            continue
        if "result" in message:
            latencies.append(now - started)
        else:
            errors += 1
        if now < deadline:
            call()
    elapsed = time.perf_counter() - start
    proc.stdin.close()  # type: ignore[union-attr]
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    return summary(latencies, errors, elapsed)


# -- the orchestrator -------------------------------------------------------------------


def write_config(directory: Path, mode: str) -> tuple[Path, Path]:
    servers = {"mcpServers": {"echo": {"command": sys.executable, "args": [str(SERVERS[mode])], "description": f"echo ({mode})"}}}
    allow_all: dict[str, Any] = {"allow": {"servers": ["*"], "tools": {"echo": ["*"]}}}
    rules = {"agents": {"bench": allow_all, "default": allow_all}, "defaults": {"deny_on_missing_agent": False}}
    (directory / ".mcp.json").write_text(json.dumps(servers))
    (directory / ".mcp-gateway-rules.json").write_text(json.dumps(rules))
    return directory / ".mcp.json", directory / ".mcp-gateway-rules.json"


def start_gateway(
    directory: Path,
    mode: str,
    env_extra: dict[str, str] | None = None,
    host: str | None = None,
    files: tuple[Path, Path] | None = None,
    serve_args: list[str] | None = None,
    python: str = sys.executable,
) -> tuple[subprocess.Popen[bytes], str]:
    """Start ``lockgate serve --transport http`` on a free port and wait until ``/ready``; return it and its base URL.

    ``files``: the servers and rules files to serve, instead of the echo setup of ``mode``;
    ``serve_args``: more arguments for ``serve`` (such as ``--workers 2``);
    ``python``: the interpreter to run it with (another checkout's virtual environment, to compare).
    """
    config, rules = files if files is not None else write_config(directory, mode)
    env = {**os.environ, "GATEWAY_INIT_STRATEGY": "eager", "GATEWAY_AUDIT_LOG": str(directory / "audit.jsonl"), **(env_extra or {})}
    command = [python, "-m", "lockgate.shells", "serve", "--config", str(config), "--rules", str(rules), "--transport", "http", "--port", "0"]
    if host is not None:
        command += ["--host", host]
    command += serve_args or []
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
    # Keep reading its stderr so it never blocks on a full pipe.
    threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()  # type: ignore[union-attr]
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/ready", timeout=5) as response:
                if response.status == 200:
                    return proc, url
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("the gateway did not become ready")


def stop_gateway(proc: subprocess.Popen[Any]) -> None:
    """SIGTERM, then SIGKILL after 30 s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of process ``pid`` so far, or ``None`` where ``/proc`` is missing."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    # Fields 14 and 15 of stat(5) (utime, stime), counted after the ")" that ends the name.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_worker(args: list[str]) -> dict[str, Any]:
    result = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"load generator failed: {result.stderr.strip()[-2000:]}")
    return dict(json.loads(result.stdout))


def run_mode(mode: str, sessions: int, duration: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="lockgate-http-load-") as tmp:
        proc, url = start_gateway(Path(tmp), mode)
        try:
            host, port = url.removeprefix("http://").rsplit(":", 1)
            cpu_before = cpu_seconds(proc.pid)
            gateway = run_worker(["--worker", "http", "--host", host, "--port", port, "--sessions", str(sessions), "--duration", str(duration)])
            cpu_after = cpu_seconds(proc.pid)
            if cpu_before is not None and cpu_after is not None and gateway["calls"]:
                # Includes opening the sessions, a small share of a run of seconds.
                gateway["cpu_us_per_call"] = round((cpu_after - cpu_before) / gateway["calls"] * 1e6, 1)
        finally:
            stop_gateway(proc)
    direct = run_worker(["--worker", "stdio", "--script", str(SERVERS[mode]), "--sessions", str(sessions), "--duration", str(duration)])
    return {"gateway": gateway, "direct": direct}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=100, help="concurrent sessions (default 100)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of load per side (default 10)")
    parser.add_argument("--mode", choices=("raw", "sdk", "both"), default="both")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--worker", choices=("http", "stdio"), help=argparse.SUPPRESS)
    parser.add_argument("--host", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--script", help=argparse.SUPPRESS)
    parser.add_argument("--credential", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker == "http":
        print(json.dumps(load_http(args.host, args.port, args.sessions, args.duration, args.credential)))
        return
    if args.worker == "stdio":
        print(json.dumps(load_stdio(args.script, args.sessions, args.duration)))
        return
    modes = ["raw", "sdk"] if args.mode == "both" else [args.mode]
    results = {"sessions": args.sessions, "duration": args.duration, **{m: run_mode(m, args.sessions, args.duration) for m in modes}}
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"{args.sessions} sessions, {args.duration:g} s per side")
    print(f"{'mode':<5} {'side':<8} {'calls/s':>9} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'calls':>8} {'errors':>7} {'CPU µs/call':>12}")
    for mode in modes:
        for side in ("gateway", "direct"):
            r = results[mode][side]
            print(f"{mode:<5} {side:<8} {r['calls_per_second']:>9.1f} {r['p50_ms']:>8.2f} {r['p95_ms']:>8.2f} {r['p99_ms']:>8.2f} {r['calls']:>8} {r['errors']:>7} {r.get('cpu_us_per_call', ''):>12}")


if __name__ == "__main__":
    main()
