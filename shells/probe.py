"""Start servers once, through the real gateway, to see what they offer.

``lockgate check`` and ``lockgate explain`` need each server's handshake and
tool list. Rather than a second MCP client, :func:`probe_servers` runs the
gateway core itself through the :class:`~.runtime.Runtime` and the stdio
downstream shell, exactly as ``lockgate serve`` does, with the eager init
strategy and no audit log: it reports ``GatewayStarted``, waits until every
server is ``ready`` or ``backoff`` (failed) in :meth:`Gateway.status`, reads
the tool lists, and shuts everything down.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import trio

from lockgate.core import Config, Gateway, GatewayStarted, ShutdownRequested

from .runtime import Runtime

__all__ = ["ProbedServer", "probe_servers"]

_SETTLED = frozenset({"ready", "degraded", "unavailable"})
_POLL = 0.02


@dataclass(frozen=True, slots=True)
class ProbedServer:
    """One server after its start attempt.

    ``status`` is its entry in ``Gateway.status()["servers"]`` (``state``,
    ``protocol_version``, ``server_info``, ``last_error``, ...); ``tools`` the
    definitions it listed, or ``None`` when it did not get that far.
    """

    name: str
    status: Mapping[str, Any]
    tools: list[dict[str, Any]] | None

    @property
    def ok(self) -> bool:
        return self.status.get("state") in ("ready", "degraded") and self.tools is not None


async def probe_servers(
    config: Config, names: Iterable[str] | None = None, *, timeout: float | None = None
) -> dict[str, ProbedServer]:
    """Start the servers ``names`` (default: all), list their tools, stop them.

    Args:
        config: a valid configuration; its servers are started as configured.
        names: which of its servers to start.
        timeout: seconds to wait for every server to settle; default the
            handshake timeout plus five seconds. A server still starting then
            is reported in the state it reached.

    Returns:
        Every probed server by name, in configuration order.
    """
    chosen = list(config.servers) if names is None else [n for n in config.servers if n in set(names)]
    settings = replace(config.settings, init_strategy="eager", audit_log="")
    config = replace(config, servers={n: config.servers[n] for n in chosen}, settings=settings)
    gateway = Gateway(config)
    runtime = Runtime(gateway, settings=settings)
    if timeout is None:
        timeout = settings.start_timeout_ms / 1000 + 5
    async with trio.open_nursery() as nursery:
        await nursery.start(runtime.run)
        await runtime.feed(GatewayStarted(now=trio.current_time()))
        with trio.move_on_after(timeout):
            while not all(_settled(s) for s in gateway.status()["servers"].values()):
                await trio.sleep(_POLL)
        servers = gateway.status()["servers"]
        found = {n: ProbedServer(name=n, status=servers[n], tools=gateway.server_tools(n)) for n in chosen}
        await runtime.feed(ShutdownRequested(now=trio.current_time()))
        await runtime.aclose()
    return found


def _settled(status: Mapping[str, Any]) -> bool:
    """Every instance is up, or has failed at least once (a restart may follow at once)."""
    if status["state"] in _SETTLED:
        return True
    return all(i["state"] == "ready" or i["consecutive_failures"] >= 1 for i in status["instances"])
