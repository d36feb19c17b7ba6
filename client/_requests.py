"""The REST API once, as data: each endpoint as a :class:`Request`, each answer parsed, each retry decided.

No I/O happens here. :class:`~._gateway.GatewayClient` (async) and
:class:`~._sync.SyncGatewayClient` (blocking) each send a :class:`Request`
with their own httpx client and sleep as :class:`RetryPolicy` says, in a
loop of a dozen lines; which path, which body, how an answer becomes a
model or an exception, and when to try again are decided here, for both.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, TypeAdapter, ValidationError

from ._errors import GatewayError, GatewayTimeout, GatewayUnreachable, error_from_body, parse_retry_after
from ._models import (
    AuditLog,
    CallToolResult,
    Deregistration,
    GatewayHealth,
    GatewayStats,
    GetPromptResult,
    PromptList,
    ReadResourceResult,
    Registration,
    Registry,
    ResourceList,
    ServerHealth,
    ToolCall,
    ToolList,
)

__all__ = [
    "Endpoints",
    "Request",
    "RetryPolicy",
    "answer",
    "credential_headers",
    "request_timeout",
    "root_url",
    "transport_failure",
]

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)

# Nothing of the request left the client: safe to send again, whatever it does.
_NOT_SENT: tuple[type[httpx.TransportError], ...] = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
# The connection broke after the request may have left: safe to send again only if sending twice does no harm.
_BROKEN: tuple[type[httpx.TransportError], ...] = (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError)


@dataclass(frozen=True, slots=True)
class Request(Generic[T]):
    """One REST request and how to read its answer.

    Attributes:
        idempotent: Sending it twice does no harm, so a 503 or a connection that broke
            after sending may be retried. False for tool calls and batches (a call
            could run twice) and for register and deregister.
        retry_unavailable: A 503 is retried (False for register and deregister, which the
            caller should decide to repeat).
        read_timeout: Seconds to wait for the answer when longer than the client's
            timeout (a tool call with a long ``timeout_ms``).
    """

    method: str
    path: str
    parse: Callable[[Any], T]
    params: Mapping[str, str] = field(default_factory=dict)
    body: Any = None
    idempotent: bool = True
    retry_unavailable: bool = True
    read_timeout: float | None = None


def _model(cls: type[M]) -> Callable[[Any], M]:
    return cls.model_validate


def _agent(agent_id: str | None) -> dict[str, str]:
    return {} if agent_id is None else {"agent_id": agent_id}


def _segment(text: str) -> str:
    # A server or instance name is one path segment: nothing in it may start another.
    return quote(text, safe="")


def _compact(body: Mapping[str, Any]) -> dict[str, Any]:
    """The body without its ``None`` fields: the gateway takes a missing optional field as its default."""
    return {key: value for key, value in body.items() if value is not None}


def _call_timeout(timeout_ms: int | None) -> float | None:
    # The gateway answers 504 when the call's own timeout runs out; wait a little longer than that for it.
    return None if timeout_ms is None else timeout_ms / 1000 + 5.0


class Endpoints:
    """Every endpoint of the REST contract as a :class:`Request`; the clients' methods send these."""

    @staticmethod
    def list_tools(server: str, agent_id: str | None) -> Request[ToolList]:
        return Request("GET", f"/mcp/{_segment(server)}/tools/list", _model(ToolList), _agent(agent_id))

    @staticmethod
    def call_tool(
        server: str, name: str, arguments: Mapping[str, Any] | None, timeout_ms: int | None, agent_id: str | None
    ) -> Request[CallToolResult]:
        body = _compact({"name": name, "arguments": dict(arguments or {}), "timeout_ms": timeout_ms, "agent_id": agent_id})
        return Request(
            "POST",
            f"/mcp/{_segment(server)}/tools/call",
            _model(CallToolResult),
            body=body,
            idempotent=False,
            read_timeout=_call_timeout(timeout_ms),
        )

    @staticmethod
    def list_resources(server: str, agent_id: str | None) -> Request[ResourceList]:
        return Request("GET", f"/mcp/{_segment(server)}/resources/list", _model(ResourceList), _agent(agent_id))

    @staticmethod
    def read_resource(server: str, uri: str, agent_id: str | None) -> Request[ReadResourceResult]:
        body = _compact({"uri": uri, "agent_id": agent_id})
        return Request("POST", f"/mcp/{_segment(server)}/resources/read", _model(ReadResourceResult), body=body)

    @staticmethod
    def list_prompts(server: str, agent_id: str | None) -> Request[PromptList]:
        return Request("GET", f"/mcp/{_segment(server)}/prompts/list", _model(PromptList), _agent(agent_id))

    @staticmethod
    def get_prompt(server: str, name: str, arguments: Mapping[str, str] | None, agent_id: str | None) -> Request[GetPromptResult]:
        body = _compact({"name": name, "arguments": dict(arguments or {}), "agent_id": agent_id})
        return Request("POST", f"/mcp/{_segment(server)}/prompts/get", _model(GetPromptResult), body=body)

    @staticmethod
    def server_health(server: str) -> Request[ServerHealth]:
        return Request("GET", f"/mcp/{_segment(server)}/health", _model(ServerHealth))

    @staticmethod
    def health() -> Request[GatewayHealth]:
        return Request("GET", "/gateway/health", _model(GatewayHealth))

    @staticmethod
    def stats() -> Request[GatewayStats]:
        return Request("GET", "/gateway/stats", _model(GatewayStats))

    @staticmethod
    def registry() -> Request[Registry]:
        return Request("GET", "/gateway/registry", _model(Registry))

    @staticmethod
    def audit(limit: int) -> Request[AuditLog]:
        return Request("GET", "/gateway/audit", _model(AuditLog), {"limit": str(limit)})

    @staticmethod
    def register(
        server: str,
        *,
        endpoint: str | None,
        command: str | None,
        args: Sequence[str],
        working_dir: str | None,
        env: Mapping[str, str] | None,
        instance_id: str | None,
        weight: int | None,
        description: str | None,
    ) -> Request[Registration]:
        if (endpoint is None) == (command is None):
            raise ValueError("register needs exactly one of endpoint (an MCP server's URL) and command")
        body = _compact({
            "server": server,
            "endpoint": endpoint,
            "command": command,
            "args": list(args) if command is not None else None,
            "working_dir": working_dir,
            "env": dict(env) if env else None,
            "instance_id": instance_id,
            "weight": weight,
            "description": description,
        })
        return Request(
            "POST", "/gateway/register", _model(Registration), body=body, idempotent=False, retry_unavailable=False
        )

    @staticmethod
    def deregister(server: str, instance_id: str) -> Request[Deregistration]:
        return Request(
            "DELETE",
            f"/gateway/deregister/{_segment(server)}/{_segment(instance_id)}",
            _model(Deregistration),
            idempotent=False,
            retry_unavailable=False,
        )

    @staticmethod
    def call_tools(calls: Sequence[ToolCall | Mapping[str, Any]]) -> Request[list[CallToolResult | GatewayError]]:
        items = [call if isinstance(call, ToolCall) else ToolCall.model_validate(call) for call in calls]
        body = {"calls": [_compact(item.model_dump()) for item in items]}
        timeouts = [t for t in (_call_timeout(item.timeout_ms) for item in items) if t is not None]
        return Request(
            "POST",
            "/mcp/batch",
            _batch_results,
            body=body,
            idempotent=False,
            read_timeout=max(timeouts, default=None),
        )


_RESULTS: TypeAdapter[list[dict[str, Any]]] = TypeAdapter(list[dict[str, Any]])


def _batch_results(body: Any) -> list[CallToolResult | GatewayError]:
    """Each batch item as its result, or as the exception its error would have raised on its own."""
    items = _RESULTS.validate_python(body["results"] if isinstance(body, dict) else body)
    results: list[CallToolResult | GatewayError] = []
    for item in items:
        if item.get("ok"):
            results.append(CallToolResult.model_validate(item.get("result") or {}))
        else:
            status = int(item.get("status") or 500)
            # The same exception the call would have raised on its own (RateLimited reads data.retry_after_ms).
            results.append(error_from_body(status, json.dumps({"error": item.get("error") or {}}).encode()))
    return results


def answer(request: Request[T], status: int, content: bytes, retry_after: str | None, reason: str) -> T:
    """The parsed answer of a 2xx; otherwise raise the :class:`GatewayError` of the status.

    Raises:
        GatewayError: a non-2xx answer, or a 2xx whose body is not the shape the contract gives it
            (code ``INVALID_RESPONSE``).
    """
    if not 200 <= status < 300:
        raise error_from_body(status, content, retry_after, reason)
    try:
        return request.parse(json.loads(content))
    except (ValueError, KeyError, TypeError, ValidationError) as exc:
        raise GatewayError("INVALID_RESPONSE", f"{request.method} {request.path}: unexpected answer: {exc}", status) from exc


def transport_failure(request: Request[Any], exc: httpx.TransportError) -> GatewayError:
    """The exception for a request that got no answer."""
    if isinstance(exc, httpx.ReadTimeout):
        return GatewayTimeout("CLIENT_TIMEOUT", f"{request.method} {request.path}: no answer in time ({exc})")
    return GatewayUnreachable("UNREACHABLE", f"{request.method} {request.path}: cannot reach the gateway ({type(exc).__name__}: {exc})")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """When to send a request again, and after how long.

    Only a 503 and a failed connection are retried, ``retries`` times at most:
    capped exponential backoff with jitter (``backoff`` × 2^attempt, at most
    ``max_backoff``), or the answer's ``Retry-After`` when it gives one (at most
    ``max_retry_after``). A request that is not idempotent is retried only when
    nothing of it was sent (the connection was refused or never made); register
    and deregister never on a 503.
    """

    retries: int = 3
    backoff: float = 0.25
    max_backoff: float = 5.0
    max_retry_after: float = 60.0

    def _delay(self, attempt: int) -> float:
        # Jitter, so that many clients that failed together do not come back together.
        return float(min(self.max_backoff, self.backoff * 2**attempt) * random.uniform(0.5, 1.0))

    def after_status(self, request: Request[Any], attempt: int, status: int, retry_after: str | None) -> float | None:
        """Seconds to wait before sending again after an answer of ``status``, or ``None``: that answer stands."""
        if status != 503 or not request.retry_unavailable or attempt >= self.retries:
            return None
        seconds = parse_retry_after(retry_after)
        return self._delay(attempt) if seconds is None else min(seconds, self.max_retry_after)

    def after_error(self, request: Request[Any], attempt: int, exc: httpx.TransportError) -> float | None:
        """Seconds to wait before sending again after ``exc``, or ``None``: raise it."""
        if attempt >= self.retries:
            return None
        if isinstance(exc, _NOT_SENT) or (request.idempotent and isinstance(exc, _BROKEN)):
            return self._delay(attempt)
        return None


def credential_headers(api_key: str | None, auth_token: str | None) -> dict[str, str]:
    """The ``Authorization`` header for an API key or a bearer token (the gateway reads both there)."""
    if api_key is not None and auth_token is not None:
        raise ValueError("give api_key or auth_token, not both")
    credential = api_key if api_key is not None else auth_token
    return {} if credential is None else {"Authorization": f"Bearer {credential}"}


def request_timeout(default: float, request: Request[Any]) -> httpx.Timeout:
    """The client's timeout, with a longer wait for the answer when the request needs it."""
    read = default if request.read_timeout is None else max(default, request.read_timeout)
    return httpx.Timeout(default, read=read)


def root_url(url: str) -> str:
    """The gateway's root: a trailing ``/`` or ``/mcp`` (its MCP endpoint, given by mistake) is dropped."""
    url = url.rstrip("/")
    return url.removesuffix("/mcp") if url.endswith("/mcp") else url
