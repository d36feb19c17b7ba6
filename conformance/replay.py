"""Replaying the corpus: through the core (exact) and through a real ``lockgate serve``.

Core replay: :func:`core_replay` feeds a core transcript's events to a fresh
Gateway (:func:`lockgate.core.transcript.replay`) and returns a readable
report of the first action that differs, or ``None``.

Shell replay: :func:`shell_replay` starts ``lockgate serve`` (over stdio, or
over HTTP for transcripts not recorded over stdio) with
the transcript's configuration, every downstream replaced by
``fake_server.py`` playing its recorded connections, and sends the client
side of the wire transcript. A client line is sent once every gateway line
recorded before it has arrived (so a cancellation still follows the
progress it reacted to). What arrives must be what was recorded: responses
are matched by id, notifications by method and progress token in order,
each compared exactly, and a request's notifications must come before its
response. The report lists every difference, or is ``None``.
"""

from __future__ import annotations

import base64
import json
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import trio

from lockgate.core.transcript import Divergence, TranscriptError, recorded_tokenizer, replay
from lockgate.shells.tokenizer import counter_named

HERE = Path(__file__).resolve().parent
TRANSCRIPTS = HERE / "transcripts"
FAKE_SERVER = HERE / "fake_server.py"

JSON = dict[str, Any]

#: Transcripts whose shell replay cannot be exact, and why. Their core replay still runs.
SHELL_SKIP: dict[str, str] = {
    "error_backoff": "the error names the seconds left before the next start, which depend on how fast the client called again",
}

_SESSION_NUMBER = re.compile(r"^(.+)_([0-9]+)$")


def read_jsonl(path: Path) -> list[JSON]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def corpus() -> list[str]:
    """The names of the transcripts in the corpus (``NAME.core.jsonl`` [+ ``NAME.wire.jsonl``])."""
    return sorted(p.name.removesuffix(".core.jsonl") for p in TRANSCRIPTS.glob("*.core.jsonl"))


def _short(value: Any, limit: int = 2000) -> str:
    text = json.dumps(value, indent=2, ensure_ascii=False)
    return text if len(text) <= limit else text[:limit] + f"\n… ({len(text) - limit} more characters)"


def describe(divergence: Divergence) -> str:
    """A report of where a core replay first went another way."""
    parts = [
        f"line {divergence.line}: action #{divergence.index} of event "
        + json.dumps(divergence.event, ensure_ascii=False)[:300],
    ]
    expected, actual = divergence.expected, divergence.actual
    if expected is None:
        parts.append("the replay produced an action that was not recorded:\n" + _short(actual))
    elif actual is None:
        parts.append("the replay produced no action where this was recorded:\n" + _short(expected))
    else:
        parts.append("recorded:\n" + _short(expected) + "\nreplayed:\n" + _short(actual))
        parts.extend(_differences(expected, actual, "action"))
    return "\n".join(parts)


def _differences(expected: Any, actual: Any, where: str) -> Iterator[str]:
    """The paths at which two JSON values differ, as ``- where: recorded != replayed``."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        for key in [*expected, *(k for k in actual if k not in expected)]:
            if expected.get(key, ...) != actual.get(key, ...):
                yield from _differences(expected.get(key, "<absent>"), actual.get(key, "<absent>"), f"{where}.{key}")
    elif isinstance(expected, list) and isinstance(actual, list) and len(expected) == len(actual):
        for i, (e, a) in enumerate(zip(expected, actual)):
            yield from _differences(e, a, f"{where}[{i}]")
    elif expected != actual:
        yield f"- {where}: recorded {json.dumps(expected)[:300]} != replayed {json.dumps(actual)[:300]}"


#: Values read off the gateway's clock (get_gateway_status: uptime, latency
#: percentiles); a replay over a real pipe cannot reproduce them.
CLOCK_KEYS = frozenset({"uptime_seconds", "latency_ms"})


def stable(value: Any) -> Any:
    """``value`` with clock readings zeroed, also inside JSON text content."""
    if isinstance(value, dict):
        out = {k: (0 if k in CLOCK_KEYS else stable(v)) for k, v in value.items()}
        text = out.get("text")
        if out.get("type") == "text" and isinstance(text, str):
            try:
                out["text"] = json.dumps(stable(json.loads(text)), separators=(",", ":"))
            except ValueError:
                pass
        return out
    if isinstance(value, list):
        return [stable(v) for v in value]
    return value


def core_replay(path: Path) -> str | None:
    """Replay one core transcript; a report of the first difference, or ``None``."""
    try:
        lines = read_jsonl(path)
        divergence = replay(lines, count_tokens=counter_named(recorded_tokenizer(lines[0]) if lines else "estimate"))
    except TranscriptError as exc:
        return f"{path.name}: {exc}"
    return None if divergence is None else f"{path.name}: " + describe(divergence)


# -- shell replay ------------------------------------------------------------------


def _wire_bytes(line: JSON, max_message_bytes: int) -> bytes:
    if line.get("too_large"):
        return b"x" * (max_message_bytes + 16)
    if "raw_base64" in line:
        return base64.b64decode(line["raw_base64"])
    if "raw" in line:
        return str(line["raw"]).encode("utf-8")
    return json.dumps(line["msg"], ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _key(msg: Any) -> tuple[Any, ...]:
    if not isinstance(msg, dict):
        return ("other",)
    if "method" not in msg:
        return ("response", json.dumps(msg.get("id")))
    token = (msg.get("params") or {}).get("progressToken") if isinstance(msg.get("params"), dict) else None
    return ("notification", msg["method"], json.dumps(token))


def never_started(lines: list[JSON]) -> set[str]:
    """Servers whose every recorded start failed before the process ran (command not found)."""
    started: dict[int, str] = {}
    failed: dict[str, bool] = {}
    for line in lines:
        if line.get("action") == "StartDownstream":
            started[line["downstream"]] = line["server"]
            failed.setdefault(line["server"], True)
        elif line.get("event") == "DownstreamExited" and line["downstream"] in started:
            server = started[line["downstream"]]
            failed[server] = failed[server] and str(line["reason"]).startswith(("command not found", "failed to start"))
        elif line.get("event") == "DownstreamMessageReceived" and line["downstream"] in started:
            failed[started[line["downstream"]]] = False
    return {server for server, all_failed in failed.items() if all_failed}


def write_replay_setup(lines: list[JSON], core_path: Path, directory: Path) -> tuple[list[str], dict[str, str]]:
    """Write the servers file and rules for a replay; return the command and environment."""
    config = lines[0]["config"]
    broken = never_started(lines)
    servers: JSON = {}
    for spec in config["servers"]:
        name = spec["name"]
        entry: JSON = {"description": spec["description"]}
        if spec.get("timeout_ms") is not None:
            entry["timeout_ms"] = spec["timeout_ms"]
        if spec["transport"] != "stdio" or name in broken:
            # A server that cannot start (or is not stdio) is kept as recorded:
            # the gateway reports the same failure.
            entry.update({k: spec[k] for k in ("command", "args", "url") if spec.get(k)})
            if spec["transport"] == "stdio":
                entry["args"] = spec.get("args", [])
        else:
            entry["command"] = _shim(directory / "bin", spec["command"])
            entry["args"] = [str(FAKE_SERVER), "--core", str(core_path), "--server", name, "--state", str(directory / "state")]
        servers[name] = entry
    (directory / "servers.json").write_text(json.dumps({"mcpServers": servers}))
    (directory / "rules.json").write_text(json.dumps(config["rules"]))
    settings = config["settings"]
    env = {
        # Shims first: servers keep the command they were recorded with (list_servers shows it).
        "PATH": str(directory / "bin") + os.pathsep + os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", "/tmp"),
        "GATEWAY_AUDIT_LOG": str(directory / "audit.jsonl"),
        "GATEWAY_INIT_STRATEGY": settings["init_strategy"],
        "GATEWAY_MAX_MESSAGE_BYTES": str(settings["max_message_bytes"]),
        "GATEWAY_DEBUG": "1" if settings["debug"] else "0",
    }
    if settings.get("default_agent"):
        env["GATEWAY_DEFAULT_AGENT"] = settings["default_agent"]
    # Aggregate mode's settings (absent from transcripts recorded before it).
    for key, variable in (
        ("mode", "GATEWAY_MODE"), ("prefix", "GATEWAY_PREFIX"), ("name_separator", "GATEWAY_NAME_SEPARATOR"),
        ("context_window", "GATEWAY_CONTEXT_WINDOW"), ("auto_threshold", "GATEWAY_AUTO_THRESHOLD"),
    ):
        if settings.get(key):
            env[variable] = str(settings[key])
    # What tokens were counted with (bytes / 4 before the setting existed).
    env["GATEWAY_TOKENIZER"] = recorded_tokenizer(lines[0])
    if settings.get("gateway_tools"):
        env["GATEWAY_GATEWAY_TOOLS"] = "1"
    # Tool pinning: transcripts recorded before it were recorded without it.
    env["GATEWAY_PINS"] = str(settings.get("pins") or "off")
    # Recorded before the gateway probed servers' era: it sent them initialize only.
    env["GATEWAY_DOWNSTREAM_ERA"] = str(settings.get("downstream_era") or "handshake")
    command = [sys.executable, "-m", "lockgate.shells", "serve", "--config", "servers.json", "--rules", "rules.json"]
    return command, env


def _shim(bin_dir: Path, command: str) -> str:
    """A program under the recorded (bare) command name that runs this Python with its arguments."""
    if "/" in command:
        return sys.executable  # a path: list_servers will show ours instead
    bin_dir.mkdir(parents=True, exist_ok=True)
    shim = bin_dir / command
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    shim.chmod(0o755)
    return command


def transport(name: str) -> str:
    """The transport a transcript was recorded over (its header's ``transport``: stdio, http, memory)."""
    with (TRANSCRIPTS / f"{name}.core.jsonl").open(encoding="utf-8") as file:
        return str(json.loads(file.readline())["transport"])


def sessions_of(name: str) -> list[str]:
    """The transcripts recorded by one gateway together with ``name`` (``NAME_1``, ``NAME_2``…), in order.

    Over stdio a gateway has one client; a transcript of another transport
    named ``<run>_<N>`` is the N-th session of ``<run>``.
    """
    found = _SESSION_NUMBER.match(name)
    if found is None or transport(name) == "stdio":
        return [name]
    run = found.group(1)
    names = [n for n in corpus() if (m := _SESSION_NUMBER.match(n)) and m.group(1) == run]
    return sorted(names, key=lambda n: int(n.rsplit("_", 1)[1]))


async def shell_replay(
    name: str, *, directory: Path | None = None, timeout: float = 30.0, wire: list[JSON] | None = None
) -> str | None:
    """Replay ``name``'s wire transcript (or ``wire``) against a real ``lockgate serve``; a report, or ``None``.

    A stdio transcript goes to ``lockgate serve`` over stdio. Any other (HTTP,
    or the in-process ``memory`` clients) goes to ``lockgate serve --transport
    http``, together with the other sessions of its run, each in its own HTTP
    session (see :mod:`conformance.replay_http`).
    """
    names = [name] if wire is not None else sessions_of(name)
    # The last session's core transcript holds the whole run: the fakes play it.
    core_path = TRANSCRIPTS / f"{names[-1]}.core.jsonl"
    wires = [wire] if wire is not None else [read_jsonl(TRANSCRIPTS / f"{n}.wire.jsonl") for n in names]
    lines = read_jsonl(core_path)
    max_bytes = lines[0]["config"]["settings"]["max_message_bytes"]
    with tempfile.TemporaryDirectory(prefix="lockgate-replay-") as scratch:
        work = directory or Path(scratch)
        command, env = write_replay_setup(lines, core_path, work)
        if lines[0]["transport"] == "stdio":
            return await _drive(command, env, work, wires[0], max_bytes, timeout)
        from conformance.replay_http import drive_http

        return await drive_http(command, env, work, wires, max_bytes, timeout)


class WireCheck:
    """Checks what a gateway sends against a wire transcript; transport-neutral.

    A driver (stdio here; an HTTP one POSTs instead) sends each line of
    :meth:`client_lines` after ``await check.wait_for(index)``, feeds every
    JSON-RPC message the gateway sends to :meth:`arrive`, calls
    :meth:`closed` when the gateway's output ends, and finally reads
    :meth:`problems`.
    """

    def __init__(self, wire: list[JSON], max_message_bytes: int) -> None:
        self.wire = wire
        self.max_message_bytes = max_message_bytes
        self._recorded = [(i, line) for i, line in enumerate(wire) if line.get("dir") == "s2c"]
        self._matched: dict[int, int] = {}  # recorded wire index -> arrival number
        self._arrivals = 0
        self._problems: list[str] = []
        self._changed = trio.Event()
        self._closed = False

    def client_lines(self) -> Iterator[tuple[int, bytes]]:
        """``(wire index, bytes to send)`` for each client line, in order."""
        for index, line in enumerate(self.wire):
            if line.get("dir") == "c2s":
                yield index, _wire_bytes(line, self.max_message_bytes)

    def arrive(self, msg: Any) -> None:
        """One message from the gateway: match it to the first unmatched recorded one with its key."""
        number = self._arrivals
        self._arrivals += 1
        key = _key(msg)
        for index, line in self._recorded:
            if index not in self._matched and _key(line.get("msg")) == key:
                self._matched[index] = number
                if stable(line.get("msg")) != stable(msg):
                    diff = "\n".join(_differences(stable(line.get("msg")), stable(msg), "message"))
                    self._problems.append(f"wire line {index + 1}: received a different message\n{diff}")
                break
        else:
            self._problems.append(f"received a message that was not recorded: {json.dumps(msg)[:500]}")
        self._wake()

    def closed(self) -> None:
        """The gateway's output ended: nothing more will arrive."""
        self._closed = True
        self._wake()

    async def wait_for(self, before: int) -> None:
        """Wait until every gateway line recorded before wire line ``before`` has arrived (or output ended)."""
        while not self._closed and not all(i in self._matched for i, _ in self._recorded if i < before):
            await self._changed.wait()

    def problems(self) -> list[str]:
        """Every difference: changed, unexpected, missing and misordered messages."""
        missing = [
            f"wire line {index + 1} never arrived: {json.dumps(line.get('msg'))[:500]}"
            for index, line in self._recorded
            if index not in self._matched
        ]
        return [*self._problems, *missing, *_order_problems(self.wire, self._matched)]

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()


async def _drive(command: list[str], env: dict[str, str], cwd: Path, wire: list[JSON], max_bytes: int, timeout: float) -> str | None:
    """Stdio: client lines to the gateway's stdin, its stdout lines to the check."""
    check = WireCheck(wire, max_bytes)
    problems: list[str] = []
    stderr_path = cwd / "stderr.log"
    with stderr_path.open("wb") as stderr:
        process = await trio.lowlevel.open_process(command, stdin=-1, stdout=-1, stderr=stderr, cwd=str(cwd), env=env)
    assert process.stdin is not None and process.stdout is not None

    async def read() -> None:
        assert process.stdout is not None
        buffer = b""
        async for chunk in process.stdout:
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for data in lines:
                try:
                    check.arrive(json.loads(data))
                except ValueError:
                    check.arrive(data.decode("utf-8", "replace"))
        check.closed()

    with trio.move_on_after(timeout) as scope:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read)
            for index, data in check.client_lines():
                await check.wait_for(index)
                await process.stdin.send_all(data + b"\n")
            await check.wait_for(len(wire))
            await process.stdin.aclose()
            await process.wait()
    if scope.cancelled_caught:
        problems.append(f"gave up after {timeout:g} s")
    if process.returncode is None:
        process.kill()
        await process.wait()
    elif process.returncode != 0:
        problems.append(f"lockgate exited with status {process.returncode}")
    problems.extend(check.problems())
    if problems:
        problems.append("lockgate stderr (end):\n" + stderr_path.read_text(errors="replace")[-3000:])
    return "\n".join(problems) or None


def _order_problems(wire: list[JSON], matched: dict[int, int]) -> Iterator[str]:
    """A request's progress notifications must arrive before its response, as recorded."""
    token_to_id: dict[str, str] = {}
    for line in wire:
        msg = line.get("msg")
        if line.get("dir") == "c2s" and isinstance(msg, dict) and "id" in msg:
            meta = (msg.get("params") or {}).get("_meta") if isinstance(msg.get("params"), dict) else None
            if isinstance(meta, dict) and "progressToken" in meta:
                token_to_id[json.dumps(meta["progressToken"])] = json.dumps(msg["id"])
    responses = {json.dumps(line["msg"].get("id")): i for i, line in enumerate(wire)
                 if line.get("dir") == "s2c" and isinstance(line.get("msg"), dict) and "method" not in line["msg"]}
    for i, line in enumerate(wire):
        msg = line.get("msg")
        if line.get("dir") != "s2c" or not isinstance(msg, dict) or msg.get("method") != "notifications/progress":
            continue
        request = token_to_id.get(json.dumps((msg.get("params") or {}).get("progressToken")))
        response = responses.get(request) if request is not None else None
        if response is not None and response > i and i in matched and response in matched:
            if matched[i] > matched[response]:
                yield f"wire line {i + 1}: a progress notification arrived after its request's response"
