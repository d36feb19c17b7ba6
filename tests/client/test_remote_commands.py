"""``lockgate register``, ``deregister``, ``registry`` and ``stats`` against a real gateway, as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from .conftest import TESTING_SERVER, Gateway, free_port


def lockgate(*argv: str, **environ: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOCKGATE_", "GATEWAY_"))}
    return subprocess.run(
        [sys.executable, "-m", "lockgate.shells", *argv], env={**env, **environ}, capture_output=True, text=True, timeout=60
    )


def test_register_list_and_deregister(gateway: Gateway) -> None:
    added = lockgate(
        "register", "extra", "--command", f"{sys.executable} {TESTING_SERVER}", "--env", "EXTRA_TOKEN=secret",
        "--instance-id", "one", "--weight", "2", "--description", "added by the CLI", "--url", gateway.url,
    )
    assert added.returncode == 0, added.stderr
    assert added.stdout == "registered instance one of server extra (stdio)\n"

    listed = lockgate("registry", "--json", "--url", gateway.url)
    assert listed.returncode == 0, listed.stderr
    [instance] = json.loads(listed.stdout)["servers"]["extra"]["instances"]
    assert (instance["id"], instance["source"], instance["weight"], instance["env_keys"]) == ("one", "registry", 2, ["EXTRA_TOKEN"])
    assert instance["args"] == [TESTING_SERVER]
    assert "secret" not in listed.stdout

    # The URL from the environment, and a table.
    table = lockgate("registry", LOCKGATE_URL=gateway.url)
    assert table.returncode == 0, table.stderr
    header, *rows = table.stdout.splitlines()
    assert header.split() == ["SERVER", "INSTANCE", "SOURCE", "TRANSPORT", "STATE", "HEALTHY", "WEIGHT", "TARGET"]
    extra = next(row for row in rows if row.startswith("extra "))
    assert extra.split()[1:4] == ["one", "registry", "stdio"]
    assert extra.rstrip().endswith(TESTING_SERVER)
    assert any(row.split()[:3] == ["testing", "0", "file"] for row in rows)

    twice = lockgate("register", "extra", "--command", sys.executable, "--arg", TESTING_SERVER, "--instance-id", "one", "--url", gateway.url)
    assert (twice.returncode, twice.stdout) == (1, "")
    assert twice.stderr.startswith("lockgate: error: the gateway refused: 409 CONFLICT") and twice.stderr.count("\n") == 1

    removed = lockgate("deregister", "extra", "one", "--json", "--url", gateway.url)
    assert removed.returncode == 0, removed.stderr
    assert json.loads(removed.stdout) == {"server": "extra", "instance_id": "one", "deregistered": True}

    again = lockgate("deregister", "extra", "one", "--url", gateway.url)
    assert again.returncode == 1 and "404" in again.stderr
    from_file = lockgate("deregister", "testing", "0", "--url", gateway.url)
    assert from_file.returncode == 1 and "409" in from_file.stderr


def test_stats(gateway: Gateway) -> None:
    import httpx

    httpx.post(f"{gateway.url}/mcp/testing/tools/call", json={"name": "echo", "arguments": {"text": "x"}}, timeout=30)
    shown = lockgate("stats", "--url", gateway.url)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0].startswith("uptime ") and "requests" in lines[0] and "p99" in lines[0]
    assert lines[1].startswith("sessions ")
    servers = lines[lines.index("") + 1].split()
    assert servers[:3] == ["SERVER", "REQUESTS", "ERRORS"]
    assert any(line.split()[:2] == ["testing", "1"] for line in lines)
    as_json = json.loads(lockgate("stats", "--json", "--url", gateway.url).stdout)
    assert as_json["servers"]["testing"]["requests"] >= 1 and "health_checker" in as_json


def test_usage_and_connection_errors_exit_2_with_one_line() -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    for argv in (("stats", "--url", nowhere), ("registry",), ("deregister", "s", "i", "--url", nowhere)):
        result = lockgate(*argv, LOCKGATE_URL=nowhere)
        assert (result.returncode, result.stdout) == (2, ""), argv
        assert result.stderr.startswith(f"lockgate: error: cannot reach the gateway at {nowhere}") and result.stderr.count("\n") == 1
    both = lockgate("register", "s", "--endpoint", "http://127.0.0.1:9/mcp", "--command", "python", "--url", nowhere)
    assert both.returncode == 2 and "not allowed with argument" in both.stderr
    bad_env = lockgate("register", "s", "--command", "python", "--env", "NOVALUE", "--url", nowhere)
    assert bad_env.returncode == 2 and bad_env.stderr == "lockgate: error: --env 'NOVALUE' is not NAME=VALUE\n"
    stray = lockgate("register", "s", "--endpoint", "http://127.0.0.1:9/mcp", "--arg", "x", "--url", nowhere)
    assert stray.returncode == 2 and "go with --command" in stray.stderr
