"""End to end over the REST API: plain HTTP -> `lockgate serve --transport http` -> real MCP servers.

The same gateway as the MCP endpoint: the same policy, errors, limits and
audit records, answered as JSON with the HTTP status that fits.
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from .conftest import Setup
from .test_http import serve_http

TESTING = str(Path(__file__).parent / "servers" / "testing_server.py")

RULES: dict[str, Any] = {
    "agents": {
        "dev": {"allow": {"servers": ["*"]}, "deny": {"tools": {"testing": ["drop_*"]}}},
        "guest": {"allow": {"servers": ["other"]}},
        "slow": {"allow": {"servers": ["*"]}, "rate": "2/min"},
    },
    "defaults": {"deny_on_missing_agent": False},
}


@pytest.fixture
def rest_setup(setup: Setup) -> Setup:
    setup.add("testing", TESTING)
    setup.add("other", TESTING)
    setup.write(RULES)
    setup.env["GATEWAY_DEFAULT_AGENT"] = "dev"
    setup.env["GATEWAY_MAX_MESSAGE_BYTES"] = "65536"
    return setup


def error_of(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"} and body["error"]["status"] == response.status_code, body
    error: dict[str, Any] = body["error"]
    return error


def audit(setup: Setup) -> list[dict[str, Any]]:
    return [json.loads(line) for line in setup.audit.read_text().splitlines()] if setup.audit.exists() else []


def wait_for(predicate: Any, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.05)


def test_per_server_endpoints_list_and_call_with_the_downstreams_own_shapes(rest_setup: Setup) -> None:
    with serve_http(rest_setup) as served, httpx.Client(base_url=served.base, timeout=30) as http:
        listed = http.get("/mcp/testing/tools/list")
        assert listed.status_code == 200
        body = listed.json()
        names = [tool["name"] for tool in body["tools"]]
        assert body["count"] == len(names) and "echo" in names and "drop_everything" not in names
        echo = next(tool for tool in body["tools"] if tool["name"] == "echo")
        assert echo["inputSchema"]["required"] == ["text"]  # the server's definition, unchanged

        called = http.post("/mcp/testing/tools/call", json={"name": "echo", "arguments": {"text": "via rest"}})
        assert called.status_code == 200
        assert called.json()["structuredContent"] == {"result": "via rest"}
        assert called.json()["content"] == [{"type": "text", "text": "via rest"}]

        resources = http.get("/mcp/testing/resources/list")
        assert resources.status_code == 200 and resources.json() == {"resources": [], "resourceTemplates": [], "count": 0}
        prompts = http.get("/mcp/testing/prompts/list")
        assert prompts.status_code == 200 and prompts.json() == {"prompts": [], "count": 0}
        missing = http.post("/mcp/testing/resources/read", json={"uri": "file:///nowhere"})
        assert missing.status_code == 404 and error_of(missing)["code"] == "RESOURCE_NOT_FOUND"

        health = http.get("/mcp/testing/health").json()
        assert health == {
            "template_name": "testing", "total_instances": 1, "healthy_instances": 1, "health_percentage": 100.0,
            "instances": {"0": {"healthy": True, "status": "ready"}},
        }
    records = [r for r in audit(rest_setup) if r.get("transport") == "rest"]
    assert [(r["operation"], r["tool"], r["decision"]) for r in records] == [
        ("tools/call", "echo", "ALLOW"), ("resources/read", "file:///nowhere", "ALLOW"),
    ]
    assert records[0]["agent"] == "dev" and records[0]["args"]["keys"] == ["text"]


def test_refusals_have_the_status_that_fits_and_nothing_reaches_a_server(rest_setup: Setup) -> None:
    with serve_http(rest_setup) as served, httpx.Client(base_url=served.base, timeout=30) as http:
        denied = http.post("/mcp/testing/tools/call", json={"name": "drop_everything"})
        assert denied.status_code == 403
        assert error_of(denied)["code"] == "DENIED_BY_POLICY"
        assert error_of(denied)["data"]["rule"] == "agents.dev.deny.tools.testing[0]"
        as_guest = http.get("/mcp/testing/tools/list", params={"agent_id": "guest"})
        assert as_guest.status_code == 403 and error_of(as_guest)["code"] == "DENIED_BY_POLICY"
        unknown_agent = http.get("/mcp/testing/tools/list", params={"agent_id": "nobody"})
        assert unknown_agent.status_code in (400, 403)

        unknown_server = http.get("/mcp/nowhere/tools/list")
        assert unknown_server.status_code == 404 and error_of(unknown_server)["code"] == "SERVER_NOT_FOUND"
        unknown_tool = http.post("/mcp/testing/tools/call", json={"name": "nothing"})
        assert unknown_tool.status_code == 404 and error_of(unknown_tool)["code"] == "TOOL_NOT_FOUND"
        no_endpoint = http.get("/mcp/testing/tools/everything")
        assert no_endpoint.status_code == 404 and error_of(no_endpoint)["code"] == "NOT_FOUND"

        wrong_type = http.post("/mcp/testing/tools/call", json={"name": "echo", "arguments": "text"})
        assert wrong_type.status_code == 400
        assert [e["loc"] for e in error_of(wrong_type)["data"]["errors"]] == [["arguments"]]
        unknown_key = http.post("/mcp/testing/tools/call", json={"name": "echo", "argumens": {}})
        assert unknown_key.status_code == 400 and error_of(unknown_key)["data"]["errors"][0]["loc"] == ["argumens"]
        malformed = http.post("/mcp/testing/tools/call", content=b'{"name": "echo",', headers={"content-type": "application/json"})
        assert malformed.status_code == 400 and error_of(malformed)["code"] == "PARSE_ERROR"
        not_json = http.post("/mcp/testing/tools/call", content=b"name=echo", headers={"content-type": "text/plain"})
        assert not_json.status_code == 415
        wrong_method = http.get("/mcp/testing/tools/call")
        assert wrong_method.status_code == 405 and wrong_method.headers["allow"] == "POST"
        too_large = http.post("/mcp/testing/tools/call", json={"name": "echo", "arguments": {"text": "x" * 70_000}})
        assert too_large.status_code == 413
        bad_timeout = http.post("/mcp/testing/tools/call", json={"name": "echo", "timeout_ms": 0})
        assert bad_timeout.status_code == 400
        # The gateway serves on after all of it.
        ok = http.post("/mcp/testing/tools/call", json={"name": "echo", "arguments": {"text": "still here"}})
        assert ok.status_code == 200
    calls = [r for r in audit(rest_setup) if r.get("transport") == "rest"]
    assert [r["tool"] for r in calls if r["server"] == "testing"] == ["drop_everything", "nothing", "echo"]


def test_a_timeout_a_rate_limit_and_a_crash_each_answer_as_they_should(rest_setup: Setup) -> None:
    with serve_http(rest_setup) as served, httpx.Client(base_url=served.base, timeout=30) as http:
        hung = http.post("/mcp/testing/tools/call", json={"name": "hang", "timeout_ms": 300})
        assert hung.status_code == 504 and error_of(hung)["code"] == "TIMEOUT"
        statuses = [
            http.post("/mcp/other/tools/call", json={"name": "echo", "arguments": {"text": "x"}, "agent_id": "slow"}).status_code
            for _ in range(3)
        ]
        assert statuses == [200, 200, 429]
        limited = http.post("/mcp/other/tools/call", json={"name": "echo", "arguments": {"text": "x"}, "agent_id": "slow"})
        assert int(limited.headers["retry-after"]) >= 1 and error_of(limited)["data"]["retry_after_ms"] > 0
        crashed = http.post("/mcp/other/tools/call", json={"name": "crash"})
        assert crashed.status_code == 503 and error_of(crashed)["code"] == "SERVER_UNAVAILABLE"
        # Restarted for the next call.
        again = http.post("/mcp/other/tools/call", json={"name": "echo", "arguments": {"text": "back"}})
        assert again.status_code == 200


def test_a_batch_runs_its_calls_concurrently_and_answers_each_in_order(rest_setup: Setup) -> None:
    calls = [
        {"server": "testing", "name": "echo", "arguments": {"text": "one"}},
        {"server": "testing", "name": "drop_everything"},
        {"server": "nowhere", "name": "echo"},
        {"server": "other", "name": "length", "arguments": {"text": "four"}},
    ]
    with serve_http(rest_setup) as served, httpx.Client(base_url=served.base, timeout=30) as http:
        answer = http.post("/mcp/batch", json={"calls": calls})
        assert answer.status_code == 200
        results = answer.json()["results"]
        assert [(r["ok"], r["status"]) for r in results] == [(True, 200), (False, 403), (False, 404), (True, 200)]
        assert results[0]["result"]["structuredContent"] == {"result": "one"}
        assert results[1]["error"]["code"] == "DENIED_BY_POLICY"
        assert results[3]["result"]["structuredContent"] == {"result": 4}
        too_many = http.post("/mcp/batch", json={"calls": [calls[0]] * 101})
        assert too_many.status_code == 400


def test_a_client_that_hangs_up_cancels_its_call_downstream(rest_setup: Setup) -> None:
    with serve_http(rest_setup) as served:
        parts = urlsplit(served.base)
        body = json.dumps({"name": "hang"}).encode()
        with socket.create_connection((parts.hostname, parts.port)) as sock:
            sock.sendall(
                b"POST /mcp/testing/tools/call HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (parts.netloc.encode(), len(body), body)
            )
            wait_for(lambda: _in_flight(served.base) == 1)
        wait_for(lambda: any(r.get("tool") == "hang" and r["error_code"] == "CANCELLED" for r in audit(rest_setup)))
        assert _in_flight(served.base) == 0


def _in_flight(base: str) -> int:
    stats = httpx.get(base + "/gateway/stats", timeout=10).json()
    return int(stats["calls_in_flight"])


def test_gateway_views_pages_and_documents(rest_setup: Setup) -> None:
    with serve_http(rest_setup) as served, httpx.Client(base_url=served.base, timeout=30) as http:
        http.post("/mcp/testing/tools/call", json={"name": "echo", "arguments": {"text": "x"}})
        health = http.get("/gateway/health").json()
        assert health["status"] == "healthy" and set(health["servers"]) == {"testing", "other"}
        stats = http.get("/gateway/stats").json()
        assert stats["requests"]["total"] >= 1
        assert stats["servers"]["testing"]["load_distribution"]["0"]["calls"] == 1
        assert stats["health_checker"]["instances"]["testing/0"]["healthy"] is True
        registry = http.get("/gateway/registry").json()["servers"]["testing"]
        assert registry["source"] == "file"
        [instance] = registry["instances"]
        assert instance["id"] == "0" and instance["transport"] == "stdio" and instance["args"] == [TESTING]
        records = http.get("/gateway/audit", params={"limit": 1}).json()["records"]
        assert len(records) == 1 and records[0]["tool"] == "echo" and "text" not in json.dumps(records[0]["args"]).replace('"keys": ["text"]', "")
        document = http.get("/openapi.json")
        assert document.status_code == 200 and document.json()["openapi"] == "3.1.0"
        for page in ("/", "/status", "/docs", "/redoc"):
            answer = http.get(page)
            assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/html"), page
        assert http.get("/docs/assets/../../etc/passwd").status_code == 404
        assert http.get("/status/assets/nothing.js").status_code == 404


def test_wrong_methods_and_oversized_bodies_get_the_rest_error_shape(rest_setup: Setup) -> None:
    with serve_http(rest_setup) as served, httpx.Client(base_url=served.base, timeout=30) as http:
        put = http.put("/gateway/health", json={})
        assert put.status_code == 405 and error_of(put)["code"] == "METHOD_NOT_ALLOWED" and put.headers["allow"] == "GET"
        big = http.post("/mcp/batch", content=b"[" + b" " * 70_000 + b"]", headers={"content-type": "application/json"})
        assert big.status_code == 413 and error_of(big)["code"] == "PAYLOAD_TOO_LARGE"
        assert http.post("/docs").status_code == 405
