"""What does a downstream OAuth token cost a call, once Lockgate holds it?

One run, on 127.0.0.1:

1. An authorization server and two copies of the same MCP server (the e2e
   tests' ``tests/e2e/servers/oauth_as.py`` and ``oauth_rs.py``): ``notes``
   wants a bearer token and checks it at the authorization server
   (introspection) on every request; ``plain`` wants none.
2. ``lockgate auth login notes`` gets the gateway's token (a stub browser
   approves), then one ``lockgate serve --transport http`` fronts both.
3. One client calls ``echo`` on each through the REST API
   (``POST /mcp/{server}/tools/call``) on a keep-alive connection, in a closed
   loop, in alternating blocks (plain then notes, then notes then plain, ...),
   after an untimed warm-up of each, so drift on the machine falls on both.

Reported per side: calls/s, p50/p95/p99 latency in ms, and the gateway's CPU
time per call (user + system from ``/proc``), then notes / plain for each.
The latency ratio includes what the protected server itself does with the
token (a round trip to the authorization server per request); the CPU ratio
is Lockgate's own share: with a cached token, one header per request. The
run checks that no token was requested during the timed blocks (the token
really was cached), and fails when a call failed.

Bounded: about 20 s with the defaults; ``--quick`` about 4 s. Every process
started is stopped at the end.

    python bench/oauth_overhead.py [--rounds 4] [--seconds 2] [--quick] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))

import http_load  # noqa: E402  (gateway start and stop, CPU time, percentiles)

from tests.e2e.oauth_servers import STUB_BROWSER, OAuthServers  # noqa: E402

SIDES = ("plain", "notes")


def _login(directory: Path, config: Path, rules: Path, env: dict[str, str]) -> None:
    command = [sys.executable, "-m", "lockgate.shells", "auth", "login", "notes", "--config", str(config), "--rules", str(rules)]
    done = subprocess.run(command, cwd=directory, env=env, capture_output=True, text=True, timeout=60, check=False)
    if done.returncode != 0:
        raise SystemExit(f"lockgate auth login failed: {done.stderr.strip()}")


def _block(client: httpx.Client, url: str, seconds: float, latencies: list[float]) -> int:
    """Call ``echo`` in a closed loop for ``seconds``; the failures."""
    body = {"name": "echo", "arguments": {"text": "hello, lockgate"}, "agent_id": "bench"}
    errors = 0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        start = time.perf_counter()
        response = client.post(url, json=body)
        elapsed = time.perf_counter() - start
        if response.status_code == 200 and "hello, lockgate" in response.text:
            latencies.append(elapsed)
        else:
            errors += 1
    return errors


def measure(rounds: int, seconds: float, warmup: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="lockgate-oauth-bench-") as tmp:
        directory = Path(tmp)
        with OAuthServers(directory) as servers:
            config = directory / ".mcp.json"
            rules = directory / ".mcp-gateway-rules.json"
            config.write_text(json.dumps({"mcpServers": {
                "plain": {"url": servers.plain_url, "description": "no auth"},
                "notes": {"url": servers.mcp_url, "description": "OAuth"},
            }}))
            rules.write_text(json.dumps({"agents": {"bench": {"allow": {"servers": ["*"]}}}}))
            env = {
                **{k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")},
                "GATEWAY_STATE_DIR": str(directory / "state"),
                "GATEWAY_AUDIT_LOG": str(directory / "audit.jsonl"),
                "BROWSER": f"{sys.executable} {STUB_BROWSER} %s",
            }
            _login(directory, config, rules, env)
            proc, base = _start(directory, config, rules, env)
            try:
                return _rounds(proc, base, servers, rounds, seconds, warmup)
            finally:
                http_load.stop_gateway(proc)


def _start(directory: Path, config: Path, rules: Path, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    return http_load.start_gateway(directory, "oauth", {**env, "GATEWAY_INIT_STRATEGY": "lazy"}, files=(config, rules))


def _rounds(
    proc: subprocess.Popen[bytes], base: str, servers: OAuthServers, rounds: int, seconds: float, warmup: float
) -> dict[str, Any]:
    latencies: dict[str, list[float]] = {side: [] for side in SIDES}
    errors = dict.fromkeys(SIDES, 0)
    cpu = dict.fromkeys(SIDES, 0.0)
    with httpx.Client(timeout=30) as client:
        for side in SIDES:
            _block(client, f"{base}/mcp/{side}/tools/call", warmup, [])
        tokens_before = sum(1 for event in servers.log() if event["event"] == "token")
        for number in range(rounds):
            order = SIDES if number % 2 == 0 else tuple(reversed(SIDES))
            for side in order:
                before = http_load.cpu_seconds(proc.pid) or 0.0
                errors[side] += _block(client, f"{base}/mcp/{side}/tools/call", seconds, latencies[side])
                cpu[side] += (http_load.cpu_seconds(proc.pid) or 0.0) - before
        tokens_after = sum(1 for event in servers.log() if event["event"] == "token")
    result: dict[str, Any] = {"rounds": rounds, "seconds": seconds, "token_requests_while_timed": tokens_after - tokens_before}
    for side in SIDES:
        calls = len(latencies[side])
        result[side] = {
            **http_load.percentiles(latencies[side]),
            "calls": calls,
            "errors": errors[side],
            "calls_per_second": round(calls / (rounds * seconds), 1),
            "cpu_us_per_call": round(cpu[side] / calls * 1e6, 1) if calls else 0.0,
            "mean_ms": round(statistics.fmean(latencies[side]) * 1000, 3) if calls else 0.0,
        }
    plain, notes = result["plain"], result["notes"]
    result["ratio"] = {
        key: round(notes[key] / plain[key], 3) if plain[key] else None
        for key in ("p50_ms", "p95_ms", "p99_ms", "cpu_us_per_call")
    }
    result["added_p50_ms"] = round(notes["p50_ms"] - plain["p50_ms"], 3)
    return result


def auth_cost(requests: int, rounds: int) -> dict[str, Any]:
    """Lockgate's own cost per request of a cached token, in this process: the HTTP downstream's
    ``httpx.AsyncClient`` on an in-memory transport, with and without its OAuth ``Auth``."""
    import trio

    from lockgate.core import OAuthSpec
    from lockgate.shells.oauth import OAuthManager
    from lockgate.shells.sealed import SecretBox
    from lockgate.shells.store import Store
    from lockgate.shells.store.oauth import GATEWAY, OAuthStore

    url = "http://127.0.0.1:9/mcp"

    def answer(request: httpx.Request) -> httpx.Response:
        if "authorization" not in request.headers:
            return httpx.Response(401, headers={"www-authenticate": 'Bearer error="invalid_token"'})
        return httpx.Response(200, content=b'{"jsonrpc":"2.0","id":1,"result":{}}')

    with tempfile.TemporaryDirectory(prefix="lockgate-oauth-cost-") as tmp:
        env = {"GATEWAY_STATE_DIR": tmp}
        store = Store.open(f"sqlite:///{tmp}/lockgate.db")
        store.ensure_schema()
        OAuthStore(store, SecretBox.from_environ(env)).put_token(
            "notes", GATEWAY, {"access_token": "cached", "token_type": "Bearer", "expires_in": 3600}
        )
        store.close()
        manager = OAuthManager(env)
        from lockgate.core import ServerSpec, StartDownstream

        spec = ServerSpec(name="notes", transport="http", url=url, oauth=OAuthSpec())
        auth = manager.auth_for(StartDownstream(downstream=1, server="notes", spec=spec))
        times: dict[str, list[float]] = {"without": [], "with": []}

        async def run() -> None:
            transport = httpx.MockTransport(answer)
            async with httpx.AsyncClient(transport=transport) as plain, \
                    httpx.AsyncClient(transport=transport, auth=auth) as authed:
                await authed.post(url, content=b"{}")  # the first meets a 401, and reads the stored token
                plain.headers["authorization"] = "Bearer cached"  # the same bytes on the wire
                for client in (plain, authed):  # untimed warm-up
                    for _ in range(requests):
                        await client.post(url, content=b"{}")
                for number in range(rounds):
                    for side in (("without", "with") if number % 2 == 0 else ("with", "without")):
                        client = authed if side == "with" else plain
                        start = time.perf_counter()
                        for _ in range(requests):
                            await client.post(url, content=b"{}")
                        times[side].append((time.perf_counter() - start) / requests)

        trio.run(run)
        manager.close()
    without, with_auth = statistics.median(times["without"]), statistics.median(times["with"])
    return {
        "requests": requests * rounds,
        "without_us": round(without * 1e6, 2),
        "with_us": round(with_auth * 1e6, 2),
        "added_us": round((with_auth - without) * 1e6, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--quick", action="store_true", help="1 round of 1 s, 0.5 s warm-up")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.seconds, args.warmup = 1, 1.0, 0.5
    result = measure(args.rounds, args.seconds, args.warmup)
    result["in_process"] = auth_cost(500 if args.quick else 5000, 2 if args.quick else 6)
    failed = result["plain"]["errors"] + result["notes"]["errors"] > 0 or result["token_requests_while_timed"] != 0
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{args.rounds} rounds of {args.seconds:g} s per side, one client, REST echo through one gateway")
        print(f"{'side':<10}{'calls/s':>10}{'p50 ms':>10}{'p95 ms':>10}{'p99 ms':>10}{'calls':>8}{'errors':>8}{'CPU µs/call':>13}")
        for side in SIDES:
            row = result[side]
            print(f"{side:<10}{row['calls_per_second']:>10}{row['p50_ms']:>10}{row['p95_ms']:>10}{row['p99_ms']:>10}"
                  f"{row['calls']:>8}{row['errors']:>8}{row['cpu_us_per_call']:>13}")
        ratio = result["ratio"]
        print(f"{'notes/plain':<10}{'':>10}{ratio['p50_ms']:>10}{ratio['p95_ms']:>10}{ratio['p99_ms']:>10}{'':>8}{'':>8}"
              f"{ratio['cpu_us_per_call']:>13}")
        print(f"added p50 latency with a cached token: {result['added_p50_ms']} ms; "
              f"token requests while timed: {result['token_requests_while_timed']}")
        cost = result["in_process"]
        print(f"in process, per request of the HTTP downstream's client: {cost['without_us']} µs without its OAuth, "
              f"{cost['with_us']} µs with a cached token: {cost['added_us']} µs added ({cost['requests']} requests a side)")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
