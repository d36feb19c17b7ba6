"""`lockgate client-config` as a real process: each client's format, --write, and the entry starting the gateway."""

from __future__ import annotations

import json
import sys
import threading
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest

from lockgate.shells.clientfiles import claude_desktop_file

from .test_cli import EXAMPLES
from .test_cli_init import LOCKGATE, lockgate

CLIENTS = ["claude-desktop", "claude-code", "cursor", "vscode"]
URL = "http://127.0.0.1:8123/mcp"


@pytest.fixture
def home(tmp_path: Path) -> Path:
    (tmp_path / "home").mkdir()
    return tmp_path / "home"


@pytest.fixture
def project(tmp_path: Path, home: Path) -> Path:
    """A folder with a configuration from `lockgate init` under config/ (the second default location)."""
    (tmp_path / "project").mkdir()
    result = lockgate("init", "config", "--no-import", cwd=tmp_path / "project", home=home)
    assert result.returncode == 0, result.stderr
    return tmp_path / "project"


def printed(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert result.returncode == 0, result.stderr
    document: dict[str, Any] = json.loads(result.stdout)
    return document


@pytest.mark.parametrize("client", CLIENTS)
def test_stdio_entry_in_each_format(client: str, project: Path, home: Path) -> None:
    document = printed(lockgate("client-config", client, cwd=project, home=home))
    top = "servers" if client == "vscode" else "mcpServers"
    assert list(document) == [top] and list(document[top]) == ["lockgate"]
    config = project / "config"
    expected: dict[str, Any] = {"type": "stdio"} if client == "vscode" else {}
    expected |= {
        "command": str(LOCKGATE),
        "args": ["serve", "--config", f"{config}/.mcp.json", "--rules", f"{config}/.mcp-gateway-rules.json"],
        "env": {"GATEWAY_DEFAULT_AGENT": "default", "GATEWAY_AUDIT_LOG": f"{config}/logs/audit.jsonl"},
    }
    assert document[top]["lockgate"] == expected


def test_flags_name_the_files_agent_and_audit_log(project: Path, home: Path, tmp_path: Path) -> None:
    result = lockgate(
        "client-config", "claude-code", "--config", "config/.mcp.json", "--rules", "config/.mcp-gateway-rules.json",
        "--agent", "restricted", "--audit-log", "audit.jsonl", cwd=project, home=home,
    )
    entry = printed(result)["mcpServers"]["lockgate"]
    assert entry["args"][2] == f"{project}/config/.mcp.json"
    assert entry["env"] == {"GATEWAY_DEFAULT_AGENT": "restricted", "GATEWAY_AUDIT_LOG": f"{project}/audit.jsonl"}
    # The claude CLI line carries the same entry, quoted for a shell.
    line = next(line for line in result.stderr.splitlines() if line.startswith("claude mcp add-json"))
    words = shlex.split(line)
    assert words[:6] == ["claude", "mcp", "add-json", "-s", "project", "lockgate"] and len(words) == 7
    assert json.loads(words[6]) == entry
    assert "-s user" in result.stderr
    # An agent the rules do not define is a warning; an invalid id is a usage error.
    unknown = lockgate("client-config", "cursor", "--agent", "ghost", cwd=project, home=home)
    assert unknown.returncode == 0 and "lockgate: warning:" in unknown.stderr and "ghost" in unknown.stderr
    invalid = lockgate("client-config", "cursor", "--agent", "bad id", cwd=project, home=home)
    assert invalid.returncode == 2 and invalid.stderr.startswith("lockgate: error: --agent:")


def test_without_a_configuration(tmp_path: Path, home: Path) -> None:
    result = lockgate("client-config", "cursor", cwd=tmp_path, home=home)
    assert result.returncode == 2 and result.stdout == ""
    assert "lockgate: error: no server configuration found" in result.stderr


@pytest.mark.parametrize(
    ("client", "expected"),
    [
        ("claude-code", {"mcpServers": {"lockgate": {"type": "http", "url": URL}}}),
        ("cursor", {"mcpServers": {"lockgate": {"url": URL}}}),
        ("vscode", {"servers": {"lockgate": {"type": "http", "url": URL}}}),
    ],
)
def test_http_entry_in_each_format(client: str, expected: dict[str, Any], tmp_path: Path, home: Path) -> None:
    # No configuration is needed here: the gateway runs on its own.
    result = lockgate("client-config", client, "--http", URL, cwd=tmp_path, home=home)
    assert printed(result) == expected
    assert "lockgate serve --transport http --host 127.0.0.1 --port 8123" in result.stderr


def test_claude_desktop_has_no_http_entries(tmp_path: Path, home: Path) -> None:
    result = lockgate("client-config", "claude-desktop", "--http", URL, cwd=tmp_path, home=home)
    assert result.returncode == 2 and result.stdout == ""
    assert "claude_desktop_config.json has no remote (URL) entries" in result.stderr
    bad = lockgate("client-config", "cursor", "--http", "127.0.0.1:8000", cwd=tmp_path, home=home)
    assert bad.returncode == 2 and "is not an http:// or https:// URL" in bad.stderr


def test_write_merges_after_a_backup(project: Path, home: Path) -> None:
    cursor = project / ".cursor" / "mcp.json"
    cursor.parent.mkdir()
    original = json.dumps({
        "mcpServers": {"other": {"command": "npx", "args": ["other"]}, "lockgate": {"command": "old"}},
        "someSetting": {"kept": [1, 2]},
    })
    cursor.write_text(original)
    cursor.chmod(0o600)
    result = lockgate("client-config", "cursor", "--write", cwd=project, home=home)
    assert result.returncode == 0, result.stderr
    assert f"Replaced mcpServers.lockgate in {cursor}" in result.stdout and f"backup: {cursor}.bak" in result.stdout
    merged = json.loads(cursor.read_text())
    assert list(merged) == ["mcpServers", "someSetting"] and merged["someSetting"] == {"kept": [1, 2]}
    assert list(merged["mcpServers"]) == ["other", "lockgate"]
    assert merged["mcpServers"]["other"] == {"command": "npx", "args": ["other"]}
    assert merged["mcpServers"]["lockgate"] == printed(lockgate("client-config", "cursor", cwd=project, home=home))["mcpServers"]["lockgate"]
    assert (project / ".cursor" / "mcp.json.bak").read_text() == original
    assert cursor.stat().st_mode & 0o777 == 0o600
    # A second write keeps the first backup and takes the next free name.
    again = lockgate("client-config", "cursor", "--write", "--http", URL, cwd=project, home=home)
    assert again.returncode == 0 and f"backup: {cursor}.bak.1" in again.stdout
    assert (project / ".cursor" / "mcp.json.bak").read_text() == original
    assert json.loads(cursor.read_text())["mcpServers"]["lockgate"] == {"url": URL}
    assert sorted(p.name for p in cursor.parent.iterdir()) == ["mcp.json", "mcp.json.bak", "mcp.json.bak.1"]


@pytest.mark.parametrize("client", ["vscode", "claude-desktop", "claude-code"])
def test_write_creates_the_client_file(client: str, project: Path, home: Path) -> None:
    result = lockgate("client-config", client, "--write", cwd=project, home=home)
    assert result.returncode == 0, result.stderr
    target = {
        "vscode": project / ".vscode" / "mcp.json",
        "claude-desktop": Path(claude_desktop_file(str(home), {})),
        "claude-code": project / ".mcp.json",
    }[client]
    assert f"Added {'servers' if client == 'vscode' else 'mcpServers'}.lockgate in {target}" in result.stdout
    assert "(a new file)" in result.stdout
    document = json.loads(target.read_text())
    files = ["--config", "config/.mcp.json", "--rules", "config/.mcp-gateway-rules.json"]
    assert document == printed(lockgate("client-config", client, *files, cwd=project, home=home))
    assert not target.with_name(target.name + ".bak").exists()
    if client == "claude-code":
        # ./.mcp.json now comes first in the lookup, and it is the client's file: refused, not used.
        again = lockgate("client-config", client, cwd=project, home=home)
        assert again.returncode == 2 and ".mcp.json lists Lockgate itself, so it is a client's file" in again.stderr


def test_write_to_a_named_file(project: Path, home: Path) -> None:
    target = project / "elsewhere.json"
    target.write_text('{"servers": {"a": {"type": "stdio", "command": "a"}}, "inputs": []}')
    result = lockgate("client-config", "vscode", "--write", "--file", "elsewhere.json", cwd=project, home=home)
    assert result.returncode == 0, result.stderr
    assert json.loads(target.read_text())["servers"]["a"] == {"type": "stdio", "command": "a"}
    assert json.loads(target.read_text())["inputs"] == []


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"mcpServers": {"a": {"command": "a"},}}', "not valid JSON (Expecting property name"),
        ('// comment\n{"mcpServers": {}}', "not valid JSON (Expecting value at line 1 column 1)"),
        ("[1, 2]", "expected a JSON object at the top"),
        ('{"mcpServers": []}', "mcpServers is not an object"),
    ],
)
def test_write_refuses_a_file_that_is_not_a_json_object(content: str, message: str, project: Path, home: Path) -> None:
    target = project / ".mcp.json"
    target.write_text(content)
    # Named, since ./.mcp.json would come first in the lookup of Lockgate's own files.
    files = ["--config", "config/.mcp.json", "--rules", "config/.mcp-gateway-rules.json"]
    result = lockgate("client-config", "claude-code", "--write", *files, cwd=project, home=home)
    assert result.returncode == 2
    assert result.stderr.startswith(f"lockgate: error: {target}: {message}") and "left as it is" in result.stderr
    assert target.read_text() == content
    assert sorted(p.name for p in project.iterdir()) == [".mcp.json", "config"]


def test_write_refuses_lockgates_own_servers_file(tmp_path: Path, home: Path) -> None:
    assert lockgate("init", "--no-import", cwd=tmp_path, home=home).returncode == 0
    before = (tmp_path / ".mcp.json").read_text()
    result = lockgate("client-config", "claude-code", "--write", cwd=tmp_path, home=home)
    assert result.returncode == 2 and "is Lockgate's own servers file" in result.stderr
    assert (tmp_path / ".mcp.json").read_text() == before
    shown = lockgate("client-config", "claude-code", cwd=tmp_path, home=home)
    assert shown.returncode == 0 and "# Not into" in shown.stderr and "# Merge it into" not in shown.stderr


def test_the_printed_entry_starts_the_gateway(tmp_path: Path, home: Path) -> None:
    """Run the entry as a client would: its command, args and env only, from `/`, and initialize."""
    result = lockgate(
        "client-config", "claude-desktop", "--config", str(EXAMPLES / ".mcp.json"),
        "--rules", str(EXAMPLES / ".mcp-gateway-rules.json"), "--audit-log", str(tmp_path / "audit.jsonl"),
        cwd=tmp_path, home=home,
    )
    entry = printed(result)["mcpServers"]["lockgate"]
    initialize = {
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}},
    }
    tools = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}
    echo = {
        "jsonrpc": "2.0", "id": 3, "method": "tools/call",
        "params": {"name": "execute_tool", "arguments": {"agent_id": "researcher", "server": "utils", "tool": "echo", "args": {"text": "from /"}}},
    }
    # From `/`, the example servers' scripts are found all the same: relative
    # paths in a servers file resolve against its folder. PYTHON names an
    # interpreter with the MCP SDK, which /usr/bin's may not have.
    gateway = subprocess.Popen(
        [entry["command"], *entry["args"]],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable, **entry["env"]},
        cwd="/",
        text=True,
    )
    assert gateway.stdin is not None and gateway.stdout is not None
    watchdog = threading.Timer(60, gateway.kill)  # a gateway that never answers fails the test, not CI
    watchdog.start()
    answers = []
    for message in (initialize, tools, echo):
        # One at a time, stdin kept open: end of input would end the session.
        gateway.stdin.write(json.dumps(message) + "\n")
        gateway.stdin.flush()
        answers.append(json.loads(gateway.stdout.readline()))
    _, stderr = gateway.communicate(timeout=60)
    watchdog.cancel()
    assert gateway.returncode == 0, stderr
    assert answers[0]["id"] == 1 and answers[0]["result"]["serverInfo"]["name"] == "lockgate"
    assert answers[0]["result"]["protocolVersion"] == "2025-06-18"
    assert {tool["name"] for tool in answers[1]["result"]["tools"]} == {"list_servers", "search_tools", "get_server_tools", "execute_tool"}
    assert answers[2]["id"] == 3 and "from /" in json.dumps(answers[2]["result"]), answers[2]
    assert f"audit log {tmp_path}/audit.jsonl" in stderr
