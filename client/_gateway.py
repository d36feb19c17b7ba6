"""``GatewayClient``: the gateway's REST API from async code (asyncio or trio), over pooled connections."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, TypeVar

import anyio
import httpx

from ._errors import GatewayError
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
from ._requests import Endpoints, Request, RetryPolicy, answer, credential_headers, request_timeout, root_url, transport_failure

__all__ = ["GatewayClient"]

T = TypeVar("T")


class GatewayClient:
    """An async client of Lockgate's REST API, for scripts and services that call tools without speaking MCP.

    Use it as an async context manager (``async with GatewayClient(url) as gateway:``)
    or call :meth:`aclose` when done: one ``httpx.AsyncClient`` keeps its connections
    to the gateway open between requests. It runs under asyncio and trio alike.

    Every method raises the :class:`~lockgate.client.GatewayError` subclass of the
    gateway's answer when it refuses (``NotFound``, ``PermissionDenied``, ...), and
    :class:`~lockgate.client.GatewayUnreachable` when no answer comes. A 503 and a
    failed connection are retried as :class:`~lockgate.client.RetryPolicy` says,
    nothing else; a tool call is never sent twice unless the first one never left.

    Args:
        base_url: The gateway's root URL, e.g. ``http://127.0.0.1:8000``.
        api_key: An API key (``lg_...``), sent as ``Authorization: Bearer``.
        auth_token: A bearer token (from ``/auth/login`` or a delegation) instead of a key.
        timeout: Seconds to wait for connecting and for each answer (longer for a call
            whose ``timeout_ms`` is longer).
        retries: How many times a 503 or a failed connection is retried.
        backoff: The first retry's delay in seconds, doubled for each next one.
        max_backoff: The longest delay between two attempts, unless ``Retry-After`` asks for more.
        transport: An httpx transport to use instead of the network (``httpx.MockTransport`` in tests).
    """

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        auth_token: str | None = None,
        timeout: float = 30.0,
        retries: int = 3,
        backoff: float = 0.25,
        max_backoff: float = 5.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = root_url(base_url)
        self._policy = RetryPolicy(retries=retries, backoff=backoff, max_backoff=max_backoff)
        self._timeout = timeout
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            headers=credential_headers(api_key, auth_token),
            timeout=timeout,
            transport=transport,
        )

    async def __aenter__(self) -> GatewayClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the pooled connections; the client cannot be used afterwards."""
        await self._http.aclose()

    async def _send(self, request: Request[T]) -> T:
        """Send one request, retrying as the policy allows; its parsed answer.

        Raises:
            GatewayError: the gateway refused, or could not be reached after the retries.
        """
        attempt = 0
        while True:  # bounded: the policy stops after `retries` attempts
            try:
                response = await self._http.request(
                    request.method,
                    request.path,
                    params=request.params or None,
                    json=request.body,
                    timeout=request_timeout(self._timeout, request),
                )
            except httpx.TransportError as exc:
                delay = self._policy.after_error(request, attempt, exc)
                if delay is None:
                    raise transport_failure(request, exc) from exc
            else:
                retry_after = response.headers.get("retry-after")
                delay = self._policy.after_status(request, attempt, response.status_code, retry_after)
                if delay is None:
                    return answer(request, response.status_code, response.content, retry_after, response.reason_phrase)
            attempt += 1
            await anyio.sleep(delay)

    # --- per server ---

    async def list_tools(self, server: str, agent_id: str | None = None) -> ToolList:
        """The server's tools that the agent may see, as the server defines them."""
        return await self._send(Endpoints.list_tools(server, agent_id))

    async def call_tool(
        self,
        server: str,
        name: str,
        arguments: Mapping[str, Any] | None = None,
        timeout_ms: int | None = None,
        agent_id: str | None = None,
    ) -> CallToolResult:
        """Call a tool; the server's result unchanged (a tool's own failure is ``is_error``, not an exception)."""
        return await self._send(Endpoints.call_tool(server, name, arguments, timeout_ms, agent_id))

    async def list_resources(self, server: str, agent_id: str | None = None) -> ResourceList:
        """The server's resources and resource templates that the agent may see."""
        return await self._send(Endpoints.list_resources(server, agent_id))

    async def read_resource(self, server: str, uri: str, agent_id: str | None = None) -> ReadResourceResult:
        """Read one resource of the server."""
        return await self._send(Endpoints.read_resource(server, uri, agent_id))

    async def list_prompts(self, server: str, agent_id: str | None = None) -> PromptList:
        """The server's prompts that the agent may see."""
        return await self._send(Endpoints.list_prompts(server, agent_id))

    async def get_prompt(
        self, server: str, name: str, arguments: Mapping[str, str] | None = None, agent_id: str | None = None
    ) -> GetPromptResult:
        """One prompt of the server, filled in with ``arguments``."""
        return await self._send(Endpoints.get_prompt(server, name, arguments, agent_id))

    async def server_health(self, server: str) -> ServerHealth:
        """How many of the server's instances are healthy, and each one's state."""
        return await self._send(Endpoints.server_health(server))

    async def call_tools(self, calls: Sequence[ToolCall | Mapping[str, Any]]) -> list[CallToolResult | GatewayError]:
        """Run up to 100 calls at once (``POST /mcp/batch``); each call's result or error, in the calls' order.

        A refused call is its exception in the list, not raised; only a refusal of the
        whole batch (a malformed one, a bad credential) raises.
        """
        return await self._send(Endpoints.call_tools(calls))

    # --- the gateway ---

    async def health(self) -> GatewayHealth:
        """The gateway's health: each server's state and instance counts."""
        return await self._send(Endpoints.health())

    async def stats(self) -> GatewayStats:
        """Request counts, latency, sessions, per-server load and the health checker's view."""
        return await self._send(Endpoints.stats())

    async def registry(self) -> Registry:
        """Every server and its instances, from the servers file and registered at run time."""
        return await self._send(Endpoints.registry())

    async def audit(self, limit: int = 50) -> AuditLog:
        """The newest ``limit`` audit records, newest first."""
        return await self._send(Endpoints.audit(limit))

    async def register(
        self,
        server: str,
        *,
        endpoint: str | None = None,
        command: str | None = None,
        args: Sequence[str] = (),
        working_dir: str | None = None,
        env: Mapping[str, str] | None = None,
        instance_id: str | None = None,
        weight: int | None = None,
        description: str | None = None,
    ) -> Registration:
        """Add an instance to a server (a new server when none has that name): an HTTP ``endpoint`` or a ``command``.

        Needs an admin credential (or, with authentication off, a gateway on loopback).

        Raises:
            ValueError: both or neither of ``endpoint`` and ``command``; nothing was sent.
            Conflict: an instance of that id exists on that server.
        """
        request = Endpoints.register(
            server,
            endpoint=endpoint,
            command=command,
            args=args,
            working_dir=working_dir,
            env=env,
            instance_id=instance_id,
            weight=weight,
            description=description,
        )
        return await self._send(request)

    async def deregister(self, server: str, instance_id: str) -> Deregistration:
        """Remove a registered instance (never one from the servers file: that is a ``Conflict``)."""
        return await self._send(Endpoints.deregister(server, instance_id))

