"""An OAuth-protected MCP server for Lockgate's end-to-end tests: the SDK's MCPServer over Streamable HTTP.

Run by ``tests/e2e/oauth_servers.py``::

    python oauth_rs.py --fd N --url http://127.0.0.1:Q/mcp --issuer http://127.0.0.1:P [--log FILE]
    python oauth_rs.py --fd N --url http://127.0.0.1:R/mcp --no-auth [--log FILE]

It serves ``/mcp`` on the listening socket inherited as file descriptor N. Bearer tokens are checked by
introspection at the authorization server ``--issuer`` (``oauth_as.py``); they must carry ``mcp:read``
and have been issued for ``--url`` (RFC 8707), or the answer is 401 (403 for a missing scope). Its
protected resource metadata (RFC 9728) is at ``/.well-known/oauth-protected-resource/mcp``.

Tools: ``whoami()`` (the caller's token as JSON), ``echo(text)`` and ``write_note(text)``, which needs
``mcp:write``: without it the call is answered 403 ``insufficient_scope`` naming the scopes to ask
for, which is how an MCP server asks for a step-up. ``--no-auth`` serves the same tools to anyone.

``--log`` gets one JSON line per POST to ``/mcp``: its HTTP status, whether it carried a bearer
token, its JSON-RPC method and the token's subject. ``POST /_control`` with ``{"rs_always_401": true}``
makes the server refuse every request with 401, even with a valid token.
"""

from __future__ import annotations

import argparse
import json
import socket
from pathlib import Path
from typing import Any

import anyio
import httpx
import uvicorn
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken, TokenVerifier
from mcp.server.auth.routes import build_resource_metadata_url
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import MCPServer
from pydantic import AnyHttpUrl
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from asgi_body import read_body, replaying  # a sibling script's module: this folder is on sys.path

REQUIRED_SCOPES = ["mcp:read"]
WRITE_SCOPES = ["mcp:read", "mcp:write"]
# How long to wait for the authorization server's introspection endpoint.
INTROSPECTION_TIMEOUT = 5.0


def whoami() -> str:
    """The caller's access token: its subject, client and scopes, as JSON."""
    token = get_access_token()
    if token is None:
        return json.dumps({"subject": None, "client_id": None, "scopes": []})
    return json.dumps({"subject": token.subject, "client_id": token.client_id, "scopes": token.scopes})


def echo(text: str) -> str:
    """Echo text back."""
    return f"echo: {text}"


def write_note(text: str) -> str:
    """Keep a note (needs the mcp:write scope)."""
    return f"noted: {text}"


class IntrospectionVerifier(TokenVerifier):
    """Checks bearer tokens by asking the authorization server about them (RFC 7662)."""

    def __init__(self, issuer: str) -> None:
        self.issuer = issuer
        self.endpoint = issuer + "/introspect"
        # The last answer for each active token, used while the authorization server cannot be reached.
        self.known: dict[str, AccessToken] = {}
        self.http: httpx.AsyncClient | None = None

    async def verify_token(self, token: str) -> AccessToken | None:
        if self.http is None:  # made here, inside the server's event loop
            self.http = httpx.AsyncClient(timeout=INTROSPECTION_TIMEOUT)
        try:
            response = await self.http.post(self.endpoint, data={"token": token})
            answer = response.json()
        except (httpx.HTTPError, ValueError):
            # With the authorization server down (a test stopped it), trust what it said last, until the
            # token expires (the SDK checks expires_at), as a server verifying signed tokens would.
            return self.known.get(token)
        if not isinstance(answer, dict) or not answer.get("active"):
            self.known.pop(token, None)
            return None
        access = AccessToken(
            token=token,
            client_id=answer["client_id"],
            scopes=answer.get("scope", "").split(),
            expires_at=answer.get("exp"),
            resource=answer.get("aud"),
            subject=answer.get("sub"),
            claims={"iss": answer.get("iss")},
        )
        self.known[token] = access
        return access




def json_rpc_call(body: bytes) -> tuple[str | None, str | None]:
    """The JSON-RPC method of a request body, and the tool name if it calls a tool."""
    try:
        message = json.loads(body)
    except ValueError:
        return None, None
    if not isinstance(message, dict) or not isinstance(message.get("method"), str):
        return None, None
    params = message.get("params")
    tool = params.get("name") if message["method"] == "tools/call" and isinstance(params, dict) else None
    return message["method"], tool if isinstance(tool, str) else None


async def send_refusal(send: Send, status: int, www_authenticate: str, error: str, description: str) -> None:
    """A 401 or 403 with its WWW-Authenticate challenge (RFC 6750 §3)."""
    body = json.dumps({"error": error, "error_description": description}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"www-authenticate", www_authenticate.encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class Gate:
    """Around the SDK's app: the write_note step-up, the rs_always_401 mode and the request log."""

    def __init__(self, inner: ASGIApp, verifier: IntrospectionVerifier | None, resource: str, log: Path | None) -> None:
        self.inner = inner
        self.verifier = verifier
        self.resource = resource
        # Where a challenged client finds this server's metadata (RFC 9728 §5.1).
        self.resource_metadata_parameter = f'resource_metadata="{build_resource_metadata_url(AnyHttpUrl(resource))}"'
        self.log = log
        self.always_401 = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.inner(scope, receive, send)
        elif scope["path"] == "/_control" and scope["method"] == "POST":
            await self.control(receive, send)
        elif scope["path"] == "/mcp":
            await self.mcp(scope, receive, send)
        else:
            await self.inner(scope, receive, send)

    async def mcp(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        authorization = headers.get("authorization", "")
        bearer = authorization.lower().startswith("bearer ")
        method = tool = None
        if scope["method"] == "POST":
            body = await read_body(receive)
            receive = replaying(body, receive)
            method, tool = json_rpc_call(body)
        stepping_up: AccessToken | None = None  # the token refused for want of mcp:write

        async def logging_status(message: Message) -> None:
            # Logged before the answer goes out, so a client that has its answer finds the line.
            if message["type"] == "http.response.start" and scope["method"] == "POST" and self.log is not None:
                # The SDK's authentication middleware has put the verified token's user in this same scope.
                user = scope.get("user")
                token = user.access_token if isinstance(user, AuthenticatedUser) else stepping_up
                subject = token.subject if token else None
                line = {"status": message["status"], "bearer": bearer, "method": method, "subject": subject}
                with self.log.open("a") as file:
                    file.write(json.dumps(line) + "\n")
            await send(message)

        if self.verifier is not None and self.always_401:
            challenge = f'Bearer error="invalid_token", error_description="refused (test mode)", {self.resource_metadata_parameter}'
            await send_refusal(logging_status, 401, challenge, "invalid_token", "refused (test mode)")
        elif self.verifier is not None and tool == "write_note" and bearer:
            token = await self.verifier.verify_token(authorization[7:])
            # A token for another resource is left to the SDK, which answers 401.
            if token is not None and token.resource == self.resource and "mcp:write" not in token.scopes:
                stepping_up = token
                # A step-up challenge (RFC 6750 §3.1; MCP's scope challenge): the scopes to ask for, all of them.
                challenge = f'Bearer error="insufficient_scope", scope="{" ".join(WRITE_SCOPES)}", {self.resource_metadata_parameter}'
                await send_refusal(logging_status, 403, challenge, "insufficient_scope", "write_note needs mcp:write")
            else:
                await self.inner(scope, receive, logging_status)
        else:
            await self.inner(scope, receive, logging_status)

    async def control(self, receive: Receive, send: Send) -> None:
        try:
            change: Any = json.loads(await read_body(receive))
        except ValueError:
            change = None
        answer: dict[str, Any]
        if not isinstance(change, dict) or set(change) - {"rs_always_401"}:
            status, answer = 400, {"error": "expected {\"rs_always_401\": true|false}"}
        else:
            self.always_401 = bool(change.get("rs_always_401", self.always_401))
            status, answer = 200, {"rs_always_401": self.always_401}
        body = json.dumps(answer).encode()
        await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--fd", type=int, required=True, help="listening socket inherited from the parent")
    parser.add_argument("--url", required=True, help="this server's MCP endpoint, http://127.0.0.1:PORT/mcp")
    parser.add_argument("--issuer", help="the authorization server, http://127.0.0.1:PORT")
    parser.add_argument("--no-auth", action="store_true", help="serve the tools to anyone")
    parser.add_argument("--log", type=Path)
    args = parser.parse_args()
    if not args.no_auth and not args.issuer:
        parser.error("--issuer is needed unless --no-auth")

    verifier = None if args.no_auth else IntrospectionVerifier(args.issuer)
    auth = (
        None
        if args.no_auth
        else AuthSettings(
            issuer_url=args.issuer,
            resource_server_url=args.url,
            required_scopes=REQUIRED_SCOPES,
            # Refuse tokens issued for another resource (their RFC 8707 `resource`, the introspected `aud`).
            validate_token_resource=True,
        )
    )
    server = MCPServer("oauth-protected" if auth else "unprotected", token_verifier=verifier, auth=auth, log_level="WARNING")
    for tool in (whoami, echo, write_note):
        server.tool()(tool)
    app = Gate(server.streamable_http_app(), verifier, args.url, args.log)
    sock = socket.socket(fileno=args.fd)
    uvicorn_server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    anyio.run(lambda: uvicorn_server.serve(sockets=[sock]))


if __name__ == "__main__":
    main()
