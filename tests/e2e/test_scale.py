"""Three replicas behind a real nginx: one session across them, a replica killed, one rate limit, one revocation.

The deployment ``deploy/compose.yaml`` describes, on 127.0.0.1: PostgreSQL
(users and keys), Redis (rate limits), three ``lockgate serve`` replicas
sharing a session key, and nginx round-robin with no stickiness. The SDK's
``Client`` talks to nginx only, so consecutive requests of one session land
on different replicas.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPError

from lockgate.shells.store import Store
from tests.cluster import Cluster, new_session_key
from tests.postgres import PostgresServer
from tests.redis_server import RedisServer

from .conftest import Setup, structured

RULES: dict[str, Any] = {
    "agents": {
        "dev": {"allow": {"servers": ["*"]}},
        "limited": {"allow": {"servers": ["*"]}, "rate": "10/min"},
    },
    "defaults": {"deny_on_missing_agent": True},
}
PASSWORD = "correct horse battery staple"
JWT_SECRET = "a test signing secret of at least thirty-two bytes"


class Scene:
    """A running cluster and the credentials made for it."""

    def __init__(self, cluster: Cluster, keys: dict[str, str], key_ids: dict[str, str], redis: RedisServer) -> None:
        self.cluster = cluster
        self.keys = keys
        self.key_ids = key_ids
        self.redis = redis


@pytest.fixture
def scene(setup: Setup, postgres_server: PostgresServer, redis_server: RedisServer, tmp_path: Path) -> Iterator[Scene]:
    database = postgres_server.create_database()
    redis_server.flush()  # the session's one Redis: no bucket of another test carries over
    with Store.open(database) as store:
        store.upgrade()
        store.create_user("root", "admin", PASSWORD)
        made = {
            "dev": store.create_key("dev", role="user", agents=["dev", "limited"]),
            "victim": store.create_key("victim", role="user", agents=["dev"]),
            "admin": store.create_key("ops", role="admin", agents=["*"], user="root"),
        }
    setup.write(RULES)
    env = {
        "GATEWAY_DATABASE_URL": database,
        "GATEWAY_REDIS_URL": redis_server.url,
        "GATEWAY_SESSION_KEY": new_session_key(),
        "GATEWAY_JWT_SECRET": JWT_SECRET,
        "GATEWAY_INIT_STRATEGY": "eager",
    }
    cluster = Cluster.start(tmp_path / "cluster", config=setup.config, rules=setup.rules, env=env, serve_args=["--auth"])
    try:
        cluster.wait_ready()
        yield Scene(
            cluster,
            keys={name: secret for name, (_, secret) in made.items()},
            key_ids={name: record.key_id for name, (record, _) in made.items()},
            redis=redis_server,
        )
    finally:
        cluster.stop()
        print(cluster.stderr())  # shown when the test fails


def client(url: str, credential: str) -> Client:
    http = create_mcp_http_client(headers={"Authorization": f"Bearer {credential}"})
    return Client(streamable_http_client(url, http_client=http), mode="legacy", read_timeout_seconds=30)


def echo(text: str, agent: str = "dev") -> dict[str, Any]:
    return {"agent_id": agent, "server": "testing", "tool": "echo", "args": {"text": text}}


def calls_served(scene: Scene) -> list[int]:
    """How many allowed ``execute_tool`` calls each replica audited."""
    return [
        sum(1 for r in replica.audit_records() if r.get("operation") == "execute_tool" and r["decision"] == "ALLOW")
        for replica in scene.cluster.replicas
    ]


async def test_a_session_runs_across_replicas_and_survives_one_being_killed(scene: Scene) -> None:
    async with client(scene.cluster.url, scene.keys["dev"]) as session:
        for n in range(6):
            assert structured(await session.call_tool("execute_tool", echo(f"call {n}"))) == {"result": f"call {n}"}
        # Round-robin with no stickiness: the one session was served by every replica.
        assert all(served > 0 for served in calls_served(scene)), calls_served(scene)

        scene.cluster.replicas[0].kill()
        failures = 0
        for n in range(6, 18):
            try:
                result = await session.call_tool("execute_tool", echo(f"call {n}"))
            except MCPError:
                failures += 1  # a request cut off by the dying replica: the client retries it once
                result = await session.call_tool("execute_tool", echo(f"call {n}"))
            assert structured(result) == {"result": f"call {n}"}
        assert failures <= 1
        tools = await session.list_tools()  # still the same session: no new initialize
        assert [t.name for t in tools.tools][:1] == ["list_servers"]
    # Every answer the client saw was audited first, on whichever replica gave it.
    assert sum(calls_served(scene)) >= 18


async def test_one_rate_limit_holds_across_replicas(scene: Scene) -> None:
    allowed = refused = 0
    started = time.monotonic()
    async with client(scene.cluster.url, scene.keys["dev"]) as session:
        for n in range(30):
            try:
                await session.call_tool("execute_tool", echo(f"limited {n}", agent="limited"))
                allowed += 1
            except MCPError as exc:
                assert exc.code == -32005, exc  # RATE_LIMITED
                refused += 1
    elapsed = time.monotonic() - started
    # 10/min: 10 at once, then one more every 6 s; in memory per replica it would be 30.
    assert 10 <= allowed <= 10 + int(elapsed / 6) + 1 and allowed + refused == 30
    served = [
        sum(1 for r in replica.audit_records() if r.get("agent") == "limited" and r["decision"] == "ALLOW")
        for replica in scene.cluster.replicas
    ]
    assert sum(served) == allowed and sum(1 for s in served if s) >= 2, served


async def test_a_key_revoked_on_one_replica_is_refused_by_all_within_a_second(scene: Scene) -> None:
    victim = {"x-api-key": scene.keys["victim"]}
    init = {
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}},
    }
    headers = {"content-type": "application/json", "accept": "application/json, text/event-stream"}
    replicas = scene.cluster.replicas
    async with httpx.AsyncClient(timeout=10) as http:
        for replica in replicas:
            opened = await http.post(replica.url, content=json.dumps(init), headers={**headers, **victim})
            assert opened.status_code == 200, opened.text
        revoked = await http.delete(
            f"{replicas[1].base}/auth/keys/{scene.key_ids['victim']}", headers={"x-api-key": scene.keys["admin"]}
        )
        assert revoked.status_code == 200, revoked.text
        since = time.monotonic()
        pending = set(range(len(replicas)))
        while pending and time.monotonic() - since < 1.0:
            for index in sorted(pending):
                answer = await http.post(replicas[index].url, content=json.dumps(init), headers={**headers, **victim})
                if answer.status_code == 401:
                    pending.discard(index)
            await trio.sleep(0.02)
        assert not pending, f"replicas {sorted(pending)} still accept the revoked key after a second"


def cut_off(exc: BaseException) -> bool:
    """Whether ``exc`` is only connections cut off (the SDK raises them from its session, grouped)."""
    if isinstance(exc, BaseExceptionGroup):
        return all(cut_off(inner) for inner in exc.exceptions)
    return type(exc).__name__ in {"RemoteProtocolError", "ReadError", "WriteError", "ConnectError"}


async def test_nginx_reloading_under_load_loses_no_call(scene: Scene) -> None:
    results: list[bool] = []
    reconnects = 0

    async def caller(n: int) -> None:
        nonlocal reconnects
        k = 0
        while k < 10:
            try:
                async with client(scene.cluster.url, scene.keys["dev"]) as session:
                    while k < 10:
                        result = await session.call_tool("execute_tool", echo(f"{n}.{k}"))
                        results.append(structured(result) == {"result": f"{n}.{k}"})
                        k += 1
            except BaseException as exc:
                # A reload closes the old workers' idle keep-alive connections; a request the client
                # sent on one at that moment never reached a replica, and the client sends it again.
                if not cut_off(exc) or reconnects >= 5:
                    raise
                reconnects += 1

    async with trio.open_nursery() as nursery:
        for n in range(5):
            nursery.start_soon(caller, n)
        await trio.sleep(0.3)
        assert scene.cluster.nginx is not None
        scene.cluster.nginx.reload()
    assert results == [True] * 50
    # Every call answered was audited; a call cut off before a replica read it left no record to lose.
    assert sum(calls_served(scene)) >= 50
