"""The REST API's OpenAPI 3.1 document, generated from the route table and the models.

:data:`ROUTES` lists every endpoint of the REST contract once: method, path,
operation id, summary, tag, the models of its query, body and answer, its
success status, the error statuses it can give, and who may call it. The
document is built from that table and from pydantic's JSON Schema of the
models (:mod:`.models`), so it says what the handlers validate; nothing in
it is written by hand but prose.

:func:`openapi_document` builds it once per version and caches it (it is
served on every ``GET /openapi.json``); :func:`openapi_json` is the same,
encoded, for the handler to send as it is.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaMode, JsonSchemaValue, models_json_schema
from pydantic_core import core_schema

from . import models as m

__all__ = ["ROUTES", "Access", "Route", "openapi_document", "openapi_json"]

JSONObject = dict[str, Any]

#: Who may call a route when authentication is on: anyone, any valid credential, or an admin's.
Access = Literal["public", "credential", "admin"]

_REF = "#/components/schemas/{model}"

# The two ways to present a credential, as on /mcp.
_SECURITY_SCHEMES: JSONObject = {
    "bearer": {
        "type": "http",
        "scheme": "bearer",
        "description": "An API key, or a JWT (one Lockgate issued, or an external issuer's).",
    },
    "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key", "description": "An API key."},
}
_WITH_CREDENTIAL: list[JSONObject] = [{"bearer": []}, {"apiKey": []}]

_PATH_PARAMETERS: dict[str, str] = {
    "server": "The server's name, as in the servers file or as registered.",
    "instance_id": 'The instance\'s id: a file instance\'s "id" (else its position, "0", "1", ...); a registered one\'s instance_id.',
    "file": "A file name from the packaged assets.",
    "tool": "The tool's name, as the server lists it.",
}

# Each error status the routes can give: its name in components.responses, and when it happens.
_ERRORS: dict[int, tuple[str, str]] = {
    400: ("BadRequest", "The body or query is not valid: bad JSON, a wrong type, an unknown key (data.errors says where)."),
    401: ("Unauthorized", "Authentication is on and no valid credential was given."),
    403: ("Forbidden", "The credential may not do this: the policy denies it (data names the rule), or the admin role is missing."),
    404: ("NotFound", "No such server, tool, resource, prompt, instance or file."),
    409: ("Conflict", "The registry refuses: the instance id is taken, or it is a file instance."),
    413: ("PayloadTooLarge", "The body is larger than the gateway accepts."),
    429: ("RateLimited", "A rate limit applies: try again after Retry-After (data.retry_after_ms)."),
    500: ("InternalError", "The gateway failed to handle the request."),
    502: ("DownstreamError", "The server answered an error or something that is not MCP (data.downstream_code)."),
    503: ("Unavailable", "The server is unavailable (starting, backing off, breaker open) or the gateway is shutting down."),
    504: ("Timeout", "The server did not answer in time."),
}
_RETRY_AFTER = {
    "Retry-After": {"description": "Seconds to wait before trying again.", "schema": {"type": "integer", "minimum": 1}}
}
_RETRY_AFTER_STATUSES = frozenset({429, 503})


@dataclass(frozen=True, slots=True, kw_only=True)
class Route:
    """One endpoint of the REST API, as the OpenAPI document describes it.

    ``response`` is the model of a JSON answer; a route without one answers
    ``media_type`` (a page, an asset). ``errors`` are the statuses it can
    answer besides ``status``, each with an :class:`~.models.ErrorResponse`.
    """

    method: Literal["GET", "POST", "DELETE"]
    path: str
    operation_id: str
    summary: str
    tag: str
    access: Access
    response: type[BaseModel] | None = None
    status: int = 200
    media_type: str = "application/json"
    request: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    errors: tuple[int, ...] = ()
    description: str = ""

    @property
    def path_parameters(self) -> tuple[str, ...]:
        """The names of the ``{placeholders}`` in :attr:`path`, in order."""
        return tuple(re.findall(r"\{(\w+)\}", self.path))


_PER_SERVER = "Per server"
_GATEWAY = "Gateway"
_REGISTRY = "Registry"
_DOCS = "Documentation"
_STATUS = "Status page"

_TAGS: list[JSONObject] = [
    {"name": _PER_SERVER, "description": "One downstream server's tools, resources and prompts, under the same policy as /mcp."},
    {"name": _GATEWAY, "description": "The gateway's health, statistics, servers and audit log."},
    {"name": _REGISTRY, "description": "Instances added and removed at run time (admin)."},
    {"name": _DOCS, "description": "This document and the pages that show it, served from packaged files."},
    {"name": _STATUS, "description": "The status page, which reads the gateway endpoints with the key its user types."},
]

# Every /mcp/{server}/... route takes agent_id as a query parameter; a POST's
# body field of the same name, when given, wins.
_MCP_READ = (400, 401, 403, 404, 429, 500, 502, 503, 504)
_MCP_CALL = (400, 401, 403, 404, 413, 429, 500, 502, 503, 504)

#: Every endpoint of the REST contract, in the order the document lists them.
ROUTES: tuple[Route, ...] = (
    Route(
        method="GET", path="/mcp/{server}/tools/list", operation_id="listTools", tag=_PER_SERVER, access="credential",
        summary="The server's tools the agent may use", query=m.AgentQuery, response=m.ToolList, errors=_MCP_READ,
    ),
    Route(
        method="POST", path="/mcp/{server}/tools/call", operation_id="callTool", tag=_PER_SERVER, access="credential",
        summary="Call a tool", query=m.AgentQuery, request=m.CallToolRequest, response=m.CallToolResult,
        errors=_MCP_CALL,
        description="The result is the server's CallToolResult, unchanged; a tool that fails reports isError with 200.",
    ),
    Route(
        method="GET", path="/mcp/{server}/resources/list", operation_id="listResources", tag=_PER_SERVER,
        access="credential", summary="The server's resources and resource templates", query=m.AgentQuery,
        response=m.ResourceList, errors=_MCP_READ,
    ),
    Route(
        method="POST", path="/mcp/{server}/resources/read", operation_id="readResource", tag=_PER_SERVER,
        access="credential", summary="Read a resource", query=m.AgentQuery, request=m.ReadResourceRequest,
        response=m.ReadResourceResult, errors=_MCP_CALL,
    ),
    Route(
        method="GET", path="/mcp/{server}/prompts/list", operation_id="listPrompts", tag=_PER_SERVER,
        access="credential", summary="The server's prompts", query=m.AgentQuery, response=m.PromptList,
        errors=_MCP_READ,
    ),
    Route(
        method="POST", path="/mcp/{server}/prompts/get", operation_id="getPrompt", tag=_PER_SERVER,
        access="credential", summary="Get a prompt's messages", query=m.AgentQuery, request=m.GetPromptRequest,
        response=m.GetPromptResult, errors=_MCP_CALL,
    ),
    Route(
        method="GET", path="/mcp/{server}/health", operation_id="serverHealth", tag=_PER_SERVER, access="credential",
        summary="The server's instances and whether each is healthy", query=m.AgentQuery, response=m.ServerHealth,
        errors=(400, 401, 403, 404),
    ),
    Route(
        method="POST", path="/mcp/batch", operation_id="callToolsBatch", tag=_PER_SERVER, access="credential",
        summary=f"Call up to {m.MAX_BATCH_CALLS} tools at once", request=m.BatchRequest, response=m.BatchResponse,
        errors=(400, 401, 413, 429),
        description="The calls run concurrently; each result, success or error, comes back in request order.",
    ),
    Route(
        method="GET", path="/gateway/health", operation_id="gatewayHealth", tag=_GATEWAY, access="credential",
        summary="The gateway's health, server by server", response=m.GatewayHealth, errors=(401,),
        description="Always 200 when answered: the status is in the body.",
    ),
    Route(
        method="GET", path="/gateway/stats", operation_id="gatewayStats", tag=_GATEWAY, access="credential",
        summary="Requests, latency, load and health checks since start-up", response=m.GatewayStats, errors=(401,),
    ),
    Route(
        method="GET", path="/gateway/registry", operation_id="gatewayRegistry", tag=_GATEWAY, access="credential",
        summary="Every server and instance, from the file or registered", response=m.Registry, errors=(401,),
        description="Never an environment variable's or a header's value: env_keys names the variables only.",
    ),
    Route(
        method="GET", path="/gateway/audit", operation_id="gatewayAudit", tag=_GATEWAY, access="credential",
        summary="The latest audit records, newest first", query=m.AuditQuery, response=m.AuditRecords,
        errors=(400, 401),
    ),
    Route(
        method="POST", path="/gateway/register", operation_id="registerInstance", tag=_REGISTRY, access="admin",
        summary="Add an instance of a server", request=m.RegisterRequest, response=m.RegisterResponse, status=201,
        errors=(400, 401, 403, 409, 413),
        description=(
            "400: a bad URL, a command that is not found, or both or neither of endpoint and command "
            "(nothing is registered). 409: an instance of that id exists on that server, from the file or registered."
        ),
    ),
    Route(
        method="DELETE", path="/gateway/deregister/{server}/{instance_id}", operation_id="deregisterInstance",
        tag=_REGISTRY, access="admin", summary="Remove a registered instance", response=m.DeregisterResponse,
        errors=(401, 403, 404, 409),
        description="409: a file instance, which is not the registry's to remove.",
    ),
    Route(
        method="GET", path="/gateway/pins", operation_id="gatewayPins", tag=_GATEWAY, access="credential",
        summary="Tool definitions pinned, and the changed ones held back", response=m.Pins, errors=(401,),
    ),
    Route(
        method="POST", path="/gateway/pins/{server}/accept", operation_id="acceptServerPins", tag=_GATEWAY,
        access="admin", summary="Accept every quarantined tool of a server as it is now", response=m.PinAcceptResponse,
        errors=(401, 403, 404),
        description="The tools are pinned as the gateway last saw them and served again at once. 404: nothing quarantined.",
    ),
    Route(
        method="POST", path="/gateway/pins/{server}/{tool}/accept", operation_id="acceptToolPin", tag=_GATEWAY,
        access="admin", summary="Accept a quarantined tool as it is now", response=m.PinAcceptResponse,
        errors=(401, 403, 404),
        description="The tool is pinned as the gateway last saw it and served again at once. 404: it is not quarantined.",
    ),
    Route(
        method="GET", path="/openapi.json", operation_id="openapiDocument", tag=_DOCS, access="public",
        summary="This document",
    ),
    Route(
        method="GET", path="/docs", operation_id="swaggerUi", tag=_DOCS, access="public",
        summary="Swagger UI on this document", media_type="text/html",
    ),
    Route(
        method="GET", path="/redoc", operation_id="redoc", tag=_DOCS, access="public",
        summary="ReDoc on this document", media_type="text/html",
    ),
    Route(
        method="GET", path="/docs/assets/{file}", operation_id="docsAsset", tag=_DOCS, access="public",
        summary="A file of the documentation pages (scripts, styles, licences)", media_type="*/*", errors=(404,),
    ),
    Route(
        method="GET", path="/", operation_id="statusRoot", tag=_STATUS, access="public",
        summary="The status page", media_type="text/html",
    ),
    Route(
        method="GET", path="/status", operation_id="statusPage", tag=_STATUS, access="public",
        summary="The status page", media_type="text/html",
    ),
    Route(
        method="GET", path="/status/assets/{file}", operation_id="statusAsset", tag=_STATUS, access="public",
        summary="A file of the status page", media_type="*/*", errors=(404,),
    ),
)


class _SchemaGenerator(GenerateJsonSchema):
    """pydantic's JSON Schema, without a ``"default": null`` on a field documented as never null.

    Such a field (``X | SkipJsonSchema[None] = None``) is one MCP omits
    rather than sets to null; a null default would contradict its own
    schema, which OpenAPI validators reject.
    """

    def default_schema(self, schema: core_schema.WithDefaultSchema) -> JsonSchemaValue:
        json_schema = super().default_schema(schema)
        if "default" in json_schema and json_schema["default"] is None and not _allows_null(json_schema):
            del json_schema["default"]
        return json_schema


def _allows_null(json_schema: JsonSchemaValue) -> bool:
    """Whether ``json_schema`` says null is valid (a ``$ref`` is taken to be an object's)."""
    kind = json_schema.get("type")
    if kind == "null" or (isinstance(kind, list) and "null" in kind):
        return True
    return any(_allows_null(part) for key in ("anyOf", "oneOf") for part in json_schema.get(key, []))


def _schema_mode(model: type[BaseModel], route: Route) -> JsonSchemaMode:
    # Bodies are described as they are validated, answers as they are written.
    return "validation" if model is route.request else "serialization"


def _components(routes: tuple[Route, ...]) -> tuple[dict[tuple[type[BaseModel], JsonSchemaMode], JSONObject], JSONObject]:
    """The schema of each body model (a ``$ref``) and the component schemas they refer to."""
    wanted: dict[tuple[type[BaseModel], JsonSchemaMode], None] = {(m.ErrorResponse, "serialization"): None}
    for route in routes:
        for model in (route.request, route.response):
            if model is not None:
                wanted[(model, _schema_mode(model, route))] = None
    refs, top = models_json_schema(list(wanted), ref_template=_REF, schema_generator=_SchemaGenerator)
    return {key: refs[key] for key in wanted}, dict(top.get("$defs", {}))


def _query_parameters(model: type[BaseModel]) -> list[JSONObject]:
    """A query model's fields as OpenAPI parameters (the models are flat: no ``$ref`` to hoist)."""
    schema = model.model_json_schema(schema_generator=_SchemaGenerator)
    required = set(schema.get("required", []))
    parameters = []
    for name, field_schema in schema.get("properties", {}).items():
        field_schema = {key: value for key, value in field_schema.items() if key not in ("title", "description")}
        parameter: JSONObject = {"name": name, "in": "query", "required": name in required, "schema": field_schema}
        description = model.model_fields[name].description
        if description:
            parameter["description"] = description
        parameters.append(parameter)
    return parameters


def _operation(route: Route, refs: dict[tuple[type[BaseModel], JsonSchemaMode], JSONObject]) -> JSONObject:
    """The OpenAPI operation object of ``route``."""
    parameters: list[JSONObject] = [
        {"name": name, "in": "path", "required": True, "description": _PATH_PARAMETERS[name], "schema": {"type": "string"}}
        for name in route.path_parameters
    ]
    if route.query is not None:
        parameters += _query_parameters(route.query)
    if route.response is not None:
        content: JSONObject = {route.media_type: {"schema": refs[(route.response, "serialization")]}}
    elif route.media_type == "application/json":
        content = {route.media_type: {"schema": {"type": "object"}}}
    else:
        content = {route.media_type: {"schema": {"type": "string"}}}
    responses: JSONObject = {str(route.status): {"description": route.summary, "content": content}}
    for status in route.errors:
        responses[str(status)] = {"$ref": f"#/components/responses/{_ERRORS[status][0]}"}
    description = route.description
    if route.access == "admin":
        description = " ".join(
            part
            for part in (
                "Needs a credential with the admin role; with authentication off, allowed only when the "
                "gateway listens on a loopback address.",
                description,
            )
            if part
        )
    operation: JSONObject = {
        "operationId": route.operation_id,
        "summary": route.summary,
        "tags": [route.tag],
        "security": [] if route.access == "public" else _WITH_CREDENTIAL,
        "x-lockgate-access": route.access,
        "responses": responses,
    }
    if description:
        operation["description"] = description
    if parameters:
        operation["parameters"] = parameters
    if route.request is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": refs[(route.request, "validation")]}},
        }
    return operation


def _error_responses(error_ref: JSONObject) -> JSONObject:
    """The shared error responses (``components.responses``), each an :class:`~.models.ErrorResponse`."""
    responses: JSONObject = {}
    for status, (name, description) in _ERRORS.items():
        response: JSONObject = {"description": description, "content": {"application/json": {"schema": error_ref}}}
        if status in _RETRY_AFTER_STATUSES:
            response["headers"] = _RETRY_AFTER
        responses[name] = response
    return responses


_DESCRIPTION = """\
Plain JSON endpoints beside the MCP endpoint (/mcp), behind the same policy, credentials, rate limits and audit log.

**Credentials.** When authentication is on, every endpoint needs one, as /mcp does (`Authorization: Bearer <API key or JWT>` \
or `X-API-Key: <key>`), except /openapi.json, /docs, /redoc, their assets and the status page itself. \
Registering and deregistering instances needs the admin role. With authentication off, everything is open, \
except registering and deregistering, which are then allowed only when the gateway listens on a loopback address.

**Agents.** Every /mcp/{server}/... endpoint takes an optional `agent_id` (query parameter, or body field of a \
POST and of each batch call): the agent the request acts as, else the credential's default agent, else \
GATEWAY_DEFAULT_AGENT.

**Errors.** Every non-2xx answer is `{"error": {"code", "message", "status", "data"}}`.
"""


@functools.lru_cache(maxsize=4)
def openapi_document(version: str) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the REST API for Lockgate ``version``, built once and cached.

    The same dict is returned on every call: treat it as read-only (use
    :func:`openapi_json` to serve it).
    """
    refs, schemas = _components(ROUTES)
    paths: JSONObject = {}
    for route in ROUTES:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route, refs)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Lockgate REST API",
            "version": version,
            "description": _DESCRIPTION,
            "license": {"name": "MIT", "identifier": "MIT"},
        },
        "tags": _TAGS,
        "security": _WITH_CREDENTIAL,
        "paths": paths,
        "components": {
            "schemas": schemas,
            "responses": _error_responses(refs[(m.ErrorResponse, "serialization")]),
            "securitySchemes": _SECURITY_SCHEMES,
        },
    }


@functools.lru_cache(maxsize=4)
def openapi_json(version: str) -> bytes:
    """:func:`openapi_document` as compact UTF-8 JSON, the body of ``GET /openapi.json``; cached."""
    return json.dumps(openapi_document(version), ensure_ascii=False, separators=(",", ":")).encode("utf-8")
