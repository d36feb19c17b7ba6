"""End to end over Streamable HTTP: the SDK Client -> `lockgate serve --transport http` -> real MCP servers.

The gateway runs as a real process on 127.0.0.1 with a free port (``--port 0``;
the URL is read from its stderr). Every test ends with no process left behind.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import trio
from mcp import Client, MCPError

from .conftest import Setup, processes_mentioning, structured

RAW = str(Path(__file__).resolve().parents[1] / "shells" / "raw_mcp_server.py")


class Served:
    """A running `lockgate serve --transport http` and its stderr so far."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.process = process
        self.stderr: list[str] = []
        self.url_ready = threading.Event()
        self.url = ""
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for raw in self.process.stderr:
            line = raw.decode(errors="replace")
            self.stderr.append(line)
            found = re.search(r"at (http://\S+/mcp)", line)
            if found and not self.url:
                self.url = found.group(1)
                self.url_ready.set()

    @property
    def base(self) -> str:
        return self.url.removesuffix("/mcp")


@contextmanager
def serve_http(setup: Setup, *extra: str) -> Iterator[Served]:
    if not setup.config.exists():
        setup.write()
    process = subprocess.Popen(
        [sys.executable, *setup.argv(), "--transport", "http", "--port", "0", *extra],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=setup.environ(),
    )
    served = Served(process)
    try:
        assert served.url_ready.wait(30), "".join(served.stderr)
        yield served
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        print("".join(served.stderr))  # shown when the test fails


async def test_the_sdk_client_lists_gets_and_executes_over_http(setup: Setup) -> None:
    with serve_http(setup) as served:
        async with Client(served.url, mode="legacy", read_timeout_seconds=30) as client:
            tools = await client.list_tools()
            assert [t.name for t in tools.tools] == ["list_servers", "search_tools", "get_server_tools", "execute_tool"]
            servers = await client.call_tool("list_servers", {"agent_id": "dev"})
            assert structured(servers) == {"result": [{"name": "testing", "description": "testing for tests"}]}
            listed = structured(await client.call_tool("get_server_tools", {"agent_id": "dev", "server": "testing"}))
            assert "echo" in [t["name"] for t in listed["tools"]]
            result = await client.call_tool(
                "execute_tool", {"agent_id": "dev", "server": "testing", "tool": "echo", "args": {"text": "over http"}}
            )
            assert result.structured_content == {"result": "over http"}
            with pytest.raises(MCPError) as denied:
                await client.call_tool(
                    "execute_tool", {"agent_id": "dev", "server": "testing", "tool": "drop_everything", "args": {}}
                )
            assert denied.value.code == -32000
        assert served.process.poll() is None  # the client leaving ends its session, not the gateway
    assert served.process.returncode == 0
    records = setup.audit_records()
    assert [(r["operation"], r["decision"]) for r in records][-1] == ("execute_tool", "DENY")


async def test_sigterm_lets_a_call_in_flight_finish_then_exits_cleanly(setup: Setup, tmp_path: Path) -> None:
    setup.add("raw", RAW, "--marker", str(tmp_path))
    setup.write()
    with serve_http(setup) as served:
        async with httpx.AsyncClient(timeout=30) as http:
            headers = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
            init = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": "2025-11-25", "capabilities": {}}}
            response = await http.post(served.url, json=init, headers=headers)
            headers["mcp-session-id"] = response.headers["mcp-session-id"]
            call = {
                "jsonrpc": "2.0", "id": 1, "method": "tools/call",
                "params": {"name": "execute_tool", "arguments": {"agent_id": "dev", "server": "raw", "tool": "sleep", "args": {"seconds": 1.5}}},
            }
            answers: list[httpx.Response] = []
            stream_ended = trio.Event()

            async def slow_call() -> None:
                answers.append(await http.post(served.url, json=call, headers=headers))

            async def get_stream() -> None:
                get_headers = {"accept": "text/event-stream", "mcp-session-id": headers["mcp-session-id"]}
                async with http.stream("GET", served.url, headers=get_headers) as response:
                    assert response.status_code == 200
                    async for _ in response.aiter_bytes():
                        pass
                stream_ended.set()  # the gateway ended it on shutdown

            async with trio.open_nursery() as nursery:
                nursery.start_soon(slow_call)
                nursery.start_soon(get_stream)
                with trio.fail_after(20):  # wait until the downstream is running the call
                    while not processes_mentioning(RAW):
                        await trio.sleep(0.05)
                    await trio.sleep(0.3)
                served.process.send_signal(signal.SIGTERM)
            assert stream_ended.is_set()
            assert answers[0].status_code == 200
            assert answers[0].json()["result"]["content"][0]["text"] == "slept"
        assert served.process.wait(30) == 0
    assert processes_mentioning(str(tmp_path)) == []


async def test_health_and_ready_from_the_command(setup: Setup) -> None:
    setup.env["GATEWAY_INIT_STRATEGY"] = "eager"
    with serve_http(setup) as served:
        async with httpx.AsyncClient(timeout=30) as http:
            assert (await http.get(f"{served.base}/health")).json()["status"] == "healthy"
            with trio.fail_after(30):
                while (ready := await http.get(f"{served.base}/ready")).status_code != 200:
                    assert ready.status_code == 503 and ready.json()["status"] == "not_ready"
                    await trio.sleep(0.1)
            assert ready.json() == {"status": "ready", "servers": {"testing": "ready"}, "eras": {"testing": "stateless"}}


def test_a_taken_port_is_a_clear_error(setup: Setup) -> None:
    setup.write()
    with serve_http(setup) as served:
        port = served.url.rsplit(":", 1)[1].split("/")[0]
        result = subprocess.run(
            [sys.executable, *setup.argv(), "--transport", "http", "--port", port],
            env=setup.environ(), capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
        )
        assert result.returncode == 2
        assert f"cannot listen on 127.0.0.1:{port}: address already in use" in result.stderr
        assert "--port" in result.stderr and "Traceback" not in result.stderr


async def test_record_writes_replayable_transcripts_per_http_session(setup: Setup, tmp_path: Path) -> None:
    from lockgate.core.transcript import replay

    from conformance.replay import read_jsonl

    record = tmp_path / "recorded"
    with serve_http(setup, "--record", str(record)) as served:
        for text in ("one", "two"):  # two sessions, one after the other
            async with Client(served.url, mode="legacy", read_timeout_seconds=30) as client:
                result = await client.call_tool(
                    "execute_tool", {"agent_id": "dev", "server": "testing", "tool": "echo", "args": {"text": text}}
                )
                assert result.structured_content == {"result": text}
    assert served.process.returncode == 0
    cores = sorted(record.glob("*-s*.core.jsonl"))
    wires = sorted(record.glob("*-s*.wire.jsonl"))
    assert len(cores) == 2 and len(wires) == 2
    for path in cores:
        lines = read_jsonl(path)
        assert lines[0]["transport"] == "http"
        assert replay(lines) is None, path.name
    for path, text in zip(wires, ("one", "two")):
        wire = read_jsonl(path)
        assert [w["dir"] for w in wire][:2] == ["c2s", "s2c"]  # initialize and its answer
        assert any(w["dir"] == "s2c" and text in json.dumps(w.get("msg")) for w in wire)
