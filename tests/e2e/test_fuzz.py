"""Fuzz a real `lockgate serve` over stdio and over HTTP with generated frames.

The frames come from :class:`tests.fuzzing.FrameMaker` with a fixed seed, so
every CI run sends the same bytes (``LOCKGATE_FUZZ_SEED`` picks another seed
for a run by hand; a failure names the seed and the frame). They mix
well-formed JSON-RPC and tool calls forwarded to a real downstream with every
poison class of the strict JSON boundary, unsound ids, batches, truncated
frames, byte noise, invalid UTF-8, blank lines, CRLF and lines at and over
``GATEWAY_MAX_MESSAGE_BYTES`` (set to 64 KiB here). ``bench/fuzz.py`` is the
long-running version.

The contract checked: the gateway stays up; every request with a sound id
gets exactly one answer with that id (in any order: forwarded calls come
back when the downstream answers); no answer carries an id nobody asked (a
response's, a batch member's, a refused line's); nothing is answered -32603;
a normal call works afterwards and the gateway exits cleanly, having logged
no traceback. Each part is bounded in time.
"""

from __future__ import annotations

import os
import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import httpx
import trio
from mcp import Client

from ..fuzzing import HTTP_HEADERS, KINDS, Discrepancy, Frame, FrameMaker, Ledger, encode, http_messages, open_http_session
from .conftest import Setup
from .test_http import serve_http
from .test_poison import no_process_left, serving

SEED = int(os.environ.get("LOCKGATE_FUZZ_SEED", "20261130"))
MAX_BYTES = 65536
STDIO_FRAMES = 2000
HTTP_FRAMES = 1000
HTTP_WORKERS = 4
#: What a POST to /mcp may be answered with; anything else (a 500, a dropped connection) fails the test.
HTTP_STATUSES = {200, 202, 400, 404, 413}

ECHO = {"agent_id": "dev", "server": "testing", "tool": "echo", "args": {"text": "still here"}}


def _report(problems: list[Discrepancy], seed: int, stderr: str) -> str:
    shown = "\n".join(f"  - {p.describe()}" for p in problems[:10])
    return f"{len(problems)} discrepancies with seed {seed} (first ten):\n{shown}\ngateway stderr (end):\n{stderr[-3000:]}"


def _check_call(request_id: Any) -> tuple[Frame, dict[str, Any]]:
    message = {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": {"name": "execute_tool", "arguments": ECHO}}
    body = encode(message)
    return Frame(kind="check", line=body + b"\n", body=body, asked=request_id), message


def _echoed(answer: Any) -> bool:
    return isinstance(answer, dict) and answer.get("result", {}).get("structuredContent") == {"result": "still here"}


async def test_generated_frames_over_stdio_are_each_answered_once_and_the_gateway_stays_up(setup: Setup) -> None:
    setup.env["GATEWAY_MAX_MESSAGE_BYTES"] = str(MAX_BYTES)
    frames = FrameMaker(SEED, max_bytes=MAX_BYTES).frames(STDIO_FRAMES)
    assert {f.kind for f in frames} == set(KINDS)
    data = b"".join(f.line for f in frames)
    # Written in chunks of random sizes, so lines (and UTF-8 sequences) arrive split anywhere.
    cuts = random.Random(SEED + 1)
    ledger = Ledger()
    async with serving(setup, timeout=150) as gateway:
        gateway.listener = ledger.received
        for index, frame in enumerate(frames):
            ledger.sent(index, frame)
        position = 0
        while position < len(data):
            size = cuts.choice([1, 2, 3, 17, 512, 4096, 65536, 1 << 20])
            await gateway.send(data[position : position + size])
            position += size
        check, message = _check_call("check#stdio")
        ledger.sent(len(frames), check)
        assert _echoed(await gateway.request(message))
        # Forwarded calls may still be on their way back.
        with trio.move_on_after(60):
            await gateway.wait_until(lambda: ledger.outstanding == 0)
        for line in gateway.unreadable:
            ledger.unreadable(line)
        problems = ledger.discrepancies()
        assert not problems, _report(problems, SEED, gateway.stderr.decode(errors="replace"))
    # Refusals are most of the answers: make sure calls went through too.
    assert ledger.asked > STDIO_FRAMES // 3 and ledger.answers >= ledger.asked


async def test_generated_frames_over_http_get_valid_answers_and_the_gateway_keeps_serving(setup: Setup) -> None:
    setup.env["GATEWAY_MAX_MESSAGE_BYTES"] = str(MAX_BYTES)
    frames = FrameMaker(SEED + 2, max_bytes=MAX_BYTES).frames(HTTP_FRAMES)
    # Most frames go to one initialized session; some to none, some to a session that does not exist.
    routes = random.Random(SEED + 3).choices(["session", "none", "unknown"], [90, 6, 4], k=len(frames))
    ledger = Ledger()
    statuses: Counter[int] = Counter()
    problems: list[Discrepancy] = []
    new_sessions: list[str] = []
    with serve_http(setup) as served, trio.fail_after(150):
        async with httpx.AsyncClient(timeout=60) as http:
            session = await open_http_session(http, served.url)
            unknown = {**session, "mcp-session-id": "no-such-session"}

            async def post(index: int) -> None:
                frame, route = frames[index], routes[index]
                if route != "session" and frame.asked is not None:
                    # Outside a session a request may be refused without its id (400, 404).
                    frame = replace(frame, asked=None, tolerated=frame.asked)
                ledger.sent(index, frame)
                headers = session if route == "session" else HTTP_HEADERS if route == "none" else unknown
                try:
                    response = await http.post(served.url, content=frame.body, headers=headers)
                except httpx.TransportError as exc:
                    problems.append(Discrepancy(f"no HTTP answer: {type(exc).__name__}: {exc}", index, frame))
                    return
                statuses[response.status_code] += 1
                if response.status_code not in HTTP_STATUSES:
                    problems.append(Discrepancy(f"HTTP {response.status_code}", index, frame, response.text[:300]))
                if "mcp-session-id" in response.headers and route == "none":
                    new_sessions.append(response.headers["mcp-session-id"])
                try:
                    messages = http_messages(response.headers.get("content-type"), response.content)
                except ValueError:
                    problems.append(Discrepancy("an HTTP body that is not JSON-RPC", index, frame, response.text[:300]))
                    return
                for message in messages:
                    if not (isinstance(message, dict) and "method" in message):  # progress on an SSE stream
                        ledger.received(message)

            async def worker(indices: Iterator[int]) -> None:
                for index in indices:  # shared by the workers: each index is posted once
                    await post(index)

            indices = iter(range(len(frames)))
            async with trio.open_nursery() as nursery:
                for _ in range(HTTP_WORKERS):
                    nursery.start_soon(worker, indices)

            assert served.process.poll() is None, _report(problems, SEED + 2, "".join(served.stderr))
            check, _ = _check_call("check#http")
            ledger.sent(len(frames), check)
            response = await http.post(served.url, content=check.body, headers=session)
            assert response.status_code == 200 and _echoed(response.json())
            ledger.received(response.json())
            for stale in new_sessions:
                await http.delete(served.url, headers={**HTTP_HEADERS, "mcp-session-id": stale})
        async with Client(served.url, mode="legacy", read_timeout_seconds=30) as client:
            result = await client.call_tool("execute_tool", ECHO)
            assert result.structured_content == {"result": "still here"}
        assert served.process.poll() is None
    assert served.process.returncode == 0
    stderr = "".join(served.stderr)
    problems += ledger.discrepancies()
    assert not problems, _report(problems, SEED + 2, stderr)
    assert "Traceback" not in stderr and "internal error" not in stderr, stderr[-5000:]
    assert await no_process_left(setup)
    assert statuses[200] and statuses[202] and statuses[400] and statuses[404] and statuses[413], statuses
