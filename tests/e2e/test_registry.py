"""The live registry end to end: instances registered and deregistered over REST on a running gateway.

Real processes throughout: `lockgate serve --transport http`, the testing
server over stdio and over Streamable HTTP, the registrations in SQLite (and
PostgreSQL, with authentication on).
"""

from __future__ import annotations

import sys
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from .conftest import Setup
from .test_http import serve_http
from .test_http_downstream import HttpServer, http_server  # noqa: F401  (a fixture)
from .test_identity import Keys, auth_setup, database, keys, serve  # noqa: F401  (fixtures)

TESTING = str(Path(__file__).parent / "servers" / "testing_server.py")

RULES: dict[str, Any] = {"agents": {"dev": {"allow": {"servers": ["*"]}}}, "defaults": {"deny_on_missing_agent": False}}


@pytest.fixture
def registry_setup(setup: Setup, tmp_path: Path) -> Setup:
    setup.add("testing", TESTING)
    setup.write(RULES)
    setup.env.update(GATEWAY_DEFAULT_AGENT="dev", GATEWAY_STATE_DIR=str(tmp_path / "state"), GATEWAY_INIT_STRATEGY="eager")
    return setup


def ids(http: httpx.Client, server: str = "testing") -> dict[str, str]:
    """Each instance of ``server`` in the registry, and where it came from."""
    instances = http.get("/gateway/registry").json()["servers"][server]["instances"]
    return {entry["id"]: entry["source"] for entry in instances}


def calls_by_instance(http: httpx.Client) -> dict[str, int]:
    distribution = http.get("/gateway/stats").json()["servers"]["testing"]["load_distribution"]
    return {instance: entry["calls"] for instance, entry in distribution.items()}


def test_instances_join_and_leave_a_running_gateway_and_survive_a_restart(registry_setup: Setup, http_server: HttpServer) -> None:  # noqa: F811
    with serve_http(registry_setup) as served, httpx.Client(base_url=served.base, timeout=30) as http:
        stdio = http.post("/gateway/register", json={
            "server": "testing", "command": sys.executable, "args": [TESTING], "instance_id": "extra",
            "env": {"SECRET_TOKEN": "never shown"}, "description": "a second process",
        })
        assert stdio.status_code == 201, stdio.text
        assert stdio.json() == {"server": "testing", "instance_id": "extra", "transport": "stdio", "registered": True}
        web = http.post("/gateway/register", json={"server": "testing", "endpoint": http_server.url, "instance_id": "web", "weight": 2})
        assert web.json()["transport"] == "http"
        assert web.status_code == 201, web.text
        assert ids(http) == {"0": "file", "extra": "registry", "web": "registry"}
        registry = http.get("/gateway/registry")
        assert "never shown" not in registry.text and registry.json()["servers"]["testing"]["source"] == "both"
        [extra] = [i for i in registry.json()["servers"]["testing"]["instances"] if i["id"] == "extra"]
        assert extra["env_keys"] == ["SECRET_TOKEN"] and extra["description"] == "a second process"

        # Balanced over all three (round robin, the default strategy).
        for n in range(12):
            answer = http.post("/mcp/testing/tools/call", json={"name": "length", "arguments": {"text": "x" * n}})
            assert answer.status_code == 200 and answer.json()["structuredContent"] == {"result": n}
        spread = calls_by_instance(http)
        assert set(spread) == {"0", "extra", "web"} and all(spread[i] > 0 for i in spread), spread
        assert max(spread.values()) - min(spread.values()) <= 1, spread

        # Deregistered under load: every call is answered.
        failures: list[str] = []

        def load() -> None:
            with httpx.Client(base_url=served.base, timeout=30) as own:
                for n in range(15):
                    answer = own.post("/mcp/testing/tools/call", json={"name": "slow", "arguments": {"seconds": 0.02}})
                    if answer.status_code != 200 and answer.json().get("error", {}).get("code") != "TOOL_NOT_FOUND":
                        failures.append(answer.text)

        workers = [threading.Thread(target=load) for _ in range(4)]
        for worker in workers:
            worker.start()
        gone = http.delete("/gateway/deregister/testing/extra")
        assert gone.status_code == 200 and gone.json() == {"server": "testing", "instance_id": "extra", "deregistered": True}
        for worker in workers:
            worker.join(60)
        assert failures == []
        assert ids(http) == {"0": "file", "web": "registry"}

        # What the registry refuses, with nothing registered.
        refusals = {
            "taken": http.post("/gateway/register", json={"server": "testing", "endpoint": http_server.url, "instance_id": "web"}),
            "file instance id": http.post("/gateway/register", json={"server": "testing", "endpoint": http_server.url, "instance_id": "0"}),
            "no such command": http.post("/gateway/register", json={"server": "testing", "command": "no-such-command-here"}),
            "bad url": http.post("/gateway/register", json={"server": "testing", "endpoint": "ftp://example"}),
            "both": http.post("/gateway/register", json={"server": "testing", "endpoint": http_server.url, "command": "python3"}),
            "wrong type": http.post("/gateway/register", json={"server": "testing", "endpoint": http_server.url, "weight": "2"}),
        }
        assert {why: r.status_code for why, r in refusals.items()} == {
            "taken": 409, "file instance id": 409, "no such command": 400, "bad url": 400, "both": 400, "wrong type": 400,
        }
        assert http.delete("/gateway/deregister/testing/0").status_code == 409
        assert http.delete("/gateway/deregister/testing/nothing").status_code == 404
        assert ids(http) == {"0": "file", "web": "registry"}

        # Racing registrations of one id: one wins, the others are told 409.
        statuses: list[int] = []

        def race() -> None:
            with httpx.Client(base_url=served.base, timeout=30) as own:
                statuses.append(own.post("/gateway/register", json={
                    "server": "fresh", "command": sys.executable, "args": [TESTING], "instance_id": "same",
                }).status_code)

        racers = [threading.Thread(target=race) for _ in range(5)]
        for racer in racers:
            racer.start()
        for racer in racers:
            racer.join(60)
        assert Counter(statuses) == Counter({201: 1, 409: 4})
        fresh = http.post("/mcp/fresh/tools/call", json={"name": "echo", "arguments": {"text": "new server"}})
        assert fresh.status_code == 200

    # A new gateway over the same database finds the registrations again.
    with serve_http(registry_setup) as served, httpx.Client(base_url=served.base, timeout=30) as http:
        assert ids(http) == {"0": "file", "web": "registry"}
        assert ids(http, "fresh") == {"same": "registry"}
        for _ in range(4):
            assert http.post("/mcp/testing/tools/call", json={"name": "echo", "arguments": {"text": "again"}}).status_code == 200
        assert calls_by_instance(http)["web"] > 0


def test_only_an_admin_may_change_the_registry(auth_setup: Setup, keys: Keys) -> None:  # noqa: F811
    body = {"server": "more", "command": sys.executable, "args": [TESTING], "instance_id": "one"}
    with serve(auth_setup) as served, httpx.Client(base_url=served.base, timeout=30) as http:
        assert http.post("/gateway/register", json=body).status_code == 401
        assert http.get("/gateway/registry").status_code == 401
        as_dev = {"Authorization": f"Bearer {keys.dev}"}
        refused = http.post("/gateway/register", json=body, headers=as_dev)
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "FORBIDDEN"
        assert http.get("/gateway/registry", headers=as_dev).status_code == 200
        as_admin = {"X-API-Key": keys.admin}
        assert http.post("/gateway/register", json=body, headers=as_admin).status_code == 201
        assert http.delete("/gateway/deregister/more/one", headers=as_dev).status_code == 403
        assert http.delete("/gateway/deregister/more/one", headers=as_admin).status_code == 200
        # The REST door takes the same credentials as /mcp, and acts as the key's own agent.
        listed = http.get("/mcp/testing/tools/list", headers=as_dev)
        assert listed.status_code == 200 and "echo" in [t["name"] for t in listed.json()["tools"]]
        denied = http.get("/mcp/testing/tools/list", params={"agent_id": "slow"}, headers=as_dev)
        assert denied.status_code == 403


def test_a_missing_or_bad_credential_gets_the_rest_error_shape(auth_setup: Setup, keys: Keys) -> None:  # noqa: F811
    with serve(auth_setup) as served, httpx.Client(base_url=served.base, timeout=30) as http:
        for headers in ({}, {"Authorization": "Bearer lg_not_a_key"}):
            refused = http.get("/gateway/stats", headers=headers)
            assert refused.status_code == 401 and refused.headers["www-authenticate"].startswith("Bearer")
            error = refused.json()["error"]
            assert error["code"] == "UNAUTHORIZED" and error["status"] == 401 and error["message"]
        dev = http.post("/gateway/register", json={"server": "x", "endpoint": "http://127.0.0.1:1/mcp"}, headers={"X-API-Key": keys.dev})
        assert "only an admin may change the registry" in dev.json()["error"]["message"]


def test_a_clients_credential_never_reaches_a_downstream(auth_setup: Setup, keys: Keys, http_server: HttpServer) -> None:  # noqa: F811
    """Token passthrough is forbidden (MCP 2025-11-25, "Authorization"): a server sees only what its configuration sends."""
    auth_setup.servers["web"] = {"url": http_server.url, "description": "web over HTTP"}
    auth_setup.write(RULES_WITH_WEB)
    with serve(auth_setup) as served, httpx.Client(base_url=served.base, timeout=30) as http:
        called = http.post(
            "/mcp/web/tools/call", json={"name": "echo", "arguments": {"text": "x"}}, headers={"Authorization": f"Bearer {keys.dev}"}
        )
        assert called.status_code == 200, called.text
        mcp = http.post(
            "/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}}},
            headers={"Authorization": f"Bearer {keys.dev}", "Accept": "application/json, text/event-stream"},
        )
        assert mcp.status_code == 200
    requests = http_server.requests()
    assert requests and all(r["authorization"] is None for r in requests), requests


RULES_WITH_WEB: dict[str, Any] = {
    "agents": {"dev": {"allow": {"servers": ["*"]}}, "admin": {"allow": {"servers": ["*"]}}, "slow": {"allow": {"servers": ["*"]}}},
    "defaults": {"deny_on_missing_agent": True},
}
