"""Hot reload: watch the two configuration files and hand each change to the core.

Theory of operation. One trio task, :func:`watch_config`, looks at both files
every :data:`POLL_INTERVAL` seconds (no threads, no inotify): it reads each
file and compares size, ``mtime_ns``, inode and a SHA-256 of the content with
what it saw last. Configuration files are small, so reading them four times a
second costs nothing and catches changes that keep size and a coarse mtime.

A change is not loaded at once: editors save in several steps (truncate then
write, write a temporary file then rename it over the old one), and a
half-written file must not be mistaken for the new configuration. After a
change the watcher looks again every :data:`SETTLE` seconds until two looks
agree, then loads what it read. Rapid writes therefore give one reload, and a
write takes at most about ``POLL_INTERVAL + SETTLE`` (300 ms) to be in effect.

Parsing and validation are the core's (:func:`lockgate.core.load_config`).
A valid result goes to the core as one ``ConfigReloaded`` event through
:meth:`Runtime.feed <lockgate.shells.runtime.Runtime.feed>`, so the swap
happens between two ``handle()`` calls. An unreadable or invalid file becomes
``ConfigRejected``: the running configuration stays, and the core logs and
records the problems. A file whose content is the same as last time (a
``touch``) causes no reload. ``SIGHUP`` reloads at once, changed or not.
"""

from __future__ import annotations

import hashlib
import os
import signal
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import trio

from lockgate.core import (
    Config,
    ConfigError,
    ConfigRejected,
    ConfigReloaded,
    Event,
    load_config,
    Problem,
    Settings,
)

from .audit import utc_timestamp
from .configfiles import ConfigFiles
from .logs import get_logger
from .selfref import self_reference_problems
from .signals import receive_signals

if TYPE_CHECKING:
    from .pins import PinKeeper
    from .registry import Registry

__all__ = ["MAX_SETTLE", "POLL_INTERVAL", "SETTLE", "Feeder", "ReloadSource", "watch_config"]

POLL_INTERVAL = 0.25
"""Seconds between two looks at the files."""

SETTLE = 0.05
"""Seconds a changed file must stay the same before it is loaded."""

MAX_SETTLE = 2.0
"""Load anyway after this long, so a file written without pause is still read."""

_log = get_logger("reload")


@dataclass(frozen=True, slots=True)
class ReloadSource:
    """What a reload reads: the two files, the variables for ``${VAR}``, the settings.

    ``settings`` come from the environment and the command line at start-up;
    a reload keeps them (the environment of a running process does not change).
    """

    files: ConfigFiles
    environ: Mapping[str, str]
    settings: Settings
    #: The texts of (servers, rules) the running configuration was loaded
    #: from; a file that differs when the watcher starts is loaded at once.
    loaded: tuple[str, str] | None = None
    #: Told of each valid new configuration and its rules text just before
    #: the core gets it (``--record`` keeps the rules document this way).
    on_config: Callable[[Config, str], None] | None = None
    #: The live registry: each reload of the files is merged with the
    #: registered instances before the core gets it, and the registry feeds
    #: its own changes to the runtime the watcher feeds.
    registry: Registry | None = None
    #: The pin store the runtime reads and writes (:mod:`.pins`); read again at every reload.
    pins: PinKeeper | None = None


@dataclass(frozen=True, slots=True)
class _Look:
    """One file as last seen: its identity and content, or why it could not be read."""

    signature: tuple[int, ...] | None
    digest: str
    text: str | None
    error: str | None


def _look(path: str) -> _Look:
    try:
        with open(path, "rb") as file:
            st = os.fstat(file.fileno())
            data = file.read()
    except OSError as exc:
        error = f"cannot read the file: {exc.strerror or type(exc).__name__}"
        return _Look(None, f"error: {error}", None, error)
    signature = (st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev)
    digest = hashlib.sha256(data).hexdigest()
    try:
        return _Look(signature, digest, data.decode("utf-8"), None)
    except UnicodeDecodeError:
        return _Look(signature, digest, None, "not UTF-8 text")


class Feeder(Protocol):
    """Where reload events go: :class:`~.runtime.Runtime` is one."""

    async def feed(self, event: Event) -> None: ...


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class _Watcher:
    def __init__(self, feeder: Feeder, source: ReloadSource) -> None:
        self.feed = feeder.feed
        self.source = source
        self.paths = (source.files.servers, source.files.rules)
        self.seen = self.look()
        # What the running configuration was loaded from (or last refused).
        if source.loaded is not None:
            self.applied = {path: _digest(text) for path, text in zip(self.paths, source.loaded)}
        else:
            self.applied = {path: look.digest for path, look in self.seen.items()}

    def look(self) -> dict[str, _Look]:
        return {path: _look(path) for path in self.paths}

    def differs(self, looks: dict[str, _Look]) -> bool:
        return any(looks[path].digest != self.applied[path] for path in self.paths)

    async def settle(self, first: dict[str, _Look]) -> dict[str, _Look]:
        """Look again until two looks in a row agree (or :data:`MAX_SETTLE` passes)."""
        with trio.move_on_after(MAX_SETTLE):
            while True:
                await trio.sleep(SETTLE)
                again = self.look()
                if again == first:
                    break
                first = again
        return first

    async def poll(self) -> None:
        current = self.look()
        if current == self.seen:
            return
        current = await self.settle(current)
        self.seen = current
        if self.differs(current):
            await self.attempt(current)

    async def attempt(self, looks: dict[str, _Look]) -> None:
        """Load what ``looks`` read and feed the outcome to the core."""
        files = tuple(path for path in self.paths if looks[path].digest != self.applied[path])
        self.applied = {path: look.digest for path, look in looks.items()}
        _log.debug("loading the configuration", extra={"fields": {"files": list(files)}})
        time = utc_timestamp()
        unreadable = tuple(
            Problem(file=path, path="", message=looks[path].error or "") for path in self.paths if looks[path].text is None
        )
        event: Event
        if unreadable:
            event = ConfigRejected(now=trio.current_time(), problems=unreadable, files=files, time=time)
            await self.feed(event)
            return
        servers, rules = (looks[path].text or "" for path in self.paths)
        try:
            config = load_config(
                servers=servers,
                servers_file=self.source.files.servers,
                rules=rules,
                rules_file=self.source.files.rules,
                environ=self.source.environ,
                settings=self.source.settings,
                base_dir=self.source.files.folder,
            )
        except ConfigError as exc:
            event = ConfigRejected(
                now=trio.current_time(), problems=tuple(exc.problems), warnings=exc.warnings, files=files, time=time
            )
        else:
            base, registry = config, self.source.registry
            if registry is not None:
                config, _ = registry.merge(base)
            # A servers file that now starts this gateway on itself is refused as an invalid one is.
            loops = self_reference_problems(config, self.source.files.servers, self.source.environ)
            if loops:
                event = ConfigRejected(
                    now=trio.current_time(), problems=tuple(loops), warnings=config.warnings, files=files, time=time
                )
            else:
                if registry is not None:
                    config = registry.rebase(base)
                if self.source.on_config is not None:
                    self.source.on_config(config, rules)
                event = ConfigReloaded(now=trio.current_time(), config=config, files=files, time=time)
        await self.feed(event)


async def watch_config(
    runtime: Feeder,
    source: ReloadSource,
    *,
    handle_sighup: bool = True,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Watch ``source``'s files until cancelled; feed reloads to ``runtime``.

    Start it with ``await nursery.start(watch_config, runtime, source)``: once
    it has started, SIGHUP is handled (when ``handle_sighup``) and every
    later write is seen. Without ``source.loaded``, the files as first seen
    are taken to be what the running configuration came from.
    """
    watcher = _Watcher(runtime, source)
    if source.registry is not None:
        source.registry.attach(runtime)
    with receive_signals(handle_sighup, signal.SIGHUP) as hangups:
        async with trio.open_nursery() as nursery:
            hangup = trio.Event()

            async def on_hangup(signals: AsyncIterator[int]) -> None:
                async for _ in signals:
                    hangup.set()

            if hangups is not None:
                nursery.start_soon(on_hangup, hangups)
            task_status.started()
            if watcher.differs(watcher.seen):
                watcher.seen = await watcher.settle(watcher.seen)
                await watcher.attempt(watcher.seen)
            while True:
                with trio.move_on_after(POLL_INTERVAL):
                    await hangup.wait()
                if hangup.is_set():
                    hangup = trio.Event()
                    _log.info("SIGHUP: reloading the configuration")
                    watcher.seen = watcher.look()
                    await watcher.attempt(watcher.seen)
                else:
                    await watcher.poll()
