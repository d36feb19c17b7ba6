"""OAuth to HTTP downstreams end to end: real gateways, ``lockgate auth``, the test authorization server and MCP servers.

Lockgate is the OAuth client here: a stdio gateway on a "desktop" (``BROWSER``
names the stub browser of ``oauth_servers.py``, which approves at once) logs
in on the first 401; an HTTP gateway has no person at hand, so its calls fail
with the command that logs in, and ``lockgate auth login`` (the CLI, in its
own process) stores the token the running gateway then reads.

Most tests share one set of OAuth servers (starting three processes takes
seconds): each test reads only the events logged since it began, and the
failure modes are put back after it. The refresh tests share a second set
whose tokens live two seconds. Every gateway and login names the test's
temporary folder on its command line (the suite's check for processes left
behind sees them), everything listens on 127.0.0.1, and every wait is
bounded.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import httpx2
import pytest
import trio
from mcp import Client, MCPError, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client

from lockgate.shells.store import Store

from .conftest import Setup
from .oauth_servers import STUB_BROWSER, OAuthServers
from .test_http import Served, serve_http
from .test_http_downstream import HttpServer

#: The shared servers' client_credentials client; the secret must never be written anywhere by Lockgate.
M2M_ID = "lockgate-robot"
M2M_SECRET = "m2m-S3cret-that-must-never-leak-7f3a"
#: Seconds a token of the short-lived servers lasts.
SHORT_TTL = 2
#: Bounds on waits, in seconds.
CALL_S = 60.0
CLI_S = 60.0
WAIT_S = 15.0
PASSWORD = "correct horse battery staple"

LOGIN_HINT = "lockgate auth login notes"


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OAuthServers]:
    with OAuthServers(tmp_path_factory.mktemp("oauth"), m2m_client_id=M2M_ID, m2m_client_secret=M2M_SECRET) as servers:
        yield servers


@pytest.fixture(scope="module")
def short_lived(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OAuthServers]:
    with OAuthServers(tmp_path_factory.mktemp("oauth-short"), token_ttl=SHORT_TTL) as servers:
        yield servers


def _normal(servers: OAuthServers) -> None:
    """Every failure mode off."""
    servers.control(metadata="ok", token="ok", expire_refresh=False, rs_always_401=False)


@pytest.fixture
def servers(shared: OAuthServers) -> Iterator[OAuthServers]:
    _normal(shared)
    yield shared
    _normal(shared)


@pytest.fixture
def short(short_lived: OAuthServers) -> Iterator[OAuthServers]:
    _normal(short_lived)
    yield short_lived
    _normal(short_lived)


class Scene:
    """One test's gateway configuration and OAuth servers, and everything Lockgate wrote.

    The gateway's environment names the stub browser (``BROWSER``) and a
    state folder of the test's own (its identity database and sealing key).
    ``events()`` and ``rs()`` are what the servers logged since the scene
    began. Every token and client secret the authorization server issued is
    gathered (``collect``) so that ``assert_no_leak`` can look for them.
    """

    def __init__(self, setup: Setup, servers: OAuthServers, tmp: Path) -> None:
        self.setup = setup
        self.servers = servers
        self.tmp = tmp
        self.state = tmp / "state"
        self.browser_log = tmp / "browser.jsonl"
        self.stderr = tmp / "gateway.stderr"
        #: What the CLI and HTTP gateways printed.
        self.outputs: list[str] = []
        self.secrets: set[str] = {servers.m2m_client_secret}
        #: The rules file's content (``None``: the e2e suite's usual rules).
        self.rules: dict[str, Any] | None = None
        self.as_stopped = False
        self._as_mark = len(servers.log())
        self._rs_mark = len(servers.rs_log())
        setup.env.update(
            BROWSER=f"{sys.executable} {STUB_BROWSER} %s",
            STUB_BROWSER_LOG=str(self.browser_log),
            GATEWAY_STATE_DIR=str(self.state),
        )

    # -- configuration ---------------------------------------------------------------

    def notes(self, **extra: Any) -> None:
        """The protected MCP server, as ``notes``."""
        self.setup.servers["notes"] = {"url": self.servers.mcp_url, "description": "protected notes", **extra}

    def stop_as(self) -> None:
        """Take the authorization server down; it comes back when the test ends."""
        self.as_stopped = True
        self.servers.stop_as()

    def plain(self) -> None:
        """The same tools without auth, as ``plain``."""
        self.setup.servers["plain"] = {"url": self.servers.plain_url, "description": "plain notes"}

    # -- gateways and the CLI ----------------------------------------------------------

    @asynccontextmanager
    async def stdio(self, **env: str) -> AsyncIterator[Client]:
        """A stdio gateway (the SDK Client runs it), its stderr appended to ``self.stderr``."""
        self.setup.write(self.rules)
        params = StdioServerParameters(command=sys.executable, args=self.setup.argv(), env={**self.setup.environ(), **env})
        with self.stderr.open("a") as errlog:
            async with Client(stdio_client(params, errlog=errlog), mode="legacy", read_timeout_seconds=CALL_S) as client:
                yield client
        self.collect()

    @asynccontextmanager
    async def http(self, *extra: str) -> AsyncIterator[Served]:
        """``lockgate serve --transport http`` on a free port of 127.0.0.1."""
        self.setup.write(self.rules)
        with serve_http(self.setup, *extra) as served:
            try:
                yield served
            finally:
                self.collect()
        self.outputs.append("".join(served.stderr))

    def cli(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        """``lockgate ARGS`` with the gateway's environment."""
        done = subprocess.run(
            [sys.executable, "-m", "lockgate.shells", *args],
            env={**self.setup.environ(), **env}, capture_output=True, text=True, timeout=CLI_S, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        self.outputs.append(done.stdout + done.stderr)
        self.collect()
        return done

    def clis(self, *commands: tuple[list[str], dict[str, str]]) -> list[subprocess.CompletedProcess[str]]:
        """Several ``lockgate`` commands at once (each ARGS and extra environment), in order of the arguments."""
        self.setup.write(self.rules)
        running = [
            (args, subprocess.Popen(
                [sys.executable, "-m", "lockgate.shells", *args], env={**self.setup.environ(), **env},
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            ))
            for args, env in commands
        ]  # fmt: skip
        done = []
        for args, process in running:
            try:
                out, err = process.communicate(timeout=CLI_S)
            finally:
                if process.poll() is None:
                    process.kill()
                    process.wait()
            self.outputs.append(out + err)
            done.append(subprocess.CompletedProcess(args, process.returncode, out, err))
        self.collect()
        return done

    def files(self) -> list[str]:
        return ["--config", str(self.setup.config), "--rules", str(self.setup.rules)]

    def login(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        """``lockgate auth login ARGS`` for the scene's servers file."""
        self.setup.write(self.rules)
        return self.cli("auth", "login", *args, *self.files(), **env)

    def login_popen(self, *args: str) -> LoginProcess:
        """``lockgate auth login --no-browser ARGS`` in the background, its stderr read as it comes."""
        self.setup.write(self.rules)
        process = subprocess.Popen(
            [sys.executable, "-m", "lockgate.shells", "auth", "login", "--no-browser", *args, *self.files()],
            env=self.setup.environ(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        return LoginProcess(process)

    # -- what the servers saw ----------------------------------------------------------

    def events(self, event: str | None = None) -> list[dict[str, Any]]:
        """The authorization server's events since the scene began (of one kind, if given)."""
        return [e for e in self.servers.log()[self._as_mark :] if event is None or e["event"] == event]

    def rs(self) -> list[dict[str, Any]]:
        """The protected MCP server's POSTs since the scene began."""
        return self.servers.rs_log()[self._rs_mark :]

    def browsed(self) -> list[dict[str, Any]]:
        """What the stub browser visited."""
        if not self.browser_log.exists():
            return []
        return [json.loads(line) for line in self.browser_log.read_text().splitlines()]

    # -- secrets ----------------------------------------------------------------------

    def collect(self) -> None:
        """Gather every token and client secret the authorization server holds now."""
        if not self.servers.as_state.exists():
            return
        state = json.loads(self.servers.as_state.read_text())
        self.secrets.update(state["access"], state["refresh"])
        self.secrets.update(c["client_secret"] for c in state["clients"].values() if c.get("client_secret"))

    def assert_no_leak(self, *, status: bool = False) -> None:
        """No token or secret in the gateways' stderr, the CLI's output, the audit log or the database (unsealed).

        ``status``: nor in ``lockgate auth status`` and ``auth status --json`` (a command more to run).
        """
        self.collect()
        if status:
            for listed in self.clis((["auth", "status"], {}), (["auth", "status", "--json"], {})):
                assert listed.returncode == 0 and listed.stdout.strip(), listed.stderr
        written = {
            "stdio gateway stderr": self.stderr.read_text() if self.stderr.exists() else "",
            "outputs": "\n".join(self.outputs),
            "audit log": self.setup.audit.read_text() if self.setup.audit.exists() else "",
        }
        stored = b"".join(path.read_bytes() for path in self.state.glob("lockgate.db*"))
        assert len(self.secrets) >= 1
        for secret in self.secrets:
            for where, text in written.items():
                assert secret not in text, f"a secret is in the {where}"
            assert secret.encode() not in stored, "a secret is in the database unsealed"
        assert "Traceback" not in written["stdio gateway stderr"] + written["outputs"]


class LoginProcess:
    """A running ``lockgate auth login --no-browser``: the URL it prints, then its end."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.process = process
        self.stderr: list[str] = []
        self._url: str | None = None
        self._printed = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for raw in self.process.stderr:
            line = raw.decode(errors="replace")
            self.stderr.append(line)
            if line.startswith("  http") and self._url is None:
                self._url = line.strip()
                self._printed.set()
        self._printed.set()

    def url(self) -> str:
        assert self._printed.wait(WAIT_S), "".join(self.stderr)
        assert self._url is not None, "".join(self.stderr)
        return self._url

    def finish(self) -> tuple[int, str, str]:
        """Wait for the exit: (status, stdout, stderr)."""
        # Not communicate(): it would read stderr too, from under the reader thread.
        assert self.process.stdout is not None
        try:
            self.process.wait(CLI_S)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
        out = self.process.stdout.read()  # a line or two: it fits in the pipe
        self._reader.join(WAIT_S)  # all of stderr, to its end
        return self.process.returncode, out.decode(), "".join(self.stderr)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(WAIT_S)


@pytest.fixture
def scene(setup: Setup, servers: OAuthServers, tmp_path: Path) -> Iterator[Scene]:
    made = Scene(setup, servers, tmp_path)
    yield made
    if made.as_stopped:
        servers.restart_as()


# -- calls ------------------------------------------------------------------------------


def args_of(server: str, tool: str, agent: str = "dev", **args: Any) -> dict[str, Any]:
    return {"agent_id": agent, "server": server, "tool": tool, "args": args}


async def call(client: Client, server: str, tool: str, agent: str = "dev", **args: Any) -> Any:
    """The result of a tool that answers text: the text, or the JSON it holds."""
    result = await client.call_tool("execute_tool", args_of(server, tool, agent, **args))
    assert result.is_error is False, result
    answer = result.structured_content["result"]
    assert isinstance(answer, str)
    return json.loads(answer) if answer.startswith("{") else answer


async def refused(client: Client, server: str, tool: str = "whoami", agent: str = "dev", **args: Any) -> str:
    """The reason of the SERVER_UNAVAILABLE a call gets."""
    with pytest.raises(MCPError) as failed:
        await client.call_tool("execute_tool", args_of(server, tool, agent, **args))
    data = failed.value.error.data
    assert isinstance(data, dict) and data["code"] == "SERVER_UNAVAILABLE" and data["server"] == server, failed.value.error
    reason = data["reason"]
    assert isinstance(reason, str)
    return reason


async def others_work(client: Client) -> None:
    """The plain HTTP server (``Scene.plain``), on the same gateway, still answers."""
    assert await call(client, "plain", "echo", text="plain") == "echo: plain"


def http_client(url: str, credential: str | None = None) -> Client:
    headers = {"Authorization": f"Bearer {credential}"} if credential else {}
    http = httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(CALL_S))
    return Client(streamable_http_client(url, http_client=http), mode="legacy", read_timeout_seconds=CALL_S)


def query_of(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


async def wait_expired(servers: OAuthServers) -> None:
    """Wait until every access token the authorization server issued so far has expired (bounded)."""
    state = json.loads(servers.as_state.read_text())
    latest = max((token["expires_at"] for token in state["access"].values()), default=0)
    with trio.fail_after(WAIT_S):
        while time.time() <= latest + 0.2:
            await trio.sleep(0.1)


def stored(scene: Scene) -> list[tuple[str, str, tuple[str, ...]]]:
    """The tokens in the scene's database, as ``lockgate auth status`` lists them: (server, principal, scopes)."""
    from lockgate.shells.store.oauth import OAuthStore

    with Store.open(f"sqlite:///{scene.state / 'lockgate.db'}") as store:
        return [(t.server, t.principal, t.scopes) for t in OAuthStore(store).list_tokens()]


def refused_to_connect(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(5)
        try:
            sock.connect(("127.0.0.1", port))
        except ConnectionRefusedError:
            return True
        return False


# -- the authorization-code flow on a desktop ------------------------------------------------


async def test_a_desktop_gateway_logs_in_with_dcr_pkce_and_resource_then_reuses_the_token(scene: Scene) -> None:
    scene.notes()
    async with scene.stdio() as client:
        me = await call(client, "notes", "whoami")
        assert me["subject"] == "alice" and me["scopes"] == ["mcp:read"]
        assert await call(client, "notes", "echo", text="one") == "echo: one"
        assert await call(client, "notes", "echo", text="two") == "echo: two"

    register, authorize, token = scene.events()
    client_id = me["client_id"]
    assert (register["event"], register["client_id"]) == ("register", client_id)
    assert authorize == {
        "event": "authorize", "grant": None, "client_id": client_id, "resource": scene.servers.mcp_url,
        "scopes": ["mcp:read"], "subject": "alice", "code_challenge_method": "S256", "error": None,
    }  # fmt: skip
    assert (token["grant"], token["client_id"], token["resource"], token["error"]) == (
        "authorization_code", client_id, scene.servers.mcp_url, None,
    )  # fmt: skip
    [visit] = scene.browsed()
    assert visit["callback_status"] == 200
    asked = query_of(visit["url"])
    assert asked["code_challenge_method"] == "S256" and len(asked["code_challenge"]) == 43
    assert asked["resource"] == scene.servers.mcp_url and asked["client_id"] == client_id and asked["state"]
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/callback", asked["redirect_uri"])
    # The first request (the era probe) had no token; every one after the login carried it, and the server took it.
    served = scene.rs()
    assert served[0] == {"status": 401, "bearer": False, "method": "server/discover", "subject": None}
    assert all(r["bearer"] and r["subject"] == "alice" and r["status"] < 300 for r in served[1:])

    # A new gateway reads the stored token: no registration, no login, no token request.
    async with scene.stdio() as client:
        assert (await call(client, "notes", "whoami"))["client_id"] == client_id
        assert await call(client, "notes", "echo", text="three") == "echo: three"
    assert len(scene.events()) == 3 and len(scene.browsed()) == 1
    assert stored(scene) == [("notes", "", ("mcp:read",))]
    scene.assert_no_leak()


# -- an HTTP gateway: nobody to log in, then lockgate auth login --------------------------------------


async def test_an_http_gateway_asks_for_lockgate_auth_login_and_takes_the_token_without_restart(scene: Scene) -> None:
    scene.notes()
    scene.plain()
    async with scene.http() as served, http_client(served.url) as client:
        reason = await refused(client, "notes")
        assert reason == f"authorization required: no token is stored for the gateway; to log in, run: {LOGIN_HINT}"
        assert await call(client, "plain", "echo", text="fine") == "echo: fine"
        assert scene.browsed() == [] and scene.events() == []  # BROWSER is set, but an HTTP gateway never opens it

        logged = scene.login("notes")
        assert logged.returncode == 0, logged.stderr
        assert logged.stdout.startswith("logged in to notes: the gateway's token stored (scopes mcp:read; expires ")
        assert "open this URL" in logged.stderr

        # The very next call, in the same session of the same gateway.
        me = await call(client, "notes", "whoami")
        assert me["subject"] == "alice"
        assert await call(client, "notes", "echo", text="after") == "echo: after"
    assert len(scene.events("authorize")) == 1 and len(scene.browsed()) == 1
    assert "Traceback" not in "".join(served.stderr)
    scene.assert_no_leak()


# -- refresh, revocation, an expired refresh token ------------------------------------------------


async def test_an_expired_token_is_refreshed_without_a_second_login(setup: Setup, short: OAuthServers, tmp_path: Path) -> None:
    scene = Scene(setup, short, tmp_path)
    scene.notes()
    async with scene.stdio() as client:
        assert (await call(client, "notes", "whoami"))["subject"] == "alice"
        await wait_expired(short)
        assert await call(client, "notes", "echo", text="later") == "echo: later"
        assert (await call(client, "notes", "whoami"))["subject"] == "alice"
    # A gateway started after the stored token expired refreshes it (with the refresh token the first
    # refresh stored, rotated), and needs nobody: its browser is off.
    await wait_expired(short)
    async with scene.stdio(GATEWAY_OAUTH_BROWSER="never") as client:
        assert await call(client, "notes", "echo", text="next day") == "echo: next day"
    grants = [(t["grant"], t["error"]) for t in scene.events("token")]
    assert grants == [("authorization_code", None), ("refresh_token", None), ("refresh_token", None)]
    assert len(scene.events("authorize")) == 1 and len(scene.browsed()) == 1
    scene.assert_no_leak()


async def test_a_revoked_token_asks_for_a_login_and_the_other_servers_keep_working(scene: Scene) -> None:
    scene.notes()
    scene.plain()
    assert scene.login("notes").returncode == 0
    async with scene.stdio(GATEWAY_OAUTH_BROWSER="never", GATEWAY_LOG_FORMAT="json") as client:
        assert (await call(client, "notes", "whoami"))["subject"] == "alice"
        scene.collect()
        scene.servers.control(revoke_all=True)
        reason = await refused(client, "notes", "echo", text="x")
        assert reason == (
            "authorization required: the server refused the gateway's token, and refreshing it failed "
            f"(the authorization server refused the refresh token); to log in, run: {LOGIN_HINT}"
        )
        await others_work(client)
        assert await refused(client, "notes", "echo", text="x") == reason  # and again, the same
        await others_work(client)
    refreshes = [t for t in scene.events("token") if t["grant"] == "refresh_token"]
    assert refreshes and refreshes[0]["error"] == "invalid_grant"
    assert len(scene.events("authorize")) == 1 and len(scene.browsed()) == 1  # the CLI's login only
    # GATEWAY_LOG_FORMAT=json: every line of the gateway's stderr is one JSON record, the OAuth client's too.
    lines = scene.stderr.read_text().splitlines()
    assert any("refreshing the token failed" in line for line in lines)
    for line in lines:
        assert isinstance(json.loads(line), dict), line
    scene.assert_no_leak()


async def test_a_cli_login_reaches_a_running_gateway_that_found_the_database_there(scene: Scene) -> None:
    # The database is there before the gateway starts (as after any lockgate user or key command), so the
    # gateway holds it open twice: the registry's store, then the tokens'. Opening the second must not drop
    # the first one's locks, or the CLI takes itself for the file's last user and the gateway reads a stale WAL.
    scene.notes()
    make_users(scene)
    async with scene.stdio(GATEWAY_OAUTH_BROWSER="never") as client:
        assert LOGIN_HINT in await refused(client, "notes")
        # The login the reason asks for, while the gateway runs: its next call takes the new token.
        assert scene.login("notes").returncode == 0
        assert (await call(client, "notes", "whoami"))["subject"] == "alice"


async def test_a_refused_refresh_token_falls_back_to_a_login(setup: Setup, short: OAuthServers, tmp_path: Path) -> None:
    scene = Scene(setup, short, tmp_path)
    scene.notes()
    short.control(expire_refresh=True)  # every refresh token is refused as expired
    async with scene.stdio() as client:
        assert (await call(client, "notes", "whoami"))["subject"] == "alice"
        await wait_expired(short)
        # With a person at hand, the browser opens again and the call goes through.
        assert await call(client, "notes", "echo", text="again") == "echo: again"
    assert len(scene.events("authorize")) == 2 and len(scene.browsed()) == 2
    # Without one, the call says why and how to log in.
    await wait_expired(short)
    async with scene.stdio(GATEWAY_OAUTH_BROWSER="never") as client:
        reason = await refused(client, "notes", "echo", text="again")
    assert reason == (
        "authorization required: the gateway's token expired, and refreshing it failed "
        f"(the authorization server refused the refresh token); to log in, run: {LOGIN_HINT}"
    )
    refreshes = [t for t in scene.events("token") if t["grant"] == "refresh_token"]
    assert [t["error"] for t in refreshes] == ["invalid_grant", "invalid_grant"]
    assert len(scene.events("authorize")) == 2 and len(scene.browsed()) == 2
    scene.assert_no_leak()


# -- step-up ---------------------------------------------------------------------------------------------


async def test_step_up_with_a_person_logs_in_again_for_the_wider_scope(scene: Scene) -> None:
    scene.notes()
    async with scene.stdio() as client:
        assert await call(client, "notes", "echo", text="read") == "echo: read"
        assert await call(client, "notes", "write_note", text="hello") == "noted: hello"
        assert (await call(client, "notes", "whoami"))["scopes"] == ["mcp:read", "mcp:write"]
        assert await call(client, "notes", "write_note", text="again") == "noted: again"
    first, second = scene.events("authorize")
    assert first["scopes"] == ["mcp:read"] and second["scopes"] == ["mcp:read", "mcp:write"]
    assert second["code_challenge_method"] == "S256" and second["resource"] == scene.servers.mcp_url
    assert {"status": 403, "bearer": True, "method": "tools/call", "subject": "alice"} in scene.rs()
    assert len(scene.browsed()) == 2
    scene.assert_no_leak()


async def test_step_up_without_a_person_says_the_server_wants_a_wider_scope(scene: Scene) -> None:
    scene.notes()
    assert scene.login("notes").returncode == 0
    async with scene.http() as served, http_client(served.url) as client:
        assert await call(client, "notes", "echo", text="read") == "echo: read"
        reason = await refused(client, "notes", "write_note", text="hello")
        assert reason == (
            "authorization required: the server wants a wider scope (mcp:read mcp:write) than the gateway's token has; "
            f"to log in, run: {LOGIN_HINT}"
        )
        assert await call(client, "notes", "echo", text="still") == "echo: still"  # reading still works
    assert len(scene.events("authorize")) == 1 and len(scene.browsed()) == 1
    # Following the hint as it is: the gateway kept the scope the server asked for, so the login asks for it.
    logged = scene.login("notes")
    assert logged.returncode == 0 and "(scopes mcp:read mcp:write;" in logged.stdout
    assert scene.events("authorize")[-1]["scopes"] == ["mcp:read", "mcp:write"]
    assert stored(scene) == [("notes", "", ("mcp:read", "mcp:write"))]
    scene.assert_no_leak()


# -- per-user tokens -----------------------------------------------------------------------------------------


PER_USER_RULES: dict[str, Any] = {
    "agents": {name: {"allow": {"servers": ["*"]}} for name in ("alice", "bob", "carol", "dev")},
    "defaults": {"deny_on_missing_agent": True},
}


def make_users(scene: Scene, *names: str) -> None:
    """The scene's identity database, with these users (password ``PASSWORD``)."""
    scene.secrets.add(PASSWORD)
    with Store.open(f"sqlite:///{scene.state / 'lockgate.db'}") as store:
        store.upgrade()
        for name in names:
            store.create_user(name, "user", PASSWORD)


async def signed_in(served: Served, name: str) -> str:
    async with httpx.AsyncClient(base_url=served.base, timeout=CALL_S) as http:
        answer = await http.post("/auth/login", json={"name": name, "password": PASSWORD})
    assert answer.status_code == 200, answer.text
    token = answer.json()["access_token"]
    assert isinstance(token, str)
    return token


async def test_per_user_tokens_serve_each_principal_its_own(scene: Scene) -> None:
    scene.notes(oauth={"per_user": True})
    make_users(scene, "alice", "bob", "carol")
    with Store.open(f"sqlite:///{scene.state / 'lockgate.db'}") as store:
        alices_key = store.create_key("alice's", role="user", agents=["alice"], user="alice")[1]
    scene.secrets.add(alices_key)
    scene.rules = PER_USER_RULES
    # Both logins at once, each as its own person in the browser.
    logins = scene.clis(*[
        (["auth", "login", "notes", "--principal", f"user:{user}", *scene.files()], {"STUB_BROWSER_USER": user})
        for user in ("alice", "bob")
    ])  # fmt: skip
    for user, logged in zip(("alice", "bob"), logins):
        assert logged.returncode == 0, logged.stderr
        assert logged.stdout.startswith(f"logged in to notes: user:{user}'s token stored")
    assert sorted(stored(scene)) == [("notes", "user:alice", ("mcp:read",)), ("notes", "user:bob", ("mcp:read",))]

    before = len(scene.rs())
    async with scene.http("--auth") as served:
        for user in ("alice", "bob"):
            async with http_client(served.url, await signed_in(served, user)) as client:
                assert (await call(client, "notes", "whoami", agent=user))["subject"] == user
                assert await call(client, "notes", "echo", agent=user, text=user) == f"echo: {user}"
        async with http_client(served.url, await signed_in(served, "carol")) as client:
            reason = await refused(client, "notes", agent="carol")
            assert reason == (
                "authorization required: no token is stored for user:carol; "
                "to log in, run: lockgate auth login notes --principal user:carol"
            )
            carol = scene.rs()[before:]
        # Alice's API key speaks for her: its calls carry her token, after carol's refusal too.
        async with http_client(served.url, alices_key) as client:
            assert (await call(client, "notes", "whoami", agent="alice"))["subject"] == "alice"
    subjects = [r["subject"] for r in scene.rs()[before:] if r["bearer"]]
    assert set(subjects) == {"alice", "bob"}
    # Carol's calls went without any token: never another's, never her own Lockgate credential.
    assert carol[-1] == {"status": 401, "bearer": False, "method": "server/discover", "subject": None}
    assert not [r for r in scene.rs()[before:] if r["status"] == 401 and r["bearer"]]
    assert sorted(e["subject"] for e in scene.events("authorize")) == ["alice", "bob"]
    scene.assert_no_leak()


async def test_a_per_user_server_without_authentication_refuses_for_want_of_an_identity(scene: Scene) -> None:
    scene.notes(oauth={"per_user": True})
    scene.plain()
    async with scene.stdio() as client:
        reason = await refused(client, "notes")
        assert "per user (oauth.per_user), and this caller has no identity" in reason
        assert "GATEWAY_AUTH=required" in reason
        await others_work(client)
    assert scene.rs() == [] and scene.events() == [] and scene.browsed() == []


# -- client credentials ----------------------------------------------------------------------------------------


async def test_client_credentials_need_no_browser_and_a_wrong_secret_says_why(scene: Scene) -> None:
    grant = {"grant": "client_credentials", "client_id": M2M_ID, "scopes": ["mcp:read"]}
    scene.setup.servers["robot"] = {"url": scene.servers.mcp_url, "description": "m2m", "oauth": {**grant, "client_secret": "${M2M_SECRET}"}}
    scene.setup.servers["wrong"] = {"url": scene.servers.mcp_url, "description": "m2m", "oauth": {**grant, "client_secret": "${M2M_WRONG}"}}
    scene.setup.env.update(M2M_SECRET=M2M_SECRET, M2M_WRONG="not-the-secret")
    scene.secrets.add("not-the-secret")
    async with scene.http() as served, http_client(served.url) as client:
        assert await call(client, "robot", "whoami") == {"subject": M2M_ID, "client_id": M2M_ID, "scopes": ["mcp:read"]}
        assert await call(client, "robot", "echo", text="m2m") == "echo: m2m"
        reason = await refused(client, "wrong")
        assert reason.startswith("authorization required: ") and "invalid_client" in reason
        assert "lockgate auth login" not in reason
        assert await call(client, "robot", "echo", text="still") == "echo: still"
    grants = [(t["grant"], t["client_id"], t["error"]) for t in scene.events("token")]
    assert grants == [("client_credentials", M2M_ID, None), ("client_credentials", M2M_ID, "invalid_client")]
    assert scene.events("token")[0]["resource"] == scene.servers.mcp_url
    # The CLI's login of a client_credentials server needs no browser either.
    logged, failed = scene.clis(*[(["auth", "login", name, *scene.files()], {}) for name in ("robot", "wrong")])
    assert logged.returncode == 0 and logged.stdout.startswith("logged in to robot: the gateway's token stored (scopes mcp:read")
    assert "open this URL" not in logged.stderr
    assert failed.returncode == 1 and "invalid_client" in failed.stderr and "Traceback" not in failed.stderr
    assert failed.stderr.startswith("lockgate: cannot log in to wrong: OAuth failed: Token exchange failed (401)")
    assert scene.browsed() == [] and scene.events("authorize") == []
    scene.assert_no_leak()


# -- faults ---------------------------------------------------------------------------------------------------------


#: What goes wrong, how, and what the reason then says. Logging in again mends none of them.
FAULTS: list[tuple[str, dict[str, str | bool] | None, str]] = [
    ("the authorization server is down", None, "the authorization server cannot be reached (cannot connect to 127.0.0.1:"),
    ("its metadata is garbage", {"metadata": "garbage"}, "OAuth failed: Registration failed: 404"),
    ("its metadata names another issuer", {"metadata": "wrong_issuer"}, "issuer mismatch: https://wrong-issuer.invalid"),
    ("its token endpoint fails", {"token": "error"}, "OAuth failed: Token exchange failed (400)"),
    (
        "the server refuses even a fresh token", {"rs_always_401": True},
        "the server refused the token it was just given (HTTP 401 again); gave up after one retry",
    ),
]  # fmt: skip


async def test_each_fault_is_a_clear_reason_and_the_other_servers_keep_working(scene: Scene) -> None:
    scene.notes()
    scene.plain()
    async with scene.stdio() as client:
        for fault, modes, said in FAULTS:
            if modes is None:
                scene.stop_as()
            else:
                scene.servers.control(**modes)
            reason = await refused(client, "notes")
            assert reason.startswith("authorization required: ") and said in reason, (fault, reason)
            assert "lockgate auth login" not in reason, (fault, reason)  # logging in would not help
            await others_work(client)
            if modes is None:
                scene.servers.restart_as()
            else:
                _normal(scene.servers)
        # With every fault gone, the next call logs in and works: nothing was left in backoff.
        assert (await call(client, "notes", "whoami"))["subject"] == "alice"
    stderr = scene.stderr.read_text()
    assert "Traceback" not in stderr and stderr.count("server needs authorization") == len(FAULTS)
    scene.assert_no_leak()


async def test_a_slow_authorization_server_fails_the_call_within_the_gateways_timeouts(scene: Scene) -> None:
    scene.notes()
    scene.plain()
    scene.servers.control(metadata="slow")  # the metadata request is answered after 30 s, if ever
    async with scene.stdio() as client:
        with pytest.raises(MCPError) as timed_out:
            await client.call_tool("execute_tool", {**args_of("notes", "whoami"), "timeout_ms": 1000})
        assert timed_out.value.error.data["code"] == "TIMEOUT", timed_out.value.error
        await others_work(client)  # the login in progress holds up only its own server's calls
        # A call with the default timeout waits for the same login, which gives up on the server in time.
        with trio.fail_after(CALL_S):
            reason = await refused(client, "notes")
        assert reason == "authorization required: the authorization server did not answer within 20 s"
        await others_work(client)
    assert "Traceback" not in scene.stderr.read_text()


# -- the loopback of a login ---------------------------------------------------------------------------------------


def test_an_abandoned_login_ends_after_its_timeout_and_releases_the_port(scene: Scene) -> None:
    scene.notes()
    login = scene.login_popen("notes", "--timeout", "2")
    try:
        url = login.url()
        port = urlsplit(query_of(url)["redirect_uri"]).port
        assert port is not None
        status, out, err = login.finish()
    finally:
        login.kill()
    assert status == 1, err
    assert "lockgate: cannot log in to notes: the login was not finished within 2 s" in err
    assert "Traceback" not in err and out == ""
    assert refused_to_connect(port)
    assert stored(scene) == [] and scene.events("token") == []


def test_the_loopback_refuses_a_callback_with_the_wrong_state_and_the_login_still_completes(scene: Scene) -> None:
    scene.notes()
    login = scene.login_popen("notes", "--timeout", "30")
    try:
        url = login.url()
        callback = query_of(url)["redirect_uri"]
        with httpx.Client(timeout=WAIT_S) as http:
            forged = http.get(callback, params={"code": "stolen", "state": "not-the-state"})
            assert forged.status_code == 400 and "state does not match" in forged.text
            assert http.get(callback, params={"code": "x"}).status_code == 400  # no state at all
            assert http.get(callback.replace("/callback", "/elsewhere"), params={"state": query_of(url)["state"]}).status_code == 404
        answered = scene.servers.approve_and_follow(url)
        assert answered.status_code == 200 and "Logged in" in answered.text
        status, out, err = login.finish()
    finally:
        login.kill()
    assert status == 0, err
    assert out.startswith("logged in to notes: the gateway's token stored")
    assert [t["grant"] for t in scene.events("token")] == ["authorization_code"]  # the forged code never reached the server
    port = urlsplit(callback).port
    assert port is not None and refused_to_connect(port)
    scene.assert_no_leak()


# -- two calls, one flow ---------------------------------------------------------------------------------------------


async def test_two_calls_meeting_the_same_401_run_one_flow(scene: Scene) -> None:
    scene.notes()
    async with scene.stdio() as client:
        answers: list[Any] = []

        async def whoami() -> None:
            answers.append(await call(client, "notes", "whoami"))

        async def echo(text: str) -> None:
            answers.append(await call(client, "notes", "echo", text=text))

        with trio.fail_after(CALL_S):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(whoami)
                nursery.start_soon(whoami)
        assert [a["subject"] for a in answers] == ["alice", "alice"]
        assert len(scene.events("authorize")) == 1

        # The token is revoked: both calls in flight meet a 401 on the open session.
        scene.collect()
        scene.servers.control(revoke_all=True)
        before = len(scene.rs())
        answers.clear()
        with trio.fail_after(CALL_S):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(echo, "a")
                nursery.start_soon(echo, "b")
        assert sorted(answers) == ["echo: a", "echo: b"]
    refusals = [r for r in scene.rs()[before:] if r["status"] == 401]
    assert [(r["bearer"], r["method"]) for r in refusals] == [(True, "tools/call"), (True, "tools/call")]
    assert len(scene.events("authorize")) == 2 and len(scene.browsed()) == 2
    scene.assert_no_leak()


# -- the CLI -------------------------------------------------------------------------------------------------------------


def test_the_cli_refuses_what_it_cannot_log_in_to_and_status_logout_and_audit_work(scene: Scene) -> None:
    scene.notes()
    scene.setup.servers["team"] = {"url": scene.servers.mcp_url, "description": "per user", "oauth": {"per_user": True}}
    scene.setup.servers["open"] = {"url": scene.servers.plain_url, "description": "no oauth", "oauth": False}
    scene.setup.servers["plain"] = {"url": scene.servers.plain_url, "description": "plain"}
    refusals = {
        ("nope",): "lockgate: error: no server 'nope' is configured (servers: notes, open, plain, team, testing)",
        ("testing",): "lockgate: error: testing is a stdio server; OAuth is for HTTP servers",
        ("team",): "lockgate: error: team's tokens are per user (oauth.per_user): say whose with --principal ID",
        ("open",): "lockgate: error: OAuth is off for open",
    }
    commands: list[tuple[list[str], dict[str, str]]] = [(["auth", "login", *args, *scene.files()], {}) for args in refusals]
    *usage, needless, empty = scene.clis(*commands, (["auth", "login", "plain", *scene.files()], {}), (["auth", "status"], {}))
    for said, done in zip(refusals.values(), usage):
        assert done.returncode == 2, done.stderr
        assert said in done.stderr and "Traceback" not in done.stderr and done.stdout == ""
    # A server that asks for no token: nothing to log in to.
    assert needless.returncode == 1
    assert needless.stderr.strip() == "lockgate: cannot log in to plain: plain answered without asking for a token: it needs no login"
    assert empty.stdout.strip() == "no OAuth tokens stored"
    assert scene.events() == [] and scene.browsed() == []

    gateway, bob = scene.clis(
        (["auth", "login", "notes", *scene.files()], {}),
        (["auth", "login", "team", "--principal", "user:bob", *scene.files()], {"STUB_BROWSER_USER": "bob"}),
    )
    assert gateway.returncode == 0 and bob.returncode == 0, gateway.stderr + bob.stderr
    assert sorted(stored(scene)) == [("notes", "", ("mcp:read",)), ("team", "user:bob", ("mcp:read",))]

    out = scene.cli("auth", "logout", "notes")
    assert out.returncode == 0 and out.stdout.strip() == "forgot the gateway's OAuth token for server notes"
    again, table, listed = scene.clis((["auth", "logout", "notes"], {}), (["auth", "status"], {}), (["auth", "status", "--json"], {}))
    assert again.returncode == 1 and "no OAuth token of gateway is stored for server 'notes'" in again.stderr
    header, row = table.stdout.splitlines()
    assert header.split() == ["SERVER", "WHOSE", "SCOPES", "EXPIRES"] and row.split()[:3] == ["team", "user:bob", "mcp:read"]
    [bobs] = json.loads(listed.stdout)
    assert (bobs["server"], bobs["whose"], bobs["principal"], bobs["scopes"], bobs["expired"]) == (
        "team", "user:bob", "user:bob", ["mcp:read"], False,
    )  # fmt: skip

    records = [r for r in scene.setup.audit_records() if str(r.get("operation", "")).startswith("oauth_")]
    assert sorted((r["operation"], r["target"]) for r in records) == [
        ("oauth_login", "oauth:notes:gateway"), ("oauth_login", "oauth:team:user:bob"), ("oauth_logout", "oauth:notes:gateway"),
    ]  # fmt: skip
    scene.assert_no_leak()


# -- secrets ---------------------------------------------------------------------------------------------------------------


async def test_no_token_or_secret_is_ever_written_out(scene: Scene) -> None:
    scene.notes()
    scene.setup.servers["robot"] = {
        "url": scene.servers.mcp_url, "description": "m2m",
        "oauth": {"grant": "client_credentials", "client_id": M2M_ID, "client_secret": "${M2M_SECRET}", "scopes": ["mcp:read"]},
    }  # fmt: skip
    scene.setup.env.update(M2M_SECRET=M2M_SECRET, GATEWAY_LOG_LEVEL="debug")
    async with scene.stdio() as client:
        await call(client, "notes", "whoami")  # a login, through the browser
        await call(client, "notes", "write_note", text="step up")  # a second login
        await call(client, "robot", "whoami")
        scene.collect()
        scene.servers.control(revoke_all=True)
        await call(client, "notes", "echo", text="after revocation")  # a refused refresh, a third login
    assert len(scene.secrets) >= 8
    assert len(scene.events("authorize")) == 3
    scene.assert_no_leak(status=True)


# -- a client's own credential ------------------------------------------------------------------------------------------


async def test_a_clients_own_authorization_header_never_reaches_a_downstream(scene: Scene, tmp_path: Path) -> None:
    recorder = HttpServer(tmp_path)  # the e2e testing server over HTTP: it logs every request's Authorization header
    recorder.start()
    try:
        scene.setup.servers["robot"] = {
            "url": scene.servers.mcp_url, "description": "m2m",
            "oauth": {"grant": "client_credentials", "client_id": M2M_ID, "client_secret": "${M2M_SECRET}"},
        }  # fmt: skip
        scene.setup.servers["recorder"] = {"url": recorder.url, "description": "records headers"}
        scene.setup.env["M2M_SECRET"] = M2M_SECRET
        make_users(scene)
        with Store.open(f"sqlite:///{scene.state / 'lockgate.db'}") as store:
            key = store.create_key("dev", role="user", agents=["dev"])[1]
        scene.secrets.add(key)
        async with scene.http("--auth") as served, http_client(served.url, key) as client:
            assert (await call(client, "robot", "whoami"))["subject"] == M2M_ID
            assert await call(client, "recorder", "echo", text="hi") == "hi"
    finally:
        recorder.close()
    seen = recorder.requests()
    assert [r["method"] for r in seen][:1] == ["POST"] and all(r["authorization"] is None for r in seen)
    # The protected server saw the gateway's own token only, never the client's key.
    assert all(r["subject"] == M2M_ID for r in scene.rs() if r["bearer"])
    assert not [r for r in scene.rs() if r["status"] == 401 and r["bearer"]]
    scene.assert_no_leak()
