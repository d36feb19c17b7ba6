"""A servers file that would start this same gateway on itself is refused."""

from __future__ import annotations

import json
import sys
from functools import partial
from pathlib import Path

import pytest
import trio
from trio.testing import MockClock, wait_all_tasks_blocked

from lockgate.core import Config, ConfigRejected, ConfigReloaded, Problem, Settings, load_config
from lockgate.shells.configfiles import ConfigFiles
from lockgate.shells.reload import POLL_INTERVAL, SETTLE, ReloadSource, watch_config
from lockgate.shells.selfref import self_references

from .test_cli import REPO
from .test_reload import Collect

LOCKGATE = str(Path(sys.executable).with_name("lockgate"))
RULES = {"agents": {"default": {"allow": {"servers": ["*"]}}}}


def references(tmp_path: Path, servers: dict[str, object]) -> list[str]:
    servers_file = tmp_path / "servers.json"
    servers_file.write_text(json.dumps({"mcpServers": servers}))
    config = load_config(servers=servers_file.read_text(), rules=RULES, environ={}, servers_file=str(servers_file))
    return self_references(config, str(servers_file), {"PATH": "/usr/bin:/bin"})


def test_an_entry_that_serves_this_same_file_is_named(tmp_path: Path) -> None:
    servers_file = str(tmp_path / "servers.json")
    found = references(tmp_path, {
        "me": {"command": LOCKGATE, "args": ["serve", "--config", servers_file, "--rules", "r.json"]},
        "me_too": {"command": sys.executable, "args": ["-m", "lockgate.shells", "serve"], "cwd": str(tmp_path),
                   "env": {"GATEWAY_MCP_CONFIG": "servers.json"}},
        "fine": {"command": sys.executable, "args": ["-c", "pass"]},
    })
    assert found == [
        f"{servers_file}: mcpServers.{name}: this entry starts Lockgate itself with this same servers file, which "
        "would start itself again without end; remove the entry, or give Lockgate a servers file of its own (--config)"
        for name in ("me", "me_too")
    ]


def test_lockgate_over_another_servers_file_is_a_normal_downstream(tmp_path: Path) -> None:
    other = tmp_path / "other.json"
    other.write_text('{"mcpServers": {}}')
    assert references(tmp_path, {
        "nested": {"command": LOCKGATE, "args": ["serve", "--config", str(other)]},
        "validate": {"command": LOCKGATE, "args": ["validate", "--config", str(tmp_path / "servers.json")]},
    }) == []


def test_the_examples_do_not_reference_themselves() -> None:
    servers_file = str(REPO / "examples" / ".mcp.json")
    with open(servers_file, encoding="utf-8") as file:
        config = load_config(servers=file.read(), rules=RULES, environ={"PYTHON": sys.executable})
    assert self_references(config, servers_file, {"PATH": "/usr/bin:/bin"}) == []


async def test_a_reload_that_starts_itself_is_refused_and_the_running_one_kept(
    tmp_path: Path, mock_clock: MockClock
) -> None:
    servers, rules = tmp_path / "servers.json", tmp_path / "rules.json"
    servers.write_text(json.dumps({"mcpServers": {"a": {"command": "x"}}}))
    rules.write_text(json.dumps(RULES))
    told: list[Config] = []
    source = ReloadSource(
        files=ConfigFiles(servers=str(servers), rules=str(rules)),
        environ={"PATH": "/usr/bin:/bin"},
        settings=Settings(),
        on_config=lambda config, _rules: told.append(config),
    )
    collect = Collect()

    async def settle() -> None:
        for seconds in (POLL_INTERVAL, SETTLE):
            mock_clock.jump(seconds)
            await wait_all_tasks_blocked()

    async with trio.open_nursery() as nursery:
        await nursery.start(partial(watch_config, handle_sighup=False), collect, source)
        me = {"command": LOCKGATE, "args": ["serve", "--config", str(servers)]}
        servers.write_text(json.dumps({"mcpServers": {"a": {"command": "x"}, "me": me}}))
        await settle()
        [rejected] = collect.events
        assert isinstance(rejected, ConfigRejected)
        assert rejected.files == (str(servers),)
        assert rejected.problems == (
            Problem(
                file=str(servers),
                path="mcpServers.me",
                message="this entry starts Lockgate itself with this same servers file, which would start itself "
                "again without end; remove the entry, or give Lockgate a servers file of its own (--config)",
            ),
        )
        assert told == []  # --record is not told of a configuration the core never gets
        # Fixed, it loads as any change does.
        servers.write_text(json.dumps({"mcpServers": {"b": {"command": "x"}}}))
        await settle()
        reloaded = collect.events[-1]
        assert isinstance(reloaded, ConfigReloaded) and set(reloaded.config.servers) == {"b"}
        nursery.cancel_scope.cancel()


def test_validate_calls_such_a_file_invalid_as_serve_refuses_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from lockgate.shells.cli import main

    # No --config anywhere: both this validate and the entry's serve read ./.mcp.json.
    (tmp_path / ".mcp.json").write_text(json.dumps({"mcpServers": {"me": {"command": LOCKGATE, "args": ["serve"]}}}))
    rules_file = tmp_path / "rules.json"
    rules_file.write_text(json.dumps(RULES))
    monkeypatch.chdir(tmp_path)
    assert main(["validate", "--rules", str(rules_file), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["valid"] is False
    assert [error["path"] for error in report["errors"]] == ["mcpServers.me"]
    assert "starts Lockgate itself" in report["errors"][0]["message"]
