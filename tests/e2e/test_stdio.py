"""End to end over stdio: the SDK Client -> `lockgate serve` -> real MCP servers.

Every test runs real processes and ends with none of them left behind (see
the autouse fixture in conftest.py).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import trio
from mcp import MCPError

from .conftest import Setup, processes_mentioning, structured



async def test_list_get_execute_and_a_denial_with_an_audit_trail(setup: Setup) -> None:
    async with setup.client() as client:
        tools = await client.list_tools()
        assert [t.name for t in tools.tools] == ["list_servers", "search_tools", "get_server_tools", "execute_tool"]

        servers = await client.call_tool("list_servers", {"agent_id": "dev"})
        assert structured(servers) == {"result": [{"name": "testing", "description": "testing for tests"}]}

        listed = structured(await client.call_tool("get_server_tools", {"agent_id": "dev", "server": "testing"}))
        names = [t["name"] for t in listed["tools"]]
        assert "echo" in names and "drop_everything" not in names
        assert listed["returned"] == listed["total_available"] == len(names)

        result = await client.call_tool("execute_tool", {"agent_id": "dev", "server": "testing", "tool": "echo", "args": {"text": "hello"}})
        assert result.is_error is False
        assert result.structured_content == {"result": "hello"}
        assert result.content[0].text == "hello"

        with pytest.raises(MCPError) as denied:
            await client.call_tool("execute_tool", {"agent_id": "dev", "server": "testing", "tool": "drop_everything", "args": {}})
        assert denied.value.code == -32000
        assert denied.value.data == {"code": "DENIED_BY_POLICY", "rule": "agents.dev.deny.tools.testing[0]"}

    records = setup.audit_records()
    assert [(r["operation"], r["decision"]) for r in records] == [
        ("list_servers", "ALLOW"),
        ("get_server_tools", "ALLOW"),
        ("execute_tool", "ALLOW"),
        ("execute_tool", "DENY"),
    ]
    assert all(r["time"].endswith("Z") and r["agent"] == "dev" for r in records)
    assert "hello" not in setup.audit.read_text()


async def test_a_crash_mid_call_fails_at_once_and_the_next_call_restarts_it(setup: Setup) -> None:
    async with setup.client() as client:
        with trio.fail_after(10):
            with pytest.raises(MCPError) as crashed:
                await client.call_tool("execute_tool", {"agent_id": "dev", "server": "testing", "tool": "crash", "args": {}})
        assert crashed.value.code == -32001
        assert crashed.value.data["reason"] == "exited with code 1"
        result = await client.call_tool("execute_tool", {"agent_id": "dev", "server": "testing", "tool": "echo", "args": {"text": "back"}})
        assert result.structured_content == {"result": "back"}


async def test_a_hung_call_times_out_while_other_calls_keep_working(setup: Setup) -> None:
    async with setup.client() as client:
        # Start the server first, so that its start-up does not eat into the hang's timeout.
        await client.call_tool("execute_tool", {"agent_id": "dev", "server": "testing", "tool": "echo", "args": {"text": "up"}})
        outcome: dict[str, object] = {}
        # Start the server first, so the hang's timeout covers the call alone.
        await client.call_tool("execute_tool", {"agent_id": "dev", "server": "testing", "tool": "echo", "args": {"text": "up"}})

        async def hang() -> None:
            try:
                await client.call_tool("execute_tool", {"agent_id": "dev", "server": "testing", "tool": "hang", "args": {}, "timeout_ms": 4000})
            except MCPError as exc:
                outcome["hang"] = exc

        async with trio.open_nursery() as nursery:
            nursery.start_soon(hang)
            await trio.sleep(0.2)
            for i in range(5):
                r = await client.call_tool("execute_tool", {"agent_id": "dev", "server": "testing", "tool": "echo", "args": {"text": str(i)}})
                assert r.structured_content == {"result": str(i)}
            assert "hang" not in outcome  # the echoes did not wait for it
        error = outcome["hang"]
        assert isinstance(error, MCPError) and error.code == -32004 and error.data["code"] == "TIMEOUT"


async def test_a_server_that_writes_garbage_to_stdout_still_works(setup: Setup) -> None:
    setup.add("noisy", str(Path(__file__).parent / "servers" / "testing_server.py"), "--garbage", "--marker", str(setup.tmp))
    async with setup.client() as client:
        r = await client.call_tool("execute_tool", {"agent_id": "dev", "server": "noisy", "tool": "echo", "args": {"text": "ok"}})
        assert r.structured_content == {"result": "ok"}


@pytest.mark.parametrize(
    ("command", "args", "reason"),
    [
        ("no-such-command-lockgate", [], "command not found: no-such-command-lockgate"),
        (sys.executable, [str(Path(__file__).parent / "servers" / "testing_server.py"), "--exit-at-start"], "exited with code 3"),
    ],
)
async def test_a_server_that_cannot_start_is_unavailable_with_the_reason(setup: Setup, command: str, args: list[str], reason: str) -> None:
    setup.add("broken", *args, command=command)
    async with setup.client() as client:
        with pytest.raises(MCPError) as exc:
            await client.call_tool("get_server_tools", {"agent_id": "dev", "server": "broken"})
        assert exc.value.code == -32001
        assert exc.value.data["reason"] == reason
        assert "Traceback" not in exc.value.message
        # The others keep working.
        r = await client.call_tool("execute_tool", {"agent_id": "dev", "server": "testing", "tool": "echo", "args": {"text": "x"}})
        assert r.is_error is False


async def test_ten_megabyte_argument_and_result_pass_through_intact(setup: Setup) -> None:
    text = "abcdefghij" * 1_000_000
    async with setup.client() as client:
        r = await client.call_tool("execute_tool", {"agent_id": "dev", "server": "testing", "tool": "length", "args": {"text": text}})
        assert r.structured_content == {"result": 10_000_000}
        r = await client.call_tool("execute_tool", {"agent_id": "dev", "server": "testing", "tool": "big", "args": {"size": 10_000_000}})
        assert r.structured_content == {"result": "x" * 10_000_000}


async def test_reference_servers_from_pypi(setup: Setup, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    setup.add("time", "-m", "mcp_server_time", "--local-timezone", "UTC")
    setup.add("git", "-m", "mcp_server_git", "--repository", str(repo))
    async with setup.client() as client:
        listed = structured(await client.call_tool("get_server_tools", {"agent_id": "guest", "server": "time"}))
        assert "get_current_time" in [t["name"] for t in listed["tools"]]
        r = await client.call_tool("execute_tool", {"agent_id": "guest", "server": "time", "tool": "get_current_time", "args": {"timezone": "UTC"}})
        assert r.is_error is False and "UTC" in r.content[0].text
        with pytest.raises(MCPError) as exc:
            await client.call_tool("get_server_tools", {"agent_id": "guest", "server": "git"})
        assert exc.value.code == -32000
        r = await client.call_tool("execute_tool", {"agent_id": "dev", "server": "git", "tool": "git_status", "args": {"repo_path": str(repo)}})
        assert r.is_error is False and "branch" in r.content[0].text.lower()


def _exchange(proc: subprocess.Popen[bytes], lines: list[bytes]) -> list[dict[str, object]]:
    """Write raw lines, close stdin, and read every answer until the gateway exits."""
    out, _ = proc.communicate(b"".join(lines), timeout=30)
    return [json.loads(line) for line in out.splitlines()]


def test_malformed_and_oversized_input_over_a_real_pipe(setup: Setup) -> None:
    setup.env["GATEWAY_MAX_MESSAGE_BYTES"] = "4096"
    proc = setup.popen()
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-11-25", "capabilities": {}}}
    answers = _exchange(
        proc,
        [
            json.dumps(init).encode() + b"\n",
            b"{this is not json\n",
            b'[{"jsonrpc":"2.0","id":2,"method":"ping"}]\n',
            b'{"jsonrpc":"2.0","id":3,"method":"ping","padding":"' + b"x" * 10_000 + b'"}\n',
            b'{"jsonrpc":"2.0","id":4,"method":"ping"}\r\n',
        ],
    )
    assert proc.returncode == 0
    assert answers[0]["id"] == 1
    assert [(a["id"], a.get("error", {}).get("code")) for a in answers[1:]] == [(None, -32700), (None, -32600), (None, -32600), (4, None)]


@pytest.mark.parametrize("how", ["eof", "sigterm", "sigint"])
def test_shutdown_leaves_no_process_behind(setup: Setup, how: str) -> None:
    setup.env["GATEWAY_INIT_STRATEGY"] = "eager"
    # A wrapper shell whose child would outlive a naive kill of the direct child.
    setup.add("wrapped", "-c", f"exec {sys.executable} {Path(__file__).parent / 'servers' / 'testing_server.py'} --marker {setup.tmp} & wait", command="sh")
    proc = setup.popen()
    end = time.monotonic() + 15
    while len(processes_mentioning(str(setup.tmp))) < 4 and time.monotonic() < end:
        time.sleep(0.1)
    assert len(processes_mentioning(str(setup.tmp))) >= 4  # gateway, testing, sh, its child
    if how == "eof":
        assert proc.stdin is not None
        proc.stdin.close()
    else:
        proc.send_signal(signal.SIGTERM if how == "sigterm" else signal.SIGINT)
    assert proc.wait(timeout=20) == 0
    assert proc.stderr is not None
    assert b"Traceback" not in proc.stderr.read()



async def test_a_downstream_message_over_the_limit_fails_the_call_at_once(setup: Setup) -> None:
    # The downstream limit is four times the client limit: 4 x 100 kB here.
    setup.env["GATEWAY_MAX_MESSAGE_BYTES"] = "100000"
    async with setup.client() as client:
        with trio.fail_after(10):
            with pytest.raises(MCPError) as exc:
                await client.call_tool("execute_tool", {"agent_id": "dev", "server": "testing", "tool": "big", "args": {"size": 300_000}})
        assert exc.value.code == -32001 and exc.value.data["reason"] == "sent a message over 400000 bytes"
        r = await client.call_tool("execute_tool", {"agent_id": "dev", "server": "testing", "tool": "echo", "args": {"text": "fine"}})
        assert r.structured_content == {"result": "fine"}
