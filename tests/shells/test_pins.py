"""The pin store's lock file, the runtime's keeper of it, and ``lockgate pin``."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

from lockgate.core import (
    Action, ConfigReloaded, Event, GatewayStarted, PinsLoaded, SavePins, Settings, pinned_definition, tool_digest,
)
from lockgate.core._config import Config
from lockgate.core._policy import Policy
from lockgate.shells.pins import FILE_NAME, FilePins, PinKeeper, PinStoreError, pin_store
from lockgate.shells.runtime import Runtime

from .helpers import FakeCore
from .test_cli import REPO, clean_env, run

ECHO: dict[str, Any] = {"name": "echo", "description": "Echo text back.", "inputSchema": {"type": "object"}}
CHANGED: dict[str, Any] = {**ECHO, "description": "Echo text back, and more."}
CHANGING = str(REPO / "tests" / "e2e" / "servers" / "changing_server.py")


def record(*tools: dict[str, Any]) -> dict[str, Any]:
    return {"tools": {t["name"]: {"digest": tool_digest(t), "definition": pinned_definition(t)} for t in tools}}


def held(base: dict[str, Any], tool: dict[str, Any], changed: list[str]) -> dict[str, Any]:
    entry = {"digest": tool_digest(tool), "definition": pinned_definition(tool), "changed": changed, "reason": "changed since pinned"}
    return {**base, "quarantined": {tool["name"]: entry}}


# -- the lock file ---------------------------------------------------------------------


def test_the_lock_file_is_next_to_the_rules_file_without_a_database(tmp_path: Path) -> None:
    store = pin_store({}, str(tmp_path / ".mcp-gateway-rules.json"))
    assert isinstance(store, FilePins) and store.path == str(tmp_path / FILE_NAME)


def test_a_missing_lock_file_holds_nothing_and_a_save_writes_it_whole(tmp_path: Path) -> None:
    pins = FilePins(str(tmp_path / FILE_NAME))
    assert pins.load() == {}
    pins.save("utils", record(ECHO))
    pins.save("notes", {"tools": {}})
    pins.save("utils", held(record(ECHO), CHANGED, ["description"]))
    doc = json.loads((tmp_path / FILE_NAME).read_text())
    assert doc == {"version": 1, "servers": {"notes": {"tools": {}}, "utils": held(record(ECHO), CHANGED, ["description"])}}
    assert os.listdir(tmp_path) == [FILE_NAME]  # nothing left aside
    assert oct(os.stat(tmp_path / FILE_NAME).st_mode & 0o777) == "0o644"


def test_a_save_keeps_what_another_process_wrote_for_other_servers(tmp_path: Path) -> None:
    ours, theirs = FilePins(str(tmp_path / FILE_NAME)), FilePins(str(tmp_path / FILE_NAME))
    ours.save("utils", record(ECHO))
    theirs.save("notes", record(CHANGED))
    ours.save("utils", record(CHANGED))
    assert ours.load() == {"notes": record(CHANGED), "utils": record(CHANGED)}


@pytest.mark.parametrize("text", ["{not json", "[]", '{"version": 2, "servers": {}}', '{"version": 1}', "\xff"])
def test_a_corrupt_lock_file_cannot_be_read_nor_saved_over(tmp_path: Path, text: str) -> None:
    path = tmp_path / FILE_NAME
    path.write_bytes(text.encode("latin-1"))
    pins = FilePins(str(path))
    with pytest.raises(PinStoreError, match="is not a pin file"):
        pins.load()
    with pytest.raises(PinStoreError):
        pins.save("utils", record(ECHO))
    assert path.read_bytes() == text.encode("latin-1")


def test_the_signature_moves_when_the_file_changes(tmp_path: Path) -> None:
    pins = FilePins(str(tmp_path / FILE_NAME))
    missing = pins.signature()
    pins.save("utils", record(ECHO))
    first = pins.signature()
    pins.save("utils", record(CHANGED))
    assert len({missing, first, pins.signature()}) == 3


# -- the runtime's keeper ---------------------------------------------------------------


async def test_the_runtime_hands_in_the_store_first_saves_in_order_and_reads_it_again_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / FILE_NAME
    FilePins(str(path)).save("utils", record(ECHO))

    def script(event: Event) -> list[Action]:
        if isinstance(event, GatewayStarted):
            return [SavePins(server="notes", record=record(ECHO)), SavePins(server="notes", record=record(CHANGED))]
        return []

    core = FakeCore(script)
    runtime = Runtime(core, settings=Settings(audit_log=str(tmp_path / "audit.jsonl")), pins=PinKeeper(FilePins(str(path))))
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(runtime.run)
            await runtime.feed(GatewayStarted(now=trio.current_time()))
            assert core.events[0] == PinsLoaded(now=core.events[0].now, pins={"utils": record(ECHO)})
            while json.loads(path.read_text())["servers"].get("notes") != record(CHANGED):
                await trio.sleep(0.05)
            await trio.sleep(1.2)  # two looks at the file: its own write is not a change
            assert len(core.of_type(PinsLoaded)) == 1
            # `lockgate pin accept` elsewhere: read again.
            FilePins(str(path)).save("utils", record(CHANGED))
            await core.wait_for(lambda events: len([e for e in events if isinstance(e, PinsLoaded)]) == 2)
            last = core.of_type(PinsLoaded)[-1]
            assert isinstance(last, PinsLoaded) and last.pins["utils"] == record(CHANGED)
            # A configuration reload reads it again too (a database is not polled).
            config = Config(servers={}, policy=Policy.compile({"agents": {}}))
            await runtime.feed(ConfigReloaded(now=trio.current_time(), config=config))
            await core.wait_for(lambda events: len([e for e in events if isinstance(e, PinsLoaded)]) == 3)
            await runtime.aclose()


async def test_an_unreadable_store_is_handed_in_as_such(tmp_path: Path) -> None:
    path = tmp_path / FILE_NAME
    path.write_text("{not json")
    core = FakeCore()
    runtime = Runtime(core, settings=Settings(audit_log=str(tmp_path / "audit.jsonl")), pins=PinKeeper(FilePins(str(path))))
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(runtime.run)
            await runtime.feed(GatewayStarted(now=trio.current_time()))
            [loaded] = core.of_type(PinsLoaded)
            assert isinstance(loaded, PinsLoaded) and loaded.pins == {}
            assert loaded.unreadable is not None and loaded.unreadable.startswith(f"{path} is not a pin file: ")
            await runtime.aclose()
    keeper = PinKeeper(None, "cannot open the database")
    assert (await keeper.load_event()).unreadable == "cannot open the database"


# -- lockgate pin ---------------------------------------------------------------------


def write_config(tmp_path: Path, description: str = "Echo text back.") -> list[str]:
    (tmp_path / "description.txt").write_text(description)
    server = {"command": sys.executable, "args": [CHANGING, "--description", str(tmp_path / "description.txt")]}
    (tmp_path / ".mcp.json").write_text(json.dumps({"mcpServers": {"changing": server}}))
    (tmp_path / ".mcp-gateway-rules.json").write_text(json.dumps({"agents": {"dev": {"allow": {"servers": ["*"]}}}}))
    return ["--config", str(tmp_path / ".mcp.json"), "--rules", str(tmp_path / ".mcp-gateway-rules.json")]


def test_lockgate_pin_records_lists_diffs_and_accepts(tmp_path: Path) -> None:
    files = write_config(tmp_path)
    env = clean_env(PYTHON=sys.executable)
    recorded = run("pin", *files, env=env)
    assert (recorded.returncode, recorded.stdout) == (0, "changing: pinned 2 tools\n"), recorded.stderr
    pins = FilePins(str(tmp_path / FILE_NAME))
    stored = pins.load()["changing"]
    assert sorted(stored["tools"]) == ["echo", "widen"]
    # As a gateway that saw a change would have saved it.
    echo_now = {**stored["tools"]["echo"]["definition"], "description": "Now different."}
    pins.save("changing", held(stored, echo_now, ["description"]))
    listed = run("pin", "list", *files, env=env)
    assert listed.stdout == "changing: 2 tools pinned, 1 quarantined\n  echo: description\n"
    as_json = json.loads(run("pin", "list", "--json", *files, env=env).stdout)
    assert as_json == {"changing": {"pinned": ["echo", "widen"], "quarantined": {"echo": {"changed": ["description"], "reason": "changed since pinned"}}}}
    diff = run("pin", "diff", *files, env=env).stdout
    assert diff.startswith("changing echo: description\n--- changing/echo (pinned)\n+++ changing/echo (now)\n@@")
    assert '-  "description": "Echo text back.",\n+  "description": "Now different.",\n' in diff
    assert run("pin", "accept", "changing", "nope", *files, env=env).returncode == 1
    accepted = run("pin", "accept", "changing", *files, env=env)
    assert (accepted.returncode, accepted.stdout) == (0, "changing: accepted echo\n")
    assert pins.load()["changing"]["tools"]["echo"]["definition"]["description"] == "Now different."
    assert "quarantined" not in pins.load()["changing"]
    assert run("pin", "diff", "changing", *files, env=env).stdout == "no quarantined tools of changing\n"


def test_lockgate_pin_refuses_what_it_cannot_do(tmp_path: Path) -> None:
    files = write_config(tmp_path)
    env = clean_env(PYTHON=sys.executable)
    assert run("pin", "accept", *files, env=env).returncode == 2
    unknown = run("pin", "nosuch", *files, env=env)
    assert unknown.returncode == 2 and "no server named 'nosuch'" in unknown.stderr
    (tmp_path / FILE_NAME).write_text("{not json")
    corrupt = run("pin", "list", *files, env=env)
    assert corrupt.returncode == 2 and "is not a pin file" in corrupt.stderr


_SAVER = """
import sys
from lockgate.shells.pins import FilePins
pins = FilePins(sys.argv[1])
for n in range(int(sys.argv[3])):
    pins.save(f"{sys.argv[2]}-{n}", {"tools": {}, "n": n})
"""


def test_processes_saving_pins_into_one_file_lose_none(tmp_path: Path) -> None:
    # As the workers of `lockgate serve --workers N` do, each pinning its own servers' tools.
    import subprocess
    import sys

    path = tmp_path / FILE_NAME
    savers = [subprocess.Popen([sys.executable, "-c", _SAVER, str(path), f"w{w}", "40"]) for w in range(4)]
    assert [s.wait(120) for s in savers] == [0, 0, 0, 0]
    assert set(FilePins(str(path)).load()) == {f"w{w}-{n}" for w in range(4) for n in range(40)}
