"""Helpers for synchronous core tests: build a Gateway, feed events, read actions.

No trio, no mocks: a test is a list of events and the exact actions expected.
``Driver`` keeps a fake clock and remembers the last started connection per
server so tests can answer as that downstream would.
"""

from __future__ import annotations

import json
from typing import Any

from lockgate.core._actions import (
    Action,
    Audit,
    CancelTimer,
    Log,
    SendToClient,
    SendToDownstream,
    SetTimer,
    StartDownstream,
    StopDownstream,
)
from lockgate.core._config import Config, ServerSpec, Settings
from lockgate.core._events import (
    ClientMessageReceived,
    ClientOpened,
    DownstreamExited,
    DownstreamMessageReceived,
    GatewayStarted,
    TimerFired,
)
from lockgate.core._gateway import Gateway
from lockgate.core._policy import Policy

JSON = dict[str, Any]

ECHO_TOOL: JSON = {
    "name": "echo",
    "description": "Echo text back.",
    "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]},
}
DROP_TOOL: JSON = {"name": "drop_table", "inputSchema": {"type": "object"}}
GET_TOOL: JSON = {"name": "get_user", "inputSchema": {"type": "object"}}

RULES: JSON = {
    "agents": {
        "dev": {"allow": {"servers": ["*"]}, "deny": {"tools": {"db": ["drop_*"]}}},
        "reader": {"allow": {"servers": ["db"], "tools": {"db": ["get_*"]}}},
        "default": {"allow": {"servers": ["util"]}},
    },
    "defaults": {"deny_on_missing_agent": False},
}


def server(name: str, **kw: Any) -> ServerSpec:
    return ServerSpec(name=name, transport="stdio", command="srv", args=(name,), description=f"{name} server", **kw)


def make_config(rules: JSON | None = None, servers: tuple[str, ...] = ("db", "util"), **settings: Any) -> Config:
    settings.setdefault("init_strategy", "lazy")
    settings.setdefault("health_interval", 0)  # health checks are tested on their own
    return Config(
        servers={n: server(n) for n in servers},
        policy=Policy.compile(RULES if rules is None else rules),
        settings=Settings(**settings),
    )


def req(id: Any, method: str, params: JSON | None = None) -> JSON:
    msg: JSON = {"jsonrpc": "2.0", "id": id, "method": method}
    if params is not None:
        msg["params"] = params
    return msg


def call(id: Any, tool: str, /, **arguments: Any) -> JSON:
    return req(id, "tools/call", {"name": tool, "arguments": arguments})


def sent_to_client(actions: list[Action]) -> list[JSON]:
    return [a.message for a in actions if isinstance(a, SendToClient)]


def sent_downstream(actions: list[Action]) -> list[JSON]:
    return [a.message for a in actions if isinstance(a, SendToDownstream)]


def audits(actions: list[Action]) -> list[JSON]:
    return [a.record for a in actions if isinstance(a, Audit)]


def without_logs(actions: list[Action]) -> list[Action]:
    return [a for a in actions if not isinstance(a, Log)]


def structured(response: JSON) -> Any:
    """The structured content of a gateway tool's result, checked against its text."""
    res = response["result"]
    assert json.loads(res["content"][0]["text"]) == (
        res["structuredContent"] if "result" not in res["structuredContent"] else res["structuredContent"]["result"]
    )
    return res["structuredContent"]


class Driver:
    """One gateway, one fake clock, and the downstream connections it started."""

    def __init__(self, config: Config | None = None, *, client: Any = 0) -> None:
        self.gw = Gateway(config or make_config())
        self.now = 0.0
        self.client = client
        self.connections: dict[str, int] = {}
        #: Every StartDownstream, in order (for servers with several instances).
        self.started: list[StartDownstream] = []
        #: Every timer ever set, with its deadline.
        self.timers: dict[int, float] = {}
        #: Timers set and neither cancelled nor fired yet, as the shell would hold them.
        self.live_timers: set[int] = set()
        #: Downstream connections started and neither stopped nor reported gone.
        self.live_downstreams: set[int] = set()
        self.handle(ClientOpened(now=self.now, client=client))

    def handle(self, event: Any) -> list[Action]:
        if isinstance(event, TimerFired):
            self.live_timers.discard(event.timer)
        if isinstance(event, DownstreamExited):
            self.live_downstreams.discard(event.downstream)
        actions = self.gw.handle(event)
        for a in actions:
            if isinstance(a, StartDownstream):
                self.connections[a.server] = a.downstream
                self.started.append(a)
                self.live_downstreams.add(a.downstream)
            elif isinstance(a, StopDownstream):
                self.live_downstreams.discard(a.downstream)
            elif isinstance(a, SetTimer):
                self.timers[a.timer] = a.deadline
                self.live_timers.add(a.timer)
            elif isinstance(a, CancelTimer):
                self.live_timers.discard(a.timer)
        return actions

    def start(self) -> list[Action]:
        return self.handle(GatewayStarted(now=self.now))

    def send(self, message: JSON | bytes, client: Any = None) -> list[Action]:
        data = message if isinstance(message, bytes) else json.dumps(message).encode()
        return self.handle(
            ClientMessageReceived(now=self.now, client=self.client if client is None else client, data=data)
        )

    def initialize(self, version: str = "2025-11-25") -> list[Action]:
        actions = self.send(req(0, "initialize", {"protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}))
        self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        return actions

    def downstream(self, server: str, message: JSON | bytes) -> list[Action]:
        data = message if isinstance(message, bytes) else json.dumps(message).encode()
        return self.handle(DownstreamMessageReceived(now=self.now, downstream=self.connections[server], data=data))

    def exit(self, server: str, reason: str = "exited with code 1") -> list[Action]:
        return self.handle(DownstreamExited(now=self.now, downstream=self.connections[server], reason=reason))

    def fire(self, timer: int) -> list[Action]:
        return self.handle(TimerFired(now=self.now, timer=timer))

    def handshake(self, server: str, tools: list[JSON]) -> list[Action]:
        """Answer a starting downstream's initialize and tools/list; return the last actions."""
        self.downstream(
            server,
            {"jsonrpc": "2.0", "id": 1, "result": {"protocolVersion": "2025-11-25", "capabilities": {"tools": {}}, "serverInfo": {"name": server, "version": "1"}}},
        )
        return self.downstream(server, {"jsonrpc": "2.0", "id": 2, "result": {"tools": tools}})

    # -- by connection, for servers with several instances or sessions ------------

    def to(self, connection: int, message: JSON) -> list[Action]:
        """A message from downstream connection ``connection``."""
        return self.handle(DownstreamMessageReceived(now=self.now, downstream=connection, data=json.dumps(message).encode()))

    def exit_connection(self, connection: int, reason: str = "exited with code 1") -> list[Action]:
        return self.handle(DownstreamExited(now=self.now, downstream=connection, reason=reason))

    def handshake_connection(self, connection: int, tools: list[JSON]) -> list[Action]:
        """Answer initialize (wire id 1) and tools/list (wire id 2) on one connection."""
        self.to(connection, {"jsonrpc": "2.0", "id": 1, "result": {"protocolVersion": "2025-11-25", "capabilities": {}, "serverInfo": {"name": "s", "version": "1"}}})
        return self.to(connection, {"jsonrpc": "2.0", "id": 2, "result": {"tools": tools}})

    def timers_at(self, deadline: float) -> list[int]:
        return [t for t, d in self.timers.items() if d == deadline]
