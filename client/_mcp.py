"""``MCPClient``: MCP through the gateway, and straight to the server when the gateway cannot be reached.

A client that must keep working while its gateway is down (restarted, being
deployed, behind a proxy that answers 502) gives :class:`MCPClient` the
gateway's URL and a way to reach the server without it: the server's stdio
command (``StdioServerParameters``) or its own Streamable HTTP URL. Each
session starts at the gateway; when the gateway cannot be reached, at the
start or later, the client goes on with the server directly, and tries the
gateway again at the next session start.

Theory of operation. Each MCP session (a "link") runs in a task of its own,
inside the client's task group, and takes the caller's operations from a
channel. When the transport fails, the SDK cancels everything inside the
session's own task group and raises; that happens in the link's task, never
in the caller's, so the caller's scopes are never torn down by a dead
gateway. The link records why it ended and marks the operations it had taken
as lost; the client then decides, per operation, whether it may be sent again
on the direct link: always for listing tools, and for a tool call only when the
gateway surely never got it (the connection was refused or never made, or a
proxy answered 502/503), since a call sent twice may act twice.

The MCP SDK (``mcp``, the ``client`` extra) is imported when a session starts,
so that importing :mod:`lockgate.client` needs only httpx and pydantic.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

import anyio
import anyio.abc

from ._errors import GatewayUnreachable
from ._requests import root_url

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
    from mcp import Client, StdioServerParameters
    from mcp.types import CallToolResult, Tool

__all__ = ["MCPClient", "Via"]

Via = Literal["gateway", "direct"]

# Bounds the pages of a tools/list: a server that always answers a cursor must not loop us forever.
_MAX_PAGES = 100


def _require_sdk() -> None:
    """Fail at the session's start, with the way out, when the MCP SDK is not installed."""
    try:
        import mcp  # noqa: F401
    except ImportError as exc:
        raise ImportError("MCPClient needs the MCP SDK: pip install 'lockgate[client]'") from exc


class _ProxyUnavailable(Exception):
    """A 502 or 503 answer at the gateway's address: a proxy in front of it, or the gateway refusing work."""

    def __init__(self, status: int) -> None:
        super().__init__(f"the gateway's address answered HTTP {status}")
        self.status = status


def _leaves(exc: BaseException) -> Iterator[BaseException]:
    """The exceptions inside (nested) exception groups: the SDK's task groups wrap a transport's failure."""
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            yield from _leaves(inner)
    else:
        yield exc


def _unreachable(exc: BaseException) -> tuple[bool, bool]:
    """Whether ``exc`` says the peer cannot be reached, and whether a request in flight then surely never reached it."""
    import httpx2

    leaves = list(_leaves(exc))
    not_sent = (httpx2.ConnectError, httpx2.ConnectTimeout, httpx2.PoolTimeout, _ProxyUnavailable)
    unreachable = all(isinstance(leaf, httpx2.TransportError | OSError | TimeoutError | _ProxyUnavailable) for leaf in leaves)
    return unreachable and bool(leaves), bool(leaves) and all(isinstance(leaf, not_sent) for leaf in leaves)


@dataclass(eq=False)
class _Job:
    """One operation of the caller's, run by a link; ``lost`` when the link ended before it finished."""

    operation: Callable[[Client, Via], Awaitable[Any]]
    done: anyio.Event = field(default_factory=anyio.Event)
    result: Any = None
    error: Exception | None = None
    lost: bool = False


class _Link:
    """One MCP session, to the gateway or to the server, run by a task of its own (see the module docstring)."""

    def __init__(self, via: Via, open_client: Callable[[], AsyncIterator[Client]]) -> None:
        self.via: Via = via
        self._open_client = open_client
        self._send: MemoryObjectSendStream[_Job]
        self._receive: MemoryObjectReceiveStream[_Job]
        self._send, self._receive = anyio.create_memory_object_stream[_Job](math.inf)
        self._in_flight: set[_Job] = set()
        self._scope = anyio.CancelScope()
        self.up = anyio.Event()
        self.ended = anyio.Event()
        self.failure: Exception | None = None
        """Why the session ended, when it did not end because it was closed."""

    @property
    def alive(self) -> bool:
        return self.up.is_set() and not self.ended.is_set()

    async def run(self) -> None:
        """Open the session, then run the jobs sent to it, each in a task, until :meth:`close` or a failure."""
        with self._scope:
            try:
                async with asynccontextmanager(self._open_client)() as client, anyio.create_task_group() as jobs:
                    self.up.set()
                    async for job in self._receive:
                        jobs.start_soon(self._do, client, job)
            except Exception as exc:  # the transport failed: the caller hears of it through its jobs
                self.failure = exc
        self.ended.set()
        self.up.set()
        # Whatever was taken or queued and not finished is lost; the client decides what to send again.
        self._receive.close()
        for job in self._in_flight:
            job.lost = True
            job.done.set()
        self._in_flight.clear()

    async def _do(self, client: Client, job: _Job) -> None:
        try:
            job.result = await job.operation(client, self.via)
        except Exception as exc:  # the peer's answer (an MCP error) or the caller's mistake: theirs to handle
            job.error = exc
        self._in_flight.discard(job)
        job.done.set()

    def submit(self, job: _Job) -> None:
        """Queue a job; if the link has ended, the job is lost at once (it was never sent)."""
        self._in_flight.add(job)
        try:
            self._send.send_nowait(job)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            self._in_flight.discard(job)
            job.lost = True
            job.done.set()

    async def close(self, grace: float = 5.0) -> None:
        """End the session: let it say goodbye (an HTTP session's DELETE) for ``grace`` seconds, then cancel it."""
        self._send.close()
        with anyio.move_on_after(grace):
            await self.ended.wait()
        self._scope.cancel()
        await self.ended.wait()


class MCPClient:
    """An MCP client of the gateway's ``/mcp`` that falls back to a direct connection to the server.

    Use it as an async context manager; each entry is a session start, which tries
    the gateway first::

        async with MCPClient("http://127.0.0.1:8000", fallback=params, server="utils") as client:
            result = await client.call_tool("echo", {"text": "hi"})
            print(client.via)  # "gateway", or "direct" when the gateway was down

    Two ways to use the gateway, chosen by ``server``:

    - ``server`` given: the gateway is in its on-demand mode, and the client calls its
      gateway tools for you: :meth:`list_tools` is ``get_server_tools`` of that server
      and :meth:`call_tool` is ``execute_tool``, whose result is the server's own.
    - ``server`` left out: the gateway serves the server's tools as its own (aggregate
      mode with one server and ``GATEWAY_PREFIX=never``), so both paths list and call
      the same names.

    The gateway counts as unreachable when the connection is refused or times out,
    or its address answers 502 or 503 (a proxy in front of it). A refusal by the
    gateway itself (a bad key, a denied tool) is raised, never hidden by a fallback.

    Args:
        gateway_url: The gateway's root (``http://host:8000``) or its MCP endpoint (``.../mcp``).
        fallback: The server without the gateway: ``mcp.StdioServerParameters`` to start it,
            or the URL of its own Streamable HTTP endpoint.
        api_key: A credential for the gateway (``Authorization: Bearer``); never sent to the fallback.
        server: The server's name at the gateway (see above).
        agent_id: The agent the gateway calls act as (with ``server``); else the credential's
            default agent, or the gateway's default one.
        timeout: Seconds to wait for each answer.
        connect_timeout: Seconds a session start waits for the gateway before falling back.
    """

    def __init__(
        self,
        gateway_url: str,
        fallback: StdioServerParameters | str,
        *,
        api_key: str | None = None,
        server: str | None = None,
        agent_id: str | None = None,
        timeout: float = 30.0,
        connect_timeout: float = 10.0,
    ) -> None:
        self.gateway_url = root_url(gateway_url) + "/mcp"
        self.fallback = fallback
        self.server = server
        self.agent_id = agent_id
        self._api_key = api_key
        self._timeout = timeout
        self._connect_timeout = connect_timeout
        self._stack: AsyncExitStack | None = None
        self._tasks: anyio.abc.TaskGroup | None = None
        self._link: _Link | None = None
        self.gateway_failure: Exception | None = None
        """Why the last fall back happened (the transport's exception), for logs."""

    @property
    def via(self) -> Via | None:
        """``"gateway"`` or ``"direct"``: which path the session uses now; ``None`` outside a session."""
        return None if self._link is None else self._link.via

    async def __aenter__(self) -> MCPClient:
        if self._stack is not None:
            raise RuntimeError("MCPClient is already in a session")
        _require_sdk()
        async with AsyncExitStack() as stack:
            self._tasks = await stack.enter_async_context(anyio.create_task_group())
            stack.push_async_callback(self._close_link)
            await self._start()
            self._stack = stack.pop_all()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.__aexit__(exc_type, exc, tb)

    # --- operations ---

    async def list_tools(self) -> list[Tool]:
        """The server's tools (through the gateway: those the agent may see)."""
        return await self._run(self._list_tools, resend=True)  # type: ignore[no-any-return]

    async def call_tool(self, name: str, arguments: dict[str, Any] | None = None) -> CallToolResult:
        """Call one of the server's tools; its ``CallToolResult`` as the server answered it.

        Raises:
            mcp.MCPError: the gateway or the server refused the call (denied, unknown tool, ...).
            GatewayUnreachable: the gateway went away while it had the call, so it may or may
                not have run; later calls go to the server directly.
        """

        async def call(client: Client, via: Via) -> CallToolResult:
            if via == "gateway" and self.server is not None:
                return await client.call_tool("execute_tool", self._gateway_arguments(tool=name, args=arguments or {}))
            return await client.call_tool(name, arguments or {})

        return await self._run(call, resend=False)  # type: ignore[no-any-return]

    async def _list_tools(self, client: Client, via: Via) -> list[Tool]:
        from mcp.types import Tool

        if via == "gateway" and self.server is not None:
            listed = await client.call_tool("get_server_tools", self._gateway_arguments())
            structured = listed.structured_content or {}
            return [Tool.model_validate(tool) for tool in structured.get("tools", [])]
        tools: list[Tool] = []
        cursor: str | None = None
        for _ in range(_MAX_PAGES):
            page = await client.list_tools(cursor=cursor)
            tools.extend(page.tools)
            cursor = page.next_cursor
            if cursor is None:
                break
        return tools

    def _gateway_arguments(self, **extra: Any) -> dict[str, Any]:
        arguments: dict[str, Any] = {"server": self.server, **extra}
        if self.agent_id is not None:
            arguments["agent_id"] = self.agent_id
        return arguments

    async def _run(self, operation: Callable[[Client, Via], Awaitable[Any]], *, resend: bool) -> Any:
        """Run ``operation`` on the session's link; on the gateway's loss, go direct and maybe send it again there."""
        link = self._link
        if link is None:
            raise RuntimeError("MCPClient is used outside its session: use `async with MCPClient(...) as client`")
        job = _Job(operation)
        link.submit(job)
        await job.done.wait()
        if not job.lost:
            if job.error is not None:
                raise job.error
            return job.result
        failure = link.failure or RuntimeError("the session ended")
        if link.via == "direct":
            raise failure
        unreachable, not_sent = _unreachable(failure)
        if not unreachable:
            raise failure
        await self._fall_back(failure)
        if not (resend or not_sent):
            raise GatewayUnreachable(
                "GATEWAY_LOST",
                "the gateway went away while it had the call, which may or may not have run; "
                "later calls go to the server directly",
            ) from failure
        return await self._run(operation, resend=resend)

    # --- sessions ---

    async def _start(self) -> None:
        """Open a session with the gateway, else with the server directly."""
        link = self._spawn("gateway", self._open_gateway)
        with anyio.move_on_after(self._connect_timeout):
            await link.up.wait()
        if link.alive:
            return
        if not link.ended.is_set():
            await link.close(grace=0)
            failure: Exception = TimeoutError(f"no MCP session with {self.gateway_url} within {self._connect_timeout} s")
        else:
            failure = link.failure or RuntimeError("the gateway's session ended at once")
            if not _unreachable(failure)[0]:
                self._link = None
                raise failure
        await self._fall_back(failure)

    async def _fall_back(self, failure: Exception) -> None:
        self.gateway_failure = failure
        await self._close_link()
        link = self._spawn("direct", self._open_direct)
        await link.up.wait()
        if not link.alive:
            self._link = None
            raise link.failure or RuntimeError("the server's session ended at once")

    def _spawn(self, via: Via, open_client: Callable[[], AsyncIterator[Client]]) -> _Link:
        assert self._tasks is not None
        link = _Link(via, open_client)
        self._link = link
        self._tasks.start_soon(link.run)
        return link

    async def _close_link(self) -> None:
        link, self._link = self._link, None
        if link is not None:
            await link.close()

    async def _open_gateway(self) -> AsyncIterator[Client]:
        import httpx2
        from mcp import Client
        from mcp.client.streamable_http import streamable_http_client

        async def refuse_unavailable(response: Any) -> None:
            # The SDK turns a 5xx into an ordinary MCP error; a dead gateway behind a proxy must end the session.
            if response.status_code in (502, 503):
                raise _ProxyUnavailable(response.status_code)

        headers = {} if self._api_key is None else {"Authorization": f"Bearer {self._api_key}"}
        # The SDK's own defaults (its create_mcp_http_client): a long read, since an SSE stream may idle.
        http = httpx2.AsyncClient(
            headers=headers,
            timeout=httpx2.Timeout(self._timeout, read=300.0),
            event_hooks={"response": [refuse_unavailable]},
        )
        async with http, Client(
            streamable_http_client(self.gateway_url, http_client=http), mode="legacy", read_timeout_seconds=self._timeout
        ) as client:
            yield client

    async def _open_direct(self) -> AsyncIterator[Client]:
        from mcp import Client

        async with Client(self.fallback, mode="legacy", read_timeout_seconds=self._timeout) as client:
            yield client
