"""The ``lockgate`` command as a real process: options, configuration errors, signals."""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from .helpers import pid_exists

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
COMMAND = [sys.executable, "-m", "lockgate.shells"]


#: A state folder no test writes to: commands that look for the default database (the registry's) find none.
EMPTY_STATE = tempfile.mkdtemp(prefix="lockgate-test-state-")
atexit.register(shutil.rmtree, EMPTY_STATE, True)


def clean_env(**extra: str) -> dict[str, str]:
    """The caller's environment without its GATEWAY_* settings, and a state folder of no one's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env["GATEWAY_STATE_DIR"] = EMPTY_STATE
    env.update(extra)
    return env


def run(*args: str, cwd: Path = REPO, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*COMMAND, *args],
        cwd=cwd,
        env=env if env is not None else clean_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_version() -> None:
    result = run("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == "lockgate 0.1.0"


def test_help_documents_every_option() -> None:
    top = run("--help")
    assert top.returncode == 0 and "serve" in top.stdout and "--version" in top.stdout
    serve = run("serve", "--help")
    assert serve.returncode == 0
    for option in ("--config FILE", "--rules FILE", "--debug", "GATEWAY_MCP_CONFIG", "GATEWAY_RULES"):
        assert option in serve.stdout


def test_no_command_is_a_usage_error() -> None:
    result = run()
    assert result.returncode == 2
    assert "a command is required" in result.stderr


def test_missing_configuration_names_what_was_looked_for(tmp_path: Path) -> None:
    result = run("serve", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "lockgate: error: no server configuration found: looked for ./.mcp.json and ./config/.mcp.json "
        "(use --config FILE or set GATEWAY_MCP_CONFIG)"
    ]
    assert result.stdout == ""


def test_missing_named_files(tmp_path: Path) -> None:
    result = run("serve", "--config", "nope.json", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == "lockgate: error: server configuration not found: nope.json (from --config)"
    (tmp_path / ".mcp.json").write_text('{"mcpServers": {}}')
    result = run("serve", cwd=tmp_path, env=clean_env(GATEWAY_RULES="rules.json"))
    assert result.returncode == 2
    assert result.stderr.strip() == "lockgate: error: rules file not found: rules.json (from GATEWAY_RULES)"


def test_configuration_errors_exit_2_without_traceback(tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.mkdir()
    (config / ".mcp.json").write_text(json.dumps({"mcpServers": {"a": {"command": 5}, "b": {"args": "x"}}}))
    (config / ".mcp-gateway-rules.json").write_text(json.dumps({"agents": {"x": {"allow": {"servers": 3}}}}))
    result = run("serve", cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) >= 3
    assert all(line.startswith(("lockgate: error: ", "lockgate: warning: ")) for line in lines)
    assert any("./config/.mcp.json: mcpServers.a" in line for line in lines)
    assert result.stdout == ""


def test_invalid_json_exits_2(tmp_path: Path) -> None:
    (tmp_path / ".mcp.json").write_text("{not json")
    (tmp_path / ".mcp-gateway-rules.json").write_text("{}")
    result = run("serve", cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("lockgate: error: ./.mcp.json")


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_everything_and_exits_0(tmp_path: Path, signum: signal.Signals) -> None:
    env = clean_env(PYTHON=sys.executable, GATEWAY_AUDIT_LOG=str(tmp_path / "audit.jsonl"))
    gateway = subprocess.Popen(
        [*COMMAND, "serve", "--config", "examples/.mcp.json", "--rules", "examples/.mcp-gateway-rules.json"],
        cwd=REPO,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 20
        while len(children := _children(gateway.pid)) < 2:  # eager start: notes and utils
            assert time.monotonic() < deadline, "downstreams did not start"
            assert gateway.poll() is None, gateway.stderr.read() if gateway.stderr else ""
            time.sleep(0.05)
        gateway.send_signal(signum)
        stdout, stderr = gateway.communicate(timeout=15)
    finally:
        if gateway.poll() is None:
            gateway.kill()
            gateway.wait()
    assert gateway.returncode == 0, stderr
    assert stdout == b""  # nothing but MCP on stdout, and no client spoke
    assert b"Traceback" not in stderr
    assert b"serving stdio: 2 servers (notes, utils)" in stderr
    for pid in children:
        assert not pid_exists(pid)
