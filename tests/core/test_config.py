"""Tests for lockgate.core._config: both files, ${VAR} substitution, GATEWAY_* settings."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from lockgate.core._config import (
    Config,
    ConfigError,
    Problem,
    InstanceSpec,
    ServerSpec,
    Settings,
    load_config,
    settings_from_env,
)
from lockgate.core._identity import Rate
from lockgate.core._policy import Decision

SERVERS_FILE = ".mcp.json"
RULES_FILE = "rules.json"
ALLOW_ALL: dict[str, Any] = {"agents": {"a": {"allow": {"servers": ["*"]}}}}


def load(
    servers: Any,
    rules: Any = ALLOW_ALL,
    environ: dict[str, str] | None = None,
    settings: Settings | None = None,
) -> Config:
    """Load documents (dicts are serialised, strings passed as they are)."""
    return load_config(
        servers=servers if isinstance(servers, str) else json.dumps(servers),
        servers_file=SERVERS_FILE,
        rules=rules if isinstance(rules, str) else json.dumps(rules),
        rules_file=RULES_FILE,
        environ=environ or {},
        settings=settings,
    )


Found = list[tuple[str, str, str]]


def problems(servers: Any, rules: Any = ALLOW_ALL, environ: dict[str, str] | None = None) -> Found:
    """The errors loading gives, as (file, path, message)."""
    with pytest.raises(ConfigError) as info:
        load(servers, rules, environ)
    return [(p.file, p.path, p.message) for p in info.value.problems]


def warnings(servers: Any, rules: Any = ALLOW_ALL, environ: dict[str, str] | None = None) -> Found:
    """The warnings of a configuration that loads."""
    return [(p.file, p.path, p.message) for p in load(servers, rules, environ).warnings]


def server_problems(entry: Any, environ: dict[str, str] | None = None) -> list[tuple[str, str]]:
    """The errors for one server entry named ``s``, as (path, message)."""
    found = problems({"mcpServers": {"s": entry}}, environ=environ)
    assert all(file == SERVERS_FILE for file, _, _ in found)
    return [(path, message) for _, path, message in found]


def server_warnings(entry: Any) -> list[tuple[str, str]]:
    return [(path, message) for _, path, message in warnings({"mcpServers": {"s": entry}})]


STDIO = {"command": "srv"}
POOL = {
    **{"strategy": "least_connections", "isolation": "per_client"},
    **{"retry_calls": True, "max_timeout_ms": 1, "idle_timeout": 1.5},
    **{"health_interval": 0, "health_timeout": 1, "max_processes": 4},
}


# The happy path


PLAIN_URL = "http://localhost:8080/mcp"


def test_every_key() -> None:
    servers = {
        "mcpServers": {
            "github": {
                "type": "stdio",
                "command": "${BIN:-npx}",
                "args": ["-y", "@mcp/github", "--home=${HOME}"],
                "env": {"GITHUB_TOKEN": "${TOKEN}", "MODE": "${MODE:-ro}"},
                "cwd": "${HOME}/src",
                "description": "GitHub ${not substituted}",
                "timeout_ms": 5000,
                **POOL,
            },
            "remote": {
                "type": "streamable-http",
                "url": "https://${HOST:-mcp.example.com}/mcp",
                "headers": {"Authorization": "Bearer ${TOKEN}"},
                "description": "Remote",
                "timeout_ms": 1000,
            },
            "plain": {"type": "http", "url": PLAIN_URL},
        }
    }
    backend = {
        "allow": {"servers": ["github", "rem*"], "tools": {"github": ["get_*"]}},
        "deny": {"servers": ["plain"], "tools": {"github": ["delete_repo"]}},
    }
    rules = {
        "agents": {"backend": backend, "team.role": {"allow": {"servers": ["plain"]}}},
        "defaults": {"deny_on_missing_agent": False},
    }
    environ = {"HOME": "/home/u", "TOKEN": "t0k", "GATEWAY_INIT_STRATEGY": "lazy"}
    config = load(servers, rules, environ)

    assert list(config.servers) == ["github", "remote", "plain"]
    assert config.servers["github"] == ServerSpec(
        name="github",
        transport="stdio",
        command="npx",
        args=("-y", "@mcp/github", "--home=/home/u"),
        env={"GITHUB_TOKEN": "t0k", "MODE": "ro"},
        cwd="/home/u/src",
        description="GitHub ${not substituted}",
        timeout_ms=5000,
        strategy="least_connections",
        isolation="per_client",
        retry_calls=True,
        max_timeout_ms=1,
        idle_timeout=1.5,
        health_interval=0.0,
        health_timeout=1.0,
        max_processes=4,
    )
    assert config.servers["remote"] == ServerSpec(
        name="remote",
        transport="http",
        url="https://mcp.example.com/mcp",
        headers={"Authorization": "Bearer t0k"},
        description="Remote",
        timeout_ms=1000,
    )
    assert config.servers["plain"] == ServerSpec(name="plain", transport="http", url=PLAIN_URL)
    assert config.settings == Settings(init_strategy="lazy")
    assert config.warnings == ()
    assert config.policy.agents == frozenset({"backend", "team.role"})
    assert config.policy.deny_on_missing_agent is False
    decision = config.policy.decide("backend", "github", "delete_repo")
    assert decision == Decision(False, "agents.backend.deny.tools.github[0]")


def test_loaded_values_are_read_only() -> None:
    config = load({"mcpServers": {"s": {"command": "x", "env": {"A": "1"}}}})
    with pytest.raises(TypeError):
        config.servers["t"] = config.servers["s"]  # type: ignore[index]
    with pytest.raises(TypeError):
        config.servers["s"].env["A"] = "2"  # type: ignore[index]


def test_minimal_files() -> None:
    config = load({"mcpServers": {}}, {})
    assert config.servers == {}
    assert config.policy.agents == frozenset()
    assert config.policy.deny_on_missing_agent is True


def test_given_settings_win_over_the_environment() -> None:
    settings = Settings(debug=True)
    config = load({"mcpServers": {}}, environ={"GATEWAY_DEBUG": "nonsense"}, settings=settings)
    assert config.settings is settings


# ${VAR} substitution


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("${A}", "alpha"),
        ("${A:-x}", "alpha"),
        ("${UNSET:-fallback}", "fallback"),
        ("${UNSET:-}", ""),
        ("${UNSET:-a:-b c}", "a:-b c"),
        ("${EMPTY:-fallback}", ""),
        ("${A}/${B}", "alpha/beta"),
        ("$A and $ and $$ and $(x)", "$A and $ and $$ and $(x)"),
        ("cost: $5", "cost: $5"),
        ("${REF}", "${A}"),
        ("no references", "no references"),
    ],
)
def test_substitution(value: str, expected: str) -> None:
    environ = {"A": "alpha", "B": "beta", "EMPTY": "", "REF": "${A}"}
    config = load({"mcpServers": {"s": {"command": "x", "env": {"V": value}}}}, environ=environ)
    assert config.servers["s"].env == {"V": expected}


def test_unset_variables_are_errors_naming_server_and_key() -> None:
    servers = {
        "mcpServers": {
            "github": {
                "command": "${BIN}",
                "args": ["ok", "${ARG}"],
                "env": {"GITHUB_TOKEN": "${GITHUB_TOKEN}"},
                "cwd": "${DIR}",
            },
            "remote": {"url": "${URL}", "headers": {"Authorization": "Bearer ${TOKEN}"}},
        }
    }
    assert problems(servers) == [
        (SERVERS_FILE, "mcpServers.github.command", "${BIN} is not set"),
        (SERVERS_FILE, "mcpServers.github.args[1]", "${ARG} is not set"),
        (SERVERS_FILE, "mcpServers.github.env.GITHUB_TOKEN", "${GITHUB_TOKEN} is not set"),
        (SERVERS_FILE, "mcpServers.github.cwd", "${DIR} is not set"),
        (SERVERS_FILE, "mcpServers.remote.url", "${URL} is not set"),
        (SERVERS_FILE, "mcpServers.remote.headers.Authorization", "${TOKEN} is not set"),
    ]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("x ${A", "'${' has no closing '}'"),
        ("${1A}", "'${1A}' is not a reference: use ${VAR} or ${VAR:-default}"),
        ("${}", "'${}' is not a reference: use ${VAR} or ${VAR:-default}"),
        ("${A-b}", "'${A-b}' is not a reference: use ${VAR} or ${VAR:-default}"),
        ("${A:-${B}}", "${A:-...}: a default cannot hold another reference"),
    ],
)
def test_malformed_references(value: str, message: str) -> None:
    entry = {"command": "x", "env": {"K": value}}
    assert server_problems(entry, {"A": "a"}) == [("mcpServers.s.env.K", message)]


def test_an_array_with_a_wrong_item_is_not_expanded() -> None:
    # Its problems are reported once: the wrong item, not also the references of the others.
    assert server_problems({**STDIO, "args": ["${UNSET}", 3]}) == [("mcpServers.s.args[1]", "expected a string, got 3")]
    assert server_problems({**STDIO, "env": {"A": "${UNSET}", "B": 3}}) == [("mcpServers.s.env.B", "expected a string, got 3")]


def test_substitution_errors_never_quote_the_value() -> None:
    entry = {"url": "https://h/", "headers": {"Authorization": "Bearer s3cret ${MISSING}"}}
    with pytest.raises(ConfigError) as info:
        load({"mcpServers": {"s": entry}})
    assert "s3cret" not in str(info.value)


# Servers file: errors


def test_servers_top_level_errors() -> None:
    assert problems([]) == [(SERVERS_FILE, "", "expected an object, got an array")]
    assert problems("null") == [(SERVERS_FILE, "", "expected an object, got null")]
    assert problems({}) == [(SERVERS_FILE, "mcpServers", "is required")]
    assert problems({"mcpServers": []}) == [
        (SERVERS_FILE, "mcpServers", "expected an object, got an array")
    ]


BAD_URL = "expected an http:// or https:// URL with a host"
NOT_POSITIVE = "expected a positive integer, got"


@pytest.mark.parametrize(
    ("entry", "path", "message"),
    [
        ("npx", "", "expected an object, got a string"),
        ({}, "", "needs 'command' (stdio) or 'url' (HTTP)"),
        (
            {**STDIO, "url": "http://h/"},
            "",
            "give either 'command' (stdio) or 'url' (HTTP), not both",
        ),
        ({"command": 5}, ".command", "expected a string, got 5"),
        ({"command": " "}, ".command", "must not be empty"),
        ({"command": ""}, ".command", "must not be empty"),
        ({"command": "${E:-}"}, ".command", "must not be empty"),
        ({**STDIO, "args": "-v"}, ".args", "expected an array of strings, got a string"),
        ({**STDIO, "env": ["A=1"]}, ".env", "expected an object of strings, got an array"),
        ({**STDIO, "env": {"PORT": 8080}}, ".env.PORT", "expected a string, got 8080"),
        ({**STDIO, "cwd": False}, ".cwd", "expected a string, got false"),
        ({"url": 1}, ".url", "expected a string, got 1"),
        ({"url": "ftp://h/"}, ".url", BAD_URL),
        ({"url": "https://"}, ".url", BAD_URL),
        ({"url": "localhost:8080"}, ".url", BAD_URL),
        ({"url": "http://h:99999/"}, ".url", BAD_URL),
        ({"url": "http://[::1/"}, ".url", BAD_URL),
        ({"url": "http://h/", "headers": {"X-N": 1}}, ".headers.X-N", "expected a string, got 1"),
        ({**STDIO, "description": ["d"]}, ".description", "expected a string, got an array"),
        ({**STDIO, "timeout_ms": 0}, ".timeout_ms", f"{NOT_POSITIVE} 0"),
        ({**STDIO, "timeout_ms": -5}, ".timeout_ms", f"{NOT_POSITIVE} -5"),
        ({**STDIO, "timeout_ms": 1.5}, ".timeout_ms", f"{NOT_POSITIVE} 1.5"),
        ({**STDIO, "timeout_ms": True}, ".timeout_ms", f"{NOT_POSITIVE} true"),
        ({**STDIO, "timeout_ms": None}, ".timeout_ms", f"{NOT_POSITIVE} null"),
        ({**STDIO, "timeout_ms": "100"}, ".timeout_ms", f"{NOT_POSITIVE} a string"),
        (
            {"type": "sse", "url": "http://h/sse"},
            ".type",
            "the SSE transport is not supported; use Streamable HTTP",
        ),
        (
            {"type": "websocket", "url": "http://h/"},
            ".type",
            "unknown type 'websocket': use 'stdio', 'http' or 'streamable-http'",
        ),
        ({"type": 1, **STDIO}, ".type", "expected a string, got 1"),
        ({"type": "stdio", "url": "http://h/"}, ".type", "type 'stdio' needs 'command', not 'url'"),
        ({"type": "http", **STDIO}, ".type", "type 'http' needs 'url', not 'command'"),
        (
            {"type": "streamable-http", **STDIO},
            ".type",
            "type 'streamable-http' needs 'url', not 'command'",
        ),
    ],
)
def test_server_entry_errors(entry: Any, path: str, message: str) -> None:
    assert server_problems(entry) == [(f"mcpServers.s{path}", message)]


def test_every_bad_argument_is_reported() -> None:
    assert server_problems({**STDIO, "args": ["-v", 3, None]}) == [
        ("mcpServers.s.args[1]", "expected a string, got 3"),
        ("mcpServers.s.args[2]", "expected a string, got null"),
    ]


def test_server_names() -> None:
    assert problems({"mcpServers": {"": STDIO, "my server": {}}}) == [
        (SERVERS_FILE, 'mcpServers[""]', "a server name must not be empty"),
        (SERVERS_FILE, 'mcpServers["my server"]', "needs 'command' (stdio) or 'url' (HTTP)"),
    ]


# Servers file: warnings


def test_unknown_keys_are_errors() -> None:
    servers = {"$schema": "x", "mcpServers": {"s": {**STDIO, "autoStart": True, "descripton": ""}}}
    assert problems(servers) == [
        (SERVERS_FILE, '["$schema"]', "unknown key '$schema'"),
        (SERVERS_FILE, "mcpServers.s.autoStart", "unknown key 'autoStart'"),
        (SERVERS_FILE, "mcpServers.s.descripton", "unknown key 'descripton' (did you mean 'description'?)"),
    ]


def test_keys_of_the_other_transport_warn_and_are_ignored() -> None:
    stdio = {**STDIO, "headers": {"A": "1"}}
    assert server_warnings(stdio) == [
        ("mcpServers.s.headers", "'headers' applies only to HTTP servers and is ignored"),
    ]
    http = {"url": "http://h/", "env": {"A": 1}, "args": [], "cwd": "/"}
    assert server_warnings(http) == [
        ("mcpServers.s.env", "'env' applies only to stdio servers and is ignored"),
        ("mcpServers.s.args", "'args' applies only to stdio servers and is ignored"),
        ("mcpServers.s.cwd", "'cwd' applies only to stdio servers and is ignored"),
    ]
    spec = load({"mcpServers": {"s": http}}).servers["s"]
    assert (spec.env, spec.args, spec.cwd) == ({}, (), None)


def test_instances_each_carry_how_to_start_them() -> None:
    entry = {
        "instances": [
            {"command": "srv", "args": ["--port", "${P:-1}"], "env": {"K": "v"}},
            {"url": "http://h:1/mcp", "headers": {"A": "b"}, "weight": 3, "type": "http"},
        ],
        "strategy": "weighted",
        "description": "two",
    }
    spec = load({"mcpServers": {"s": entry}}).servers["s"]
    first = ServerSpec(name="s", transport="stdio", command="srv", args=("--port", "1"), env={"K": "v"})
    second = ServerSpec(name="s", transport="http", url="http://h:1/mcp", headers={"A": "b"})
    assert spec.instances == (InstanceSpec(spec=first, id="0"), InstanceSpec(spec=second, weight=3, id="1"))
    assert spec.launch_specs() == spec.instances
    # The entry shows its first instance, for list_servers and the CLI.
    assert (spec.transport, spec.command, spec.strategy, spec.description) == ("stdio", "srv", "weighted", "two")


def test_a_server_without_instances_is_its_own_instance() -> None:
    spec = load({"mcpServers": {"s": STDIO}}).servers["s"]
    assert spec.launch_specs() == (InstanceSpec(spec=spec, id="0"),)
    assert (spec.strategy, spec.isolation, spec.retry_calls, spec.idle_timeout, spec.max_processes) == (
        "round_robin", "shared", False, None, None,
    )


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ({"instances": []}, [("mcpServers.s.instances", "expected a non-empty array of objects, got an array")]),
        ({"instances": [STDIO], **STDIO}, [("mcpServers.s", "give either 'instances' or 'command', not both")]),
        ({"instances": [STDIO, 3]}, [("mcpServers.s.instances[1]", "expected an object, got 3")]),
        ({"instances": [{}]}, [("mcpServers.s.instances[0]", "needs 'command' (stdio) or 'url' (HTTP)")]),
        ({"instances": [{**STDIO, "weight": 0}]}, [("mcpServers.s.instances[0].weight", "expected a positive integer, got 0")]),
        ({**STDIO, "strategy": "fastest"}, [("mcpServers.s.strategy", "'fastest' is not a strategy: use round_robin, least_connections, weighted, health_based, random")]),
        ({**STDIO, "isolation": "per_agent"}, [("mcpServers.s.isolation", "'per_agent' is not an isolation: use 'shared' or 'per_client'")]),
        ({**STDIO, "retry_calls": "yes"}, [("mcpServers.s.retry_calls", "expected true or false, got a string")]),
        ({**STDIO, "max_processes": 0}, [("mcpServers.s.max_processes", "expected a positive integer, got 0")]),
        ({**STDIO, "max_timeout_ms": 1.5}, [("mcpServers.s.max_timeout_ms", "expected a positive integer, got 1.5")]),
        ({**STDIO, "idle_timeout": 0}, [("mcpServers.s.idle_timeout", "expected a positive number of seconds, got 0")]),
        ({**STDIO, "health_interval": -1}, [("mcpServers.s.health_interval", "expected a number of seconds, 0 or more, got -1")]),
        ({**STDIO, "health_timeout": True}, [("mcpServers.s.health_timeout", "expected a positive number of seconds, got true")]),
    ],
)
def test_pool_key_errors(entry: dict[str, Any], expected: list[tuple[str, str]]) -> None:
    assert server_problems(entry) == expected


def test_unknown_keys_of_an_instance_are_errors() -> None:
    assert server_problems({"instances": [{**STDIO, "colour": "red", "wieght": 2}]}) == [
        ("mcpServers.s.instances[0].colour", "unknown key 'colour'"),
        ("mcpServers.s.instances[0].wieght", "unknown key 'wieght' (did you mean 'weight'?)"),
    ]


# Rules file: errors and warnings


STRING = "expected a string, got"
OBJECT = "expected an object, got"


def agent_a(body: Any) -> dict[str, Any]:
    return {"agents": {"a": body}}


@pytest.mark.parametrize(
    ("rules", "path", "message"),
    [
        ([], "", "expected an object, got an array"),
        ({"agents": []}, "agents", "expected an object, got an array"),
        (
            {"agents": {"bad id": {}}},
            'agents["bad id"]',
            "agent id 'bad id' is invalid: use 1 to 128 letters, digits, '-', '_' and '.'",
        ),
        (agent_a([]), "agents.a", "expected an object, got an array"),
        (agent_a({"allow": True}), "agents.a.allow", "expected an object, got true"),
        (
            agent_a({"deny": {"servers": "db"}}),
            "agents.a.deny.servers",
            "expected an array of strings, got a string",
        ),
        (agent_a({"allow": {"servers": ["*", 2]}}), "agents.a.allow.servers[1]", f"{STRING} 2"),
        (agent_a({"allow": {"tools": []}}), "agents.a.allow.tools", f"{OBJECT} an array"),
        (
            agent_a({"deny": {"tools": {"db": "drop"}}}),
            "agents.a.deny.tools.db",
            "expected an array of strings, got a string",
        ),
        (agent_a({"deny": {"tools": {"d": [None]}}}), "agents.a.deny.tools.d[0]", f"{STRING} null"),
        (agent_a({"rate": 120}), "agents.a.rate", "expected a string, got 120"),
        *(
            (agent_a({"mode": mode}), "agents.a.mode", f"{mode!r} is not a mode: use 'on_demand', 'aggregate' or 'auto'")
            for mode in ["aggregated", "on-demand", "Aggregate", "", None, True]
        ),
        (agent_a({"allow": {"resources": []}}), "agents.a.allow.resources", f"{OBJECT} an array"),
        (agent_a({"deny": {"prompts": {"db": "x"}}}), "agents.a.deny.prompts.db", "expected an array of strings, got a string"),
        (agent_a({"deny": {"resources": {"d": [1]}}}), "agents.a.deny.resources.d[0]", f"{STRING} 1"),
        *(
            (agent_a({"rate": rate}), "agents.a.rate", f"{rate!r} is not a rate: use COUNT/UNIT, e.g. 120/min (units s, min, h)")
            for rate in ["fast", "120", "0/min", "10/day", " 10/s", "1e3/h"]
        ),
        ({"defaults": []}, "defaults", "expected an object, got an array"),
        (
            {"defaults": {"deny_on_missing_agent": "no"}},
            "defaults.deny_on_missing_agent",
            "expected a boolean, got a string",
        ),
    ],
)
def test_rules_errors(rules: Any, path: str, message: str) -> None:
    assert problems({"mcpServers": {}}, rules) == [(RULES_FILE, path, message)]


def test_an_agents_rate_is_its_rate_limit() -> None:
    rules = {"agents": {"a": {"rate": "120/min"}, "b": {"rate": "5/second"}, "c": {}}}
    policy = load({"mcpServers": {}}, rules).policy
    assert (policy.rate("a"), policy.rate("b"), policy.rate("c"), policy.rate("ghost")) == (
        Rate(120, 60.0), Rate(5, 1.0), None, None,
    )


def test_an_agents_mode() -> None:
    rules = {"agents": {"a": {"mode": "aggregate"}, "b": {"mode": "on_demand"}, "c": {}}}
    policy = load({"mcpServers": {}}, rules).policy
    assert (policy.mode("a"), policy.mode("b"), policy.mode("c"), policy.mode("ghost")) == (
        "aggregate", "on_demand", None, None,
    )


def test_rules_unknown_keys_are_errors() -> None:
    rules = {
        "version": 1,
        "agents": {"a": {"allow": {"servers": [], "sampling": []}, "note": "", "dney": {}}},
        "defaults": {"log": True},
    }
    assert problems({"mcpServers": {}}, rules) == [
        (RULES_FILE, "version", "unknown key 'version'"),
        (RULES_FILE, "agents.a.allow.sampling", "unknown key 'sampling'"),
        (RULES_FILE, "agents.a.note", "unknown key 'note'"),
        (RULES_FILE, "agents.a.dney", "unknown key 'dney' (did you mean 'deny'?)"),
        (RULES_FILE, "defaults.log", "unknown key 'log'"),
    ]


def test_rules_naming_unconfigured_servers_warn() -> None:
    servers = {"mcpServers": {"git": STDIO}}
    rules = {
        "agents": {
            "backend": {
                "allow": {
                    "servers": ["postgres", "git", "pg*"],
                    "tools": {"redis": ["get"], "git": []},
                },
                "deny": {"servers": ["mysql"]},
            }
        }
    }
    not_configured = "is not configured in .mcp.json"
    assert warnings(servers, rules) == [
        (RULES_FILE, "agents.backend.allow.servers[0]", f"server 'postgres' {not_configured}"),
        (RULES_FILE, "agents.backend.allow.tools.redis", f"server 'redis' {not_configured}"),
        (RULES_FILE, "agents.backend.deny.servers[0]", f"server 'mysql' {not_configured}"),
    ]


def test_default_agent_not_in_rules_warns() -> None:
    rules = {**ALLOW_ALL, "defaults": {"deny_on_missing_agent": False}}
    environ = {"GATEWAY_DEFAULT_AGENT": "ghost"}
    assert warnings({"mcpServers": {}}, rules, environ=environ) == [
        ("environment", "GATEWAY_DEFAULT_AGENT", "agent 'ghost' is not defined in rules.json")
    ]
    environ = {"GATEWAY_DEFAULT_AGENT": "a"}
    assert warnings({"mcpServers": {}}, rules, environ=environ) == []


# Invalid JSON, and collecting everything


EXPECTING_NAME = "invalid JSON: Expecting property name enclosed in double quotes"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{", f"{EXPECTING_NAME} (line 1, column 2)"),
        # Named where a person fixes them, not where the parser gave up.
        ('{\n  "a": 1,\n}', "invalid JSON: a trailing comma before '}' (line 2, column 9)"),
        ('{"a": [1, 2, ]}', "invalid JSON: a trailing comma before ']' (line 1, column 12)"),
        ('{\n  // the servers\n  "a": 1}', "invalid JSON: comments are not allowed in JSON (line 2, column 3)"),
        ('{"a": 1 /* one */}', "invalid JSON: comments are not allowed in JSON (line 1, column 9)"),
        ('# servers\n{}', "invalid JSON: comments are not allowed in JSON (line 1, column 1)"),
        ("", "invalid JSON: Expecting value (line 1, column 1)"),
        ("1" * 5000, "invalid JSON: a number has too many digits"),
        ("[" * 100_000, "invalid JSON: nested too deeply"),
    ],
)
def test_invalid_json(text: str, message: str) -> None:
    assert problems(text) == [(SERVERS_FILE, "", message)]
    assert problems({"mcpServers": {}}, text) == [(RULES_FILE, "", message)]


def test_json_that_cannot_be_written_back_is_refused_where_it_stands() -> None:
    servers = '{"mcpServers": {"a": {"command": "x", "description": "\\ud800", "timeout_ms": NaN}}}'
    assert problems(servers) == [
        (SERVERS_FILE, "mcpServers.a.description", "invalid JSON: a string holds a lone UTF-16 surrogate"),
        (SERVERS_FILE, "mcpServers.a.timeout_ms", "invalid JSON: NaN is not JSON"),
    ]
    assert problems({"mcpServers": {}}, '{"agents": {"a": {"allow": {"servers": [1e400]}}}}') == [
        (RULES_FILE, "agents.a.allow.servers[0]", "invalid JSON: a number out of the range of a double"),
    ]


def test_every_problem_is_collected() -> None:
    servers = {"mcpServers": {"a": {}, "b": {"url": "ftp://x"}, "c": {**STDIO, "headers": {}, "junk": 1}}}
    rules = {"agents": {"x y": {}, "b": {"allow": {"servers": ["nowhere"]}}}}
    environ = {"GATEWAY_DEBUG": "maybe", "GATEWAY_MAX_MESSAGE_BYTES": "-1"}
    with pytest.raises(ConfigError) as info:
        load(servers, rules, environ)
    assert [(p.file, p.path) for p in info.value.problems] == [
        (SERVERS_FILE, "mcpServers.a"),
        (SERVERS_FILE, "mcpServers.b.url"),
        (SERVERS_FILE, "mcpServers.c.junk"),
        (RULES_FILE, 'agents["x y"]'),
        ("environment", "GATEWAY_DEBUG"),
        ("environment", "GATEWAY_MAX_MESSAGE_BYTES"),
    ]
    assert info.value.warnings == (
        Problem(file=SERVERS_FILE, path="mcpServers.c.headers", message="'headers' applies only to HTTP servers and is ignored"),
    )
    assert str(info.value).splitlines()[0] == (
        ".mcp.json: mcpServers.a: needs 'command' (stdio) or 'url' (HTTP)"
    )


def test_problems_come_in_the_order_of_the_file() -> None:
    entry = {"url": "ftp://h/", "timeout_ms": 0, "type": "sse", "command": 5}
    assert server_problems(entry) == [
        ("mcpServers.s", "give either 'command' (stdio) or 'url' (HTTP), not both"),
        ("mcpServers.s.url", BAD_URL),
        ("mcpServers.s.timeout_ms", f"{NOT_POSITIVE} 0"),
        ("mcpServers.s.type", "the SSE transport is not supported; use Streamable HTTP"),
        ("mcpServers.s.command", "expected a string, got 5"),
    ]


def test_unknown_keys_are_errors_in_both_files_and_other_transport_keys_stay_warnings() -> None:
    assert problems({"mcpServers": {"s": {**STDIO, "colour": "red"}}}, {"version": 1}) == [
        (SERVERS_FILE, "mcpServers.s.colour", "unknown key 'colour'"),
        (RULES_FILE, "version", "unknown key 'version'"),
    ]
    assert server_warnings({**STDIO, "headers": {}}) == [
        ("mcpServers.s.headers", "'headers' applies only to HTTP servers and is ignored")
    ]


def test_pydantic_is_imported_when_a_configuration_is_loaded_not_with_the_core() -> None:
    script = (
        "import sys, lockgate.core\n"
        "assert 'pydantic' not in sys.modules\n"
        "lockgate.core.settings_from_env({})\n"
        "assert 'pydantic' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True)


def test_both_files_invalid_json() -> None:
    assert problems("{", "[") == [
        (SERVERS_FILE, "", f"{EXPECTING_NAME} (line 1, column 2)"),
        (RULES_FILE, "", "invalid JSON: Expecting value (line 1, column 2)"),
    ]


def test_problem_str() -> None:
    assert str(Problem(file="f.json", path="a.b[0]", message="bad")) == "f.json: a.b[0]: bad"
    assert str(Problem(file="f.json", path="", message="bad")) == "f.json: bad"


# settings_from_env


def env_problems(environ: dict[str, str]) -> list[tuple[str, str, str]]:
    with pytest.raises(ConfigError) as info:
        settings_from_env(environ)
    return [(p.file, p.path, p.message) for p in info.value.problems]


def test_settings_defaults() -> None:
    assert settings_from_env({}) == Settings()
    assert (Settings().audit_log, Settings().max_message_bytes) == ("./logs/audit.jsonl", 2**24)


def test_settings_from_every_variable() -> None:
    environ = {
        "GATEWAY_DEFAULT_AGENT": "team.role",
        "GATEWAY_DEBUG": "true",
        "GATEWAY_AUDIT_LOG": "/var/log/lockgate.jsonl",
        "GATEWAY_INIT_STRATEGY": "lazy",
        "GATEWAY_MAX_MESSAGE_BYTES": "1024",
        "GATEWAY_LOG_LEVEL": "Info",
        "GATEWAY_LOG_FORMAT": " JSON ",
        "GATEWAY_STRICT": "yes",
        "GATEWAY_AUTH": " Required",
        "GATEWAY_RATE_LIMIT": "120/min",
        "GATEWAY_MODE": "Aggregate",
        "GATEWAY_PREFIX": " always",
        "GATEWAY_GATEWAY_TOOLS": "on",
        "GATEWAY_NAME_SEPARATOR": " .",
        "GATEWAY_MCP_CONFIG": "servers.json",  # the shell's, not a setting
        "GATEWAY_API_KEY": "lg_not_a_setting",  # the shell's too
        "UNRELATED": "x",
    }
    assert settings_from_env(environ) == Settings(
        default_agent="team.role",
        debug=True,
        strict=True,
        audit_log="/var/log/lockgate.jsonl",
        init_strategy="lazy",
        max_message_bytes=1024,
        log_level="info",
        log_format="json",
        auth="required",
        rate_limit=Rate(120, 60.0),
        mode="aggregate",
        prefix="always",
        gateway_tools=True,
        name_separator=".",
    )


def test_log_variables_are_checked() -> None:
    assert env_problems({"GATEWAY_LOG_LEVEL": "loud", "GATEWAY_LOG_FORMAT": "xml"}) == [
        ("environment", "GATEWAY_LOG_LEVEL", "'loud' is not a level: use debug, info, warning or error"),
        ("environment", "GATEWAY_LOG_FORMAT", "'xml' is not a format: use 'text' or 'json'"),
    ]


def test_health_settings() -> None:
    assert (Settings().health_interval, Settings().health_timeout) == (30.0, 10.0)
    settings = settings_from_env({"GATEWAY_HEALTH_INTERVAL": "0", "GATEWAY_HEALTH_TIMEOUT": "2.5"})
    assert (settings.health_interval, settings.health_timeout) == (0.0, 2.5)
    assert env_problems({"GATEWAY_HEALTH_INTERVAL": "-1", "GATEWAY_HEALTH_TIMEOUT": "0"}) == [
        ("environment", "GATEWAY_HEALTH_INTERVAL", "'-1' is not a number of seconds, 0 or more"),
        ("environment", "GATEWAY_HEALTH_TIMEOUT", "'0' is not a positive number of seconds"),
    ]


def test_empty_variables_count_as_unset() -> None:
    names = (
        "DEFAULT_AGENT DEBUG STRICT AUDIT_LOG INIT_STRATEGY MAX_MESSAGE_BYTES LOG_LEVEL LOG_FORMAT HEALTH_INTERVAL"
        " HEALTH_TIMEOUT MCP_CONFIG RULES AUTH RATE_LIMIT API_KEY JWT_SECRET JWT_ISSUER JWT_AUDIENCE JWT_JWKS"
        " JWT_ROLE_CLAIM JWT_AGENTS_CLAIM TOKEN_TTL MODE PREFIX GATEWAY_TOOLS NAME_SEPARATOR CONTEXT_WINDOW"
        " AUTO_THRESHOLD TOKENIZER"
    ).split()
    assert settings_from_env({f"GATEWAY_{name}": "" for name in names}) == Settings()


@pytest.mark.parametrize(
    ("value", "debug"),
    [*((v, True) for v in ["1", "true", "TRUE", " yes ", "On"])]
    + [*((v, False) for v in ["0", "false", "NO", "off", ""])],
)
def test_debug(value: str, debug: bool) -> None:
    assert settings_from_env({"GATEWAY_DEBUG": value}).debug is debug


def test_debug_flag_forces_debug_on() -> None:
    assert settings_from_env({"GATEWAY_DEBUG": "0"}, debug=True).debug is True
    assert settings_from_env({}, debug=True).debug is True


@pytest.mark.parametrize(
    ("value", "strategy"), [("eager", "eager"), ("LAZY", "lazy"), (" lazy ", "lazy")]
)
def test_init_strategy(value: str, strategy: str) -> None:
    assert settings_from_env({"GATEWAY_INIT_STRATEGY": value}).init_strategy == strategy


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        (
            "GATEWAY_DEFAULT_AGENT",
            "a b",
            "'a b' is not a valid agent id: use 1 to 128 letters, digits, '-', '_' and '.'",
        ),
        ("GATEWAY_DEBUG", "maybe", "'maybe' is not a boolean: use 1/true/yes/on or 0/false/no/off"),
        ("GATEWAY_INIT_STRATEGY", "x", "'x' is not a strategy: use 'eager' or 'lazy'"),
        ("GATEWAY_AUTH", "off", "'off' is not an authentication mode: use 'required' or 'none'"),
        ("GATEWAY_AUTH", "yes", "'yes' is not an authentication mode: use 'required' or 'none'"),
        *(
            ("GATEWAY_RATE_LIMIT", value, f"{value!r} is not a rate: use COUNT/UNIT, e.g. 120/min (units s, min, h)")
            for value in ["120", "0/s", "-1/min", "10/day", "1.5/s", "10 / min"]
        ),
        *(
            ("GATEWAY_MAX_MESSAGE_BYTES", value, f"{value!r} is not a positive integer")
            for value in ["0", "-1", "+5", "1_000", "1.5", "16MiB", "\u0661\u0662"]
        ),
        *(
            ("GATEWAY_MODE", value, f"{value!r} is not a mode: use 'on_demand', 'aggregate' or 'auto'")
            for value in ["aggregated", "on-demand", "ondemand", "both"]
        ),
        *(
            ("GATEWAY_PREFIX", value, f"{value!r} is not a prefix rule: use 'auto', 'always' or 'never'")
            for value in ["yes", "on", "sometimes", "server"]
        ),
        ("GATEWAY_GATEWAY_TOOLS", "both", "'both' is not a boolean: use 1/true/yes/on or 0/false/no/off"),
        *(
            ("GATEWAY_TOKENIZER", value, f"{value!r} is not a tokenizer: use 'cl100k_base' or 'estimate'")
            for value in ["tiktoken", "cl100k", "bytes"]
        ),
        *(
            ("GATEWAY_CONTEXT_WINDOW", value, f"{value!r} is not a positive integer")
            for value in ["0", "-5", "200k", "1e6", "128_000"]
        ),
        *(
            ("GATEWAY_AUTO_THRESHOLD", value, f"{value!r} is not a fraction above 0 and at most 1, e.g. 0.1")
            for value in ["0", "0.0", "1.5", "10%", "-0.1", ".1", "nan", "inf"]
        ),
        *(
            (
                "GATEWAY_NAME_SEPARATOR",
                value,
                f"{value!r} is not a name separator: use 1 to 4 letters, digits, '_', '.' or '-' (what a tool name may hold)",
            )
            for value in ["::", "/", "_ _", "_____", "→", "a\tb", "__\u00e9"]
        ),
    ],
)
def test_settings_errors(name: str, value: str, message: str) -> None:
    assert env_problems({name: value}) == [("environment", name, message)]


def test_aggregate_settings_defaults() -> None:
    settings = Settings()
    assert (settings.mode, settings.prefix, settings.gateway_tools, settings.name_separator) == (
        "on_demand", "auto", False, "__",
    )
    assert (settings.context_window, settings.auto_threshold, settings.tokenizer) == (200_000, 0.10, "cl100k_base")


def test_an_agent_may_be_auto() -> None:
    config = load({"mcpServers": {"db": STDIO}}, rules={"agents": {"a": {"mode": "auto", "allow": {"servers": ["db"]}}}})
    assert config.policy.mode("a") == "auto"


@pytest.mark.parametrize(
    ("name", "value", "field", "expected"),
    [
        ("GATEWAY_MODE", "on_demand", "mode", "on_demand"),
        ("GATEWAY_MODE", " AGGREGATE ", "mode", "aggregate"),
        ("GATEWAY_MODE", "Auto", "mode", "auto"),
        ("GATEWAY_CONTEXT_WINDOW", "1000000", "context_window", 1_000_000),
        ("GATEWAY_CONTEXT_WINDOW", " 128000 ", "context_window", 128_000),
        ("GATEWAY_CONTEXT_WINDOW", "", "context_window", 200_000),  # blank: unset
        ("GATEWAY_AUTO_THRESHOLD", "0.25", "auto_threshold", 0.25),
        ("GATEWAY_AUTO_THRESHOLD", "1", "auto_threshold", 1.0),
        ("GATEWAY_AUTO_THRESHOLD", " ", "auto_threshold", 0.10),  # blank: unset
        ("GATEWAY_TOKENIZER", "Estimate", "tokenizer", "estimate"),
        ("GATEWAY_TOKENIZER", "", "tokenizer", "cl100k_base"),
        ("GATEWAY_PREFIX", "auto", "prefix", "auto"),
        ("GATEWAY_PREFIX", "Always", "prefix", "always"),
        ("GATEWAY_PREFIX", "never", "prefix", "never"),
        *(("GATEWAY_GATEWAY_TOOLS", value, "gateway_tools", True) for value in ["1", "true", "YES", " on "]),
        *(("GATEWAY_GATEWAY_TOOLS", value, "gateway_tools", False) for value in ["0", "false", "no", "OFF", ""]),
        # The separator keeps its case: it is part of every aggregated name.
        *(("GATEWAY_NAME_SEPARATOR", value, "name_separator", value) for value in ["_", "__", ".", "-", "X9", "_.-_"]),
        ("GATEWAY_NAME_SEPARATOR", " -- ", "name_separator", "--"),
        ("GATEWAY_NAME_SEPARATOR", "  ", "name_separator", "__"),  # blank: unset
    ],
)
def test_aggregate_settings(name: str, value: str, field: str, expected: object) -> None:
    assert getattr(settings_from_env({name: value}), field) == expected


@pytest.mark.parametrize("prefix", ["auto", "always", "never"])
@pytest.mark.parametrize("servers", [{}, {"db": STDIO}])
def test_every_prefix_rule_takes_one_server_or_none(prefix: str, servers: dict[str, Any]) -> None:
    config = load({"mcpServers": servers}, environ={"GATEWAY_PREFIX": prefix})
    assert config.settings.prefix == prefix and config.warnings == ()


def test_prefix_never_with_more_than_one_server_is_an_error() -> None:
    never = "'never' needs exactly one server, and .mcp.json configures {}: the names of two servers' tools may clash unprefixed; use 'auto' or 'always'"
    two = {"mcpServers": {"db": STDIO, "git": STDIO}}
    assert problems(two, environ={"GATEWAY_PREFIX": "never"}) == [("environment", "GATEWAY_PREFIX", never.format(2))]
    three = {"mcpServers": {"db": STDIO, "git": STDIO, "notes": STDIO}}
    assert problems(three, environ={"GATEWAY_PREFIX": " Never "}) == [("environment", "GATEWAY_PREFIX", never.format(3))]
    # Settings handed in are held to it too, and the other rules take any number of servers.
    with pytest.raises(ConfigError) as info:
        load(two, settings=Settings(prefix="never"))
    assert [(p.path, p.message) for p in info.value.problems] == [("GATEWAY_PREFIX", never.format(2))]
    assert load(three, environ={"GATEWAY_PREFIX": "always"}).settings.prefix == "always"
    assert load(three, environ={"GATEWAY_PREFIX": "auto"}).settings.prefix == "auto"


def test_prefix_never_is_checked_with_the_environment_once_the_servers_are_known() -> None:
    two = {"mcpServers": {"db": STDIO, "git": STDIO}}
    environ = {"GATEWAY_PREFIX": "never", "GATEWAY_DEFUALT_AGENT": "a"}
    found = problems(two, {"agents": {"a": {"mode": "x"}}}, environ)
    assert [(file, path) for file, path, _ in found] == [(RULES_FILE, "agents.a.mode"), ("environment", "GATEWAY_PREFIX")]
    # Not counted in a servers file with errors, nor checked when the variables have errors of their own.
    broken = {"mcpServers": {"db": STDIO, "git": {"command": "${NOPE}"}}}
    assert [path for _, path, _ in problems(broken, environ=environ)] == ["mcpServers.git.command"]
    environ = {"GATEWAY_PREFIX": "never", "GATEWAY_DEBUG": "maybe"}
    assert [path for _, path, _ in problems(two, environ=environ)] == ["GATEWAY_DEBUG"]


def test_settings_errors_are_all_collected() -> None:
    environ = {"GATEWAY_DEBUG": "2", "GATEWAY_INIT_STRATEGY": "x", "GATEWAY_DEFAULT_AGENT": "?"}
    assert [path for _, path, _ in env_problems(environ)] == [
        "GATEWAY_DEFAULT_AGENT",
        "GATEWAY_DEBUG",
        "GATEWAY_INIT_STRATEGY",
    ]


# -- mappings instead of text ---------------------------------------------------


def test_a_mapping_loads_as_its_text_would() -> None:
    servers = {"mcpServers": {"db": {"command": "${BIN}/db", "env": {"K": "v"}}}}
    from_text = load(servers, ALLOW_ALL, {"BIN": "/opt"})
    from_mappings = load_config(servers=servers, rules=ALLOW_ALL, environ={"BIN": "/opt"})
    assert (from_mappings.servers, from_mappings.settings, from_mappings.warnings) == (
        from_text.servers, from_text.settings, from_text.warnings,
    )
    assert from_mappings.policy.agents == from_text.policy.agents
    assert from_mappings.servers["db"].command == "/opt/db"


def test_a_mapping_meets_the_same_strict_checks_as_text() -> None:
    def mapping_problems(servers: Any, rules: Any) -> list[tuple[str, str, str]]:
        with pytest.raises(ConfigError) as info:
            load_config(servers=servers, rules=rules, environ={})
        return [(p.file, p.path, p.message) for p in info.value.problems]

    nan = {"mcpServers": {"db": {"command": "db", "timeout_ms": float("nan")}}}
    assert mapping_problems(nan, ALLOW_ALL) == [("servers", "mcpServers.db.timeout_ms", "invalid JSON: NaN is not JSON")]
    surrogate = {"agents": {"a": {"allow": {"servers": ["\ud800"]}}}}
    [(file, path, message)] = mapping_problems({"mcpServers": {}}, surrogate)
    assert (file, path) == ("rules", "agents.a.allow.servers[0]") and "surrogate" in message
    [(file, path, message)] = mapping_problems({"mcpServers": {"db": {"command": object()}}}, ALLOW_ALL)
    assert (file, path) == ("servers", "") and message.startswith("not a JSON document: Object of type object")


def test_relative_paths_resolve_against_the_servers_files_folder() -> None:
    servers = {"mcpServers": {
        "plain": {"command": "python3", "args": ["servers/a.py"]},
        "sub": {"command": "./run.sh", "cwd": "tools/../bin"},
        "absolute": {"command": "x", "cwd": "/srv/x"},
        "pooled": {"instances": [{"command": "x"}, {"command": "y", "cwd": "two"}]},
        "remote": {"url": "https://h/mcp"},
    }}
    config = load_config(servers=servers, rules=ALLOW_ALL, environ={}, base_dir="/home/me/project")
    cwd = {name: spec.cwd for name, spec in config.servers.items()}
    assert cwd == {"plain": "/home/me/project", "sub": "/home/me/project/bin", "absolute": "/srv/x",
                   "pooled": "/home/me/project", "remote": None}
    assert [i.spec.cwd for i in config.servers["pooled"].instances] == ["/home/me/project", "/home/me/project/two"]
    # Without a folder, cwd stays as written: the gateway's working directory decides.
    assert load_config(servers=servers, rules=ALLOW_ALL, environ={}).servers["plain"].cwd is None
