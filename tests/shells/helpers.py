"""Shared pieces for shell tests: a scriptable fake core and process inspection."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import trio

from lockgate.core import Action, Event, ServerSpec

CHILD = str(Path(__file__).with_name("child_server.py"))


class FakeCore:
    """Records every event; answers with whatever ``script`` returns for it."""

    def __init__(self, script: Callable[[Event], Sequence[Action]] | None = None) -> None:
        self.events: list[Event] = []
        self.script = script
        self.changed = trio.Event()

    def handle(self, event: Event) -> list[Action]:
        self.events.append(event)
        self.changed.set()
        self.changed = trio.Event()
        return list(self.script(event)) if self.script is not None else []

    def of_type(self, kind: type) -> list[Event]:
        return [e for e in self.events if isinstance(e, kind)]

    async def wait_for(self, predicate: Callable[[list[Event]], bool]) -> None:
        while not predicate(self.events):
            await self.changed.wait()


def child_spec(*args: str, name: str = "child", **extra: object) -> ServerSpec:
    return ServerSpec(name=name, transport="stdio", command=sys.executable, args=(CHILD, *args), **extra)  # type: ignore[arg-type]


def session_members(session: int) -> list[int]:
    """Live (non-zombie) processes whose session id is ``session``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        state, session_id = fields[0], int(fields[3])
        if session_id == session and state != "Z":
            found.append(int(entry.name))
    return found


def pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


assert os.name == "posix"


def pid_exists(pid: int) -> bool:
    """True while ``pid`` is running or an unreaped zombie."""
    return Path(f"/proc/{pid}").exists()


async def wait_session_empty(session: int, timeout: float = 2.0) -> list[int]:
    """Poll until no live process is left in ``session``; SIGKILL is delivered asynchronously."""
    with trio.move_on_after(timeout):
        while session_members(session):
            await trio.sleep(0.01)
    return session_members(session)
