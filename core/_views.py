"""Read-only views of the gateway: status, readiness and metrics.

Nothing here changes state or emits actions; shells and ``lockgate check``
call these between events (through :class:`~lockgate.core.Gateway`), and
the ``get_gateway_status`` tool answers with :meth:`Views.status`.
"""

from __future__ import annotations

from typing import Any

from . import __version__
from ._config import Config
from ._context import Context
from ._link import Link, State
from ._metrics import Extra, prometheus_text
from ._pool import Pool, ServerState
from ._report import agent_tools, auto_threshold
from ._tools import gateway_tools

__all__ = ["Views"]

JSONObject = dict[str, Any]


class Views:
    """What the gateway shows of itself (see the module docstring)."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        # context_tokens() by what it was made from: a cache (each scrape would decide every tool for every agent).
        self._context: tuple[Config, int, dict[str, JSONObject]] | None = None

    def uptime(self, now: float) -> float:
        """Seconds since the first event the gateway handled, at ``now`` on the event clock."""
        started = self._ctx.started_at
        return 0.0 if started is None else max(0.0, now - started)

    def _calls_in_flight(self) -> int:
        return sum(len(s.calls) for s in self._ctx.clients.values())

    def metrics_json(self, now: float) -> JSONObject:
        """The JSON ``/metrics`` view: call counts, errors and latency per operation, agent and server.

        ``rate_limited`` counts calls a rate limit refused, by scope
        (``credential``, ``agent``); ``authentications`` the outcomes the
        shell reported (``success``, ``failure``); ``streams_dropped`` the
        client streams dropped because their reader fell behind.

        The shell adds a wall-clock ``timestamp``; the core has no such clock.
        """
        ctx = self._ctx
        return {
            **ctx.metrics.snapshot(uptime=self.uptime(now)),
            "clients": len(ctx.clients),
            "calls_in_flight": self._calls_in_flight(),
            "reload": self.reload_status(),
            "rate_limited": dict(ctx.metrics.rate_limited),
            "authentications": dict(ctx.metrics.authentications),
            "streams_dropped": ctx.metrics.streams_dropped,
            "context_tokens": {
                agent: {"aggregate": figures["aggregate"], "on_demand": figures["on_demand"]}
                for agent, figures in self.context_tokens().items()
            },
        }

    def metrics_prometheus(self, now: float) -> str:
        """The Prometheus text exposition of the same metrics, plus live gauges."""
        ctx = self._ctx
        extra: Extra = {
            "clients": ("gauge", "Client sessions open now.", {(): len(ctx.clients)}),
            "calls_in_flight": ("gauge", "Gateway tool calls waiting for a downstream.", {(): self._calls_in_flight()}),
            "server_state": (
                "gauge",
                "1 for the state each configured server is in (see server_states).",
                {(("server", name), ("state", state.value)): 1 for name, state in self.server_states().items()},
            ),
            "config_reloads_total": (
                "counter",
                "Configuration reload attempts since start-up, by result.",
                {(("result", "ok"),): ctx.reload.successes, (("result", "rejected"),): ctx.reload.failures},
            ),
            "rate_limited_total": (
                "counter",
                "Gateway tool calls refused by a rate limit, by the limit's scope.",
                {(("scope", scope),): n for scope, n in ctx.metrics.rate_limited.items()},
            ),
            "authentications_total": (
                "counter",
                "Credentials checked by the shell, by outcome.",
                {(("outcome", outcome),): n for outcome, n in ctx.metrics.authentications.items()},
            ),
            "context_tokens": (
                "gauge",
                "Tokens an agent's tool list costs in context: aggregate, every tool it may call on the servers "
                "whose lists are known; on_demand, the gateway's own tools.",
                {
                    (("agent", agent), ("mode", mode)): figures[mode]
                    for agent, figures in self.context_tokens().items()
                    for mode in ("aggregate", "on_demand")
                },
            ),
            "streams_dropped_total": (
                "counter",
                "Client streams dropped because their reader fell behind (what they missed stays resumable).",
                {(): ctx.metrics.streams_dropped},
            ),
        }
        extra = {**extra, **ctx.pins.metrics(ctx.config.servers)}  # lockgate_tools_quarantined, lockgate_tool_changes_total
        return prometheus_text(ctx.metrics, uptime=self.uptime(now), extra=extra)

    def status(self) -> JSONObject:
        """A JSON snapshot of the gateway for ``get_gateway_status`` and operators."""
        ctx = self._ctx
        now = ctx.now
        return {
            "version": __version__,
            "uptime_seconds": round(self.uptime(now), 3),
            "servers": {name: pool.status(now) for name, pool in ctx.pools.items()},
            "clients": len(ctx.clients),
            "calls_in_flight": self._calls_in_flight(),
            "init_strategy": ctx.config.settings.init_strategy,
            "sessions": self._sessions_by_mode(),
            "context": {"auto_threshold_tokens": auto_threshold(ctx.config.settings), "agents": self.context_tokens()},
            "config_warnings": [str(w) for w in ctx.config.warnings],
            "reload": self.reload_status(),
            "metrics": ctx.metrics.snapshot(uptime=self.uptime(now)),
        }

    def context_tokens(self) -> dict[str, JSONObject]:
        """What each agent's tool list costs in context, in tokens of the gateway's counter.

        Per agent: ``aggregate``, every tool it may call, over the servers
        whose tool lists are known now (``servers`` breaks it down; a server
        not started yet is absent), as aggregate mode would list them;
        ``on_demand``, the gateway's own tools; ``mode``, its mode as
        configured. Made again when a server's list or the configuration
        changes, not on every scrape.
        """
        ctx = self._ctx
        config = ctx.config
        cached = self._context
        if cached is not None and cached[0] is config and cached[1] == ctx.catalog_epoch:
            return cached[2]
        count = ctx.tool_tokens
        known = {name: _known_tools(pool) for name, pool in ctx.pools.items()}
        own = count.total(gateway_tools(debug=config.settings.debug))
        figures: dict[str, JSONObject] = {}
        for agent in sorted(config.policy.agents):
            servers = {name: count.total(tools) for name, tools in agent_tools(config.policy, agent, known).items()}
            figures[agent] = {
                "mode": config.policy.mode(agent) or config.settings.mode,
                "aggregate": sum(servers.values()),
                "on_demand": own,
                "servers": servers,
            }
        self._context = (config, ctx.catalog_epoch, figures)
        return figures

    def _sessions_by_mode(self) -> dict[str, int]:
        """Client sessions by the mode they are served in (``auto`` until its choice is made at ``initialize``)."""
        counts: dict[str, int] = {}
        for session in self._ctx.clients.values():
            counts[session.mode] = counts.get(session.mode, 0) + 1
        return dict(sorted(counts.items()))

    def reload_status(self) -> JSONObject:
        """Configuration reloads so far (see :class:`~lockgate.core._reload.ReloadStatus`), as JSON.

        ``draining`` lists the servers a reload removed or changed whose old
        link is still finishing calls under the old configuration.
        """
        status = self._ctx.reload.snapshot()
        status["draining"] = sorted({link.name for link in self._ctx.links.values() if link.retiring})
        return status

    def server_tools(self, name: str) -> list[JSONObject] | None:
        """A copy of the tool definitions server ``name`` listed, as it sent them.

        ``None`` when the server is not configured or has not listed its tools
        yet.
        """
        pool = self._ctx.pools.get(name)
        listed = [link.tools for link in pool.links() if link.tools is not None] if pool is not None else []
        return list(listed[0]) if listed else None

    def server_states(self) -> dict[str, ServerState]:
        """Each server's state in one word (see :class:`~lockgate.core._pool.ServerState`)."""
        return {name: pool.summary(self._ctx.now) for name, pool in self._ctx.pools.items()}

    def readiness(self) -> JSONObject:
        """The ``/ready`` answer: ready once every eager server has finished its first start attempt.

        ``status`` is ``"ready"``, ``"degraded"`` (ready, but some server is
        unavailable: ``reason`` names each with its last error; still a 200,
        so an orchestrator keeps routing to a gateway that serves the other
        servers) or ``"not_ready"`` (with a ``reason``); ``servers`` maps
        each server to its state either way, ``eras`` to the era of MCP the
        gateway speaks to it (``"stateless"``, ``"handshake"``, or ``None``
        before its first handshake).
        """
        ctx = self._ctx
        servers = {name: state.value for name, state in self.server_states().items()}
        # The era of MCP the gateway speaks to each (None before its first handshake).
        eras = {name: pool.era for name, pool in ctx.pools.items()}
        reason: str | None = None
        if not ctx.started:
            reason = "the gateway has not started its servers yet"
        elif ctx.closing:
            reason = "the gateway is shutting down"
        elif ctx.config.settings.init_strategy == "eager":
            waiting = sorted(
                name
                for name, pool in ctx.pools.items()
                if not all(_first_start_done(link) for link in pool.shared[: pool.spec.max_processes])
            )
            if waiting:
                reason = f"waiting for the first start of: {', '.join(waiting)}"
        if reason is not None:
            return {"status": "not_ready", "reason": reason, "servers": servers, "eras": eras}
        down = [name for name in sorted(servers) if self._down(name)]
        if down:
            return {"status": "degraded", "reason": "unavailable: " + "; ".join(self._why_down(name) for name in down), "servers": servers, "eras": eras}
        return {"status": "ready", "servers": servers, "eras": eras}

    def _down(self, name: str) -> bool:
        """Whether a server cannot serve now: no instance takes requests, or its last start failed and none is up."""
        pool = self._ctx.pools[name]
        state = pool.summary(self._ctx.now)
        if state is ServerState.UNAVAILABLE:
            return True
        return state in (ServerState.IDLE, ServerState.STARTING) and any(i.failures for i in pool.instances)

    def _why_down(self, name: str) -> str:
        """``name (its last error)``, the last error of the instance that failed last."""
        errors = [i.last_error for i in sorted(self._ctx.pools[name].instances, key=lambda i: i.retry_at) if i.last_error]
        return f"{name} ({errors[-1]})" if errors else name


def _known_tools(pool: Pool) -> list[JSONObject] | None:
    """The tool list a server sent last, from a live link or the last one known; ``None`` before any."""
    listed = next((link.tools for link in pool.links() if link.tools is not None), None)
    if listed is None and pool.known is not None:
        listed = pool.known.tools
    return listed


def _first_start_done(link: Link) -> bool:
    """Whether an eagerly started link's first start attempt has ended, in success (READY) or failure."""
    if link.state in (State.READY, State.BACKOFF):
        return True
    starts = link.instance.starts
    return starts > 1 or (starts == 1 and link.state is State.IDLE)
