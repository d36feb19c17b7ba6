"""Tests for config_schema and the JSON Schemas shipped in lockgate/core/schemas/."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import pytest

from lockgate.core import ConfigError, config_schema, load_config

import jsonschema  # installed with mcp, a test dependency

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
KINDS: list[Literal["servers", "rules"]] = ["servers", "rules"]


def shipped(kind: str) -> str:
    return (resources.files("lockgate.core") / "schemas" / f"{kind}.schema.json").read_text(encoding="utf-8")


@pytest.mark.parametrize("kind", KINDS)
def test_the_shipped_schema_is_what_the_types_generate(kind: Literal["servers", "rules"]) -> None:
    regenerate = (
        f"python -c 'import json; from lockgate.core import config_schema; "
        f'print(json.dumps(config_schema("{kind}"), indent=2))\' > core/schemas/{kind}.schema.json'
    )
    assert shipped(kind) == json.dumps(config_schema(kind), indent=2) + "\n", f"regenerate it: {regenerate}"


@pytest.mark.parametrize("kind", KINDS)
def test_the_schema_is_a_valid_draft_2020_12_schema(kind: Literal["servers", "rules"]) -> None:
    schema = config_schema(kind)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)


def test_an_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="no schema for 'policy'"):
        config_schema("policy")  # type: ignore[arg-type]


def schema_accepts(kind: Literal["servers", "rules"], doc: Any) -> bool:
    return jsonschema.Draft202012Validator(config_schema(kind)).is_valid(doc)


def test_the_bundled_examples_are_valid() -> None:
    assert schema_accepts("servers", json.loads((EXAMPLES / ".mcp.json").read_text()))
    assert schema_accepts("rules", json.loads((EXAMPLES / ".mcp-gateway-rules.json").read_text()))


STDIO = {"command": "srv"}
HTTP = {"url": "https://mcp.example.com/mcp"}


def gateway_accepts(servers: Any = None, rules: Any = None) -> bool:
    """Whether the gateway loads the documents without an error or a warning."""
    try:
        config = load_config(
            servers=json.dumps({"mcpServers": {"db": STDIO}} if servers is None else servers),
            servers_file=".mcp.json",
            rules=json.dumps({} if rules is None else rules),
            rules_file="rules.json",
            environ={"TOKEN": "t"},
        )
    except ConfigError:
        return False
    return not config.warnings


# The schema and the gateway agree on these documents: what the schema
# accepts loads without an error or a warning, what it refuses gives one.
SERVERS: list[tuple[dict[str, Any], bool]] = [
    ({"s": {**STDIO, "args": ["-v"], "env": {"K": "${TOKEN}"}, "cwd": "/", "type": "stdio"}}, True),
    ({"s": {**HTTP, "headers": {"Authorization": "Bearer ${TOKEN}"}, "type": "streamable-http"}}, True),
    ({"s": {**STDIO, "description": "d", "timeout_ms": 5, "strategy": "random", "isolation": "per_client"}}, True),
    ({"s": {**STDIO, "retry_calls": True, "max_timeout_ms": 9, "idle_timeout": 1.5, "max_processes": 2}}, True),
    ({"s": {**STDIO, "health_interval": 0, "health_timeout": 0.5}}, True),
    ({"s": {"instances": [STDIO, {**HTTP, "weight": 3, "type": "http"}], "strategy": "weighted"}}, True),
    ({}, True),
    ({"s": {}}, False),
    ({"": STDIO}, False),
    ({"s": {**STDIO, **HTTP}}, False),
    ({"s": {"commnd": "srv"}}, False),
    ({"s": {**STDIO, "colour": "red"}}, False),
    ({"s": {**STDIO, "headers": {"A": "b"}}}, False),
    ({"s": {**HTTP, "env": {"A": "b"}}}, False),
    ({"s": {**STDIO, "type": "http"}}, False),
    ({"s": {**HTTP, "type": "sse"}}, False),
    ({"s": {**STDIO, "args": ["-v", 3]}}, False),
    ({"s": {**STDIO, "env": {"PORT": 8080}}}, False),
    ({"s": {**STDIO, "timeout_ms": 0}}, False),
    ({"s": {**STDIO, "timeout_ms": None}}, False),
    ({"s": {**STDIO, "timeout_ms": 1.5}}, False),
    ({"s": {**STDIO, "idle_timeout": 0}}, False),
    ({"s": {**STDIO, "health_interval": -1}}, False),
    ({"s": {**STDIO, "health_timeout": 1e9}}, False),
    ({"s": {**STDIO, "strategy": "fastest"}}, False),
    ({"s": {**STDIO, "isolation": "per_agent"}}, False),
    ({"s": {**STDIO, "retry_calls": "yes"}}, False),
    ({"s": {"instances": []}}, False),
    ({"s": {"instances": [STDIO], **STDIO}}, False),
    ({"s": {"instances": [{**STDIO, "weight": 0}]}}, False),
    ({"s": {"instances": [{**STDIO, "colour": "red"}]}}, False),
]


@pytest.mark.parametrize(("servers", "valid"), SERVERS)
def test_servers_schema_agrees_with_the_gateway(servers: dict[str, Any], valid: bool) -> None:
    doc = {"mcpServers": servers}
    assert (schema_accepts("servers", doc), gateway_accepts(servers=doc)) == (valid, valid)


def test_servers_schema_refuses_a_file_without_servers() -> None:
    assert not schema_accepts("servers", {})
    assert not schema_accepts("servers", {"mcpServers": {}, "servers": {}})


RULES: list[tuple[dict[str, Any], bool]] = [
    ({"agents": {"team.role": {"allow": {"servers": ["*"], "tools": {"db": ["get_*"]}}, "deny": {"servers": []}}}}, True),
    ({"defaults": {"deny_on_missing_agent": False}}, True),
    (
        {
            "agents": {
                "a": {
                    "mode": "aggregate",
                    "allow": {"servers": ["db"], "resources": {"db": ["file:///*"]}, "prompts": {"db": ["p"]}},
                    "deny": {"resources": {"db": []}, "prompts": {"db": ["x*"]}},
                },
                "b": {"mode": "on_demand"},
            }
        },
        True,
    ),
    ({}, True),
    ({"agents": {"bad id": {}}}, False),
    ({"agents": {"": {}}}, False),
    ({"agents": {"a": []}}, False),
    ({"agents": {"a": {"alow": {}}}}, False),
    ({"agents": {"a": {"allow": {"servers": "db"}}}}, False),
    ({"agents": {"a": {"allow": {"servers": [2]}}}}, False),
    ({"agents": {"a": {"deny": {"tools": {"db": "drop"}}}}}, False),
    ({"agents": {"a": {"deny": {"prompts": []}}}}, False),
    ({"agents": {"a": {"allow": {"resources": {"db": "file:///x"}}}}}, False),
    ({"agents": {"a": {"allow": {"resources": {"db": [7]}}}}}, False),
    ({"agents": {"a": {"mode": "both"}}}, False),
    ({"agents": {"a": {"mode": None}}}, False),
    ({"defaults": {"deny_on_missing_agent": "no"}}, False),
    ({"defaults": {"log": True}}, False),
    ({"version": 1}, False),
]


@pytest.mark.parametrize(("rules", "valid"), RULES)
def test_rules_schema_agrees_with_the_gateway(rules: dict[str, Any], valid: bool) -> None:
    assert (schema_accepts("rules", rules), gateway_accepts(rules=rules)) == (valid, valid)


def test_what_only_the_gateway_checks() -> None:
    # The schema cannot see the environment or parse a URL: these pass the
    # schema and fail the gateway.
    for entry in ({"command": "${UNSET}"}, {"command": " "}, {"url": "ftp://h/"}):
        doc = {"mcpServers": {"s": entry}}
        assert (schema_accepts("servers", doc), gateway_accepts(servers=doc)) == (True, False)
    # Nor can it see the other file: a rule for a server that is not configured (here "dv" for "db").
    rules = {"agents": {"a": {"allow": {"servers": ["*"], "tools": {"dv": ["get"]}}}}}
    assert (schema_accepts("rules", rules), gateway_accepts(rules=rules)) == (True, False)


def test_the_schema_documents_the_keys() -> None:
    servers = config_schema("servers")["$defs"]
    assert servers["StdioServer"]["properties"]["strategy"]["enum"] == [
        "round_robin", "least_connections", "weighted", "health_based", "random",
    ]
    assert servers["PooledServer"]["properties"]["isolation"]["enum"] == ["shared", "per_client"]
    assert servers["HttpServer"]["properties"]["type"]["enum"] == ["http", "streamable-http"]
    assert servers["StdioServer"]["additionalProperties"] is False
    for shape in servers.values():
        assert shape["title"] and shape["description"]
        assert all(key["description"] for key in shape["properties"].values())
    rules = config_schema("rules")["$defs"]
    assert rules["Agent"]["properties"]["mode"]["enum"] == ["on_demand", "aggregate", "auto"]
    assert set(rules["Lists"]["properties"]) == {"servers", "tools", "resources", "prompts"}
    for shape in rules.values():
        assert shape["title"] and shape["description"]
        assert all(key["description"] for key in shape["properties"].values())
