"""Error codes Lockgate answers with, and the exception for core misuse.

JSON-RPC 2.0 standard codes (https://www.jsonrpc.org/specification#error_object)
plus the gateway's own, which are stable and documented in the README. Every
gateway error carries a ``data`` object whose ``code`` field is the name below,
so clients can branch on a string instead of a number.
"""

from __future__ import annotations

import enum

__all__ = ["ErrorCode", "LocalProtocolError"]


class ErrorCode(enum.IntEnum):
    """Every error code the gateway puts in a JSON-RPC error object."""

    PARSE_ERROR = -32700
    INVALID_REQUEST = -32600
    METHOD_NOT_FOUND = -32601
    INVALID_PARAMS = -32602
    INTERNAL_ERROR = -32603

    DENIED_BY_POLICY = -32000
    SERVER_UNAVAILABLE = -32001
    TOOL_NOT_FOUND = -32002
    INVALID_AGENT_ID = -32003
    TIMEOUT = -32004
    RATE_LIMITED = -32005
    NO_FALLBACK_CONFIGURED = -32006
    FALLBACK_AGENT_NOT_IN_RULES = -32007
    CANCELLED = -32008
    #: A pinned tool's definition changed (or it is new under strict pinning,
    #: or it cannot be compared): quarantined until an operator accepts it.
    #: Not -32006, which the design first gave it: -32006 to -32008 are
    #: ``NO_FALLBACK_CONFIGURED``, ``FALLBACK_AGENT_NOT_IN_RULES`` and
    #: ``CANCELLED``, kept with agent-mcp-gateway's numbers for its users.
    TOOL_CHANGED = -32009
    #: Rate limits are shared through a store (``GATEWAY_REDIS_URL``) that
    #: does not answer, and ``GATEWAY_REDIS_FAILURE=closed`` (the default)
    #: refuses the calls a limit applies to rather than let them go unchecked.
    RATE_LIMIT_UNAVAILABLE = -32010

    #: MCP 2026-07-28 (basic/transports): an HTTP routing header
    #: (``MCP-Protocol-Version``, ``Mcp-Method``, ``Mcp-Name``) disagrees
    #: with the body it travels with.
    HEADER_MISMATCH = -32020
    #: MCP 2026-07-28: a request needs a client capability it did not declare.
    MISSING_CLIENT_CAPABILITY = -32021
    #: MCP 2026-07-28: ``_meta``'s protocol version is one the gateway does not
    #: speak; ``data.supported`` lists those it does, ``data.requested`` echoes it.
    UNSUPPORTED_PROTOCOL_VERSION = -32022


class LocalProtocolError(Exception):
    """The shell misused the core (an event it cannot have seen, for instance).

    A misbehaving *peer* never raises: it becomes an error response. This is
    only for bugs in the code that drives the core.
    """
