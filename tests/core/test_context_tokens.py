"""Token counts in the core: the shell's counter in budgets and figures, counted once, and ``mode: auto``."""

from __future__ import annotations

from typing import Any

from lockgate.core import CancelTimer, ConfigReloaded, Log, SendToClient, SendToDownstream
from lockgate.core._clients import INSTRUCTIONS, server_info
from lockgate.core._jsonrpc import encode, result
from lockgate.core._tools import ToolTokens, gateway_tools

from .harness import DROP_TOOL, ECHO_TOOL, GET_TOOL, JSON, Driver, call, make_config, req, sent_to_client


def quotes(data: bytes) -> int:
    """A counter unlike bytes / 4, easy to check by hand: one token per double quote."""
    return data.count(b'"')


def structured(message: JSON) -> Any:
    return message["result"]["structuredContent"]


# -- the counter the shell hands in --------------------------------------------------


def test_get_server_tools_budgets_and_reports_with_the_counter_it_was_given() -> None:
    echo, get = quotes(encode(ECHO_TOOL)), quotes(encode(GET_TOOL))
    assert (echo, get) == (26, 10)  # by bytes / 4 they would be 35 and 13
    d = Driver(count_tokens=quotes)
    d.initialize()
    d.send(call(1, "get_server_tools", agent_id="dev", server="db"))
    [answer] = sent_to_client(d.handshake("db", [ECHO_TOOL, DROP_TOOL, GET_TOOL]))
    assert structured(answer)["tokens_used"] == echo + get
    # A budget of 10 takes get_user alone (10) under this counter; by bytes / 4 (13) it would take nothing.
    [answer] = sent_to_client(d.send(call(2, "get_server_tools", agent_id="dev", server="db", max_schema_tokens=10)))
    value = structured(answer)
    assert [t["name"] for t in value["tools"]] == ["get_user"] and value["tokens_used"] == get


def test_each_definition_is_counted_once_while_its_list_stands() -> None:
    counted: list[bytes] = []

    def count(data: bytes) -> int:
        counted.append(data)
        return len(data)

    d = Driver(count_tokens=count)
    d.initialize()
    d.send(call(1, "get_server_tools", agent_id="dev", server="db"))
    d.handshake("db", [ECHO_TOOL, DROP_TOOL, GET_TOOL])
    for i in range(2, 6):
        d.send(call(i, "get_server_tools", agent_id="dev", server="db", max_schema_tokens=1000))
    assert sorted(counted) == sorted([encode(ECHO_TOOL), encode(GET_TOOL)])  # drop_table is denied: never counted
    # A new list brings new definitions: counted again, once.
    d.server("db").notify("notifications/tools/list_changed")
    d.server("db").answer("tools/list", result={"tools": [dict(ECHO_TOOL)]})
    counted.clear()
    d.send(call(7, "get_server_tools", agent_id="dev", server="db"))
    d.send(call(8, "get_server_tools", agent_id="dev", server="db"))
    assert counted == [encode(ECHO_TOOL)]


def test_tool_tokens_keys_on_the_definition_itself_and_stays_bounded() -> None:
    counted: list[bytes] = []

    def count(data: bytes) -> int:
        counted.append(data)
        return 1

    tokens = ToolTokens(count, limit=2)
    copy = dict(ECHO_TOOL)
    assert tokens(ECHO_TOOL) + tokens(ECHO_TOOL) + tokens(copy) == 3
    assert counted == [encode(ECHO_TOOL), encode(ECHO_TOOL)]  # the equal copy is another definition
    tokens(GET_TOOL)  # the third entry empties the cache first
    tokens(ECHO_TOOL)
    assert len(counted) == 4
    assert tokens.total([GET_TOOL, ECHO_TOOL]) == 2 and len(counted) == 4


# -- mode: auto --------------------------------------------------------------------

#: A tool whose definition alone costs 250 tokens by bytes / 4.
BIG_TOOL: JSON = {"name": "report", "description": "x" * 934, "inputSchema": {"type": "object"}}
AUTO_RULES: JSON = {
    "agents": {
        "small": {"allow": {"servers": ["util"]}, "mode": "auto"},
        "big": {"allow": {"servers": ["db"]}, "mode": "auto"},
        "fixed": {"allow": {"servers": ["util"]}},
    },
}
INIT = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}


def auto_gateway(**settings: Any) -> Driver:
    # A threshold of 100 tokens: util's echo (35) is under it, db's report (250) over it.
    settings.setdefault("context_window", 1000)
    return Driver(make_config(AUTO_RULES, **settings))


def initialize_as(d: Driver, agent: str) -> list[Any]:
    return d.send(req(0, "initialize", {**INIT, "_meta": {"agent_id": agent}}))


def on_demand_answer() -> JSON:
    return result(0, {
        "protocolVersion": "2025-11-25",
        "capabilities": {"tools": {"listChanged": False}, "logging": {}},
        "serverInfo": server_info(),
        "instructions": INSTRUCTIONS,
    })


def test_auto_aggregates_an_agent_whose_tools_cost_less_than_the_threshold() -> None:
    assert len(encode(BIG_TOOL)) == 1000 and -(-len(encode(ECHO_TOOL)) // 4) == 35
    d = auto_gateway()
    assert sent_to_client(initialize_as(d, "small")) == []  # it waits for the servers the agent may use
    assert [ds.server for ds in d.live_downstreams] == ["util"]
    util = d.server("util")
    util.answer("initialize", result={"protocolVersion": "2025-11-25", "capabilities": {"tools": {}}, "serverInfo": {"name": "util"}})
    actions = util.answer("tools/list", result={"tools": [ECHO_TOOL]})
    assert actions == [
        CancelTimer(timer=1),
        Log(level="info", message="server ready", fields={"server": "util", "tools": 1, "protocol": "2025-11-25"}),
        Log(level="info", message="mode auto chose aggregate", fields={"client": "0", "agent": "small", "tokens": 35, "threshold": 100}),
        SendToClient(client=0, request=0, message=result(0, {
            "protocolVersion": "2025-11-25",
            "capabilities": {"tools": {"listChanged": True}},
            "serverInfo": server_info(),
        })),
    ]
    d.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
    [tools] = sent_to_client(d.send(req(1, "tools/list")))
    assert tools == result(1, {"tools": [ECHO_TOOL]})  # the only server it sees: no prefix needed
    assert d.gw.status()["sessions"] == {"aggregate": 1}


def test_auto_serves_the_gateway_tools_to_an_agent_whose_tools_cost_the_threshold_or_more() -> None:
    d = auto_gateway()
    assert sent_to_client(initialize_as(d, "big")) == []
    db = d.server("db")
    db.answer("initialize", result={"protocolVersion": "2025-11-25", "capabilities": {"tools": {}}, "serverInfo": {"name": "db"}})
    actions = db.answer("tools/list", result={"tools": [BIG_TOOL]})
    assert actions == [
        CancelTimer(timer=1),
        Log(level="info", message="server ready", fields={"server": "db", "tools": 1, "protocol": "2025-11-25"}),
        Log(level="info", message="mode auto chose on_demand", fields={"client": "0", "agent": "big", "tokens": 250, "threshold": 100}),
        SendToClient(client=0, request=0, message=on_demand_answer()),
    ]
    d.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
    [tools] = sent_to_client(d.send(req(1, "tools/list")))
    assert tools == result(1, {"tools": gateway_tools(debug=False)})
    [none] = sent_to_client(d.send(req(2, "prompts/list")))
    assert none["error"]["code"] == -32601  # on demand, not aggregate
    # At exactly the threshold it is on demand too: aggregate is for lists under it.
    d = auto_gateway(context_window=2500)
    initialize_as(d, "big")
    assert sent_to_client(d.handshake("db", [BIG_TOOL])) == [on_demand_answer()]


def test_auto_is_decided_per_session_and_by_the_setting_too() -> None:
    d = Driver(make_config({**AUTO_RULES, "defaults": {"deny_on_missing_agent": False}}, mode="auto", default_agent="fixed", context_window=1000))
    # "fixed" sets no mode in the rules: GATEWAY_MODE=auto decides, on its own tools.
    assert sent_to_client(d.initialize()) == []
    [answer] = sent_to_client(d.handshake("util", [ECHO_TOOL]))
    assert answer["result"]["capabilities"] == {"tools": {"listChanged": True}}
    big = d.open(1)
    big.send(req(0, "initialize", {**INIT, "_meta": {"agent_id": "big"}}))
    [answer] = sent_to_client(d.handshake("db", [BIG_TOOL]))
    assert answer == on_demand_answer()
    assert d.gw.status()["sessions"] == {"aggregate": 1, "on_demand": 1}


def test_auto_without_an_agent_serves_the_gateway_tools_at_once() -> None:
    d = Driver(make_config(AUTO_RULES, mode="auto"))  # no default agent: nothing to measure
    actions = d.send(req(0, "initialize", INIT))
    assert actions == [
        Log(level="info", message="mode auto chose on_demand", fields={"client": "0", "agent": None}),
        SendToClient(client=0, request=0, message=on_demand_answer()),
    ]
    assert d.live_downstreams == []


def test_an_auto_agent_makes_servers_list_their_whole_catalogue() -> None:
    d = auto_gateway()
    initialize_as(d, "small")
    util = d.server("util")
    actions = util.answer("initialize", result={
        "protocolVersion": "2025-11-25", "capabilities": {"tools": {}, "prompts": {}}, "serverInfo": {"name": "util"},
    })
    assert [a.message.get("method") for a in actions if isinstance(a, SendToDownstream)] == [
        "notifications/initialized", "tools/list", "prompts/list",
    ]


# -- the figures ---------------------------------------------------------------------


def test_context_tokens_per_agent_in_metrics_and_status() -> None:
    d = Driver(make_config(AUTO_RULES, context_window=1000), count_tokens=quotes)
    own = sum(quotes(encode(t)) for t in gateway_tools(debug=False))
    # Before any server listed its tools, an agent's list costs nothing that is known.
    assert d.gw.metrics_json(0.0)["context_tokens"]["small"] == {"aggregate": 0, "on_demand": own}
    initialize_as(d, "small")
    d.handshake("util", [ECHO_TOOL])
    big = d.open(1)
    big.send(req(0, "initialize", {**INIT, "_meta": {"agent_id": "big"}}))
    d.handshake("db", [BIG_TOOL, GET_TOOL])
    echo, report, get = (quotes(encode(t)) for t in (ECHO_TOOL, BIG_TOOL, GET_TOOL))
    text = d.gw.metrics_prometheus(0.0)
    lines = [line for line in text.splitlines() if "lockgate_context_tokens" in line]
    assert lines == [
        "# HELP lockgate_context_tokens Tokens an agent's tool list costs in context: aggregate, every tool it may "
        "call on the servers whose lists are known; on_demand, the gateway's own tools.",
        "# TYPE lockgate_context_tokens gauge",
        f'lockgate_context_tokens{{agent="big",mode="aggregate"}} {report + get}',
        f'lockgate_context_tokens{{agent="big",mode="on_demand"}} {own}',
        f'lockgate_context_tokens{{agent="fixed",mode="aggregate"}} {echo}',
        f'lockgate_context_tokens{{agent="fixed",mode="on_demand"}} {own}',
        f'lockgate_context_tokens{{agent="small",mode="aggregate"}} {echo}',
        f'lockgate_context_tokens{{agent="small",mode="on_demand"}} {own}',
    ]
    assert d.gw.metrics_json(0.0)["context_tokens"] == {
        "big": {"aggregate": report + get, "on_demand": own},
        "fixed": {"aggregate": echo, "on_demand": own},
        "small": {"aggregate": echo, "on_demand": own},
    }
    assert d.gw.status()["context"] == {
        "auto_threshold_tokens": 100,
        "agents": {
            "big": {"mode": "auto", "aggregate": report + get, "on_demand": own, "servers": {"db": report + get}},
            "fixed": {"mode": "on_demand", "aggregate": echo, "on_demand": own, "servers": {"util": echo}},
            "small": {"mode": "auto", "aggregate": echo, "on_demand": own, "servers": {"util": echo}},
        },
    }


def test_the_figures_follow_a_changed_list_and_a_reload() -> None:
    d = Driver(make_config(AUTO_RULES, context_window=1000))
    initialize_as(d, "small")
    d.handshake("util", [ECHO_TOOL])
    echo, get = (-(-len(encode(t)) // 4) for t in (ECHO_TOOL, GET_TOOL))
    assert d.gw.metrics_json(0.0)["context_tokens"]["small"]["aggregate"] == echo
    util = d.server("util")
    util.notify("notifications/tools/list_changed")
    util.answer("tools/list", result={"tools": [ECHO_TOOL, GET_TOOL]})
    assert d.gw.metrics_json(0.0)["context_tokens"]["small"]["aggregate"] == echo + get
    rules = {"agents": {**AUTO_RULES["agents"], "small": {"allow": {"servers": ["util"], "tools": {"util": ["get_*"]}}}}}
    d.handle(ConfigReloaded(now=d.now, config=make_config(rules, context_window=1000)))
    assert d.gw.status()["context"]["agents"]["small"] == {
        "mode": "on_demand", "aggregate": get, "on_demand": d.gw.metrics_json(0.0)["context_tokens"]["small"]["on_demand"],
        "servers": {"util": get},
    }
