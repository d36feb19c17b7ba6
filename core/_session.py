"""One client's MCP session as the gateway sees it (handshake era).

Protocol versions: MCP 2024-11-05 to 2025-11-25 open a session with
``initialize`` and ``notifications/initialized``
(https://modelcontextprotocol.io/specification/2025-11-25/basic/lifecycle).
The negotiated version is a property of the session, not of the transport,
so one gateway serves clients of different revisions side by side.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ._downstream import Call
from ._events import ClientId

__all__ = ["HANDSHAKE_VERSIONS", "LOG_LEVELS", "ClientSession", "negotiate_version"]

#: Oldest first; the last one is what we offer a client we cannot match.
HANDSHAKE_VERSIONS = ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25")

#: RFC 5424 severities, as MCP's ``logging/setLevel`` names them.
LOG_LEVELS = ("debug", "info", "notice", "warning", "error", "critical", "alert", "emergency")


def negotiate_version(requested: str) -> str:
    """The client's version when we speak it, else the newest one we do (spec: lifecycle)."""
    return requested if requested in HANDSHAKE_VERSIONS else HANDSHAKE_VERSIONS[-1]


@dataclass(slots=True, kw_only=True)
class ClientSession:
    """What the gateway remembers about one connected client."""

    id: ClientId
    transport: str
    #: ``initialize`` has been answered: requests are served from now on.
    initialized: bool = False
    #: ``notifications/initialized`` arrived.
    ready: bool = False
    protocol_version: str | None = None
    client_info: Any = None
    capabilities: Any = None
    log_level: str = "info"
    #: Requests in flight through a downstream, by the client's request id.
    calls: dict[Any, Call] = field(default_factory=dict)
