"""Recording: core and wire transcripts written while the gateway serves.

``lockgate serve --record DIR`` wraps the core in a :class:`RecordingCore` and
gives the transport a wire tap; with recording off nothing is wrapped and
nothing is called, so it costs nothing.

Theory of operation. The core is shared by every client: downstream
connections, their request ids and the timer ids are common state. A slice of
the events of one client alone would not replay exactly through a fresh
Gateway, so a session's core transcript holds the *whole* event stream from
the gateway's start to the end of that session (its ``ClientClosed`` or the
``CloseClient`` the core asked for, plus a ``ShutdownRequested`` that follows
at once, as on stdio). The header names the session's client. Everything is
also written to one run-long transcript, ``<prefix>.all.core.jsonl``, from
which each new session's file is seeded.

The recorder hands the core a clock of its own: seconds since the first
event, rounded to the millisecond, so transcripts read easily and recordings
of the same scenario differ little. ``SetTimer`` deadlines are shifted back
to the shell's clock on the way out; the transcript keeps the core's values.

Wire transcripts hold what crossed one client's pipe or socket, in order, one
message a line: ``{"dir": "c2s" | "s2c", "msg": …}`` (the format of the
project's shared fixtures), plus ``raw`` when re-encoding ``msg`` would not
give the exact bytes, ``raw_base64`` for bytes that are not UTF-8, and
``too_large`` for a client line over the size limit. A transport calls the
tap from :meth:`Recorder.wire` with each framed message it read or wrote:
``tap("c2s", data)`` and ``tap("s2c", data)``; ``data=None`` on ``c2s`` means
a message that was too large to read.

File names: ``<prefix>-s<N>.core.jsonl`` and ``<prefix>-s<N>.wire.jsonl``
for the N-th session, with ``prefix`` ``<UTC time>-<pid>`` unless given.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

from lockgate.core import (
    Action,
    ClientClosed,
    ClientId,
    ClientOpened,
    CloseClient,
    Config,
    ConfigReloaded,
    Event,
    SessionRecord,
    SetTimer,
    ShutdownRequested,
)
from lockgate.core.transcript import action_to_json, event_to_json, header, wire_line

from .runtime import GatewayCore

__all__ = ["Recorder", "RecordingCore", "WireTap"]

WireTap = Callable[[str, "bytes | None"], None]
"""``tap(direction, data)``: one framed message that crossed a client's connection."""


def _line(value: Mapping[str, Any]) -> str:
    return json.dumps(value, ensure_ascii=False) + "\n"


class _Session:
    def __init__(self, number: int, client: ClientId) -> None:
        self.number = number
        self.client = client
        self.core: IO[str] | None = None
        self.wire: IO[str] | None = None
        self.ending = False


class Recorder:
    """Writes the transcripts of one gateway run into ``directory``.

    Args:
        directory: created if missing.
        config: the configuration the Gateway starts with.
        rules: the rules document ``config.policy`` was compiled from.
        transport: written in headers (``stdio``, ``http``).
        prefix: the file name prefix; default ``<UTC time>-<pid>``.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        config: Config,
        rules: Mapping[str, Any],
        *,
        transport: str = "stdio",
        prefix: str | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.prefix = prefix or f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{os.getpid()}"
        self._config = config
        self._rules: dict[int, Mapping[str, Any]] = {id(config.policy): rules}
        self._transport = transport
        self._origin: float | None = None
        self._sessions: dict[ClientId, _Session] = {}
        self._count = 0
        self._all_path = self.directory / f"{self.prefix}.all.core.jsonl"
        self._all = self._all_path.open("w", encoding="utf-8")
        self._all.write(_line(header(config, rules, transport=transport)))

    def wrap(self, core: GatewayCore) -> RecordingCore:
        """The core to hand the runtime instead of ``core``."""
        return RecordingCore(core, self)

    def wire(self, client: ClientId) -> WireTap:
        """The tap a transport calls with each message of ``client``'s connection."""
        session = self._session(client)
        if session.wire is None:
            session.wire = self._path(session, "wire").open("w", encoding="utf-8")
        out = session.wire

        def tap(direction: str, data: bytes | None) -> None:
            if not out.closed:
                out.write(_line(wire_line(direction, data)))
                out.flush()

        return tap

    def remember_rules(self, config: Config, rules: Mapping[str, Any]) -> None:
        """Say which rules document a reloaded ``config`` came from, before feeding its ``ConfigReloaded``."""
        self._rules[id(config.policy)] = rules

    def close(self) -> None:
        """Close every file; later calls write nothing."""
        for session in list(self._sessions.values()):
            self._end(session)
        self._all.close()

    # -- for RecordingCore -------------------------------------------------------

    def clock(self, now: float) -> float:
        """The core's clock for a shell time: seconds since the first event, in whole ms."""
        if self._origin is None:
            self._origin = now
        return round(now - self._origin, 3)

    def shell_time(self, core_time: float) -> float:
        assert self._origin is not None
        return core_time + self._origin

    def record(self, event: Event, actions: list[Action]) -> None:
        if self._all.closed:
            return
        # A session that ended is closed now, unless the gateway is stopping
        # right after it (stdio), which belongs in its transcript too.
        shutting_down = isinstance(event, ShutdownRequested)
        for session in [s for s in self._sessions.values() if s.ending and not shutting_down]:
            self._end(session)
        if isinstance(event, ClientOpened):
            self._open_core(self._session(event.client))
        rules = self._rules.get(id(event.config.policy)) if isinstance(event, ConfigReloaded) else None
        text = _line(event_to_json(event, rules)) + "".join(_line(action_to_json(a)) for a in actions)
        self._all.write(text)
        self._all.flush()
        for session in self._sessions.values():
            if session.core is not None:
                session.core.write(text)
                session.core.flush()
        if isinstance(event, ClientClosed) and event.client in self._sessions:
            self._sessions[event.client].ending = True
        for action in actions:
            if isinstance(action, CloseClient) and action.client in self._sessions:
                self._sessions[action.client].ending = True
        if shutting_down:
            for session in [s for s in self._sessions.values() if s.ending]:
                self._end(session)

    # -- sessions ----------------------------------------------------------------

    def _session(self, client: ClientId) -> _Session:
        session = self._sessions.get(client)
        if session is None or session.ending:
            if session is not None:
                self._end(session)
            self._count += 1
            session = self._sessions[client] = _Session(self._count, client)
        return session

    def _path(self, session: _Session, kind: str) -> Path:
        return self.directory / f"{self.prefix}-s{session.number}.{kind}.jsonl"

    def _open_core(self, session: _Session) -> None:
        if session.core is not None:
            return
        out = session.core = self._path(session, "core").open("w", encoding="utf-8")
        out.write(
            _line(header(self._config, self._rules[id(self._config.policy)], transport=self._transport,
                         session=session.number, client=session.client))
        )
        # Seed it with the run so far: the state this session starts from.
        self._all.flush()
        with self._all_path.open(encoding="utf-8") as run:
            next(run)  # the run's own header
            for line in run:
                out.write(line)

    def _end(self, session: _Session) -> None:
        for file in (session.core, session.wire):
            if file is not None:
                file.close()
        if self._sessions.get(session.client) is session:
            del self._sessions[session.client]

    def note_config(self, config: Config) -> None:
        """Headers of sessions opened from now on describe ``config`` (after a reload)."""
        if id(config.policy) in self._rules:
            self._config = config


class RecordingCore:
    """A core that records every event and the actions it produced; see the module docstring.

    Its read-only accessors are the wrapped core's, on the recorder's clock.
    """

    def __init__(self, core: GatewayCore, recorder: Recorder) -> None:
        self._core = core
        self._recorder = recorder

    def uptime(self, now: float) -> float:
        return self._core.uptime(self._recorder.clock(now))

    def readiness(self) -> dict[str, Any]:
        return self._core.readiness()

    def metrics_json(self, now: float) -> dict[str, Any]:
        return self._core.metrics_json(self._recorder.clock(now))

    def metrics_prometheus(self, now: float) -> str:
        return self._core.metrics_prometheus(self._recorder.clock(now))

    def relays(self) -> bool:
        return self._core.relays()

    def session_record(self, client: ClientId) -> SessionRecord | None:
        return self._core.session_record(client)

    def server_health(self, name: str) -> dict[str, Any] | None:
        return self._core.server_health(name)

    def gateway_health(self, now: float) -> dict[str, Any]:
        return self._core.gateway_health(self._recorder.clock(now))

    def gateway_stats(self, now: float) -> dict[str, Any]:
        return self._core.gateway_stats(self._recorder.clock(now))

    def registry_view(self) -> dict[str, Any]:
        return self._core.registry_view()

    def pins(self) -> dict[str, Any]:
        return self._core.pins()

    def handle(self, event: Event) -> list[Action]:
        recorder = self._recorder
        event = dataclasses.replace(event, now=recorder.clock(event.now))
        if isinstance(event, ClientOpened) and event.principal is not None and event.principal.expires is not None:
            # A credential's expiry is on the shell's clock too: move it with the event.
            expires = recorder.clock(event.principal.expires)
            event = dataclasses.replace(event, principal=dataclasses.replace(event.principal, expires=expires))
        actions = self._core.handle(event)
        recorder.record(event, actions)
        if isinstance(event, ConfigReloaded):
            recorder.note_config(event.config)
        return [
            SetTimer(timer=a.timer, deadline=recorder.shell_time(a.deadline)) if isinstance(a, SetTimer) else a
            for a in actions
        ]
