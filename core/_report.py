"""Reports for operators: what an agent may do, and what tool lists cost in context.

Pure functions over a :class:`~.config.Config` and, where servers were
started, the tool lists they sent. ``lockgate explain`` and ``lockgate check``
render them as text or JSON; every answer comes from the same
:class:`~.policy.Policy` the gateway enforces.

Sizes are measured, not guessed: ``bytes`` is the compact JSON of each tool
definition as the server sent it, ``tokens`` the sum of each definition's
tokens by the counter given (the shells give a real tokenizer,
:mod:`lockgate.shells.tokenizer`, the one ``get_server_tools`` budgets with;
the default is the core's bytes / 4 estimate).

The same figures, from the catalogues a running gateway knows, are in
``/metrics`` and ``get_gateway_status`` (:mod:`._views`), and decide
``mode: auto`` (:func:`auto_mode`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from ._config import Config, Settings
from ._jsonrpc import encode
from ._policy import Decision, Kind, Policy, ToolRules
from ._tools import TokenCounter, ToolTokens, estimate_bytes, gateway_tools, tool_tokens

__all__ = ["agent_tools", "auto_mode", "auto_threshold", "context_report", "explain_agent", "tool_cost"]

JSONObject = dict[str, Any]
ToolLists = Mapping[str, Sequence[JSONObject] | None]


def tool_cost(tools: Sequence[JSONObject], count: TokenCounter | ToolTokens = estimate_bytes) -> JSONObject:
    """``{"tools", "bytes", "tokens"}`` of a list of tool definitions, tokens by ``count``."""
    return {
        "tools": len(tools),
        "bytes": sum(len(encode(tool)) for tool in tools),
        "tokens": sum(tool_tokens(count, tool) for tool in tools),
    }


def agent_tools(policy: Policy, agent: str, tools: ToolLists) -> dict[str, list[JSONObject]]:
    """The tools ``agent`` may call, by server, over the servers that listed theirs (in the order of ``tools``)."""
    return {
        name: [tool for tool in listed if policy.decide(agent, name, str(tool.get("name"))).allowed]
        for name, listed in tools.items()
        if listed is not None and policy.decide_server(agent, name).allowed
    }


def auto_threshold(settings: Settings) -> int:
    """The tokens under which ``mode: auto`` aggregates: ``GATEWAY_AUTO_THRESHOLD`` of ``GATEWAY_CONTEXT_WINDOW``."""
    return math.floor(settings.context_window * settings.auto_threshold)


def auto_mode(tokens: int, settings: Settings) -> Literal["aggregate", "on_demand"]:
    """What ``mode: auto`` chooses for an agent whose full allowed tool list costs ``tokens``.

    Aggregate when the list costs less than :func:`auto_threshold`, as a
    client that defers its own tools past a share of the context does;
    on demand (the gateway's few tools) otherwise.
    """
    return "aggregate" if tokens < auto_threshold(settings) else "on_demand"


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


def context_report(config: Config, tools: ToolLists, count: TokenCounter | ToolTokens = estimate_bytes) -> JSONObject:
    """What each agent's full tool list would cost in context, against the gateway's own.

    Args:
        config: the configuration (policy, and ``debug`` for the gateway's tools).
        tools: each started server's tool list (``None`` when it failed).
        count: counts tokens (default: the bytes / 4 estimate).

    Returns:
        ``{"gateway": cost, "all_servers": cost, "auto_threshold_tokens": n,
        "agents": {agent: {...}}}``. An agent's ``direct`` cost is every
        tool it may call, on every server that listed its tools, as an
        aggregating client would load them, and ``by_server`` the same per
        server; ``gateway`` is the gateway's ``tools/list``;
        ``saved_tokens`` the difference. ``mode`` is the agent's mode as
        configured (its rules', else ``GATEWAY_MODE``) and, for ``auto``,
        ``auto_mode`` what it would choose with these lists.
    """
    policy = config.policy
    settings = config.settings
    own = tool_cost(gateway_tools(debug=settings.debug), count)
    every = [tool for listed in tools.values() if listed is not None for tool in listed]
    agents: JSONObject = {}
    for agent in sorted(policy.agents):
        allowed = agent_tools(policy, agent, tools)
        by_server = {name: tool_cost(listed, count) for name, listed in allowed.items()}
        direct = tool_cost([tool for listed in allowed.values() for tool in listed], count)
        mode = policy.mode(agent) or settings.mode
        entry: JSONObject = {
            "servers": sorted(name for name in tools if policy.decide_server(agent, name).allowed),
            "mode": mode,
            "direct": direct,
            "by_server": by_server,
            "gateway": own,
            "saved_tokens": direct["tokens"] - own["tokens"],
        }
        if mode == "auto":
            entry["auto_mode"] = auto_mode(direct["tokens"], settings)
        agents[agent] = entry
    return {
        "gateway": own,
        "all_servers": tool_cost(every, count),
        "auto_threshold_tokens": auto_threshold(settings),
        "agents": agents,
    }
