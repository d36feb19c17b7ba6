"""Operator reports: explain an agent's access, and what tool lists cost in context."""

from __future__ import annotations

import fnmatch

from hypothesis import given
from hypothesis import strategies as st

from lockgate.core._jsonrpc import encode
from lockgate.core._policy import Decision, Policy
from lockgate.core._report import auto_mode, auto_threshold, context_report, explain_agent, tool_cost
from lockgate.core._tools import ToolTokens, estimate_tokens, gateway_tools

from .harness import DROP_TOOL, ECHO_TOOL, GET_TOOL, make_config

RULES = {
    "agents": {
        "dev": {"allow": {"servers": ["*"]}, "deny": {"tools": {"db": ["drop_*", "get_user"]}}},
        "reader": {"allow": {"servers": ["db"], "tools": {"db": ["get_*", "echo"]}}, "deny": {"tools": {"db": ["echo"]}}},
    }
}
TOOLS = {"db": [ECHO_TOOL, DROP_TOOL, GET_TOOL], "util": None}


def test_tool_cost_measures_compact_json() -> None:
    assert tool_cost([ECHO_TOOL, GET_TOOL]) == {
        "tools": 2,
        "bytes": len(encode(ECHO_TOOL)) + len(encode(GET_TOOL)),
        "tokens": estimate_tokens(ECHO_TOOL) + estimate_tokens(GET_TOOL),
    }
    assert tool_cost([]) == {"tools": 0, "bytes": 0, "tokens": 0}


def test_explain_offline_lists_tool_rules_in_precedence_order() -> None:
    report = explain_agent(make_config(RULES), "reader")
    assert report == {
        "agent": "reader",
        "offline": True,
        "servers": [
            {
                "server": "db",
                "configured": True,
                "allowed": True,
                "rule": "agents.reader.allow.servers[0]",
                # The explicit allow of echo never decides: the explicit deny comes first.
                "tool_rules": [
                    {"entry": "echo", "allowed": False, "rule": "agents.reader.deny.tools.db[0]"},
                    {"entry": "get_*", "allowed": True, "rule": "agents.reader.allow.tools.db[0]"},
                ],
                "other_tools": {"allowed": False, "rule": "agents.reader: no rule allows it"},
            },
            {"server": "util", "configured": True, "allowed": False, "rule": "agents.reader: no rule allows it"},
        ],
    }
    [db] = explain_agent(make_config(RULES), "dev", server="db")["servers"]
    assert db["tool_rules"] == [
        {"entry": "get_user", "allowed": False, "rule": "agents.dev.deny.tools.db[1]"},
        {"entry": "drop_*", "allowed": False, "rule": "agents.dev.deny.tools.db[0]"},
    ]
    assert db["other_tools"] == {"allowed": True, "rule": "agents.dev.allow.servers[0]"}


def test_explain_offline_adds_resource_and_prompt_rules_for_servers_that_have_them() -> None:
    rules = {
        "agents": {
            "docs": {
                "allow": {"servers": ["*"], "resources": {"db": ["file:///public/*", "file:///a"]}, "prompts": {"util": []}},
                "deny": {"resources": {"db": ["file:///a"]}, "prompts": {"db": ["admin_*"]}},
            }
        }
    }
    db, util = explain_agent(make_config(rules), "docs")["servers"]
    server = {"allowed": True, "rule": "agents.docs.allow.servers[0]"}
    assert db == {
        "server": "db",
        "configured": True,
        **server,
        "tool_rules": [],
        "other_tools": server,
        "resource_rules": [
            {"entry": "file:///a", "allowed": False, "rule": "agents.docs.deny.resources.db[0]"},
            {"entry": "file:///public/*", "allowed": True, "rule": "agents.docs.allow.resources.db[0]"},
        ],
        "other_resources": {"allowed": False, "rule": "agents.docs: no rule allows it"},
        "prompt_rules": [{"entry": "admin_*", "allowed": False, "rule": "agents.docs.deny.prompts.db[0]"}],
        "other_prompts": server,
    }
    # An empty list is a list: no prompt of util is allowed.
    assert util == {
        "server": "util",
        "configured": True,
        **server,
        "tool_rules": [],
        "other_tools": server,
        "prompt_rules": [],
        "other_prompts": {"allowed": False, "rule": "agents.docs: no rule allows it"},
    }


def test_explain_online_decides_every_listed_tool() -> None:
    report = explain_agent(make_config(RULES), "dev", tools=TOOLS)
    assert report["offline"] is False
    db, util = report["servers"]
    assert db["tools"] == [
        {"name": "echo", "allowed": True, "rule": "agents.dev.allow.servers[0]"},
        {"name": "drop_table", "allowed": False, "rule": "agents.dev.deny.tools.db[0]"},
        {"name": "get_user", "allowed": False, "rule": "agents.dev.deny.tools.db[1]"},
    ]
    assert util["tools"] is None  # it did not list its tools
    [ghost] = explain_agent(make_config(RULES), "dev", tools=TOOLS, server="ghost")["servers"]
    assert (ghost["configured"], ghost["allowed"], ghost["tools"]) == (False, True, None)


def test_context_report_per_agent() -> None:
    report = context_report(make_config(RULES), TOOLS)
    own = tool_cost(gateway_tools(debug=False))
    assert report["gateway"] == own
    assert report["all_servers"] == tool_cost([ECHO_TOOL, DROP_TOOL, GET_TOOL])
    assert report["auto_threshold_tokens"] == 20_000  # 10% of 200,000
    assert report["agents"]["dev"] == {
        "servers": ["db", "util"],
        "mode": "on_demand",
        "direct": tool_cost([ECHO_TOOL]),
        "by_server": {"db": tool_cost([ECHO_TOOL])},  # util listed nothing: absent, not zero
        "gateway": own,
        "saved_tokens": tool_cost([ECHO_TOOL])["tokens"] - own["tokens"],
    }
    assert report["agents"]["reader"]["direct"] == tool_cost([GET_TOOL])
    assert context_report(make_config(RULES, debug=True), TOOLS)["gateway"]["tools"] == 5


def test_context_report_counts_with_the_counter_given() -> None:
    """Every token figure comes from the counter (the shell's tokenizer); bytes stay bytes."""

    def count(data: bytes) -> int:
        return data.count(b'"')  # any counter: one token per quote, easy to check by hand

    report = context_report(make_config(RULES), TOOLS, count)
    quotes = encode(ECHO_TOOL).count(b'"')
    dev = report["agents"]["dev"]
    assert dev["direct"] == {"tools": 1, "bytes": len(encode(ECHO_TOOL)), "tokens": quotes}
    assert dev["by_server"]["db"]["tokens"] == quotes
    assert report["gateway"]["tokens"] == sum(encode(t).count(b'"') for t in gateway_tools(debug=False))
    assert tool_cost([ECHO_TOOL], ToolTokens(count)) == tool_cost([ECHO_TOOL], count)


def test_context_report_says_what_auto_would_choose() -> None:
    rules = {"agents": {**RULES["agents"], "dev": {**RULES["agents"]["dev"], "mode": "auto"}}}
    echo = tool_cost([ECHO_TOOL])["tokens"]
    # Aggregate strictly under the threshold, on demand at it and over it.
    for window, chosen in ((echo * 10 + 10, "aggregate"), (echo * 10, "on_demand"), (echo * 10 - 10, "on_demand")):
        config = make_config(rules, context_window=window)
        dev = context_report(config, TOOLS)["agents"]["dev"]
        assert (dev["mode"], dev["auto_mode"]) == ("auto", chosen), window
        assert auto_mode(echo, config.settings) == chosen
    assert "auto_mode" not in context_report(make_config(rules), TOOLS)["agents"]["reader"]


def test_the_threshold_is_a_share_of_the_context_window() -> None:
    assert auto_threshold(make_config(RULES).settings) == 20_000
    assert auto_threshold(make_config(RULES, context_window=50_000, auto_threshold=0.25).settings) == 12_500
    assert auto_threshold(make_config(RULES, context_window=7, auto_threshold=0.5).settings) == 3  # rounded down


NAMES = st.sampled_from(["echo", "get_user", "get_x", "drop_table", "drop", "other", "e?ho", "x"])
ENTRIES = st.lists(st.sampled_from(["echo", "get_*", "drop_*", "e?ho", "*", "x", "[gd]*"]), max_size=4)


def first_match(rules: list[tuple[str, Decision]], otherwise: Decision, tool: str) -> Decision:
    for entry, decision in rules:
        if fnmatch.fnmatchcase(tool, entry) if any(c in entry for c in "*?[") else tool == entry:
            return decision
    return otherwise


@given(allow=st.none() | ENTRIES, deny=ENTRIES, tool=NAMES)
def test_tool_rules_agree_with_decide(allow: list[str] | None, deny: list[str], tool: str) -> None:
    body: dict = {"allow": {"servers": ["db"]}, "deny": {"tools": {"db": deny}}}
    if allow is not None:
        body["allow"]["tools"] = {"db": allow}
    policy = Policy.compile({"agents": {"a": body}})
    rules = policy.tool_rules("a", "db")
    entries = [(e.entry, e.decision) for e in rules.entries]
    assert first_match(entries, rules.otherwise, tool) == policy.decide("a", "db", tool)
    denied = policy.tool_rules("a", "elsewhere")
    assert denied.entries == () and denied.otherwise == policy.decide_server("a", "elsewhere")
