"""Per-agent access policy, compiled once per configuration.

The rules file is the one agent-mcp-gateway reads, loaded unchanged::

    {"agents": {"backend": {"allow": {"servers": ["postgres", "git*"],
                                      "tools": {"postgres": ["query", "get_*"]}},
                            "deny":  {"tools": {"postgres": ["drop_*"]}}}},
     "defaults": {"deny_on_missing_agent": true}}

Beside ``tools``, ``allow`` and ``deny`` may hold ``resources`` (URIs or
globs, by server) and ``prompts`` (prompt names or globs, by server), which
mean for a server's resources and prompts exactly what ``tools`` means for
its tools: one implementation decides all three *kinds* of item.

Theory of operation
-------------------
An entry is *explicit* when it contains none of ``*?[``; otherwise it is a
*wildcard*, matched like :func:`fnmatch.fnmatchcase` (case-sensitive). A
question is answered by the first of these steps that matches, and within a
step by the first matching entry in list order (``<kind>`` is ``tools``,
``resources`` or ``prompts``):

=====  ===========================  ====================================
step   server                       item of a kind (server already allowed)
=====  ===========================  ====================================
1      explicit ``deny.servers``    explicit ``deny.<kind>[server]``
2      explicit ``allow.servers``   explicit ``allow.<kind>[server]``
3      wildcard ``deny.servers``    wildcard ``deny.<kind>[server]``
4      wildcard ``allow.servers``   wildcard ``allow.<kind>[server]``
5      deny                         allow if there is no
                                    ``allow.<kind>[server]`` at all (the
                                    server's grant covers its items of that
                                    kind), else deny
=====  ===========================  ====================================

Explicit allow comes before wildcard deny (agent-mcp-gateway puts every deny
first): naming a server or item outright is the most specific thing a rule
can say, so it wins over a pattern that happens to match it too. The kinds
are independent: an ``allow.tools`` list narrows the server's tools and
leaves its resources and prompts to the server's grant.

Every :class:`Decision` names the rule that decided it as a JSON path into the
rules file (``agents.backend.deny.tools.postgres[0]``,
``agents.backend.deny.resources.docs[0]``), which the gateway puts in
``DENIED_BY_POLICY`` errors and audit records.

An agent's ``rate`` (``"120/min"``) is its rate limit, kept here for the
calls to apply (:mod:`._ratelimit`), and its ``mode`` (``"on_demand"`` or
``"aggregate"``) how it sees the servers, in place of ``GATEWAY_MODE``; they
decide nothing about access.

:func:`~._rules.check_rules` checks a document's shape (``config`` turns what
it finds into problems); :meth:`Policy.compile` then trusts it.
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal, get_args

from ._errors import ErrorCode
from ._identity import Rate, parse_rate

__all__ = [
    "KINDS",
    "MODES",
    "Decision",
    "Kind",
    "Mode",
    "Policy",
    "Refusal",
    "RuleEntry",
    "ToolRules",
    "is_glob",
    "json_path",
    "valid_agent_id",
]

#: The kinds of item a server offers that the rules decide on, by their key in ``allow`` and ``deny``.
Kind = Literal["tools", "resources", "prompts"]
KINDS: tuple[Kind, ...] = get_args(Kind)
#: How an agent sees the servers: through the gateway's tools, or their items listed as the gateway's own.
Mode = Literal["on_demand", "aggregate", "auto"]
MODES: tuple[Mode, ...] = get_args(Mode)

_AGENT_ID = re.compile(r"[A-Za-z0-9_.-]{1,128}")
_BARE_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_GLOB_CHARS = frozenset("*?[")
_AGENT_ID_RULE = "use 1 to 128 letters, digits, '-', '_' and '.'"

# How much of an invalid agent id a refusal quotes back: enough to recognise
# it, not so much that a hostile client can make us echo megabytes.
_MAX_QUOTED_ID = 128


@dataclass(frozen=True, slots=True)
class Decision:
    """Whether a request is allowed, and the rule that decided it."""

    allowed: bool
    rule: str


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a request cannot be attributed to an agent: the error to answer with."""

    code: ErrorCode
    message: str
    rule: str | None


@dataclass(frozen=True, slots=True)
class RuleEntry:
    """One entry of a tool, resource or prompt list as written (a name, URI or glob) and what it decides."""

    entry: str
    decision: Decision


@dataclass(frozen=True, slots=True)
class ToolRules:
    """The entries of one kind that apply to one agent on one server, for explaining them.

    ``entries`` are in the order :meth:`Policy.decide` (or
    :meth:`~Policy.decide_resource`, :meth:`~Policy.decide_prompt`) tries
    them; an item that none matches gets ``otherwise``. On a denied server
    there are no entries and ``otherwise`` is the server's decision.
    """

    entries: tuple[RuleEntry, ...]
    otherwise: Decision


def valid_agent_id(agent_id: str) -> bool:
    """Tell whether ``agent_id`` is 1 to 128 of ``A-Z a-z 0-9 _ . -``."""
    return _AGENT_ID.fullmatch(agent_id) is not None


def json_path(*segments: str | int) -> str:
    """Render a location in a JSON document: ``agents["team.role"].allow.servers[1]``.

    Keys that look like identifiers are joined with dots, other keys are
    quoted in brackets, and ints are list indices. No segments give ``""``,
    the document itself.
    """
    parts: list[str] = []
    for segment in segments:
        if isinstance(segment, int):
            parts.append(f"[{segment}]")
        elif _BARE_KEY.fullmatch(segment):
            parts.append(f".{segment}" if parts else segment)
        else:
            parts.append(f"[{json.dumps(segment)}]")
    return "".join(parts)


def is_glob(entry: str) -> bool:
    """Tell whether a rule entry is a wildcard (contains ``*``, ``?`` or ``[``)."""
    return not _GLOB_CHARS.isdisjoint(entry)


@dataclass(frozen=True, slots=True)
class _Entries:
    """One list of rule entries, split into the two precedence classes.

    Each entry carries the ready-made :class:`Decision` it produces, so
    deciding allocates nothing.
    """

    explicit: Mapping[str, Decision]
    wildcards: tuple[tuple[re.Pattern[str], Decision], ...]
    #: The wildcard entries as written, in the order of ``wildcards``.
    globs: tuple[str, ...] = ()

    @classmethod
    def compile(cls, entries: Iterable[str], allowed: bool, *path: str | int) -> _Entries:
        explicit: dict[str, Decision] = {}
        wildcards: list[tuple[re.Pattern[str], Decision]] = []
        globs: list[str] = []
        for index, entry in enumerate(entries):
            decision = Decision(allowed, json_path(*path, index))
            if is_glob(entry):
                wildcards.append((re.compile(fnmatch.translate(entry)), decision))
                globs.append(entry)
            else:
                # The first entry in list order is the one reported.
                explicit.setdefault(entry, decision)
        return cls(MappingProxyType(explicit), tuple(wildcards), tuple(globs))

    def explicit_entries(self) -> list[RuleEntry]:
        return [RuleEntry(name, decision) for name, decision in self.explicit.items()]

    def wildcard_entries(self) -> list[RuleEntry]:
        return [RuleEntry(glob, decision) for glob, (_, decision) in zip(self.globs, self.wildcards)]

    def first_wildcard(self, name: str) -> Decision | None:
        for pattern, decision in self.wildcards:
            if pattern.fullmatch(name):
                return decision
        return None


_NO_ENTRIES = _Entries(MappingProxyType({}), ())


@dataclass(frozen=True, slots=True)
class _AgentRules:
    """One agent's rules, compiled."""

    deny_servers: _Entries
    allow_servers: _Entries
    #: ``deny.<kind>``, by kind then server.
    deny: Mapping[Kind, Mapping[str, _Entries]]
    #: ``allow.<kind>``, by kind then server. A server missing here has no
    #: ``allow.<kind>`` entry: all its items of that kind are allowed.
    allow: Mapping[Kind, Mapping[str, _Entries]]
    no_rule: Decision
    rate: Rate | None = None
    mode: Mode | None = None

    @classmethod
    def compile(cls, agent: str, rules: Mapping[str, Any]) -> _AgentRules:
        allow: Mapping[str, Any] = rules.get("allow") or {}
        deny: Mapping[str, Any] = rules.get("deny") or {}
        base = ("agents", agent)
        mode = rules.get("mode")
        return cls(
            deny_servers=_Entries.compile(
                deny.get("servers") or (), False, *base, "deny", "servers"
            ),
            allow_servers=_Entries.compile(
                allow.get("servers") or (), True, *base, "allow", "servers"
            ),
            deny=_by_kind(deny, False, *base, "deny"),
            allow=_by_kind(allow, True, *base, "allow"),
            no_rule=Decision(False, f"{json_path(*base)}: no rule allows it"),
            rate=parse_rate(rules["rate"]) if isinstance(rules.get("rate"), str) else None,
            mode=mode if mode in MODES else None,
        )


def _by_kind(lists: Mapping[str, Any], allowed: bool, *path: str) -> Mapping[Kind, Mapping[str, _Entries]]:
    """Each kind's lists of one side (``allow`` or ``deny``), compiled, by server."""
    return MappingProxyType(
        {
            kind: MappingProxyType(
                {
                    server: _Entries.compile(entries, allowed, *path, kind, server)
                    for server, entries in (lists.get(kind) or {}).items()
                }
            )
            for kind in KINDS
        }
    )


class Policy:
    """Compiled rules: answers "may this agent use this server, this tool, resource or prompt?".

    Immutable once compiled; a configuration reload compiles a new one.

    Attributes:
        deny_on_missing_agent: refuse requests that name no agent
            (``defaults.deny_on_missing_agent``, true when absent).
        agents: the agent ids the rules define.
    """

    __slots__ = ("_agents", "agents", "deny_on_missing_agent")

    deny_on_missing_agent: bool
    agents: frozenset[str]

    def __init__(self, agents: Mapping[str, _AgentRules], deny_on_missing_agent: bool) -> None:
        """Use :meth:`compile`; this takes the compiled form."""
        self._agents = MappingProxyType(dict(agents))
        self.agents = frozenset(agents)
        self.deny_on_missing_agent = deny_on_missing_agent

    @classmethod
    def compile(cls, rules: Mapping[str, Any]) -> Policy:
        """Compile a rules document that :func:`~._rules.check_rules` found no error in.

        Missing sections mean "nothing": no ``agents`` is no agents, no
        ``defaults.deny_on_missing_agent`` is true (fail closed).
        """
        agents: Mapping[str, Any] = rules.get("agents") or {}
        defaults: Mapping[str, Any] = rules.get("defaults") or {}
        return cls(
            {agent: _AgentRules.compile(agent, body or {}) for agent, body in agents.items()},
            deny_on_missing_agent=bool(defaults.get("deny_on_missing_agent", True)),
        )

    def __repr__(self) -> str:
        return (
            f"Policy(agents={sorted(self.agents)!r}, "
            f"deny_on_missing_agent={self.deny_on_missing_agent!r})"
        )

    def decide_server(self, agent: str, server: str) -> Decision:
        """Decide whether ``agent`` may see and use ``server`` at all."""
        rules = self._agents.get(agent)
        if rules is None:
            return _not_defined(agent)
        return (
            rules.deny_servers.explicit.get(server)
            or rules.allow_servers.explicit.get(server)
            or rules.deny_servers.first_wildcard(server)
            or rules.allow_servers.first_wildcard(server)
            or rules.no_rule
        )

    def decide(self, agent: str, server: str, tool: str) -> Decision:
        """Decide whether ``agent`` may see and call ``tool`` on ``server``.

        A denied server denies every tool, with the server's rule.
        """
        return self._decide("tools", agent, server, tool)

    def decide_resource(self, agent: str, server: str, uri: str) -> Decision:
        """Decide whether ``agent`` may see and read the resource at ``uri`` on ``server``.

        As :meth:`decide`, with the ``resources`` lists: a denied server
        denies every resource, with the server's rule.
        """
        return self._decide("resources", agent, server, uri)

    def decide_prompt(self, agent: str, server: str, name: str) -> Decision:
        """Decide whether ``agent`` may see and get the prompt ``name`` on ``server``.

        As :meth:`decide`, with the ``prompts`` lists: a denied server denies
        every prompt, with the server's rule.
        """
        return self._decide("prompts", agent, server, name)

    def _decide(self, kind: Kind, agent: str, server: str, name: str) -> Decision:
        """Steps 1 to 5 of the table in the module docstring, for an item of ``kind``."""
        server_decision = self.decide_server(agent, server)
        if not server_decision.allowed:
            return server_decision
        rules = self._agents[agent]
        deny = rules.deny[kind].get(server, _NO_ENTRIES)
        allow = rules.allow[kind].get(server)
        decision = deny.explicit.get(name)
        if decision is None and allow is not None:
            decision = allow.explicit.get(name)
        if decision is None:
            decision = deny.first_wildcard(name)
        if decision is not None:
            return decision
        if allow is None:
            # Implicit grant: the server is allowed and no list narrows it.
            return server_decision
        return allow.first_wildcard(name) or rules.no_rule

    def tool_rules(self, agent: str, server: str) -> ToolRules:
        """The tool entries that decide for ``agent`` on ``server``, in precedence order.

        For explaining a policy without knowing the server's tools
        (``lockgate explain --offline``); :meth:`decide` gives the same answers.
        """
        return self._rules("tools", agent, server)

    def resource_rules(self, agent: str, server: str) -> ToolRules:
        """The resource entries that decide for ``agent`` on ``server``, as :meth:`tool_rules`."""
        return self._rules("resources", agent, server)

    def prompt_rules(self, agent: str, server: str) -> ToolRules:
        """The prompt entries that decide for ``agent`` on ``server``, as :meth:`tool_rules`."""
        return self._rules("prompts", agent, server)

    def _rules(self, kind: Kind, agent: str, server: str) -> ToolRules:
        server_decision = self.decide_server(agent, server)
        if not server_decision.allowed:
            return ToolRules((), server_decision)
        rules = self._agents[agent]
        deny = rules.deny[kind].get(server, _NO_ENTRIES)
        allow = rules.allow[kind].get(server)
        if allow is None:
            entries = [*deny.explicit_entries(), *deny.wildcard_entries()]
            return ToolRules(tuple(entries), server_decision)
        # An explicit allow of a name the deny list also names explicitly never decides.
        allowed = [e for e in allow.explicit_entries() if e.entry not in deny.explicit]
        entries = [*deny.explicit_entries(), *allowed, *deny.wildcard_entries(), *allow.wildcard_entries()]
        return ToolRules(tuple(entries), rules.no_rule)

    def has_rules(self, kind: Kind, agent: str, server: str) -> bool:
        """Whether ``agent``'s ``allow`` or ``deny`` has a ``kind`` list for ``server`` (empty or not)."""
        rules = self._agents.get(agent)
        return rules is not None and (server in rules.deny[kind] or server in rules.allow[kind])

    def rate(self, agent: str) -> Rate | None:
        """The agent's own rate limit (its ``rate`` key), if it has one."""
        rules = self._agents.get(agent)
        return None if rules is None else rules.rate

    def mode(self, agent: str) -> Mode | None:
        """The agent's own ``mode`` key: ``None`` when it sets none or is not defined (``GATEWAY_MODE`` applies)."""
        rules = self._agents.get(agent)
        return None if rules is None else rules.mode

    def visible_servers(self, agent: str, servers: Iterable[str]) -> list[str]:
        """Keep the servers ``agent`` may use, in the order given."""
        return [server for server in servers if self.decide_server(agent, server).allowed]

    def resolve_agent(self, agent_id: str | None, *, default_agent: str | None) -> str | Refusal:
        """Decide which agent a request acts as, or why it may not act at all.

        Args:
            agent_id: the id the request declares, or ``None`` when it names none.
            default_agent: ``GATEWAY_DEFAULT_AGENT``, the fallback for requests
                without an id when ``deny_on_missing_agent`` is false.

        Returns:
            An agent id defined in the rules, or a :class:`Refusal`. This never
            fails open: every path that does not end in a defined agent refuses.
        """
        if agent_id is not None:
            if not valid_agent_id(agent_id):
                quoted = agent_id[:_MAX_QUOTED_ID]
                if len(agent_id) > _MAX_QUOTED_ID:
                    quoted += "..."
                return Refusal(
                    ErrorCode.INVALID_AGENT_ID,
                    f"agent_id {quoted!r} is invalid: use letters, digits, '-', '_' and '.'",
                    None,
                )
            if agent_id not in self._agents:
                return Refusal(
                    ErrorCode.DENIED_BY_POLICY,
                    f"agent {agent_id!r} is not defined in the rules",
                    _not_defined(agent_id).rule,
                )
            return agent_id
        if self.deny_on_missing_agent:
            return Refusal(
                ErrorCode.DENIED_BY_POLICY,
                "agent_id is required",
                "defaults.deny_on_missing_agent",
            )
        if default_agent is not None:
            if default_agent in self._agents:
                return default_agent
            return Refusal(
                ErrorCode.FALLBACK_AGENT_NOT_IN_RULES,
                f"fallback agent {default_agent!r} (GATEWAY_DEFAULT_AGENT) "
                "is not defined in the rules",
                "GATEWAY_DEFAULT_AGENT",
            )
        if "default" in self._agents:
            return "default"
        return Refusal(
            ErrorCode.NO_FALLBACK_CONFIGURED,
            "agent_id is required: no GATEWAY_DEFAULT_AGENT and no 'default' agent in the rules",
            None,
        )


def _not_defined(agent: str) -> Decision:
    return Decision(False, f"{json_path('agents', agent)}: not defined")
