"""Both protocol eras at the front: the SDK client in each mode, over stdio and Streamable HTTP."""

from __future__ import annotations

import contextlib
import os
import shlex
import sys
from typing import Any

import httpx
import pytest
from mcp import Client, MCPError, StdioServerParameters

from .conftest import Setup, structured
from .test_http import serve_http

MODERN = "2026-07-28"
ENVELOPE = {"io.modelcontextprotocol/protocolVersion": MODERN, "io.modelcontextprotocol/clientCapabilities": {}}


def stdio_params(setup: Setup) -> StdioServerParameters:
    setup.write() if not setup.config.exists() else None
    return StdioServerParameters(command=sys.executable, args=setup.argv(), env=setup.environ())


async def exercise(client: Client) -> None:
    tools = await client.list_tools()
    assert [t.name for t in tools.tools] == ["list_servers", "search_tools", "get_server_tools", "execute_tool"]
    result = await client.call_tool(
        "execute_tool", {"agent_id": "dev", "server": "testing", "tool": "echo", "args": {"text": "modern"}}
    )
    assert structured(result) == {"result": "modern"}
    with pytest.raises(MCPError) as denied:
        await client.call_tool("execute_tool", {"agent_id": "dev", "server": "testing", "tool": "drop_everything", "args": {}})
    assert denied.value.code == -32000


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_the_sdk_client_in_each_mode_over_stdio(setup: Setup, mode: Any) -> None:
    async with Client(stdio_params(setup), mode=mode, read_timeout_seconds=30) as client:
        assert client.protocol_version == (MODERN if mode == "auto" else "2025-11-25")
        assert client.server_info is not None and client.server_info.name == "lockgate"
        await exercise(client)


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_the_sdk_client_in_each_mode_over_http(setup: Setup, mode: Any) -> None:
    with serve_http(setup) as served:
        async with Client(served.url, mode=mode, read_timeout_seconds=30) as client:
            assert client.protocol_version == (MODERN if mode == "auto" else "2025-11-25")
            await exercise(client)


async def test_both_eras_share_one_http_gateway_at_once(setup: Setup) -> None:
    with serve_http(setup) as served:
        async with Client(served.url, mode="legacy", read_timeout_seconds=30) as old, Client(
            served.url, mode="auto", read_timeout_seconds=30
        ) as new:
            assert (old.protocol_version, new.protocol_version) == ("2025-11-25", MODERN)
            await exercise(old)
            await exercise(new)


async def test_stateless_http_requests_refused_as_the_spec_says(setup: Setup) -> None:
    with serve_http(setup) as served:
        headers = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
        modern = {**headers, "mcp-protocol-version": MODERN}
        async with httpx.AsyncClient(timeout=30) as http:

            async def post(body: Any, extra: dict[str, str]) -> httpx.Response:
                return await http.post(served.url, json=body, headers={**modern, **extra})

            listing = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta": ENVELOPE}}
            ok = await post(listing, {"mcp-method": "tools/list"})
            assert ok.status_code == 200 and "mcp-session-id" not in ok.headers
            assert ok.json()["result"]["resultType"] == "complete" and ok.json()["result"]["cacheScope"] == "private"
            # The header says another method than the body: -32020.
            mismatch = await post(listing, {"mcp-method": "tools/call"})
            assert mismatch.status_code == 400 and mismatch.json()["error"]["code"] == -32020
            assert mismatch.json()["id"] == 1
            # No envelope: -32602.
            bare = await post({"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {}}, {"mcp-method": "tools/list"})
            assert bare.status_code == 400 and bare.json()["error"]["code"] == -32602 and bare.json()["id"] == 2
            # A version nobody speaks: -32022 with what is spoken.
            future = {"jsonrpc": "2.0", "id": 3, "method": "tools/list",
                      "params": {"_meta": {**ENVELOPE, "io.modelcontextprotocol/protocolVersion": "2099-01-01"}}}
            unsupported = await post(future, {"mcp-method": "tools/list", "mcp-protocol-version": "2099-01-01"})
            assert unsupported.status_code == 400
            assert unsupported.json()["error"]["code"] == -32022 and unsupported.json()["id"] == 3
            assert unsupported.json()["error"]["data"]["supported"] == [MODERN]
            # A method nobody has: 404 with -32601.
            nothing = {"jsonrpc": "2.0", "id": 4, "method": "no/such", "params": {"_meta": ENVELOPE}}
            missing = await post(nothing, {"mcp-method": "no/such"})
            assert missing.status_code == 404 and missing.json()["error"]["code"] == -32601
            # Mcp-Name in its base64 form names the tool.
            call = {"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": {
                "name": "list_servers", "arguments": {"agent_id": "dev"}, "_meta": ENVELOPE}}
            named = await post(call, {"mcp-method": "tools/call", "mcp-name": "=?base64?bGlzdF9zZXJ2ZXJz?="})
            assert named.status_code == 200 and named.json()["result"]["resultType"] == "complete"
            wrong = await post(call, {"mcp-method": "tools/call", "mcp-name": "execute_tool"})
            assert wrong.status_code == 400 and wrong.json()["error"]["code"] == -32020
            # No GET stream and no DELETE in this era.
            for method in ("GET", "DELETE"):
                answer = await http.request(method, served.url, headers={**modern, "accept": "text/event-stream"})
                assert answer.status_code == 405 and answer.headers["allow"] == "POST"
            # A notification is acknowledged, and the gateway goes on serving.
            note = await post({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 1}}, {"mcp-method": "notifications/cancelled"})
            assert note.status_code == 202
            assert (await post(listing, {"mcp-method": "tools/list"})).status_code == 200


@pytest.mark.parametrize("transport", ["stdio", "http"])
async def test_a_handshake_era_server_asks_a_stateless_client_through_input_required(setup: Setup, transport: str) -> None:
    from .test_aggregate import RULES as AGGREGATE_RULES, SERVERS, _elicit, _roots, _sample

    setup.add("catalog", str(SERVERS / "catalog_server.py"))
    setup.write(AGGREGATE_RULES)
    setup.env.update(GATEWAY_MODE="aggregate", GATEWAY_DEFAULT_AGENT="dev", GATEWAY_DOWNSTREAM_ERA="handshake")
    callbacks: dict[str, Any] = {"sampling_callback": _sample, "elicitation_callback": _elicit, "list_roots_callback": _roots}
    context: Any = contextlib.nullcontext() if transport == "stdio" else serve_http(setup)
    with context as served:
        target: Any = stdio_params(setup) if transport == "stdio" else served.url
        async with Client(target, mode="auto", read_timeout_seconds=30, **callbacks) as client:
            assert client.protocol_version == MODERN
            asked = await client.call_tool("catalog__ask", {"question": "2+2?"})
            assert asked.structured_content == {"result": "model says 2+2?"}
            confirmed = await client.call_tool("catalog__confirm", {})
            assert confirmed.structured_content == {"result": "accept:ok=True"}
            listed = await client.call_tool("catalog__roots", {})
            assert listed.structured_content == {"result": "file:///work"}
    records = [r for r in setup.audit_records() if r.get("operation") == "tools/call"]
    assert [(r["tool"], r["decision"]) for r in records] == [("ask", "ALLOW"), ("confirm", "ALLOW"), ("roots", "ALLOW")]


def test_a_websocket_client_of_the_stateless_era(setup: Setup) -> None:
    import json

    from websockets.sync.client import connect

    with serve_http(setup, "--transport", "http,ws") as served:
        url = served.base.replace("http://", "ws://") + "/ws"
        with connect(url, subprotocols=["mcp"], open_timeout=10) as ws:
            ws.send(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "server/discover", "params": {"_meta": ENVELOPE}}))
            found = json.loads(ws.recv(30))
            assert found["result"]["supportedVersions"] == [MODERN] and found["result"]["resultType"] == "complete"
            arguments = {"agent_id": "dev", "server": "testing", "tool": "echo", "args": {"text": "over ws"}}
            ws.send(json.dumps({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
                "name": "execute_tool", "arguments": arguments, "_meta": ENVELOPE}}))
            called = json.loads(ws.recv(30))
            assert called["id"] == 2 and called["result"]["resultType"] == "complete"
            assert called["result"]["structuredContent"] == {"result": "over ws"}
            # The era is the connection's: without its envelope a request is refused, and the next one served.
            ws.send(json.dumps({"jsonrpc": "2.0", "id": 3, "method": "tools/list", "params": {}}))
            assert json.loads(ws.recv(30))["error"]["code"] == -32602


async def test_a_handshake_era_client_answers_a_stateless_servers_input_required(setup: Setup) -> None:
    import subprocess
    from pathlib import Path

    import mcp_types as types

    from .test_http_downstream import free_port

    fixture = Path(__file__).resolve().parents[2] / "conformance" / "official" / "fixture_server.py"
    port = free_port()
    server = subprocess.Popen([sys.executable, str(fixture), "--port", str(port)], start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        setup.servers = {"fixture": {"url": f"http://127.0.0.1:{port}/mcp"}}
        setup.write({"agents": {"dev": {"allow": {"servers": ["*"]}}}, "defaults": {"deny_on_missing_agent": False}})
        setup.env.update(GATEWAY_MODE="aggregate", GATEWAY_DEFAULT_AGENT="dev", GATEWAY_PREFIX="never",
                         GATEWAY_DOWNSTREAM_ERA="stateless", GATEWAY_INIT_STRATEGY="eager")
        colors = iter(["blue"])

        async def elicit(context: Any, params: Any) -> types.ElicitResult:
            field = next(iter(params.requested_schema["properties"]))
            return types.ElicitResult(action="accept", content={field: "Ada" if field == "name" else next(colors)})

        async def sample(context: Any, params: Any) -> types.CreateMessageResult:
            return types.CreateMessageResult(role="assistant", content=types.TextContent(type="text", text="Hi there"), model="m")

        async def roots(context: Any) -> types.ListRootsResult:
            return types.ListRootsResult(roots=[types.Root(uri="file:///work")])

        async with Client(stdio_params(setup), mode="legacy", read_timeout_seconds=30, elicitation_callback=elicit,
                          sampling_callback=sample, list_roots_callback=roots) as client:
            three = await client.call_tool("test_input_required_result_multiple_inputs", {})
            assert three.content[0].text == "Hi there (to Ada; roots: file:///work)"  # type: ignore[union-attr]
            # Two rounds: the second question comes with the server's new requestState, sent back unchanged.
            two = await client.call_tool("test_input_required_result_multi_round", {})
            assert two.content[0].text == "Ada's favorite color is blue."  # type: ignore[union-attr]
    finally:
        server.terminate()
        server.wait(10)


@pytest.mark.parametrize("transport", ["stdio", "http"])
def test_the_mcp_inspector_cli_connects_in_the_stateless_era(setup: Setup, tmp_path: Any, transport: str) -> None:
    """The MCP Inspector CLI 2.12.0 with ``--protocol-era modern`` (``make unit`` installs it into build/node).

    It runs in a network namespace with only loopback (it may listen on every
    interface), with the gateway beside it over HTTP.
    """
    import json
    import shutil
    import subprocess
    from pathlib import Path

    node_bin = Path(__file__).resolve().parents[2] / "build" / "node" / "node_modules" / ".bin"
    inspector = node_bin / "mcp-inspector"
    assert inspector.exists(), "the MCP Inspector is not installed: `make unit` installs it into build/node"
    assert shutil.which("unshare") is not None
    setup.write()
    gateway = [sys.executable, *setup.argv()]
    env = {**setup.environ(), "PATH": f"{node_bin}{os.pathsep}{os.environ['PATH']}", "HOME": str(tmp_path)}
    call = ["--method", "tools/call", "--tool-name", "execute_tool", "--tool-arg", "agent_id=dev", "server=testing",
            "tool=echo", 'args={"text":"modern"}']
    if transport == "stdio":
        script = " ".join(shlex.quote(a) for a in [str(inspector), "--cli", "--protocol-era", "modern", *call, "--", *gateway])
    else:
        port = 18000 + os.getpid() % 1000
        serve = " ".join(shlex.quote(a) for a in [*gateway, "--transport", "http", "--port", str(port)])
        cli = " ".join(shlex.quote(a) for a in [str(inspector), "--cli", f"http://127.0.0.1:{port}/mcp", "--transport", "http",
                                                "--protocol-era", "modern", *call])
        wait = f"for i in $(seq 100); do (echo > /dev/tcp/127.0.0.1/{port}) 2>/dev/null && break; sleep 0.1; done"
        script = f"{serve} 2>/dev/null & {wait}; {cli}; status=$?; kill %1; wait; exit $status"
    done = subprocess.run(["unshare", "-rn", "bash", "-c", f"ip link set lo up; {script}"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    answer = json.loads(done.stdout)
    assert answer["structuredContent"] == {"result": "modern"} and answer["isError"] is False


async def test_closing_a_stateless_requests_response_cancels_its_call(setup: Setup) -> None:
    import json
    import socket
    import time

    with serve_http(setup) as served:
        host, port = served.base.removeprefix("http://").split(":")
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
            "name": "execute_tool", "arguments": {"agent_id": "dev", "server": "testing", "tool": "hang", "args": {}},
            "_meta": ENVELOPE}}).encode()
        head = (f"POST /mcp HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: application/json, text/event-stream\r\n"
                f"Content-Type: application/json\r\nMCP-Protocol-Version: {MODERN}\r\nMcp-Method: tools/call\r\n"
                f"Mcp-Name: execute_tool\r\nContent-Length: {len(body)}\r\n\r\n").encode()
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(head + body)
            time.sleep(3)  # the server has started and has the call by now (it never answers it)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            records = [r for r in setup.audit_records() if r.get("tool") == "hang"] if setup.audit.exists() else []
            if records:
                break
            time.sleep(0.2)
        assert [(r["decision"], r.get("error_code")) for r in records] == [("ERROR", "CANCELLED")]
        # The gateway serves on.
        async with httpx.AsyncClient(timeout=30) as http:
            listing = {"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {"_meta": ENVELOPE}}
            ok = await http.post(served.url, json=listing, headers={
                "accept": "application/json, text/event-stream", "mcp-protocol-version": MODERN, "mcp-method": "tools/list"})
            assert ok.status_code == 200
