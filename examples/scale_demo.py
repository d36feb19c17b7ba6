"""Three Lockgate replicas behind nginx, narrated: one session across them, a replica killed, one limit, one revocation.

    python examples/scale_demo.py [--keep]        (or: make scale-demo)

It starts, on 127.0.0.1 and in temporary folders: PostgreSQL (users and API
keys), Redis (rate limits), three ``lockgate serve --auth`` replicas sharing
a session key, and nginx round-robin in front of them with no stickiness
(the topology of ``deploy/compose.yaml``). Then an MCP SDK client, talking
to nginx only:

1. runs one session whose calls land on every replica in turn;
2. goes on after one replica is SIGKILLed, without initialising again;
3. meets one rate limit (10 a minute) that all replicas enforce together;
4. sees its second key, revoked through one replica, refused by all.

PostgreSQL, Redis and nginx are Debian's packages (``make postgres redis
nginx`` installs them). With ``--keep`` everything stays up until Ctrl-C,
and the URL and an API key are printed. It exits 0 when every step did what
it should, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import trio
from mcp import Client, MCPError
from mcp.client.streamable_http import create_mcp_http_client, streamable_http_client

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lockgate.shells.store import Store  # noqa: E402
from tests.cluster import Cluster, new_session_key  # noqa: E402
from tests.postgres import PostgresServer  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402

ECHO_SERVER = ROOT / "bench" / "raw_echo_server.py"
RULES = {
    "agents": {
        "dev": {"allow": {"servers": ["*"]}},
        "limited": {"allow": {"servers": ["*"]}, "rate": "10/min"},
    },
    "defaults": {"deny_on_missing_agent": True},
}


class Demo:
    """The running topology, and a score of what went as expected."""

    def __init__(self, cluster: Cluster, keys: dict[str, str], key_ids: dict[str, str]) -> None:
        self.cluster = cluster
        self.keys = keys
        self.key_ids = key_ids
        self.failed: list[str] = []

    def expect(self, ok: bool, what: str) -> None:
        print(f"  {'ok' if ok else 'FAILED'}: {what}")
        if not ok:
            self.failed.append(what)

    def served(self) -> list[int]:
        """Allowed execute_tool calls per replica so far (from their audit logs)."""
        return [
            sum(1 for r in replica.audit_records() if r.get("operation") == "execute_tool" and r["decision"] == "ALLOW")
            for replica in self.cluster.replicas
        ]

    def client(self, key: str) -> Client:
        http = create_mcp_http_client(headers={"Authorization": f"Bearer {self.keys[key]}"})
        return Client(streamable_http_client(self.cluster.url, http_client=http), mode="legacy", read_timeout_seconds=30)


def echo(text: str, agent: str = "dev") -> dict[str, Any]:
    return {"agent_id": agent, "server": "echo", "tool": "echo", "args": {"text": text}}


async def call_and_show(demo: Demo, session: Client, n: int) -> None:
    before = demo.served()
    try:
        result = await session.call_tool("execute_tool", echo(f"call {n}"))
    except MCPError as exc:
        print(f"  call {n:>2}: refused or cut off ({exc}); retrying once")
        result = await session.call_tool("execute_tool", echo(f"call {n}"))
    after = demo.served()
    where = [i for i, (a, b) in enumerate(zip(before, after)) if b > a]
    print(f"  call {n:>2}: answered by replica {where[0] if where else '?'}")
    demo.expect(not result.is_error, f"call {n} answered")


async def tour(demo: Demo) -> None:
    print("\n1. One session, round-robin over three replicas")
    async with demo.client("dev") as session:
        for n in range(1, 7):
            await call_and_show(demo, session, n)
        demo.expect(all(demo.served()), f"every replica served the one session {demo.served()}")

        print("\n2. Replica 0 is SIGKILLed; the session goes on elsewhere, with no new initialize")
        demo.cluster.replicas[0].kill()
        for n in range(7, 13):
            await call_and_show(demo, session, n)

    print("\n3. Agent 'limited' may make 10 calls a minute, whichever replica serves them")
    allowed = refused = 0
    async with demo.client("dev") as session:
        for n in range(15):
            try:
                await session.call_tool("execute_tool", echo(f"limited {n}", agent="limited"))
                allowed += 1
            except MCPError:
                refused += 1
    print(f"  {allowed} allowed, {refused} refused")
    demo.expect(allowed in (10, 11), "the limit held across replicas (10, or 11 if a token refilled)")

    print("\n4. A key revoked through replica 1 is refused by every replica")
    init = {
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "demo", "version": "1"}},
    }
    headers = {"content-type": "application/json", "accept": "application/json, text/event-stream", "x-api-key": demo.keys["other"]}
    live = [r for r in demo.cluster.replicas if r.process.poll() is None]
    async with httpx.AsyncClient(timeout=10) as http:
        revoked = await http.delete(f"{live[0].base}/auth/keys/{demo.key_ids['other']}", headers={"x-api-key": demo.keys["admin"]})
        demo.expect(revoked.status_code == 200, "revoked through one replica")
        since = time.monotonic()
        pending = {r.index for r in live}
        while pending and time.monotonic() - since < 5:
            for replica in live:
                if replica.index in pending:
                    answer = await http.post(replica.url, content=json.dumps(init), headers=headers)
                    if answer.status_code == 401:
                        pending.discard(replica.index)
                        print(f"  replica {replica.index} refuses it after {(time.monotonic() - since) * 1000:.0f} ms")
            await trio.sleep(0.02)
        demo.expect(not pending and time.monotonic() - since < 1.0, "refused by all within a second")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", action="store_true", help="leave everything running until Ctrl-C")
    args = parser.parse_args()
    print("Starting PostgreSQL, Redis, three replicas and nginx on 127.0.0.1 ...")
    with tempfile.TemporaryDirectory(prefix="lockgate-scale-demo-") as tmp:
        folder = Path(tmp)
        postgres = PostgresServer.start()
        redis = RedisServer.start()
        cluster: Cluster | None = None
        demo: Demo | None = None
        try:
            database = postgres.create_database()
            with Store.open(database) as store:
                store.upgrade()
                store.create_user("root", "admin", "correct horse battery staple")
                made = {
                    "dev": store.create_key("dev", role="user", agents=["dev", "limited"]),
                    "other": store.create_key("other", role="user", agents=["dev"]),
                    "admin": store.create_key("ops", role="admin", agents=["*"], user="root"),
                }
            config, rules = folder / ".mcp.json", folder / ".mcp-gateway-rules.json"
            config.write_text(json.dumps({"mcpServers": {"echo": {"command": sys.executable, "args": [str(ECHO_SERVER)]}}}))
            rules.write_text(json.dumps(RULES))
            env = {
                "GATEWAY_DATABASE_URL": database,
                "GATEWAY_REDIS_URL": redis.url,
                "GATEWAY_SESSION_KEY": new_session_key(),
                "GATEWAY_JWT_SECRET": new_session_key(),
                "GATEWAY_INIT_STRATEGY": "eager",
            }
            cluster = Cluster.start(folder / "cluster", config=config, rules=rules, env=env, serve_args=["--auth"])
            cluster.wait_ready()
            for replica in cluster.replicas:
                print(f"  replica {replica.index}: {replica.url}")
            print(f"  nginx:     {cluster.url}")
            demo = Demo(cluster, {k: secret for k, (_, secret) in made.items()}, {k: record.key_id for k, (record, _) in made.items()})
            trio.run(tour, demo)
            if args.keep:
                print(f"\nServing at {cluster.url}; an API key: {demo.keys['dev']}. Ctrl-C stops everything.")
                try:
                    while True:
                        time.sleep(3600)
                except KeyboardInterrupt:
                    pass
        finally:
            if cluster is not None:
                cluster.stop()
            redis.stop()
            postgres.stop()
    if demo is None or demo.failed:
        print(f"\nFailed: {demo.failed if demo is not None else 'the set-up'}")
        return 1
    print("\nEvery step did what it should.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
