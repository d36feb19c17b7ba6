"""Shell replay over Streamable HTTP: wire transcripts POSTed to a real ``lockgate serve --transport http``.

One gateway serves every wire transcript given (the sessions of one
recording, e.g. ``concurrent_sessions_1`` and ``_2``), each in a session of
its own, at the same time. Per session: the first client line (the
``initialize``) is POSTed without a session and its answer's
``Mcp-Session-Id`` is sent with every later request, together with
``MCP-Protocol-Version``; a GET stream is opened for messages about no
request; each later client line is POSTed once every gateway message
recorded before it has arrived (:meth:`WireCheck.wait_for`). Every JSON-RPC
message that comes back, as a JSON body or as an SSE event, goes to the
session's :class:`~conformance.replay.WireCheck`. When its lines are done the
session is ended with DELETE; when all are, the gateway gets SIGTERM and must
exit 0.

Order. Each POST travels on its own connection, so the next line is POSTed
only once the gateway has taken the previous one: for a notification (202)
and a request answered over SSE the response head says so. A request
answered as one JSON body shows nothing before its response; the driver waits
for that response unless the recording has the client's next line before it
(then it waits a moment instead, see ``OVERLAP_WAIT``).
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
from pathlib import Path

import httpx
import trio

from conformance.replay import JSON, WireCheck

#: How long a request answered as JSON gets to reach the gateway before the
#: client's next line, when the recording has that line before its answer.
OVERLAP_WAIT = 0.2

ACCEPT = "application/json, text/event-stream"
URL = re.compile(rb"at (http://\S+/mcp)")


class Gateway:
    """A running ``lockgate serve --transport http --port 0``: its URL and its stderr."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.url = ""
        self.stderr = bytearray()
        self._ready = trio.Event()

    async def read_stderr(self) -> None:
        assert self.process.stderr is not None
        async for chunk in self.process.stderr:
            self.stderr += chunk
            if not self.url and (found := URL.search(self.stderr)):
                self.url = found.group(1).decode()
                self._ready.set()
        self._ready.set()  # it exited: nobody waits for a URL that will not come

    async def ready(self) -> str:
        await self._ready.wait()
        if not self.url:
            raise RuntimeError("lockgate exited before serving:\n" + self.stderr.decode(errors="replace")[-3000:])
        return self.url

    async def stop(self) -> int:
        """SIGTERM (a clean shutdown), and its exit status."""
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        return await self.process.wait()


async def start_gateway(nursery: trio.Nursery, command: list[str], env: dict[str, str], cwd: Path) -> Gateway:
    """Start ``command --transport http --port 0`` in ``cwd``; return once it serves."""
    argv = [*command, "--transport", "http", "--port", "0"]
    process = await trio.lowlevel.open_process(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=str(cwd), env=env
    )
    gateway = Gateway(process)
    nursery.start_soon(gateway.read_stderr)
    with trio.fail_after(30):
        await gateway.ready()
    return gateway


async def drive_http(
    command: list[str], env: dict[str, str], cwd: Path, wires: list[list[JSON]], max_bytes: int, timeout: float
) -> str | None:
    """Replay ``wires`` (one per session) against one gateway; a report of every difference, or ``None``."""
    checks = [WireCheck(wire, max_bytes) for wire in wires]
    problems: list[str] = []
    async with trio.open_nursery() as nursery:
        gateway = await start_gateway(nursery, command, env, cwd)
        try:
            with trio.move_on_after(timeout) as scope:
                async with httpx.AsyncClient(timeout=None) as http, trio.open_nursery() as sessions:
                    for check in checks:
                        sessions.start_soon(_session, http, gateway.url, check, problems)
            if scope.cancelled_caught:
                problems.append(f"gave up after {timeout:g} s")
            with trio.move_on_after(30):
                code = await gateway.stop()
                if code != 0:
                    problems.append(f"lockgate exited with status {code}")
        finally:
            if gateway.process.returncode is None:
                gateway.process.kill()
                await gateway.process.wait()
    for number, check in enumerate(checks, 1):
        prefix = f"session {number}: " if len(checks) > 1 else ""
        problems.extend(prefix + p for p in check.problems())
    if problems:
        problems.append("lockgate stderr (end):\n" + gateway.stderr.decode(errors="replace")[-3000:])
    return "\n".join(problems) or None


async def _session(http: httpx.AsyncClient, url: str, check: WireCheck, problems: list[str]) -> None:
    headers = {"accept": ACCEPT, "content-type": "application/json"}
    lines = list(check.client_lines())
    if not lines:
        return
    async with trio.open_nursery() as nursery:
        for position, (index, data) in enumerate(lines):
            await check.wait_for(index)
            if position == 0:
                answer = await http.post(url, content=data, headers=headers)
                _arrive_body(answer, check, problems)
                session = answer.headers.get("mcp-session-id")
                if session is None:
                    problems.append(f"the first line got no session (HTTP {answer.status_code}): {answer.text[:300]}")
                    return
                headers["mcp-session-id"] = session
                version = (answer.json().get("result") or {}).get("protocolVersion")
                if isinstance(version, str):
                    headers["mcp-protocol-version"] = version
                await nursery.start(_get_stream, http, url, dict(headers), check, problems)
                continue
            taken = trio.Event()
            nursery.start_soon(_post, http, url, data, dict(headers), check, problems, taken)
            next_index = lines[position + 1][0] if position + 1 < len(lines) else len(check.wire)
            with trio.move_on_after(OVERLAP_WAIT if _answered_after(check.wire, index, next_index) else float("inf")):
                await taken.wait()
        await check.wait_for(len(check.wire))
        # Ending the session ends its GET stream too.
        await http.delete(url, headers=headers)


def _answered_after(wire: list[JSON], index: int, next_index: int) -> bool:
    """Whether the request on wire line ``index`` was answered only after the client's next line."""
    msg = wire[index].get("msg")
    if not isinstance(msg, dict) or "method" not in msg or "id" not in msg:
        return False
    for line in wire[index + 1 : next_index]:
        answer = line.get("msg")
        if line.get("dir") == "s2c" and isinstance(answer, dict) and "method" not in answer and answer.get("id") == msg["id"]:
            return False
    return True


async def _post(
    http: httpx.AsyncClient, url: str, data: bytes, headers: dict[str, str], check: WireCheck,
    problems: list[str], taken: trio.Event,
) -> None:
    async with http.stream("POST", url, content=data, headers=headers) as answer:
        taken.set()
        if answer.headers.get("content-type", "").startswith("text/event-stream"):
            await _read_sse(answer, check)
        else:
            await answer.aread()
            _arrive_body(answer, check, problems)


async def _get_stream(
    http: httpx.AsyncClient, url: str, headers: dict[str, str], check: WireCheck, problems: list[str],
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """The session's own SSE stream (messages about no request), until the session ends."""
    headers = {**headers, "accept": "text/event-stream"}
    headers.pop("content-type")
    async with http.stream("GET", url, headers=headers) as answer:
        task_status.started()
        if answer.status_code != 200:
            problems.append(f"GET stream: HTTP {answer.status_code}")
            return
        await _read_sse(answer, check)


def _arrive_body(answer: httpx.Response, check: WireCheck, problems: list[str]) -> None:
    if answer.status_code == 202:
        return
    if answer.status_code != 200:
        # The wire transcript holds only what reached the core: an HTTP refusal is a difference.
        problems.append(f"HTTP {answer.status_code}: {answer.text[:500]}")
        return
    try:
        check.arrive(json.loads(answer.content))
    except ValueError:
        problems.append(f"HTTP {answer.status_code} ({answer.headers.get('content-type')}), not JSON: {answer.text[:500]!r}")


async def _read_sse(answer: httpx.Response, check: WireCheck) -> None:
    """Each SSE event's data to ``check`` (priming events carry none)."""
    data: list[str] = []
    async for line in answer.aiter_lines():
        if line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
        elif line == "" and data:
            text = "\n".join(data)
            data = []
            if not text:
                continue  # a priming event: an id to resume from, no message
            try:
                check.arrive(json.loads(text))
            except ValueError:
                check.arrive(text)
