"""Authentication on the Streamable HTTP front: who presents what, and the ``/auth/`` endpoints.

Theory of operation. With authentication on, every request to ``/mcp``
goes through :meth:`HttpAuth.principal` first: the credential it presents
(``Authorization: Bearer …`` or ``X-API-Key``) is verified by
:class:`~.identity.Identity`, without a database read, and either proves a
:class:`~lockgate.core.Principal` or is answered 401 (``WWW-Authenticate``
naming the protected-resource metadata) or 503 (the credential store does
not answer: fail closed). Every refusal, and every session a credential
opens, is reported to the core, which writes the audit record.

The ``/auth/`` endpoints (JSON in and out):

- ``POST /auth/login`` ``{"name", "password"}``: a bearer token for the user
  (``{"access_token", "token_type": "bearer", "expires_in"}``). Failed logins
  are limited per user name and per peer address.
- ``POST /auth/delegate`` ``{"agents", "role"?, "ttl"?, "tools"?, "rate"?}``
  with a credential: a shorter-lived, narrower token for a sub-agent.
- admin only: ``GET``/``POST /auth/users``, ``PATCH /auth/users/{name}``
  (``role``, ``disabled``, ``password``), ``GET``/``POST /auth/keys``,
  ``DELETE /auth/keys/{key_id}``. A created key's secret is in that response
  and nowhere else.

What a signed-in user may act as: an ``admin`` every agent (``*``), a
``user`` the agent of their own name and the agents below it (``alice``,
``alice.*``). API keys carry their own grants.

Password checks (slow by design) and every database call run in worker
threads, never on the event loop.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import trio

from lockgate.core import (
    AuthenticationFailed,
    AuthenticationSucceeded,
    Event,
    Principal,
    RateBuckets,
    admin_refusal,
    rest_refusal,
    login_limits,
    parse_rate,
)
from lockgate.core.http import (
    MCP_PATH,
    RESOURCE_METADATA_PATH,
    Reject,
    Route,
    auth_unavailable,
    forbidden,
    json_body,
    resource_metadata,
    unauthorized,
)

from .auth import DelegationRefused, DelegationRequest, TokenIssuer
from .http_exchange import Exchange
from .identity import Identity, Refused, login_principal, presented_credential
from .cli.key import key_json
from .cli.user import user_json
from .store import Conflict, DatabaseUnavailable, InvalidInput, NotFound, StoreError

__all__ = ["HttpAuth"]

#: The largest ``/auth/`` request body read.
_MAX_BODY = 64 * 1024

Feed = Callable[[Event], Awaitable[None]]


class _Refusal(Exception):
    """An ``/auth/`` request answered with an error: the status and the message."""

    def __init__(self, status: int, message: str, headers: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


class HttpAuth:
    """Credentials on the HTTP front; see the module docstring."""

    def __init__(
        self,
        identity: Identity,
        issuer: TokenIssuer,
        feed: Feed,
        *,
        authorization_servers: tuple[str, ...] = (),
        announce: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._identity = identity
        self._issuer = issuer
        self._feed = feed
        self._authorization_servers = authorization_servers
        # Tells the other replicas a user or key changed (Redis), so they need not wait for their poll.
        self._announce = announce
        self._failed_logins = RateBuckets()

    @property
    def available(self) -> bool:
        """Can credentials be checked now (for ``/ready``)?"""
        return self._identity.available

    # -- /mcp ------------------------------------------------------------------------

    async def principal(self, exchange: Exchange, route: Route) -> Principal | None:
        """The principal the request's credential proves, or ``None`` once it is answered 401 or 503."""
        credential = presented_credential(exchange.headers)
        proved = self._identity.authenticate(credential, trio.current_time())
        if isinstance(proved, Principal):
            return proved
        await self._refused(exchange, proved, "authenticate")
        if proved.status == 503:
            refusal, code = auth_unavailable(route.headers), "SERVER_UNAVAILABLE"
        else:
            refusal = unauthorized(self._metadata_url(exchange), proved.reason, presented=credential is not None, cors=route.headers)
            code = "UNAUTHORIZED"
        if route.kind == "rest":
            # The REST API answers in its own error shape, the headers (WWW-Authenticate) as they are.
            refusal = dataclasses.replace(refusal, body=rest_refusal(refusal.status, refusal.headers, refusal.body, code))
        await exchange.reject(refusal)
        return None

    def check(self, credential: str, now: float) -> Principal | Refused:
        """What ``credential`` proves at ``now`` (a WebSocket connection's, checked again while it is open); no database read."""
        return self._identity.authenticate(credential, now)

    async def opened(self, exchange: Exchange, principal: Principal) -> None:
        """A credential opened a session: audit it."""
        await self._feed(AuthenticationSucceeded(now=trio.current_time(), principal=principal, address=exchange.peer))

    async def metadata(self, exchange: Exchange, route: Route) -> None:
        """``/.well-known/oauth-protected-resource``: how a client gets a token for ``/mcp`` (RFC 9728)."""
        body = resource_metadata(self._base(exchange) + MCP_PATH, self._authorization_servers)
        await exchange.respond(200, [("content-type", "application/json"), *route.headers], body)

    def _base(self, exchange: Exchange) -> str:
        # The Host header passed check_head's allow-list; TLS ends in a proxy in front, if anywhere.
        return f"http://{exchange.headers.get('host', '127.0.0.1')}"

    def _metadata_url(self, exchange: Exchange) -> str:
        return self._base(exchange) + RESOURCE_METADATA_PATH + MCP_PATH

    async def _refused(self, exchange: Exchange, refused: Refused, operation: str) -> None:
        await self._feed(
            AuthenticationFailed(
                now=trio.current_time(), reason=refused.reason, credential=refused.credential,
                address=exchange.peer, operation=operation,
            )
        )

    # -- /auth/ ----------------------------------------------------------------------

    async def handle(self, exchange: Exchange, route: Route, body: bytes) -> None:
        """Answer one request to an ``/auth/`` endpoint."""
        try:
            answer = await self._route(exchange, route, body)
        except _Refusal as refusal:
            await exchange.reject(_error(refusal.status, refusal.message, (*refusal.headers, *route.headers)))
            return
        except DatabaseUnavailable:
            await exchange.reject(auth_unavailable(route.headers))
            return
        status, document = answer
        await exchange.respond(status, [("content-type", "application/json"), ("cache-control", "no-store"), *route.headers], json_body(document))

    async def _route(self, exchange: Exchange, route: Route, body: bytes) -> tuple[int, dict[str, Any]]:
        method, parts = exchange.method, route.path.removeprefix("/auth/").split("/")
        if len(body) > _MAX_BODY:
            raise _Refusal(413, "Payload Too Large")
        match method, parts:
            case "POST", ["login"]:
                return await self._login(exchange, _object(body))
            case "POST", ["delegate"]:
                return await self._delegate(exchange, _object(body))
            case ("GET" | "POST"), ["users"] | ["keys"]:
                admin = await self._admin(exchange, f"{method.lower()}_{parts[0]}")
                return await (self._users if parts[0] == "users" else self._keys)(exchange, admin, method, body)
            case "PATCH", ["users", name] if name:
                admin = await self._admin(exchange, "update_user")
                return await self._update_user(exchange, admin, name, _object(body))
            case "DELETE", ["keys", key_id] if key_id:
                admin = await self._admin(exchange, "revoke_key")
                return await self._revoke_key(exchange, admin, key_id)
        raise _Refusal(404, f"Not Found: no {method} {route.path}")

    async def _login(self, exchange: Exchange, request: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        name, password = request.get("name"), request.get("password")
        if not isinstance(name, str) or not isinstance(password, str) or not name or not password:
            raise _Refusal(400, "Bad Request: give name and password as strings")
        now = trio.current_time()
        limits = login_limits(name, exchange.peer or None)
        refusal = self._failed_logins.first_refusal(limits, now)
        if refusal is not None:
            await self._refused(exchange, Refused(401, "too many failed logins", f"user:{name[:128]}"), "login")
            retry = max(1, int(refusal[1] + 0.999))
            raise _Refusal(429, f"Too Many Requests: too many failed logins; try again in {retry} s", (("retry-after", str(retry)),))
        result = await trio.to_thread.run_sync(self._identity.store.verify_password, name, password)
        if not result.ok or result.user is None:
            for key, rate in limits:
                self._failed_logins.take(key, rate, now)
            await self._refused(exchange, Refused(401, f"login refused: {result.refusal}", f"user:{name[:128]}"), "login")
            # One answer for every reason, so a caller cannot tell which names exist.
            raise _Refusal(401, "Unauthorized: wrong name or password")
        principal = login_principal(result.user)
        issued = self._issuer.issue(principal, now=time.time())
        await self._feed(
            AuthenticationSucceeded(now=trio.current_time(), principal=principal, address=exchange.peer, operation="login")
        )
        return 200, {"access_token": issued.token, "token_type": "bearer", "expires_in": issued.expires_in}

    async def _delegate(self, exchange: Exchange, request: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        parent = self._identity.verify(presented_credential(exchange.headers), time.time())
        if isinstance(parent, Refused):
            await self._refused(exchange, parent, "delegate")
            raise _Refusal(parent.status, "Unauthorized: a delegation needs a valid credential" if parent.status == 401 else "Service Unavailable")
        asked = _delegation_request(request)
        issued = self._issuer.delegate(parent, asked, now=time.time())
        if isinstance(issued, DelegationRefused):
            await self._feed(
                AuthenticationFailed(
                    now=trio.current_time(), reason=str(issued), credential=parent.principal_id,
                    address=exchange.peer, operation="delegate",
                )
            )
            raise _Refusal(403, f"Forbidden: {issued.reason}")
        child = self._identity.verify(issued.token, time.time())
        assert not isinstance(child, Refused), "a token just issued verifies"
        await self._feed(
            AuthenticationSucceeded(
                now=trio.current_time(), principal=child.to_principal(now=time.time(), event_now=trio.current_time()),
                address=exchange.peer, operation="delegate", target=parent.principal_id,
            )
        )
        return 200, {"access_token": issued.token, "token_type": "bearer", "expires_in": issued.expires_in}

    async def _admin(self, exchange: Exchange, operation: str) -> Principal:
        """The caller, who must be an admin: else 401 or 403, audited."""
        credential = presented_credential(exchange.headers)
        proved = self._identity.authenticate(credential, trio.current_time())
        if isinstance(proved, Refused):
            await self._refused(exchange, proved, operation)
            if proved.status == 503:
                raise DatabaseUnavailable(proved.reason)
            raise _Refusal(401, f"Unauthorized: {proved.reason}", (("www-authenticate", "Bearer"),))
        refusal = admin_refusal(proved, trio.current_time())
        if refusal is not None:
            await self._refused(exchange, Refused(401, refusal.message, proved.id), operation)
            raise _Refusal(403, f"Forbidden: {refusal.message}")
        return proved

    async def _users(self, exchange: Exchange, admin: Principal, method: str, body: bytes) -> tuple[int, dict[str, Any]]:
        store = self._identity.store
        if method == "GET":
            users = await trio.to_thread.run_sync(store.list_users)
            return 200, {"users": [user_json(user) for user in users]}
        request = _object(body)
        name, role, password = request.get("name"), request.get("role", "user"), request.get("password")
        if not all(isinstance(value, str) for value in (name, role, password)):
            raise _Refusal(400, "Bad Request: give name, role and password as strings")
        user = await self._store(store.create_user, name, role, password)
        await self._done(exchange, admin, "create_user", user.principal_id)
        return 201, user_json(user)

    async def _update_user(self, exchange: Exchange, admin: Principal, name: str, request: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        store = self._identity.store
        unknown = set(request) - {"role", "disabled", "password"}
        if unknown or not request:
            raise _Refusal(400, "Bad Request: give one or more of role, disabled, password")
        if "role" in request:
            await self._store(store.set_role, name, _string(request, "role"))
        if "disabled" in request:
            if not isinstance(request["disabled"], bool):
                raise _Refusal(400, "Bad Request: disabled is true or false")
            await self._store(store.set_disabled, name, request["disabled"])
        if "password" in request:
            await self._store(store.set_password, name, _string(request, "password"))
        user = await self._store(store.get_user, name)
        await self._done(exchange, admin, "update_user", user.principal_id)
        return 200, user_json(user)

    async def _keys(self, exchange: Exchange, admin: Principal, method: str, body: bytes) -> tuple[int, dict[str, Any]]:
        store = self._identity.store
        if method == "GET":
            keys = await trio.to_thread.run_sync(store.list_keys)
            return 200, {"keys": [key_json(key, datetime.now(timezone.utc)) for key in keys]}
        request = _object(body)
        name = _string(request, "name")
        agents = request.get("agents", [])
        if not isinstance(agents, list) or not all(isinstance(agent, str) for agent in agents):
            raise _Refusal(400, "Bad Request: agents is a list of agent grants")
        expires_at = None
        if "expires_in" in request:
            seconds = request["expires_in"]
            if isinstance(seconds, bool) or not isinstance(seconds, int) or seconds <= 0:
                raise _Refusal(400, "Bad Request: expires_in is a positive number of seconds")
            expires_at = datetime.now(timezone.utc) + timedelta(seconds=seconds)
        rate = request.get("rate")
        if rate is not None and (not isinstance(rate, str) or parse_rate(rate) is None):
            raise _Refusal(400, "Bad Request: rate is like 120/min")
        user = request.get("user")
        if user is not None and not isinstance(user, str):
            raise _Refusal(400, "Bad Request: user is a user name")
        record, secret = await self._store(
            lambda: store.create_key(
                name=name, role=request.get("role", "user"), agents=agents, expires_at=expires_at, rate=rate, user=user
            )
        )
        await self._done(exchange, admin, "create_key", record.principal_id)
        # The only time the secret is shown.
        return 201, {**key_json(record, datetime.now(timezone.utc)), "secret": secret}

    async def _revoke_key(self, exchange: Exchange, admin: Principal, key_id: str) -> tuple[int, dict[str, Any]]:
        store = self._identity.store
        await self._store(store.get_key, key_id)
        revoked = await self._store(store.revoke_key, key_id)
        await self._done(exchange, admin, "revoke_key", f"key:{key_id}")
        return 200, {"key_id": key_id, "revoked": True, "already_revoked": not revoked}

    async def _store(self, call: Callable[..., Any], *args: Any) -> Any:
        """A store call in a worker thread, its refusals as answers."""
        try:
            return await trio.to_thread.run_sync(call, *args)
        except NotFound as exc:
            raise _Refusal(404, f"Not Found: {exc}") from None
        except Conflict as exc:
            raise _Refusal(409, f"Conflict: {exc}") from None
        except InvalidInput as exc:
            raise _Refusal(400, f"Bad Request: {exc}") from None
        except DatabaseUnavailable:
            raise
        except StoreError as exc:
            raise _Refusal(400, f"Bad Request: {exc}") from None

    async def _done(self, exchange: Exchange, admin: Principal, operation: str, target: str) -> None:
        await self._feed(
            AuthenticationSucceeded(
                now=trio.current_time(), principal=admin, address=exchange.peer, operation=operation, target=target
            )
        )
        if self._announce is not None:
            await self._announce()


def _error(status: int, message: str, headers: tuple[tuple[str, str], ...]) -> Reject:
    return Reject(
        status=status,
        headers=(("content-type", "application/json"), *headers),
        body=json_body({"error": message}),
    )


def _object(body: bytes) -> dict[str, Any]:
    try:
        value = json.loads(body) if body else {}
    except ValueError:
        raise _Refusal(400, "Bad Request: the body is not JSON") from None
    if not isinstance(value, dict):
        raise _Refusal(400, "Bad Request: the body is not a JSON object")
    return value


def _string(request: dict[str, Any], name: str) -> str:
    value = request.get(name)
    if not isinstance(value, str) or not value:
        raise _Refusal(400, f"Bad Request: {name} is a non-empty string")
    return value


def _delegation_request(request: dict[str, Any]) -> DelegationRequest:
    agents = request.get("agents")
    if not isinstance(agents, list) or not agents or not all(isinstance(agent, str) for agent in agents):
        raise _Refusal(400, "Bad Request: agents is a non-empty list of agent grants")
    role = request.get("role", "user")
    if role not in ("admin", "user"):
        raise _Refusal(400, "Bad Request: role is admin or user")
    ttl = request.get("ttl")
    if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or ttl <= 0):
        raise _Refusal(400, "Bad Request: ttl is a positive number of seconds")
    tools = request.get("tools")
    if tools is not None and (not isinstance(tools, list) or not all(isinstance(tool, str) for tool in tools)):
        raise _Refusal(400, "Bad Request: tools is a list of server/tool patterns")
    rate_text = request.get("rate")
    rate = parse_rate(rate_text) if isinstance(rate_text, str) else None
    if rate_text is not None and rate is None:
        raise _Refusal(400, "Bad Request: rate is like 120/min")
    return DelegationRequest(
        agents=tuple(agents), role=role, ttl=None if ttl is None else float(ttl),
        tools=None if tools is None else tuple(tools), rate=rate,
    )
