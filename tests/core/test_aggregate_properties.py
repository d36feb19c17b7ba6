"""Property tests of aggregate mode: what an agent sees is what it may use; relays reach the client they are for.

Two properties, each over random scenarios Hypothesis shrinks to a short one:

1. :func:`test_what_an_agent_sees_is_exactly_what_it_may_use`: random rules,
   catalogues (small alphabets, so names, prefixed names and URIs collide),
   prefix modes, separators and page sizes. Every item a server lists carries
   its origin in ``_meta``, so the test reads from a merged list which
   ``(server, name)`` each public name stands for, and checks: the list is
   the policy's answer, no more and no less; each public name is forwarded
   to that server under that name; any other name, however it was made up,
   reaches no tool or prompt, and a URI reaches only a resource the policy
   allows.
2. :func:`test_replies_and_relays_reach_the_right_peer_and_every_id_map_empties`:
   random interleavings of calls, answers, server requests (sampling),
   client answers (right, twice, made up), cancellations, closes, crashes and
   restarts. After each step every message is checked against a model of
   what each peer is owed; at the end every map of ids in the core is empty.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any
from unittest import mock

from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st

import lockgate.core._surface as surface
from lockgate.core import Action, ClientId, Config, SendToClient, SendToDownstream, Settings, StopDownstream
from lockgate.core._policy import Policy
from lockgate.core._rules import check_rules
from lockgate.core._timers import TimerKind

from .harness import JSON, Driver, FakeDownstream, make_config, req, server

# -- 1. what an agent sees is what it may use ------------------------------------------

#: Server names that make prefixed names collide: "a" + "_" + "b_x" is "a_b" + "_" + "x".
SERVERS = ("a", "b", "a_b")
AGENTS = ("alice", "bob")
#: Tool and prompt names: plain ones, ones holding a separator or a server prefix, the
#: gateway's own tool names (reserved when it lists them), and ones no client may see
#: unchanged (a space, non-ASCII, too long), which get a short form.
NAMES = ("x", "y", "xy", "b_x", "a_x", "x.y", "x-y", "b__x", "list_servers", "execute_tool", "x y", "é", "t" * 70)
NAME_GLOBS = ("*", "x*", "*x", "?", "b_*", "[xy]", "[!x]*", "*_*")
URIS = (
    "file:///x", "file:///y", "mem://x", "x", "file:///x?y#z", "file:///é",
    "lockgate://a/file:///x", "lockgate://b/x", "lockgate://a%5Fb/x",
)
URI_GLOBS = ("*", "file:*", "*x", "lockgate:*", "mem://?", "*/x")
TEMPLATES = ("file:///{path}", "mem://{key}", "lockgate://a/{x}")
SERVER_GLOBS = ("*", "a*", "?", "[ab]", "*_*")
SEPARATORS = ("__", "_", ".", "-", "x", "--", "_._")
GATEWAY_TOOLS = frozenset(("list_servers", "search_tools", "get_server_tools", "execute_tool", "get_gateway_status"))
VALID_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")

names = st.sampled_from(NAMES) | st.text(alphabet="xy_.", min_size=1, max_size=4)
uris = st.sampled_from(URIS) | st.text(alphabet="xy:/", min_size=1, max_size=6)


def entries(items: st.SearchStrategy[str], globs: tuple[str, ...]) -> st.SearchStrategy[list[str]]:
    return st.lists(items | st.sampled_from(globs), max_size=3)


@st.composite
def side(draw: st.DrawFn, servers: list[str]) -> JSON:
    """One agent's ``allow`` or ``deny``: servers, and tools, resources and prompts by server."""
    lists: JSON = {}
    if draw(st.booleans()):
        lists["servers"] = draw(entries(st.sampled_from(servers), SERVER_GLOBS))
    for kind, items, globs in (("tools", names, NAME_GLOBS), ("resources", uris, URI_GLOBS), ("prompts", names, NAME_GLOBS)):
        by_server = draw(st.dictionaries(st.sampled_from(servers), entries(items, globs), max_size=2))
        if by_server:
            lists[kind] = by_server
    return lists


@st.composite
def scenarios(draw: st.DrawFn) -> JSON:
    """Servers with catalogues, rules for one or two agents, and the naming settings."""
    servers = sorted(draw(st.sets(st.sampled_from(SERVERS), min_size=1, max_size=3)))
    catalogues = {
        s: {
            "tools": sorted(draw(st.sets(names, min_size=1, max_size=5))),
            "prompts": sorted(draw(st.sets(names, max_size=3))),
            "resources": sorted(draw(st.sets(uris, max_size=4))),
            "templates": sorted(draw(st.sets(st.sampled_from(TEMPLATES), max_size=2))),
        }
        for s in servers
    }
    agents = AGENTS[: draw(st.integers(1, 2))]
    rules: JSON = {"agents": {}, "defaults": {"deny_on_missing_agent": False}}
    for agent in agents:
        body: JSON = {}
        # Mostly an allow of some servers: an agent that may use nothing tests little.
        allow = draw(side(servers))
        allow["servers"] = draw(st.lists(st.sampled_from([*servers, *SERVER_GLOBS]), min_size=1, max_size=3))
        body["allow"] = allow
        if draw(st.booleans()):
            body["deny"] = draw(side(servers))
        rules["agents"][agent] = body
    prefixes = ["auto", "always", "never"] if len(servers) == 1 else ["auto", "always"]
    return {
        "servers": servers,
        "catalogues": catalogues,
        "rules": rules,
        "prefix": draw(st.sampled_from(prefixes)),
        "separator": draw(st.sampled_from(SEPARATORS)),
        "gateway_tools": draw(st.booleans()),
        # Small pages, so following nextCursor is part of the test.
        "page_size": draw(st.sampled_from([1, 2, 3, 100])),
    }


#: Each list a server is asked for: its method, its result key, the key naming an item, the catalogue's key.
LISTS = (
    ("tools/list", "tools", "name", "tools"),
    ("resources/list", "resources", "uri", "resources"),
    ("resources/templates/list", "resourceTemplates", "uriTemplate", "templates"),
    ("prompts/list", "prompts", "name", "prompts"),
)


def handshake(ds: FakeDownstream, catalogue: JSON) -> list[Action]:
    """Answer a server's ``initialize``, then its four lists from ``catalogue``, each item's origin in its ``_meta``."""
    capabilities: JSON = {"tools": {}, "resources": {}, "prompts": {}}
    out = ds.answer("initialize", result={
        "protocolVersion": "2025-11-25", "capabilities": capabilities, "serverInfo": {"name": ds.server, "version": "1"},
    })
    for method, key, name, kind in LISTS:
        items = [{name: n, "_meta": {"origin": [ds.server, n]}} for n in catalogue[kind]]
        if kind == "tools":
            items = [{**item, "inputSchema": {"type": "object"}} for item in items]
        out += ds.answer(method, result={key: items})
    return out


def settle(d: Driver, catalogues: dict[str, JSON]) -> None:
    """Complete the handshake of every connection that waits for one."""
    while waiting := [ds for ds in d.live_downstreams if ds.requests("initialize")]:
        for ds in waiting:
            handshake(ds, catalogues[ds.server])


class Visitor:
    """One client of a scenario's gateway, asking as each agent in turn."""

    def __init__(self, scenario: JSON) -> None:
        self.scenario = scenario
        assert [p for p in check_rules(scenario["rules"]) if not p.warning] == []
        config = make_config(
            scenario["rules"], tuple(scenario["servers"]), mode="aggregate", default_agent=AGENTS[0],
            prefix=scenario["prefix"], name_separator=scenario["separator"], gateway_tools=scenario["gateway_tools"],
        )
        self.policy: Policy = config.policy
        self.d = Driver(config)
        self.next_id = 1
        initialize = req(0, "initialize", {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t"}})
        self.d.send(initialize)
        settle(self.d, scenario["catalogues"])
        assert "result" in self.d.clients[0].received[-1], self.d.clients[0].received[-1]

    def ask(self, method: str, params: JSON, agent: str) -> tuple[JSON | None, list[SendToDownstream]]:
        """Send one request as ``agent``: its immediate answer (None if none yet) and what went downstream."""
        request_id, self.next_id = self.next_id, self.next_id + 1
        if agent != AGENTS[0]:
            params = {**params, "_meta": {"agent_id": agent}}
        actions = self.d.send(req(request_id, method, params))
        answers = [a.message for a in actions if isinstance(a, SendToClient) and a.message.get("id") == request_id]
        assert len(answers) <= 1, answers
        return (answers[0] if answers else None), [a for a in actions if isinstance(a, SendToDownstream)]

    def listing(self, method: str, key: str, agent: str) -> list[JSON]:
        """Every page of a merged list, following ``nextCursor``."""
        items: list[JSON] = []
        cursor: str | None = None
        for _ in range(1000):
            params: JSON = {} if cursor is None else {"cursor": cursor}
            answer, _ = self.ask(method, params, agent)
            if answer is None:  # it waits for servers this agent's list starts
                settle(self.d, self.scenario["catalogues"])
                [answer] = [m for m in self.d.clients[0].received if m.get("id") == self.next_id - 1 and "method" not in m]
            assert "result" in answer, answer
            items += answer["result"][key]
            cursor = answer["result"].get("nextCursor")
            if cursor is None:
                return items
        raise AssertionError(f"{method} never ends")


def origins(listed: list[JSON], key: str) -> dict[str, tuple[str, str]]:
    """Each listed item's public name or URI, and the ``(server, name)`` it came from; both unique."""
    found = {item[key]: (item["_meta"]["origin"][0], item["_meta"]["origin"][1]) for item in listed}
    assert len(found) == len(listed), f"a public name is listed twice: {[item[key] for item in listed]}"
    assert len(set(found.values())) == len(found), f"an item is listed twice: {found}"
    return found


#: Per agent, per kind (tools, prompts, resources, templates): public name -> (server, name).
Seen = dict[str, dict[str, tuple[str, str]]]


def everything_listed(v: Visitor, agent: str) -> Seen:
    tools = v.listing("tools/list", "tools", agent)
    own = [t for t in tools if "_meta" not in t]  # the gateway's own tools, when it lists them
    assert [t["name"] for t in own] == (["list_servers", "search_tools", "get_server_tools", "execute_tool"] if v.scenario["gateway_tools"] else [])
    return {
        "tools": origins([t for t in tools if "_meta" in t], "name"),
        "prompts": origins(v.listing("prompts/list", "prompts", agent), "name"),
        "resources": origins(v.listing("resources/list", "resources", agent), "uri"),
        "templates": origins(v.listing("resources/templates/list", "resourceTemplates", agent), "uriTemplate"),
    }


def observe(scenario: JSON, by_agent: dict[str, Seen]) -> None:
    """Say what kind of example this was (``--hypothesis-show-statistics``)."""
    note(f"listed: {by_agent}")
    separator, servers = scenario["separator"], scenario["servers"]
    prefixed = scenario["prefix"] == "always" or (scenario["prefix"] == "auto" and len(servers) > 1)
    named = [(public, pair) for seen in by_agent.values() for kind in ("tools", "prompts") for public, pair in seen[kind].items()]
    event(f"tools and prompts listed: {'0' if not named else '1-4' if len(named) < 5 else '5-9' if len(named) < 10 else '10+'}")
    if any(public != (s + separator + n if prefixed else n) for public, (s, n) in named):
        event("a short form was issued")


def check_the_lists_are_the_policy(v: Visitor, agent: str, seen: Seen) -> None:
    """What is listed is exactly what the policy allows of every server's catalogue, under names any client takes."""
    catalogues = v.scenario["catalogues"]
    for kind, decide in deciders(v.policy).items():
        allowed = {(s, n) for s in v.scenario["servers"] for n in catalogues[s][kind] if decide(agent, s, n).allowed}
        assert set(seen[kind].values()) == allowed, f"{agent}'s {kind}: listed {seen[kind]}, allowed {allowed}"
    for public in [*seen["tools"], *seen["prompts"]]:
        assert VALID_NAME.fullmatch(public), f"{public!r} is not a name every client takes"


def check_each_listed_name_leads_to_its_item(v: Visitor, agent: str, seen: Seen) -> None:
    """Each public name or URI is forwarded to its own server, under the server's own name, and allowed."""
    for kind, method, key in (("tools", "tools/call", "name"), ("prompts", "prompts/get", "name"), ("resources", "resources/read", "uri")):
        for public, (s, item) in seen[kind].items():
            answer, sent = v.ask(method, {key: public, "arguments": {}} if key == "name" else {key: public}, agent)
            assert answer is None, f"{method} {public!r}, listed for {(s, item)}, was not forwarded: {answer}"
            [forwarded] = sent
            ds = v.d.downstreams[forwarded.downstream]
            assert (ds.server, forwarded.message["method"], forwarded.message["params"][key]) == (s, method, item)
            assert deciders(v.policy)[kind](agent, s, item).allowed
            [reply] = [a.message for a in ds.answer(forwarded.message, result={}) if isinstance(a, SendToClient)]
            assert "result" in reply, reply


def check_no_other_name_leads_anywhere(v: Visitor, agent: str, seen: Seen, by_agent: dict[str, Seen]) -> None:
    """Any other tool or prompt name is refused, whoever it was issued to or however it was made up."""
    catalogues = v.scenario["catalogues"]
    own = [n for c in catalogues.values() for kind in ("tools", "prompts") for n in c[kind]]
    made_up = {
        *NAMES, *own,
        *(s + separator + n for s in SERVERS for separator in {"__", "_", v.scenario["separator"]} for n in own),
        *(n for other in by_agent.values() for kind in ("tools", "prompts") for n in other[kind]),
    }
    reserved = GATEWAY_TOOLS if v.scenario["gateway_tools"] else frozenset()
    for kind, method in (("tools", "tools/call"), ("prompts", "prompts/get")):
        for name in sorted(made_up - set(seen[kind]) - (reserved if kind == "tools" else set())):
            answer, sent = v.ask(method, {"name": name, "arguments": {}}, agent)
            assert sent == [], f"{method} {name!r}, not listed for {agent}, reached a server: {sent}"
            assert answer is not None and "error" in answer, (method, name, answer)


def check_a_uri_reaches_only_what_may_be_read(v: Visitor, agent: str, seen: Seen, by_agent: dict[str, Seen]) -> None:
    """A URI, listed or not (a template may make any), reaches only a resource the policy allows."""
    catalogues = v.scenario["catalogues"]
    own = [u for c in catalogues.values() for u in c["resources"]]
    made_up = {
        *URIS, *own, *(f"lockgate://{s}/{u}" for s in SERVERS for u in [*own, "z"]),
        *(u for other in by_agent.values() for u in other["resources"]),
    }
    for uri in sorted(made_up - set(seen["resources"])):
        answer, sent = v.ask("resources/read", {"uri": uri}, agent)
        if answer is not None:
            assert "error" in answer and sent == [], (uri, answer, sent)
            continue
        [forwarded] = sent
        event("an unlisted URI reached a resource")
        ds = v.d.downstreams[forwarded.downstream]
        s, item = ds.server, forwarded.message["params"]["uri"]
        assert v.policy.decide_resource(agent, s, item).allowed, f"{uri!r} reached {(s, item)}, which {agent} may not read"
        # Allowed and in the catalogue means listed (checked above); the namespace just spells it another way.
        ds.answer(forwarded.message, result={"contents": []})


def deciders(policy: Policy) -> dict[str, Any]:
    return {"tools": policy.decide, "prompts": policy.decide_prompt, "resources": policy.decide_resource, "templates": policy.decide_resource}


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(scenarios())
def test_what_an_agent_sees_is_exactly_what_it_may_use(scenario: JSON) -> None:
    with mock.patch.object(surface, "PAGE_SIZE", scenario["page_size"]):
        v = Visitor(scenario)
        by_agent = {agent: everything_listed(v, agent) for agent in scenario["rules"]["agents"]}
        observe(scenario, by_agent)
        for agent, seen in by_agent.items():
            check_the_lists_are_the_policy(v, agent, seen)
            check_each_listed_name_leads_to_its_item(v, agent, seen)
            check_no_other_name_leads_anywhere(v, agent, seen, by_agent)
            check_a_uri_reaches_only_what_may_be_read(v, agent, seen, by_agent)


# -- 2. replies and relays reach the right peer; every id map empties --------------------

RELAY_RULES: JSON = {"agents": {"dev": {"allow": {"servers": ["*"]}}}, "defaults": {"deny_on_missing_agent": False}}
RELAY_CATALOGUE: JSON = {"tools": ["work", "rest"], "prompts": [], "resources": [], "templates": []}
#: The gateway's own requests on a link: the test answers them with the handshake, or not at all.
HANDSHAKE_METHODS = frozenset(("initialize", "tools/list", "resources/list", "resources/templates/list", "prompts/list"))
#: A client's call forwarded to a server (the tag in it says whose): what a link's ``pending`` holds.
CALL_METHODS = frozenset(("tools/call", "resources/subscribe"))

STEPS = st.tuples(
    st.sampled_from([
        "call", "call", "call", "subscribe", "answer", "answer", "answer", "sample", "sample", "sample",
        "relay_answer", "relay_answer", "made_up_answer", "withdraw", "cancel", "close", "exit", "exit",
        "advance", "advance", "handshake", "handshake",
    ]),
    st.integers(0, 7),
    st.integers(0, 7),
)


def request_id(n: int) -> Any:
    """Client request ids of three kinds, one of them spelt like the gateway's own relay ids."""
    return [n, f"r{n}", f"lockgate-{n}"][n % 3]


def tag_uri(client: str, rid: Any) -> str:
    return f"mem://{client}/{json.dumps(rid)}"


def origin(message: JSON) -> tuple[str, Any] | None:
    """The client and request id a forwarded call carries; None for one of the gateway's own requests."""
    params = message.get("params", {})
    if message.get("method") == "tools/call":
        return params["arguments"]["client"], params["arguments"]["id"]
    if message.get("method") == "resources/subscribe" and "_meta" in params:  # a renewal has no _meta
        client, _, rid = params["uri"].removeprefix("mem://").partition("/")
        return client, json.loads(rid)
    return None


@dataclass
class Peer:
    """The test's model of one client: what it asked, what it was answered, what it was asked."""

    id: str
    sampling: bool
    open: bool = True
    next_id: int = 2  # 0 is initialize, 1 tools/list
    sent: list[Any] = field(default_factory=list)
    answered: set[Any] = field(default_factory=set)
    cancelled: set[Any] = field(default_factory=set)
    #: Relayed requests it may still answer: the gateway's id -> (connection, the server's id).
    relays: dict[str, tuple[int, Any]] = field(default_factory=dict)
    #: Every relayed request's id it received, in order.
    received_relays: list[str] = field(default_factory=list)
    tools: list[str] = field(default_factory=list)

    @property
    def in_flight(self) -> set[Any]:
        return {rid for rid in self.sent if rid not in self.answered and rid not in self.cancelled}

    def new_id(self) -> Any:
        rid = request_id(self.next_id)
        self.next_id += 1
        self.sent.append(rid)
        return rid


class World:
    """A gateway with two or three clients and one or two servers, and the model every action is checked against."""

    def __init__(self, isolations: list[str], sampling: list[bool]) -> None:
        self.servers = ["p", "q"][: len(isolations)]
        config = Config(
            servers={name: server(name, isolation=iso) for name, iso in zip(self.servers, isolations)},
            policy=Policy.compile(RELAY_RULES),
            settings=Settings(mode="aggregate", default_agent="dev", init_strategy="lazy", health_interval=0, downstream_era="handshake"),
        )
        self.d = Driver(config, client="c0")
        self.peers: dict[ClientId, Peer] = {f"c{n}": Peer(f"c{n}", wants) for n, wants in enumerate(sampling)}
        #: Requests each connection's server sent: its id -> "open", "answered" or "withdrawn".
        self.server_requests: dict[int, dict[Any, str]] = {}
        #: Forwarded calls the core cancelled, by connection.
        self.cancelled_wire: dict[int, set[Any]] = {}
        for peer in self.peers.values():
            if peer.id != "c0":
                self.d.open(peer.id)
        for peer in self.peers.values():
            peer.sent.append(0)
            params = {"protocolVersion": "2025-11-25", "capabilities": {"sampling": {}} if peer.sampling else {}}
            self.check(self.d.send(req(0, "initialize", params), client=peer.id))
        self.settle()
        for peer in self.peers.values():
            self.d.send({"jsonrpc": "2.0", "method": "notifications/initialized"}, client=peer.id)
            peer.sent.append(1)
            self.check(self.d.send(req(1, "tools/list"), client=peer.id))
            self.settle()
            [listed] = [m for m in self.d.clients[peer.id].received if m.get("id") == 1 and "method" not in m]
            peer.tools = [t["name"] for t in listed["result"]["tools"]]
            assert len(peer.tools) == 2 * len(self.servers), listed

    # -- the model ------------------------------------------------------------------------

    @property
    def open_peers(self) -> list[Peer]:
        return [p for p in self.peers.values() if p.open]

    def in_flight(self, ds: FakeDownstream) -> dict[Any, tuple[str, Any]]:
        """The client calls forwarded to ``ds`` that it has not answered nor the core cancelled: wire id -> origin."""
        found = {}
        for m in ds.received:
            tag = origin(m) if m.get("method") in CALL_METHODS else None
            if tag is not None and m["id"] not in ds.answered and m["id"] not in self.cancelled_wire.get(ds.id, ()):
                found[m["id"]] = tag
        return found

    def gone(self, downstream: int) -> None:
        """A connection ended: relays to it are void, and its server's requests are owed nothing."""
        for peer in self.peers.values():
            peer.relays = {rid: r for rid, r in peer.relays.items() if r[0] != downstream}
        self.server_requests.pop(downstream, None)

    def settle(self) -> None:
        while waiting := [ds for ds in self.d.live_downstreams if ds.requests("initialize")]:
            for ds in waiting:
                self.check(handshake(ds, RELAY_CATALOGUE))

    def check(self, actions: list[Action], relay: tuple[FakeDownstream, Any] | None = None) -> list[SendToClient]:
        """Check one step's actions against the model, and move the model on; the relayed requests sent."""
        relayed = []
        for a in actions:
            if isinstance(a, SendToClient):
                peer, m = self.peers[a.client], a.message
                assert peer.open, f"sent to {a.client}, which closed: {m}"
                if "method" in m and "id" in m:
                    assert relay is not None, f"{a.client} was asked something no server asked: {m}"
                    ds, server_id = relay
                    assert m["id"] not in peer.received_relays, f"relay id {m['id']} reused for {a.client}"
                    peer.received_relays.append(m["id"])
                    peer.relays[m["id"]] = (ds.id, server_id)
                    mine = {rid for client, rid in self.in_flight(ds).values() if client == peer.id}
                    assert a.request is None or a.request in mine, f"relay tied to {a.request!r}, not a call of {a.client} on it"
                    relayed.append(a)
                elif "method" in m:
                    if m["method"] == "notifications/cancelled":
                        withdrawn = m["params"]["requestId"]
                        assert withdrawn in peer.relays, f"{a.client} told of a withdrawn request it does not have: {m}"
                        del peer.relays[withdrawn]
                    else:
                        assert m["method"].endswith("/list_changed"), m
                else:
                    rid = m["id"]
                    assert rid in peer.sent, f"{a.client} was answered {rid!r}, an id it never sent: {m}"
                    assert rid not in peer.answered, f"{a.client} was answered {rid!r} twice: {m}"
                    assert rid not in peer.cancelled, f"{a.client} was answered {rid!r}, which it cancelled: {m}"
                    assert a.request in (None, rid), a
                    # Every call names a tool the client was listed, and no list changed: never unknown,
                    # even after its own connection failed (a bug this property found: see test_aggregate).
                    unknown = m.get("error", {}).get("message", "").startswith("Unknown tool")
                    assert not unknown, f"{a.client} was told a tool it was listed is unknown: {m}"
                    peer.answered.add(rid)
            elif isinstance(a, SendToDownstream):
                m, ds = a.message, self.d.downstreams[a.downstream]
                if "method" not in m:
                    asked = self.server_requests.get(ds.id, {})
                    assert asked.get(m["id"]) == "open", f"{ds!r} got an answer to {m['id']!r}, which it is not owed: {m} ({asked})"
                    asked[m["id"]] = "answered"
                elif m["method"] == "notifications/cancelled":
                    wire = m["params"]["requestId"]
                    forwarded = [r for r in ds.received if r.get("id") == wire and r.get("method") in CALL_METHODS]
                    assert forwarded and wire not in ds.answered, f"{ds!r} told to cancel {wire!r}, which is not in flight"
                    assert wire not in self.cancelled_wire.setdefault(ds.id, set()), f"{ds!r} told to cancel {wire!r} twice"
                    self.cancelled_wire[ds.id].add(wire)
            elif isinstance(a, StopDownstream):
                self.gone(a.downstream)
        self.consistent()
        return relayed

    def consistent(self) -> None:
        """The core's maps agree with the model: each session's calls and relays, each live link's forwarded calls."""
        ctx = self.d.gw._ctx
        for peer in self.open_peers:
            session = ctx.clients[peer.id]
            assert set(session.calls) == peer.in_flight - {0, 1}, (peer.id, set(session.calls), peer.in_flight)
            assert set(session.relayed) == set(peer.relays), (peer.id, set(session.relayed), peer.relays)
        for ds in self.d.live_downstreams:
            link = ctx.links[ds.id]
            assert set(link.pending) == set(self.in_flight(ds)), (ds, set(link.pending), self.in_flight(ds))

    # -- the steps --------------------------------------------------------------------------

    def step(self, kind: str, i: int, j: int) -> None:
        d, peers, live = self.d, self.open_peers, self.d.live_downstreams
        peer = peers[i % len(peers)] if peers else None
        ds = live[i % len(live)] if live else None
        if kind == "call" and peer is not None:
            rid = peer.new_id()
            name = peer.tools[j % len(peer.tools)]
            self.check(d.send(req(rid, "tools/call", {"name": name, "arguments": {"client": peer.id, "id": rid}}), client=peer.id))
        elif kind == "subscribe" and peer is not None:
            rid = peer.new_id()
            uri = tag_uri(peer.id, rid)
            public = uri if len(self.servers) == 1 else f"lockgate://{self.servers[j % len(self.servers)]}/{uri}"
            self.check(d.send(req(rid, "resources/subscribe", {"uri": public, "_meta": {"progressToken": rid}}), client=peer.id))
        elif kind == "answer" and ds is not None:
            pending = [m for m in ds.requests() if m["method"] not in HANDSHAKE_METHODS]
            if pending:
                m = pending[j % len(pending)]
                if j % 4 == 3:
                    self.check(ds.answer(m, error={"code": -32000, "message": "no"}))
                else:
                    self.check(ds.answer(m, result={"content": []} if m["method"] == "tools/call" else {}))
        elif kind == "sample" and ds is not None:
            # Mostly from a server with calls in flight: that is when there is a client to ask.
            busy = [w for w in live if self.in_flight(w)]
            if busy and j < 6:
                ds = busy[i % len(busy)]
            self.sample(ds, "elicitation/create" if j == 7 else "sampling/createMessage")
        elif kind == "relay_answer" and (asked := [p for p in peers if p.received_relays]):
            # Mostly a relay still open; else one answered, withdrawn or void.
            peer = asked[i % len(asked)]
            choices = list(peer.relays) if peer.relays and j < 5 else peer.received_relays
            rid = choices[j % len(choices)]
            owed = peer.relays.get(rid)
            answer: JSON = {"jsonrpc": "2.0", "id": rid}
            answer.update({"error": {"code": -1, "message": "declined"}} if j % 3 == 2 else {"result": {"model": "m", "j": j}})
            peer.relays.pop(rid, None)
            actions = d.send(answer, client=peer.id)
            self.check(actions)
            back = [(a.downstream, a.message) for a in actions if isinstance(a, SendToDownstream)]
            event(f"relay answer: {'passed on' if owed else 'ignored'}")
            if owed is None:  # answered before, withdrawn, or its server's connection is gone
                assert back == [], back
            else:
                [(downstream, message)] = back
                assert (downstream, message["id"]) == owed, (back, owed)
                assert (message.get("result"), message.get("error")) == (answer.get("result"), answer.get("error"))
        elif kind == "made_up_answer" and peer is not None:
            made_up = [f"lockgate-{len(peer.received_relays) + 1 + j}", j, f"r{j}", "lockgate-0"][i % 4]
            actions = d.send({"jsonrpc": "2.0", "id": made_up, "result": {}}, client=peer.id)
            self.check(actions)
            assert not any(isinstance(a, (SendToDownstream, SendToClient)) for a in actions), actions
        elif kind == "withdraw" and ds is not None and self.server_requests.get(ds.id):
            asked = list(self.server_requests[ds.id])
            server_id = asked[j % len(asked)]
            owner = [(p, rid) for p in self.peers.values() for rid, r in p.relays.items() if r == (ds.id, server_id)]
            actions = ds.notify("notifications/cancelled", requestId=server_id, reason="enough")
            self.check(actions)
            told = [(a.client, a.message["params"]["requestId"]) for a in actions if isinstance(a, SendToClient)]
            assert told == [(p.id, rid) for p, rid in owner], (told, owner)
            if owner:
                event("relay withdrawn")
                self.server_requests[ds.id][server_id] = "withdrawn"
        elif kind == "cancel" and peer is not None:
            sent = [rid for rid in peer.sent if rid not in (0, 1)]
            if sent:
                rid = sent[j % len(sent)]
                if rid in peer.in_flight:
                    peer.cancelled.add(rid)
                self.check(d.send({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": rid}}, client=peer.id))
        elif kind == "close" and peer is not None:
            self.close(peer)
        elif kind == "exit" and ds is not None:
            self.gone(ds.id)
            self.check(ds.exit())
        elif kind == "advance":
            self.check(d.advance([0.5, 1, 3, 10, 31, 61][j % 6]))
        elif kind == "handshake":
            waiting = [w for w in live if w.requests("initialize")]
            if waiting:
                event("a server started again")
                self.check(handshake(waiting[j % len(waiting)], RELAY_CATALOGUE))

    def close(self, peer: Peer) -> None:
        """A client goes away: each relay it still owes is answered to its server with an error, and only those."""
        owed = set(peer.relays.values())
        peer.open = False
        actions = self.d.clients[peer.id].close()
        self.check(actions)
        answered = [(a.downstream, a.message["id"]) for a in actions if isinstance(a, SendToDownstream) and "method" not in a.message]
        assert sorted(answered, key=repr) == sorted(owed, key=repr), (answered, owed)
        if owed:
            event("a client closed owing relays")
        assert all("error" in a.message for a in actions if isinstance(a, SendToDownstream) and "method" not in a.message)
        peer.relays = {}

    def sample(self, ds: FakeDownstream, method: str) -> None:
        """The server asks a client something: it reaches the one client it can be for, or the server hears why not."""
        link = self.d.gw._ctx.links[ds.id]
        clients = {client for client, _ in self.in_flight(ds).values()} | ({link.client} if link.client is not None else set())
        if not clients and len(self.open_peers) == 1:
            clients = {self.open_peers[0].id}  # no call says whose: the only client there is
        asked = self.server_requests.setdefault(ds.id, {})
        server_id = len(asked) + 1  # small ints, as the gateway's own ids on this connection are
        asked[server_id] = "open"
        params = {"messages": [], "maxTokens": 1}
        actions = ds.send({"jsonrpc": "2.0", "id": server_id, "method": method, "params": params})
        relayed = self.check(actions, relay=(ds, server_id))
        target = self.peers[next(iter(clients))] if len(clients) == 1 else None
        event(f"server request: {len(clients)} clients, {'relayed' if relayed else 'refused'}")
        if target is not None and method == "sampling/createMessage" and target.sampling:
            assert [(a.client, a.message["method"], a.message["params"]) for a in relayed] == [(target.id, method, params)]
            assert not any(isinstance(a, SendToDownstream) for a in actions)
        else:
            assert relayed == [], f"relayed to {[a.client for a in relayed]}, but the calls in flight are of {clients}"
            assert asked[server_id] == "answered", f"{ds!r} got no answer to {method}"

    def finish(self) -> None:
        """Close every client, answer everything still asked, and check the core forgot everything."""
        for peer in self.open_peers:
            self.close(peer)
        for _ in range(20):
            pending = [(ds, m) for ds in self.d.live_downstreams for m in ds.requests()]
            if not pending:
                break
            for ds, m in pending:
                if ds.alive and m["id"] not in ds.answered:
                    self.check(handshake(ds, RELAY_CATALOGUE) if m["method"] == "initialize" else ds.answer(m, result={}))
        ctx = self.d.gw._ctx
        assert ctx.clients == {}, ctx.clients
        for pool in ctx.pools.values():
            for link in pool.links():
                assert link.pending == {} and link.waiters == [], (link.name, link.pending, link.waiters)
        for link in ctx.links.values():
            assert link.internal == {}, (link.name, link.internal)
        closed = {p.id for p in self.peers.values()}
        assert all(not subscribers & closed for subscribers in ctx.subscriptions.values()), ctx.subscriptions
        assert self.d.gw._surface._waiting == []
        assert [t for t in ctx.timers._armed.values() if t.kind is TimerKind.CALL] == []
        for ds in self.d.live_downstreams:
            unanswered = [sid for sid, state in self.server_requests.get(ds.id, {}).items() if state == "open"]
            assert unanswered == [], f"{ds!r} never got an answer to its requests {unanswered}"


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(
    st.lists(st.sampled_from(["shared", "per_client"]), min_size=1, max_size=2),
    st.lists(st.booleans(), min_size=2, max_size=3),
    st.lists(STEPS, min_size=5, max_size=60),
)
def test_replies_and_relays_reach_the_right_peer_and_every_id_map_empties(
    isolations: list[str], sampling: list[bool], steps: list[tuple[str, int, int]]
) -> None:
    world = World(isolations, sampling)
    for n, (kind, i, j) in enumerate(steps):
        note(f"step {n}: {kind} {i} {j}")
        world.step(kind, i, j)
    world.finish()
