"""What the gateway's REST endpoints answer, as pydantic models of the client's own.

The client does not import the gateway's shells, so these are the same shapes
written again from the REST contract, on the client's side of the wire.

Two kinds of model. The gateway's own answers (health, stats, registry,
registration) name their fields; unknown fields are kept (``extra="allow"``),
so a newer gateway that adds one does not break an older client. What passes
through from a downstream server (tools, call results, resources, prompts) is
MCP's, and a server may send anything MCP allows: those models name the
fields a caller reads most (in snake case, with MCP's camel case as aliases)
and keep everything else as sent, in ``model_extra``; the lists hold the items
as the server sent them (dicts), never re-serialised.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "AuditLog",
    "AuditRecord",
    "CallToolResult",
    "Deregistration",
    "GatewayHealth",
    "GatewayStats",
    "GetPromptResult",
    "HealthChecker",
    "HealthCheckedInstance",
    "InstanceHealth",
    "InstanceLoad",
    "Latency",
    "PromptList",
    "ReadResourceResult",
    "Registration",
    "Registry",
    "RegistryInstance",
    "RegistryServer",
    "RequestCounts",
    "ResourceList",
    "ServerHealth",
    "ServerState",
    "ServerStats",
    "Tool",
    "ToolCall",
    "ToolList",
]


class _Model(BaseModel):
    """Permissive: unknown fields are kept, and fields may be given by name or by alias."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)


# --- What passes through from a downstream server (MCP 2025-11-25, "Tools", "Resources", "Prompts") ---


class Tool(_Model):
    """A tool as its server defines it; ``model_extra`` holds ``title``, ``annotations``, ``_meta``, ...."""

    name: str
    description: str | None = None
    input_schema: dict[str, Any] = Field(default_factory=dict, alias="inputSchema")
    output_schema: dict[str, Any] | None = Field(default=None, alias="outputSchema")


class ToolList(_Model):
    """``GET /mcp/{server}/tools/list``: the tools the agent may see, as the server defines them."""

    tools: list[Tool]
    count: int = 0


class CallToolResult(_Model):
    """A tool's result, unchanged from the server: content blocks, optional structured content, ``is_error``."""

    content: list[dict[str, Any]] = Field(default_factory=list)
    structured_content: Any = Field(default=None, alias="structuredContent")
    is_error: bool = Field(default=False, alias="isError")

    def text(self) -> str:
        """The text of every text content block, one after another: what most tools answer."""
        return "".join(str(block.get("text", "")) for block in self.content if block.get("type") == "text")


class ResourceList(_Model):
    """``GET /mcp/{server}/resources/list``: resources and resource templates as the server lists them."""

    resources: list[dict[str, Any]] = Field(default_factory=list)
    resource_templates: list[dict[str, Any]] = Field(default_factory=list, alias="resourceTemplates")
    count: int = 0


class ReadResourceResult(_Model):
    """``POST /mcp/{server}/resources/read``: the resource's contents (``uri``, ``mimeType``, ``text`` or ``blob``)."""

    contents: list[dict[str, Any]] = Field(default_factory=list)


class PromptList(_Model):
    """``GET /mcp/{server}/prompts/list``: the prompts as the server lists them."""

    prompts: list[dict[str, Any]] = Field(default_factory=list)
    count: int = 0


class GetPromptResult(_Model):
    """``POST /mcp/{server}/prompts/get``: the prompt's messages and optional description."""

    messages: list[dict[str, Any]] = Field(default_factory=list)
    description: str | None = None


class ToolCall(_Model):
    """One call of a batch (``POST /mcp/batch``)."""

    server: str
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)
    timeout_ms: int | None = None
    agent_id: str | None = None


# --- The gateway's own answers ---


class InstanceHealth(_Model):
    healthy: bool
    status: str


class ServerHealth(_Model):
    """``GET /mcp/{server}/health``: how many of a server's instances are healthy, and each one's link state."""

    template_name: str
    total_instances: int
    healthy_instances: int
    health_percentage: float
    instances: dict[str, InstanceHealth] = Field(default_factory=dict)


class ServerState(_Model):
    state: str
    total_instances: int = 0
    healthy_instances: int = 0


class GatewayHealth(_Model):
    """``GET /gateway/health``: ``healthy`` when every server is ready or idle, ``unhealthy`` when one is unavailable."""

    status: Literal["healthy", "degraded", "unhealthy"] | str
    version: str = ""
    uptime_seconds: float = 0.0
    servers: dict[str, ServerState] = Field(default_factory=dict)


class RequestCounts(_Model):
    total: int = 0
    errors: int = 0
    error_rate: float = 0.0


class Latency(_Model):
    """Latency percentiles in milliseconds."""

    p50: float = 0.0
    p95: float = 0.0
    p99: float = 0.0


class InstanceLoad(_Model):
    calls: int = 0
    in_flight: int = 0
    share: float = 0.0


class ServerStats(_Model):
    requests: int = 0
    errors: int = 0
    error_rate: float = 0.0
    latency_ms: Latency = Field(default_factory=Latency)
    load_distribution: dict[str, InstanceLoad] = Field(default_factory=dict)


class HealthCheckedInstance(_Model):
    healthy: bool
    breaker: str = "closed"
    consecutive_failures: int = 0
    last_error: str | None = None


class HealthChecker(_Model):
    enabled: bool = False
    interval_seconds: float = 0.0
    timeout_seconds: float = 0.0
    instances: dict[str, HealthCheckedInstance] = Field(default_factory=dict)
    """Keyed by ``"<server>/<instance id>"``."""


class GatewayStats(_Model):
    """``GET /gateway/stats``: request counts, latency, sessions, per-server load and the health checker."""

    uptime_seconds: float = 0.0
    requests: RequestCounts = Field(default_factory=RequestCounts)
    latency_ms: Latency = Field(default_factory=Latency)
    sessions: dict[str, int] = Field(default_factory=dict)
    calls_in_flight: int = 0
    servers: dict[str, ServerStats] = Field(default_factory=dict)
    health_checker: HealthChecker = Field(default_factory=HealthChecker)
    reload: dict[str, Any] = Field(default_factory=dict)


class RegistryInstance(_Model):
    """One instance of a server, from the servers file or registered at run time; never env or header values."""

    id: str
    source: Literal["file", "registry"] | str
    transport: Literal["stdio", "http"] | str
    state: str = ""
    weight: int = 1
    healthy: bool = False
    endpoint: str | None = None
    command: str | None = None
    args: list[str] = Field(default_factory=list)
    working_dir: str | None = None
    env_keys: list[str] = Field(default_factory=list)
    description: str = ""


class RegistryServer(_Model):
    source: Literal["file", "registry", "both"] | str
    description: str = ""
    strategy: str = ""
    state: str = ""
    instances: list[RegistryInstance] = Field(default_factory=list)


class Registry(_Model):
    """``GET /gateway/registry``: every server and its instances, whether from the file or registered."""

    servers: dict[str, RegistryServer] = Field(default_factory=dict)


class Registration(_Model):
    """``POST /gateway/register``'s answer: the new instance's id (given, or ``reg-`` and 8 hex digits)."""

    server: str
    instance_id: str
    transport: str
    registered: bool = True


class Deregistration(_Model):
    """``DELETE /gateway/deregister/{server}/{instance_id}``'s answer."""

    server: str
    instance_id: str
    deregistered: bool = True


class AuditRecord(_Model):
    """One audit record; the fields beyond these (``principal``, ``args``, ``transport``, ...) are in ``model_extra``."""

    time: str | None = None
    agent: str | None = None
    operation: str | None = None
    server: str | None = None
    tool: str | None = None
    decision: str | None = None
    rule: str | None = None
    latency_ms: float | None = None
    error_code: str | None = None


class AuditLog(_Model):
    """``GET /gateway/audit``: the newest records first."""

    records: list[AuditRecord] = Field(default_factory=list)
