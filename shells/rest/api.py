"""The REST API's door: JSON endpoints beside ``/mcp``, served by the same core.

Theory of operation. :class:`RestApi` answers every request
:func:`lockgate.core.http.rest_kind` routes here. A request of one server
(``/mcp/{server}/tools/call`` and the rest) is validated against its
pydantic model (:mod:`.models`: 400 naming the field), then becomes one
short-lived client session of the core: ``ClientOpened(transport="rest",
server=...)``, the JSON-RPC request :func:`~lockgate.core.rest_message`
makes, the answer, ``ClientClosed``. The core decides everything an MCP
request would have decided (policy, credential, rate limits, routing,
timeouts, the audit record); :func:`~lockgate.core.rest_answer` gives the
HTTP status of its answer. A client that hangs up closes the session, which
cancels the call downstream.

The gateway's own endpoints (``/gateway/health``, ``stats``, ``registry``,
``audit``) are read-only views of the core and the audit log;
``register`` and ``deregister`` go to the :class:`~lockgate.shells.registry.Registry`
and need the admin role (with authentication off: a gateway listening on
loopback only, whose local user is its admin). Pages and documents
(``/``, ``/status``, ``/openapi.json``, ``/docs``, ``/redoc`` and their
assets) need no credential: they hold no data, and the status page asks
for a key when its JSON endpoints want one.
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import parse_qsl, unquote

import trio
from pydantic import BaseModel, ValidationError

from lockgate.core import (
    AuthenticationFailed,
    ClientClosed,
    ClientMessageReceived,
    ClientOpened,
    PinAccepted,
    Principal,
    RestAnswer,
    SendToClient,
    __version__,
    admin_refusal,
    encode,
    rest_answer,
    rest_error,
    rest_message,
)
from lockgate.core.http import Reject, Route

from ..http_connections import Closed
from ..http_exchange import Exchange
from ..registry import Registry, RegistrationRefused
from ..runtime import GatewayCore, Runtime
from . import models as m
from .openapi import openapi_json
from .pages import asset, docs_html, redoc_html
from .status_page import status_asset, status_html

__all__ = ["RestApi"]

JSONObject = dict[str, Any]
Model = TypeVar("Model", bound=BaseModel)

_JSON = "application/json"
_HTML = "text/html; charset=utf-8"
#: Pages may load only what the gateway itself serves (the docs pages' scripts are packaged assets).
_PAGE_HEADERS = (
    ("content-security-policy", "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'"),
    ("x-content-type-options", "nosniff"),
    ("cache-control", "no-cache"),
)

#: The per-server operations: the HTTP method each takes, and the model of its body (None: a GET).
_OPERATIONS: dict[str, tuple[str, type[m.CallToolRequest | m.ReadResourceRequest | m.GetPromptRequest] | None]] = {
    "tools/list": ("GET", None),
    "tools/call": ("POST", m.CallToolRequest),
    "resources/list": ("GET", None),
    "resources/read": ("POST", m.ReadResourceRequest),
    "prompts/list": ("GET", None),
    "prompts/get": ("POST", m.GetPromptRequest),
}


#: Seconds an answer may take before its client is watched for hanging up.
_WATCH_AFTER = 0.05

#: Open REST sessions kept at most; the ones idle longest close first.
_MAX_DOORS = 256


@dataclass(slots=True, eq=False)
class _Waiter:
    """One REST request waiting for its answer, and the watch on its client once the answer is late."""

    since: float
    done: trio.Event = field(default_factory=trio.Event)
    message: JSONObject | None = None
    watch: trio.CancelScope | None = None
    unwatched: trio.Event | None = None
    hung_up: bool = False


async def _watch(exchange: Exchange, waiter: _Waiter) -> None:
    """Wake ``waiter`` if its client hangs up; stops when its scope is cancelled (the answer came)."""
    assert waiter.watch is not None and waiter.unwatched is not None
    try:
        with waiter.watch:
            if await exchange.hung_up():
                waiter.hung_up = True
                waiter.done.set()
    finally:
        waiter.unwatched.set()


@dataclass(slots=True, eq=False)
class _Door:
    """One REST session of the core (a caller and a server), and its requests waiting for answers by request id."""

    client: str
    last_used: float
    next_id: int = 1
    waiters: dict[int, _Waiter] = field(default_factory=dict)
    closed: bool = False

    def deliver(self, action: SendToClient) -> bool:
        message = action.message
        # Only answers count: progress and log notifications have no place in a JSON reply.
        request_id = message.get("id")
        waiter = self.waiters.get(request_id) if isinstance(request_id, int) else None
        if waiter is not None and ("result" in message or "error" in message):
            waiter.message = message
            waiter.done.set()
        return True

    async def send(self, action: SendToClient) -> None:
        self.deliver(action)

    def close(self) -> None:
        """The core closed the session (the gateway is stopping): nobody waits any more."""
        self.closed = True
        for waiter in self.waiters.values():
            waiter.done.set()


def _cancelled(request_id: int) -> bytes:
    params = {"requestId": request_id, "reason": "the client went away"}
    return encode({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": params})


class _Refused(Exception):
    """Answer the request with this error instead (raised while reading it)."""

    def __init__(self, status: int, code: str, message: str, data: JSONObject | None = None) -> None:
        super().__init__(message)
        self.answer = RestAnswer(status, rest_error(status, code, message, data))


class RestApi:
    """The REST API of one gateway (see the module docstring)."""

    def __init__(
        self,
        core: GatewayCore,
        runtime: Runtime,
        *,
        authenticated: bool,
        loopback: bool,
        registry: Registry | None = None,
    ) -> None:
        self._core = core
        self._runtime = runtime
        self._authenticated = authenticated
        self._loopback = loopback
        self._registry = registry
        # REST session ids: never a Streamable HTTP session id (those have no colon).
        self._ids = itertools.count(1)
        #: The open REST sessions, by caller and server (see _door).
        self._doors: dict[tuple[Principal | None, str], _Door] = {}
        #: Requests waiting for an answer, and their connections, for watch_late.
        self._late: dict[_Waiter, Exchange] = {}
        self._some_late = trio.Event()

    # -- pages -------------------------------------------------------------------

    async def page(self, exchange: Exchange, route: Route) -> None:
        """``/``, ``/status``, ``/openapi.json``, ``/docs``, ``/redoc`` and their assets."""
        path = route.path
        found: tuple[str, bytes] | None
        if path in ("/", "/status"):
            found = _HTML, status_html()
        elif path == "/openapi.json":
            found = _JSON, openapi_json(__version__)
        elif path == "/docs":
            found = _HTML, docs_html()
        elif path == "/redoc":
            found = _HTML, redoc_html()
        elif path.startswith("/status/assets/"):
            found = status_asset(path.removeprefix("/status/assets/"))
        else:
            found = asset(path.removeprefix("/docs/assets/"))
        if found is None:
            await _answer(exchange, route, _error(404, "NOT_FOUND", f"Not Found: {path[:200]}"))
            return
        content_type, body = found
        await exchange.respond(200, [("content-type", content_type), *_PAGE_HEADERS, *route.headers], body)

    # -- the JSON endpoints --------------------------------------------------------

    async def too_large(self, exchange: Exchange, route: Route, limit: int) -> None:
        """413 for a body over ``limit`` bytes; the connection closes (the rest of the body is not read)."""
        body = rest_error(413, "PAYLOAD_TOO_LARGE", f"Payload Too Large: the limit is {limit} bytes", {"limit": limit})
        await exchange.reject(Reject(status=413, headers=(("content-type", _JSON), *route.headers), body=encode(body)), close=True)

    async def handle(self, exchange: Exchange, route: Route, body: bytes, principal: Principal | None) -> None:
        """Answer one request of the REST API; ``principal`` is the verified caller (authentication on)."""
        try:
            answer = await self._dispatch(exchange, route, body, principal)
        except _Refused as refused:
            answer = refused.answer
        await _answer(exchange, route, answer)

    async def _dispatch(self, exchange: Exchange, route: Route, body: bytes, principal: Principal | None) -> RestAnswer:
        method = exchange.method
        parts = [unquote(part) for part in route.path.split("/")[1:]]
        query = _query(route.query)
        if method == "POST" and _media_type(exchange.headers.get("content-type", "")) != _JSON:
            raise _Refused(415, "INVALID_REQUEST", "Unsupported Media Type: send application/json")
        match parts:
            case ["mcp", "batch"]:
                _method(method, "POST")
                batch = _parse(m.BatchRequest, body)
                # A client that hangs up cancels every call of its batch still running.
                return await exchange.while_connected(lambda: self._batch(batch, principal))
            case ["mcp", server, "health"]:
                _method(method, "GET")
                _no_query(query)
                health = self._core.server_health(server)
                if health is None:
                    return _error(404, "SERVER_NOT_FOUND", f"Unknown server: {server[:128]}")
                return RestAnswer(200, health)
            case ["mcp", server, kind, verb] if f"{kind}/{verb}" in _OPERATIONS:
                operation = f"{kind}/{verb}"
                wanted, model = _OPERATIONS[operation]
                _method(method, wanted)
                agent = _agent_query(query)
                if model is None:
                    return _counted(await self._request(exchange, principal, server, operation, {}, agent_id=agent), kind)
                request = _parse(model, body)
                timeout_ms = request.timeout_ms if isinstance(request, m.CallToolRequest) else None
                return await self._request(
                    exchange, principal, server, operation, request.mcp_params(),
                    agent_id=request.agent_id or agent, timeout_ms=timeout_ms,
                )
            case ["gateway", "health"]:
                _method(method, "GET")
                return RestAnswer(200, self._core.gateway_health(trio.current_time()))
            case ["gateway", "stats"]:
                _method(method, "GET")
                return RestAnswer(200, self._core.gateway_stats(trio.current_time()))
            case ["gateway", "registry"]:
                _method(method, "GET")
                return RestAnswer(200, self._core.registry_view())
            case ["gateway", "audit"]:
                _method(method, "GET")
                limit = _parse_query(m.AuditQuery, query).limit
                return RestAnswer(200, {"records": self._runtime.recent_audit(limit)})
            case ["gateway", "register"]:
                _method(method, "POST")
                await self._admin(exchange, principal, "register")
                return await self._register(_parse(m.RegisterRequest, body))
            case ["gateway", "deregister", server, instance_id]:
                _method(method, "DELETE")
                await self._admin(exchange, principal, "deregister")
                return await self._deregister(server, instance_id)
            case ["gateway", "pins"]:
                _method(method, "GET")
                return RestAnswer(200, self._core.pins())
            case ["gateway", "pins", server, "accept"] | ["gateway", "pins", server, _, "accept"]:
                _method(method, "POST")
                await self._admin(exchange, principal, "accept_pin")
                return await self._accept_pin(server, parts[3] if len(parts) == 5 else None)
        return _error(404, "NOT_FOUND", f"Not Found: no endpoint {route.path[:200]}")

    # -- one request through the core ----------------------------------------------

    async def _request(
        self,
        exchange: Exchange | None,
        principal: Principal | None,
        server: str,
        operation: str,
        params: JSONObject,
        *,
        agent_id: str | None = None,
        timeout_ms: int | None = None,
    ) -> RestAnswer:
        """Serve one per-server operation in the REST session of its caller and server, and give its answer.

        With ``exchange``, a client that hangs up before the answer cancels
        the call downstream. Its socket is watched only once the answer is
        late (:meth:`watch_late`): most answers come sooner, and watching
        costs more than they do.

        Raises:
            Closed: the client hung up; the connection closes.
        """
        door = await self._door(principal, server)
        request_id = door.next_id
        door.next_id += 1
        waiter = door.waiters[request_id] = _Waiter(since=trio.current_time())
        if exchange is not None:
            if not self._late:
                self._some_late.set()
            self._late[waiter] = exchange
        try:
            data = rest_message(operation, params, request_id=request_id, agent_id=agent_id, timeout_ms=timeout_ms)
            await self._runtime.feed(ClientMessageReceived(now=trio.current_time(), client=door.client, data=data))
            await waiter.done.wait()
        finally:
            del door.waiters[request_id]
            self._late.pop(waiter, None)
            door.last_used = trio.current_time()
            if waiter.watch is not None or (waiter.message is None and not door.closed):
                with trio.CancelScope(shield=True):
                    if waiter.watch is not None and waiter.unwatched is not None:
                        # The connection reads its next request next: the watch must have stopped reading.
                        waiter.watch.cancel()
                        await waiter.unwatched.wait()
                    if waiter.message is None and not door.closed:
                        # Hung up (or cancelled): the core cancels the call downstream, as for an MCP client's cancellation.
                        await self._runtime.feed(ClientMessageReceived(now=trio.current_time(), client=door.client, data=_cancelled(request_id)))
        if waiter.hung_up:
            raise Closed
        if waiter.message is None:
            return _error(503, "SERVER_UNAVAILABLE", "The gateway ended the request (it is shutting down)")
        return rest_answer(waiter.message, operation)

    async def watch_late(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Watch the clients of answers later than :data:`_WATCH_AFTER` for hanging up; runs until cancelled."""
        async with trio.open_nursery() as nursery:
            task_status.started()
            while True:
                if not self._late:
                    self._some_late = trio.Event()
                    await self._some_late.wait()
                await trio.sleep(_WATCH_AFTER)
                due = trio.current_time() - _WATCH_AFTER
                for waiter, exchange in list(self._late.items()):
                    if waiter.watch is None and waiter.since <= due:
                        waiter.watch, waiter.unwatched = trio.CancelScope(), trio.Event()
                        nursery.start_soon(_watch, exchange, waiter)

    async def _door(self, principal: Principal | None, server: str) -> _Door:
        """The open REST session of ``principal`` for ``server``: made on first use, kept while used.

        One session per caller and server, not per request: a request is
        then one event for the core, as an MCP call in an open session is.
        Sessions idle longest are closed beyond :data:`_MAX_DOORS`.
        """
        key = (principal, server)
        door = self._doors.get(key)
        if door is not None and not door.closed:
            return door
        door = self._doors[key] = _Door(client=f"rest:{next(self._ids)}", last_used=trio.current_time())
        self._runtime.register_client(door.client, door.send, door.close, door.deliver)
        await self._runtime.feed(ClientOpened(now=trio.current_time(), client=door.client, transport="rest", principal=principal, server=server))
        if len(self._doors) > _MAX_DOORS:
            idle = sorted((d.last_used, k) for k, d in self._doors.items() if not d.waiters and d is not door)
            for _, old in idle[: len(self._doors) - _MAX_DOORS]:
                await self._close_door(old)
        return door

    async def _close_door(self, key: tuple[Principal | None, str]) -> None:
        door = self._doors.pop(key)
        if not door.closed:
            door.closed = True
            await self._runtime.feed(ClientClosed(now=trio.current_time(), client=door.client))

    async def _batch(self, batch: m.BatchRequest, principal: Principal | None) -> RestAnswer:
        """Run the calls concurrently; answer each in the order given, with its own result or error."""
        answers: list[RestAnswer | None] = [None] * len(batch.calls)

        async def one(index: int, call: m.BatchCall) -> None:
            params: JSONObject = {"name": call.name, "arguments": call.arguments}
            answers[index] = await self._request(
                None, principal, call.server, "tools/call", params, agent_id=call.agent_id, timeout_ms=call.timeout_ms
            )

        async with trio.open_nursery() as nursery:
            for index, call in enumerate(batch.calls):
                nursery.start_soon(one, index, call)
        results: list[JSONObject] = []
        for answer in answers:
            assert answer is not None
            if answer.status == 200:
                results.append({"ok": True, "status": 200, "result": answer.body})
            else:
                results.append({"ok": False, "status": answer.status, "error": answer.body["error"]})
        return RestAnswer(200, {"results": results})

    # -- the registry ----------------------------------------------------------------

    async def _admin(self, exchange: Exchange, principal: Principal | None, operation: str) -> None:
        """Only an admin may change the registry; without authentication, only a gateway on loopback."""
        if principal is None:
            if self._authenticated or not self._loopback:
                raise _Refused(
                    403, "FORBIDDEN",
                    "Forbidden: changing the registry needs an admin credential "
                    "(or, with authentication off, a gateway listening on loopback only)",
                )
            return
        refusal = admin_refusal(principal, trio.current_time())
        if refusal is not None and principal.role != "admin":
            refusal = dataclasses.replace(refusal, message=f"credential {principal.id} has role {principal.role}: only an admin may change the registry")
        if refusal is not None:
            await self._runtime.feed(
                AuthenticationFailed(
                    now=trio.current_time(), reason=refusal.message, credential=principal.id,
                    address=exchange.peer, operation=operation,
                )
            )
            raise _Refused(403, "FORBIDDEN", f"Forbidden: {refusal.message}", {"rule": refusal.rule})

    async def _register(self, request: m.RegisterRequest) -> RestAnswer:
        done = await self._registry_or_refuse().register(request.model_dump(exclude_none=True))
        return RestAnswer(done.status, done.json()) if isinstance(done, RegistrationRefused) else RestAnswer(201, done.json())

    async def _deregister(self, server: str, instance_id: str) -> RestAnswer:
        done = await self._registry_or_refuse().deregister(server, instance_id)
        return RestAnswer(done.status, done.json()) if isinstance(done, RegistrationRefused) else RestAnswer(200, done.json())

    async def _accept_pin(self, server: str, tool: str | None) -> RestAnswer:
        """Feed ``PinAccepted`` for what is quarantined (the core serves it again at once); 404 when nothing is."""
        held = sorted(self._core.pins().get("servers", {}).get(server, {}).get("quarantined", {}))
        accepted = [name for name in held if tool is None or name == tool]
        if not accepted:
            what = f"tool {tool[:128]!r} of server {server[:128]!r}" if tool is not None else f"tool of server {server[:128]!r}"
            return _error(404, "TOOL_NOT_FOUND", f"No quarantined {what}", {"server": server[:128]})
        await self._runtime.feed(PinAccepted(now=trio.current_time(), server=server, tool=tool))
        return RestAnswer(200, {"server": server, "accepted": accepted})

    def _registry_or_refuse(self) -> Registry:
        if self._registry is None:
            raise _Refused(503, "SERVER_UNAVAILABLE", "The registry is not available: its database could not be opened")
        return self._registry


# -- reading requests ----------------------------------------------------------------


def _parse(model: type[Model], body: bytes) -> Model:
    """The body as ``model``, or a 400 naming each field at fault."""
    try:
        return model.model_validate_json(body or b"{}")
    except ValidationError as exc:
        code = m.validation_error_code(exc)
        raise _Refused(400, code.value, f"Bad Request: the body is not a valid {model.__name__}", m.validation_error_data(exc)) from None


def _parse_query(model: type[Model], query: dict[str, str]) -> Model:
    try:
        return model.model_validate(query)
    except ValidationError as exc:
        raise _Refused(400, "INVALID_REQUEST", "Bad Request: invalid query parameters", m.validation_error_data(exc)) from None


def _agent_query(query: dict[str, str]) -> str | None:
    return _parse_query(m.AgentQuery, query).agent_id if query else None


def _no_query(query: dict[str, str]) -> None:
    if query:
        raise _Refused(400, "INVALID_REQUEST", f"Bad Request: unknown query parameters: {', '.join(sorted(query))[:200]}")


def _query(raw: str) -> dict[str, str]:
    """The query string's parameters; one given twice is a 400 (which one would count is a guess)."""
    try:
        pairs = parse_qsl(raw, keep_blank_values=True, strict_parsing=bool(raw), max_num_fields=32)
    except ValueError:
        raise _Refused(400, "INVALID_REQUEST", "Bad Request: malformed query string") from None
    query = dict(pairs)
    if len(query) != len(pairs):
        raise _Refused(400, "INVALID_REQUEST", "Bad Request: a query parameter is given twice")
    return query


def _method(method: str, wanted: str) -> None:
    if method != wanted:
        raise _Refused(405, "METHOD_NOT_ALLOWED", f"Method Not Allowed: use {wanted}", {"allow": wanted})


def _media_type(value: str) -> str:
    return value.partition(";")[0].strip().lower()


def _counted(answer: RestAnswer, kind: str) -> RestAnswer:
    """A list with its ``count``, as the Enhanced Gateway's clients read it (of resources: not their templates)."""
    items = answer.body.get(kind)
    if answer.status != 200 or not isinstance(items, list):
        return answer
    return RestAnswer(200, {**answer.body, "count": len(items)}, answer.headers)


def _error(status: int, code: str, message: str, data: JSONObject | None = None) -> RestAnswer:
    return RestAnswer(status, rest_error(status, code, message, data))


async def _answer(exchange: Exchange, route: Route, answer: RestAnswer) -> None:
    headers = [("content-type", _JSON), *answer.headers, *route.headers]
    if answer.status == 405:
        headers.append(("allow", str(answer.body["error"]["data"].get("allow", "GET"))))
    await exchange.respond(answer.status, headers, encode(answer.body))

