"""Regression tests for the issue "No single message, connection or stuck server can stop the gateway".

Python's json accepts what it cannot write back: lone surrogates (the escape
``"\\ud800"`` or the raw bytes ``ED A0 80`` in a string), ``NaN``,
``Infinity``, ``1e400``, integers of any length, nesting to the stack limit.
Each frame below once killed `lockgate serve`, switched its audit log off or
went unanswered. Now every one is refused at the strict JSON boundary
(``lockgate.core._strictjson``): -32700 when the text is not JSON (invalid
UTF-8, ``NaN``, ``Infinity``), -32602 for a flaw inside ``params``, -32600
for one elsewhere, with the request's id when that id is sound, else null.

Each test drives a real gateway, with the SDK testing server behind it, by
writing raw bytes to its stdin (the SDK client could not send these frames),
then checks that a normal ``execute_tool`` call still works, that the
gateway exits cleanly with no traceback logged, and that no process is left.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import trio
from mcp import Client

from ..fuzzing import HTTP_HEADERS, RawGateway, open_http_session
from .conftest import SERVERS, Setup, processes_mentioning
from .test_http import serve_http


def echo_arguments(text: str) -> dict[str, Any]:
    return {"agent_id": "dev", "server": "testing", "tool": "echo", "args": {"text": text}}


async def no_process_left(setup: Setup) -> bool:
    """Wait up to 10 s for every process of this test (they mention its folder) to end."""
    with trio.move_on_after(10):
        while processes_mentioning(str(setup.tmp)):
            await trio.sleep(0.1)
    return processes_mentioning(str(setup.tmp)) == []


@asynccontextmanager
async def serving(setup: Setup, timeout: float = 60) -> AsyncIterator[RawGateway]:
    """An initialized `lockgate serve` over stdio; after the block, it must still run, then exit 0 and leave nothing."""
    setup.write()
    with trio.fail_after(timeout):
        async with RawGateway.start([sys.executable, *setup.argv()], setup.environ()) as gateway:
            await gateway.initialize()
            yield gateway
            assert gateway.alive, gateway.stderr.decode(errors="replace")
            assert await gateway.close() == 0
        stderr = gateway.stderr.decode(errors="replace")
        assert "Traceback" not in stderr and "internal error" not in stderr, stderr
        assert await no_process_left(setup)


async def assert_echo_works(gateway: RawGateway, request_id: int | str = "echo-after") -> None:
    answer = await gateway.call(request_id, "execute_tool", **echo_arguments("after"))
    assert answer["result"]["structuredContent"] == {"result": "after"}, answer


def call(request_id: bytes, arguments: bytes) -> bytes:
    """A ``tools/call`` of ``execute_tool`` as raw JSON text (``request_id`` as it is written)."""
    return (
        b'{"jsonrpc":"2.0","id":' + request_id + b',"method":"tools/call",'
        b'"params":{"name":"execute_tool","arguments":' + arguments + b"}}"
    )


def forward(request_id: bytes, args: bytes, extra: bytes = b"") -> bytes:
    """An ``execute_tool`` echo call by agent dev whose forwarded ``args`` are ``args``."""
    return call(request_id, b'{"agent_id":"dev","server":"testing","tool":"echo","args":' + args + extra + b"}")


@dataclass(frozen=True)
class Case:
    name: str
    frame: bytes
    id: int | str | None  # what the answer must carry
    code: int


DEEP_900 = b"[" * 900 + b"]" * 900

CASES = [
    Case("ping-whose-id-is-a-lone-surrogate", b'{"jsonrpc":"2.0","id":"\\ud800","method":"ping"}', None, -32600),
    Case("method-is-a-lone-surrogate", b'{"jsonrpc":"2.0","id":2,"method":"\\ud800"}', 2, -32600),
    Case(
        "tool-name-of-tools-call-is-a-lone-surrogate",
        b'{"jsonrpc":"2.0","id":"c-3","method":"tools/call","params":{"name":"\\ud800","arguments":{}}}',
        "c-3",
        -32602,
    ),
    Case(
        "server-of-execute-tool-is-a-lone-surrogate",
        call(b"4", b'{"agent_id":"dev","server":"\\udfff","tool":"echo","args":{"text":"x"}}'),
        4,
        -32602,
    ),
    Case(
        "tool-of-execute-tool-is-a-lone-surrogate",
        call(b'"c-5"', b'{"agent_id":"dev","server":"testing","tool":"\\ud800","args":{"text":"x"}}'),
        "c-5",
        -32602,
    ),
    Case("lone-surrogate-as-a-forwarded-value", forward(b"6", b'{"text":"\\ud800"}'), 6, -32602),
    Case(
        "lone-surrogate-deep-in-forwarded-args",
        forward(b'"c-7"', b'{"text":"x","more":[1,{"deep":["ok","a\\udc00b"]}]}'),
        "c-7",
        -32602,
    ),
    Case("lone-surrogate-as-a-forwarded-key", forward(b"8", b'{"text":"x","\\ud83d":1}'), 8, -32602),
    Case("raw-bytes-ED-A0-80-in-a-forwarded-string", forward(b"9", b'{"text":"a\xed\xa0\x80b"}'), 9, -32700),
    Case("raw-bytes-ED-A0-80-as-the-id", b'{"jsonrpc":"2.0","id":"\xed\xa0\x80","method":"ping"}', None, -32700),
    Case("NaN-in-forwarded-args", forward(b"10", b'{"text":NaN}'), 10, -32700),
    Case("Infinity-in-forwarded-args", forward(b'"c-11"', b'{"text":"x","n":Infinity}'), "c-11", -32700),
    Case("1e400-in-forwarded-args", forward(b"12", b'{"text":"x","n":1e400}'), 12, -32602),
    Case("400-digit-timeout-ms", forward(b"13", b'{"text":"x"}', b',"timeout_ms":' + b"9" * 400), 13, -32602),
    # Used to get no answer at all.
    Case("forwarded-argument-nested-900-levels", forward(b"14", b'{"text":' + DEEP_900 + b"}"), 14, -32602),
]


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
async def test_a_poisoned_frame_is_refused_with_its_id_and_the_gateway_carries_on(setup: Setup, case: Case) -> None:
    async with serving(setup) as gateway:
        answers = await gateway.exchange(case.frame)
        assert [(a["id"], a["error"]["code"]) for a in answers] == [(case.id, case.code)], answers
        await assert_echo_works(gateway)


async def test_a_call_refused_for_a_surrogate_key_is_audited_and_auditing_goes_on(setup: Setup) -> None:
    # This key once made its audit record unencodable, which switched the audit log off for good.
    frame = call(b"20", b'{"agent_id":"dev","server":"testing","tool":"echo","args":{"text":"x"},"\\ud800":1}')
    async with serving(setup) as gateway:
        answers = await gateway.exchange(frame)
        assert [(a["id"], a["error"]["code"]) for a in answers] == [(20, -32602)]
        await assert_echo_works(gateway, 21)
        denied = await gateway.call(22, "execute_tool", agent_id="dev", server="testing", tool="drop_everything", args={})
        assert denied["error"]["data"]["code"] == "DENIED_BY_POLICY"
    records = setup.audit_records()
    assert [(r["operation"], r["decision"], r["error_code"]) for r in records] == [
        ("execute_tool", "ERROR", "INVALID_PARAMS"),
        ("execute_tool", "ALLOW", None),
        ("execute_tool", "DENY", "DENIED_BY_POLICY"),
    ]
    refused = records[0]["args"]
    assert refused["keys"] == ["agent_id", "args", "server", "tool", "\ufffd"]
    assert "lone UTF-16 surrogate" in refused["invalid"]
    assert not any("audit_error" in r for r in records)


async def test_a_request_whose_id_follows_a_member_too_deep_to_parse_is_answered(setup: Setup) -> None:
    # Regression: past ~980 levels Python's parser gives up and the members
    # after the deep one are lost; a request with its method before and its id
    # after it was taken for a notification and got no answer at all. The id
    # cannot be read, so the answer says null.
    deep = b"[" * 5000 + b"]" * 5000
    frame = b'{"jsonrpc":"2.0","method":"tools/call","params":{"name":"execute_tool","arguments":{"args":' + deep + b'}},"id":30}'
    async with serving(setup) as gateway:
        answers = await gateway.exchange(frame)
        assert [(a["id"], a["error"]["code"]) for a in answers] == [(None, -32602)]


async def test_a_poisoned_initialize_over_http_gets_400_and_open_sessions_keep_working(setup: Setup) -> None:
    # One POST of this once killed the whole HTTP gateway, and every session with it.
    poisoned = b'{"jsonrpc":"2.0","id":"\\ud800","method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{}}}'
    setup.write()
    with serve_http(setup) as served:
        with trio.fail_after(60):
            async with (
                httpx.AsyncClient(timeout=30) as http,
                Client(served.url, mode="legacy", read_timeout_seconds=30) as client,
            ):
                # Two sessions opened before: the SDK client's and one by hand.
                result = await client.call_tool("execute_tool", echo_arguments("before"))
                assert result.structured_content == {"result": "before"}
                session = await open_http_session(http, served.url)

                response = await http.post(served.url, content=poisoned, headers=HTTP_HEADERS)
                assert response.status_code == 400
                assert response.json()["id"] is None and response.json()["error"]["code"] == -32600
                # A sound id is named in the error.
                response = await http.post(
                    served.url,
                    content=b'{"jsonrpc":"2.0","id":7,"method":"initialize","params":{"protocolVersion":"\\ud800","capabilities":{}}}',
                    headers=HTTP_HEADERS,
                )
                assert response.status_code == 400
                assert (response.json()["id"], response.json()["error"]["code"]) == (7, -32602)
                # Within a session a refused request is answered like any request, as over stdio.
                response = await http.post(served.url, content=forward(b'"c-8"', b'{"text":"\\ud800"}'), headers=session)
                assert response.status_code == 200
                assert (response.json()["id"], response.json()["error"]["code"]) == ("c-8", -32602)

                assert served.process.poll() is None
                result = await client.call_tool("execute_tool", echo_arguments("after"))
                assert result.structured_content == {"result": "after"}
                response = await http.post(
                    served.url,
                    json={"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": {"name": "execute_tool", "arguments": echo_arguments("raw")}},
                    headers=session,
                )
                assert response.status_code == 200 and response.json()["result"]["structuredContent"] == {"result": "raw"}
        assert served.process.poll() is None
    assert served.process.returncode == 0
    assert "Traceback" not in "".join(served.stderr)
    assert await no_process_left(setup)


async def test_a_call_refused_over_http_is_audited(setup: Setup) -> None:
    # Regression: the HTTP rules answered it 400 before the core saw it, so it went unaudited.
    frame = call(b"40", b'{"agent_id":"dev","server":"testing","tool":"echo","args":{"text":"x"},"\\ud800":1}')
    setup.write()
    with serve_http(setup) as served:
        with trio.fail_after(60):
            async with httpx.AsyncClient(timeout=30) as http:
                session = await open_http_session(http, served.url)
                response = await http.post(served.url, content=frame, headers=session)
                assert (response.status_code, response.json()["id"], response.json()["error"]["code"]) == (200, 40, -32602)
    assert served.process.returncode == 0
    records = setup.audit_records() if setup.audit.exists() else []  # the log is created with its first record
    assert [(r["operation"], r["decision"], r["error_code"]) for r in records] == [("execute_tool", "ERROR", "INVALID_PARAMS")]


async def test_a_server_answer_that_cannot_be_forwarded_fails_its_call_at_once(setup: Setup) -> None:
    raw_server = str(SERVERS / "raw_server.py")
    setup.add("raw", raw_server, "--marker", str(setup.tmp))
    async with serving(setup) as gateway:
        answer = await gateway.call(1, "execute_tool", agent_id="dev", server="raw", tool="poison", args={})
        assert answer["id"] == 1 and answer["error"]["code"] == -32603
        assert answer["error"]["data"]["server"] == "raw"
        assert answer["error"]["data"]["path"] == "result.content[0].text"
        # The server is fine otherwise, and so is everyone else.
        answer = await gateway.call(2, "execute_tool", agent_id="dev", server="raw", tool="echo", args={"text": "ok"})
        assert answer["result"]["content"][0]["text"] == "ok"
        await assert_echo_works(gateway)
