"""What the REST API shows of the gateway: health per server and in all, and the statistics.

Read-only, like :mod:`._views`, whose figures these are, in the shapes the
Enhanced MCP Gateway's users script against (``GET /mcp/{server}/health``,
``GET /gateway/health``, ``GET /gateway/stats``). An instance is healthy
while it has failed nothing since its last answer and its breaker lets
requests through; its status is the state of its link (``idle`` before a
first use, ``ready``, ``backoff`` after a crash, ...).
"""

from __future__ import annotations

from typing import Any

from . import __version__
from ._context import Context
from ._instance import Breaker, Instance
from ._pool import Pool, ServerState

__all__ = ["RestViews"]

JSONObject = dict[str, Any]

#: Server states that count as healthy in ``/gateway/health``: serving, or ready to start on use.
_HEALTHY = frozenset({ServerState.READY, ServerState.IDLE})


class RestViews:
    """The REST API's health and statistics views (see the module docstring)."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx

    def server_health(self, name: str) -> JSONObject | None:
        """``GET /mcp/{server}/health``; ``None`` for a server that is not configured."""
        pool = self._ctx.pools.get(name)
        if pool is None:
            return None
        now = self._ctx.now
        instances = {inst.id: {"healthy": _healthy(inst, now), "status": _status(pool, inst)} for inst in pool.instances}
        healthy = sum(1 for entry in instances.values() if entry["healthy"])
        total = len(pool.instances)
        return {
            "template_name": name,
            "total_instances": total,
            "healthy_instances": healthy,
            "health_percentage": round(100.0 * healthy / total, 1) if total else 0.0,
            "instances": instances,
        }

    def gateway_health(self, uptime: float) -> JSONObject:
        """``GET /gateway/health``: healthy, degraded (some server not serving) or unhealthy (one unavailable)."""
        now = self._ctx.now
        servers: JSONObject = {}
        states = []
        for name, pool in self._ctx.pools.items():
            state = pool.summary(now)
            states.append(state)
            servers[name] = {
                "state": state.value,
                "total_instances": len(pool.instances),
                "healthy_instances": sum(1 for inst in pool.instances if _healthy(inst, now)),
            }
        if ServerState.UNAVAILABLE in states:
            status = "unhealthy"
        elif all(state in _HEALTHY for state in states):
            status = "healthy"
        else:
            status = "degraded"
        return {"status": status, "version": __version__, "uptime_seconds": round(uptime, 3), "servers": servers}

    def stats(self, uptime: float, reload: JSONObject) -> JSONObject:
        """``GET /gateway/stats``: requests, latency and errors, load per instance, the health checker's view."""
        ctx = self._ctx
        now = ctx.now
        metrics = ctx.metrics.snapshot(uptime=uptime)
        calls = metrics["calls"]
        by_server = metrics["servers"]
        settings = ctx.config.settings
        servers: JSONObject = {}
        checks: JSONObject = {}
        for name, pool in ctx.pools.items():
            seen = by_server.get(name, {"count": 0, "errors": 0, "error_rate": 0.0, "latency_ms": {"p50": 0.0, "p95": 0.0, "p99": 0.0}})
            total = sum(inst.calls for inst in pool.instances)
            servers[name] = {
                "requests": seen["count"],
                "errors": seen["errors"],
                "error_rate": seen["error_rate"],
                "latency_ms": seen["latency_ms"],
                "load_distribution": {
                    inst.id: {
                        "calls": inst.calls,
                        "in_flight": sum(link.in_flight for link in pool.links() if link.instance is inst),
                        "share": round(inst.calls / total, 4) if total else 0.0,
                    }
                    for inst in pool.instances
                },
            }
            for inst in pool.instances:
                breaker = inst.breaker(now)
                checks[f"{name}/{inst.id}"] = {
                    "healthy": _healthy(inst, now),
                    # A probe under way is half open to anyone watching, as in the status.
                    "breaker": Breaker.HALF_OPEN.value if breaker is Breaker.PROBING else breaker.value,
                    "consecutive_failures": inst.failures,
                    "last_error": inst.last_error,
                }
        return {
            "uptime_seconds": round(uptime, 3),
            "requests": {"total": calls["count"], "errors": calls["errors"], "error_rate": calls["error_rate"]},
            "latency_ms": calls["latency_ms"],
            "sessions": {"active": sum(1 for s in ctx.clients.values() if s.mode != "rest")},
            "calls_in_flight": sum(len(s.calls) for s in ctx.clients.values()),
            "servers": servers,
            "health_checker": {
                "enabled": settings.health_interval > 0,
                "interval_seconds": settings.health_interval,
                "timeout_seconds": settings.health_timeout,
                "instances": checks,
            },
            "reload": reload,
        }


def _healthy(inst: Instance, now: float) -> bool:
    return inst.failures == 0 and inst.accepts(now)


def _status(pool: Pool, inst: Instance) -> str:
    """The state of the instance's shared link; per-client, the best of its clients' links, else idle."""
    states = [link.state.value for link in pool.links() if link.instance is inst]
    if not states:
        return "idle"
    return "ready" if "ready" in states else states[0]
