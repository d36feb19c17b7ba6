"""`lockgate init` as a real process (the .venv console script), with HOME in a temporary folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from lockgate.shells.clientfiles import claude_desktop_file

#: The console script installed beside the interpreter running the tests (.venv/bin/lockgate).
LOCKGATE = Path(sys.executable).with_name("lockgate")


def lockgate(*args: str, cwd: Path, home: Path, **extra: str) -> subprocess.CompletedProcess[str]:
    """Run the lockgate script with only PATH and HOME (plus ``extra``), so nothing of the real home leaks in."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), **extra}
    return subprocess.run(
        [str(LOCKGATE), *args], cwd=cwd, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60
    )


@pytest.fixture
def home(tmp_path: Path) -> Path:
    (tmp_path / "home").mkdir()
    return tmp_path / "home"


@pytest.fixture
def work(tmp_path: Path) -> Path:
    (tmp_path / "work").mkdir()
    return tmp_path / "work"


def written(folder: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    servers = json.loads((folder / ".mcp.json").read_text())
    rules = json.loads((folder / ".mcp-gateway-rules.json").read_text())
    return servers, rules


def assert_valid(folder: Path, home: Path, **extra: str) -> None:
    """The written files pass `lockgate validate` without a warning."""
    result = lockgate(
        "validate", "--config", str(folder / ".mcp.json"), "--rules", str(folder / ".mcp-gateway-rules.json"),
        cwd=folder, home=home, **extra,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("valid: ") and result.stdout.endswith(", 0 warnings\n")


def test_without_a_client_config_writes_an_example(work: Path, home: Path) -> None:
    result = lockgate("init", cwd=work, home=home)
    assert result.returncode == 0, result.stderr
    servers, rules = written(work)
    assert list(servers["mcpServers"]) == ["files"]
    files = servers["mcpServers"]["files"]
    assert files["command"] == "npx" and files["args"][-1] == str(work) and files["description"]
    default = rules["agents"]["default"]
    assert default["allow"]["servers"] == ["files"]
    assert {"get_*", "list_*", "read_*", "search_*"} <= set(default["allow"]["tools"]["files"])
    assert rules["agents"]["restricted"]["deny"]["tools"]["files"]
    assert rules["defaults"] == {"deny_on_missing_agent": False}
    assert "No client configuration found" in result.stdout
    assert "Valid: 1 server, 2 agents." in result.stdout
    assert f"lockgate validate --config {work}/.mcp.json --rules {work}/.mcp-gateway-rules.json" in result.stdout
    assert "lockgate client-config claude-desktop" in result.stdout
    assert_valid(work, home)


def test_into_a_new_folder(tmp_path: Path, home: Path) -> None:
    result = lockgate("init", "gateway/conf", cwd=tmp_path, home=home)
    assert result.returncode == 0, result.stderr
    assert_valid(tmp_path / "gateway" / "conf", home)


def client_files(tmp_path: Path, home: Path) -> dict[str, tuple[Path, Any]]:
    """One client file of each format, by client, with the servers each should import."""
    project = tmp_path / "project"
    lockgate_entry = {"command": "/opt/venv/bin/lockgate", "args": ["serve", "--config", "/x/.mcp.json"]}
    return {
        "claude-desktop": (
            home / "claude_desktop_config.json",
            {
                "mcpServers": {
                    "fetch": {"command": "uvx", "args": ["mcp-server-fetch"]},
                    "gateway": lockgate_entry,
                },
                "globalShortcut": "Ctrl+Space",
            },
        ),
        "claude-code": (
            project / ".mcp.json",
            {
                "mcpServers": {
                    "git": {"type": "stdio", "command": "uvx", "args": ["mcp-server-git"], "env": {"TOKEN": "${TOKEN:-none}"}},
                    "docs": {"type": "http", "url": "https://docs.example.com/mcp", "headers": {"X-Key": "k"}},
                    "self": {"command": "uvx", "args": ["lockgate", "serve"]},
                }
            },
        ),
        "claude-code-user": (
            home / ".claude.json",
            {
                "numStartups": 7,
                "mcpServers": {"time": {"command": "uvx", "args": ["mcp-server-time"]}},
                "projects": {
                    str(project): {"mcpServers": {"time": {"command": "npx", "args": ["time-server"]}}},
                    "/elsewhere": {"allowedTools": []},
                },
            },
        ),
        "cursor": (
            project / ".cursor" / "mcp.json",
            {
                "mcpServers": {
                    "db": {"command": "npx", "args": ["db-mcp", "${workspaceFolder}/db.sqlite"], "env": {"KEY": "${env:DB_KEY}"}},
                    "web": {"url": "https://web.example.com/mcp"},
                    "lockgate": {"url": "http://127.0.0.1:8000/mcp"},
                }
            },
        ),
        "vscode": (
            project / ".vscode" / "mcp.json",
            {
                "inputs": [],
                "servers": {
                    "memory": {"type": "stdio", "command": "npx", "args": ["-y", "@modelcontextprotocol/server-memory"], "envFile": ".env"},
                    "remote": {"type": "http", "url": "https://remote.example.com/mcp"},
                    "legacy": {"type": "sse", "url": "https://legacy.example.com/sse"},
                    "off": {"command": "npx", "disabled": True},
                },
            },
        ),
    }


EXPECTED_SERVERS = {
    "claude-desktop": {"fetch": {"command": "uvx", "args": ["mcp-server-fetch"]}},
    "claude-code": {
        "git": {"type": "stdio", "command": "uvx", "args": ["mcp-server-git"], "env": {"TOKEN": "${TOKEN:-none}"}, "cwd": "{project}"},
        "docs": {"type": "http", "url": "https://docs.example.com/mcp", "headers": {"X-Key": "k"}},
    },
    "claude-code-user": {
        "time": {"command": "uvx", "args": ["mcp-server-time"]},
        "time-2": {"command": "npx", "args": ["time-server"], "cwd": "{project}"},
    },
    "cursor": {
        "db": {"command": "npx", "args": ["db-mcp", "{project}/db.sqlite"], "env": {"KEY": "${DB_KEY}"}, "cwd": "{project}"},
        "web": {"url": "https://web.example.com/mcp"},
    },
    "vscode": {
        "memory": {"type": "stdio", "command": "npx", "args": ["-y", "@modelcontextprotocol/server-memory"], "cwd": "{project}"},
        "remote": {"type": "http", "url": "https://remote.example.com/mcp"},
    },
}

EXPECTED_NOTES = {
    "claude-desktop": ["skipped gateway: it is Lockgate itself"],
    "claude-code": ["skipped self: it is Lockgate itself"],
    "claude-code-user": ["time (project {project}): renamed time-2, another entry has that name"],
    "cursor": ["skipped lockgate: it is Lockgate itself"],
    "vscode": [
        "memory: left out envFile (not a Lockgate key)",
        "skipped legacy: the SSE transport is not supported (only Streamable HTTP)",
        "skipped off: disabled in the client",
    ],
}


@pytest.mark.parametrize("client", sorted(EXPECTED_SERVERS))
def test_from_each_client_format(client: str, tmp_path: Path, work: Path, home: Path) -> None:
    path, content = client_files(tmp_path, home)[client]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content))
    project = str(tmp_path / "project")
    result = lockgate("init", "--from", str(path), cwd=work, home=home)
    assert result.returncode == 0, result.stderr
    servers, rules = written(work)
    expected = json.loads(json.dumps(EXPECTED_SERVERS[client]).replace("{project}", project))
    assert servers == {"mcpServers": expected}
    assert rules["agents"]["default"]["allow"]["servers"] == list(expected)
    assert list(rules["agents"]["default"]["allow"]["tools"]) == list(expected)
    assert f"Imported {len(expected)} server" in result.stdout and str(path) in result.stdout
    for note in EXPECTED_NOTES[client]:
        assert f"  {note.replace('{project}', project)}\n" in result.stdout
    assert "then remove the imported servers from" in result.stdout
    assert_valid(work, home, DB_KEY="secret")


def test_finds_the_first_client_config_with_servers(tmp_path: Path, work: Path, home: Path) -> None:
    # An empty project file is passed over; Claude Desktop's file is the next with servers.
    (work / ".cursor").mkdir()
    (work / ".cursor" / "mcp.json").write_text('{"mcpServers": {}}')
    desktop = Path(claude_desktop_file(str(home), {}))
    desktop.parent.mkdir(parents=True)
    desktop.write_text(json.dumps({"mcpServers": {
        "fetch": {"command": "uvx", "args": ["mcp-server-fetch"]},
        "lockgate": {"command": "lockgate", "args": ["serve"]},
    }}))
    (home / ".claude.json").write_text(json.dumps({"mcpServers": {"later": {"command": "x"}}}))
    result = lockgate("init", "out", cwd=work, home=home)
    assert result.returncode == 0, result.stderr
    servers, _ = written(work / "out")
    assert servers == {"mcpServers": {"fetch": {"command": "uvx", "args": ["mcp-server-fetch"]}}}
    assert f"Imported 1 server from Claude Desktop: {desktop}" in result.stdout
    assert "skipped lockgate: it is Lockgate itself" in result.stdout
    assert_valid(work / "out", home)
    # --no-import writes the example whatever is found.
    assert lockgate("init", "plain", "--no-import", cwd=work, home=home).returncode == 0
    assert list(written(work / "plain")[0]["mcpServers"]) == ["files"]


def test_refuses_to_overwrite_without_force(work: Path, home: Path) -> None:
    (work / ".mcp.json").write_text('{"mcpServers": {"mine": {"command": "x"}}}')
    result = lockgate("init", cwd=work, home=home)
    assert result.returncode == 1
    assert f"lockgate: error: {work}/.mcp.json exists; nothing was written (--force overwrites)" in result.stderr
    assert (work / ".mcp.json").read_text() == '{"mcpServers": {"mine": {"command": "x"}}}'
    assert not (work / ".mcp-gateway-rules.json").exists()
    (work / ".mcp.json").unlink()
    assert lockgate("init", cwd=work, home=home).returncode == 0
    (work / ".mcp-gateway-rules.json").write_text("{}")
    again = lockgate("init", cwd=work, home=home)
    assert again.returncode == 1 and ".mcp-gateway-rules.json exists" in again.stderr
    assert (work / ".mcp-gateway-rules.json").read_text() == "{}"
    forced = lockgate("init", "--force", cwd=work, home=home)
    assert forced.returncode == 0, forced.stderr
    assert_valid(work, home)


def test_from_a_bad_file(work: Path, home: Path) -> None:
    (work / "broken.json").write_text('{"mcpServers": {')
    result = lockgate("init", "out", "--from", "broken.json", cwd=work, home=home)
    assert result.returncode == 2
    assert result.stderr.startswith("lockgate: error: broken.json: not valid JSON (")
    assert not (work / "out").exists()
    missing = lockgate("init", "out", "--from", "nope.json", cwd=work, home=home)
    assert missing.returncode == 2 and "cannot read nope.json" in missing.stderr
    (work / "other.json").write_text('{"servers": []}')
    shapeless = lockgate("init", "out", "--from", "other.json", cwd=work, home=home)
    assert shapeless.returncode == 2 and "expected an object with mcpServers or servers" in shapeless.stderr


def test_from_the_file_it_would_write(work: Path, home: Path) -> None:
    (work / ".mcp.json").write_text('{"mcpServers": {"mine": {"command": "x"}}}')
    result = lockgate("init", "--force", "--from", ".mcp.json", cwd=work, home=home)
    assert result.returncode == 2
    assert "is both the client file to import and the servers file to write" in result.stderr
    assert (work / ".mcp.json").read_text() == '{"mcpServers": {"mine": {"command": "x"}}}'
