"""An OAuth authorization server and an OAuth-protected MCP server for end-to-end tests, as subprocesses.

``OAuthServers(tmp_path)`` binds three listening sockets on 127.0.0.1 at once, so the URLs are known
before ``start()``: the authorization server (``servers/oauth_as.py``), the MCP server it protects
and the same MCP server without auth (``servers/oauth_rs.py``). Each server runs in its own process
on the socket handed down to it, and every process names files in ``tmp`` on its command line, so
the e2e suite's check for processes left behind covers them.

Tests use the ``oauth_servers`` fixture (import it with the class), or make their own instance::

    from .oauth_servers import OAuthServers, oauth_servers  # noqa: F401

``servers/stub_browser.py`` plays the user's browser for a login Lockgate starts (see ``STUB_BROWSER``).
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

import httpx
import pytest

SERVERS = Path(__file__).parent / "servers"
AS_SCRIPT = str(SERVERS / "oauth_as.py")
RS_SCRIPT = str(SERVERS / "oauth_rs.py")
# For BROWSER: f"{sys.executable} {STUB_BROWSER} %s" (Python's webbrowser puts the URL in place of %s).
STUB_BROWSER = str(SERVERS / "stub_browser.py")

# Bounds on every wait, in seconds.
START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
HTTP_TIMEOUT = 10.0

# Which server each control() mode goes to.
AS_MODES = {"metadata", "token", "revoke_all", "expire_refresh"}
RS_MODES = {"rs_always_401"}


class _Served:
    """One server process on a listening socket this process bound, so its port outlives the process."""

    def __init__(self, name: str, tmp: Path) -> None:
        self.name = name
        self.stderr = tmp / f"{name}.stderr"
        self.sock: socket.socket | None = None
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.bind()

    def bind(self) -> None:
        """Listen on 127.0.0.1, on a new port the first time and on the same port after release()."""
        sock = socket.socket()
        # The port is bound again after release(); the killed server's connections may linger in TIME_WAIT.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        sock.listen(64)
        self.sock = sock
        self.port = sock.getsockname()[1]

    def start(self, argv: list[str]) -> None:
        """Run ``argv`` with ``--fd N`` appended, N being the listening socket."""
        if self.proc is not None:
            raise RuntimeError(f"the {self.name} server is running already")
        if self.sock is None:
            self.bind()
        assert self.sock is not None
        fd = self.sock.fileno()
        with self.stderr.open("ab") as stderr:
            self.proc = subprocess.Popen(
                [sys.executable, *argv, "--fd", str(fd)], pass_fds=[fd], stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr
            )

    def wait_ready(self, deadline: float) -> None:
        """Return once the server answers HTTP at all; fail if it exits or the deadline passes."""
        url = f"http://127.0.0.1:{self.port}/_ready"
        with httpx.Client(timeout=0.5) as http:
            while True:
                if self.proc is None or self.proc.poll() is not None:
                    raise RuntimeError(f"the {self.name} server exited at start:\n{self.stderr_tail()}")
                try:
                    http.get(url)  # any status will do: something answered
                    return
                except httpx.HTTPError:
                    # Connections wait in the socket's backlog until the server accepts; time out and look again.
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"the {self.name} server did not answer in {START_TIMEOUT} s:\n{self.stderr_tail()}") from None
                    time.sleep(0.05)

    def stop(self) -> None:
        """Kill the process; the port keeps listening, so new connections wait for the next start()."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(STOP_TIMEOUT)
            self.proc = None

    def release(self) -> None:
        """Stop listening, so that connecting is refused (the port number is kept for the next start())."""
        self.stop()
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def stderr_tail(self) -> str:
        return self.stderr.read_text(errors="replace")[-2000:] if self.stderr.exists() else ""


class OAuthServers:
    """An authorization server and a protected MCP server on 127.0.0.1, each in its own subprocess.

    ``as_url`` is the issuer (``http://127.0.0.1:P``, no trailing slash), ``mcp_url`` the protected
    MCP endpoint (``http://127.0.0.1:Q/mcp``) and ``plain_url`` the same tools with no auth at all.
    The authorization server approves every authorization at once for the ``test_user`` its
    authorize URL carries (see ``approve``); it pre-registers the confidential client
    ``m2m_client_id``/``m2m_client_secret`` for client_credentials; its tokens last ``token_ttl`` seconds.
    """

    def __init__(
        self, tmp: Path, *, token_ttl: int = 3600, m2m_client_id: str = "m2m-client", m2m_client_secret: str = "m2m-secret"
    ) -> None:
        self.tmp = tmp
        self.token_ttl = token_ttl
        self.m2m_client_id = m2m_client_id
        self.m2m_client_secret = m2m_client_secret
        self.as_state = tmp / "oauth-as-state.json"
        self.as_log = tmp / "oauth-as-events.jsonl"
        self.rs_requests = tmp / "oauth-rs-requests.jsonl"
        self.plain_requests = tmp / "oauth-plain-requests.jsonl"
        self._as = _Served("oauth-as", tmp)
        self._rs = _Served("oauth-rs", tmp)
        self._plain = _Served("oauth-plain", tmp)
        self.as_url = f"http://127.0.0.1:{self._as.port}"
        self.mcp_url = f"http://127.0.0.1:{self._rs.port}/mcp"
        self.plain_url = f"http://127.0.0.1:{self._plain.port}/mcp"

    def _as_argv(self) -> list[str]:
        return [
            AS_SCRIPT,
            "--issuer", self.as_url,
            "--state", str(self.as_state),
            "--log", str(self.as_log),
            "--token-ttl", str(self.token_ttl),
            "--m2m-client-id", self.m2m_client_id,
            "--m2m-client-secret", self.m2m_client_secret,
        ]  # fmt: skip

    def start(self) -> None:
        """Start the three servers; return once all answer HTTP."""
        try:
            self._as.start(self._as_argv())
            self._rs.start([RS_SCRIPT, "--url", self.mcp_url, "--issuer", self.as_url, "--log", str(self.rs_requests)])
            # Logged too, so the plain server does the same work as the protected one but for auth.
            self._plain.start([RS_SCRIPT, "--url", self.plain_url, "--no-auth", "--log", str(self.plain_requests)])
            deadline = time.monotonic() + START_TIMEOUT
            for served in (self._as, self._rs, self._plain):
                served.wait_ready(deadline)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Kill the servers, wait for them, and release the ports. Safe to call more than once."""
        for served in (self._as, self._rs, self._plain):
            served.release()

    def stop_as(self) -> None:
        """Take the authorization server down: connecting to it is refused until restart_as()."""
        self._as.release()

    def restart_as(self) -> None:
        """Start the authorization server again (stopping it first if it runs), on the same port.

        It comes back with what it knew: registered clients, tokens, modes and its log are kept in files.
        """
        self._as.release()
        self._as.start(self._as_argv())
        self._as.wait_ready(time.monotonic() + START_TIMEOUT)

    def log(self) -> list[dict[str, Any]]:
        """The authorization server's events, in order.

        Each is ``{"event": "register"|"authorize"|"token"|"revoke", "grant", "client_id", "resource",
        "scopes", "subject", "code_challenge_method", "error"}``; ``error`` is None but for refused
        token requests (and an authorization refused for a PKCE method other than S256).
        """
        return _json_lines(self.as_log)

    def rs_log(self) -> list[dict[str, Any]]:
        """The protected MCP server's POSTs, in order: ``{"status", "bearer", "method", "subject"}``."""
        return _json_lines(self.rs_requests)

    def control(self, **modes: str | bool) -> None:
        """Switch failure modes on (or off) at the servers they concern.

        Authorization server: ``metadata="ok"|"down"|"garbage"|"wrong_issuer"|"slow"``,
        ``token="ok"|"error"|"slow"``, ``expire_refresh=True|False``, and ``revoke_all=True`` (an
        action: every access and refresh token is forgotten). Protected MCP server:
        ``rs_always_401=True|False``. Modes stay until changed, across restart_as() too.
        """
        unknown = set(modes) - AS_MODES - RS_MODES
        if unknown:
            raise TypeError(f"unknown modes {sorted(unknown)}")
        with httpx.Client(timeout=HTTP_TIMEOUT) as http:
            for base, names in ((self.as_url, AS_MODES), (_origin(self.mcp_url), RS_MODES)):
                change = {k: v for k, v in modes.items() if k in names}
                if change:
                    http.post(f"{base}/_control", json=change).raise_for_status()

    def approve(self, url: str, user: str = "alice") -> str:
        """Consent headlessly: GET the authorize URL as ``user`` and return the redirect's Location.

        That is the client's redirect_uri with ``code`` and ``state`` (or ``error``); it is not fetched.
        """
        with httpx.Client(timeout=HTTP_TIMEOUT) as http:
            response = http.get(with_query(url, test_user=user))
        if response.status_code not in (302, 303) or "location" not in response.headers:
            raise RuntimeError(f"authorize answered {response.status_code}, not a redirect: {response.text[:500]}")
        return urljoin(url, response.headers["location"])

    def approve_and_follow(self, url: str, user: str = "alice") -> httpx.Response:
        """approve(), then GET the redirect as a browser would (the client's loopback callback)."""
        location = self.approve(url, user)
        with httpx.Client(timeout=HTTP_TIMEOUT) as http:
            return http.get(location)

    def __enter__(self) -> OAuthServers:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None) -> None:
        self.close()


def with_query(url: str, **params: str) -> str:
    """``url`` with ``params`` added to its query string (replacing parameters of the same name)."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in params]
    return urlunsplit(parts._replace(query=urlencode([*query, *params.items()])))


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _json_lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]


@pytest.fixture
def oauth_servers(tmp_path: Path) -> Iterator[OAuthServers]:
    """Started servers for one test, closed after it."""
    with OAuthServers(tmp_path) as servers:
        yield servers
