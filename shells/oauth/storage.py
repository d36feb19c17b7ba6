"""Where a downstream server's OAuth token lives: the SDK's ``TokenStorage`` over :class:`~..store.oauth.OAuthStore`.

The ``mcp`` SDK's OAuth client keeps its tokens and its registered client in
a ``TokenStorage``. :class:`StoredTokens` is one for one server and one
Lockgate principal (or the gateway, :data:`~..store.oauth.GATEWAY`), sealed
in the identity database. Database calls run in a worker thread: the store is
synchronous.

Three things the SDK does not keep, kept here beside the token (inside the
sealed value): its absolute expiry (the SDK's ``expires_in`` is relative to
when it was issued, so a token read back after a restart would look fresh
for ever); the authorization server's metadata, so a refresh after a
restart goes to that server's token endpoint rather than a guess at the MCP
server's origin; and the scopes a server asked for that the token lacks
(step-up where no person was at hand), so the next ``lockgate auth login``
asks for them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

import trio
from mcp.shared.auth import OAuthClientInformationFull, OAuthMetadata, OAuthToken

from ..logs import get_logger
from .errors import OAuthProblem

if TYPE_CHECKING:
    from ..store.oauth import OAuthStore

__all__ = ["StoredTokens"]

T = TypeVar("T")
_log = get_logger("oauth")

#: The key of the extras Lockgate keeps in a sealed token value.
_EXTRA = "lockgate"


class StoredTokens:
    """The SDK's ``TokenStorage`` for ``server`` and ``principal``, in ``store`` (see the module docstring).

    ``client`` is a client registered by hand (``oauth.client_id``): it is
    given, never stored. ``metadata`` is read by :meth:`set_tokens` to keep
    the authorization server's metadata with the token.
    """

    def __init__(
        self,
        store: Callable[[], OAuthStore],
        server: str,
        principal: str,
        *,
        client: OAuthClientInformationFull | None = None,
    ) -> None:
        self._open_store = store
        self.server = server
        self.principal = principal
        #: A client registered by hand (``oauth.client_id``): given, never stored.
        self.fixed_client = client
        #: When the token read or written last expires (``time.time()`` seconds); ``None``: never, or none.
        self.expires_at: float | None = None
        #: The authorization server's metadata stored with the token, or to store with the next one.
        self.metadata: OAuthMetadata | None = None
        #: Scopes a server asked for (step-up) that the token lacks: the next login asks for them too.
        self.wanted: tuple[str, ...] = ()

    async def get_tokens(self) -> OAuthToken | None:
        stored = await self._run(lambda store: store.get_token(self.server, self.principal))
        if stored is None:
            self.expires_at = None
            return None
        value = dict(stored.value)
        extra = value.pop(_EXTRA, None)
        expires = stored.record.expires_at
        self.expires_at = expires.timestamp() if expires is not None else None
        if isinstance(extra, dict) and isinstance(extra.get("metadata"), dict):
            try:
                self.metadata = OAuthMetadata.model_validate(extra["metadata"])
            except ValueError:
                self.metadata = None
        wanted = extra.get("wanted") if isinstance(extra, dict) else None
        self.wanted = tuple(scope for scope in wanted if isinstance(scope, str)) if isinstance(wanted, list) else ()
        try:
            return OAuthToken.model_validate(value)
        except ValueError:
            return None  # a value an older Lockgate wrote in another shape: as if there were none

    async def set_tokens(self, tokens: OAuthToken) -> None:
        value: dict[str, Any] = tokens.model_dump(mode="json", exclude_none=True)
        granted = tokens.scope.split() if tokens.scope else []
        self.wanted = tuple(scope for scope in self.wanted if scope not in granted)
        extra: dict[str, Any] = {}
        if self.metadata is not None:
            extra["metadata"] = self.metadata.model_dump(mode="json", exclude_none=True)
        if self.wanted:
            extra["wanted"] = list(self.wanted)
        if extra:
            value[_EXTRA] = extra
        now = time.time()
        self.expires_at = now + int(tokens.expires_in) if tokens.expires_in is not None else None
        expires = datetime.fromtimestamp(self.expires_at, UTC) if self.expires_at is not None else None
        scopes = tokens.scope.split() if tokens.scope else ()
        await self._run(lambda store: store.put_token(self.server, self.principal, value, expires_at=expires, scopes=scopes))

    async def want(self, scopes: tuple[str, ...]) -> None:
        """Remember that the server asked for ``scopes`` (step-up), with the stored token, for the next login."""
        self.wanted = tuple(dict.fromkeys([*self.wanted, *scopes]))

        def work(store: OAuthStore) -> None:
            stored = store.get_token(self.server, self.principal)
            if stored is None:
                return
            value = dict(stored.value)
            extra = dict(value.get(_EXTRA) or {})
            extra["wanted"] = list(self.wanted)
            value[_EXTRA] = extra
            record = stored.record
            store.put_token(self.server, self.principal, value, expires_at=record.expires_at, scopes=record.scopes)

        await self._run(work)

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        if self.fixed_client is not None:
            return self.fixed_client
        clients = await self._run(self._latest_client)
        if clients is None:
            return None
        try:
            return OAuthClientInformationFull.model_validate(clients)
        except ValueError:
            return None

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        if self.fixed_client is not None:
            return
        issuer = client_info.issuer or _origin(self.metadata)
        value = client_info.model_dump(mode="json", exclude_none=True)
        await self._run(lambda store: store.put_client(self.server, issuer, value))

    def _latest_client(self, store: OAuthStore) -> dict[str, Any] | None:
        """The client registered last for the server (one server has one authorization server at a time)."""
        records = [record for record in store.list_clients() if record.server == self.server]
        if not records:
            return None
        latest = max(records, key=lambda record: record.updated_at)
        stored = store.get_client(self.server, latest.issuer)
        return None if stored is None else dict(stored.value)

    async def _run(self, work: Callable[[OAuthStore], T]) -> T:
        """``work`` on the store, in a worker thread; a failure of the database or the key is an :class:`OAuthProblem`."""
        from ..sealed import SecretKeyError, UnsealError
        from ..store import StoreError

        try:
            return await trio.to_thread.run_sync(lambda: work(self._open_store()))
        except UnsealError:
            _log.error("a stored OAuth value does not open", extra={"fields": {"server": self.server}})
            raise OAuthProblem("the stored token does not open with this gateway's secret key (GATEWAY_SECRET_KEY)",
                               login=True) from None
        except (StoreError, SecretKeyError) as exc:
            _log.error(f"the OAuth token store failed: {exc}", extra={"fields": {"server": self.server}})
            raise OAuthProblem(f"the token store cannot be used: {exc}", login=False) from None


def _origin(metadata: OAuthMetadata | None) -> str:
    """The issuer to file a client under when the SDK bound it to none."""
    return str(metadata.issuer) if metadata is not None else "unknown"
