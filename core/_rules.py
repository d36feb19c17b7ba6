"""The rules file (``.mcp-gateway-rules.json``): its pydantic shape and :func:`check_rules`.

The format is agent-mcp-gateway's, read unchanged::

    {"agents": {"backend": {"allow": {"servers": ["postgres", "git*"],
                                      "tools": {"postgres": ["query", "get_*"]}},
                            "deny":  {"tools": {"postgres": ["drop_*"]}}}},
     "defaults": {"deny_on_missing_agent": true}}

Every key is optional. What the rules mean is :mod:`._policy`'s business:
:meth:`~._policy.Policy.compile` takes a document this module validated.
The wording of problems comes with each type (:mod:`._validation`).
"""

# No `from __future__ import annotations`: pydantic reads the annotations of
# the shapes below, and builds their validators on first use (defer_build),
# when a string annotation would be resolved in the caller's namespace.
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import Field, TypeAdapter, with_config
from typing_extensions import TypedDict

from ._policy import _AGENT_ID, _AGENT_ID_RULE, is_glob, json_path
from ._validation import Issue, Loc, check, json_schema, kind, said, shape

__all__ = ["RulesFile", "RulesProblem", "check_rules", "mentioned_servers", "parse", "schema"]


Names = Annotated[list[Annotated[str, kind("a string")]], kind("an array of strings")]


@with_config(shape("Rule lists"))
class Lists(TypedDict, total=False):
    """Servers and tools, by name or glob (*, ?, [abc], [!abc]; matched like fnmatch.fnmatchcase)."""

    servers: Annotated[Names, Field(description="Server names or globs.")]
    tools: Annotated[
        dict[str, Names],
        kind("an object"),
        Field(description="Tool names or globs, by server; the server key is always a literal name."),
    ]


_Lists = Annotated[Lists, kind("an object")]


@with_config(shape("Agent"))
class Agent(TypedDict, total=False):
    """One agent's rules: explicit deny, explicit allow, wildcard deny, wildcard allow decide, in that order; else deny."""

    allow: Annotated[_Lists, Field(description="What the agent may use.")]
    deny: Annotated[_Lists, Field(description="What the agent may not use.")]


@with_config(shape("Defaults"))
class Defaults(TypedDict, total=False):
    """What applies to calls that name no agent."""

    deny_on_missing_agent: Annotated[
        bool, kind("a boolean"), Field(description="Refuse a call without agent_id. Default true.")
    ]


AgentId = Annotated[
    str,
    Field(pattern=f"^{_AGENT_ID.pattern}$"),
    said(lambda agent: f"agent id {agent!r} is invalid: {_AGENT_ID_RULE}", key=True),
]


@with_config(shape("Rules file"))
class RulesFile(TypedDict, total=False):
    """Per-agent access rules, in agent-mcp-gateway's format."""

    agents: Annotated[
        dict[AgentId, Annotated[Agent, kind("an object")]],
        kind("an object"),
        # Keys that do not match the id pattern are not agents (the schema of
        # a dict whose keys have a pattern lists only those that match).
        Field(
            description="The agents, by id: 1 to 128 letters, digits, '-', '_' and '.'.",
            json_schema_extra={"additionalProperties": False},
        ),
    ]
    defaults: Annotated[Defaults, kind("an object"), Field(description="What applies to calls that name no agent.")]


_FILE: TypeAdapter[RulesFile] = TypeAdapter(Annotated[RulesFile, kind("an object")])


@dataclass(frozen=True, slots=True)
class RulesProblem:
    """One thing :func:`check_rules` found wrong with a rules document."""

    path: str
    message: str
    warning: bool = False


def parse(doc: object) -> tuple[RulesFile | None, list[Issue]]:
    """Validate a parsed rules file: the rules (``None`` on any error, else without unknown keys) and every issue."""
    return check(_FILE, doc)


def check_rules(rules: object) -> list[RulesProblem]:
    """Check a rules document's shape before :meth:`~._policy.Policy.compile` trusts it.

    Returns:
        Every error, and a warning for each unknown key, at its JSON path, in
        the order of the document. It may be compiled when none is an error.
    """
    return [RulesProblem(json_path(*issue.loc), issue.message, issue.warning) for issue in parse(rules)[1]]


def mentioned_servers(rules: RulesFile) -> Iterator[tuple[Loc, str]]:
    """Every literal server name validated rules name, with its place."""
    for agent, body in rules.get("agents", {}).items():
        for side, lists in (("allow", body.get("allow", Lists())), ("deny", body.get("deny", Lists()))):
            for index, entry in enumerate(lists.get("servers", ())):
                if not is_glob(entry):
                    yield ("agents", agent, side, "servers", index), entry
            # Keys of `tools` are server names, always literal.
            for server in lists.get("tools", {}):
                yield ("agents", agent, side, "tools", server), server


def schema() -> dict[str, Any]:
    """The rules file's JSON Schema."""
    return json_schema(
        _FILE,
        title="Lockgate rules file (.mcp-gateway-rules.json)",
        description="Which servers and tools each agent may use, in agent-mcp-gateway's format.",
    )
