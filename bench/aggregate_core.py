"""What does aggregate mode cost the core? ``tools/list`` over 10 servers × 50 tools, and a forwarded ``tools/call``.

The core alone, in this process: a :class:`lockgate.core.Gateway` in
aggregate mode whose ten servers have answered their handshake (fed as
events, as a shell would), then:

- ``tools/list``: one client request to the merged, filtered, named list of
  500 tools and the action that answers it. The first is made (cold); every
  later one is served from the cache of merged views (warm). Goal: warm
  under 1 ms.
- ``tools/call``: one aggregate ``tools/call`` in (resolve the name, policy,
  forward) and the server's answer out (to the client, audited), against the
  same for on-demand ``execute_tool`` in the same run.

Reported: medians in microseconds over ``--rounds`` rounds of ``--calls``
each. ``--json`` prints one object.

    python bench/aggregate_core.py [--calls 2000] [--rounds 5] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

from lockgate.core import (
    ClientMessageReceived,
    ClientOpened,
    DownstreamMessageReceived,
    Gateway,
    GatewayStarted,
    SendToClient,
    SendToDownstream,
    load_config,
)

SERVERS = 10
TOOLS = 50
RULES = {"agents": {"bench": {"allow": {"servers": ["*"]}}}, "defaults": {"deny_on_missing_agent": False}}


def _message(value: dict[str, Any]) -> bytes:
    return json.dumps(value).encode()


def ready_gateway(mode: str) -> tuple[Gateway, dict[str, int]]:
    """A gateway whose ten servers are ready, and each server's downstream id."""
    servers = {"mcpServers": {f"s{n}": {"command": "srv", "args": [str(n)], "description": f"server {n}"} for n in range(SERVERS)}}
    environ = {"GATEWAY_MODE": mode, "GATEWAY_DEFAULT_AGENT": "bench", "GATEWAY_INIT_STRATEGY": "eager", "GATEWAY_HEALTH_INTERVAL": "0"}
    gateway = Gateway(load_config(servers=servers, rules=RULES, environ=environ))
    actions = gateway.handle(GatewayStarted(now=0.0))
    gateway.handle(ClientOpened(now=0.0, client=1))
    downstreams: dict[str, int] = {}
    pending = [a for a in actions if isinstance(a, SendToDownstream)]
    while pending:
        action = pending.pop(0)
        message = action.message
        server = next(name for name, ds in downstreams.items() if ds == action.downstream) if action.downstream in downstreams.values() else None
        if message.get("method") == "initialize":
            server = f"s{len(downstreams)}"
            downstreams[server] = action.downstream
            answer: dict[str, Any] = {"protocolVersion": "2025-11-25", "capabilities": {"tools": {}}, "serverInfo": {"name": server}}
        elif message.get("method") == "tools/list":
            answer = {
                "tools": [
                    {"name": f"tool_{t}", "description": f"tool {t} of {server}", "inputSchema": {"type": "object", "properties": {"x": {"type": "string"}}}}
                    for t in range(TOOLS)
                ]
            }
        else:
            continue
        reply = {"jsonrpc": "2.0", "id": message["id"], "result": answer}
        out = gateway.handle(DownstreamMessageReceived(now=0.0, downstream=action.downstream, data=_message(reply)))
        pending += [a for a in out if isinstance(a, SendToDownstream)]
    init = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": "2025-11-25", "capabilities": {}}}
    answered = gateway.handle(ClientMessageReceived(now=0.0, client=1, data=_message(init)))
    assert any(isinstance(a, SendToClient) for a in answered), "initialize was not answered: the servers are not ready"
    return gateway, downstreams


def time_list(calls: int) -> tuple[float, float, int]:
    """Cold and warm microseconds per ``tools/list``, and how many tools it listed."""
    gateway, _ = ready_gateway("aggregate")
    request = _message({"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
    start = time.perf_counter()
    [answer] = gateway.handle(ClientMessageReceived(now=1.0, client=1, data=request))
    cold = (time.perf_counter() - start) * 1e6
    assert isinstance(answer, SendToClient)
    listed = len(answer.message["result"]["tools"])
    start = time.perf_counter()
    for _ in range(calls):
        gateway.handle(ClientMessageReceived(now=1.0, client=1, data=request))
    warm = (time.perf_counter() - start) / calls * 1e6
    return cold, warm, listed


def time_calls(mode: str, calls: int) -> float:
    """Microseconds per call in and answer out, through the core."""
    gateway, downstreams = ready_gateway(mode)
    downstream = downstreams["s3"]
    if mode == "aggregate":
        params: dict[str, Any] = {"name": "s3__tool_7", "arguments": {"x": "hi"}}
    else:
        params = {"name": "execute_tool", "arguments": {"agent_id": "bench", "server": "s3", "tool": "tool_7", "args": {"x": "hi"}}}
    result = {"content": [{"type": "text", "text": "hi"}], "isError": False}
    start = time.perf_counter()
    for n in range(calls):
        request = _message({"jsonrpc": "2.0", "id": n + 10, "method": "tools/call", "params": params})
        [forwarded] = [a for a in gateway.handle(ClientMessageReceived(now=1.0, client=1, data=request)) if isinstance(a, SendToDownstream)]
        reply = _message({"jsonrpc": "2.0", "id": forwarded.message["id"], "result": result})
        gateway.handle(DownstreamMessageReceived(now=1.0, downstream=downstream, data=reply))
    return (time.perf_counter() - start) / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    colds, warms, aggregate, on_demand = [], [], [], []
    listed = 0
    for _ in range(args.rounds):
        cold, warm, listed = time_list(args.calls)
        colds.append(cold)
        warms.append(warm)
        # Both orders, so neither side always runs on a warmer interpreter.
        for mode in ("aggregate", "on_demand") if len(aggregate) % 2 == 0 else ("on_demand", "aggregate"):
            (aggregate if mode == "aggregate" else on_demand).append(time_calls(mode, args.calls))
    report = {
        "servers": SERVERS, "tools_per_server": TOOLS, "tools_listed": listed, "rounds": args.rounds, "calls": args.calls,
        "tools_list_cold_us": round(statistics.median(colds), 1),
        "tools_list_warm_us": round(statistics.median(warms), 1),
        "aggregate_call_us": round(statistics.median(aggregate), 1),
        "execute_tool_call_us": round(statistics.median(on_demand), 1),
    }
    report["call_ratio"] = round(report["aggregate_call_us"] / report["execute_tool_call_us"], 3)
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"{SERVERS} servers x {TOOLS} tools ({listed} listed); medians of {args.rounds} rounds of {args.calls}")
    print(f"  tools/list   cold {report['tools_list_cold_us']:8.1f} us   warm {report['tools_list_warm_us']:8.1f} us")
    print(f"  tools/call   aggregate {report['aggregate_call_us']:6.1f} us   execute_tool {report['execute_tool_call_us']:6.1f} us"
          f"   ratio {report['call_ratio']}")


if __name__ == "__main__":
    main()
