"""Identity end to end: a real ``lockgate serve --auth`` over HTTP and stdio, credentials from a real store.

Each scenario runs on a SQLite file and on a real PostgreSQL server. The SDK
``Client`` presents an API key, a token from ``/auth/login`` and a delegated
token; raw httpx covers the refusals (401, 403, 404, 429). The store is
filled in process, as ``lockgate user`` and ``lockgate key`` would.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from mcp import Client, MCPError, StdioServerParameters
from mcp.client.streamable_http import create_mcp_http_client, streamable_http_client

from lockgate.shells.store import Store, parse_secret
from tests.postgres import PostgresServer

from .conftest import Setup, structured
from .test_http import Served, serve_http

RULES: dict[str, Any] = {
    "agents": {
        "dev": {"allow": {"servers": ["*"]}, "deny": {"tools": {"testing": ["drop_*"]}}},
        "dev.reviewer": {"allow": {"servers": ["testing"], "tools": {"testing": ["echo"]}}},
        "admin": {"allow": {"servers": ["*"]}},
        "slow": {"allow": {"servers": ["*"]}, "rate": "2/min"},
    },
    "defaults": {"deny_on_missing_agent": True},
}
PASSWORD = "correct horse battery staple"
INIT = {
    "jsonrpc": "2.0", "id": 1, "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}},
}
POST_HEADERS = {"content-type": "application/json", "accept": "application/json, text/event-stream"}


@dataclass
class Keys:
    """The credentials of a scenario: the admin's password and API keys' secrets."""

    dev: str  # acts as dev and dev.*; default agent dev
    slow: str  # acts as slow only
    admin: str  # an admin key


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state' / 'lockgate.db'}"
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return server.create_database()


@pytest.fixture
def keys(database: str) -> Keys:
    with Store.open(database) as store:
        store.upgrade()
        store.create_user("root", "admin", PASSWORD)
        store.create_user("alice", "user", PASSWORD)
        dev = store.create_key("dev", role="user", agents=["dev", "dev.*"])[1]
        slow = store.create_key("slow", role="user", agents=["slow"])[1]
        admin = store.create_key("ops", role="admin", agents=["*"], user="root")[1]
    return Keys(dev=dev, slow=slow, admin=admin)


@pytest.fixture
def auth_setup(setup: Setup, database: str, tmp_path: Path) -> Setup:
    setup.add("testing", str(Path(__file__).parent / "servers" / "testing_server.py"))
    setup.write(RULES)
    setup.env.update(
        GATEWAY_DATABASE_URL=database,
        GATEWAY_STATE_DIR=str(tmp_path / "state"),
        GATEWAY_JWT_SECRET="a test signing secret of at least thirty-two bytes",
    )
    return setup


@contextmanager
def serve(setup: Setup, *extra: str) -> Iterator[Served]:
    """A real ``lockgate serve --transport http --auth`` on a free port."""
    with serve_http(setup, "--auth", *extra) as served:
        yield served


def client(url: str, credential: str) -> Client:
    http = create_mcp_http_client(headers={"Authorization": f"Bearer {credential}"})
    return Client(streamable_http_client(url, http_client=http), mode="legacy", read_timeout_seconds=30)


def audit(setup: Setup) -> list[dict[str, Any]]:
    return [json.loads(line) for line in setup.audit.read_text().splitlines()] if setup.audit.exists() else []


async def test_an_api_key_acts_only_as_the_agents_it_was_granted(auth_setup: Setup, keys: Keys) -> None:
    with serve(auth_setup) as served:
        async with client(served.url, keys.dev) as session:
            echoed = await session.call_tool(
                "execute_tool", {"agent_id": "dev", "server": "testing", "tool": "echo", "args": {"text": "hi"}}
            )
            assert echoed.structured_content == {"result": "hi"}
            # No agent_id: the key's own default agent, its first plain grant.
            listed = await session.call_tool("list_servers", {})
            assert structured(listed) == {"result": [{"name": "testing", "description": "testing for tests"}]}
            # Below its subtree grant, the rules of that agent apply.
            reviewer = await session.call_tool(
                "execute_tool", {"agent_id": "dev.reviewer", "server": "testing", "tool": "echo", "args": {"text": "r"}}
            )
            assert reviewer.structured_content == {"result": "r"}
            with pytest.raises(MCPError) as refused:
                await session.call_tool("list_servers", {"agent_id": "admin"})
            assert refused.value.error.code == -32000
            assert "may not act as agent 'admin'" in refused.value.error.message
    records = audit(auth_setup)
    calls = [r for r in records if r.get("operation") == "execute_tool"]
    assert {r["principal"] for r in calls} == {f"key:{keys.dev.split('_')[1]}"}
    assert [r for r in records if r.get("operation") == "authenticate" and r["decision"] == "ALLOW"]
    # No secret anywhere in the audit log.
    assert keys.dev not in auth_setup.audit.read_text()


async def test_each_stateless_request_is_authenticated_and_acts_as_its_credential(auth_setup: Setup, keys: Keys) -> None:
    with serve(auth_setup) as served:
        http = create_mcp_http_client(headers={"Authorization": f"Bearer {keys.dev}"})
        async with Client(streamable_http_client(served.url, http_client=http), mode="auto", read_timeout_seconds=30) as session:
            assert session.protocol_version == "2026-07-28"
            echoed = await session.call_tool("execute_tool", {"server": "testing", "tool": "echo", "args": {"text": "hi"}})
            assert echoed.structured_content == {"result": "hi"}
            with pytest.raises(MCPError) as refused:
                await session.call_tool("list_servers", {"agent_id": "admin"})
            assert refused.value.error.code == -32000
        meta = {"io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {}}
        listing = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta": meta}}
        modern = {**POST_HEADERS, "mcp-protocol-version": "2026-07-28", "mcp-method": "tools/list"}
        async with httpx.AsyncClient(timeout=30) as raw:
            assert (await raw.post(served.url, json=listing, headers=modern)).status_code == 401
            forged = await raw.post(served.url, json=listing, headers={**modern, "authorization": "Bearer lg_forged_key"})
            assert forged.status_code == 401
    calls = [r for r in audit(auth_setup) if r.get("operation") == "execute_tool"]
    assert {r["principal"] for r in calls} == {f"key:{keys.dev.split('_')[1]}"}


async def test_no_secret_reaches_a_recording_the_logs_or_the_audit(auth_setup: Setup, keys: Keys, tmp_path: Path) -> None:
    recordings = tmp_path / "recordings"
    auth_setup.env["GATEWAY_LOG_LEVEL"] = "debug"
    with serve(auth_setup, "--record", str(recordings)) as served:
        async with httpx.AsyncClient(base_url=served.base, timeout=30) as http:
            login = await http.post("/auth/login", json={"name": "root", "password": PASSWORD})
            token = login.json()["access_token"]
            wrong = await http.post("/auth/login", json={"name": "root", "password": PASSWORD + "!"})
            assert wrong.status_code == 401
            made = await http.post("/auth/keys", json={"name": "new", "agents": ["dev"]}, headers={"x-api-key": keys.admin})
            secret = made.json()["secret"]
        async with client(served.url, token) as session:
            await session.call_tool("list_servers", {"agent_id": "dev"})
        async with client(served.url, keys.dev) as session:
            await session.call_tool("list_servers", {})
    written = "".join(served.stderr) + auth_setup.audit.read_text()
    written += "".join(path.read_text() for path in recordings.rglob("*") if path.is_file())
    assert "execute_tool" in written or "list_servers" in written  # the recording holds the calls
    for leaked in (keys.dev, keys.admin, secret, token, token.split(".")[2], PASSWORD):
        assert leaked not in written


async def test_refusals_over_raw_http(auth_setup: Setup, keys: Keys) -> None:
    with serve(auth_setup) as served:
        async with httpx.AsyncClient(base_url=served.base, timeout=30) as http:
            missing = await http.post("/mcp", json=INIT, headers=POST_HEADERS)
            assert missing.status_code == 401
            challenge = missing.headers["www-authenticate"]
            assert challenge == f'Bearer resource_metadata="{served.base}/.well-known/oauth-protected-resource/mcp"'
            forged = keys.dev[:-4] + "AAAA"
            bad = await http.post("/mcp", json=INIT, headers={**POST_HEADERS, "authorization": f"Bearer {forged}"})
            assert bad.status_code == 401 and 'error="invalid_token"' in bad.headers["www-authenticate"]
            assert forged not in bad.text
            garbage = await http.post("/mcp", json=INIT, headers={**POST_HEADERS, "authorization": "Bearer a.b.c"})
            assert garbage.status_code == 401
            metadata = (await http.get("/.well-known/oauth-protected-resource/mcp")).json()
            assert metadata["resource"] == served.url

            # A session belongs to the credential that opened it.
            opened = await http.post("/mcp", json=INIT, headers={**POST_HEADERS, "x-api-key": keys.dev})
            assert opened.status_code == 200
            session = opened.headers["mcp-session-id"]
            ping = {"jsonrpc": "2.0", "id": 2, "method": "ping"}
            mine = {**POST_HEADERS, "x-api-key": keys.dev, "mcp-session-id": session, "mcp-protocol-version": "2025-06-18"}
            assert (await http.post("/mcp", json=ping, headers=mine)).status_code == 200
            theirs = {**mine, "x-api-key": keys.slow}
            assert (await http.post("/mcp", json=ping, headers=theirs)).status_code == 404

            # A rate limit of 2/min on the agent: the third call is 429 with Retry-After.
            opened = await http.post("/mcp", json=INIT, headers={**POST_HEADERS, "x-api-key": keys.slow})
            limited = {**POST_HEADERS, "x-api-key": keys.slow, "mcp-session-id": opened.headers["mcp-session-id"],
                       "mcp-protocol-version": "2025-06-18"}
            call = {"jsonrpc": "2.0", "method": "tools/call", "params": {"name": "list_servers", "arguments": {}}}
            statuses = [(await http.post("/mcp", json={**call, "id": n}, headers=limited)) for n in range(3)]
            assert [r.status_code for r in statuses] == [200, 200, 429]
            assert int(statuses[2].headers["retry-after"]) > 0
            assert statuses[2].json()["error"]["data"]["code"] == "RATE_LIMITED"

            # Management is for admins.
            as_user = await http.get("/auth/keys", headers={"x-api-key": keys.dev})
            assert as_user.status_code == 403
            assert as_user.json() == {"error": "Forbidden: credential key:%s has role user: only an admin may manage users and keys"
                                      % parse_secret(keys.dev).key_id}  # type: ignore[union-attr]

            # The metrics name every agent: they take a credential, any credential; health and readiness do not.
            assert (await http.get("/metrics")).status_code == 401
            assert (await http.get("/metrics", headers={"x-api-key": keys.slow})).json()["rate_limited"] == {"agent": 1, "credential": 0}
            assert (await http.get("/health")).status_code == 200
            assert (await http.get("/ready")).status_code == 200
            listed = await http.get("/auth/keys", headers={"x-api-key": keys.admin})
            assert listed.status_code == 200
            assert keys.dev not in listed.text and "secret" not in listed.text
    failures = [r for r in audit(auth_setup) if r.get("decision") == "DENY" and r.get("operation") == "authenticate"]
    assert {r["reason"] for r in failures} >= {"no credential", "unknown API key"}


async def test_login_delegation_and_revocation(auth_setup: Setup, keys: Keys) -> None:
    with serve(auth_setup) as served:
        async with httpx.AsyncClient(base_url=served.base, timeout=30) as http:
            wrong = await http.post("/auth/login", json={"name": "root", "password": "nope"})
            assert wrong.status_code == 401
            login = await http.post("/auth/login", json={"name": "root", "password": PASSWORD})
            assert login.status_code == 200
            token = login.json()
            assert token["token_type"] == "bearer" and token["expires_in"] > 0

            # The key hands a sub-agent a narrower token; asking for more is refused.
            wider = await http.post("/auth/delegate", json={"agents": ["admin"]}, headers={"x-api-key": keys.dev})
            assert wider.status_code == 403
            delegated = await http.post(
                "/auth/delegate", json={"agents": ["dev.reviewer"], "ttl": 300}, headers={"x-api-key": keys.dev}
            )
            assert delegated.status_code == 200, delegated.text
            child = delegated.json()["access_token"]

            # An admin creates a key; its secret is shown once.
            made = await http.post(
                "/auth/keys", json={"name": "ci", "agents": ["dev"]}, headers={"authorization": f"Bearer {token['access_token']}"}
            )
            assert made.status_code == 201 and made.json()["secret"].startswith("lg_")

        async with client(served.url, token["access_token"]) as session:
            # An admin's login token may act as any agent.
            result = await session.call_tool(
                "execute_tool", {"agent_id": "admin", "server": "testing", "tool": "echo", "args": {"text": "root"}}
            )
            assert result.structured_content == {"result": "root"}

        async with client(served.url, child) as session:
            result = await session.call_tool(
                "execute_tool", {"agent_id": "dev.reviewer", "server": "testing", "tool": "echo", "args": {"text": "c"}}
            )
            assert result.structured_content == {"result": "c"}
            with pytest.raises(MCPError):
                await session.call_tool("list_servers", {"agent_id": "dev"})

            # Revoking the parent key revokes the child within about a second, open session and all.
            key_id = keys.dev.split("_")[1]
            async with httpx.AsyncClient(base_url=served.base, timeout=30) as http:
                revoked = await http.delete(f"/auth/keys/{key_id}", headers={"x-api-key": keys.admin})
                assert revoked.status_code == 200
                deadline = time.monotonic() + 15
                while time.monotonic() < deadline:
                    answer = await http.post("/mcp", json=INIT, headers={**POST_HEADERS, "authorization": f"Bearer {child}"})
                    if answer.status_code == 401:
                        break
                    time.sleep(0.2)
                assert answer.status_code == 401
                assert (await http.post("/mcp", json=INIT, headers={**POST_HEADERS, "x-api-key": keys.dev})).status_code == 401


async def test_stdio_takes_its_credential_from_gateway_api_key(auth_setup: Setup, keys: Keys) -> None:
    auth_setup.env.update(GATEWAY_AUTH="required", GATEWAY_API_KEY=keys.dev)
    params = StdioServerParameters(command=sys.executable, args=auth_setup.argv(), env=auth_setup.environ())
    async with Client(params, mode="legacy", read_timeout_seconds=30) as session:
        listed = await session.call_tool("list_servers", {"agent_id": "dev"})
        assert structured(listed)["result"][0]["name"] == "testing"
        with pytest.raises(MCPError) as refused:
            await session.call_tool("list_servers", {"agent_id": "admin"})
        assert "may not act as" in refused.value.error.message
        # Revoked while the gateway runs: the session's calls are refused within about a second.
        with Store.open(auth_setup.env["GATEWAY_DATABASE_URL"]) as store:
            store.revoke_key(parse_secret(keys.dev).key_id)  # type: ignore[union-attr]
        deadline = time.monotonic() + 15
        message = ""
        while time.monotonic() < deadline and "refused" not in message:
            try:
                await session.call_tool("list_servers", {"agent_id": "dev"})
            except MCPError as exc:
                message = exc.error.message
            else:
                await trio.sleep(0.1)
        assert message.endswith("refused: API key revoked")
    opened, revoked = [r for r in audit(auth_setup) if r.get("operation") == "authenticate"]
    assert (opened["decision"], opened["principal"], opened["address"]) == ("ALLOW", revoked["credential"], "stdio")
    assert (revoked["decision"], revoked["reason"]) == ("DENY", "API key revoked")


def test_serve_refuses_what_it_cannot_check(auth_setup: Setup, keys: Keys) -> None:
    def run(*extra: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, *auth_setup.argv(), *extra], env={**auth_setup.environ(), **env},
            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
        )

    exposed = run("--transport", "http", "--host", "0.0.0.0", "--port", "0")
    assert exposed.returncode == 2 and "without authentication" in exposed.stderr and "GATEWAY_AUTH=none" in exposed.stderr
    no_key = run(GATEWAY_AUTH="required")
    assert no_key.returncode == 2 and "GATEWAY_API_KEY" in no_key.stderr
    wrong_key = run(GATEWAY_AUTH="required", GATEWAY_API_KEY=keys.dev[:-3] + "xyz")
    assert wrong_key.returncode == 2 and "unknown API key" in wrong_key.stderr
    unreachable = run("--auth", GATEWAY_DATABASE_URL="postgresql://lockgate:hunter2@127.0.0.1:1/none")
    assert unreachable.returncode == 2 and "127.0.0.1" in unreachable.stderr and "hunter2" not in unreachable.stderr
    assert "Traceback" not in exposed.stderr + no_key.stderr + wrong_key.stderr + unreachable.stderr


async def test_lockgate_login_gives_a_token_the_gateway_accepts(auth_setup: Setup, keys: Keys) -> None:
    def login(password: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "lockgate.shells", "login", "alice", "--password-stdin"],
            env=auth_setup.environ(), input=password + "\n", capture_output=True, text=True, timeout=60,
        )

    wrong = login("not it")
    assert wrong.returncode == 1 and wrong.stderr.strip() == "lockgate: error: wrong name or password"
    token = login(PASSWORD).stdout.strip()
    with serve(auth_setup) as served:
        async with client(served.url, token) as session:
            # A user's token acts as the agent of their name and those below it: alice has no such agent in the rules.
            with pytest.raises(MCPError) as refused:
                await session.call_tool("list_servers", {"agent_id": "dev"})
            assert "may not act as agent 'dev'" in refused.value.error.message
    assert any(r.get("principal") == "user:alice" for r in audit(auth_setup))


@contextmanager
def own_database(setup: Setup, tmp_path: Path) -> Iterator[tuple[PostgresServer, str]]:
    """A PostgreSQL server of the test's own (the test stops it under a running gateway), ``setup`` served from it, and a key of ``dev``."""
    server = PostgresServer.start()
    try:
        database = server.create_database()
        with Store.open(database) as store:
            store.upgrade()
            key = store.create_key("dev", role="user", agents=["dev"])[1]
        setup.add("testing", str(Path(__file__).parent / "servers" / "testing_server.py"))
        setup.write(RULES)
        setup.env.update(GATEWAY_DATABASE_URL=database, GATEWAY_STATE_DIR=str(tmp_path / "state"))
        yield server, key
    finally:
        server.stop()


async def test_a_database_that_dies_mid_run_fails_closed(setup: Setup, tmp_path: Path) -> None:
    with own_database(setup, tmp_path) as (server, key):
        with serve(setup) as served:
            async with httpx.AsyncClient(base_url=served.base, timeout=30) as http:
                assert (await http.post("/mcp", json=INIT, headers={**POST_HEADERS, "x-api-key": key})).status_code == 200
                assert (await http.get("/ready")).status_code == 200
                server.stop()
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    answer = await http.post("/mcp", json=INIT, headers={**POST_HEADERS, "x-api-key": key})
                    if answer.status_code != 200:
                        break
                    time.sleep(0.5)
                # Never waved through: 503 once the credentials cannot be checked.
                assert answer.status_code == 503
                ready = await http.get("/ready")
                assert ready.status_code == 503 and "credential store" in ready.json()["reason"]
            assert served.process.poll() is None  # it keeps serving, and says why it refuses
        assert "cannot read the credential store" in "".join(served.stderr)


async def test_a_database_restarted_under_load_fails_closed_then_recovers_by_itself(setup: Setup, tmp_path: Path) -> None:
    with own_database(setup, tmp_path) as (server, key):
        headers = {**POST_HEADERS, "x-api-key": key}
        call = {
            "jsonrpc": "2.0", "id": 2, "method": "tools/call",
            "params": {"name": "execute_tool", "arguments": {"agent_id": "dev", "server": "testing", "tool": "echo", "args": {"text": "hi"}}},
        }
        statuses: list[int] = []
        with serve(setup) as served:
            async with httpx.AsyncClient(base_url=served.base, timeout=30) as http:

                async def caller(until: Callable[[], bool]) -> None:
                    opened = await http.post("/mcp", json=INIT, headers=headers)
                    assert opened.status_code == 200
                    session = {**headers, "mcp-session-id": opened.headers["mcp-session-id"], "mcp-protocol-version": "2025-06-18"}
                    while not until():
                        answer = await http.post("/mcp", json=call, headers=session)
                        statuses.append(answer.status_code)
                        if answer.status_code == 404:  # the session ended: a new one, as a client would
                            return
                        await trio.sleep(0.05)

                phase = {"done": False}
                async with trio.open_nursery() as nursery:
                    for _ in range(3):
                        nursery.start_soon(caller, lambda: phase["done"])
                    await trio.sleep(0.5)
                    server.halt()
                    deadline = time.monotonic() + 30
                    while 503 not in statuses and time.monotonic() < deadline:
                        await trio.sleep(0.1)
                    assert 503 in statuses, statuses[-20:]  # fail closed: never waved through on a stale snapshot
                    server.resume()
                    refused_at = len(statuses)
                    deadline = time.monotonic() + 30
                    while 200 not in statuses[refused_at:] and time.monotonic() < deadline:
                        await trio.sleep(0.1)
                    phase["done"] = True
                assert 200 in statuses[refused_at:], statuses[-20:]  # recovered with no restart of the gateway
                assert set(statuses) <= {200, 503}, set(statuses)
                assert (await http.get("/ready")).status_code == 200
        # Every call answered 200 was audited as allowed; no acknowledged record is lost.
        allowed = [r for r in audit(setup) if r.get("operation") == "execute_tool" and r["decision"] == "ALLOW"]
        assert len(allowed) == statuses.count(200)


async def test_an_external_issuers_token_over_the_sdk(auth_setup: Setup, keys: Keys, tmp_path: Path) -> None:
    import jwt
    from cryptography.hazmat.primitives.asymmetric import rsa
    from jwt.algorithms import RSAAlgorithm

    signing = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = RSAAlgorithm.to_jwk(signing.public_key(), as_dict=True)
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": [{**public, "kid": "idp-1", "alg": "RS256"}]}))
    auth_setup.env.update(
        GATEWAY_JWT_ISSUER="https://idp.example", GATEWAY_JWT_AUDIENCE="lockgate-test",
        GATEWAY_JWT_JWKS=str(tmp_path / "jwks.json"), GATEWAY_JWT_AGENTS_CLAIM="lockgate.agents",
    )
    now = int(time.time())
    claims = {"iss": "https://idp.example", "aud": "lockgate-test", "sub": "bob", "iat": now, "exp": now + 600,
              "role": "user", "lockgate": {"agents": ["dev"]}}
    token = jwt.encode(claims, signing, algorithm="RS256", headers={"kid": "idp-1"})
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = jwt.encode(claims, other, algorithm="RS256", headers={"kid": "idp-1"})
    wrong_audience = jwt.encode({**claims, "aud": "someone-else"}, signing, algorithm="RS256", headers={"kid": "idp-1"})
    with serve(auth_setup) as served:
        async with client(served.url, token) as session:
            result = await session.call_tool(
                "execute_tool", {"agent_id": "dev", "server": "testing", "tool": "echo", "args": {"text": "idp"}}
            )
            assert result.structured_content == {"result": "idp"}
            with pytest.raises(MCPError):
                await session.call_tool("list_servers", {"agent_id": "admin"})
        async with httpx.AsyncClient(base_url=served.base, timeout=30) as http:
            metadata = (await http.get("/.well-known/oauth-protected-resource/mcp")).json()
            assert metadata["authorization_servers"] == ["https://idp.example"]
            for bad in (forged, wrong_audience):
                answer = await http.post("/mcp", json=INIT, headers={**POST_HEADERS, "authorization": f"Bearer {bad}"})
                assert answer.status_code == 401
    principals = {r.get("principal") for r in audit(auth_setup) if r.get("operation") == "execute_tool"}
    assert principals == {"jwt:https://idp.example#bob"}
