"""Tests for lockgate.core._policy: precedence, globs, the three kinds of item, modes, agent resolution, rules checks."""

from __future__ import annotations

from collections.abc import Sequence
from fnmatch import fnmatchcase
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lockgate.core._errors import ErrorCode
from lockgate.core._policy import (
    KINDS,
    Decision,
    Kind,
    Policy,
    Refusal,
    is_glob,
    json_path,
    valid_agent_id,
)
from lockgate.core._rules import RulesProblem, check_rules


def policy_for(body: dict[str, Any], agent: str = "a") -> Policy:
    """A policy with one agent whose rules are ``body``."""
    return Policy.compile({"agents": {agent: body}})


NO_RULE = Decision(False, "agents.a: no rule allows it")


def decide(policy: Policy, kind: Kind, agent: str, server: str, name: str) -> Decision:
    """The decision on an item of ``kind``, through the method for that kind."""
    method = {"tools": policy.decide, "resources": policy.decide_resource, "prompts": policy.decide_prompt}[kind]
    return method(agent, server, name)


# json_path, valid_agent_id, is_glob


@pytest.mark.parametrize(
    ("segments", "expected"),
    [
        (("agents", "backend", "deny", "tools", "pg", 0), "agents.backend.deny.tools.pg[0]"),
        (("agents", "team.role", "allow", "servers", 1), 'agents["team.role"].allow.servers[1]'),
        (("mcpServers", "git-hub", "args", 2), "mcpServers.git-hub.args[2]"),
        (("agents", "_x"), "agents._x"),
        (("agents", "9lives"), 'agents["9lives"]'),
        (("agents", 'say "hi"'), 'agents["say \\"hi\\""]'),
        (("$schema",), '["$schema"]'),
        (("a", ""), 'a[""]'),
        ((0, "a"), "[0].a"),
        ((), ""),
    ],
)
def test_json_path(segments: tuple[str | int, ...], expected: str) -> None:
    assert json_path(*segments) == expected


@pytest.mark.parametrize(
    ("agent_id", "valid"),
    [
        ("a", True),
        ("Team.Role-2_x", True),
        ("x" * 128, True),
        ("x" * 129, False),
        ("", False),
        ("a b", False),
        ("a/b", False),
        ("é", False),
        ("a\n", False),
    ],
)
def test_valid_agent_id(agent_id: str, valid: bool) -> None:
    assert valid_agent_id(agent_id) is valid


@pytest.mark.parametrize(
    ("entry", "glob"),
    [("db", False), ("a.b-c_d", False), ("*", True), ("get_?", True), ("[ab]x", True)],
)
def test_is_glob(entry: str, glob: bool) -> None:
    assert is_glob(entry) is glob


# Compiling


def test_compile_empty_rules_fails_closed() -> None:
    policy = Policy.compile({})
    assert policy.agents == frozenset()
    assert policy.deny_on_missing_agent is True


def test_compile_reads_agents_and_defaults() -> None:
    policy = Policy.compile(
        {"agents": {"a": {}, "team.role": {}}, "defaults": {"deny_on_missing_agent": False}}
    )
    assert policy.agents == frozenset({"a", "team.role"})
    assert policy.deny_on_missing_agent is False
    assert repr(policy) == "Policy(agents=['a', 'team.role'], deny_on_missing_agent=False)"


# Servers: each precedence step


def test_server_explicit_deny_beats_explicit_allow() -> None:
    policy = policy_for({"allow": {"servers": ["db"]}, "deny": {"servers": ["db"]}})
    assert policy.decide_server("a", "db") == Decision(False, "agents.a.deny.servers[0]")


def test_server_explicit_allow_beats_wildcard_deny() -> None:
    policy = policy_for({"allow": {"servers": ["db"]}, "deny": {"servers": ["d*"]}})
    assert policy.decide_server("a", "db") == Decision(True, "agents.a.allow.servers[0]")
    assert policy.decide_server("a", "dx") == Decision(False, "agents.a.deny.servers[0]")


def test_server_wildcard_deny_beats_wildcard_allow() -> None:
    policy = policy_for({"allow": {"servers": ["*"]}, "deny": {"servers": ["x", "d*"]}})
    assert policy.decide_server("a", "db") == Decision(False, "agents.a.deny.servers[1]")
    assert policy.decide_server("a", "git") == Decision(True, "agents.a.allow.servers[0]")


def test_server_wildcard_allow() -> None:
    policy = policy_for({"allow": {"servers": ["db", "g*"]}})
    assert policy.decide_server("a", "git") == Decision(True, "agents.a.allow.servers[1]")


def test_server_default_deny() -> None:
    policy = policy_for({"allow": {"servers": ["db"]}})
    assert policy.decide_server("a", "git") == NO_RULE
    assert policy_for({}).decide_server("a", "db") == NO_RULE


def test_server_first_matching_entry_in_list_order_is_reported() -> None:
    policy = policy_for({"allow": {"servers": ["x", "g*", "*", "git", "git"]}})
    assert policy.decide_server("a", "git") == Decision(True, "agents.a.allow.servers[3]")
    assert policy.decide_server("a", "gamma") == Decision(True, "agents.a.allow.servers[1]")
    assert policy.decide_server("a", "zeta") == Decision(True, "agents.a.allow.servers[2]")


def test_undefined_agent_is_denied_everything() -> None:
    policy = policy_for({"allow": {"servers": ["*"]}})
    not_defined = Decision(False, "agents.ghost: not defined")
    assert policy.decide_server("ghost", "db") == not_defined
    assert policy.decide("ghost", "db", "query") == not_defined
    assert policy.visible_servers("ghost", ["db"]) == []


# Tools: each precedence step


def test_tool_explicit_deny_beats_explicit_allow() -> None:
    policy = policy_for(
        {"allow": {"servers": ["db"], "tools": {"db": ["q"]}}, "deny": {"tools": {"db": ["q"]}}}
    )
    assert policy.decide("a", "db", "q") == Decision(False, "agents.a.deny.tools.db[0]")


def test_tool_explicit_allow_beats_wildcard_deny() -> None:
    policy = policy_for(
        {
            "allow": {"servers": ["db"], "tools": {"db": ["drop_temp"]}},
            "deny": {"tools": {"db": ["drop_*"]}},
        }
    )
    assert policy.decide("a", "db", "drop_temp") == Decision(True, "agents.a.allow.tools.db[0]")
    assert policy.decide("a", "db", "drop_all") == Decision(False, "agents.a.deny.tools.db[0]")


def test_tool_wildcard_deny_beats_wildcard_allow() -> None:
    policy = policy_for(
        {
            "allow": {"servers": ["db"], "tools": {"db": ["*"]}},
            "deny": {"tools": {"db": ["drop_*"]}},
        }
    )
    assert policy.decide("a", "db", "drop_all") == Decision(False, "agents.a.deny.tools.db[0]")
    assert policy.decide("a", "db", "query") == Decision(True, "agents.a.allow.tools.db[0]")


def test_tool_wildcard_allow_and_default_deny() -> None:
    policy = policy_for({"allow": {"servers": ["db"], "tools": {"db": ["query", "get_*"]}}})
    assert policy.decide("a", "db", "get_user") == Decision(True, "agents.a.allow.tools.db[1]")
    assert policy.decide("a", "db", "drop") == NO_RULE


def test_implicit_grant_uses_the_server_rule() -> None:
    policy = policy_for({"allow": {"servers": ["x", "db"]}})
    assert policy.decide("a", "db", "anything") == Decision(True, "agents.a.allow.servers[1]")


def test_implicit_grant_still_honours_tool_denies() -> None:
    policy = policy_for({"allow": {"servers": ["d*"]}, "deny": {"tools": {"db": ["drop", "rm_*"]}}})
    assert policy.decide("a", "db", "drop") == Decision(False, "agents.a.deny.tools.db[0]")
    assert policy.decide("a", "db", "rm_all") == Decision(False, "agents.a.deny.tools.db[1]")
    assert policy.decide("a", "db", "query") == Decision(True, "agents.a.allow.servers[0]")


def test_empty_allow_list_means_no_tools() -> None:
    policy = policy_for({"allow": {"servers": ["db"], "tools": {"db": []}}})
    assert policy.decide_server("a", "db") == Decision(True, "agents.a.allow.servers[0]")
    assert policy.decide("a", "db", "query") == NO_RULE


def test_server_deny_beats_tool_allow() -> None:
    policy = policy_for(
        {"allow": {"servers": ["*"], "tools": {"db": ["query"]}}, "deny": {"servers": ["db"]}}
    )
    assert policy.decide("a", "db", "query") == Decision(False, "agents.a.deny.servers[0]")


def test_tools_entry_does_not_allow_its_server() -> None:
    policy = policy_for({"allow": {"tools": {"db": ["query"]}}})
    assert policy.decide("a", "db", "query") == NO_RULE


def test_tools_keys_are_literal_server_names() -> None:
    policy = policy_for({"allow": {"servers": ["*"], "tools": {"d*": ["only"]}}})
    # "d*" names the server called "d*", so "db" has no tools list: implicit grant.
    assert policy.decide("a", "db", "other") == Decision(True, "agents.a.allow.servers[0]")
    assert policy.decide("a", "d*", "only") == Decision(True, 'agents.a.allow.tools["d*"][0]')
    assert policy.decide("a", "d*", "other") == NO_RULE


@pytest.mark.parametrize(
    ("pattern", "name", "matches"),
    [
        ("*", "anything", True),
        ("*", "", True),
        ("get_*", "get_user", True),
        ("get_*", "get", False),
        ("get_*", "Get_user", False),
        ("*_user", "set_user", True),
        ("*_user", "user_set", False),
        ("?", "a", True),
        ("?", "ab", False),
        ("?", "", False),
        ("[ab]*", "alpha", True),
        ("[ab]*", "beta", True),
        ("[ab]*", "gamma", False),
        ("[!a]*", "beta", True),
        ("[!a]*", "alpha", False),
        ("backend.*", "backend.db", True),
        ("backend.*", "backendxdb", False),
        ("[", "[", True),
    ],
)
def test_globs_match_like_fnmatchcase(pattern: str, name: str, matches: bool) -> None:
    policy = policy_for({"allow": {"servers": [pattern], "tools": {"s": [pattern]}}})
    assert policy.decide_server("a", name).allowed is matches
    policy = policy_for({"allow": {"servers": ["s"], "tools": {"s": [pattern]}}})
    assert policy.decide("a", "s", name).allowed is matches


def test_dotted_agent_ids() -> None:
    policy = policy_for({"allow": {"servers": ["db"], "tools": {"db": []}}}, agent="team.role")
    assert policy.decide_server("team.role", "db") == Decision(
        True, 'agents["team.role"].allow.servers[0]'
    )
    assert policy.decide("team.role", "db", "q") == Decision(
        False, 'agents["team.role"]: no rule allows it'
    )
    assert policy.decide_server("team.other", "db") == Decision(
        False, 'agents["team.other"]: not defined'
    )


def test_visible_servers_keeps_input_order() -> None:
    policy = policy_for({"allow": {"servers": ["g*", "db"]}, "deny": {"servers": ["git-admin"]}})
    servers = ["zeta", "git", "db", "git-admin", "gamma"]
    assert policy.visible_servers("a", servers) == ["git", "db", "gamma"]
    assert policy.visible_servers("a", iter(servers)) == ["git", "db", "gamma"]


# Resources and prompts: the steps of tools, with their own lists

OTHER_KINDS: list[Kind] = ["resources", "prompts"]


@pytest.mark.parametrize("kind", OTHER_KINDS)
def test_item_explicit_deny_beats_explicit_allow(kind: Kind) -> None:
    policy = policy_for({"allow": {"servers": ["db"], kind: {"db": ["q"]}}, "deny": {kind: {"db": ["q"]}}})
    assert decide(policy, kind, "a", "db", "q") == Decision(False, f"agents.a.deny.{kind}.db[0]")


@pytest.mark.parametrize("kind", OTHER_KINDS)
def test_item_explicit_allow_beats_wildcard_deny(kind: Kind) -> None:
    policy = policy_for({"allow": {"servers": ["db"], kind: {"db": ["drop_temp"]}}, "deny": {kind: {"db": ["drop_*"]}}})
    assert decide(policy, kind, "a", "db", "drop_temp") == Decision(True, f"agents.a.allow.{kind}.db[0]")
    assert decide(policy, kind, "a", "db", "drop_all") == Decision(False, f"agents.a.deny.{kind}.db[0]")


@pytest.mark.parametrize("kind", OTHER_KINDS)
def test_item_wildcard_deny_beats_wildcard_allow(kind: Kind) -> None:
    policy = policy_for({"allow": {"servers": ["db"], kind: {"db": ["*"]}}, "deny": {kind: {"db": ["x", "drop_*"]}}})
    assert decide(policy, kind, "a", "db", "drop_all") == Decision(False, f"agents.a.deny.{kind}.db[1]")
    assert decide(policy, kind, "a", "db", "query") == Decision(True, f"agents.a.allow.{kind}.db[0]")


@pytest.mark.parametrize("kind", OTHER_KINDS)
def test_item_wildcard_allow_and_default_deny(kind: Kind) -> None:
    policy = policy_for({"allow": {"servers": ["db"], kind: {"db": ["query", "get_*"]}}})
    assert decide(policy, kind, "a", "db", "query") == Decision(True, f"agents.a.allow.{kind}.db[0]")
    assert decide(policy, kind, "a", "db", "get_user") == Decision(True, f"agents.a.allow.{kind}.db[1]")
    assert decide(policy, kind, "a", "db", "drop") == NO_RULE


@pytest.mark.parametrize("kind", OTHER_KINDS)
def test_item_first_matching_entry_in_list_order_is_reported(kind: Kind) -> None:
    policy = policy_for({"allow": {"servers": ["db"], kind: {"db": ["x", "g*", "*", "git", "git"]}}})
    assert decide(policy, kind, "a", "db", "git") == Decision(True, f"agents.a.allow.{kind}.db[3]")
    assert decide(policy, kind, "a", "db", "gamma") == Decision(True, f"agents.a.allow.{kind}.db[1]")
    assert decide(policy, kind, "a", "db", "zeta") == Decision(True, f"agents.a.allow.{kind}.db[2]")


@pytest.mark.parametrize("kind", OTHER_KINDS)
def test_item_implicit_grant_uses_the_server_rule_and_honours_denies(kind: Kind) -> None:
    policy = policy_for({"allow": {"servers": ["x", "d*"]}, "deny": {kind: {"db": ["drop", "rm_*"]}}})
    assert decide(policy, kind, "a", "db", "drop") == Decision(False, f"agents.a.deny.{kind}.db[0]")
    assert decide(policy, kind, "a", "db", "rm_all") == Decision(False, f"agents.a.deny.{kind}.db[1]")
    assert decide(policy, kind, "a", "db", "anything") == Decision(True, "agents.a.allow.servers[1]")
    assert decide(policy, kind, "a", "dz", "drop") == Decision(True, "agents.a.allow.servers[1]")


@pytest.mark.parametrize("kind", OTHER_KINDS)
def test_item_empty_allow_list_means_none(kind: Kind) -> None:
    policy = policy_for({"allow": {"servers": ["db"], kind: {"db": []}}})
    assert decide(policy, kind, "a", "db", "query") == NO_RULE


@pytest.mark.parametrize("kind", OTHER_KINDS)
def test_item_denied_server_denies_with_the_server_rule(kind: Kind) -> None:
    policy = policy_for({"allow": {"servers": ["*"], kind: {"db": ["q"]}}, "deny": {"servers": ["db"]}})
    assert decide(policy, kind, "a", "db", "q") == Decision(False, "agents.a.deny.servers[0]")
    # An item list does not allow its server.
    policy = policy_for({"allow": {kind: {"db": ["q"]}}})
    assert decide(policy, kind, "a", "db", "q") == NO_RULE


@pytest.mark.parametrize("kind", OTHER_KINDS)
def test_item_of_an_undefined_agent_is_denied(kind: Kind) -> None:
    policy = policy_for({"allow": {"servers": ["*"], kind: {"db": ["*"]}}})
    assert decide(policy, kind, "ghost", "db", "q") == Decision(False, "agents.ghost: not defined")


@pytest.mark.parametrize("kind", OTHER_KINDS)
def test_item_keys_are_literal_server_names_and_dotted_agents_are_quoted(kind: Kind) -> None:
    policy = policy_for({"allow": {"servers": ["*"], kind: {"d*": ["only"]}}}, agent="team.role")
    assert decide(policy, kind, "team.role", "db", "other") == Decision(True, 'agents["team.role"].allow.servers[0]')
    assert decide(policy, kind, "team.role", "d*", "only") == Decision(True, f'agents["team.role"].allow.{kind}["d*"][0]')
    assert decide(policy, kind, "team.role", "d*", "other") == Decision(False, 'agents["team.role"]: no rule allows it')


def test_the_kinds_are_independent() -> None:
    # Each kind's lists decide that kind alone: a tools list narrows tools, not resources or prompts.
    policy = policy_for(
        {
            "allow": {"servers": ["db"], "tools": {"db": ["q"]}, "prompts": {"db": ["p*"]}},
            "deny": {"resources": {"db": ["q", "file:///secret/*"]}},
        }
    )
    server = Decision(True, "agents.a.allow.servers[0]")
    assert policy.decide("a", "db", "q") == Decision(True, "agents.a.allow.tools.db[0]")
    assert policy.decide("a", "db", "plan") == NO_RULE
    assert policy.decide_resource("a", "db", "q") == Decision(False, "agents.a.deny.resources.db[0]")
    assert policy.decide_resource("a", "db", "file:///secret/key") == Decision(False, "agents.a.deny.resources.db[1]")
    assert policy.decide_resource("a", "db", "plan") == server
    assert policy.decide_prompt("a", "db", "plan") == Decision(True, "agents.a.allow.prompts.db[0]")
    assert policy.decide_prompt("a", "db", "q") == NO_RULE


@pytest.mark.parametrize(
    ("pattern", "uri", "matches"),
    [
        ("file:///docs/*", "file:///docs/a.md", True),
        ("file:///docs/*", "file:///docs/deep/down/a.md", True),  # `*` crosses `/`, as fnmatch does
        ("file:///docs/*", "file:///Docs/a.md", False),  # case-sensitive
        ("file:///docs/*", "file:///docs", False),
        ("*.md", "file:///docs/a.md", True),
        ("postgres://db/table/?", "postgres://db/table/7", True),
        ("postgres://db/table/?", "postgres://db/table/17", False),
        ("https://h/x?id=1", "https://h/x?id=1", True),  # a `?` in a URI makes it a glob that matches itself
        ("https://h/x?id=1", "https://h/xAid=1", True),  # ... and more: `[?]` is a literal `?`
        ("https://h/x[?]id=1", "https://h/xAid=1", False),
        ("https://h/x[?]id=1", "https://h/x?id=1", True),
        ("http://[::1]/", "http://[::1]/", False),  # `[::1]` is a set of characters: `[[]` is a literal `[`
        ("http://[[]::1]/", "http://[::1]/", True),
        ("ui://widget/[a-c]", "ui://widget/b", True),
        ("ui://widget/[!a-c]", "ui://widget/b", False),
    ],
)
def test_resource_globs_match_uris_like_fnmatchcase(pattern: str, uri: str, matches: bool) -> None:
    assert fnmatchcase(uri, pattern) is matches
    policy = policy_for({"allow": {"servers": ["s"], "resources": {"s": [pattern]}}})
    assert policy.decide_resource("a", "s", uri).allowed is matches


def test_resource_and_prompt_rules_list_entries_in_precedence_order() -> None:
    policy = policy_for(
        {
            "allow": {"servers": ["db"], "resources": {"db": ["file:///a", "file:///*"]}},
            "deny": {"resources": {"db": ["file:///x/*", "file:///a"]}, "prompts": {"db": ["p?", "q"]}},
        }
    )
    resources = policy.resource_rules("a", "db")
    assert [(e.entry, e.decision) for e in resources.entries] == [
        ("file:///a", Decision(False, "agents.a.deny.resources.db[1]")),
        ("file:///x/*", Decision(False, "agents.a.deny.resources.db[0]")),
        ("file:///*", Decision(True, "agents.a.allow.resources.db[1]")),
    ]
    assert resources.otherwise == NO_RULE
    prompts = policy.prompt_rules("a", "db")
    assert [(e.entry, e.decision.rule) for e in prompts.entries] == [
        ("q", "agents.a.deny.prompts.db[1]"),
        ("p?", "agents.a.deny.prompts.db[0]"),
    ]
    assert prompts.otherwise == Decision(True, "agents.a.allow.servers[0]")
    assert policy.tool_rules("a", "db").entries == ()
    denied = policy.prompt_rules("a", "git")
    assert (denied.entries, denied.otherwise) == ((), NO_RULE)


def test_has_rules_tells_whether_a_kind_has_a_list_for_a_server() -> None:
    policy = policy_for({"allow": {"servers": ["*"], "tools": {"db": []}}, "deny": {"prompts": {"git": ["x"]}}})
    found = {(kind, server) for kind in KINDS for server in ("db", "git") if policy.has_rules(kind, "a", server)}
    assert found == {("tools", "db"), ("prompts", "git")}
    assert not policy.has_rules("tools", "ghost", "db")


# Modes


def test_mode_is_the_agents_own_or_none() -> None:
    policy = Policy.compile(
        {"agents": {"agg": {"mode": "aggregate"}, "od": {"mode": "on_demand"}, "plain": {"allow": {"servers": ["*"]}}}}
    )
    assert policy.mode("agg") == "aggregate"
    assert policy.mode("od") == "on_demand"
    assert policy.mode("plain") is None
    assert policy.mode("ghost") is None


def test_mode_decides_nothing_about_access() -> None:
    body: dict[str, Any] = {"allow": {"servers": ["db"], "tools": {"db": ["q"]}}}
    plain, aggregate = policy_for(body), policy_for({**body, "mode": "aggregate"})
    for kind in KINDS:
        for name in ("q", "other"):
            assert decide(plain, kind, "a", "db", name) == decide(aggregate, kind, "a", "db", name)


# resolve_agent: every branch


def resolver(deny_on_missing: bool | None, *agents: str) -> Policy:
    rules: dict[str, Any] = {"agents": {agent: {} for agent in agents}}
    if deny_on_missing is not None:
        rules["defaults"] = {"deny_on_missing_agent": deny_on_missing}
    return Policy.compile(rules)


def test_resolve_declared_agent() -> None:
    policy = resolver(False, "backend", "default")
    assert policy.resolve_agent("backend", default_agent="default") == "backend"


@pytest.mark.parametrize("agent_id", ["x y", "", "a/b"])
def test_resolve_invalid_agent_id(agent_id: str) -> None:
    assert resolver(None, "a").resolve_agent(agent_id, default_agent="a") == Refusal(
        ErrorCode.INVALID_AGENT_ID,
        f"agent_id {agent_id!r} is invalid: use letters, digits, '-', '_' and '.'",
        None,
    )


def test_resolve_invalid_agent_id_is_quoted_briefly() -> None:
    refusal = resolver(None).resolve_agent("x " * 10_000, default_agent=None)
    assert isinstance(refusal, Refusal)
    assert refusal.code is ErrorCode.INVALID_AGENT_ID
    assert refusal.message == (
        f"agent_id {'x ' * 64 + '...'!r} is invalid: use letters, digits, '-', '_' and '.'"
    )


def test_resolve_undefined_agent() -> None:
    assert resolver(False, "default").resolve_agent("x", default_agent="default") == Refusal(
        ErrorCode.DENIED_BY_POLICY, "agent 'x' is not defined in the rules", "agents.x: not defined"
    )


@pytest.mark.parametrize("deny_on_missing", [True, None])
def test_resolve_missing_agent_denied(deny_on_missing: bool | None) -> None:
    policy = resolver(deny_on_missing, "default", "a")
    assert policy.resolve_agent(None, default_agent="a") == Refusal(
        ErrorCode.DENIED_BY_POLICY, "agent_id is required", "defaults.deny_on_missing_agent"
    )


def test_resolve_missing_agent_uses_fallback() -> None:
    assert resolver(False, "a", "default").resolve_agent(None, default_agent="a") == "a"


def test_resolve_missing_agent_fallback_not_in_rules() -> None:
    # A 'default' agent does not rescue a misconfigured GATEWAY_DEFAULT_AGENT.
    assert resolver(False, "default").resolve_agent(None, default_agent="ghost") == Refusal(
        ErrorCode.FALLBACK_AGENT_NOT_IN_RULES,
        "fallback agent 'ghost' (GATEWAY_DEFAULT_AGENT) is not defined in the rules",
        "GATEWAY_DEFAULT_AGENT",
    )


def test_resolve_missing_agent_uses_default_agent() -> None:
    assert resolver(False, "a", "default").resolve_agent(None, default_agent=None) == "default"


def test_resolve_missing_agent_without_fallback() -> None:
    assert resolver(False, "a").resolve_agent(None, default_agent=None) == Refusal(
        ErrorCode.NO_FALLBACK_CONFIGURED,
        "agent_id is required: no GATEWAY_DEFAULT_AGENT and no 'default' agent in the rules",
        None,
    )


# check_rules


def test_check_rules_accepts_a_full_document() -> None:
    rules = {
        "agents": {
            "backend": {
                "allow": {"servers": ["db", "git*"], "tools": {"db": ["query", "get_*"]}, "resources": {"db": []}},
                "deny": {"servers": [], "tools": {"db": ["drop_*"]}, "prompts": {"git": ["*"]}},
                "mode": "aggregate",
            },
            "team.role": {},
        },
        "defaults": {"deny_on_missing_agent": False},
    }
    assert check_rules(rules) == []
    assert check_rules({}) == []


def test_check_rules_reports_every_problem() -> None:
    rules = {
        "agents": {
            "bad id": {"allow": [], "notes": "x"},
            "a": {"allow": {"servers": ["db", 3], "tools": {"db": "query"}, "extra": 1}},
            "b": {"deny": {"servers": "db", "tools": []}},
            "c": None,
        },
        "defaults": {"deny_on_missing_agent": "yes", "other": True},
        "version": 2,
    }
    assert check_rules(rules) == [
        RulesProblem(
            'agents["bad id"]',
            "agent id 'bad id' is invalid: use 1 to 128 letters, digits, '-', '_' and '.'",
        ),
        RulesProblem('agents["bad id"].allow', "expected an object, got an array"),
        RulesProblem('agents["bad id"].notes', "unknown key 'notes'"),
        RulesProblem("agents.a.allow.servers[1]", "expected a string, got 3"),
        RulesProblem("agents.a.allow.tools.db", "expected an array of strings, got a string"),
        RulesProblem("agents.a.allow.extra", "unknown key 'extra'"),
        RulesProblem("agents.b.deny.servers", "expected an array of strings, got a string"),
        RulesProblem("agents.b.deny.tools", "expected an object, got an array"),
        RulesProblem("agents.c", "expected an object, got null"),
        RulesProblem("defaults.deny_on_missing_agent", "expected a boolean, got a string"),
        RulesProblem("defaults.other", "unknown key 'other'"),
        RulesProblem("version", "unknown key 'version'"),
    ]


# Properties over random rule sets

SERVERS = ["db", "git", "git-hub", "a.b"]
# Names of items of every kind: tool and prompt names, and resource URIs. One
# pool for the three kinds, so that a list of one kind often names an item
# that another kind's list names too, which must not change its decision.
TOOLS = ["get", "get_user", "set_user", "list", "drop", "file:///a/b", "file:///a/c.md"]
SERVER_ENTRIES = [*SERVERS, "*", "git*", "?b", "[ag]*", "d?"]
TOOL_ENTRIES = [*TOOLS, "*", "get_*", "*_user", "???", "[ds]*", "l?st", "file:///a/*", "*.md"]
AGENTS = ["alice", "team.role", "default"]
items = st.dictionaries(st.sampled_from(SERVERS), st.lists(st.sampled_from(TOOL_ENTRIES), max_size=4), max_size=3)

# `servers` is always there and each kind's lists often are, so that entries
# collide often enough for every precedence step to be exercised.
sides = st.fixed_dictionaries(
    {"servers": st.lists(st.sampled_from(SERVER_ENTRIES), max_size=4)},
    optional={kind: items for kind in KINDS},
)
rule_sets = st.fixed_dictionaries(
    {
        "agents": st.dictionaries(
            st.sampled_from(AGENTS),
            st.fixed_dictionaries(
                {"allow": sides}, optional={"deny": sides, "mode": st.sampled_from(["on_demand", "aggregate"])}
            ),
            max_size=3,
        )
    },
    optional={
        "defaults": st.fixed_dictionaries({}, optional={"deny_on_missing_agent": st.booleans()})
    },
)
agents = st.sampled_from([*AGENTS, "bob"])
servers = st.sampled_from(SERVERS)
tools = st.sampled_from(TOOLS)
kinds = st.sampled_from(KINDS)


# (side, entries, path below the agent) in the order a precedence class tries them.
Steps = Sequence[tuple[str, list[str], tuple[str, ...]]]


def reference_decide(
    rules: dict[str, Any], agent: str, server: str, tool: str | None, kind: Kind = "tools"
) -> Decision:
    """The precedence rules read straight off the spec, slowly: the test oracle.

    ``tool`` is the item of ``kind`` asked about, ``None`` to ask about the server.
    """
    if agent not in rules["agents"]:
        return Decision(False, f"{json_path('agents', agent)}: not defined")
    body = rules["agents"][agent]
    no_rule = Decision(False, f"{json_path('agents', agent)}: no rule allows it")

    def first(steps: Steps, name: str) -> Decision | None:
        for explicit in (True, False):
            for verdict, entries, path in steps:
                for index, entry in enumerate(entries):
                    hit = entry == name if explicit else fnmatchcase(name, entry)
                    if is_glob(entry) != explicit and hit:
                        rule = json_path("agents", agent, verdict, *path, index)
                        return Decision(verdict == "allow", rule)
        return None

    def side(name: str) -> dict[str, Any]:
        return body.get(name, {})  # type: ignore[no-any-return]

    server_steps = [
        (name, side(name).get("servers", []), ("servers",)) for name in ("deny", "allow")
    ]
    server_decision = first(server_steps, server) or no_rule
    if tool is None or not server_decision.allowed:
        return server_decision
    allow_tools = side("allow").get(kind, {}).get(server)
    tool_steps = [
        ("deny", side("deny").get(kind, {}).get(server, []), (kind, server)),
        ("allow", allow_tools or [], (kind, server)),
    ]
    decision = first(tool_steps, tool)
    if decision is None and allow_tools is None:
        return server_decision
    return decision or no_rule


@settings(max_examples=500)
@given(rule_sets)
def test_decide_matches_the_reference(rules: dict[str, Any]) -> None:
    # Every question at once: a precedence bug shows up in few combinations.
    policy = Policy.compile(rules)
    for agent in [*AGENTS, "bob"]:
        for server in SERVERS:
            expected = reference_decide(rules, agent, server, None)
            assert policy.decide_server(agent, server) == expected
            for kind in KINDS:
                for tool in TOOLS:
                    expected = reference_decide(rules, agent, server, tool, kind)
                    assert decide(policy, kind, agent, server, tool) == expected, kind


@given(rule_sets, agents, servers)
def test_the_rules_of_a_kind_agree_with_its_decisions(rules: dict[str, Any], agent: str, server: str) -> None:
    # What explain shows (the entries in order, then `otherwise`) decides as decide does.
    policy = Policy.compile(rules)
    by_kind = {"tools": policy.tool_rules, "resources": policy.resource_rules, "prompts": policy.prompt_rules}
    for kind in KINDS:
        explained = by_kind[kind](agent, server)
        for tool in TOOLS:
            matching = (e.decision for e in explained.entries if (fnmatchcase(tool, e.entry) if is_glob(e.entry) else tool == e.entry))
            assert next(matching, explained.otherwise) == decide(policy, kind, agent, server, tool)


@given(rule_sets, agents, servers, tools, kinds)
def test_explicit_item_deny_always_denies(
    rules: dict[str, Any], agent: str, server: str, tool: str, kind: Kind
) -> None:
    body = rules["agents"].get(agent, {})
    denied = body.get("deny", {}).get(kind, {}).get(server, [])
    if tool in denied:
        assert decide(Policy.compile(rules), kind, agent, server, tool).allowed is False


@given(rule_sets, agents, servers)
def test_explicit_server_deny_always_denies(
    rules: dict[str, Any], agent: str, server: str
) -> None:
    body = rules["agents"].get(agent, {})
    if server in body.get("deny", {}).get("servers", []):
        policy = Policy.compile(rules)
        assert policy.decide_server(agent, server).allowed is False
        assert not any(decide(policy, kind, agent, server, tool).allowed for tool in TOOLS for kind in KINDS)


@given(rule_sets, agents, servers, tools, kinds)
def test_item_allowed_implies_server_allowed(
    rules: dict[str, Any], agent: str, server: str, tool: str, kind: Kind
) -> None:
    policy = Policy.compile(rules)
    if decide(policy, kind, agent, server, tool).allowed:
        assert policy.decide_server(agent, server).allowed


@given(rule_sets, agents, servers, tools, kinds)
def test_a_kind_is_decided_by_its_own_lists_alone(
    rules: dict[str, Any], agent: str, server: str, tool: str, kind: Kind
) -> None:
    # Dropping every other kind's lists changes no decision of this kind.
    alone = {
        **rules,
        "agents": {
            name: {key: ({k: v for k, v in value.items() if k in ("servers", kind)} if key in ("allow", "deny") else value)
                   for key, value in body.items()}
            for name, body in rules["agents"].items()
        },
    }
    assert decide(Policy.compile(alone), kind, agent, server, tool) == decide(Policy.compile(rules), kind, agent, server, tool)


@given(rule_sets, agents, st.lists(servers))
def test_visible_servers_is_decide_server_filtered(
    rules: dict[str, Any], agent: str, names: list[str]
) -> None:
    policy = Policy.compile(rules)
    expected = [name for name in names if policy.decide_server(agent, name).allowed]
    assert policy.visible_servers(agent, names) == expected


@given(rule_sets, agents, servers, tools, kinds)
def test_every_rule_points_into_the_agent(
    rules: dict[str, Any], agent: str, server: str, tool: str, kind: Kind
) -> None:
    decision = decide(Policy.compile(rules), kind, agent, server, tool)
    assert decision.rule.startswith(json_path("agents", agent))
    # An item's own entry is one of its kind's: agents.<id>.<side>.<kind>.<server>[i].
    for side in ("allow", "deny"):
        if decision.rule.startswith(json_path("agents", agent, side)) and "servers[" not in decision.rule:
            assert decision.rule.startswith(json_path("agents", agent, side, kind, server) + "[")


@given(
    rule_sets,
    st.sampled_from([None, "", "x y", *AGENTS, "bob"]),
    st.sampled_from([None, *AGENTS, "bob"]),
)
def test_resolve_agent_never_fails_open(
    rules: dict[str, Any], agent_id: str | None, default_agent: str | None
) -> None:
    policy = Policy.compile(rules)
    resolved = policy.resolve_agent(agent_id, default_agent=default_agent)
    if isinstance(resolved, Refusal):
        assert resolved.code in {
            ErrorCode.INVALID_AGENT_ID,
            ErrorCode.DENIED_BY_POLICY,
            ErrorCode.FALLBACK_AGENT_NOT_IN_RULES,
            ErrorCode.NO_FALLBACK_CONFIGURED,
        }
    else:
        assert resolved in policy.agents
        assert agent_id is None or resolved == agent_id


@given(rule_sets)
def test_generated_rules_pass_check_rules(rules: dict[str, Any]) -> None:
    assert check_rules(rules) == []
