"""Aggregate mode: the servers' own tools, resources and prompts, merged, filtered and routed by the core."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from lockgate.core import (
    Audit,
    ConfigReloaded,
    AuthenticationFailed,
    AuthenticationSucceeded,
    DownstreamMessageReceived,
    Principal,
    SendToClient,
    SendToDownstream,
)
from lockgate.core._jsonrpc import error, notification, request, result

from .harness import JSON, Driver, FakeDownstream, audits, make_config, req, sent_downstream, sent_to_client, server

RULES: dict[str, Any] = {
    "agents": {
        "dev": {
            "allow": {"servers": ["*"], "resources": {"db": ["db://tables/*"]}},
            "deny": {"tools": {"db": ["drop_*"]}, "prompts": {"util": ["secret*"]}},
        },
        "reader": {"allow": {"servers": ["db"], "tools": {"db": ["get_*"]}}},
    },
    "defaults": {"deny_on_missing_agent": False},
}

DB_TOOLS: list[JSON] = [
    {"name": "get_row", "description": "one row", "inputSchema": {"type": "object"}},
    {"name": "drop_table", "description": "gone", "inputSchema": {"type": "object"}},
]
UTIL_TOOLS: list[JSON] = [{"name": "echo", "inputSchema": {"type": "object"}}]
DB_RESOURCES: list[JSON] = [{"uri": "db://tables/users", "name": "users"}, {"uri": "db://secrets/key", "name": "key"}]
DB_TEMPLATES: list[JSON] = [{"uriTemplate": "db://tables/{name}", "name": "table"}]
UTIL_PROMPTS: list[JSON] = [{"name": "greet", "arguments": [{"name": "who"}]}, {"name": "secret_plan"}]


def gateway(rules: dict[str, Any] = RULES, servers: tuple[str, ...] = ("db", "util"), **settings: Any) -> Driver:
    settings.setdefault("mode", "aggregate")
    settings.setdefault("default_agent", "dev")
    return Driver(make_config(rules, servers, **settings))


def handshake_db(ds: FakeDownstream) -> list[Any]:
    """db: tools, resources (with subscribe) and prompts (none), with instructions."""
    capabilities = {"tools": {}, "resources": {"subscribe": True}, "prompts": {}, "logging": {}}
    ds.answer("initialize", result={
        "protocolVersion": "2025-11-25", "capabilities": capabilities,
        "serverInfo": {"name": "db", "version": "1"}, "instructions": "Tables are read-only.",
    })
    ds.answer("tools/list", result={"tools": DB_TOOLS})
    ds.answer("resources/list", result={"resources": DB_RESOURCES})
    ds.answer("resources/templates/list", result={"resourceTemplates": DB_TEMPLATES})
    return ds.answer("prompts/list", result={"prompts": []})


def handshake_util(ds: FakeDownstream) -> list[Any]:
    """util: tools and prompts, completions."""
    ds.answer("initialize", result={
        "protocolVersion": "2025-11-25", "capabilities": {"tools": {}, "prompts": {}, "completions": {}},
        "serverInfo": {"name": "util", "version": "1"},
    })
    ds.answer("tools/list", result={"tools": UTIL_TOOLS})
    return ds.answer("prompts/list", result={"prompts": UTIL_PROMPTS})


def ready(d: Driver) -> list[Any]:
    """Initialize the client and both servers; the actions of the last server's handshake."""
    d.initialize()
    handshake_db(d.server("db"))
    return handshake_util(d.server("util"))


# -- initialize --------------------------------------------------------------------


def test_initialize_waits_for_every_server_and_offers_what_they_offer_together() -> None:
    d = gateway()
    actions = d.send(req(0, "initialize", {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "ide"}}))
    assert sent_to_client(actions) == []  # nothing to say before the servers have
    assert sorted(ds.server for ds in d.live_downstreams) == ["db", "util"]
    db = d.server("db")
    assert sent_to_client(handshake_db(db)) == []
    # The whole catalogue is listed, since aggregate mode serves it.
    assert [m["method"] for m in db.received] == [
        "initialize", "notifications/initialized", "tools/list", "resources/list", "resources/templates/list", "prompts/list",
    ]
    [answer] = sent_to_client(handshake_util(d.server("util")))
    assert answer == result(0, {
        "protocolVersion": "2025-11-25",
        "capabilities": {
            "tools": {"listChanged": True}, "logging": {},
            "resources": {"subscribe": True, "listChanged": True},
            "prompts": {"listChanged": True}, "completions": {},
        },
        "serverInfo": {"name": "lockgate", "version": answer["result"]["serverInfo"]["version"]},
        "instructions": "db: Tables are read-only.",
    })


def test_a_server_that_cannot_start_is_left_out_and_never_offered() -> None:
    d = gateway()
    d.send(req(0, "initialize", {"protocolVersion": "2025-11-25", "capabilities": {}}))
    assert sent_to_client(d.server("db").exit("no such command")) == []
    [answer] = sent_to_client(handshake_util(d.server("util")))
    # No logging either: only db offered it.
    assert answer["result"]["capabilities"] == {"tools": {"listChanged": True}, "prompts": {"listChanged": True}, "completions": {}}
    assert "instructions" not in answer["result"]
    # A list tries it once more, as a call would, and goes on without it.
    assert sent_to_client(d.send(req(1, "tools/list"))) == []
    [tools] = sent_to_client(d.server("db").exit("no such command"))
    assert tools == result(1, {"tools": [{**UTIL_TOOLS[0], "name": "util__echo"}]})


# -- lists -------------------------------------------------------------------------


def test_lists_merge_every_server_under_prefixed_names_and_show_only_what_the_agent_may_use() -> None:
    d = gateway()
    ready(d)
    assert sent_to_client(d.send(req(1, "tools/list"))) == [
        result(1, {"tools": [{**DB_TOOLS[0], "name": "db__get_row"}, {**UTIL_TOOLS[0], "name": "util__echo"}]}),
    ]
    # Resources keep their URIs (one server has each); the secret one is not on dev's list.
    assert sent_to_client(d.send(req(2, "resources/list"))) == [result(2, {"resources": [DB_RESOURCES[0]]})]
    # Templates of more than one server are namespaced, so a URI made from one finds its server.
    assert sent_to_client(d.send(req(3, "resources/templates/list"))) == [
        result(3, {"resourceTemplates": [{**DB_TEMPLATES[0], "uriTemplate": "lockgate://db/db://tables/{name}"}]}),
    ]
    assert sent_to_client(d.send(req(4, "prompts/list"))) == [result(4, {"prompts": [{**UTIL_PROMPTS[0], "name": "util__greet"}]})]
    # Another agent, declared in _meta: its own view.
    [narrow] = sent_to_client(d.send(req(5, "tools/list", {"_meta": {"agent_id": "reader"}})))
    assert narrow == result(5, {"tools": [{**DB_TOOLS[0], "name": "get_row"}]})  # one server: no prefix


def test_a_merged_list_is_paged_with_the_gateways_own_cursors() -> None:
    d = gateway(servers=("db",))
    d.initialize()
    many = [{"name": f"t{n:03d}", "inputSchema": {"type": "object"}} for n in range(150)]
    ds = d.server("db")
    ds.answer("initialize", result={"protocolVersion": "2025-11-25", "capabilities": {"tools": {}}})
    ds.answer("tools/list", result={"tools": many})
    [first] = sent_to_client(d.send(req(1, "tools/list")))
    assert [t["name"] for t in first["result"]["tools"]] == [f"t{n:03d}" for n in range(100)]
    cursor = first["result"]["nextCursor"]
    [second] = sent_to_client(d.send(req(2, "tools/list", {"cursor": cursor})))
    assert [t["name"] for t in second["result"]["tools"]] == [f"t{n:03d}" for n in range(100, 150)]
    assert "nextCursor" not in second["result"]
    for n, bad in enumerate(("nope", cursor[:-2], 7), start=3):
        [refused] = sent_to_client(d.send(req(n, "tools/list", {"cursor": bad})))
        assert refused["error"]["code"] == -32602 and refused["error"]["data"]["parameter"] == "cursor"


def test_one_server_and_prefix_never_pass_names_through_unchanged() -> None:
    d = gateway(servers=("util",), prefix="never")
    d.initialize()
    handshake_util(d.server("util"))
    [tools] = sent_to_client(d.send(req(1, "tools/list")))
    assert tools == result(1, {"tools": UTIL_TOOLS})
    d.send(req(2, "tools/call", {"name": "echo", "arguments": {"text": "hi"}}))
    assert d.server("util").request("tools/call")["params"] == {"name": "echo", "arguments": {"text": "hi"}}


def test_gateway_tools_can_be_listed_beside_the_servers_tools() -> None:
    d = gateway(gateway_tools=True)
    ready(d)
    [tools] = sent_to_client(d.send(req(1, "tools/list")))
    assert [t["name"] for t in tools["result"]["tools"]] == [
        "list_servers", "search_tools", "get_server_tools", "execute_tool", "db__get_row", "util__echo",
    ]
    [servers] = sent_to_client(d.send(req(2, "tools/call", {"name": "list_servers", "arguments": {}})))
    assert servers["result"]["structuredContent"]["result"][0]["name"] == "db"


# -- requests that name an item ------------------------------------------------------


def test_a_tool_call_goes_to_its_server_under_its_own_name_and_comes_back_untouched() -> None:
    d = gateway()
    ready(d)
    msg = req(7, "tools/call", {"name": "db__get_row", "arguments": {"id": 1}, "_meta": {"progressToken": "p"}})
    actions = d.send(msg)
    db = d.server("db")
    forwarded = db.request("tools/call")
    assert forwarded["params"] == {"name": "get_row", "arguments": {"id": 1}, "_meta": {"progressToken": forwarded["id"]}}
    assert [a for a in actions if isinstance(a, SendToDownstream)] == [SendToDownstream(downstream=db.id, message=forwarded)]
    assert sent_to_client(db.progress(progress=1, total=2)) == [
        notification("notifications/progress", {"progressToken": "p", "progress": 1, "total": 2}),
    ]
    answer = {"content": [{"type": "text", "text": "row"}], "isError": False}
    actions = db.answer(forwarded, result=answer)
    assert sent_to_client(actions) == [result(7, answer)]
    assert audits(actions) == [{
        "agent": "dev", "operation": "tools/call", "server": "db", "tool": "get_row", "decision": "ALLOW",
        "rule": "agents.dev.allow.servers[0]", "latency_ms": 0.0, "error_code": None,
        "args": {"keys": ["id"], "request_bytes": len(json.dumps(msg).encode())},
    }]


def test_a_denied_or_unknown_name_is_never_routed() -> None:
    d = gateway()
    ready(d)
    before = {ds.id: len(ds.received) for ds in d.live_downstreams}
    for n, name in enumerate(("db__drop_table", "drop_table", "db__nothing", "util____echo"), start=1):
        [refused] = sent_to_client(d.send(req(n, "tools/call", {"name": name, "arguments": {}})))
        assert refused["error"]["code"] == -32602 and refused["error"]["message"] == f"Unknown tool: {name}"
    [hidden] = sent_to_client(d.send(req(9, "resources/read", {"uri": "db://secrets/key"})))
    assert hidden == error(9, -32002, "Resource not found", {"uri": "db://secrets/key"})
    [secret] = sent_to_client(d.send(req(10, "prompts/get", {"name": "util__secret_plan"})))
    assert secret["error"]["message"] == "Unknown prompt: util__secret_plan"
    assert {ds.id: len(ds.received) for ds in d.live_downstreams} == before


def test_resources_prompts_and_completions_are_routed_by_uri_and_name() -> None:
    d = gateway()
    ready(d)
    db, util = d.server("db"), d.server("util")
    d.send(req(1, "resources/read", {"uri": "db://tables/users"}))
    assert db.request("resources/read")["params"] == {"uri": "db://tables/users"}
    # A URI made from a namespaced template: the namespace says which server, and is taken off.
    d.send(req(2, "resources/read", {"uri": "lockgate://db/db://tables/orders"}))
    assert db.request("resources/read")["params"] == {"uri": "db://tables/orders"}
    d.send(req(3, "prompts/get", {"name": "util__greet", "arguments": {"who": "you"}}))
    assert util.request("prompts/get")["params"] == {"name": "greet", "arguments": {"who": "you"}}
    d.send(req(4, "completion/complete", {"ref": {"type": "ref/prompt", "name": "util__greet"}, "argument": {"name": "who", "value": "y"}}))
    assert util.request("completion/complete")["params"] == {"ref": {"type": "ref/prompt", "name": "greet"}, "argument": {"name": "who", "value": "y"}}
    completion = {"completion": {"values": ["you"], "hasMore": False}}
    assert sent_to_client(util.answer("completion/complete", result=completion)) == [result(4, completion)]


def test_a_subscription_reaches_only_its_subscribers_under_the_uri_they_know() -> None:
    d = gateway()
    ready(d)
    other = d.open(1)
    other.initialize()
    db = d.server("db")
    d.send(req(1, "resources/subscribe", {"uri": "db://tables/users"}))
    db.answer("resources/subscribe")
    actions = db.notify("notifications/resources/updated", uri="db://tables/users")
    assert [(a.client, a.message) for a in actions if isinstance(a, SendToClient)] == [
        (0, notification("notifications/resources/updated", {"uri": "db://tables/users"})),
    ]
    # A resource the agent may not read tells nobody, subscribed or not.
    assert sent_to_client(db.notify("notifications/resources/updated", uri="db://secrets/key")) == []
    d.send(req(2, "resources/unsubscribe", {"uri": "db://tables/users"}))
    assert db.request("resources/unsubscribe")["params"] == {"uri": "db://tables/users"}
    assert sent_to_client(db.notify("notifications/resources/updated", uri="db://tables/users")) == []


# -- what servers say on their own ---------------------------------------------------


def test_a_list_change_is_passed_on_only_to_clients_whose_view_changed() -> None:
    d = gateway()
    ready(d)
    reader = d.open(1)
    reader.send(req(0, "initialize", {"protocolVersion": "2025-11-25", "capabilities": {}, "_meta": {"agent_id": "reader"}}))
    reader.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
    db = d.server("db")
    db.notify("notifications/tools/list_changed")
    # A new tool dev may not call: nobody's view changes.
    actions = db.answer("tools/list", result={"tools": [*DB_TOOLS, {"name": "drop_all", "inputSchema": {}}]})
    assert sent_to_client(actions) == []
    db.notify("notifications/tools/list_changed")
    actions = db.answer("tools/list", result={"tools": [*DB_TOOLS, {"name": "get_all", "inputSchema": {}}]})
    changed = notification("notifications/tools/list_changed")
    assert [(a.client, a.message) for a in actions if isinstance(a, SendToClient)] == [(0, changed), (1, changed)]
    [tools] = sent_to_client(d.send(req(1, "tools/list")))
    assert [t["name"] for t in tools["result"]["tools"]] == ["db__get_row", "db__get_all", "util__echo"]


def test_log_levels_are_passed_on_and_messages_reach_the_clients_that_asked() -> None:
    d = gateway()
    ready(d)
    quiet = d.open(1)
    quiet.initialize()
    db = d.server("db")
    assert sent_to_client(d.send(req(1, "logging/setLevel", {"level": "warning"}))) == [result(1, {})]
    # Only db offers logging.
    set_level = db.request("logging/setLevel")
    assert set_level == request(set_level["id"], "logging/setLevel", {"level": "warning"})
    assert d.server("util").requests("logging/setLevel") == []
    db.answer(set_level)
    warning = {"level": "error", "logger": "db", "data": "disk full"}
    actions = db.notify("notifications/message", **warning)
    assert [(a.client, a.message) for a in actions if isinstance(a, SendToClient)] == [
        (0, notification("notifications/message", warning)),
    ]
    assert sent_to_client(db.notify("notifications/message", level="info", data="chatter")) == []


def test_an_on_demand_session_is_unchanged() -> None:
    d = gateway(mode="on_demand")
    d.initialize()
    [tools] = sent_to_client(d.send(req(1, "tools/list")))
    assert [t["name"] for t in tools["result"]["tools"]] == ["list_servers", "search_tools", "get_server_tools", "execute_tool"]
    [none] = sent_to_client(d.send(req(2, "resources/list")))
    assert none["error"]["code"] == -32601
    assert d.live_downstreams == []  # nothing started


def test_the_rules_can_put_one_agent_in_aggregate_mode() -> None:
    rules = {**RULES, "agents": {**RULES["agents"], "reader": {**RULES["agents"]["reader"], "mode": "aggregate"}}}
    d = gateway(rules, mode="on_demand")
    d.initialize()
    [tools] = sent_to_client(d.send(req(1, "tools/list")))
    assert [t["name"] for t in tools["result"]["tools"]] == ["list_servers", "search_tools", "get_server_tools", "execute_tool"]
    ide = d.open(1)
    ide.send(req(0, "initialize", {"protocolVersion": "2025-11-25", "capabilities": {}, "_meta": {"agent_id": "reader"}}))
    handshake_db(d.server("db"))
    assert ide.received[-1]["result"]["capabilities"]["resources"] == {"subscribe": True, "listChanged": True}
    [tools] = sent_to_client(ide.send(req(1, "tools/list")))
    assert tools == result(1, {"tools": [{**DB_TOOLS[0], "name": "get_row"}]})
    assert not any(isinstance(a, Audit) for a in ide.send(req(2, "tools/list")))


# -- requests servers send clients -----------------------------------------------------

SAMPLING = {"messages": [{"role": "user", "content": {"type": "text", "text": "2+2?"}}], "maxTokens": 5}


def sampling_client(d: Driver, client: Any = 0) -> None:
    params = {"protocolVersion": "2025-11-25", "capabilities": {"sampling": {}, "roots": {}}, "clientInfo": {"name": "c"}}
    d.send(req(0, "initialize", params), client=client)


def test_a_servers_request_goes_to_the_client_whose_call_caused_it_and_the_answer_comes_back() -> None:
    d = gateway()
    sampling_client(d)
    handshake_db(d.server("db"))
    handshake_util(d.server("util"))
    db = d.server("db")
    # Lockgate tells servers what its clients may be asked.
    assert db.received[0]["params"]["capabilities"] == {
        "sampling": {}, "elicitation": {"form": {}, "url": {}}, "roots": {"listChanged": True},
    }
    d.send(req(5, "tools/call", {"name": "db__get_row", "arguments": {}}))
    actions = db.send(request(41, "sampling/createMessage", SAMPLING))
    assert [a for a in actions if isinstance(a, SendToClient)] == [
        SendToClient(client=0, request=5, message=request("lockgate-1", "sampling/createMessage", SAMPLING)),
    ]
    answer = {"role": "assistant", "content": {"type": "text", "text": "4"}, "model": "m"}
    actions = d.send(result("lockgate-1", answer))
    assert sent_downstream(actions) == [result(41, answer)]
    # Twice, or an id never sent: nobody is owed it.
    assert sent_downstream(d.send(result("lockgate-1", answer))) == []
    assert sent_downstream(d.send(result("lockgate-9", answer))) == []


def test_a_server_asking_what_the_client_cannot_do_or_nobody_asked_for_gets_an_error() -> None:
    d = gateway()
    ready(d)  # this client declared no capabilities
    db = d.server("db")
    # With no call in flight, the only client there is: it cannot be asked.
    assert sent_downstream(db.send(request(1, "roots/list"))) == [
        error(1, -32601, "Method not found: the client does not support roots/list"),
    ]
    d.open(1).initialize()
    assert sent_downstream(db.send(request(1, "roots/list"))) == [
        error(1, -32603, "The gateway cannot tell which client roots/list is for: no client call is in flight on this server"),
    ]
    d.send(req(5, "tools/call", {"name": "db__get_row", "arguments": {}}))
    assert sent_downstream(db.send(request(2, "elicitation/create", {"message": "?"}))) == [
        error(2, -32601, "Method not found: the client does not support elicitation/create"),
    ]


def two_clients_calling_db() -> Driver:
    """Both servers ready; clients 0 and 1, both able to sample, each with a db__get_row call in flight (ids 5, 6)."""
    d = gateway()
    sampling_client(d)
    handshake_db(d.server("db"))
    handshake_util(d.server("util"))
    d.open(1)
    sampling_client(d, 1)
    d.send(req(5, "tools/call", {"name": "db__get_row", "arguments": {}}))
    d.send(req(6, "tools/call", {"name": "db__get_row", "arguments": {}}), client=1)
    return d


def test_on_a_shared_server_with_calls_of_two_clients_the_request_is_refused_naming_the_fix() -> None:
    d = two_clients_calling_db()
    [refused] = sent_downstream(d.server("db").send(request(3, "sampling/createMessage", SAMPLING)))
    assert refused["error"]["message"].endswith("give it isolation: per_client")


def test_a_relay_is_answered_for_a_client_that_goes_away_and_withdrawn_when_the_server_cancels() -> None:
    d = gateway()
    sampling_client(d)
    handshake_db(d.server("db"))
    handshake_util(d.server("util"))
    db = d.server("db")
    d.send(req(5, "tools/call", {"name": "db__get_row", "arguments": {}}))
    db.send(request(7, "roots/list"))
    db.send(request(8, "sampling/createMessage", SAMPLING))
    assert sent_to_client(db.notify("notifications/cancelled", requestId=7, reason="enough")) == [
        notification("notifications/cancelled", {"requestId": "lockgate-1", "reason": "enough"}),
    ]
    assert sent_downstream(d.send(result("lockgate-1", {"roots": []}))) == []  # withdrawn
    actions = d.clients[0].close()
    assert error(8, -32603, "The client went away before answering") in sent_downstream(actions)


# -- a server that restarts ---------------------------------------------------------


def test_a_restarted_server_gets_back_its_subscriptions_and_log_level_and_clients_hear_what_changed() -> None:
    d = gateway()
    ready(d)
    d.send(req(1, "resources/subscribe", {"uri": "db://tables/users"}))
    old = d.server("db")
    old.answer("resources/subscribe")
    d.send(req(2, "logging/setLevel", {"level": "error"}))
    old.answer("logging/setLevel")
    old.exit("crashed")
    while d.server("db") is old:
        d.advance(0.5)  # its backoff, then it starts again
    new = d.server("db")
    d.send(req(3, "tools/call", {"name": "db__get_row", "arguments": {}}))  # waits for it
    new.answer("initialize", result={
        "protocolVersion": "2025-11-25", "capabilities": {"tools": {}, "resources": {"subscribe": True}, "logging": {}},
    })
    new.answer("tools/list", result={"tools": [DB_TOOLS[0]]})  # drop_table, which dev may not call, is gone
    new.answer("resources/list", result={"resources": DB_RESOURCES})
    actions = new.answer("resources/templates/list", result={"resourceTemplates": []})
    renewed = [m for m in sent_downstream(actions) if m["method"] != "tools/call"]
    assert renewed == [
        request(renewed[0]["id"], "resources/subscribe", {"uri": "db://tables/users"}),
        request(renewed[1]["id"], "logging/setLevel", {"level": "error"}),
    ]
    # Its tools look the same to dev (drop_table was hidden), its resources too; its template is gone, and
    # its prompts (there were none) are not offered any more.
    assert sent_to_client(actions) == [notification("notifications/resources/list_changed")]
    assert new.request("tools/call")["params"] == {"name": "get_row", "arguments": {}}


def test_a_clients_roots_change_reaches_the_servers_that_are_its_own() -> None:
    roots_changed = {"jsonrpc": "2.0", "method": "notifications/roots/list_changed"}
    shared = gateway(servers=("db",))
    sampling_client(shared)
    handshake_db(shared.server("db"))
    assert sent_downstream(shared.send(roots_changed)) == []  # a shared server is everyone's
    config = make_config(RULES, (), mode="aggregate", default_agent="dev")
    own = Driver(dataclasses.replace(config, servers={"db": server("db", isolation="per_client")}))
    sampling_client(own)
    handshake_db(own.server("db"))
    assert sent_downstream(own.send(roots_changed)) == [notification("notifications/roots/list_changed")]


def test_a_credential_refused_or_expired_after_initialize_lists_and_calls_nothing() -> None:
    d = Driver(make_config(RULES, ("db", "util"), mode="aggregate"), client="boot")
    key = Principal(id="key:1", agents=("dev",), default_agent="dev", expires=100.0)
    d.open(0, "stdio", principal=key)
    d.client = 0
    ready(d)
    assert len(sent_to_client(d.send(req(1, "tools/list")))[0]["result"]["tools"]) == 2
    d.handle(AuthenticationFailed(now=d.now, reason="API key revoked", credential="key:1", client=0))
    for n, message in enumerate((req(2, "tools/list"), req(3, "tools/call", {"name": "db__get_row", "arguments": {}})), start=2):
        [refused] = sent_to_client(d.send(message))
        assert refused["error"]["message"] == "credential key:1 refused: API key revoked", n
    d.handle(AuthenticationSucceeded(now=d.now, principal=key, client=0))
    d.now = 100.0
    [expired] = sent_to_client(d.send(req(4, "resources/list")))
    assert expired["error"]["message"] == "credential key:1 expired"


def test_a_url_mode_elicitation_needs_the_url_capability_and_its_completion_reaches_the_same_client() -> None:
    d = gateway(servers=("db",))
    params = {"protocolVersion": "2025-11-25", "capabilities": {"elicitation": {"form": {}, "url": {}}}}
    d.send(req(0, "initialize", params))
    handshake_db(d.server("db"))
    form_only = d.open(1)
    form_only.send(req(0, "initialize", {"protocolVersion": "2025-11-25", "capabilities": {"elicitation": {}}}))
    db = d.server("db")
    url = {"mode": "url", "message": "Sign in", "url": "https://idp.example/auth", "elicitationId": "e-1"}
    form_only.send(req(5, "tools/call", {"name": "get_row", "arguments": {}}))
    [refused] = sent_downstream(db.send(request(1, "elicitation/create", url)))
    assert refused == error(1, -32601, "Method not found: the client does not support elicitation/create in URL mode")
    db.answer("tools/call", result={"content": []})
    d.send(req(5, "tools/call", {"name": "get_row", "arguments": {}}))
    assert sent_to_client(db.send(request(2, "elicitation/create", url))) == [request("lockgate-1", "elicitation/create", url)]
    done = db.notify("notifications/elicitation/complete", elicitationId="e-1")
    assert [(a.client, a.message) for a in done if isinstance(a, SendToClient)] == [
        (0, notification("notifications/elicitation/complete", {"elicitationId": "e-1"})),
    ]
    assert sent_to_client(db.notify("notifications/elicitation/complete", elicitationId="e-1")) == []  # once


def test_a_request_on_a_calls_own_response_stream_goes_to_that_calls_client_even_on_a_shared_server() -> None:
    d = two_clients_calling_db()
    db = d.server("db")
    second = db.requests("tools/call")[1]
    actions = d.handle(DownstreamMessageReceived(
        now=d.now, downstream=db.id, data=json.dumps(request(9, "sampling/createMessage", SAMPLING)).encode(),
        related=second["id"],
    ))
    assert [a for a in actions if isinstance(a, SendToClient)] == [
        SendToClient(client=1, request=6, message=request("lockgate-1", "sampling/createMessage", SAMPLING)),
    ]


def test_a_reload_tells_each_client_which_of_its_lists_it_changed() -> None:
    d = gateway()
    ready(d)
    narrower = {**RULES, "agents": {**RULES["agents"], "dev": {"allow": {"servers": ["db"]}, "deny": {"tools": {"db": ["drop_*"]}}}}}
    actions = d.handle(ConfigReloaded(now=d.now, config=make_config(narrower, ("db", "util"), mode="aggregate", default_agent="dev")))
    # util is gone from dev's view: its tool and its prompts; db's resources are all visible now.
    assert sent_to_client(actions) == [
        notification("notifications/tools/list_changed"),
        notification("notifications/resources/list_changed"),
        notification("notifications/prompts/list_changed"),
    ]
    [tools] = sent_to_client(d.send(req(1, "tools/list")))
    assert [t["name"] for t in tools["result"]["tools"]] == ["get_row"]  # one server left to dev: no prefix


def test_a_server_that_starts_late_tells_the_clients_that_see_it() -> None:
    d = gateway()
    d.initialize()
    handshake_db(d.server("db"))
    d.server("util").exit("not yet")  # initialize is answered without it
    assert d.clients[0].received[-1]["result"]["capabilities"]["prompts"] == {"listChanged": True}
    while d.server("util").exited:
        d.advance(0.5)  # its backoff, then it starts again
    assert sent_to_client(handshake_util(d.server("util"))) == [
        notification("notifications/tools/list_changed"),
        notification("notifications/prompts/list_changed"),
    ]


def test_a_per_client_server_that_crashed_keeps_its_names_and_the_call_waits_for_a_new_connection() -> None:
    config = make_config(RULES, (), mode="aggregate", default_agent="dev")
    d = Driver(dataclasses.replace(config, servers={"db": server("db", isolation="per_client")}))
    d.initialize()
    first = d.server("db")
    handshake_db(first)
    first.exit("crashed")  # the client's own link is dropped, and its catalogue with it
    assert sent_to_client(d.send(req(1, "tools/call", {"name": "get_row", "arguments": {}}))) == []
    second = d.server("db")
    assert second is not first
    handshake_db(second)
    assert second.request("tools/call")["params"] == {"name": "get_row", "arguments": {}}


def test_a_server_asking_for_roots_as_it_starts_asks_the_only_client_there_is() -> None:
    d = gateway(servers=("db",))
    sampling_client(d)
    d.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
    db = d.server("db")
    handshake_db(db)
    assert [(a.client, a.request, a.message) for a in db.send(request(1, "roots/list")) if isinstance(a, SendToClient)] == [
        (0, None, request("lockgate-1", "roots/list", {})),
    ]
    assert sent_downstream(d.send(result("lockgate-1", {"roots": []}))) == [result(1, {"roots": []})]


def test_a_log_message_about_a_call_goes_to_that_calls_client_on_its_stream() -> None:
    d = two_clients_calling_db()
    db = d.server("db")
    first = db.requests("tools/call")[0]
    note = {"level": "info", "data": "working on it"}
    actions = d.handle(DownstreamMessageReceived(
        now=d.now, downstream=db.id, related=first["id"],
        data=json.dumps(notification("notifications/message", note)).encode(),
    ))
    assert [a for a in actions if isinstance(a, SendToClient)] == [
        SendToClient(client=0, request=5, message=notification("notifications/message", note)),
    ]
    # A client that asked for errors only does not get it.
    d.send(req(7, "logging/setLevel", {"level": "error"}))
    actions = d.handle(DownstreamMessageReceived(
        now=d.now, downstream=db.id, related=first["id"],
        data=json.dumps(notification("notifications/message", note)).encode(),
    ))
    assert [a for a in actions if isinstance(a, SendToClient)] == []


def test_a_subscription_to_a_resource_the_agent_may_not_read_is_refused_and_never_forwarded() -> None:
    d = gateway()
    ready(d)
    before = len(d.server("db").received)
    # Not on the agent's list, so unknown as a plain URI; named in the server's namespace, denied by the rules.
    [unknown] = sent_to_client(d.send(req(1, "resources/subscribe", {"uri": "db://secrets/key"})))
    assert unknown == error(1, -32002, "Resource not found", {"uri": "db://secrets/key"})
    [denied] = sent_to_client(d.send(req(2, "resources/subscribe", {"uri": "lockgate://db/db://secrets/key"})))
    assert denied["error"]["code"] == -32000
    assert denied["error"]["data"] == {"code": "DENIED_BY_POLICY", "rule": "agents.dev: no rule allows it"}
    assert len(d.server("db").received) == before
    assert all(not subscribers for subscribers in d.gw._ctx.subscriptions.values())
