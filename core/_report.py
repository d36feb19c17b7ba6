"""Reports for operators: what an agent may do, and what tool lists cost in context.

Pure functions over a :class:`~.config.Config` and, where servers were
started, the tool lists they sent. ``lockgate explain`` and ``lockgate check``
render them as text or JSON; every answer comes from the same
:class:`~.policy.Policy` the gateway enforces.

Sizes are measured, not guessed: ``bytes`` is the compact JSON of each tool
definition as the server sent it, ``tokens`` the sum of
:func:`~.tools.estimate_tokens` over the definitions (the same estimate
``get_server_tools`` uses for its budget).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ._config import Config
from ._jsonrpc import encode
from ._policy import Decision, Kind, ToolRules
from ._tools import estimate_tokens, gateway_tools

__all__ = ["context_report", "explain_agent", "tool_cost"]

JSONObject = dict[str, Any]
ToolLists = Mapping[str, Sequence[JSONObject] | None]


def tool_cost(tools: Sequence[JSONObject]) -> JSONObject:
    """``{"tools", "bytes", "tokens"}`` of a list of tool definitions."""
    return {
        "tools": len(tools),
        "bytes": sum(len(encode(tool)) for tool in tools),
        "tokens": sum(estimate_tokens(tool) for tool in tools),
    }


def _decision(decision: Decision) -> JSONObject:
    return {"allowed": decision.allowed, "rule": decision.rule}


def explain_agent(config: Config, agent: str, *, tools: ToolLists | None = None, server: str | None = None) -> JSONObject:
    """Which servers and tools ``agent`` may see and call, and the rule deciding each.

    Args:
        config: the configuration to explain.
        agent: an agent the rules define.
        tools: each server's tool list, or ``None`` for a server that could
            not list them; ``tools=None`` explains from the rules alone
            (offline) and gives each server's tool entries instead.
        server: explain this server only (configured or not).

    Returns:
        ``{"agent", "offline", "servers": [...]}``; each server has
        ``server``, ``configured``, ``allowed``, ``rule`` and, when allowed,
        ``tools`` (online: every listed tool with ``allowed`` and ``rule``;
        ``null`` when the server did not list them) or ``tool_rules`` and
        ``other_tools`` (offline). Offline, a server for which the agent's
        rules have ``resources`` or ``prompts`` lists has
        ``resource_rules`` and ``other_resources`` or ``prompt_rules`` and
        ``other_prompts`` too, shaped as the tool ones.
    """
    policy = config.policy
    names = [server] if server is not None else list(config.servers)
    entries: list[JSONObject] = []
    for name in names:
        decision = policy.decide_server(agent, name)
        entry: JSONObject = {"server": name, "configured": name in config.servers, **_decision(decision)}
        if decision.allowed:
            if tools is None:
                _explain_rules(entry, "tool", "tools", policy.tool_rules(agent, name))
                explained: tuple[tuple[Kind, str, ToolRules], ...] = (
                    ("resources", "resource", policy.resource_rules(agent, name)),
                    ("prompts", "prompt", policy.prompt_rules(agent, name)),
                )
                for kind, singular, rules in explained:
                    if policy.has_rules(kind, agent, name):
                        _explain_rules(entry, singular, kind, rules)
            else:
                listed = tools.get(name)
                entry["tools"] = None if listed is None else [
                    {"name": tool.get("name"), **_decision(policy.decide(agent, name, str(tool.get("name"))))}
                    for tool in listed
                ]
        entries.append(entry)
    return {"agent": agent, "offline": tools is None, "servers": entries}


def _explain_rules(entry: JSONObject, singular: str, plural: str, rules: ToolRules) -> None:
    entry[f"{singular}_rules"] = [{"entry": e.entry, **_decision(e.decision)} for e in rules.entries]
    entry[f"other_{plural}"] = _decision(rules.otherwise)


def context_report(config: Config, tools: ToolLists) -> JSONObject:
    """What each agent's full tool list would cost in context, against the gateway's own.

    Args:
        config: the configuration (policy, and ``debug`` for the gateway's tools).
        tools: each started server's tool list (``None`` when it failed).

    Returns:
        ``{"gateway": cost, "all_servers": cost, "agents": {agent: {...}}}``.
        An agent's ``direct`` cost is every tool it may call, on every server
        that listed its tools, as an aggregating client would load them;
        ``gateway`` is the gateway's ``tools/list``; ``saved_tokens`` the
        difference.
    """
    policy = config.policy
    own = tool_cost(gateway_tools(debug=config.settings.debug))
    every = [tool for listed in tools.values() if listed is not None for tool in listed]
    agents: JSONObject = {}
    for agent in sorted(policy.agents):
        allowed = [
            tool
            for name, listed in tools.items()
            if listed is not None
            for tool in listed
            if policy.decide(agent, name, str(tool.get("name"))).allowed
        ]
        direct = tool_cost(allowed)
        agents[agent] = {
            "servers": sorted(name for name in tools if policy.decide_server(agent, name).allowed),
            "direct": direct,
            "gateway": own,
            "saved_tokens": direct["tokens"] - own["tokens"],
        }
    return {"gateway": own, "all_servers": tool_cost(every), "agents": agents}
