"""The REST API's request and response bodies, as pydantic models (see the REST contract).

They serve two purposes. Request models validate what a client sends: the
handler calls ``Model.model_validate_json(body)`` and turns a
:class:`~pydantic.ValidationError` into a 400 with
:func:`validation_error_data`. Every model, request or response, is also the
source of the OpenAPI document's component schemas (:mod:`.openapi`), so the
documentation cannot drift from what is validated.

Three kinds of model, three configurations:

- Requests (``_Request``) are strict: unknown keys are refused, and JSON types
  are not coerced (``"5"`` is not an integer, ``1`` is not a string), so a
  wrong type is a 400 that names the field.
- MCP results (``_Passthrough``: :class:`Tool`, :class:`CallToolResult`, ...)
  allow any extra key. They describe what a downstream server sends, which
  the gateway forwards unchanged; a handler never re-serialises one of these
  in place of the server's JSON, since unknown fields and ``_meta`` must survive.
- The gateway's own answers (``_Answer``) list their fields; extra keys are
  ignored rather than refused, so that a field added later breaks no client.

Fields that MCP omits rather than sets to ``null`` are typed
``X | SkipJsonSchema[None] = None``: optional, and documented as ``X`` alone.
"""

from __future__ import annotations

import enum
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.json_schema import SkipJsonSchema

__all__ = [
    "AGENT_ID_DESCRIPTION",
    "INSTANCE_ID_PATTERN",
    "MAX_BATCH_CALLS",
    "AgentQuery",
    "ApiErrorCode",
    "AuditArgs",
    "AuditQuery",
    "AuditRecord",
    "AuditRecords",
    "BatchCall",
    "BatchCallFailed",
    "BatchCallSucceeded",
    "BatchRequest",
    "BatchResponse",
    "CallToolRequest",
    "CallToolResult",
    "ContentBlock",
    "DeregisterResponse",
    "ErrorBody",
    "ErrorResponse",
    "GatewayHealth",
    "GatewayServerHealth",
    "GatewayStats",
    "GetPromptRequest",
    "GetPromptResult",
    "HealthChecker",
    "InstanceCheck",
    "InstanceHealth",
    "InstanceLoad",
    "LatencyMs",
    "Prompt",
    "PromptArgument",
    "PromptList",
    "PromptMessage",
    "ReadResourceRequest",
    "ReadResourceResult",
    "RegisterRequest",
    "RegisterResponse",
    "Registry",
    "RegistryInstance",
    "RegistryServer",
    "ReloadStatus",
    "RequestCounts",
    "Resource",
    "ResourceContents",
    "ResourceList",
    "ResourceTemplate",
    "ServerHealth",
    "ServerStats",
    "Sessions",
    "Tool",
    "ToolList",
    "validation_error_code",
    "validation_error_data",
]

#: The most calls one ``POST /mcp/batch`` may carry.
MAX_BATCH_CALLS = 100

#: What a registered instance's id may look like (``instance_id`` of ``POST /gateway/register``).
INSTANCE_ID_PATTERN = r"^[A-Za-z0-9._-]{1,64}$"

AGENT_ID_DESCRIPTION = (
    "The agent the request acts as; else the credential's default agent, else GATEWAY_DEFAULT_AGENT."
)

JSONObject = dict[str, Any]


def _title(name: str, _info: object) -> str:
    # A property's title is its JSON key; pydantic's default ("Inputschema") helps no reader.
    return name


class _Request(BaseModel):
    """A request body: unknown keys refused, JSON types taken as they are."""

    model_config = ConfigDict(extra="forbid", strict=True, field_title_generator=_title)


class _Passthrough(BaseModel):
    """An MCP shape a downstream server defines: described, not constrained, and forwarded unchanged."""

    model_config = ConfigDict(extra="allow", field_title_generator=_title)


class _Answer(BaseModel):
    """A body the gateway itself writes."""

    model_config = ConfigDict(extra="ignore", field_title_generator=_title)


class _Query(BaseModel):
    """Query parameters: strings from the URL, so numbers are parsed (not strict); unknown ones refused."""

    model_config = ConfigDict(extra="forbid", field_title_generator=_title)


# --- Errors -------------------------------------------------------------------


class ApiErrorCode(enum.StrEnum):
    """The ``code`` of an error body: what went wrong, as a name a client can branch on."""

    INVALID_REQUEST = "INVALID_REQUEST"
    INVALID_PARAMS = "INVALID_PARAMS"
    PARSE_ERROR = "PARSE_ERROR"
    UNAUTHORIZED = "UNAUTHORIZED"
    FORBIDDEN = "FORBIDDEN"
    DENIED_BY_POLICY = "DENIED_BY_POLICY"
    SERVER_NOT_FOUND = "SERVER_NOT_FOUND"
    TOOL_NOT_FOUND = "TOOL_NOT_FOUND"
    RESOURCE_NOT_FOUND = "RESOURCE_NOT_FOUND"
    # A downstream server's "method not found" (-32601), e.g. prompts from a server without any.
    METHOD_NOT_FOUND = "METHOD_NOT_FOUND"
    NOT_FOUND = "NOT_FOUND"
    CONFLICT = "CONFLICT"
    PAYLOAD_TOO_LARGE = "PAYLOAD_TOO_LARGE"
    RATE_LIMITED = "RATE_LIMITED"
    SERVER_UNAVAILABLE = "SERVER_UNAVAILABLE"
    DOWNSTREAM_ERROR = "DOWNSTREAM_ERROR"
    TIMEOUT = "TIMEOUT"
    INVALID_AGENT_ID = "INVALID_AGENT_ID"
    NO_FALLBACK_CONFIGURED = "NO_FALLBACK_CONFIGURED"
    FALLBACK_AGENT_NOT_IN_RULES = "FALLBACK_AGENT_NOT_IN_RULES"
    CANCELLED = "CANCELLED"
    INTERNAL_ERROR = "INTERNAL_ERROR"
    METHOD_NOT_ALLOWED = "METHOD_NOT_ALLOWED"


class ErrorBody(_Answer):
    """What went wrong: a code to branch on, a message for people, the HTTP status again, and details."""

    # A string, not the enum: a client generated from this document must not
    # break on a code added later.
    code: str = Field(description="One of: " + ", ".join(ApiErrorCode) + ".", examples=["DENIED_BY_POLICY"])
    message: str
    status: int = Field(ge=400, le=599, description="The HTTP status of the response, repeated.")
    data: JSONObject = Field(
        default_factory=dict,
        description=(
            "Details by code: errors (400, the fields at fault), retry_after_ms (429), "
            "downstream_code (502: the server's own JSON-RPC error code), the deciding rule (403)."
        ),
    )


class ErrorResponse(_Answer):
    """Every non-2xx response of the REST API."""

    error: ErrorBody


def validation_error_data(exc: ValidationError) -> JSONObject:
    """The ``data`` of a 400 for a body or query that failed validation: where, what, and which kind.

    ``{"errors": [{"loc": [...], "msg": ..., "type": ...}]}`` in pydantic's
    order. The values the client sent are never echoed (no ``input``, no
    ``ctx``): a body may carry secrets, and the error body may be logged.
    """
    errors = [
        {"loc": list(error["loc"]), "msg": error["msg"], "type": error["type"]}
        for error in exc.errors(include_url=False, include_input=False, include_context=False)
    ]
    return {"errors": errors}


def validation_error_code(exc: ValidationError) -> ApiErrorCode:
    """``PARSE_ERROR`` when the body was not JSON at all, else ``INVALID_REQUEST`` (it was, of the wrong shape)."""
    if any(error["type"] == "json_invalid" for error in exc.errors(include_url=False, include_input=False)):
        return ApiErrorCode.PARSE_ERROR
    return ApiErrorCode.INVALID_REQUEST


# --- Query parameters ---------------------------------------------------------


class AgentQuery(_Query):
    """The query parameters of every ``/mcp/{server}/...`` endpoint."""

    agent_id: str | SkipJsonSchema[None] = Field(default=None, description=AGENT_ID_DESCRIPTION)


class AuditQuery(_Query):
    """The query parameters of ``GET /gateway/audit``."""

    limit: int = Field(default=50, ge=1, le=1000, description="How many records, newest first.")


# --- MCP shapes, forwarded unchanged -------------------------------------------


class ContentBlock(_Passthrough):
    """One piece of content: text, image, audio, resource_link or resource (MCP 2025-11-25, ContentBlock)."""

    type: str = Field(examples=["text"])


class Tool(_Passthrough):
    """A tool as the downstream server defines it (MCP ``Tool``)."""

    name: str
    title: str | SkipJsonSchema[None] = None
    description: str | SkipJsonSchema[None] = None
    inputSchema: JSONObject = Field(description="The JSON Schema of the tool's arguments.")
    outputSchema: JSONObject | SkipJsonSchema[None] = None
    annotations: JSONObject | SkipJsonSchema[None] = None


class CallToolResult(_Passthrough):
    """A tool call's result as the downstream server sent it (MCP ``CallToolResult``)."""

    content: list[ContentBlock]
    structuredContent: JSONObject | SkipJsonSchema[None] = None
    isError: bool | SkipJsonSchema[None] = Field(
        default=None, description="True when the tool itself failed (the call still succeeded: 200)."
    )


class Resource(_Passthrough):
    """A resource as the downstream server lists it (MCP ``Resource``)."""

    uri: str
    name: str
    title: str | SkipJsonSchema[None] = None
    description: str | SkipJsonSchema[None] = None
    mimeType: str | SkipJsonSchema[None] = None
    size: int | SkipJsonSchema[None] = None


class ResourceTemplate(_Passthrough):
    """A resource template as the downstream server lists it (MCP ``ResourceTemplate``)."""

    uriTemplate: str
    name: str
    title: str | SkipJsonSchema[None] = None
    description: str | SkipJsonSchema[None] = None
    mimeType: str | SkipJsonSchema[None] = None


class ResourceContents(_Passthrough):
    """One resource's contents: ``text``, or ``blob`` in base64 (MCP ``TextResourceContents`` / ``BlobResourceContents``)."""

    uri: str
    mimeType: str | SkipJsonSchema[None] = None
    text: str | SkipJsonSchema[None] = None
    blob: str | SkipJsonSchema[None] = None


class ReadResourceResult(_Passthrough):
    """A resource read's result as the downstream server sent it (MCP ``ReadResourceResult``)."""

    contents: list[ResourceContents]


class PromptArgument(_Passthrough):
    """One argument a prompt takes (MCP ``PromptArgument``)."""

    name: str
    title: str | SkipJsonSchema[None] = None
    description: str | SkipJsonSchema[None] = None
    required: bool | SkipJsonSchema[None] = None


class Prompt(_Passthrough):
    """A prompt as the downstream server lists it (MCP ``Prompt``)."""

    name: str
    title: str | SkipJsonSchema[None] = None
    description: str | SkipJsonSchema[None] = None
    arguments: list[PromptArgument] | SkipJsonSchema[None] = None


class PromptMessage(_Passthrough):
    """One message of a prompt (MCP ``PromptMessage``)."""

    role: str = Field(examples=["user"])
    content: ContentBlock


class GetPromptResult(_Passthrough):
    """A prompt's messages as the downstream server sent them (MCP ``GetPromptResult``)."""

    description: str | SkipJsonSchema[None] = None
    messages: list[PromptMessage]


# --- Per server: requests -------------------------------------------------------


class CallToolRequest(_Request):
    """The body of ``POST /mcp/{server}/tools/call``."""

    name: str = Field(min_length=1, description="The tool's name on that server.")
    arguments: JSONObject = Field(default_factory=dict)
    timeout_ms: int | None = Field(default=None, gt=0, description="Give up after this long (504); else the server's timeout.")
    agent_id: str | None = Field(default=None, description=AGENT_ID_DESCRIPTION)

    def mcp_params(self) -> JSONObject:
        """The params of the MCP request this is (``agent_id`` and ``timeout_ms`` travel apart)."""
        return {"name": self.name, "arguments": self.arguments}


class ReadResourceRequest(_Request):
    """The body of ``POST /mcp/{server}/resources/read``."""

    uri: str = Field(min_length=1)
    agent_id: str | None = Field(default=None, description=AGENT_ID_DESCRIPTION)

    def mcp_params(self) -> JSONObject:
        """The params of the MCP request this is."""
        return {"uri": self.uri}


class GetPromptRequest(_Request):
    """The body of ``POST /mcp/{server}/prompts/get``."""

    name: str = Field(min_length=1)
    arguments: dict[str, str] = Field(default_factory=dict, description="MCP prompt arguments are strings.")
    agent_id: str | None = Field(default=None, description=AGENT_ID_DESCRIPTION)

    def mcp_params(self) -> JSONObject:
        """The params of the MCP request this is."""
        return {"name": self.name, "arguments": self.arguments}


class BatchCall(_Request):
    """One tool call of a batch: a ``tools/call`` body plus the server it goes to."""

    server: str = Field(min_length=1)
    name: str = Field(min_length=1)
    arguments: JSONObject = Field(default_factory=dict)
    timeout_ms: int | None = Field(default=None, gt=0)
    agent_id: str | None = Field(default=None, description=AGENT_ID_DESCRIPTION)


class BatchRequest(_Request):
    """The body of ``POST /mcp/batch``: the calls run concurrently; the results come back in this order."""

    calls: list[BatchCall] = Field(max_length=MAX_BATCH_CALLS)


# --- Per server: responses ------------------------------------------------------


class ToolList(_Answer):
    """``GET /mcp/{server}/tools/list``: the server's tools the agent may use, as the server defines them."""

    tools: list[Tool]
    count: int = Field(ge=0)


class ResourceList(_Answer):
    """``GET /mcp/{server}/resources/list``: ``count`` is the number of ``resources`` (templates aside)."""

    resources: list[Resource]
    resourceTemplates: list[ResourceTemplate]
    count: int = Field(ge=0)


class PromptList(_Answer):
    """``GET /mcp/{server}/prompts/list``."""

    prompts: list[Prompt]
    count: int = Field(ge=0)


class InstanceHealth(_Answer):
    """One instance of a server, in ``GET /mcp/{server}/health``."""

    healthy: bool
    status: str = Field(description="The link's state: idle, starting, ready, backoff, ...", examples=["ready"])


class ServerHealth(_Answer):
    """``GET /mcp/{server}/health``: the server's instances, by instance id."""

    template_name: str = Field(description="The server's name.")
    total_instances: int = Field(ge=0)
    healthy_instances: int = Field(ge=0)
    health_percentage: float = Field(ge=0, le=100)
    instances: dict[str, InstanceHealth] = Field(
        description='By instance id: a file instance\'s "id", else its position ("0", "1", ...); a registered one\'s instance_id.'
    )


class BatchCallSucceeded(_Answer):
    """A batch call that returned a result (the tool may still report ``isError``)."""

    ok: Literal[True]
    status: Literal[200]
    result: CallToolResult


class BatchCallFailed(_Answer):
    """A batch call that failed: the error body the same call alone would have had."""

    ok: Literal[False]
    status: int = Field(ge=400, le=599)
    error: ErrorBody


class BatchResponse(_Answer):
    """``POST /mcp/batch``: one result per call, in request order."""

    results: list[BatchCallSucceeded | BatchCallFailed]


# --- Gateway ------------------------------------------------------------------


class GatewayServerHealth(_Answer):
    """One server in ``GET /gateway/health``."""

    state: Literal["ready", "degraded", "starting", "idle", "unavailable"]
    total_instances: int = Field(ge=0)
    healthy_instances: int = Field(ge=0)


class GatewayHealth(_Answer):
    """``GET /gateway/health`` (always 200): healthy when every server is ready or idle, unhealthy when one is unavailable."""

    status: Literal["healthy", "degraded", "unhealthy"]
    version: str
    uptime_seconds: float = Field(ge=0)
    servers: dict[str, GatewayServerHealth]


class RequestCounts(_Answer):
    """Requests since start-up."""

    total: int = Field(ge=0)
    errors: int = Field(ge=0)
    error_rate: float = Field(ge=0, le=1)


class LatencyMs(_Answer):
    """Latency percentiles, in milliseconds."""

    p50: float
    p95: float
    p99: float


class Sessions(_Answer):
    """Client sessions open now."""

    active: int = Field(ge=0)


class InstanceLoad(_Answer):
    """How much of a server's load one instance took."""

    calls: int = Field(ge=0)
    in_flight: int = Field(ge=0)
    share: float = Field(ge=0, le=1)


class ServerStats(_Answer):
    """One server in ``GET /gateway/stats``."""

    requests: int = Field(ge=0)
    errors: int = Field(ge=0)
    error_rate: float = Field(ge=0, le=1)
    latency_ms: LatencyMs
    load_distribution: dict[str, InstanceLoad] = Field(description="By instance id.")


class InstanceCheck(_Answer):
    """One instance as the health checker sees it."""

    healthy: bool
    breaker: Literal["closed", "open", "half_open"]
    consecutive_failures: int = Field(ge=0)
    last_error: str | None


class HealthChecker(_Answer):
    """The health checker's settings and what it found."""

    enabled: bool
    interval_seconds: float
    timeout_seconds: float
    instances: dict[str, InstanceCheck] = Field(description='By "<server>/<instance id>".')


class ReloadStatus(_Passthrough):
    """Configuration reloads so far, as ``get_gateway_status`` reports them (``reload``)."""

    attempts: int | SkipJsonSchema[None] = None
    successes: int | SkipJsonSchema[None] = None
    failures: int | SkipJsonSchema[None] = None
    last_result: Literal["ok", "rejected"] | None = None
    draining: list[str] | SkipJsonSchema[None] = Field(
        default=None, description="Servers a reload removed or changed whose old link is still finishing calls."
    )


class GatewayStats(_Answer):
    """``GET /gateway/stats``."""

    uptime_seconds: float = Field(ge=0)
    requests: RequestCounts
    latency_ms: LatencyMs
    sessions: Sessions
    calls_in_flight: int = Field(ge=0)
    servers: dict[str, ServerStats]
    health_checker: HealthChecker
    reload: ReloadStatus


class RegistryInstance(_Answer):
    """One instance in ``GET /gateway/registry``: how it is reached, never an environment or header value."""

    id: str
    source: Literal["file", "registry"]
    transport: Literal["stdio", "http"]
    state: str
    weight: int = Field(ge=1)
    healthy: bool
    endpoint: str | None = Field(description="The URL as configured (http); null for stdio.")
    command: str | None = Field(description="null for http.")
    args: list[str]
    working_dir: str | None
    env_keys: list[str] = Field(description="The names of the environment variables set; never their values.")
    description: str


class RegistryServer(_Answer):
    """One server in ``GET /gateway/registry``."""

    source: Literal["file", "registry", "both"]
    description: str
    strategy: str = Field(description="How calls are spread over the instances.")
    state: str
    instances: list[RegistryInstance]


class Registry(_Answer):
    """``GET /gateway/registry``: every server, from the servers file or registered at run time."""

    servers: dict[str, RegistryServer]


class AuditArgs(_Passthrough):
    """What an audit record says about the arguments: their names and size, never their values."""

    keys: list[str]
    request_bytes: int = Field(ge=0)


class AuditRecord(_Passthrough):
    """One audit record, as the audit log holds it."""

    time: str | SkipJsonSchema[None] = Field(default=None, description="UTC, ISO 8601 with milliseconds.")
    agent: str | None = None
    principal: str | SkipJsonSchema[None] = None
    operation: str | None = None
    server: str | None = None
    tool: str | None = None
    decision: str | SkipJsonSchema[None] = Field(default=None, examples=["allow", "deny"])
    rule: str | None = None
    latency_ms: float | SkipJsonSchema[None] = None
    error_code: str | None = None
    args: AuditArgs | SkipJsonSchema[None] = None


class AuditRecords(_Answer):
    """``GET /gateway/audit``: the newest records first."""

    records: list[AuditRecord]


class RegisterRequest(_Request):
    """The body of ``POST /gateway/register`` (admin): an HTTP server by ``endpoint``, or a stdio one by ``command``.

    Exactly one of ``endpoint`` and ``command``; ``args``, ``working_dir``
    and ``env`` go with ``command`` only. Nothing is registered if the
    request is refused.
    """

    model_config = ConfigDict(
        # Exactly one of the two: what the validator below checks, for the document.
        json_schema_extra={"oneOf": [{"required": ["endpoint"]}, {"required": ["command"]}]},
    )

    server: str = Field(min_length=1, description="The server to add the instance to (created if new).")
    endpoint: str | None = Field(default=None, description="The Streamable HTTP URL of the server (http or https).")
    command: str | None = Field(default=None, min_length=1, description="The program that starts a stdio server.")
    args: list[str] | None = None
    working_dir: str | None = None
    env: dict[str, str] | None = None
    instance_id: str | None = Field(
        default=None, pattern=INSTANCE_ID_PATTERN, description='Else "reg-" and 8 hex characters.'
    )
    weight: int | None = Field(default=None, ge=1)
    description: str | None = None

    @field_validator("endpoint")
    @classmethod
    def _an_http_url(cls, endpoint: str | None) -> str | None:
        # The message never repeats the URL: it may carry a token in its query.
        if endpoint is not None:
            parts = urlsplit(endpoint)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError("must be an http or https URL with a host")
        return endpoint

    @model_validator(mode="after")
    def _one_transport(self) -> RegisterRequest:
        if (self.endpoint is None) == (self.command is None):
            raise ValueError("give exactly one of endpoint (an HTTP server) and command (a stdio server)")
        if self.endpoint is not None and (self.args, self.working_dir, self.env) != (None, None, None):
            raise ValueError("args, working_dir and env go with command, not with endpoint")
        return self


class RegisterResponse(_Answer):
    """``POST /gateway/register``, 201: the instance was added."""

    server: str
    instance_id: str
    transport: Literal["stdio", "http"]
    registered: Literal[True]


class DeregisterResponse(_Answer):
    """``DELETE /gateway/deregister/{server}/{instance_id}``: the instance was removed."""

    server: str
    instance_id: str
    deregistered: Literal[True]


class QuarantinedTool(_Answer):
    """A tool held back: which pinned fields changed (``["new"]``: not pinned yet, under strict pinning), and why."""

    changed: list[str]
    reason: str


class PinnedServer(_Answer):
    """One server's pinned tools, and those quarantined until an operator accepts them."""

    pinned: list[str]
    quarantined: dict[str, QuarantinedTool]


class Pins(_Answer):
    """``GET /gateway/pins``: the tool definitions pinned and the changes held back, server by server."""

    enabled: bool
    #: Why the pin store could not be read (every tool is then quarantined); null when it could.
    unreadable: str | None
    servers: dict[str, PinnedServer]


class PinAcceptResponse(_Answer):
    """``POST /gateway/pins/{server}/accept`` and ``.../{tool}/accept``: the tools pinned as they are now, and served again."""

    server: str
    accepted: list[str]
