"""The OAuth test servers (oauth_servers.py) themselves: each part, with plain httpx and with the SDK's OAuth client.

Most tests share one set of servers (starting three Python processes takes seconds) and put the
failure modes back after themselves; the ones that stop or restart a server, or need other
settings, have their own.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.auth import OAuthClientProvider
from mcp.client.auth.extensions.client_credentials import ClientCredentialsOAuthProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientInformationFull, OAuthClientMetadata, OAuthToken
from mcp.types import TextContent
from pydantic import AnyUrl

from .oauth_servers import STUB_BROWSER, OAuthServers, oauth_servers  # noqa: F401

REDIRECT_URI = "http://127.0.0.1:9/callback"  # never fetched: approve() stops at the redirect
MCP_ACCEPT = {"accept": "application/json, text/event-stream"}
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "test", "version": "0"}},
}
M2M_ID, M2M_SECRET = "robot", "s3cret/with:odd chars"  # the shared servers' client_credentials client
DEFAULT_M2M = ("m2m-client", "m2m-secret")  # OAuthServers' own


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OAuthServers]:
    with OAuthServers(tmp_path_factory.mktemp("oauth"), m2m_client_id=M2M_ID, m2m_client_secret=M2M_SECRET) as servers:
        yield servers


@pytest.fixture
def servers(shared: OAuthServers) -> Iterator[OAuthServers]:
    yield shared
    shared.control(metadata="ok", token="ok", expire_refresh=False, rs_always_401=False)


# Plain HTTP, one step at a time.


def register(servers: OAuthServers, redirect_uri: str = REDIRECT_URI, **extra: Any) -> dict[str, Any]:
    metadata = {"redirect_uris": [redirect_uri], "grant_types": ["authorization_code", "refresh_token"], **extra}
    response = httpx.post(f"{servers.as_url}/register", json=metadata)
    assert response.status_code == 201, response.text
    client: dict[str, Any] = response.json()
    return client


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
    return verifier, challenge


def authorize_url(servers: OAuthServers, client: dict[str, Any], challenge: str, **params: str) -> str:
    query = {
        "response_type": "code",
        "client_id": client["client_id"],
        "redirect_uri": client["redirect_uris"][0],
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "state": "st-" + secrets.token_urlsafe(8),
        "resource": servers.mcp_url,
        "scope": "mcp:read",
        **params,
    }
    return f"{servers.as_url}/authorize?{urlencode({k: v for k, v in query.items() if v})}"


def query_of(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def token_request(servers: OAuthServers, data: dict[str, str], auth: tuple[str, str] | None = None) -> httpx.Response:
    return httpx.post(f"{servers.as_url}/token", data=data, auth=auth)


def sign_in(servers: OAuthServers, user: str = "alice", scope: str = "mcp:read") -> tuple[dict[str, Any], dict[str, Any]]:
    """Register a client and get its tokens by the authorization code flow; (client, token response)."""
    client = register(servers)
    verifier, challenge = pkce()
    code = query_of(servers.approve(authorize_url(servers, client, challenge, scope=scope), user))["code"]
    response = token_request(
        servers,
        {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT_URI,
            "code_verifier": verifier,
            "client_id": client["client_id"],
            "client_secret": client["client_secret"],
            "resource": servers.mcp_url,
        },
    )
    assert response.status_code == 200, response.text
    tokens: dict[str, Any] = response.json()
    return client, tokens


def refresh_grant(client: dict[str, Any], tokens: dict[str, Any]) -> dict[str, str]:
    """The form of a refresh request for a client's tokens (client_secret_post, as registered)."""
    return {
        "grant_type": "refresh_token",
        "refresh_token": tokens["refresh_token"],
        "client_id": client["client_id"],
        "client_secret": client["client_secret"],
    }


def prm_url(servers: OAuthServers) -> str:
    """The protected MCP server's RFC 9728 metadata URL."""
    return servers.mcp_url.replace("/mcp", "/.well-known/oauth-protected-resource/mcp")


def m2m_token(servers: OAuthServers, scope: str = "mcp:read", resource: str | None = None) -> str:
    data = {"grant_type": "client_credentials", "scope": scope, "resource": resource or servers.mcp_url}
    response = token_request(servers, data, auth=(M2M_ID, M2M_SECRET))
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def introspect(servers: OAuthServers, token: str) -> dict[str, Any]:
    answer: dict[str, Any] = httpx.post(f"{servers.as_url}/introspect", data={"token": token}).json()
    return answer


def mcp_post(url: str, token: str | None, message: dict[str, Any] = INITIALIZE) -> httpx.Response:
    headers = {**MCP_ACCEPT, **({"authorization": f"Bearer {token}"} if token else {})}
    return httpx.post(url, json=message, headers=headers)


def test_authorization_code_flow_with_dcr_pkce_and_resource(servers: OAuthServers) -> None:
    metadata = httpx.get(f"{servers.as_url}/.well-known/oauth-authorization-server").json()
    assert metadata["issuer"] == servers.as_url and not servers.as_url.endswith("/")
    assert metadata["code_challenge_methods_supported"] == ["S256"]
    assert {"authorization_code", "refresh_token", "client_credentials"} <= set(metadata["grant_types_supported"])
    assert metadata["introspection_endpoint"] == f"{servers.as_url}/introspect"
    prm = httpx.get(prm_url(servers)).json()
    assert prm["resource"] == servers.mcp_url and prm["authorization_servers"] == [servers.as_url]

    client = register(servers, scope="mcp:read")
    verifier, challenge = pkce()
    url = authorize_url(servers, client, challenge)
    location = servers.approve(url, "bob")
    assert location.startswith(REDIRECT_URI + "?")
    answer = query_of(location)
    assert answer["state"] == query_of(url)["state"]

    # No PKCE method means "plain", which is refused (as a redirect with the error).
    assert query_of(servers.approve(authorize_url(servers, client, challenge, code_challenge_method="")))["error"] == "invalid_request"

    exchange = {
        "grant_type": "authorization_code",
        "code": answer["code"],
        "redirect_uri": REDIRECT_URI,
        "client_id": client["client_id"],
        "client_secret": client["client_secret"],
        "resource": servers.mcp_url,
    }
    wrong = token_request(servers, {**exchange, "code_verifier": pkce()[0]})
    assert wrong.status_code == 400 and wrong.json()["error"] == "invalid_grant"
    response = token_request(servers, {**exchange, "code_verifier": verifier})
    assert response.status_code == 200, response.text
    tokens = response.json()
    assert tokens["expires_in"] == 3600 and tokens["scope"] == "mcp:read" and tokens["refresh_token"]
    assert response.headers["cache-control"] == "no-store"
    assert token_request(servers, {**exchange, "code_verifier": verifier}).json()["error"] == "invalid_grant"  # used once

    facts = introspect(servers, tokens["access_token"])
    assert facts["active"] and facts["sub"] == "bob" and facts["aud"] == servers.mcp_url and facts["iss"] == servers.as_url
    assert introspect(servers, tokens["refresh_token"]) == {"active": False}  # not a bearer token

    assert mcp_post(servers.mcp_url, tokens["access_token"]).status_code == 200
    assert servers.rs_log()[-1] == {"status": 200, "bearer": True, "method": "initialize", "subject": "bob"}

    events = [e for e in servers.log() if e["client_id"] == client["client_id"]]
    assert [(e["event"], e["grant"], e["error"]) for e in events] == [
        ("register", None, None),
        ("authorize", None, None),
        ("authorize", None, "invalid_request"),
        ("token", "authorization_code", "invalid_grant"),
        ("token", "authorization_code", None),
        ("token", "authorization_code", "invalid_grant"),
    ]
    assert events[1] == {
        "event": "authorize",
        "grant": None,
        "client_id": client["client_id"],
        "resource": servers.mcp_url,
        "scopes": ["mcp:read"],
        "subject": "bob",
        "code_challenge_method": "S256",
        "error": None,
    }
    assert events[4]["subject"] == "bob" and events[4]["resource"] == servers.mcp_url


def test_refresh_rotates_and_a_token_for_another_resource_is_refused(servers: OAuthServers) -> None:
    client, tokens = sign_in(servers, "carol")
    refresh = {"grant_type": "refresh_token", "client_id": client["client_id"], "client_secret": client["client_secret"]}
    response = token_request(servers, {**refresh, "refresh_token": tokens["refresh_token"]})
    assert response.status_code == 200, response.text
    renewed = response.json()
    assert renewed["access_token"] != tokens["access_token"] and renewed["refresh_token"] != tokens["refresh_token"]
    assert introspect(servers, renewed["access_token"])["sub"] == "carol"
    spent = token_request(servers, {**refresh, "refresh_token": tokens["refresh_token"]})
    assert spent.status_code == 400 and spent.json()["error"] == "invalid_grant"
    assert [e["grant"] for e in servers.log() if e["client_id"] == client["client_id"] and e["event"] == "token"] == [
        "authorization_code",
        "refresh_token",
        "refresh_token",
    ]

    # The RS takes only tokens issued for it (RFC 8707), and answers a challenge naming its metadata.
    elsewhere = m2m_token(servers, resource=servers.plain_url)
    refused = mcp_post(servers.mcp_url, elsewhere)
    assert refused.status_code == 401
    assert f'resource_metadata="{prm_url(servers)}"' in refused.headers["www-authenticate"]
    assert mcp_post(servers.mcp_url, None).status_code == 401
    assert servers.rs_log()[-2:] == [
        {"status": 401, "bearer": True, "method": "initialize", "subject": None},
        {"status": 401, "bearer": False, "method": "initialize", "subject": None},
    ]


def test_write_note_without_mcp_write_is_a_403_step_up_challenge(servers: OAuthServers) -> None:
    call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "write_note", "arguments": {"text": "x"}}}
    response = mcp_post(servers.mcp_url, m2m_token(servers, scope="mcp:read"), call)
    assert response.status_code == 403
    challenge = f'Bearer error="insufficient_scope", scope="mcp:read mcp:write", resource_metadata="{prm_url(servers)}"'
    assert response.headers["www-authenticate"] == challenge
    assert servers.rs_log()[-1] == {"status": 403, "bearer": True, "method": "tools/call", "subject": M2M_ID}
    # A token for another resource is not challenged for a scope: it is no good here at all.
    assert mcp_post(servers.mcp_url, m2m_token(servers, resource=servers.plain_url), call).status_code == 401
    # With mcp:write the call goes through to the MCP server (which wants a session first: 400, not 403).
    assert mcp_post(servers.mcp_url, m2m_token(servers, scope="mcp:read mcp:write"), call).status_code != 403


def test_client_credentials_with_basic_and_post(servers: OAuthServers) -> None:
    data = {"grant_type": "client_credentials", "scope": "mcp:read mcp:write", "resource": servers.mcp_url}
    basic = token_request(servers, data, auth=(M2M_ID, M2M_SECRET))
    post = token_request(servers, {**data, "client_id": M2M_ID, "client_secret": M2M_SECRET})
    for response in (basic, post):
        assert response.status_code == 200, response.text
        tokens = response.json()
        assert "refresh_token" not in tokens and tokens["scope"] == "mcp:read mcp:write" and tokens["expires_in"] == 3600
        facts = introspect(servers, tokens["access_token"])
        assert facts["client_id"] == M2M_ID and facts["sub"] == M2M_ID and facts["aud"] == servers.mcp_url

    wrong = token_request(servers, data, auth=(M2M_ID, "nope"))
    assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_client"
    assert wrong.headers["www-authenticate"].startswith("Basic")
    client = register(servers)  # a client registered for authorization_code only
    other = token_request(servers, {**data, "client_id": client["client_id"], "client_secret": client["client_secret"]})
    assert other.status_code == 400 and other.json()["error"] == "unauthorized_client"
    events = [e for e in servers.log() if e["grant"] == "client_credentials"][-4:]
    assert [(e["client_id"], e["error"]) for e in events] == [
        (M2M_ID, None),
        (M2M_ID, None),
        (M2M_ID, "invalid_client"),
        (client["client_id"], "unauthorized_client"),
    ]
    assert events[0]["scopes"] == ["mcp:read", "mcp:write"] and events[0]["resource"] == servers.mcp_url


def test_revocation_and_revoke_all(servers: OAuthServers) -> None:
    client, tokens = sign_in(servers, "dave")
    credentials = {"client_id": client["client_id"], "client_secret": client["client_secret"]}
    # Revoking the refresh token revokes the access token of the same grant too.
    assert httpx.post(f"{servers.as_url}/revoke", data={"token": tokens["refresh_token"], **credentials}).status_code == 200
    assert introspect(servers, tokens["access_token"]) == {"active": False}
    revoke = servers.log()[-1]
    assert revoke["event"] == "revoke" and revoke["client_id"] == client["client_id"] and revoke["subject"] == "dave"

    # "Revocation at the server": every token forgotten; the RS refuses them, refreshing fails.
    client, tokens = sign_in(servers, "erin")
    m2m = m2m_token(servers)
    assert introspect(servers, m2m)["active"] and mcp_post(servers.mcp_url, tokens["access_token"]).status_code == 200
    servers.control(revoke_all=True)
    assert introspect(servers, m2m) == {"active": False} and introspect(servers, tokens["access_token"]) == {"active": False}
    assert mcp_post(servers.mcp_url, tokens["access_token"]).status_code == 401
    assert token_request(servers, refresh_grant(client, tokens)).json()["error"] == "invalid_grant"


def test_metadata_modes(servers: OAuthServers) -> None:
    url = f"{servers.as_url}/.well-known/oauth-authorization-server"
    servers.control(metadata="down")
    assert httpx.get(url).status_code == 503
    servers.control(metadata="garbage")
    garbage = httpx.get(url)
    assert garbage.status_code == 200
    with pytest.raises(ValueError):
        garbage.json()
    servers.control(metadata="wrong_issuer")
    wrong = httpx.get(url).json()
    assert wrong["issuer"] != servers.as_url and wrong["token_endpoint"] == f"{servers.as_url}/token"
    servers.control(metadata="slow")
    with pytest.raises(httpx.ReadTimeout):
        httpx.get(url, timeout=0.5)
    servers.control(metadata="ok")
    assert httpx.get(url).json()["issuer"] == servers.as_url


def test_token_modes(servers: OAuthServers) -> None:
    client, tokens = sign_in(servers)
    refresh = refresh_grant(client, tokens)
    servers.control(token="error")
    for data in (refresh, {"grant_type": "client_credentials", "client_id": M2M_ID, "client_secret": M2M_SECRET}):
        failed = token_request(servers, data)
        assert failed.status_code == 400 and failed.json()["error"] == "invalid_grant"
    assert servers.log()[-1]["error"] == "invalid_grant"
    servers.control(token="slow")
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{servers.as_url}/token", data=refresh, timeout=0.5)
    servers.control(token="ok", expire_refresh=True)
    expired = token_request(servers, refresh)
    assert expired.status_code == 400 and expired.json() == {"error": "invalid_grant", "error_description": "refresh token has expired"}
    servers.control(expire_refresh=False)
    assert token_request(servers, refresh).status_code == 200  # the refresh token was kept all along


def test_rs_always_401(servers: OAuthServers) -> None:
    token = m2m_token(servers)
    assert mcp_post(servers.mcp_url, token).status_code == 200
    servers.control(rs_always_401=True)
    refused = mcp_post(servers.mcp_url, token)
    assert refused.status_code == 401 and refused.headers["www-authenticate"].startswith('Bearer error="invalid_token"')
    assert "resource_metadata=" in refused.headers["www-authenticate"]
    assert servers.rs_log()[-1] == {"status": 401, "bearer": True, "method": "initialize", "subject": None}
    servers.control(rs_always_401=False)
    assert mcp_post(servers.mcp_url, token).status_code == 200
    with pytest.raises(TypeError):
        servers.control(no_such_mode=True)


# The SDK's OAuth client, as a real MCP client would use the servers.


class MemoryStorage:
    """The SDK client's TokenStorage, in memory."""

    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client = client_info


class HeadlessBrowser:
    """The SDK client's redirect and callback handlers, consenting through OAuthServers.approve()."""

    def __init__(self, servers: OAuthServers, user: str) -> None:
        self.servers = servers
        self.user = user
        self.urls: list[str] = []
        self.result: AuthorizationCodeResult | None = None

    async def redirect_handler(self, authorization_url: str) -> None:
        self.urls.append(authorization_url)
        answer = query_of(self.servers.approve(authorization_url, self.user))
        self.result = AuthorizationCodeResult(code=answer["code"], state=answer.get("state"))

    async def callback_handler(self) -> AuthorizationCodeResult:
        assert self.result is not None
        return self.result


async def call_tool(url: str, auth: httpx2.Auth | None, tool: str, **arguments: str) -> str:
    async with httpx2.AsyncClient(auth=auth, timeout=httpx2.Timeout(10)) as http:
        async with Client(streamable_http_client(url, http_client=http), mode="legacy") as client:
            result = await client.call_tool(tool, arguments)
    content = result.content[0]
    assert isinstance(content, TextContent)
    return content.text


async def test_sdk_client_signs_in_refreshes_and_steps_up(servers: OAuthServers) -> None:
    storage, browser = MemoryStorage(), HeadlessBrowser(servers, "frank")
    provider = OAuthClientProvider(
        server_url=servers.mcp_url,
        client_metadata=OAuthClientMetadata(redirect_uris=[AnyUrl(REDIRECT_URI)], grant_types=["authorization_code", "refresh_token"]),
        storage=storage,
        redirect_handler=browser.redirect_handler,
        callback_handler=browser.callback_handler,
    )
    me = json.loads(await call_tool(servers.mcp_url, provider, "whoami"))
    assert storage.client is not None and storage.tokens is not None
    assert me == {"subject": "frank", "client_id": storage.client.client_id, "scopes": ["mcp:read"]}
    assert len(browser.urls) == 1 and query_of(browser.urls[0])["resource"] == servers.mcp_url
    events = [e for e in servers.log() if e["client_id"] == storage.client.client_id]
    assert [(e["event"], e["grant"]) for e in events] == [("register", None), ("authorize", None), ("token", "authorization_code")]
    assert events[1]["code_challenge_method"] == "S256" and events[1]["resource"] == servers.mcp_url

    # Refresh: the client thinks its token expired, and refreshes it without the browser.
    old = storage.tokens.access_token
    provider.context.token_expiry_time = 1  # (0 would mean "never expires")
    assert await call_tool(servers.mcp_url, provider, "echo", text="hi") == "echo: hi"
    assert storage.tokens.access_token != old and len(browser.urls) == 1
    assert servers.log()[-1]["grant"] == "refresh_token"

    # Step-up: write_note's 403 makes the client authorize again for mcp:read mcp:write.
    assert await call_tool(servers.mcp_url, provider, "write_note", text="hi") == "noted: hi"
    assert len(browser.urls) == 2 and query_of(browser.urls[1])["scope"] == "mcp:read mcp:write"
    assert json.loads(await call_tool(servers.mcp_url, provider, "whoami"))["scopes"] == ["mcp:read", "mcp:write"]
    assert {"status": 403, "bearer": True, "method": "tools/call", "subject": "frank"} in servers.rs_log()


@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post"])
async def test_sdk_client_credentials(servers: OAuthServers, method: Literal["client_secret_basic", "client_secret_post"]) -> None:
    provider = ClientCredentialsOAuthProvider(
        server_url=servers.mcp_url,
        storage=MemoryStorage(),
        client_id=M2M_ID,
        client_secret=M2M_SECRET,
        token_endpoint_auth_method=method,
        scope="mcp:read",
        issuer=servers.as_url,
    )
    me = json.loads(await call_tool(servers.mcp_url, provider, "whoami"))
    assert me == {"subject": M2M_ID, "client_id": M2M_ID, "scopes": ["mcp:read"]}
    assert servers.log()[-1]["resource"] == servers.mcp_url


async def test_plain_url_needs_no_auth(servers: OAuthServers) -> None:
    before = len(servers.log())
    assert await call_tool(servers.plain_url, None, "echo", text="plain") == "echo: plain"
    assert json.loads(await call_tool(servers.plain_url, None, "whoami")) == {"subject": None, "client_id": None, "scopes": []}
    assert len(servers.log()) == before and httpx.get(f"{servers.plain_url}").status_code != 401


# The stub browser, as Python's webbrowser module runs it.


class _Callback(BaseHTTPRequestHandler):
    """A client's loopback redirect_uri: keeps the query it was called with."""

    queries: list[dict[str, str]] = []

    def do_GET(self) -> None:
        self.queries.append(query_of(self.path))
        body = b"signed in"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_stub_browser_signs_in_through_webbrowser(servers: OAuthServers, tmp_path: Path) -> None:
    callback = ThreadingHTTPServer(("127.0.0.1", 0), _Callback)
    threading.Thread(target=callback.serve_forever, daemon=True).start()
    try:
        client = register(servers, f"http://127.0.0.1:{callback.server_address[1]}/callback")
        url = authorize_url(servers, client, pkce()[1])
        log = tmp_path / "browser.jsonl"
        env = {**os.environ, "BROWSER": f"{sys.executable} {STUB_BROWSER} %s", "STUB_BROWSER_USER": "grace", "STUB_BROWSER_LOG": str(log)}
        opened = subprocess.run(
            [sys.executable, "-c", "import sys, webbrowser; sys.exit(0 if webbrowser.open(sys.argv[1]) else 1)", url], env=env, timeout=30
        )
        assert opened.returncode == 0
        assert _Callback.queries[-1]["state"] == query_of(url)["state"] and _Callback.queries[-1]["code"]
        assert [json.loads(line) for line in log.read_text().splitlines()] == [{"url": url, "callback_status": 200}]
        assert servers.log()[-1]["subject"] == "grace"
    finally:
        callback.shutdown()
        callback.server_close()

    # A browser that cannot reach the server still exits 0, at once, and says why in its log.
    refused = f"http://127.0.0.1:{callback.server_address[1]}/authorize?x=1"
    started = time.monotonic()
    assert subprocess.run([sys.executable, STUB_BROWSER, refused], env=env, timeout=30, capture_output=True).returncode == 0
    assert time.monotonic() - started < 10
    failed = json.loads(log.read_text().splitlines()[-1])
    assert failed["url"] == refused and failed["callback_status"] is None and "ConnectError" in failed["error"]


# Servers of their own: stopping and restarting, other settings.


def test_the_authorization_server_stops_and_comes_back_with_what_it_knew(oauth_servers: OAuthServers) -> None:
    servers = oauth_servers
    tokens = token_request(servers, {"grant_type": "client_credentials", "resource": servers.mcp_url}, auth=DEFAULT_M2M).json()
    assert tokens["expires_in"] == 3600
    assert mcp_post(servers.mcp_url, tokens["access_token"]).status_code == 200
    servers.control(metadata="down")

    servers.stop_as()
    with pytest.raises(httpx.ConnectError):
        httpx.get(servers.as_url, timeout=2)
    # The RS goes on trusting what the AS last said about a token it has seen.
    assert mcp_post(servers.mcp_url, tokens["access_token"]).status_code == 200
    assert servers.log()[-1]["grant"] == "client_credentials"  # the log is readable with the server down

    servers.restart_as()
    assert servers.as_url == f"http://127.0.0.1:{urlsplit(servers.as_url).port}"
    assert introspect(servers, tokens["access_token"])["active"]  # tokens survive the restart
    assert httpx.get(f"{servers.as_url}/.well-known/oauth-authorization-server").status_code == 503  # so do modes
    servers.restart_as()  # restarting a running server works too
    servers.control(metadata="ok")
    assert httpx.get(f"{servers.as_url}/.well-known/oauth-authorization-server").json()["issuer"] == servers.as_url


def test_tokens_expire_after_token_ttl(tmp_path: Path) -> None:
    with OAuthServers(tmp_path, token_ttl=1) as servers:
        response = token_request(servers, {"grant_type": "client_credentials", "resource": servers.mcp_url}, auth=DEFAULT_M2M)
        token = response.json()
        assert token["expires_in"] == 1
        expires = introspect(servers, token["access_token"])["exp"]
        assert 1 <= expires - time.time() <= 2.1
        time.sleep(expires - time.time() + 0.1)
        assert introspect(servers, token["access_token"]) == {"active": False}
        assert mcp_post(servers.mcp_url, token["access_token"]).status_code == 401
    with pytest.raises(httpx.ConnectError):
        httpx.get(servers.mcp_url, timeout=2)  # closed: the ports are released
