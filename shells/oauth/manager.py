"""The OAuth token sessions of one gateway: which ``httpx.Auth`` each HTTP downstream connection gets.

An HTTP server gets OAuth unless its entry says ``"oauth": false`` or
configures its own ``Authorization`` header (the one exception to "never
forward a credential": the client's own is never sent on). Each connection
carries the token of the principal its ``StartDownstream`` names under
``oauth.per_user``, else the gateway's; one :class:`~.session.TokenSession`
per server, URL, principal and settings serves every connection that carries
the same token, so two connections meeting the same 401 run one flow.

The database (the identity store's: ``GATEWAY_DATABASE_URL`` or the default
SQLite file) and the secret key are opened on the first challenge, never
before: a gateway whose servers want no token never touches them.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING

import httpx

from lockgate.core import OAuthSpec, StartDownstream

from ..locations import database_url
from ..logs import get_logger

if TYPE_CHECKING:
    from .session import Opener, TokenSession
    from ..store import Store
    from ..store.oauth import OAuthStore

__all__ = ["BROWSER_VARIABLE", "OAuthManager", "desktop", "for_front", "uses_oauth"]

BROWSER_VARIABLE = "GATEWAY_OAUTH_BROWSER"
#: The principal of the gateway's own token (:data:`lockgate.shells.store.oauth.GATEWAY`).
_GATEWAY = ""

_log = get_logger("oauth")


def uses_oauth(spec_url: str | None, headers: Mapping[str, str], oauth: OAuthSpec | None) -> bool:
    """Does a server with these settings get OAuth on a 401?"""
    if spec_url is None or (oauth is not None and not oauth.enabled):
        return False
    return not any(name.lower() == "authorization" for name in headers)


def desktop(environ: Mapping[str, str]) -> bool:
    """Is there a browser a person will see: a display, macOS or Windows, or ``BROWSER`` naming one?"""
    if environ.get("BROWSER") or environ.get("DISPLAY") or environ.get("WAYLAND_DISPLAY"):
        return True
    return sys.platform in ("darwin", "win32")


def for_front(environ: Mapping[str, str], *, stdio: bool) -> OAuthManager:
    """The manager of a gateway serving stdio (``stdio``) or HTTP.

    A person is at hand only for a stdio gateway on a desktop, where
    ``GATEWAY_OAUTH_BROWSER`` is ``auto`` (the default): the first 401 opens
    the browser there, as agent-mcp-gateway does. An HTTP gateway serves
    clients elsewhere, so its calls get the command that logs in instead.
    """
    choice = environ.get(BROWSER_VARIABLE, "auto").strip().lower() or "auto"
    if choice not in ("auto", "never"):
        _log.warning(f"{BROWSER_VARIABLE}={choice!r} is not auto or never; the browser is never opened")
        choice = "never"
    if not (stdio and choice == "auto" and desktop(environ)):
        return OAuthManager(environ)
    from .session import browser_opener

    def announce(url: str) -> None:
        _log.warning(f"a server wants a login: opening the browser at {url}")

    return OAuthManager(environ, opener=browser_opener(announce))


class OAuthManager:
    """The token sessions of a gateway (see the module docstring).

    ``opener`` shows a person where to log in: given for a stdio gateway on
    a desktop (``GATEWAY_OAUTH_BROWSER=auto``), ``None`` elsewhere, where a
    call that needs a login fails with the command that logs in.
    """

    def __init__(
        self, environ: Mapping[str, str], *, opener: Opener | None = None, login_timeout: float | None = None
    ) -> None:
        self._environ = dict(environ)
        self._opener = opener
        self._login_timeout = login_timeout
        self._sessions: dict[tuple[str, str, str, OAuthSpec], TokenSession] = {}
        self._store: Store | None = None
        self._oauth_store: OAuthStore | None = None
        self._opening = threading.Lock()

    def auth_for(self, action: StartDownstream) -> httpx.Auth | None:
        """The ``httpx.Auth`` for the connection ``action`` starts, or ``None`` if its server gets no OAuth."""
        spec = action.spec
        if spec.transport != "http" or not uses_oauth(spec.url, spec.headers, spec.oauth):
            return None
        assert spec.url is not None
        oauth = spec.oauth or OAuthSpec()
        principal = action.principal if oauth.per_user and action.principal is not None else _GATEWAY
        from .session import DownstreamAuth

        return DownstreamAuth(self.session(action.server, spec.url, oauth, principal))

    def session(self, server: str, url: str, oauth: OAuthSpec, principal: str) -> TokenSession:
        """The token session of ``server`` at ``url`` for ``principal`` (made on first use)."""
        # The SDK's OAuth client is loaded on the first HTTP connection, not at start.
        from .session import TokenSession
        from .storage import StoredTokens

        key = (server, url, principal, oauth)
        session = self._sessions.get(key)
        if session is None:
            storage = StoredTokens(self._open, server, principal, client=None)
            session = TokenSession(server=server, url=url, oauth=oauth, storage=storage, opener=self._opener)
            if self._login_timeout is not None:
                session.login_timeout = self._login_timeout
            if oauth.client_id is not None and oauth.grant == "authorization_code":
                storage.fixed_client = session.configured_client()
            self._sessions[key] = session
        else:
            session.reload()
        return session

    def _open(self) -> OAuthStore:
        """The token store, opened on first use (in a worker thread); raises what the store or the key raise."""
        with self._opening:
            if self._oauth_store is None:
                from ..sealed import SecretBox
                from ..store import Store
                from ..store.oauth import OAuthStore

                box = SecretBox.from_environ(self._environ)
                store = Store.open_current(database_url(None, self._environ), _log.info)
                self._store = store
                self._oauth_store = OAuthStore(store, box)
            return self._oauth_store

    def close(self) -> None:
        """Close the database, if it was opened."""
        with self._opening:
            if self._store is not None:
                self._store.close()
                self._store = None
                self._oauth_store = None
