"""A typo never fails open: misspelt keys, names and variables are reported, and ``strict`` refuses warnings.

The property at the end edits one character of one key of a valid rules file
and checks that the edit is either reported by ``load_config`` (an error; or a
warning, for a key that is a server or agent name) or widens no access at all,
as the gateway tools decide it (``resolve_agent``, then ``decide_server`` or
``decide``). Two edits are outside what any check can see, and the property
says exactly what they may do instead: an agent id misspelt into a fresh one
(a rename: rights move, none are created), and a ``tools`` key misspelt into
the name of another configured server the agent may use (kept out of the
generated files: no two configured names are one edit apart). ``resources``
and ``prompts`` keys are server names as ``tools`` keys are, and their items
are decided the same way (``decide_resource``, ``decide_prompt``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lockgate.core._config import Config, ConfigError, Settings, load_config
from lockgate.core._policy import KINDS, Kind, Policy, Refusal
from lockgate.core._rules import Agent, Defaults, Lists, RulesFile
from lockgate.core._servers import HttpServer, PooledServer, StdioInstance, StdioServer
from lockgate.core._settings import VARIABLES
from lockgate.core._validation import keys_at
from lockgate.core import _rules, _servers

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
STDIO = {"command": "srv"}


def outcome(servers: Any, rules: Any, environ: dict[str, str] | None = None, **settings: Any) -> Config | ConfigError:
    """The configuration, or the error refusing it; dicts are serialised, strings passed as they are."""
    try:
        return load_config(
            servers=servers if isinstance(servers, str) else json.dumps(servers),
            servers_file="servers.json",
            rules=rules if isinstance(rules, str) else json.dumps(rules),
            rules_file="rules.json",
            environ=environ or {},
            settings=Settings(**settings) if settings else None,
        )
    except ConfigError as exc:
        return exc


def errors(servers: Any, rules: Any, environ: dict[str, str] | None = None) -> list[tuple[str, str, str]]:
    found = outcome(servers, rules, environ)
    assert isinstance(found, ConfigError)
    return [(p.file, p.path, p.message) for p in found.problems]


def warnings(servers: Any, rules: Any, environ: dict[str, str] | None = None) -> list[tuple[str, str, str]]:
    found = outcome(servers, rules, environ)
    assert isinstance(found, Config), found
    return [(p.file, p.path, p.message) for p in found.warnings]


# Unknown keys: errors, with the closest valid key at that place


def test_an_unknown_key_names_the_closest_valid_key_at_its_place() -> None:
    rules = {"agnets": {}, "agents": {"a": {"dney": {}, "allow": {"server": [], "tols": {}}}}, "defaults": {"deny_on_missing_agnt": True}}
    assert errors({"mcpServers": {}}, rules) == [
        ("rules.json", "agnets", "unknown key 'agnets' (did you mean 'agents'?)"),
        ("rules.json", "agents.a.dney", "unknown key 'dney' (did you mean 'deny'?)"),
        ("rules.json", "agents.a.allow.server", "unknown key 'server' (did you mean 'servers'?)"),
        ("rules.json", "agents.a.allow.tols", "unknown key 'tols' (did you mean 'tools'?)"),
        ("rules.json", "defaults.deny_on_missing_agnt", "unknown key 'deny_on_missing_agnt' (did you mean 'deny_on_missing_agent'?)"),
    ]
    servers = {"mcpServers": {"h": {"url": "http://h/", "header": {}}, "p": {"instances": [STDIO], "stratgy": "random"}}}
    assert errors(servers, {}) == [
        ("servers.json", "mcpServers.h.header", "unknown key 'header' (did you mean 'headers'?)"),
        ("servers.json", "mcpServers.p.stratgy", "unknown key 'stratgy' (did you mean 'strategy'?)"),
    ]
    assert errors({"mcpServer": {}}, {})[0] == ("servers.json", "mcpServer", "unknown key 'mcpServer' (did you mean 'mcpServers'?)")


def test_the_valid_keys_come_from_the_shapes() -> None:
    def keys(shape: Any) -> set[str]:
        return set(shape.__required_keys__ | shape.__optional_keys__)

    rules = _rules._FILE
    assert set(keys_at(rules, ())) == keys(RulesFile)
    assert set(keys_at(rules, ("agents", "any"))) == keys(Agent)
    assert set(keys_at(rules, ("agents", "any", "deny"))) == keys(Lists)
    assert set(keys_at(rules, ("defaults",))) == keys(Defaults)
    assert keys_at(rules, ("agents", "any", "deny", "servers")) == []  # an array, not an object
    assert set(keys_at(_servers._SERVER_SHAPES["stdio"], ())) == keys(StdioServer)
    assert set(keys_at(_servers._SERVER_SHAPES["http"], ())) == keys(HttpServer)
    assert set(keys_at(_servers._POOLED, ())) == keys(PooledServer)
    assert set(keys_at(_servers._INSTANCE_SHAPES["stdio"], ())) == keys(StdioInstance)


def test_a_key_given_twice_is_an_error_in_either_file() -> None:
    servers = '{"mcpServers": {"git": {"command": "a"}, "git": {"command": "b"}}}'
    rules = '{"agents": {"dev": {"deny": {"tools": {"git": ["push"], "git": []}}}}}'
    assert errors(servers, rules) == [
        ("servers.json", "mcpServers.git", "duplicate key 'git': JSON keeps only the last one"),
        ("rules.json", "agents.dev.deny.tools.git", "duplicate key 'git': JSON keeps only the last one"),
    ]


# Names: warnings, with the closest name that exists


GIT = {"mcpServers": {"git": STDIO, "notes": STDIO}}


def test_a_server_name_that_is_not_configured_suggests_one_that_is() -> None:
    rules = {"agents": {"dev": {"allow": {"servers": ["git", "nots"], "tools": {"gti": ["log"]}}}}}
    assert warnings(GIT, rules) == [
        ("rules.json", "agents.dev.allow.servers[1]", "server 'nots' is not configured in servers.json (did you mean 'notes'?)"),
        ("rules.json", "agents.dev.allow.tools.gti", "server 'gti' is not configured in servers.json (did you mean 'git'?)"),
    ]


def test_a_deny_pattern_that_matches_no_server_warns() -> None:
    rules = {"agents": {"dev": {"allow": {"servers": ["*", "x*"]}, "deny": {"servers": ["gti*", "g*"]}}}}
    assert warnings(GIT, rules) == [
        ("rules.json", "agents.dev.deny.servers[0]", "'gti*' matches no server configured in servers.json, so it denies nothing"),
    ]


def test_resource_and_prompt_keys_naming_a_server_that_is_not_configured_suggest_one_that_is() -> None:
    rules = {
        "agents": {
            "dev": {
                "allow": {"servers": ["git"], "resources": {"gti": ["file:///*"], "git": []}},
                "deny": {"prompts": {"ntoes": ["x"], "elsewhere": []}},
            }
        }
    }
    assert warnings(GIT, rules) == [
        ("rules.json", "agents.dev.allow.resources.gti", "server 'gti' is not configured in servers.json (did you mean 'git'?)"),
        ("rules.json", "agents.dev.deny.prompts.ntoes", "server 'ntoes' is not configured in servers.json (did you mean 'notes'?)"),
        ("rules.json", "agents.dev.deny.prompts.elsewhere", "server 'elsewhere' is not configured in servers.json"),
    ]


def test_resource_and_prompt_rules_for_a_server_the_agent_may_not_use_warn() -> None:
    rules = {
        "agents": {
            "dev": {
                "allow": {"servers": ["git"], "prompts": {"notes": ["*"], "git": ["log"]}},
                "deny": {"servers": ["notes"], "resources": {"notes": ["file:///x"], "git": ["file:///y"]}},
            },
            "ops": {"allow": {"resources": {"git": []}}},
        }
    }
    assert warnings(GIT, rules) == [
        ("rules.json", "agents.dev.allow.prompts.notes", "these prompt rules never apply: agent 'dev' may not use server 'notes' (agents.dev.deny.servers[0])"),
        ("rules.json", "agents.dev.deny.resources.notes", "these resource rules never apply: agent 'dev' may not use server 'notes' (agents.dev.deny.servers[0])"),
        ("rules.json", "agents.ops.allow.resources.git", "these resource rules never apply: agent 'ops' may not use server 'git' (agents.ops: no rule allows it)"),
    ]


def test_tool_rules_for_a_server_the_agent_may_not_use_warn() -> None:
    # "notes" was meant to be "git": the push rule never applies, and git's tools are all allowed.
    rules = {"agents": {"dev": {"allow": {"servers": ["git"]}, "deny": {"servers": ["notes"], "tools": {"notes": ["push"]}}}}}
    assert warnings(GIT, rules) == [
        ("rules.json", "agents.dev.deny.tools.notes", "these tool rules never apply: agent 'dev' may not use server 'notes' (agents.dev.deny.servers[0])"),
    ]


def test_a_default_agent_that_is_not_defined_suggests_one_that_is() -> None:
    rules = {"agents": {"backend": {}}, "defaults": {"deny_on_missing_agent": False}}
    assert warnings(GIT, rules, {"GATEWAY_DEFAULT_AGENT": "bakcend"}) == [
        ("environment", "GATEWAY_DEFAULT_AGENT", "agent 'bakcend' is not defined in rules.json (did you mean 'backend'?)"),
    ]


@pytest.mark.parametrize("defaults", [{}, {"defaults": {"deny_on_missing_agent": True}}])
def test_a_default_agent_has_no_effect_while_calls_without_agent_id_are_refused(defaults: dict[str, Any]) -> None:
    rules = {"agents": {"backend": {}}, **defaults}
    assert warnings(GIT, rules, {"GATEWAY_DEFAULT_AGENT": "backend"}) == [
        (
            "environment",
            "GATEWAY_DEFAULT_AGENT",
            "has no effect: rules.json does not set defaults.deny_on_missing_agent to false, so calls without "
            "agent_id are refused rather than run as agent 'backend'; set it to false to run them as that agent, "
            "or unset GATEWAY_DEFAULT_AGENT",
        ),
    ]
    # What it says is what the policy does.
    config = outcome(GIT, rules, {"GATEWAY_DEFAULT_AGENT": "backend"})
    assert isinstance(config, Config)
    assert isinstance(config.policy.resolve_agent(None, default_agent="backend"), Refusal)


def test_unknown_gateway_variables_warn_with_the_closest_known_name() -> None:
    environ = {"GATEWAY_DEFUALT_AGENT": "dev", "GATEWAY_STRCT": "", "GATEWAY_COLOUR": "red", "OTHER_DEBUG": "1"}
    assert warnings(GIT, {}, environ) == [
        ("environment", "GATEWAY_COLOUR", "unknown variable, ignored"),
        ("environment", "GATEWAY_DEFUALT_AGENT", "unknown variable, ignored (did you mean 'GATEWAY_DEFAULT_AGENT'?)"),
        ("environment", "GATEWAY_STRCT", "unknown variable, ignored (did you mean 'GATEWAY_STRICT'?)"),
    ]


def test_every_gateway_variable_lockgate_reads_is_known() -> None:
    # Those the shells read themselves (the file locations) included: none may draw a false warning.
    shells = " ".join(path.read_text() for path in (REPO / "shells").rglob("*.py"))
    assert set(re.findall(r"\bGATEWAY_[A-Z_]*[A-Z]\b", shells)) <= VARIABLES
    documented = re.findall(r"^\| `(GATEWAY_[A-Z_]+)` \|", (REPO / "README.md").read_text(), re.MULTILINE)
    assert set(documented) == VARIABLES
    assert warnings(GIT, {}, {name: "" for name in VARIABLES}) == []


# Strict mode


def test_strict_mode_makes_every_warning_an_error_in_the_order_of_the_files() -> None:
    servers = {"mcpServers": {"git": {**STDIO, "headers": {}}}}
    rules = {"agents": {"dev": {"allow": {"servers": ["gti"]}, "deny": {"servers": ["notes"]}}}}
    found = outcome(servers, rules, {"GATEWAY_DEBUG": "maybe"}, strict=True)
    assert isinstance(found, ConfigError)
    note = "; strict mode makes this warning an error"
    assert [(p.path, p.message) for p in found.problems] == [
        ("mcpServers.git.headers", f"'headers' applies only to HTTP servers and is ignored{note}"),
        ("agents.dev.allow.servers[0]", f"server 'gti' is not configured in servers.json (did you mean 'git'?){note}"),
        ("agents.dev.deny.servers[0]", f"server 'notes' is not configured in servers.json{note}"),
    ]
    assert found.promoted == tuple(found.problems) and found.warnings == ()
    # From the environment, like every setting, and a configuration without warnings loads.
    assert isinstance(outcome(servers, rules, {"GATEWAY_STRICT": "true"}), ConfigError)
    assert isinstance(outcome(GIT, {"agents": {"dev": {"allow": {"servers": ["git"]}}}}, strict=True), Config)


# The property: one character of one key


# Configured, and no two one edit apart: a `tools` key misspelt into the name of another configured server
# the agent may use is a valid rule for that server, which nothing can tell from one meant (see _rules).
POOL = ["db", "git", "notes", "search"]
SERVER_ENTRIES = [*POOL, "*", "g*", "[dn]*", "*s"]  # each pattern matches a configured server
TOOL_ENTRIES = ["read", "write", "push", "drop_table", "*", "drop_*", "re*", "?ush"]
AGENT_IDS = ["dev", "dev2", "ops", "reader", "default", "defaults", "team.role"]  # some one edit apart
EXTRA_AGENTS, EXTRA_SERVERS, EXTRA_TOOLS = ["stranger"], ["other"], ["drop_x", "rex", "mush", "other"]

side = st.fixed_dictionaries(
    {"servers": st.lists(st.sampled_from(SERVER_ENTRIES), max_size=3)},
    optional={
        kind: st.dictionaries(st.sampled_from(POOL), st.lists(st.sampled_from(TOOL_ENTRIES), max_size=3), min_size=1, max_size=3)
        for kind in KINDS
    },
)
generated_rules = st.fixed_dictionaries(
    {"agents": st.dictionaries(st.sampled_from(AGENT_IDS), st.fixed_dictionaries({"allow": side}, optional={"deny": side}), min_size=1, max_size=3)},
    optional={"defaults": st.fixed_dictionaries({}, optional={"deny_on_missing_agent": st.booleans()})},
)


def without_dead_tool_rules(rules: dict[str, Any]) -> dict[str, Any]:
    """``rules`` without the tool (resource, prompt) rules of servers their agent may not use, so that it loads without a warning."""
    policy = Policy.compile(rules)
    for agent, body in rules["agents"].items():
        for lists in body.values():
            for kind in KINDS:
                if kind in lists:
                    lists[kind] = {server: items for server, items in lists[kind].items() if policy.decide_server(agent, server).allowed}
    return rules


EXAMPLE = (
    json.loads((EXAMPLES / ".mcp.json").read_text()),
    json.loads((EXAMPLES / ".mcp-gateway-rules.json").read_text()),
)
documents = st.one_of(
    st.just(EXAMPLE),
    generated_rules.map(lambda rules: ({"mcpServers": {name: STDIO for name in POOL}}, without_dead_tool_rules(rules))),
)


class Obj(list[tuple[str, Any]]):
    """A JSON object as its pairs, so that an edit can repeat a key, as a text can."""


def pairs(value: Any) -> Any:
    if isinstance(value, dict):
        return Obj((key, pairs(item)) for key, item in value.items())
    return [pairs(item) for item in value] if isinstance(value, list) else value


def dump(value: Any) -> str:
    if isinstance(value, Obj):
        return "{" + ", ".join(f"{json.dumps(key)}: {dump(item)}" for key, item in value) + "}"
    return "[" + ", ".join(map(dump, value)) + "]" if isinstance(value, list) else json.dumps(value)


def keys(value: Any, parent: str = "") -> list[tuple[Obj, int, str]]:
    """Every key of the document: (its object, its index there, what it names: agent, server or a fixed key)."""
    found: list[tuple[Obj, int, str]] = []
    if isinstance(value, Obj):
        for index, (key, item) in enumerate(value):
            found.append((value, index, "agent" if parent == "agents" else "server" if parent in KINDS else "fixed"))
            found += keys(item, key)
    elif isinstance(value, list):
        for item in value:
            found += keys(item)
    return found


def one_edit_apart(a: str, b: str) -> bool:
    """Whether one character inserted, deleted, replaced, or two neighbours swapped turn ``a`` into ``b``."""
    if len(a) > len(b):
        a, b = b, a
    if len(b) - len(a) == 1:
        return any(b[:i] + b[i + 1 :] == a for i in range(len(b)))
    differ = [i for i in range(len(a)) if a[i] != b[i]] if len(a) == len(b) else []
    return len(differ) == 1 or (len(differ) == 2 and differ[1] == differ[0] + 1 and a[differ[0]] == b[differ[1]] and a[differ[1]] == b[differ[0]])


def edit(word: str, data: st.DataObject, near: list[str]) -> str:
    """One character inserted, deleted, replaced, or two neighbours swapped.

    Half the time, when there are any, the edit is one that lands on a name in ``near``: those are the
    edits a blind draw would hardly ever make and the ones most likely to mean something else.
    """
    landing = [name for name in near if one_edit_apart(word, name)]
    lands: bool = bool(landing) and data.draw(st.booleans())
    if lands:
        return data.draw(st.sampled_from(sorted(landing)))
    char = data.draw(st.sampled_from(sorted(set("abcdefghijklmnopqrstuvwxyz0123456789_-. *" + word))))
    how = data.draw(st.sampled_from(["insert", "delete", "replace", "transpose"] if len(word) > 1 else ["insert", "delete", "replace"]))
    at = data.draw(st.integers(0, len(word) - (how != "insert") - (how == "transpose")))
    if how == "insert":
        return word[:at] + char + word[at:]
    if how == "delete":
        return word[:at] + word[at + 1 :]
    if how == "replace":
        return word[:at] + char + word[at + 1 :]
    return word[:at] + word[at + 1] + word[at] + word[at + 2 :]


Access = set[tuple[str | None, str, str | None]]
DECIDE = {"tools": Policy.decide, "resources": Policy.decide_resource, "prompts": Policy.decide_prompt}


def access(config: Config, agents: list[str | None], servers: set[str], tools: set[str | None]) -> Access:
    """What the gateway would allow: the agent as resolve_agent decides, then its server (tool None) or an item.

    An item is ``kind:name``, for each kind: a tool, a resource or a prompt of that name.
    """
    allowed: Access = set()
    policy = config.policy
    for agent_id in agents:
        agent = policy.resolve_agent(agent_id, default_agent=config.settings.default_agent)
        if isinstance(agent, Refusal):
            continue
        for server in servers:
            if policy.decide_server(agent, server).allowed:
                allowed.add((agent_id, server, None))
            for tool in tools - {None}:
                assert tool is not None
                for kind in KINDS:
                    if DECIDE[kind](policy, agent, server, tool).allowed:
                        allowed.add((agent_id, server, f"{kind}:{tool}"))
    return allowed


def names(rules: dict[str, Any]) -> tuple[set[str], set[str], set[str]]:
    """The agents, servers and items (of any kind) a valid rules document mentions."""
    agents, servers, tools = set(rules.get("agents", {})), set(), set()
    for body in rules.get("agents", {}).values():
        for lists in body.values():
            kinds: list[Kind] = [kind for kind in KINDS if kind in lists]
            servers |= {*lists.get("servers", []), *(server for kind in kinds for server in lists[kind])}
            tools |= {item for kind in kinds for entries in lists[kind].values() for item in entries}
    return agents, servers, tools


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents, st.data())
def test_a_one_character_edit_of_any_key_is_reported_or_widens_nothing(doc: tuple[dict[str, Any], dict[str, Any]], data: st.DataObject) -> None:
    servers, rules = doc
    original = outcome(servers, rules)
    assert isinstance(original, Config) and original.warnings == ()
    tree = pairs(rules)
    found = keys(tree)
    if not found:
        return
    # Each kind of key as often as the others: the fixed ones outnumber the names.
    names_what = data.draw(st.sampled_from(sorted({what for _, _, what in found})))
    obj, index, _ = data.draw(st.sampled_from([key for key in found if key[2] == names_what]))
    old = obj[index][0]
    near = [*AGENT_IDS, *POOL, *(key for key, _ in obj)]
    obj[index] = (edit(old, data, near), obj[index][1])
    new = obj[index][0]
    text = dump(tree)
    edited = outcome(servers, text)
    if isinstance(edited, ConfigError) or (edited.warnings and names_what in ("agent", "server")):
        return  # reported
    assert names_what != "fixed" or new == old, f"an edit of {old!r} to {new!r} went unreported"
    edited_rules = json.loads(text)
    a1, s1, t1 = names(rules)
    a2, s2, t2 = names(edited_rules)
    agents: list[str | None] = [None, *sorted(a1 | a2 | set(EXTRA_AGENTS))]
    server_names = set(servers["mcpServers"]) | {s for s in s1 | s2 if "*" not in s} | set(EXTRA_SERVERS)
    tools: set[str | None] = {None, *(t for t in t1 | t2 if not set("*?[") & set(t)), *EXTRA_TOOLS}
    before, after = access(original, agents, server_names, tools), access(edited, agents, server_names, tools)
    renamed = names_what == "agent" and new not in original.policy.agents and old not in edited.policy.agents
    if not renamed:
        assert after <= before, f"editing {old!r} to {new!r} allowed {sorted(after - before, key=str)}"
        return
    # An agent renamed by a typo: nothing refers to agents, so nothing can tell it from a rename that was
    # meant. Its rights move to the new id (and, for "default", to calls without agent_id); none are created.
    moved: Access = {(new, server, tool) for agent, server, tool in before if agent == old}
    if new == "default":
        moved |= {(None, server, tool) for agent, server, tool in before if agent == old}
    assert after <= before | moved
    assert {(s, t) for a, s, t in after if a == new} == {(s, t) for a, s, t in before if a == old}
