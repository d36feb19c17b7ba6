"""The ``mcp`` SDK's OAuth client providers, as Lockgate runs them.

Lockgate does not implement the MCP authorization flow itself: discovery
(RFC 9728, RFC 8414 with the OpenID fallback), dynamic client registration
(RFC 7591) or a Client ID Metadata Document, PKCE, the ``resource``
parameter (RFC 8707), refresh and step-up are the SDK's
``OAuthClientProvider`` (and ``ClientCredentialsOAuthProvider`` for the
client-credentials grant), the implementation the MCP reference clients use.
The subclasses here change four things:

- a token counts as expired a little before it is (at most a minute, at
  most a tenth of its life), so a refresh comes before the server refuses it;
- a token read back from the database keeps its real expiry and the
  authorization server's metadata (see :mod:`.storage`);
- the scopes a server's ``oauth.scopes`` names, and those a step-up asked
  for while no person was at hand, are always asked for, with whatever the
  server's challenge names;
- no deprecation warning for a client-credentials client without an issuer.
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import fields
from collections.abc import Awaitable, Callable

import httpx2
from mcp.client.auth import OAuthClientProvider
from mcp.client.auth.extensions.client_credentials import ClientCredentialsOAuthProvider
from mcp.client.auth.oauth2 import OAuthContext
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientMetadata, OAuthToken

from .storage import StoredTokens

__all__ = ["AuthorizationCodeProvider", "ClientCredentialsProvider", "early"]

#: The most a token's expiry is brought forward, in seconds.
MARGIN_S = 60.0

# The SDK's OAuth client logs to a logger without a handler, so Python would
# print its warnings and tracebacks raw on stderr, outside Lockgate's log
# format; Lockgate logs what happened in its own records, and the reason the
# call fails with says why.
logging.getLogger("mcp.client.auth").addHandler(logging.NullHandler())


def early(expires_at: float | None, lifetime: float | None) -> float | None:
    """When to treat a token expiring at ``expires_at`` as expired: a little before (see the module docstring)."""
    if expires_at is None:
        return None
    margin = MARGIN_S if lifetime is None else min(MARGIN_S, lifetime / 10)
    # The SDK reads 0 as "no expiry": an expired token must stay a positive time.
    return max(expires_at - margin, 1.0)


class _Context(OAuthContext):
    """The SDK's flow state, with the expiry brought forward."""

    def update_token_expiry(self, token: OAuthToken) -> None:
        if token.expires_in is None:
            self.token_expiry_time = None
            return
        lifetime = float(int(token.expires_in))
        self.token_expiry_time = early(time.time() + lifetime, lifetime)


def _own_context(context: OAuthContext) -> _Context:
    return _Context(**{f.name: getattr(context, f.name) for f in fields(context)})


class _Lockgate(OAuthClientProvider):
    """What both providers share; mixed in before the SDK's class."""

    storage: StoredTokens
    #: The scopes configured for the server (``oauth.scopes``), asked for whatever the challenge says.
    configured_scopes: tuple[str, ...] = ()

    def _adopt(self, storage: StoredTokens, scopes: tuple[str, ...]) -> None:
        self.context = _own_context(self.context)
        self.storage = storage
        self.configured_scopes = scopes

    async def _initialize(self) -> None:
        await super()._initialize()
        if self.context.oauth_metadata is None and self.storage.metadata is not None:
            self.context.oauth_metadata = self.storage.metadata
        self.context.token_expiry_time = early(self.storage.expires_at, None)

    async def _handle_token_response(self, response: httpx2.Response) -> None:
        self.storage.metadata = self.context.oauth_metadata
        await super()._handle_token_response(response)

    async def _handle_refresh_response(self, response: httpx2.Response) -> bool:
        self.storage.metadata = self.context.oauth_metadata
        return await super()._handle_refresh_response(response)

    def _widen_scope(self) -> None:
        extra = [*self.configured_scopes, *self.storage.wanted]
        if not extra:
            return
        asked = (self.context.client_metadata.scope or "").split()
        self.context.client_metadata.scope = " ".join(dict.fromkeys([*asked, *extra]))

    def reload(self) -> None:
        """Read the token from the database again before the next request (another process may have logged in)."""
        self._initialized = False


class AuthorizationCodeProvider(_Lockgate):
    """The authorization-code flow with PKCE: a person logs in in a browser."""

    def __init__(
        self,
        server_url: str,
        client_metadata: OAuthClientMetadata,
        storage: StoredTokens,
        redirect_handler: Callable[[str], Awaitable[None]],
        callback_handler: Callable[[], Awaitable[AuthorizationCodeResult]],
        *,
        client_metadata_url: str | None = None,
        scopes: tuple[str, ...] = (),
    ) -> None:
        super().__init__(
            server_url, client_metadata, storage, redirect_handler, callback_handler, client_metadata_url=client_metadata_url
        )
        self._adopt(storage, scopes)

    async def _perform_authorization_code_grant(self) -> tuple[str, str]:
        self._widen_scope()
        return await super()._perform_authorization_code_grant()


class ClientCredentialsProvider(_Lockgate, ClientCredentialsOAuthProvider):
    """The client-credentials grant: the gateway asks with its own client id and secret, no person."""

    def __init__(
        self,
        server_url: str,
        storage: StoredTokens,
        *,
        client_id: str,
        client_secret: str,
        issuer: str | None = None,
        scopes: tuple[str, ...] = (),
    ) -> None:
        with warnings.catch_warnings():
            # Without an issuer the SDK warns that one will be needed; the
            # servers file may name one (oauth.issuer), and need not.
            warnings.simplefilter("ignore")
            super().__init__(
                server_url, storage, client_id, client_secret, scope=" ".join(scopes) or None, issuer=issuer
            )
        self._adopt(storage, scopes)

    async def _perform_authorization(self) -> httpx2.Request:
        self._widen_scope()
        return await super()._perform_authorization()
