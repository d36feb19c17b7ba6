"""The pieces of downstream OAuth without an authorization server: the loopback, the storage, the manager, the retry.

The flows themselves (discovery, registration, the browser, refresh, step-up)
run against a real authorization server in ``tests/e2e/test_oauth.py``.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import trio
from mcp.shared.auth import OAuthMetadata, OAuthToken

from lockgate.core import OAuthSpec, ServerSpec, StartDownstream
from lockgate.shells.oauth import OAuthManager, OAuthProblem, desktop, for_front, uses_oauth
from lockgate.shells.oauth.loopback import CallbackError, open_loopback
from lockgate.shells.oauth.session import DownstreamAuth
from lockgate.shells.oauth.storage import StoredTokens
from lockgate.shells.sealed import SecretBox
from lockgate.shells.store import Store
from lockgate.shells.store.oauth import GATEWAY, OAuthStore

URL = "http://127.0.0.1:9/mcp"
KEY_A = "A" * 43  # base64url of 32 bytes (0x00...), as GATEWAY_SECRET_KEY
KEY_B = "B" * 43


def spec(**oauth: object) -> ServerSpec:
    return ServerSpec(name="notes", transport="http", url=URL, oauth=OAuthSpec(**oauth) if oauth else None)  # type: ignore[arg-type]


def start(server: ServerSpec, principal: str | None = None) -> StartDownstream:
    return StartDownstream(downstream=1, server=server.name, spec=server, principal=principal)


def environ(tmp_path: Path, key: str = KEY_A) -> dict[str, str]:
    return {"GATEWAY_STATE_DIR": str(tmp_path), "GATEWAY_SECRET_KEY": key}


def store_token(tmp_path: Path, principal: str = GATEWAY, token: str = "cached", key: str = KEY_A) -> None:
    store = Store.open(f"sqlite:///{tmp_path}/lockgate.db")
    try:
        store.ensure_schema()
        value = {"access_token": token, "token_type": "Bearer", "expires_in": 3600}
        expires = datetime.now(UTC) + timedelta(hours=1)
        OAuthStore(store, SecretBox.from_environ({"GATEWAY_SECRET_KEY": key})).put_token(
            "notes", principal, value, expires_at=expires
        )
    finally:
        store.close()


def wants(token: str, seen: list[str | None]) -> Callable[[httpx.Request], httpx.Response]:
    """A server that takes only ``Bearer token`` and records the Authorization of every request."""

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("authorization"))
        if request.headers.get("authorization") != f"Bearer {token}":
            return httpx.Response(401, headers={"www-authenticate": 'Bearer error="invalid_token"'})
        return httpx.Response(200, json={"jsonrpc": "2.0", "id": 1, "result": {}})

    return answer


# -- which connections get OAuth -------------------------------------------------------


def test_http_servers_get_oauth_unless_off_or_given_their_own_authorization() -> None:
    assert uses_oauth(URL, {}, None)
    assert uses_oauth(URL, {"X-Api": "1"}, OAuthSpec())
    assert not uses_oauth(URL, {}, OAuthSpec(enabled=False))
    assert not uses_oauth(URL, {"authorization": "Bearer static"}, None)
    assert not uses_oauth(None, {}, None)


def test_the_manager_gives_stdio_and_opted_out_servers_no_auth(tmp_path: Path) -> None:
    manager = OAuthManager(environ(tmp_path))
    stdio = ServerSpec(name="git", transport="stdio", command="git-mcp")
    assert manager.auth_for(start(stdio)) is None
    assert manager.auth_for(start(spec(enabled=False))) is None
    assert isinstance(manager.auth_for(start(spec())), DownstreamAuth)


def test_per_user_connections_carry_their_users_token_and_others_the_gateways(tmp_path: Path) -> None:
    manager = OAuthManager(environ(tmp_path))
    alice = manager.auth_for(start(spec(per_user=True), "user:alice"))
    shared = manager.auth_for(start(spec(), "user:alice"))
    assert isinstance(alice, DownstreamAuth) and isinstance(shared, DownstreamAuth)
    assert alice.session.storage.principal == "user:alice"
    assert shared.session.storage.principal == GATEWAY
    # One session per server, principal and settings: two connections meeting a 401 run one flow.
    again = manager.auth_for(start(spec(per_user=True), "user:alice"))
    assert isinstance(again, DownstreamAuth) and again.session is alice.session


def test_only_a_stdio_gateway_on_a_desktop_opens_the_browser(caplog: pytest.LogCaptureFixture) -> None:
    desk = {"BROWSER": "firefox"}
    assert desktop(desk) and desktop({"DISPLAY": ":0"})
    assert not desktop({}) or sys.platform in ("darwin", "win32")
    assert for_front(desk, stdio=True)._opener is not None
    assert for_front(desk, stdio=False)._opener is None
    assert for_front({**desk, "GATEWAY_OAUTH_BROWSER": "never"}, stdio=True)._opener is None
    assert for_front({**desk, "GATEWAY_OAUTH_BROWSER": "sometimes"}, stdio=True)._opener is None
    assert "is not auto or never" in caplog.text


# -- the retry ------------------------------------------------------------------------


async def test_a_stored_token_is_read_on_the_first_401_and_then_sent_with_every_request(tmp_path: Path) -> None:
    store_token(tmp_path)
    manager = OAuthManager(environ(tmp_path))
    seen: list[str | None] = []
    auth = manager.auth_for(start(spec()))
    async with httpx.AsyncClient(transport=httpx.MockTransport(wants("cached", seen)), auth=auth) as client:
        for _ in range(3):
            assert (await client.post(URL, content=b"{}")).status_code == 200
    manager.close()
    assert seen == [None, "Bearer cached", "Bearer cached", "Bearer cached"]


async def test_a_server_that_never_asks_never_opens_the_database(tmp_path: Path) -> None:
    manager = OAuthManager(environ(tmp_path))
    auth = manager.auth_for(start(spec()))
    ok = httpx.MockTransport(lambda request: httpx.Response(200, json={}))
    async with httpx.AsyncClient(transport=ok, auth=auth) as client:
        await client.post(URL, content=b"{}")
    manager.close()
    assert list(tmp_path.iterdir()) == []


async def test_no_token_and_no_person_is_a_login_problem(tmp_path: Path) -> None:
    manager = OAuthManager(environ(tmp_path))
    auth = manager.auth_for(start(spec()))
    async with httpx.AsyncClient(transport=httpx.MockTransport(wants("cached", [])), auth=auth) as client:
        with pytest.raises(OAuthProblem) as caught:
            await client.post(URL, content=b"{}")
    manager.close()
    assert (caught.value.reason, caught.value.login) == ("no token is stored for the gateway", True)


async def test_a_server_that_refuses_the_token_it_was_given_is_not_asked_again(tmp_path: Path) -> None:
    store_token(tmp_path, token="refused")
    manager = OAuthManager(environ(tmp_path))
    seen: list[str | None] = []
    auth = manager.auth_for(start(spec()))
    async with httpx.AsyncClient(transport=httpx.MockTransport(wants("other", seen)), auth=auth) as client:
        with pytest.raises(OAuthProblem) as caught:
            await client.post(URL, content=b"{}")
    manager.close()
    assert seen == [None, "Bearer refused"]
    assert caught.value.login is False
    assert "gave up after one retry" in caught.value.reason


async def test_a_token_sealed_under_another_key_is_never_used(tmp_path: Path) -> None:
    store_token(tmp_path, key=KEY_B)
    manager = OAuthManager(environ(tmp_path, KEY_A))
    seen: list[str | None] = []
    auth = manager.auth_for(start(spec()))
    async with httpx.AsyncClient(transport=httpx.MockTransport(wants("cached", seen)), auth=auth) as client:
        with pytest.raises(OAuthProblem) as caught:
            await client.post(URL, content=b"{}")
    manager.close()
    assert seen == [None]
    assert "does not open with this gateway's secret key" in caught.value.reason


async def test_a_database_that_cannot_be_opened_fails_closed(tmp_path: Path) -> None:
    manager = OAuthManager({**environ(tmp_path), "GATEWAY_DATABASE_URL": "postgresql://127.0.0.1:1/none"})
    seen: list[str | None] = []
    auth = manager.auth_for(start(spec()))
    async with httpx.AsyncClient(transport=httpx.MockTransport(wants("cached", seen)), auth=auth) as client:
        with pytest.raises(OAuthProblem) as caught:
            await client.post(URL, content=b"{}")
    manager.close()
    assert seen == [None]
    assert caught.value.reason.startswith("the token store cannot be used")
    assert caught.value.login is False


# -- the storage ----------------------------------------------------------------------


async def test_storage_keeps_the_real_expiry_and_the_authorization_servers_metadata(tmp_path: Path) -> None:
    box = SecretBox.from_environ({"GATEWAY_SECRET_KEY": KEY_A})
    store = Store.open(f"sqlite:///{tmp_path}/lockgate.db")
    store.ensure_schema()
    oauth = OAuthStore(store, box)
    metadata = OAuthMetadata.model_validate({
        "issuer": "http://127.0.0.1:7", "authorization_endpoint": "http://127.0.0.1:7/authorize",
        "token_endpoint": "http://127.0.0.1:7/token",
    })
    writer = StoredTokens(lambda: oauth, "notes", "user:alice")
    writer.metadata = metadata
    await writer.set_tokens(OAuthToken(access_token="a", refresh_token="r", expires_in=600, scope="mcp:read"))
    reader = StoredTokens(lambda: oauth, "notes", "user:alice")
    token = await reader.get_tokens()
    assert token is not None and (token.access_token, token.refresh_token) == ("a", "r")
    assert reader.expires_at is not None and writer.expires_at is not None
    assert abs(reader.expires_at - writer.expires_at) < 1.0
    assert reader.metadata is not None and str(reader.metadata.token_endpoint) == "http://127.0.0.1:7/token"
    assert await StoredTokens(lambda: oauth, "notes", "user:bob").get_tokens() is None
    [record] = oauth.list_tokens()
    assert (record.principal, record.scopes) == ("user:alice", ("mcp:read",))
    # A step-up the gateway could not serve is kept with the token, until a token that has the scope.
    await reader.want(("mcp:write",))
    later = StoredTokens(lambda: oauth, "notes", "user:alice")
    assert await later.get_tokens() is not None and later.wanted == ("mcp:write",)
    assert later.metadata is not None and later.expires_at is not None and abs(later.expires_at - writer.expires_at) < 1.0
    await later.set_tokens(OAuthToken(access_token="b", expires_in=600, scope="mcp:read mcp:write"))
    last = StoredTokens(lambda: oauth, "notes", "user:alice")
    assert await last.get_tokens() is not None and last.wanted == ()
    store.close()


# -- the loopback ---------------------------------------------------------------------


async def _get(port: int, target: str) -> int:
    async with httpx.AsyncClient() as client:
        return (await client.get(f"http://127.0.0.1:{port}{target}")).status_code


async def test_the_loopback_takes_only_the_callback_with_its_state() -> None:
    async with open_loopback() as loopback:
        loopback.expect("s1")
        port = loopback.port
        assert loopback.redirect_uri == f"http://127.0.0.1:{port}/callback"
        assert await _get(port, "/favicon.ico") == 404
        assert await _get(port, "/callback?code=evil&state=forged") == 400
        assert await _get(port, "/callback?code=c1&state=s1") == 200
        assert await _get(port, "/callback?code=c2&state=s1") == 409
        result = await loopback.wait(5)
        assert (result.code, result.state) == ("c1", "s1")
    with socket.socket() as probe, pytest.raises(ConnectionRefusedError):
        probe.connect(("127.0.0.1", port))


async def test_the_loopback_reports_an_error_redirect_and_an_abandoned_login() -> None:
    async with open_loopback() as loopback:
        loopback.expect("s1")
        assert await _get(loopback.port, "/callback?error=access_denied&error_description=no&state=s1") == 400
        with pytest.raises(CallbackError, match="refused the login: access_denied"):
            await loopback.wait(5)
    async with open_loopback() as loopback:
        loopback.expect("s2")
        with trio.fail_after(5):
            with pytest.raises(CallbackError, match="not finished within 0.2 s"):
                await loopback.wait(0.2)


async def test_the_loopback_takes_any_free_port_when_its_own_is_taken() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        busy = taken.getsockname()[1]
        async with open_loopback(busy) as loopback:
            assert loopback.port != busy
