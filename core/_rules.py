"""The rules file (``.mcp-gateway-rules.json``): its pydantic shape and :func:`check_rules`.

The format is agent-mcp-gateway's, read unchanged::

    {"agents": {"backend": {"allow": {"servers": ["postgres", "git*"],
                                      "tools": {"postgres": ["query", "get_*"]}},
                            "deny":  {"tools": {"postgres": ["drop_*"]}}}},
     "defaults": {"deny_on_missing_agent": true}}

plus Lockgate's own keys: ``resources`` and ``prompts`` beside ``tools`` in
``allow`` and ``deny`` (URIs or prompt names, or globs, by server), and per
agent an optional ``rate`` (``"rate": "120/min"``), its rate limit, and
``mode`` (``"on_demand"``, ``"aggregate"`` or ``"auto"``). Every key is optional. What the rules mean is
:mod:`._policy`'s business: :meth:`~._policy.Policy.compile` takes a
document this module validated.
The wording of problems comes with each type (:mod:`._validation`).

A misspelt key is an error (:mod:`._validation`), but a misspelt *name*
is a valid key or entry that means something else, and in a rules file that
can widen access: ``"deny": {"tools": {"gti": ["push"]}}`` denies nothing on
``git``. Names cannot be checked against the rules alone, so
:func:`check_names` checks them against the configured servers and the
compiled policy, and warns (an error would refuse files agent-mcp-gateway
accepts; ``--strict`` and ``GATEWAY_STRICT`` make them errors):

- a literal server entry or ``tools``, ``resources`` or ``prompts`` key
  naming a server that is not configured, with the closest configured name;
- a ``deny.servers`` pattern that matches no configured server: it denies
  nothing, which is how a misspelt pattern looks;
- a ``tools`` (``resources``, ``prompts``) key naming a server the agent may
  not use: its rules never apply, which is how a key misspelt into another
  server's name looks.

A ``tools`` (``resources``, ``prompts``) key misspelt into the name of another configured server that the
agent may use is a valid rule for that server, and a misspelt agent id is a
rename (``backend`` loses its rights, ``bakcend`` gains them): nothing in
the files can tell either from an edit that was meant. As agent ids are
declared by the client, not authenticated, a rename moves rights between ids
(to calls without ``agent_id`` too, for a rename to ``default``) and creates
none.
"""

# No `from __future__ import annotations`: pydantic reads the annotations of
# the shapes below, and builds their validators on first use (defer_build),
# when a string annotation would be resolved in the caller's namespace.
import fnmatch
from collections.abc import Collection
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import AfterValidator, Field, TypeAdapter, with_config
from typing_extensions import TypedDict

from ._identity import RATE_PATTERN, parse_rate
from ._policy import _AGENT_ID, _AGENT_ID_RULE, KINDS, Mode, Policy, is_glob, json_path
from ._validation import Issue, Loc, check, closest, fail, json_schema, kind, said, shape

__all__ = ["RulesFile", "RulesProblem", "check_names", "check_rules", "parse", "schema"]


Names = Annotated[list[Annotated[str, kind("a string")]], kind("an array of strings")]


@with_config(shape("Rule lists"))
class Lists(TypedDict, total=False):
    """Servers, and their tools, resources and prompts, by name or glob (*, ?, [abc], [!abc]; matched like fnmatch.fnmatchcase)."""

    servers: Annotated[Names, Field(description="Server names or globs.")]
    tools: Annotated[
        dict[str, Names],
        kind("an object"),
        Field(description="Tool names or globs, by server; the server key is always a literal name."),
    ]
    resources: Annotated[
        dict[str, Names],
        kind("an object"),
        Field(
            description="Resource URIs or globs, by server, decided as tools are; the server key is always a literal name."
        ),
    ]
    prompts: Annotated[
        dict[str, Names],
        kind("an object"),
        Field(description="Prompt names or globs, by server, decided as tools are; the server key is always a literal name."),
    ]


_Lists = Annotated[Lists, kind("an object")]


def _rate(text: str) -> str:
    if parse_rate(text) is None or text != text.strip():
        fail([Issue((), f"{text[:64]!r} is not a rate: use COUNT/UNIT, e.g. 120/min (units s, min, h)")])
    return text


RateKey = Annotated[
    str,
    kind("a string"),
    AfterValidator(_rate),
    Field(
        description="Calls of the gateway tools per second, minute or hour, in bursts of up to COUNT: 120/min, "
        "10/s, 1000/h. Default GATEWAY_RATE_LIMIT (unset: no limit).",
        json_schema_extra={"pattern": f"^{RATE_PATTERN}$"},  # what a schema can say of _rate
    ),
]


ModeKey = Annotated[
    Mode,
    said(lambda value: f"{value!r} is not a mode: use 'on_demand', 'aggregate' or 'auto'"),
    Field(
        description="How the agent sees the servers: on_demand, through the gateway's tools (list_servers, "
        "get_server_tools, execute_tool), or aggregate, their tools, resources and prompts listed as the "
        "gateway's own, or auto: aggregate when the tools it may call cost fewer tokens than "
        "GATEWAY_AUTO_THRESHOLD of GATEWAY_CONTEXT_WINDOW, decided at initialize. Default GATEWAY_MODE."
    ),
]


@with_config(shape("Agent"))
class Agent(TypedDict, total=False):
    """One agent's rules: explicit deny, explicit allow, wildcard deny, wildcard allow decide, in that order; else deny."""

    allow: Annotated[_Lists, Field(description="What the agent may use.")]
    deny: Annotated[_Lists, Field(description="What the agent may not use.")]
    rate: RateKey
    mode: ModeKey


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
    """Validate a parsed rules file: the rules (``None`` on any error) and every issue."""
    return check(_FILE, doc)


def check_rules(rules: object) -> list[RulesProblem]:
    """Check a rules document's shape before :meth:`~._policy.Policy.compile` trusts it.

    Returns:
        Every error (an unknown key is one) at its JSON path, in the order of
        the document. It may be compiled when there is none. The names in it
        are checked against the servers by :func:`check_names`.
    """
    return [RulesProblem(json_path(*issue.loc), issue.message, issue.warning) for issue in parse(rules)[1]]


def check_names(rules: RulesFile, policy: Policy, servers: Collection[str], servers_file: str) -> list[Issue]:
    """Warnings about the server names in validated ``rules`` (see the module docstring).

    ``policy`` is ``rules`` compiled, ``servers`` the configured names and
    ``servers_file`` what to call their file. Issues come agent by agent,
    ``allow`` before ``deny``; the caller puts them in document order.
    """
    found: list[Issue] = []
    for agent, body in rules.get("agents", {}).items():
        for side, lists in (("allow", body.get("allow", Lists())), ("deny", body.get("deny", Lists()))):
            base: Loc = ("agents", agent, side)
            for index, entry in enumerate(lists.get("servers", ())):
                loc = (*base, "servers", index)
                if not is_glob(entry):
                    if entry not in servers:
                        found.append(_not_configured(loc, entry, servers, servers_file))
                elif side == "deny" and not any(fnmatch.fnmatchcase(name, entry) for name in servers):
                    message = f"{entry!r} matches no server configured in {servers_file}, so it denies nothing"
                    found.append(Issue(loc, message, warning=True))
            # Keys of `tools`, `resources` and `prompts` are server names, always literal.
            for items in KINDS:
                for server in lists.get(items, {}):
                    loc = (*base, items, server)
                    decision = policy.decide_server(agent, server)
                    if server not in servers:
                        found.append(_not_configured(loc, server, servers, servers_file))
                    elif not decision.allowed:
                        message = (
                            f"these {_SINGULAR[items]} rules never apply: agent {agent!r} may not use server "
                            f"{server!r} ({decision.rule})"
                        )
                        found.append(Issue(loc, message, warning=True))
    return found


_SINGULAR = {"tools": "tool", "resources": "resource", "prompts": "prompt"}


def _not_configured(loc: Loc, server: str, servers: Collection[str], servers_file: str) -> Issue:
    message = f"server {server!r} is not configured in {servers_file}{closest(server, servers)}"
    return Issue(loc, message, warning=True)


def schema() -> dict[str, Any]:
    """The rules file's JSON Schema."""
    return json_schema(
        _FILE,
        title="Lockgate rules file (.mcp-gateway-rules.json)",
        description="Which servers, tools, resources and prompts each agent may use, in agent-mcp-gateway's "
        "format with Lockgate's own keys.",
    )
