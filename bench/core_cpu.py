"""How much CPU does the core alone spend per forwarded tool call?

No processes, no sockets, no trio: one ``Gateway`` in this process, a client
and a fake server played by this script, and ``execute_tool`` calls fed
through ``Gateway.handle`` one after another. What is left is the cost of
the state machine itself: parsing, policy, routing, timers, the answer and
the audit record.

    python bench/core_cpu.py [--calls 20000] [--rounds 5] [--json]

Reported: the median over rounds of the core's CPU microseconds per call
(``time.process_time``). Run it with ``PYTHONPATH`` pointing at another
checkout's ``lockgate`` to compare two versions in one run (see bench/README.md).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

try:
    import lockgate.core as core

    core.Gateway  # noqa: B018 - the public API, from the core split on
except AttributeError:  # an older checkout, to compare against: the same names in their modules
    import types

    from lockgate.core import actions, config, events, gateway

    names = {k: v for module in (actions, events, config) for k, v in vars(module).items() if not k.startswith("_")}
    core = types.SimpleNamespace(**names, Gateway=gateway.Gateway, __file__=gateway.__file__)

SERVERS = {"mcpServers": {"echo": {"command": "echo-server"}}}
RULES = {"agents": {"dev": {"allow": {"servers": ["echo"]}}}}
TOOL = {"name": "echo", "inputSchema": {"type": "object"}}
RESULTS: dict[str, Any] = {
    "initialize": {"protocolVersion": "2025-11-25", "capabilities": {"tools": {}}, "serverInfo": {"name": "echo", "version": "1"}},
    "tools/list": {"tools": [TOOL]},
    "tools/call": {"content": [{"type": "text", "text": "hello, lockgate"}]},
    "ping": {},
}


def build() -> Any:
    """A Gateway over the fake server; load_config's keywords changed once, so take either."""
    try:
        config = core.load_config(servers=SERVERS, rules=RULES, environ={})
    except TypeError:
        config = core.load_config(
            servers_text=json.dumps(SERVERS), servers_file="s", rules_text=json.dumps(RULES), rules_file="r", environ={}
        )
    return core.Gateway(config)


class Session:
    """A client and a server around one gateway, answering every request the gateway sends."""

    def __init__(self) -> None:
        self.gateway = build()
        self.now = 0.0
        self.answers = 0
        self.feed(core.GatewayStarted(now=0.0))
        self.feed(core.ClientOpened(now=0.0, client=1))
        self.client({"id": 0, "method": "initialize", "params": {"protocolVersion": "2025-11-25", "capabilities": {}}})
        self.client({"method": "notifications/initialized"})

    def feed(self, event: Any) -> None:
        for action in self.gateway.handle(event):
            if isinstance(action, core.SendToDownstream) and "method" in action.message and "id" in action.message:
                message = action.message
                answer = {"jsonrpc": "2.0", "id": message["id"], "result": RESULTS[message["method"]]}
                self.feed(core.DownstreamMessageReceived(now=self.now, downstream=action.downstream, data=json.dumps(answer).encode()))
            elif isinstance(action, core.SendToClient):
                self.answers += 1

    def client(self, message: dict[str, Any]) -> None:
        self.feed(core.ClientMessageReceived(now=self.now, client=1, data=json.dumps({"jsonrpc": "2.0", **message}).encode()))

    def calls(self, count: int, first_id: int) -> None:
        for n in range(first_id, first_id + count):
            self.now += 0.001
            arguments = {"agent_id": "dev", "server": "echo", "tool": "echo", "args": {"text": "hello, lockgate"}}
            self.client({"id": n, "method": "tools/call", "params": {"name": "execute_tool", "arguments": arguments}})


def measure(calls: int, rounds: int) -> dict[str, Any]:
    session = Session()
    session.calls(500, 1)  # warm up
    per_call = []
    next_id = 1000
    for _ in range(rounds):
        before, answered = time.process_time(), session.answers
        session.calls(calls, next_id)
        spent = time.process_time() - before
        assert session.answers - answered == calls, "every call must be answered"
        per_call.append(spent / calls * 1e6)
        next_id += calls
    return {"calls": calls, "rounds": rounds, "core_cpu_us_per_call": round(statistics.median(per_call), 2),
            "per_round": [round(x, 2) for x in per_call], "lockgate": core.__file__}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=20000, help="calls per round (default 20000)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds; the median is reported (default 5)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    result = measure(args.calls, args.rounds)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"core CPU per forwarded call: {result['core_cpu_us_per_call']} µs (median of {args.rounds} rounds of {args.calls})")


if __name__ == "__main__":
    main()
