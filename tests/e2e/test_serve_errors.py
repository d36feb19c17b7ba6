"""``lockgate serve`` says what to change: a servers file that starts itself, a port it cannot listen on, a server that cannot start."""

from __future__ import annotations

import errno
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from lockgate.shells.cli.serve import _cannot_listen
from lockgate.shells.http import CannotListen

from .conftest import processes_mentioning

LOCKGATE = str(Path(sys.executable).with_name("lockgate"))
RULES = {"agents": {"dev": {"allow": {"servers": ["*"]}}}}


def write_files(tmp_path: Path, servers: dict[str, object]) -> tuple[Path, Path]:
    servers_file, rules_file = tmp_path / "servers.json", tmp_path / "rules.json"
    servers_file.write_text(json.dumps({"mcpServers": servers}))
    rules_file.write_text(json.dumps(RULES))
    return servers_file, rules_file


def serve(servers_file: Path, rules_file: Path, *extra: str) -> tuple[int | None, str]:
    """Run a real ``lockgate serve`` for up to 20 s; its exit status (``None``: still serving, then killed) and stderr.

    Its stdin stays open (``communicate`` would close it), so over stdio a
    gateway that started serving would still be running at the end.
    """
    log = servers_file.with_name("stderr.log")
    with open(log, "w") as stderr:
        gateway = subprocess.Popen(
            [sys.executable, "-m", "lockgate.shells", "serve", "--config", str(servers_file), "--rules", str(rules_file), *extra],
            env={
                "PATH": os.environ["PATH"],
                "HOME": os.environ.get("HOME", "/tmp"),
                "GATEWAY_AUDIT_LOG": str(servers_file.with_name("audit.jsonl")),
            },
            cwd=servers_file.parent,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        status: int | None = gateway.wait(timeout=20)
    except subprocess.TimeoutExpired:
        status = None
    finally:
        if gateway.poll() is None:
            gateway.kill()
            gateway.wait()
        assert gateway.stdin is not None
        gateway.stdin.close()
    return status, log.read_text()


def test_a_servers_file_that_starts_this_gateway_on_itself_is_refused_before_anything_starts(tmp_path: Path) -> None:
    servers_file, rules_file = tmp_path / "servers.json", tmp_path / "rules.json"
    me = {"command": LOCKGATE, "args": ["serve", "--config", str(servers_file), "--rules", str(rules_file)]}
    # Eager start (the default) would start "me" at once, and it the next copy, and so on.
    write_files(tmp_path, {"me": me})
    status, stderr = serve(servers_file, rules_file)
    assert status == 2, stderr
    assert stderr.splitlines() == [
        f"lockgate: error: {servers_file}: mcpServers.me: this entry starts Lockgate itself with this same servers "
        "file, which would start itself again without end; remove the entry, or give Lockgate a servers file of its "
        "own (--config)"
    ]
    # No child gateway: none was started, so none is left.
    assert processes_mentioning(str(servers_file)) == []


def test_a_taken_port_names_the_address_and_the_options_that_change_it(tmp_path: Path) -> None:
    servers_file, rules_file = write_files(tmp_path, {})
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        status, stderr = serve(servers_file, rules_file, "--transport", "http", "--host", "127.0.0.1", "--port", str(port))
    assert status == 2, stderr
    assert stderr.splitlines() == [
        f"lockgate: error: cannot listen on 127.0.0.1:{port}: address already in use; choose another port with "
        "--port or GATEWAY_HTTP_PORT (or another address with --host / GATEWAY_HTTP_HOST)"
    ]
    # Nothing claimed to serve a port it never had.
    assert "serving" not in stderr


def test_other_bind_failures_say_their_own_reason() -> None:
    # Built by hand: a test run as root may bind port 80, and this machine's addresses are not known.
    def line(host: str, port: int, error: OSError) -> str:
        return _cannot_listen(CannotListen(host, port, error))

    assert line("127.0.0.1", 80, PermissionError(errno.EACCES, "Permission denied")) == (
        "cannot listen on 127.0.0.1:80: permission denied (a port below 1024 needs privileges); "
        "choose a port of 1024 or more with --port or GATEWAY_HTTP_PORT"
    )
    assert line("192.0.2.1", 8000, OSError(errno.EADDRNOTAVAIL, "Cannot assign requested address")) == (
        "cannot listen on 192.0.2.1:8000: address not available (it is not an address of this machine); "
        "choose another address with --host or GATEWAY_HTTP_HOST"
    )
    assert line("::1", 8000, OSError(errno.EADDRINUSE, "Address already in use")).startswith(
        "cannot listen on [::1]:8000: address already in use; "
    )
    assert line("nosuch.invalid", 8000, socket.gaierror(socket.EAI_NONAME, "Name or service not known")) == (
        "cannot listen on nosuch.invalid:8000: cannot resolve 'nosuch.invalid' (Name or service not known); "
        "choose another address with --host or GATEWAY_HTTP_HOST"
    )


def test_a_server_whose_command_does_not_exist_is_named_by_ready_and_logged_ever_more_rarely(tmp_path: Path) -> None:
    utils = str(Path(__file__).resolve().parents[2] / "examples" / "servers" / "utils_server.py")
    servers_file, rules_file = write_files(tmp_path, {
        "ghost": {"command": str(tmp_path / "no-such-server")},
        "utils": {"command": sys.executable, "args": [utils]},
    })
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = tmp_path / "stderr.log"
    with open(log, "w") as stderr:
        gateway = subprocess.Popen(
            [sys.executable, "-m", "lockgate.shells", "serve", "--config", str(servers_file), "--rules", str(rules_file),
             "--transport", "http", "--port", str(port)],
            env={"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), "GATEWAY_LOG_LEVEL": "debug",
                 "GATEWAY_AUDIT_LOG": str(tmp_path / "audit.jsonl")},
            cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr,
        )
    try:
        ready = None
        # Retries come after 0, 0, 0.5, 1, 2 s ...: six failures take about 4 s; give it 30.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and log.read_text().count("server unavailable") < 6:
            time.sleep(0.2)
        ready = httpx.get(f"http://127.0.0.1:{port}/ready", timeout=10)
    finally:
        gateway.terminate()
        assert gateway.wait(timeout=30) == 0
    # Still 200, so a load balancer keeps routing to the servers that work; the body says which one does not and why.
    assert ready.status_code == 200
    body = ready.json()
    assert body["status"] == "degraded"
    assert "ghost" in body["reason"] and "no-such-server" in body["reason"] and "utils" not in body["reason"]
    unavailable = [line for line in log.read_text().splitlines() if "server unavailable" in line and "ghost" in line]
    assert len(unavailable) >= 6
    loud = [number for number, line in enumerate(unavailable, 1) if line.split()[1] == "WARNING"]
    # Said at failures 1, 2, 4, 8, ...: the others are debug.
    assert loud == [n for n in range(1, len(unavailable) + 1) if n & (n - 1) == 0]
    assert all("no-such-server" in line for line in unavailable)
