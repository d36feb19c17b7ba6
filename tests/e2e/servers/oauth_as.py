"""An OAuth 2.1 authorization server for Lockgate's end-to-end tests, built from the MCP SDK's server pieces.

Run by ``tests/e2e/oauth_servers.py``::

    python oauth_as.py --fd N --issuer http://127.0.0.1:P --state FILE --log FILE
                       [--token-ttl SECONDS] [--m2m-client-id ID] [--m2m-client-secret SECRET]

It serves, on the listening socket inherited as file descriptor N:

- ``/.well-known/oauth-authorization-server`` (RFC 8414), ``/authorize`` and ``/register`` (RFC 7591)
  from ``mcp.server.auth.routes.create_auth_routes``;
- ``/token``: the SDK's handler for ``authorization_code`` (PKCE S256) and ``refresh_token`` (rotated),
  plus ``client_credentials`` for confidential clients (``client_secret_basic`` or ``client_secret_post``);
- ``/revoke`` (RFC 7009) and ``/introspect`` (RFC 7662, which the protected MCP server asks);
- ``/_log`` (the events of ``--log``) and ``/_control`` (failure modes), for the tests.

``/authorize`` approves at once, without a page, for the user named by the ``test_user`` query
parameter (``alice`` when absent). Registered clients, codes, tokens and modes are kept in the
``--state`` file, so a restarted server remembers them as a real one's database would.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hmac
import json
import math
import os
import secrets
import socket
import time
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl, unquote, urlencode

import anyio
import uvicorn
from mcp.server.auth.provider import (
    AccessToken,
    AuthorizationCode,
    AuthorizationParams,
    AuthorizeError,
    OAuthAuthorizationServerProvider,
    RefreshToken,
    construct_redirect_uri,
)
from mcp.server.auth.routes import build_metadata, create_auth_routes
from mcp.server.auth.settings import ClientRegistrationOptions, RevocationOptions
from mcp.shared.auth import OAuthClientInformationFull, OAuthToken
from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from asgi_body import read_body, replaying  # a sibling script's module: this folder is on sys.path

SCOPES = ["mcp:read", "mcp:write", "mcp:admin"]
# What a client gets when its authorization request names no scope (RFC 6749 §3.3 lets the server choose).
DEFAULT_SCOPES = ["mcp:read"]
# How long the "slow" modes keep a request waiting: longer than any client should wait.
SLOW_SECONDS = 30
AUTHORIZATION_CODE_TTL = 300
METADATA_PATH = "/.well-known/oauth-authorization-server"
# The issuer the "wrong_issuer" mode announces: anything but the real one.
WRONG_ISSUER = "https://wrong-issuer.invalid"

# An issuer URL keeps its empty path: RFC 8414 §3.3 compares issuers as exact strings, and pydantic
# would otherwise render "http://127.0.0.1:P" as "http://127.0.0.1:P/".
ISSUER_ADAPTER: TypeAdapter[AnyHttpUrl] = TypeAdapter(AnyHttpUrl, config=ConfigDict(url_preserve_empty_path=True))


class IssuedAccessToken(AccessToken):
    """An access token with the grant it came from, so revoking any token of a grant revokes all of it."""

    grant_id: str


class IssuedRefreshToken(RefreshToken):
    """A refresh token with the grant it came from (rotation keeps the grant)."""

    grant_id: str


class Modes(BaseModel):
    """The failure modes a test can switch on through ``/_control``."""

    model_config = ConfigDict(extra="forbid")

    metadata: Literal["ok", "down", "garbage", "wrong_issuer", "slow"] = "ok"
    token: Literal["ok", "error", "slow"] = "ok"
    expire_refresh: bool = False


class ControlRequest(BaseModel):
    """The body of ``POST /_control``: modes to change, and ``revoke_all``, which is an action, not a mode."""

    model_config = ConfigDict(extra="forbid")

    metadata: Literal["ok", "down", "garbage", "wrong_issuer", "slow"] | None = None
    token: Literal["ok", "error", "slow"] | None = None
    expire_refresh: bool | None = None
    revoke_all: bool = False


class State(BaseModel):
    """Everything the server remembers: what a real one would keep in its database."""

    clients: dict[str, OAuthClientInformationFull] = Field(default_factory=dict)
    codes: dict[str, AuthorizationCode] = Field(default_factory=dict)
    access: dict[str, IssuedAccessToken] = Field(default_factory=dict)
    refresh: dict[str, IssuedRefreshToken] = Field(default_factory=dict)
    modes: Modes = Field(default_factory=Modes)


class Store:
    """The state, read from its file at start and written back after every change."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.state = State.model_validate_json(path.read_text()) if path.exists() else State()

    def save(self) -> None:
        # Written whole and renamed into place, so a server killed mid-write leaves the previous state.
        partial = self.path.with_name(self.path.name + ".partial")
        partial.write_text(self.state.model_dump_json())
        os.replace(partial, self.path)


class Events:
    """What the server saw, one JSON line per event, for the tests to read (``OAuthServers.log``)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def record(
        self,
        event: Literal["register", "authorize", "token", "revoke"],
        *,
        grant: str | None = None,
        client_id: str | None = None,
        resource: str | None = None,
        scopes: list[str] | None = None,
        subject: str | None = None,
        code_challenge_method: str | None = None,
        error: str | None = None,
    ) -> None:
        line = {
            "event": event,
            "grant": grant,
            "client_id": client_id,
            "resource": resource,
            "scopes": scopes or [],
            "subject": subject,
            "code_challenge_method": code_challenge_method,
            "error": error,
        }
        with self.path.open("a") as file:
            file.write(json.dumps(line) + "\n")

    def read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines()]


class AuthorizeRequest(BaseModel):
    """What the provider needs from an authorization request that the SDK does not hand it."""

    user: str
    code_challenge_method: str | None


# Set by AuthorizeEndpoint for the provider's authorize(), which the SDK calls without the request.
current_authorize_request: ContextVar[AuthorizeRequest | None] = ContextVar("current_authorize_request", default=None)


class Provider(OAuthAuthorizationServerProvider[AuthorizationCode, IssuedRefreshToken, IssuedAccessToken]):
    """The SDK's provider interface over the stored state: approves every authorization at once."""

    def __init__(self, store: Store, events: Events, token_ttl: int) -> None:
        self.store = store
        self.events = events
        self.token_ttl = token_ttl

    @property
    def state(self) -> State:
        return self.store.state

    async def get_client(self, client_id: str) -> OAuthClientInformationFull | None:
        return self.state.clients.get(client_id)

    async def register_client(self, client_info: OAuthClientInformationFull) -> None:
        requested = (client_info.scope or "").split()
        # The SDK's /authorize refuses scopes outside the client's registered `scope`, and a client
        # registers the scope of its first challenge only; allowing every scope lets a later step-up
        # (write_note's 403 asks for mcp:write) be authorized, as real servers do.
        client_info.scope = " ".join(SCOPES)
        self.state.clients[client_info.client_id] = client_info
        self.store.save()
        self.events.record("register", client_id=client_info.client_id, scopes=requested)

    async def authorize(self, client: OAuthClientInformationFull, params: AuthorizationParams) -> str:
        request = current_authorize_request.get() or AuthorizeRequest(user="alice", code_challenge_method=None)
        scopes = params.scopes or DEFAULT_SCOPES
        if request.code_challenge_method != "S256":
            # RFC 7636 §4.3: no method means "plain", which this server (as MCP requires) does not accept.
            # The SDK would default a missing method to S256, so the check is made here.
            self.events.record(
                "authorize",
                client_id=client.client_id,
                resource=params.resource,
                scopes=scopes,
                subject=request.user,
                code_challenge_method=request.code_challenge_method,
                error="invalid_request",
            )
            raise AuthorizeError("invalid_request", "code_challenge_method must be S256")
        code = secrets.token_urlsafe(32)
        self.state.codes[code] = AuthorizationCode(
            code=code,
            scopes=scopes,
            expires_at=time.time() + AUTHORIZATION_CODE_TTL,
            client_id=client.client_id,
            code_challenge=params.code_challenge,
            redirect_uri=params.redirect_uri,
            redirect_uri_provided_explicitly=params.redirect_uri_provided_explicitly,
            resource=params.resource,
            subject=request.user,
        )
        self.store.save()
        self.events.record(
            "authorize",
            client_id=client.client_id,
            resource=params.resource,
            scopes=scopes,
            subject=request.user,
            code_challenge_method=request.code_challenge_method,
        )
        # A real server would show a login and consent page here; this one has already said yes.
        return construct_redirect_uri(str(params.redirect_uri), code=code, state=params.state)

    async def load_authorization_code(self, client: OAuthClientInformationFull, authorization_code: str) -> AuthorizationCode | None:
        return self.state.codes.get(authorization_code)

    async def exchange_authorization_code(self, client: OAuthClientInformationFull, authorization_code: AuthorizationCode) -> OAuthToken:
        del self.state.codes[authorization_code.code]  # a code is good once
        return self.issue(
            "authorization_code",
            client_id=client.client_id,
            scopes=authorization_code.scopes,
            resource=authorization_code.resource,
            subject=authorization_code.subject,
            grant_id=secrets.token_urlsafe(12),
            with_refresh=True,
        )

    async def load_refresh_token(self, client: OAuthClientInformationFull, refresh_token: str) -> IssuedRefreshToken | None:
        token = self.state.refresh.get(refresh_token)
        if token is None or token.client_id != client.client_id:
            return None
        if self.state.modes.expire_refresh:
            # Shown as expired rather than unknown, so the SDK answers "refresh token has expired".
            return token.model_copy(update={"expires_at": 1})
        return token

    async def exchange_refresh_token(
        self, client: OAuthClientInformationFull, refresh_token: IssuedRefreshToken, scopes: list[str]
    ) -> OAuthToken:
        del self.state.refresh[refresh_token.token]  # rotation: the old refresh token is spent
        return self.issue(
            "refresh_token",
            client_id=client.client_id,
            scopes=scopes,
            resource=refresh_token.resource,
            subject=refresh_token.subject,
            grant_id=refresh_token.grant_id,
            with_refresh=True,
        )

    async def load_access_token(self, token: str) -> IssuedAccessToken | None:
        access = self.state.access.get(token)
        if access is None or (access.expires_at is not None and access.expires_at <= time.time()):
            return None
        return access

    async def revoke_token(self, token: IssuedAccessToken | IssuedRefreshToken) -> None:
        # RFC 7009 §2.1: revoking one token of a grant revokes the others issued with it.
        self.revoke_grant(token.grant_id)

    def revoke_grant(self, grant_id: str) -> None:
        self.state.access = {k: v for k, v in self.state.access.items() if v.grant_id != grant_id}
        self.state.refresh = {k: v for k, v in self.state.refresh.items() if v.grant_id != grant_id}
        self.store.save()

    def revoke_all(self) -> None:
        self.state.access.clear()
        self.state.refresh.clear()
        self.store.save()

    def issue(
        self,
        grant: str,
        *,
        client_id: str,
        scopes: list[str],
        resource: str | None,
        subject: str | None,
        grant_id: str,
        with_refresh: bool,
    ) -> OAuthToken:
        """Mint an access token (and a refresh token) for a grant, remember them, and log the event."""
        access = "at_" + secrets.token_urlsafe(24)
        self.state.access[access] = IssuedAccessToken(
            token=access,
            client_id=client_id,
            scopes=scopes,
            # Rounded up: a token lives token_ttl seconds at least, never less.
            expires_at=math.ceil(time.time() + self.token_ttl),
            resource=resource,
            subject=subject,
            grant_id=grant_id,
        )
        refresh = None
        if with_refresh:
            refresh = "rt_" + secrets.token_urlsafe(24)
            self.state.refresh[refresh] = IssuedRefreshToken(
                token=refresh, client_id=client_id, scopes=scopes, resource=resource, subject=subject, grant_id=grant_id
            )
        self.store.save()
        self.events.record("token", grant=grant, client_id=client_id, resource=resource, scopes=scopes, subject=subject)
        return OAuthToken(access_token=access, expires_in=self.token_ttl, scope=" ".join(scopes), refresh_token=refresh)


class ClientAuthenticationError(Exception):
    """The client's credentials are missing or wrong (RFC 6749 §5.2 ``invalid_client``)."""

    def __init__(self, message: str, *, basic: bool) -> None:
        super().__init__(message)
        self.message = message
        self.basic = basic  # the client tried HTTP Basic, so the 401 names that scheme


def basic_credentials(headers: Mapping[str, str]) -> tuple[str, str] | None:
    """The client id and secret of an ``Authorization: Basic`` header (RFC 6749 §2.3.1), if there is one."""
    value = headers.get("authorization", "")
    if not value.lower().startswith("basic "):
        return None
    try:
        client_id, separator, secret = base64.b64decode(value[6:], validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return (unquote(client_id), unquote(secret)) if separator else None




class FailureRecorder:
    """A send channel that passes a response on, first calling ``on_error`` with the OAuth error of a failure.

    Called before the last of the body goes out, so a client that has its answer finds the event logged.
    """

    def __init__(self, send: Send, on_error: Callable[[str], None]) -> None:
        self.send = send
        self.on_error = on_error
        self.status = 0
        self.body = b""

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
        elif message["type"] == "http.response.body" and self.status != 200:
            self.body += message.get("body", b"")
            if not message.get("more_body", False):
                self.on_error(self.error())
        await self.send(message)

    def error(self) -> str:
        """The OAuth ``error`` code of the error response."""
        try:
            payload = json.loads(self.body)
        except ValueError:
            payload = None
        return str(payload["error"]) if isinstance(payload, dict) and "error" in payload else f"http_{self.status}"


class AuthorizeEndpoint:
    """The SDK's ``/authorize``, told who the user is and which PKCE method the client asked for."""

    def __init__(self, sdk: ASGIApp) -> None:
        self.sdk = sdk

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        params = dict(parse_qsl(scope.get("query_string", b"").decode(errors="replace")))
        if scope["method"] == "POST":
            # RFC 6749 allows the request as a form too; read it here and give it to the SDK again.
            body = await read_body(receive)
            params.update(parse_qsl(body.decode(errors="replace")))
            receive = replaying(body, receive)
        request = AuthorizeRequest(user=params.get("test_user", "alice"), code_challenge_method=params.get("code_challenge_method"))
        reset = current_authorize_request.set(request)
        try:
            await self.sdk(scope, receive, send)
        finally:
            current_authorize_request.reset(reset)


async def still_there_after(seconds: float, receive: Receive) -> bool:
    """Wait ``seconds``, or less if the client hangs up first; whether it is still there.

    A "slow" request the client gave up on is dropped rather than answered late, so that it cannot
    log an event (or spend a refresh token) in the middle of some later test.
    """
    with anyio.move_on_after(seconds):
        while (await receive())["type"] != "http.disconnect":
            pass
        return False
    return True


class AuthorizationServer:
    """The Starlette application: the SDK's routes, the ones it lacks, and the test controls."""

    def __init__(self, issuer: str, store: Store, events: Events, token_ttl: int) -> None:
        self.issuer = issuer
        self.store = store
        self.events = events
        self.provider = Provider(store, events, token_ttl)
        issuer_url = ISSUER_ADAPTER.validate_python(issuer)
        registration = ClientRegistrationOptions(enabled=True, valid_scopes=SCOPES, default_scopes=DEFAULT_SCOPES)
        revocation = RevocationOptions(enabled=True)
        metadata = build_metadata(issuer_url, None, registration, revocation)
        metadata.grant_types_supported = [*(metadata.grant_types_supported or []), "client_credentials"]
        metadata.introspection_endpoint = AnyHttpUrl(issuer + "/introspect")
        self.metadata_json = metadata.model_dump(mode="json", exclude_none=True)
        sdk = {route.path: route for route in create_auth_routes(self.provider, issuer_url, None, registration, revocation)}
        self.sdk_token = sdk["/token"].app
        self.app = Starlette(
            routes=[
                Route(METADATA_PATH, self.metadata, methods=["GET"]),
                Route("/authorize", AuthorizeEndpoint(sdk["/authorize"].app), methods=["GET", "POST"]),
                Route("/token", AsgiEndpoint(self.token), methods=["POST"]),
                sdk["/register"],
                Route("/revoke", self.revoke, methods=["POST"]),
                Route("/introspect", self.introspect, methods=["POST"]),
                Route("/_log", self.log, methods=["GET"]),
                Route("/_control", self.control, methods=["POST"]),
            ]
        )

    @property
    def modes(self) -> Modes:
        return self.store.state.modes

    async def metadata(self, request: Request) -> Response:
        mode = self.modes.metadata
        if mode == "down":
            return PlainTextResponse("Service Unavailable", status_code=503)
        if mode == "garbage":
            return PlainTextResponse("<html><body>Sign in to the Wi-Fi</body></html>", media_type="text/html")
        if mode == "wrong_issuer":
            return JSONResponse({**self.metadata_json, "issuer": WRONG_ISSUER})
        if mode == "slow" and not await still_there_after(SLOW_SECONDS, request.receive):
            return Response(status_code=499)  # nobody is listening
        return JSONResponse(self.metadata_json)

    async def token(self, scope: Scope, receive: Receive, send: Send) -> None:
        """``/token``: the test modes, client_credentials here, the other grants to the SDK's handler."""
        body = await read_body(receive)
        form = dict(parse_qsl(body.decode(errors="replace")))
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        basic = basic_credentials(headers)
        grant = form.get("grant_type")
        client_id = form.get("client_id") or (basic[0] if basic else None)

        def failed(error: str) -> None:
            self.events.record(
                "token",
                grant=grant,
                client_id=client_id,
                resource=form.get("resource"),
                scopes=form.get("scope", "").split(),
                error=error,
            )

        if self.modes.token == "slow":
            if not await still_there_after(SLOW_SECONDS, receive):
                return
        elif self.modes.token == "error":
            failed("invalid_grant")
            await _oauth_error("invalid_grant", "the token endpoint is failing (test mode)")(scope, receive, send)
            return

        if grant == "client_credentials":
            response = await self.client_credentials(form, headers)
            if response.status_code != 200:
                failed(json.loads(bytes(response.body))["error"])
            await response(scope, receive, send)
            return

        if basic is not None and "client_id" not in form:
            # RFC 6749 §2.3.1 lets a client using HTTP Basic leave client_id out of the form,
            # but the SDK's ClientAuthenticator looks for it there.
            body += (b"&" if body else b"") + urlencode({"client_id": basic[0]}).encode()
        await self.sdk_token(scope, replaying(body, receive), FailureRecorder(send, failed))

    async def client_credentials(self, form: Mapping[str, str], headers: Mapping[str, str]) -> JSONResponse:
        """The client_credentials grant (RFC 6749 §4.4), which the SDK's token handler lacks."""
        try:
            client = await self.authenticate(form, headers)
        except ClientAuthenticationError as e:
            extra = {"WWW-Authenticate": 'Basic realm="token"'} if e.basic else {}
            return _oauth_error("invalid_client", e.message, 401, extra)
        if not client.client_secret:
            return _oauth_error("unauthorized_client", "client_credentials needs a confidential client")
        if "client_credentials" not in client.grant_types:
            return _oauth_error("unauthorized_client", "client_credentials is not one of this client's grants")
        scopes = form.get("scope", "").split() or DEFAULT_SCOPES
        unknown = [s for s in scopes if s not in SCOPES]
        if unknown:
            return _oauth_error("invalid_scope", f"unknown scopes {unknown}")
        token = self.provider.issue(
            "client_credentials",
            client_id=client.client_id,
            scopes=scopes,
            resource=form.get("resource"),
            # RFC 9068 §2.2: with no resource owner, the subject is the client itself.
            subject=client.client_id,
            grant_id=secrets.token_urlsafe(12),
            with_refresh=False,
        )
        return _no_store(token.model_dump(exclude_none=True), 200)

    async def authenticate(self, form: Mapping[str, str], headers: Mapping[str, str]) -> OAuthClientInformationFull:
        """The client a request comes from, by HTTP Basic or by the form, whichever it used.

        Unlike the SDK's ClientAuthenticator, either method is accepted whatever the client registered,
        and a Basic header needs no client_id in the form (RFC 6749 §2.3.1).
        """
        basic = basic_credentials(headers)
        if basic is not None:
            client_id, secret = basic
            if form.get("client_id") not in (None, client_id):
                raise ClientAuthenticationError("client_id differs from the Basic credentials", basic=True)
        else:
            client_id, secret = form.get("client_id", ""), form.get("client_secret", "")
        client = await self.provider.get_client(client_id) if client_id else None
        if client is None:
            raise ClientAuthenticationError("unknown client", basic=basic is not None)
        if client.client_secret and not hmac.compare_digest(client.client_secret.encode(), secret.encode()):
            raise ClientAuthenticationError("wrong client secret", basic=basic is not None)
        return client

    async def revoke(self, request: Request) -> Response:
        """RFC 7009 revocation, authenticating clients the way ``authenticate`` does.

        The SDK's handler is not used: it wants ``client_id`` and ``client_secret`` form fields even
        from a client that authenticates with HTTP Basic.
        """
        form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
        try:
            client = await self.authenticate(form, request.headers)
        except ClientAuthenticationError as e:
            return _oauth_error("invalid_client", e.message, 401)
        value = form.get("token", "")
        token: IssuedAccessToken | IssuedRefreshToken | None = self.store.state.access.get(value) or self.store.state.refresh.get(value)
        if token is not None and token.client_id == client.client_id:
            await self.provider.revoke_token(token)
            self.events.record("revoke", client_id=client.client_id, resource=token.resource, scopes=token.scopes, subject=token.subject)
        else:
            # RFC 7009 §2.2: an unknown token is answered 200 as well.
            self.events.record("revoke", client_id=client.client_id)
        return Response(status_code=200, headers={"Cache-Control": "no-store"})

    async def introspect(self, request: Request) -> Response:
        """RFC 7662 introspection of access tokens, for the protected MCP server (no client authentication)."""
        form = await request.form()
        token = await self.provider.load_access_token(str(form.get("token", "")))
        if token is None:
            return JSONResponse({"active": False})
        return JSONResponse(
            {
                "active": True,
                "client_id": token.client_id,
                "scope": " ".join(token.scopes),
                "exp": token.expires_at,
                "aud": token.resource,
                "sub": token.subject,
                "iss": self.issuer,
                "token_type": "Bearer",
            }
        )

    async def log(self, request: Request) -> Response:
        return JSONResponse(self.events.read())

    async def control(self, request: Request) -> Response:
        try:
            change = ControlRequest.model_validate_json(await request.body())
        except ValidationError as e:
            return JSONResponse({"error": str(e)}, status_code=400)
        if change.revoke_all:
            self.provider.revoke_all()
        self.store.state.modes = self.modes.model_copy(update=change.model_dump(exclude_none=True, exclude={"revoke_all"}))
        self.store.save()
        return JSONResponse(self.modes.model_dump())


class AsgiEndpoint:
    """An ASGI function as a route endpoint: Starlette would take a plain function for request -> response."""

    def __init__(self, handler: ASGIApp) -> None:
        self.handler = handler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.handler(scope, receive, send)


def _no_store(content: Any, status: int, headers: Mapping[str, str] | None = None) -> JSONResponse:
    """A token endpoint answer: never cached (RFC 6749 §5.1)."""
    return JSONResponse(content, status_code=status, headers={"Cache-Control": "no-store", "Pragma": "no-cache", **(headers or {})})


def _oauth_error(error: str, description: str, status: int = 400, headers: Mapping[str, str] | None = None) -> JSONResponse:
    """An OAuth error answer (RFC 6749 §5.2)."""
    return _no_store({"error": error, "error_description": description}, status, headers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--fd", type=int, required=True, help="listening socket inherited from the parent")
    parser.add_argument("--issuer", required=True, help="http://127.0.0.1:PORT, no trailing slash")
    parser.add_argument("--state", type=Path, required=True)
    parser.add_argument("--log", type=Path, required=True)
    parser.add_argument("--token-ttl", type=int, default=3600)
    parser.add_argument("--m2m-client-id", default="m2m-client")
    parser.add_argument("--m2m-client-secret", default="m2m-secret")
    args = parser.parse_args()

    store = Store(args.state)
    # The confidential machine-to-machine client, registered out of band as real ones are.
    store.state.clients[args.m2m_client_id] = OAuthClientInformationFull(
        client_id=args.m2m_client_id,
        client_secret=args.m2m_client_secret,
        token_endpoint_auth_method="client_secret_basic",
        grant_types=["client_credentials"],
        scope=" ".join(SCOPES),
        redirect_uris=None,
    )
    store.save()
    server = AuthorizationServer(args.issuer, store, Events(args.log), args.token_ttl)
    sock = socket.socket(fileno=args.fd)
    uvicorn_server = uvicorn.Server(uvicorn.Config(server.app, log_level="warning", lifespan="off"))
    anyio.run(lambda: uvicorn_server.serve(sockets=[sock]))


if __name__ == "__main__":
    main()
