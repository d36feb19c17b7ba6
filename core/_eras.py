"""The two eras of MCP, and the names both sides of the gateway share for the stateless one.

The *handshake era* (2024-11-05 to 2025-11-25) opens a session with
``initialize``; the *stateless era* (2026-07-28) has no session: every
request carries its protocol version and the client's capabilities in
``params._meta``, a server answers ``server/discover``, results say what
they are in ``resultType``, and a server that needs something from the
client returns ``input_required`` instead of asking
(https://modelcontextprotocol.io/specification/2026-07-28/basic).

Nothing here decides anything; the constants keep the front
(:mod:`._stateless`) and the links to servers (:mod:`._links`) spelling the
protocol the same way.
"""

from __future__ import annotations

from typing import Final, Literal

__all__ = [
    "CLIENT_CAPABILITIES_KEY",
    "CLIENT_INFO_KEY",
    "Era",
    "HANDSHAKE_VERSIONS",
    "LOG_LEVEL_KEY",
    "MODERN_VERSIONS",
    "NAME_BEARING",
    "PROTOCOL_VERSION_KEY",
    "SERVER_INFO_KEY",
    "SUBSCRIPTION_ID_KEY",
    "is_modern_version",
]

#: Oldest first; the last one is what the gateway offers a client it cannot match.
HANDSHAKE_VERSIONS: Final = ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25")
#: The stateless revisions the gateway speaks, oldest first.
MODERN_VERSIONS: Final = ("2026-07-28",)

#: Which era a client request or a link to a server speaks.
Era = Literal["handshake", "stateless"]

# The ``_meta`` keys of the stateless era's per-request envelope (basic/index, "Per-request protocol fields").
PROTOCOL_VERSION_KEY: Final = "io.modelcontextprotocol/protocolVersion"
CLIENT_CAPABILITIES_KEY: Final = "io.modelcontextprotocol/clientCapabilities"
CLIENT_INFO_KEY: Final = "io.modelcontextprotocol/clientInfo"
LOG_LEVEL_KEY: Final = "io.modelcontextprotocol/logLevel"
#: In a result's ``_meta``: who answered.
SERVER_INFO_KEY: Final = "io.modelcontextprotocol/serverInfo"
#: In each notification of a ``subscriptions/listen`` stream: which subscription it belongs to.
SUBSCRIPTION_ID_KEY: Final = "io.modelcontextprotocol/subscriptionId"

#: Requests whose item is mirrored in the ``Mcp-Name`` HTTP header, and the parameter that names it.
NAME_BEARING: Final = {"tools/call": "name", "prompts/get": "name", "resources/read": "uri"}


def is_modern_version(version: object) -> bool:
    """Whether ``version`` is a stateless-era revision the gateway speaks."""
    return isinstance(version, str) and version in MODERN_VERSIONS
