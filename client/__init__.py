"""Lockgate's Python client: the gateway's REST API from Python, and an MCP client that falls back to a server directly.

- :class:`GatewayClient` (async, asyncio or trio) and :class:`SyncGatewayClient`
  (blocking): every REST endpoint as a method with a typed result, the gateway's
  refusals as :class:`GatewayError` subclasses, retries of a 503 or a failed
  connection with capped exponential backoff.
- :class:`MCPClient`: MCP to the gateway's ``/mcp``, and to the server directly
  when the gateway cannot be reached. It needs the MCP SDK
  (``pip install 'lockgate[client]'``), imported only when a session starts.

The package imports neither the gateway nor the SDK, so it stays light.
"""

from __future__ import annotations

from ._errors import (
    AuthenticationError,
    BadRequest,
    Conflict,
    DownstreamError,
    GatewayError,
    GatewayTimeout,
    GatewayUnreachable,
    NotFound,
    PermissionDenied,
    RateLimited,
    Unavailable,
)
from ._gateway import GatewayClient
from ._mcp import MCPClient
from ._models import (
    AuditLog,
    AuditRecord,
    CallToolResult,
    Deregistration,
    GatewayHealth,
    GatewayStats,
    GetPromptResult,
    PromptList,
    ReadResourceResult,
    Registration,
    Registry,
    RegistryInstance,
    RegistryServer,
    ResourceList,
    ServerHealth,
    ServerStats,
    Tool,
    ToolCall,
    ToolList,
)
from ._requests import RetryPolicy
from ._sync import SyncGatewayClient

__all__ = [
    "AuditLog",
    "AuditRecord",
    "AuthenticationError",
    "BadRequest",
    "CallToolResult",
    "Conflict",
    "Deregistration",
    "DownstreamError",
    "GatewayClient",
    "GatewayError",
    "GatewayHealth",
    "GatewayStats",
    "GatewayTimeout",
    "GatewayUnreachable",
    "GetPromptResult",
    "MCPClient",
    "NotFound",
    "PermissionDenied",
    "PromptList",
    "RateLimited",
    "ReadResourceResult",
    "Registration",
    "Registry",
    "RegistryInstance",
    "RegistryServer",
    "ResourceList",
    "RetryPolicy",
    "ServerHealth",
    "ServerStats",
    "SyncGatewayClient",
    "Tool",
    "ToolCall",
    "ToolList",
    "Unavailable",
]
