"""What does authentication cost per tool call over Streamable HTTP?

One run, alternating rounds of the same load (``http_load.py``'s closed loop
of ``execute_tool`` echo calls against the raw echo server) through three
gateways started the same way but for authentication:

- ``none``: ``lockgate serve --transport http`` as today;
- ``key``: ``--auth``, every request with ``Authorization: Bearer lg_…`` (an
  API key made in a fresh SQLite database);
- ``jwt``: ``--auth``, every request with a bearer token Lockgate signed.

Reported per kind: calls/s and the gateway's CPU time per call (median of
the rounds), and each authenticated kind as a ratio to ``none`` measured in
the same run. The goal: at most 5 % slower. On a shared machine those ratios
move by several per cent between runs, so the run also measures, in this
process, what the gateway does per request for a credential (read the
header, look the credential up in the cache, hand over its principal) and
reports it as a share of the unauthenticated CPU per call: the part of the
ratio that is authentication rather than noise. ``--json`` prints one object.

    python bench/auth_overhead.py [--sessions 100] [--duration 8] [--rounds 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import http_load  # noqa: E402  (the sibling benchmark, for its load generator and gateway start)

KINDS = ("none", "key", "jwt")
SECRET = "a benchmark signing secret of thirty-two bytes or more"


def credentials(directory: Path) -> tuple[dict[str, str], dict[str, str]]:
    """The environment of an authenticating gateway, and a credential of each kind acting as the bench agent."""
    from lockgate.core import Principal
    from lockgate.shells.auth import TokenIssuer
    from lockgate.shells.store import Store

    url = f"sqlite:///{directory / 'lockgate.db'}"
    with Store.open(url) as store:
        store.upgrade()
        key = store.create_key("bench", role="user", agents=["bench"])[1]
    token = TokenIssuer(secret=SECRET.encode()).issue(Principal(id="user:bench", agents=("bench",)), now=time.time()).token
    env = {"GATEWAY_DATABASE_URL": url, "GATEWAY_STATE_DIR": str(directory / "state"), "GATEWAY_JWT_SECRET": SECRET, "GATEWAY_AUTH": "required"}
    return env, {"key": key, "jwt": token}


def in_process_us(calls: int = 200_000) -> dict[str, float]:
    """Microseconds per request a cached credential costs the gateway: header to principal, by kind."""
    import timeit

    import trio

    from lockgate.shells.auth import TokenIssuer
    from lockgate.shells.identity import Identity, presented_credential
    from lockgate.shells.store import Store

    with tempfile.TemporaryDirectory(prefix="lockgate-auth-bench-") as tmp:
        env, made = credentials(Path(tmp))
        issuer = TokenIssuer(secret=SECRET.encode())
        with Store.open(env["GATEWAY_DATABASE_URL"]) as store:
            identity = Identity(store, lambda token, now: issuer.verify(token, now=now))
            trio.run(identity.load)
            costs = {}
            for kind, credential in made.items():
                headers = {"authorization": f"Bearer {credential}"}
                assert not hasattr(identity.authenticate(presented_credential(headers), 1.0), "status")
                seconds = timeit.timeit(lambda: identity.authenticate(presented_credential(headers), 1.0), number=calls)
                costs[kind] = round(seconds / calls * 1e6, 2)
    return costs


def one_round(kind: str, sessions: int, duration: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="lockgate-auth-bench-") as tmp:
        directory = Path(tmp)
        env: dict[str, str] = {}
        credential = None
        if kind != "none":
            env, made = credentials(directory)
            credential = made[kind]
        proc, url = http_load.start_gateway(directory, "raw", env)
        try:
            host, port = url.removeprefix("http://").rsplit(":", 1)
            before = http_load.cpu_seconds(proc.pid)
            args = ["--worker", "http", "--host", host, "--port", port, "--sessions", str(sessions), "--duration", str(duration)]
            result = http_load.run_worker([*args, *(["--credential", credential] if credential else [])])
            after = http_load.cpu_seconds(proc.pid)
            if before is not None and after is not None and result["calls"]:
                result["cpu_us_per_call"] = round((after - before) / result["calls"] * 1e6, 1)
        finally:
            http_load.stop_gateway(proc)
    if result["errors"]:
        raise SystemExit(f"{kind}: {result['errors']} calls failed")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=100)
    parser.add_argument("--duration", type=float, default=8.0, help="seconds of load per round and kind (default 8)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rounds: dict[str, list[dict[str, Any]]] = {kind: [] for kind in KINDS}
    for _ in range(args.rounds):
        for kind in KINDS:
            rounds[kind].append(one_round(kind, args.sessions, args.duration))
    report: dict[str, Any] = {"sessions": args.sessions, "duration": args.duration, "rounds": args.rounds}
    for kind in KINDS:
        report[kind] = {
            "calls_per_second": round(statistics.median(r["calls_per_second"] for r in rounds[kind]), 1),
            "cpu_us_per_call": round(statistics.median(r.get("cpu_us_per_call", 0.0) for r in rounds[kind]), 1),
            "p99_ms": round(statistics.median(r["p99_ms"] for r in rounds[kind]), 3),
            "per_round_cpu_us": [r.get("cpu_us_per_call") for r in rounds[kind]],
        }
    in_process = in_process_us()
    for kind in ("key", "jwt"):
        report[kind]["cpu_ratio"] = round(report[kind]["cpu_us_per_call"] / report["none"]["cpu_us_per_call"], 3)
        report[kind]["throughput_ratio"] = round(report[kind]["calls_per_second"] / report["none"]["calls_per_second"], 3)
        report[kind]["in_process_us"] = in_process[kind]
        report[kind]["in_process_share"] = round(in_process[kind] / report["none"]["cpu_us_per_call"], 4)
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"{args.rounds} alternating rounds, {args.sessions} sessions, {args.duration:g} s each; medians")
    for kind in KINDS:
        line = report[kind]
        extra = "" if kind == "none" else (
            f"   CPU x{line['cpu_ratio']}, throughput x{line['throughput_ratio']}; "
            f"in process {line['in_process_us']} us/request = {line['in_process_share']:.2%}"
        )
        print(f"  {kind:5} {line['calls_per_second']:8.1f} calls/s  {line['cpu_us_per_call']:7.1f} us CPU/call  p99 {line['p99_ms']:.1f} ms{extra}")


if __name__ == "__main__":
    main()
