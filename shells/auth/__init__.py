"""Bearer tokens: the ones Lockgate issues (at login and by delegation) and an external issuer's.

Everything here is for a shell to call before it hands the core a
:class:`lockgate.core.Principal`: verification is cryptography, which the
core leaves to the shell, and the verified facts are what it passes on.

- :class:`BearerTokens` (:mod:`.bearer`) verifies any bearer token; its
  answer is a :class:`VerifiedCredential` or a :class:`TokenRefused`.
  :meth:`~BearerTokens.verify` may fetch an external issuer's keys;
  :meth:`~BearerTokens.verify_offline` never does any I/O, for a
  synchronous caller that runs :meth:`~BearerTokens.keep_fresh` as a task.
- :class:`TokenIssuer` (:mod:`.tokens`) signs login tokens
  (:meth:`~TokenIssuer.issue`) and delegated ones
  (:meth:`~TokenIssuer.delegate`), and verifies them.
- :class:`ExternalIssuer` (:mod:`.external`) verifies an identity
  provider's tokens with its JWKS (:mod:`.jwks`).
- :func:`is_revoked` checks a credential's :attr:`~VerifiedCredential.lineage`
  against the revoked ids (:mod:`.credentials`).

The module that reads the tokens' bytes, :mod:`.checks`, holds the rules
every token passes (size, algorithm allowlist, times).
"""

from __future__ import annotations

from .bearer import BearerTokens
from .checks import DEFAULT_LEEWAY, MAX_TOKEN_BYTES
from .credentials import Refusal, TokenRefused, VerifiedCredential, default_agent_of, is_revoked
from .delegation import (
    DEFAULT_DELEGATION_TTL,
    MAX_CHAIN,
    DelegationRefused,
    DelegationRequest,
    plan_delegation,
    tools_within,
)
from .external import ExternalIssuer, claim_at, external_issuer_from_environ
from .jwks import JwksError, KeySet, RemoteKeySet, StaticKeySet, load_jwks_file, parse_jwks
from .tokens import DEFAULT_TTL, IssuedToken, TokenIssuer, TokenSetupError, signing_secret, token_ttl

__all__ = [
    "DEFAULT_DELEGATION_TTL",
    "DEFAULT_LEEWAY",
    "DEFAULT_TTL",
    "MAX_CHAIN",
    "MAX_TOKEN_BYTES",
    "BearerTokens",
    "DelegationRefused",
    "DelegationRequest",
    "ExternalIssuer",
    "IssuedToken",
    "JwksError",
    "KeySet",
    "Refusal",
    "RemoteKeySet",
    "StaticKeySet",
    "TokenIssuer",
    "TokenRefused",
    "TokenSetupError",
    "VerifiedCredential",
    "claim_at",
    "default_agent_of",
    "external_issuer_from_environ",
    "is_revoked",
    "load_jwks_file",
    "parse_jwks",
    "plan_delegation",
    "signing_secret",
    "token_ttl",
    "tools_within",
]
