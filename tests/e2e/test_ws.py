"""End to end over WebSocket: a real ``lockgate serve --transport http,ws`` and real servers, the ``websockets`` client.

No MCP SDK on the client side (it has no WebSocket transport): MCP JSON-RPC
written by hand, one message per text message. With ``--auth`` an API key
from a real store goes in the upgrade request.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from lockgate.shells.store import Store
from tests.shells.test_ws import drain_until_closed, raw_upgrade

from .conftest import Setup
from .test_http import Served, serve_http

INIT = {
    "jsonrpc": "2.0", "id": 0, "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "e2e", "version": "1"}},
}


def ws_url(served: Served) -> str:
    return served.base.replace("http://", "ws://") + "/ws"


@contextmanager
def session(served: Served, **options: Any) -> Iterator[ClientConnection]:
    with connect(ws_url(served), subprotocols=["mcp"], open_timeout=10, **options) as ws:
        ws.send(json.dumps(INIT))
        assert json.loads(ws.recv(30))["result"]["serverInfo"]["name"] == "lockgate"
        ws.send(json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}))
        yield ws


def call(ws: ClientConnection, request_id: int, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    ws.send(json.dumps({"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": {"name": name, "arguments": arguments}}))
    answer: dict[str, Any] = json.loads(ws.recv(30))
    assert answer["id"] == request_id
    return answer


def echo(ws: ClientConnection, request_id: int, text: str, agent: str = "dev") -> dict[str, Any]:
    return call(ws, request_id, "execute_tool", {"agent_id": agent, "server": "testing", "tool": "echo", "args": {"text": text}})


def refused_with(served: Served, **options: Any) -> int:
    try:
        with connect(ws_url(served), open_timeout=10, **{"subprotocols": ["mcp"], **options}):
            return 101
    except InvalidStatus as refused:
        return refused.response.status_code


def closed_with(ws: ClientConnection) -> int | None:
    try:
        while True:
            ws.recv(30)
    except ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd is not None else None


async def test_initialize_list_and_execute_over_websocket(setup: Setup) -> None:
    with serve_http(setup, "--transport", "http,ws") as served:

        def talk() -> None:
            with session(served) as ws:
                ws.send(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}))
                tools = json.loads(ws.recv(30))["result"]["tools"]
                assert [t["name"] for t in tools] == ["list_servers", "search_tools", "get_server_tools", "execute_tool"]
                assert echo(ws, 2, "over ws")["result"]["structuredContent"] == {"result": "over ws"}
                denied = call(ws, 3, "execute_tool", {"agent_id": "dev", "server": "testing", "tool": "drop_everything", "args": {}})
                assert denied["error"]["code"] == -32000
                ws.send("{oops")
                assert json.loads(ws.recv(30))["error"]["code"] == -32700
                assert echo(ws, 4, "still open")["result"]["structuredContent"] == {"result": "still open"}

        await trio.to_thread.run_sync(talk)
    assert served.process.returncode == 0
    records = setup.audit_records()
    assert [(r["operation"], r["decision"]) for r in records if r.get("tool") in ("echo", "drop_everything")] == [
        ("execute_tool", "ALLOW"), ("execute_tool", "DENY"), ("execute_tool", "ALLOW"),
    ]


async def test_bad_input_is_refused_and_another_client_is_served(setup: Setup) -> None:
    setup.env["GATEWAY_MAX_MESSAGE_BYTES"] = "65536"
    setup.env["GATEWAY_WS_PING_INTERVAL"] = "0.5"
    setup.env["GATEWAY_WS_PING_TIMEOUT"] = "0.5"
    setup.env["GATEWAY_LOG_LEVEL"] = "info"
    with serve_http(setup, "--transport", "http,ws") as served:

        def misbehave() -> dict[str, Any]:
            found: dict[str, Any] = {}
            with session(served) as good:
                with session(served) as ws:
                    ws.send("x" * 70000)
                    found["too big"] = closed_with(ws)
                with session(served) as ws:
                    ws.send(b"{}")
                    found["binary"] = closed_with(ws)
                with session(served) as ws:
                    try:
                        ws.send("x" * 1024 for _ in range(1000))
                    except ConnectionClosed:
                        pass
                    found["fragmented flood"] = closed_with(ws)
                # A client library answers pings by itself: a raw connection that never reads does not.
                with raw_upgrade(int(served.base.rsplit(":", 1)[1])) as deaf:
                    sent = drain_until_closed(deaf, 10)  # raises unless closed within 10 s
                    found["deaf"] = int.from_bytes(sent[sent.index(b"\x88") + 2:][:2], "big")
                assert echo(good, 1, "served")["result"]["structuredContent"] == {"result": "served"}
            found["wrong subprotocol"] = refused_with(served, subprotocols=["wamp"])
            found["no subprotocol"] = refused_with(served, subprotocols=None)
            found["wrong origin"] = refused_with(served, origin="https://evil.example")
            return found

        found = await trio.to_thread.run_sync(misbehave)
        assert found == {
            "too big": 1009, "binary": 1003, "fragmented flood": 1009, "deaf": 1011,
            "wrong subprotocol": 400, "no subprotocol": 400, "wrong origin": 403,
        }
        assert "closing a WebSocket connection: 1011 keep-alive ping not answered within 0.5 s" in "".join(served.stderr)
        assert "closing a WebSocket connection: 1003 MCP messages are JSON text" in "".join(served.stderr)


@pytest.fixture
def api_keys(setup: Setup, tmp_path: Path) -> dict[str, str]:
    database = f"sqlite:///{tmp_path / 'state' / 'lockgate.db'}"
    with Store.open(database) as store:
        store.upgrade()
        dev = store.create_key("dev", role="user", agents=["dev"])[1]
        guest = store.create_key("guest", role="user", agents=["guest"])[1]
        admin = store.create_key("ops", role="admin", agents=["*"])[1]
    setup.env.update(GATEWAY_DATABASE_URL=database, GATEWAY_JWT_SECRET="a test signing secret of at least thirty-two bytes")
    return {"dev": dev, "guest": guest, "admin": admin}


async def test_an_api_key_in_the_upgrade_request(setup: Setup, api_keys: dict[str, str]) -> None:
    with serve_http(setup, "--transport", "http,ws", "--auth") as served:

        def talk() -> dict[str, Any]:
            found: dict[str, Any] = {}
            found["no credential"] = refused_with(served)
            found["wrong key"] = refused_with(served, additional_headers={"X-API-Key": "lg_nope_nope"})
            with session(served, additional_headers={"X-API-Key": api_keys["dev"]}) as ws:
                found["dev as dev"] = echo(ws, 1, "mine")["result"]["structuredContent"]
                found["dev as guest"] = echo(ws, 2, "theirs", agent="guest")["error"]["data"]["code"]
            with session(served, additional_headers={"Authorization": f"Bearer {api_keys['guest']}"}) as ws:
                found["guest as dev"] = echo(ws, 1, "x")["error"]["data"]["code"]
                # Revoked while the connection is open: closed with 1008 within about a second.
                import httpx

                key_id = api_keys["guest"].split("_")[1]
                revoked = httpx.delete(f"{served.base}/auth/keys/{key_id}", headers={"x-api-key": api_keys["admin"]}, timeout=30)
                assert revoked.status_code == 200
                found["revoked"] = closed_with(ws)
            return found

        found = await trio.to_thread.run_sync(talk)
        assert found == {
            "no credential": 401, "wrong key": 401, "dev as dev": {"result": "mine"},
            "dev as guest": "DENIED_BY_POLICY", "guest as dev": "DENIED_BY_POLICY", "revoked": 1008,
        }
