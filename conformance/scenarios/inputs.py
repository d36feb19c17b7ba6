"""Malformed client input, and the shared fixtures played as downstreams and as clients."""

from __future__ import annotations

import json

from conformance.clients import INIT, Raw, call_params
from conformance.scenarios.base import HERE, RawScript, fixture, scenario

# -- malformed input -------------------------------------------------------------------


@scenario("malformed_json", "lines that are not JSON (-32700), not UTF-8, blank lines and CRLF; the session continues")
async def _(raw: Raw) -> None:
    await raw.init()
    await raw.send_bad(b"{not json")
    await raw.send_bad(b"\xff\xfe\x00garbage")
    await raw.send(b"   ")
    await raw.send(b'{"jsonrpc":"2.0","id":"crlf","method":"ping"}\r')
    await raw.response("crlf")
    await raw.request("ping")


@scenario("malformed_jsonrpc", "valid JSON that is not a valid JSON-RPC request: -32600 each, responses from the client ignored")
async def _(raw: Raw) -> None:
    await raw.init()
    for bad in ([{"jsonrpc": "2.0", "id": 1, "method": "ping"}], "text", 42, {"jsonrpc": "1.0", "id": 2, "method": "ping"},
                {"jsonrpc": "2.0", "id": 3, "method": 7}, {"jsonrpc": "2.0", "id": {"x": 1}, "method": "ping"},
                {"jsonrpc": "2.0", "id": 4, "method": "ping", "params": [1]}, {"jsonrpc": "2.0", "id": 5}):
        await raw.send_bad(json.dumps(bad).encode())
    await raw.send({"jsonrpc": "2.0", "id": 99, "result": {}})
    await raw.request("ping")


@scenario("malformed_oversized", "a line over GATEWAY_MAX_MESSAGE_BYTES: -32600 with the limit, then the session continues",
          env={"GATEWAY_MAX_MESSAGE_BYTES": "4096"})
async def _(raw: Raw) -> None:
    await raw.init()
    await raw.send(json.dumps({"jsonrpc": "2.0", "id": 5, "method": "ping", "params": {"pad": "z" * 5000}}).encode())
    await raw.wait(lambda m: isinstance(m, dict) and m.get("id") is None and "error" in m)
    await raw.request("ping")


# -- the shared fixtures ---------------------------------------------------------------


@scenario("fixture_legacy_basic", "a downstream answering from stdio_legacy_basic.jsonl: add, and slow with progress",
          servers={"spec": fixture("stdio_legacy_basic.jsonl")})
async def _(raw: Raw) -> None:
    await raw.init()
    await raw.call("get_server_tools", agent_id="dev", server="spec")
    await raw.call("execute_tool", agent_id="dev", server="spec", tool="add", args={"a": 1, "b": 2})
    await raw.request("tools/call", call_params("execute_tool", {"progressToken": 4}, agent_id="dev", server="spec", tool="slow", args={"steps": 2}))


@scenario("fixture_modern_elicit_bridged",
          "a 2026-07-28 downstream (stdio_modern_elicit_mrtr.jsonl) answers input_required; the gateway asks the handshake-era "
          "client elicitation/create and sends the answer back as the retry, with the server's requestState",
          servers={"elicit": fixture("stdio_modern_elicit_mrtr.jsonl")},
          env={"GATEWAY_MODE": "aggregate", "GATEWAY_DEFAULT_AGENT": "dev", "GATEWAY_DOWNSTREAM_ERA": "auto"})
async def _(raw: Raw) -> None:
    await raw.request("initialize", {**INIT, "capabilities": {"elicitation": {"form": {}}}}, id=1)
    await raw.notify("notifications/initialized")
    call_id = raw.new_id()
    await raw.send({"jsonrpc": "2.0", "id": call_id, "method": "tools/call", "params": {"name": "greet", "arguments": {}}})
    asked = await raw.wait(lambda m: isinstance(m, dict) and m.get("method") == "elicitation/create")
    await raw.send({"jsonrpc": "2.0", "id": asked["id"], "result": {"action": "accept", "content": {"name": "Ada"}}})
    await raw.response(call_id)


@scenario("fixture_legacy_elicit", "a downstream from stdio_legacy_elicit.jsonl asks for elicitation mid-call: the gateway answers -32601",
          servers={"elicit": fixture("stdio_legacy_elicit.jsonl")})
async def _(raw: Raw) -> None:
    await raw.init()
    await raw.call("execute_tool", agent_id="dev", server="elicit", tool="greet")


def _client_side(name: str) -> RawScript:
    async def script(raw: Raw) -> None:
        for line in (HERE / "fixtures" / name).read_text().splitlines():
            item = json.loads(line)
            if item["dir"] != "c2s" or "result" in item["msg"]:
                continue
            await raw.send(item["msg"])
            if "id" in item["msg"]:
                await raw.response(item["msg"]["id"])

    return script


scenario("fixture_inspector_client", "the MCP Inspector CLI 2.12.0's handshake and tools/list (from the fixture) sent to the gateway")(
    _client_side("stdio_inspector_cli_2.12.0_handshake.jsonl"))
scenario("fixture_modern_client", "a 2026-07-28 client (stdio_modern_basic.jsonl): served in the stateless era, no initialize")(
    _client_side("stdio_modern_basic.jsonl"))
