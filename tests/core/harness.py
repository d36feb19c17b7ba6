"""A gateway and fake peers for synchronous core tests, in the spirit of h11's ``ConnectionPair``.

A test feeds events and compares the actions that come out, exactly. The
:class:`Driver` also turns those actions back into peers a test can read and
act through: every ``StartDownstream`` becomes a :class:`FakeDownstream` that
records what the core sent it and answers under the wire ids the core chose;
every client is a :class:`FakeClient` that records what it received; timers
wait on a fake clock and fire, in deadline order, when the test advances it::

    d = Driver()                                   # client 0 is open; the clock is at 0
    d.initialize()
    d.send(call(1, "execute_tool", agent_id="dev", server="db", tool="echo", args={}))
    db = d.server("db")                            # the connection that call started
    db.complete_handshake(tools=[ECHO_TOOL])       # answers initialize, then tools/list
    actions = db.answer("tools/call", result={"content": []})  # under the wire id the core chose
    assert sent_to_client(actions) == [{"jsonrpc": "2.0", "id": 1, "result": {"content": []}}]
    d.send(call(2, "execute_tool", agent_id="dev", server="db", tool="echo", args={}))
    [timeout] = sent_to_client(d.advance(60))      # the call's timer fires after 60 s
    assert timeout["error"]["data"]["code"] == "TIMEOUT" and d.clients[0].received[-1] == timeout

Compare whole action lists where they are short enough to read: they show
what a filter hides (a timer set, a log line, the audit record). A wire id or
timer id may appear in an expectation once the test has shown where it came
from; to act as a peer, go through the fakes, which find the ids themselves.

The Driver also checks what no test should have to: the core never writes to
a connection it let go of, nor reuses a connection or timer id, nor cancels a
timer that is not armed, nor sends to a client it does not know.
"""

from __future__ import annotations

import json
from typing import Any

from lockgate.core import (
    Action, Audit, CancelTimer, ClientClosed, ClientId, ClientMessageReceived, ClientOpened, CloseClient, Config,
    DownstreamExited, DownstreamMessageReceived, DropStream, Event, Gateway, GatewayStarted, SendToClient,
    Principal, SendToDownstream, ServerSpec, SetTimer, Settings, StartDownstream, StopDownstream, TimerFired,
    TokenCounter, estimate_bytes,
)
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
    settings.setdefault("downstream_era", "handshake")  # the stateless era's probe is tested on its own
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


def audited(message: JSON, decision: str = "ALLOW", **fields: Any) -> Audit:
    """The audit record of gateway tool call ``message`` as :meth:`Driver.send` sent it, with ``fields`` set.

    Who, what and the argument keys come from the message; ``rule``,
    ``latency_ms`` and ``error_code`` are ``None``, 0 and ``None`` unless given.
    """
    arguments = message["params"].get("arguments", {})
    record = {
        "agent": arguments.get("agent_id"), "operation": message["params"].get("name"), "server": arguments.get("server"),
        "tool": arguments.get("tool"), "decision": decision, "rule": None, "latency_ms": 0.0, "error_code": None,
        "args": {"keys": sorted(arguments), "request_bytes": len(_bytes(message))},
    }
    return Audit(record={**record, **fields})


def structured(response: JSON) -> Any:
    """The structured content of a gateway tool's result, checked against its text."""
    res = response["result"]
    assert json.loads(res["content"][0]["text"]) == (
        res["structuredContent"] if "result" not in res["structuredContent"] else res["structuredContent"]["result"]
    )
    return res["structuredContent"]


def _bytes(message: JSON | bytes) -> bytes:
    return message if isinstance(message, bytes) else json.dumps(message).encode()


class FakeClient:
    """One client as the core sees it: what it sends, and what it was sent."""

    def __init__(self, driver: Driver, id: ClientId) -> None:
        self.driver, self.id = driver, id
        #: Every message the core sent this client, in order.
        self.received: list[JSON] = []
        #: The streams the core dropped (``DropStream.request``), and whether the session is over.
        self.dropped: list[Any] = []
        self.closed = False

    def send(self, message: JSON | bytes) -> list[Action]:
        return self.driver.send(message, client=self.id)

    def initialize(self, version: str = "2025-11-25") -> list[Action]:
        """The MCP handshake: ``initialize`` (request id 0), then ``notifications/initialized``; its answer's actions."""
        params = {"protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}
        actions = self.send(req(0, "initialize", params))
        self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        return actions

    def close(self) -> list[Action]:
        return self.driver.handle(ClientClosed(now=self.driver.now, client=self.id))


class FakeDownstream:
    """One connection the core started: it records what the core sent and answers under the core's wire ids."""

    def __init__(self, driver: Driver, start: StartDownstream) -> None:
        self.driver, self.start = driver, start
        self.id, self.server, self.instance = start.downstream, start.server, start.instance
        #: Every message the core sent on this connection, in order.
        self.received: list[JSON] = []
        #: Wire ids this fake has answered (or otherwise settled).
        self.answered: set[Any] = set()
        #: ``StopDownstream`` once the core stopped it; ``exited`` once a ``DownstreamExited`` was fed.
        self.stopped: StopDownstream | None = None
        self.exited = False

    def __repr__(self) -> str:
        return f"<FakeDownstream {self.id} of {self.server!r}, instance {self.instance}>"

    @property
    def alive(self) -> bool:
        return self.stopped is None and not self.exited

    def requests(self, method: str | None = None) -> list[JSON]:
        """The requests (with ``method``) the core sent and this fake has not answered, oldest first."""
        return [
            m for m in self.received
            if "id" in m and "method" in m and m["id"] not in self.answered and method in (None, m["method"])
        ]

    def request(self, method: str) -> JSON:
        """The latest unanswered request with ``method``."""
        pending = self.requests(method)
        assert pending, f"{self!r} has no unanswered {method} request; it received {self.received}"
        return pending[-1]

    # -- what the server says --------------------------------------------------------

    def send(self, message: JSON | bytes) -> list[Action]:
        """Any message (or raw bytes) from the server; a response settles the request it received with that id."""
        if isinstance(message, dict) and "method" not in message and any(m["id"] == message.get("id") for m in self.requests()):
            self.answered.add(message["id"])
        return self.driver.handle(DownstreamMessageReceived(now=self.driver.now, downstream=self.id, data=_bytes(message)))

    def answer(self, request: str | JSON, *, result: Any = None, error: JSON | None = None) -> list[Action]:
        """Answer ``request`` (a message it received, or the latest unanswered one with that method)."""
        if isinstance(request, str):
            request = self.request(request)
        if error is not None:
            return self.send({"jsonrpc": "2.0", "id": request["id"], "error": error})
        return self.send({"jsonrpc": "2.0", "id": request["id"], "result": {} if result is None else result})

    def answer_all_pings(self) -> list[Action]:
        """Answer every ping still unanswered (health checks), oldest first."""
        return [a for ping in self.requests("ping") for a in self.answer(ping)]

    def complete_handshake(self, tools: list[JSON] | None = None) -> list[Action]:
        """Answer ``initialize``, then ``tools/list`` with ``tools``: the actions of the last answer (the link is READY)."""
        info = {"name": self.server, "version": "1"}
        self.answer("initialize", result={"protocolVersion": "2025-11-25", "capabilities": {"tools": {}}, "serverInfo": info})
        return self.answer("tools/list", result={"tools": tools or []})

    def notify(self, method: str, **params: Any) -> list[Action]:
        return self.send({"jsonrpc": "2.0", "method": method, "params": params})

    def progress(self, request: str | JSON = "tools/call", **params: Any) -> list[Action]:
        """``notifications/progress`` under the progress token the core put in ``request``."""
        if isinstance(request, str):
            request = self.request(request)
        return self.notify("notifications/progress", progressToken=request["params"]["_meta"]["progressToken"], **params)

    def exit(self, reason: str = "exited with code 1") -> list[Action]:
        return self.driver.handle(DownstreamExited(now=self.driver.now, downstream=self.id, reason=reason))


class Driver:
    """One gateway, a fake clock, and the fake peers its actions created (see the module docstring)."""

    def __init__(self, config: Config | None = None, *, client: ClientId = 0, count_tokens: TokenCounter = estimate_bytes) -> None:
        self.gw = Gateway(config or make_config(), count_tokens=count_tokens)
        self.now = 0.0
        #: The client :meth:`send` speaks for unless told otherwise (opened here, over stdio).
        self.client = client
        self.clients: dict[ClientId, FakeClient] = {}
        #: Every connection the core started, by id, in the order it started them.
        self.downstreams: dict[int, FakeDownstream] = {}
        #: Timers set and neither cancelled nor fired, as a shell would hold them: id -> deadline.
        self.live_timers: dict[int, float] = {}
        self._timer_ids: set[int] = set()
        self.open(client)

    def handle(self, event: Event) -> list[Action]:
        """Feed one event; route its actions to the fake peers, checking the core's promises on the way."""
        if isinstance(event, TimerFired):
            self.live_timers.pop(event.timer, None)
        elif isinstance(event, DownstreamExited) and event.downstream in self.downstreams:
            self.downstreams[event.downstream].exited = True
        elif isinstance(event, ClientOpened) and (event.client not in self.clients or self.clients[event.client].closed):
            self.clients[event.client] = FakeClient(self, event.client)
        elif isinstance(event, ClientClosed) and event.client in self.clients:
            self.clients[event.client].closed = True
        actions = self.gw.handle(event)
        for a in actions:
            if isinstance(a, StartDownstream):
                assert a.downstream not in self.downstreams, f"connection id {a.downstream} reused"
                self.downstreams[a.downstream] = FakeDownstream(self, a)
            elif isinstance(a, SendToDownstream):
                assert self.downstreams[a.downstream].alive, f"sent to connection {a.downstream} after letting it go: {a}"
                self.downstreams[a.downstream].received.append(a.message)
            elif isinstance(a, StopDownstream):
                assert self.downstreams[a.downstream].alive, f"stopped connection {a.downstream} twice"
                self.downstreams[a.downstream].stopped = a
            elif isinstance(a, SetTimer):
                assert a.timer not in self._timer_ids, f"timer id {a.timer} reused"
                self._timer_ids.add(a.timer)
                self.live_timers[a.timer] = a.deadline
            elif isinstance(a, CancelTimer):
                assert self.live_timers.pop(a.timer, None) is not None, f"cancelled timer {a.timer}, which is not armed"
            elif isinstance(a, (SendToClient, CloseClient, DropStream)):
                client = self.clients.get(a.client)
                assert client is not None and not client.closed, f"{a} to a client the core does not know"
                if isinstance(a, SendToClient):
                    client.received.append(a.message)
                elif isinstance(a, DropStream):
                    client.dropped.append(a.request)
                else:
                    client.closed = True
        return actions

    # -- clients ---------------------------------------------------------------------

    def open(self, client: ClientId, transport: str = "stdio", principal: Principal | None = None) -> FakeClient:
        """Open a client session, with the verified caller ``principal`` if given."""
        self.handle(ClientOpened(now=self.now, client=client, transport=transport, principal=principal))
        return self.clients[client]

    def send(self, message: JSON | bytes, client: ClientId | None = None) -> list[Action]:
        client = self.client if client is None else client
        return self.handle(ClientMessageReceived(now=self.now, client=client, data=_bytes(message)))

    def initialize(self, version: str = "2025-11-25") -> list[Action]:
        return self.clients[self.client].initialize(version)

    # -- downstreams -----------------------------------------------------------------

    def start(self, seed: int = 0) -> list[Action]:
        return self.handle(GatewayStarted(now=self.now, seed=seed))

    def server(self, name: str) -> FakeDownstream:
        """The connection the core started last for server ``name``."""
        started = [ds for ds in self.downstreams.values() if ds.server == name]
        assert started, f"no connection was started for {name!r}"
        return started[-1]

    def handshake(self, server: str, tools: list[JSON]) -> list[Action]:
        """Shorthand: ``d.server(server).complete_handshake(tools)``."""
        return self.server(server).complete_handshake(tools)

    @property
    def live_downstreams(self) -> list[FakeDownstream]:
        """Connections started and neither stopped by the core nor exited."""
        return [ds for ds in self.downstreams.values() if ds.alive]

    # -- the clock -------------------------------------------------------------------

    def fire(self, timer: int) -> list[Action]:
        """Fire one timer now, due or not (a shell that saw it late, say)."""
        return self.handle(TimerFired(now=self.now, timer=timer))

    def advance(self, seconds: float) -> list[Action]:
        """Move the clock on, firing every timer that falls due on the way, in deadline order; their actions."""
        until, out = self.now + seconds, []
        for _ in range(10_000):
            due = [(deadline, timer) for timer, deadline in self.live_timers.items() if deadline <= until + 1e-9]
            if not due:
                break
            deadline, timer = min(due)
            self.now = max(self.now, deadline)
            out += self.fire(timer)
        else:
            raise AssertionError(f"timers keep falling due before {until}: {self.live_timers}")
        self.now = max(self.now, until)
        return out
