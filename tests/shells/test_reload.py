"""The configuration watcher over real files: which writes become which events.

Time is a trio MockClock moved by hand, so "rapid" and "settled" are exact
steps rather than races with the scheduler.
"""

from __future__ import annotations

import json
import os
import signal
from functools import partial
from pathlib import Path

import pytest
import trio
from trio.testing import MockClock, wait_all_tasks_blocked

from lockgate.core import ConfigRejected, ConfigReloaded, Event, Gateway, Settings
from lockgate.shells.configfiles import ConfigFiles, load_files
from lockgate.shells.reload import POLL_INTERVAL, SETTLE, ReloadSource, watch_config

SERVERS = {"mcpServers": {"a": {"command": "x"}}}
RULES = {"agents": {"dev": {"allow": {"servers": ["a"]}}}}


class Collect:
    """Stands in for the Runtime: keeps every event fed to it."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    async def feed(self, event: Event) -> None:
        self.events.append(event)


def make_files(tmp_path: Path) -> ConfigFiles:
    servers, rules = tmp_path / "servers.json", tmp_path / "rules.json"
    servers.write_text(json.dumps(SERVERS))
    rules.write_text(json.dumps(RULES))
    return ConfigFiles(servers=str(servers), rules=str(rules))


async def step(clock: MockClock, seconds: float) -> None:
    clock.jump(seconds)
    await wait_all_tasks_blocked()


async def start(nursery: trio.Nursery, files: ConfigFiles, **source: object) -> Collect:
    collect = Collect()
    await nursery.start(
        partial(watch_config, handle_sighup=False), collect, ReloadSource(files=files, environ={}, settings=Settings(), **source)  # type: ignore[arg-type]
    )
    await wait_all_tasks_blocked()
    return collect


async def test_a_valid_change_is_fed_once(tmp_path: Path, mock_clock: MockClock) -> None:
    files = make_files(tmp_path)
    async with trio.open_nursery() as nursery:
        collect = await start(nursery, files)
        await step(mock_clock, POLL_INTERVAL)
        assert collect.events == []
        Path(files.rules).write_text(json.dumps({"agents": {"dev": {}, "ops": {}}}))
        await step(mock_clock, POLL_INTERVAL)  # seen; waiting for it to settle
        assert collect.events == []
        await step(mock_clock, SETTLE)
        [event] = collect.events
        assert isinstance(event, ConfigReloaded)
        assert event.files == (files.rules,)
        assert event.config.policy.agents == {"dev", "ops"}
        assert event.time is not None and event.time.endswith("Z")
        for _ in range(8):
            await step(mock_clock, POLL_INTERVAL)
        assert len(collect.events) == 1
        nursery.cancel_scope.cancel()


async def test_rapid_writes_and_an_atomic_rename_give_one_reload(tmp_path: Path, mock_clock: MockClock) -> None:
    files = make_files(tmp_path)
    final = json.dumps({"agents": {"new": {}}})
    async with trio.open_nursery() as nursery:
        collect = await start(nursery, files)
        Path(files.rules).write_text("")  # an editor truncates first...
        await step(mock_clock, POLL_INTERVAL)
        Path(files.rules).write_text(final[:10])  # ...then writes in pieces
        await step(mock_clock, SETTLE)
        temporary = tmp_path / "rules.json.tmp"
        temporary.write_text(final)
        os.replace(temporary, files.rules)  # and another saves by renaming
        await step(mock_clock, SETTLE)
        assert collect.events == []  # still changing: nothing loaded yet
        await step(mock_clock, SETTLE)
        for _ in range(8):
            await step(mock_clock, POLL_INTERVAL)
        [event] = collect.events
        assert isinstance(event, ConfigReloaded) and event.config.policy.agents == {"new"}
        nursery.cancel_scope.cancel()


async def test_an_invalid_change_is_rejected_with_file_and_path_then_a_fix_loads(tmp_path: Path, mock_clock: MockClock) -> None:
    files = make_files(tmp_path)
    async with trio.open_nursery() as nursery:
        collect = await start(nursery, files)
        Path(files.rules).write_text(json.dumps({"agents": {"dev": {"allow": {"servers": 3}}}}))
        await step(mock_clock, POLL_INTERVAL)
        await step(mock_clock, SETTLE)
        [rejected] = collect.events
        assert isinstance(rejected, ConfigRejected)
        assert rejected.files == (files.rules,)
        assert [(p.file, p.path) for p in rejected.problems] == [(files.rules, "agents.dev.allow.servers")]
        # The same bad content again (a touch) is not attempted twice.
        os.utime(files.rules, ns=(1, 1))
        await step(mock_clock, POLL_INTERVAL)
        await step(mock_clock, SETTLE)
        assert len(collect.events) == 1
        Path(files.rules).write_text(json.dumps(RULES))
        await step(mock_clock, POLL_INTERVAL)
        await step(mock_clock, SETTLE)
        assert isinstance(collect.events[-1], ConfigReloaded) and len(collect.events) == 2
        nursery.cancel_scope.cancel()


async def test_a_touch_without_a_change_reloads_nothing(tmp_path: Path, mock_clock: MockClock) -> None:
    files = make_files(tmp_path)
    async with trio.open_nursery() as nursery:
        collect = await start(nursery, files)
        os.utime(files.servers, ns=(5, 5))
        for _ in range(4):
            await step(mock_clock, POLL_INTERVAL)
            await step(mock_clock, SETTLE)
        assert collect.events == []
        nursery.cancel_scope.cancel()


async def test_a_deleted_file_is_rejected_and_its_return_loads(tmp_path: Path, mock_clock: MockClock) -> None:
    files = make_files(tmp_path)
    async with trio.open_nursery() as nursery:
        collect = await start(nursery, files)
        Path(files.servers).unlink()
        await step(mock_clock, POLL_INTERVAL)
        await step(mock_clock, SETTLE)
        [rejected] = collect.events
        assert isinstance(rejected, ConfigRejected)
        [problem] = rejected.problems
        assert (problem.file, problem.path) == (files.servers, "")
        assert problem.message == "cannot read the file: No such file or directory"
        Path(files.servers).write_text(json.dumps(SERVERS))
        await step(mock_clock, POLL_INTERVAL)
        await step(mock_clock, SETTLE)
        assert isinstance(collect.events[-1], ConfigReloaded)
        nursery.cancel_scope.cancel()


async def test_a_change_before_the_watcher_started_is_loaded_at_once(tmp_path: Path, mock_clock: MockClock) -> None:
    files = make_files(tmp_path)
    async with trio.open_nursery() as nursery:
        collect = await start(nursery, files, loaded=(json.dumps(SERVERS), json.dumps({"agents": {}})))
        await step(mock_clock, SETTLE)
        [event] = collect.events
        assert isinstance(event, ConfigReloaded) and event.files == (files.rules,)
        nursery.cancel_scope.cancel()


async def test_sighup_reloads_at_once_even_without_a_change(tmp_path: Path) -> None:
    files = make_files(tmp_path)
    collect = Collect()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(watch_config, collect, ReloadSource(files=files, environ={}, settings=Settings()))
            os.kill(os.getpid(), signal.SIGHUP)
            while not collect.events:
                await trio.sleep(0.01)
            [event] = collect.events
            assert isinstance(event, ConfigReloaded) and event.files == ()
            nursery.cancel_scope.cancel()


@pytest.mark.parametrize("content", [b"\xff\xfe", b"{"])
async def test_unreadable_content_is_rejected(tmp_path: Path, mock_clock: MockClock, content: bytes) -> None:
    files = make_files(tmp_path)
    async with trio.open_nursery() as nursery:
        collect = await start(nursery, files)
        Path(files.servers).write_bytes(content)
        await step(mock_clock, POLL_INTERVAL)
        await step(mock_clock, SETTLE)
        [rejected] = collect.events
        assert isinstance(rejected, ConfigRejected)
        assert rejected.problems[0].file == files.servers
        nursery.cancel_scope.cancel()


class Core:
    """Stands in for the Runtime with a real core: each event goes to the gateway, and is kept."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.events: list[Event] = []

    async def feed(self, event: Event) -> None:
        self.events.append(event)
        self.gateway.handle(event)


async def reload_with(tmp_path: Path, clock: MockClock, rules: object, settings: Settings) -> tuple[Gateway, ConfigRejected]:
    """Start a core on RULES, write ``rules`` over them, and return the core and the rejection it was fed."""
    files = make_files(tmp_path)
    gateway = Gateway(load_files(files, {}, settings))
    before = gateway.config
    core = Core(gateway)
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(watch_config, handle_sighup=False), core, ReloadSource(files=files, environ={}, settings=settings))
        Path(files.rules).write_text(json.dumps(rules))
        await step(clock, POLL_INTERVAL)
        await step(clock, SETTLE)
        nursery.cancel_scope.cancel()
    [rejected] = core.events
    assert isinstance(rejected, ConfigRejected)
    assert gateway.config is before  # the running configuration stays
    return gateway, rejected


async def test_a_reload_with_a_misspelt_key_keeps_the_running_rules(tmp_path: Path, mock_clock: MockClock) -> None:
    # "dney" for "deny": were it ignored, the reload would allow server a's every tool.
    typo = {"agents": {"dev": {"allow": {"servers": ["a"]}, "dney": {"tools": {"a": ["push"]}}}}}
    gateway, rejected = await reload_with(tmp_path, mock_clock, typo, Settings())
    [problem] = rejected.problems
    assert (problem.path, problem.message) == ("agents.dev.dney", "unknown key 'dney' (did you mean 'deny'?)")
    assert gateway.config.policy.decide("dev", "a", "push").allowed  # RULES as they were
    assert gateway.reload_status()["last_result"] == "rejected"


async def test_in_strict_mode_a_reload_with_a_warning_keeps_the_running_rules(tmp_path: Path, mock_clock: MockClock) -> None:
    # ops's rules name server b, which is not configured (a warning); GATEWAY_STRICT refuses the reload.
    warned = {"agents": {**RULES["agents"], "ops": {"allow": {"servers": ["b"]}}}}
    gateway, rejected = await reload_with(tmp_path, mock_clock, warned, Settings(strict=True))
    [problem] = rejected.problems
    assert problem.path == "agents.ops.allow.servers[0]"
    assert problem.message.endswith("; strict mode makes this warning an error")
    assert gateway.config.policy.agents == {"dev"}
