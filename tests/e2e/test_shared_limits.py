"""Rate limits shared through a real Redis by two real `lockgate serve` replicas; Redis killed and restarted under load."""

from __future__ import annotations

import json
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import trio

from tests.redis_server import RedisServer

from .conftest import Setup, TESTING_SERVER
from .test_http import Served, serve_http

RULES: dict[str, Any] = {
    "agents": {
        # A token back every 6 minutes: none comes back within a test, however slow the machine.
        "dev": {"allow": {"servers": ["*"]}, "rate": "10/h"},
        "busy": {"allow": {"servers": ["*"]}, "rate": "100000/min"},
        "free": {"allow": {"servers": ["*"]}},
    },
    "defaults": {"deny_on_missing_agent": True},
}
HEADERS = {"accept": "application/json, text/event-stream", "content-type": "application/json"}


def replica(tmp_path: Path, name: str, redis_url: str, **env: str) -> Setup:
    """One gateway's setup in a folder of its own (its audit log, its state), the same servers and rules as the others."""
    folder = tmp_path / name
    folder.mkdir()
    setup = Setup(folder)
    setup.add("testing", TESTING_SERVER, "--marker", str(tmp_path))
    # A second for Redis to answer: a busy test machine must not pass for a Redis that does not answer.
    setup.env.update(GATEWAY_REDIS_URL=redis_url, GATEWAY_REDIS_TIMEOUT="1", **env)
    setup.write(RULES)
    return setup


class Session:
    """A handshake-era MCP session over plain HTTP, to see every status and error as sent."""

    def __init__(self, http: httpx.AsyncClient, served: Served) -> None:
        self.http = http
        self.url = served.url
        self.headers = dict(HEADERS)
        self._ids = 0

    async def open(self) -> Session:
        init = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": "2025-11-25", "capabilities": {}}}
        response = await self.http.post(self.url, json=init, headers=self.headers)
        assert response.status_code == 200, response.text
        self.headers["mcp-session-id"] = response.headers["mcp-session-id"]
        await self.http.post(self.url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=self.headers)
        return self

    async def request(self, method: str, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        self._ids += 1
        response = await self.http.post(self.url, json={"jsonrpc": "2.0", "id": self._ids, "method": method, "params": params}, headers=self.headers)
        if response.headers.get("content-type", "").startswith("text/event-stream"):
            data = [line[5:].strip() for line in response.text.splitlines() if line.startswith("data:")]
            return response.status_code, json.loads(data[-1])
        return response.status_code, response.json()

    async def list_servers(self, agent: str) -> tuple[int, str]:
        """One limited call: its HTTP status and outcome (``ok`` or the error's ``data.code``)."""
        status, answer = await self.request("tools/call", {"name": "list_servers", "arguments": {"agent_id": agent}})
        if "error" in answer:
            return status, answer["error"]["data"]["code"]
        return status, "ok"


async def test_two_replicas_share_one_agents_bucket_so_the_sum_allowed_is_the_limit(tmp_path: Path, redis_server: RedisServer) -> None:
    redis_server.flush()
    with ExitStack() as stack:
        replicas = [stack.enter_context(serve_http(replica(tmp_path, name, redis_server.url))) for name in ("a", "b")]
        async with httpx.AsyncClient(timeout=30) as http:
            sessions = [await Session(http, served).open() for served in replicas]
            outcomes = [await sessions[i % 2].list_servers("dev") for i in range(30)]
            ready = [(await http.get(served.base + "/ready")).json() for served in replicas]
    allowed = [i for i, (_, outcome) in enumerate(outcomes) if outcome == "ok"]
    # One bucket of 10 over both replicas together, where each alone would have allowed 10.
    assert len(allowed) == 10, outcomes
    assert {i % 2 for i in allowed} == {0, 1}  # both replicas served some of them
    assert Counter(outcomes[i] for i in range(30) if i not in allowed) == {(429, "RATE_LIMITED"): 30 - len(allowed)}
    for body in ready:
        assert body["status"] == "ready"
        assert body["shared_limits"] == {"store": "redis", "reachable": True, "on_failure": "closed"}


async def test_redis_killed_under_load_fails_closed_with_a_clear_error_then_recovers_by_itself(tmp_path: Path) -> None:
    redis = await trio.to_thread.run_sync(RedisServer.start)
    try:
        setup = replica(tmp_path, "a", redis.url)
        with serve_http(setup) as served:
            async with httpx.AsyncClient(timeout=30) as http:
                sessions = [await Session(http, served).open() for _ in range(5)]
                seen: Counter[tuple[int, str]] = Counter()
                phase = ["up"]
                by_phase: dict[str, Counter[tuple[int, str]]] = {"up": Counter(), "down": Counter(), "back": Counter()}

                async def load(session: Session) -> None:
                    while phase[0] != "stop":
                        outcome = await session.list_servers("busy")
                        seen[outcome] += 1
                        if phase[0] in by_phase:
                            by_phase[phase[0]][outcome] += 1

                async with trio.open_nursery() as nursery:
                    for session in sessions:
                        nursery.start_soon(load, session)
                    with trio.fail_after(60):
                        while sum(by_phase["up"].values()) < 50:
                            await trio.sleep(0.01)
                        await trio.to_thread.run_sync(redis.kill)
                        phase[0] = "down"
                        while sum(by_phase["down"].values()) < 50:
                            await trio.sleep(0.01)
                        # The gateway keeps serving what needs no token, and says why the rest is refused.
                        status, listed = await sessions[0].request("tools/list", {})
                        assert status == 200 and "tools" in listed["result"]
                        assert await sessions[0].list_servers("free") == (200, "ok")
                        ready = (await http.get(served.base + "/ready")).json()
                        assert ready["status"] == "degraded"
                        assert ready["shared_limits"]["reachable"] is False and ready["shared_limits"]["on_failure"] == "closed"
                        assert "calls under a rate limit are refused" in ready["reason"]
                        status, answer = await sessions[0].request(
                            "tools/call", {"name": "list_servers", "arguments": {"agent_id": "busy"}})
                        assert status == 200 and answer["error"]["code"] == -32010
                        assert answer["error"]["data"] == {"code": "RATE_LIMIT_UNAVAILABLE", "failure_mode": "closed"}
                        await trio.to_thread.run_sync(redis.restart)
                        phase[0] = "back"
                        while by_phase["back"][(200, "ok")] < 50:
                            await trio.sleep(0.01)
                        phase[0] = "stop"
                ready = (await http.get(served.base + "/ready")).json()
        assert ready["status"] == "ready" and ready["shared_limits"]["reachable"] is True
        # Only two outcomes ever: served, or refused for want of the store; never a hang, a 5xx or another error.
        assert set(seen) <= {(200, "ok"), (200, "RATE_LIMIT_UNAVAILABLE")}, seen
        assert by_phase["down"][(200, "RATE_LIMIT_UNAVAILABLE")] >= 45, by_phase  # a few may have taken tokens just before the kill
        records = setup.audit_records()
        refused = [r for r in records if r["error_code"] == "RATE_LIMIT_UNAVAILABLE"]
        assert refused and all(r["decision"] == "ERROR" and r["rule"] == "GATEWAY_REDIS_FAILURE" for r in refused)
        log = "".join(served.stderr)
        assert "the shared rate limit store does not answer" in log and "the shared rate limit store answers again" in log
    finally:
        redis.stop()


async def test_with_failure_open_calls_go_ahead_when_redis_does_not_answer(tmp_path: Path) -> None:
    redis = await trio.to_thread.run_sync(RedisServer.start)
    url = redis.url
    redis.stop()  # nothing answers at that address any more
    setup = replica(tmp_path, "a", url, GATEWAY_REDIS_FAILURE="open")
    with serve_http(setup) as served:
        async with httpx.AsyncClient(timeout=30) as http:
            session = await Session(http, served).open()
            # Far past dev's 10/h: unchecked, every call goes ahead.
            outcomes = [await session.list_servers("dev") for _ in range(15)]
            ready = (await http.get(served.base + "/ready")).json()
    assert outcomes == [(200, "ok")] * 15
    assert ready["status"] == "degraded" and ready["shared_limits"]["on_failure"] == "open"
    assert "let through unchecked" in ready["reason"]
    assert "calls under a rate limit go ahead unchecked" in "".join(served.stderr)
