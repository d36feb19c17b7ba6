"""Tokens from an external issuer (an OAuth authorization server, an identity provider), and their claims.

Configured by ``GATEWAY_JWT_ISSUER`` (the ``iss`` it signs with),
``GATEWAY_JWT_AUDIENCE`` (the ``aud`` its tokens for Lockgate carry: the
resource URI, RFC 8707) and ``GATEWAY_JWT_JWKS`` (its public keys: a JWKS
file, read at start, or an ``https://`` URL, fetched and cached; see
:mod:`.jwks`). Its tokens are RS256, ES256 or EdDSA, each as its key says.

Two claims say what the token may do, named by ``GATEWAY_JWT_ROLE_CLAIM``
(default ``role``) and ``GATEWAY_JWT_AGENTS_CLAIM`` (default ``agents``). A
claim name is looked up as written first (so ``https://example.com/roles``
works) and then as a dotted path into nested objects (``lockgate.agents``).

- The role claim is ``admin`` or ``user``, or a list of roles in which
  ``admin`` (else ``user``) is looked for. Anything else is refused: a role
  Lockgate does not know is never guessed at. A token without the claim is
  a ``user``.
- The agents claim is a list of grants or one space-separated string of
  them (as OAuth's ``scope``); an entry that is not a grant refuses the
  token. A token without the claim may act as no agent.

``sub`` is required; the principal id is ``jwt:<iss>#<sub>``, which is also
its credential id for revocation and delegation.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lockgate.core import Role

from .checks import DEFAULT_LEEWAY, Refused, decode, read_grants, read_header, read_role, read_string
from .credentials import Refusal, TokenRefused, VerifiedCredential
from .jwks import ALGORITHMS, JwksError, KeySource, RemoteKeySet, StaticKeySet, VerificationKey, load_jwks_file
from .tokens import TokenSetupError

__all__ = [
    "AGENTS_CLAIM_VARIABLE",
    "AUDIENCE_VARIABLE",
    "ISSUER_VARIABLE",
    "JWKS_VARIABLE",
    "ROLE_CLAIM_VARIABLE",
    "ExternalIssuer",
    "claim_at",
    "external_issuer_from_environ",
]

ISSUER_VARIABLE = "GATEWAY_JWT_ISSUER"
AUDIENCE_VARIABLE = "GATEWAY_JWT_AUDIENCE"
JWKS_VARIABLE = "GATEWAY_JWT_JWKS"
ROLE_CLAIM_VARIABLE = "GATEWAY_JWT_ROLE_CLAIM"
AGENTS_CLAIM_VARIABLE = "GATEWAY_JWT_AGENTS_CLAIM"


@dataclass(frozen=True, slots=True, kw_only=True)
class ExternalIssuer:
    """Verifies an external issuer's tokens against its keys and maps their claims (module docstring)."""

    issuer: str
    audience: str
    keys: KeySource
    role_claim: str = "role"
    agents_claim: str = "agents"
    leeway: float = DEFAULT_LEEWAY

    async def verify(self, token: str, *, now: float) -> VerifiedCredential | TokenRefused:
        """What ``token`` proves, if this issuer signed it and it is valid at wall-clock ``now``; else why not.

        A token that names an algorithm Lockgate never accepts is refused
        before any key is looked up, so junk never makes the keys be fetched.
        Never raises on any string.
        """
        try:
            header = _header(token)
            found = await self.keys.key_for(header.get("kid"))
            return found if isinstance(found, TokenRefused) else self._verified(token, found, now)
        except Refused as refused:
            return refused.answer

    def verify_offline(self, token: str, *, now: float) -> VerifiedCredential | TokenRefused:
        """As :meth:`verify`, with the keys in hand only: no I/O, never waits (see :class:`.RemoteKeySet`)."""
        try:
            found = self.keys.key_in_hand(_header(token).get("kid"))
            return found if isinstance(found, TokenRefused) else self._verified(token, found, now)
        except Refused as refused:
            return refused.answer

    def _verified(self, token: str, found: VerificationKey, now: float) -> VerifiedCredential:
        claims = decode(
            token,
            key=found.key,
            algorithm=found.algorithm,
            issuer=self.issuer,
            audience=self.audience,
            now=now,
            leeway=self.leeway,
            required=("sub",),
        )
        return self._credential(claims)

    def _credential(self, claims: dict[str, Any]) -> VerifiedCredential:
        subject = f"jwt:{self.issuer}#{read_string(claims, 'sub')}"
        agents = claim_at(claims, self.agents_claim)
        return VerifiedCredential(
            principal_id=subject,
            credential_id=subject,
            subject=subject,
            issuer=self.issuer,
            role=_role(claim_at(claims, self.role_claim), self.role_claim),
            agents=() if agents is None else read_grants(agents, self.agents_claim),
            expires_at=float(claims["exp"]),
        )


def claim_at(claims: Mapping[str, Any], name: str) -> Any:
    """The claim ``name`` as written, else the value at the dotted path ``name``; ``None`` if absent."""
    if name in claims:
        return claims[name]
    value: Any = claims
    for part in name.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def external_issuer_from_environ(environ: Mapping[str, str]) -> ExternalIssuer | None:
    """The external issuer ``environ`` configures; ``None`` when it configures none.

    A JWKS file is read now; a URL is fetched when a token first needs it.

    Raises:
        TokenSetupError: a configuration that is incomplete (issuer,
            audience and key set go together), a claim name that is not
            one, or a key set that cannot be used.
    """
    names = (ISSUER_VARIABLE, AUDIENCE_VARIABLE, JWKS_VARIABLE)
    issuer, audience, jwks = (environ.get(name, "").strip() for name in names)
    if not (issuer or audience or jwks):
        return None
    missing = [name for name, value in zip(names, (issuer, audience, jwks), strict=True) if not value]
    if missing:
        raise TokenSetupError(
            f"an external token issuer needs {', '.join(names)}; {' and '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} not set"
        )
    claims = {}
    for variable, default in ((ROLE_CLAIM_VARIABLE, "role"), (AGENTS_CLAIM_VARIABLE, "agents")):
        name = environ.get(variable, "").strip() or default
        if any(not part for part in name.split(".")):
            raise TokenSetupError(f"{variable} must name a claim (role) or a dotted path to one (lockgate.role)")
        claims[variable] = name
    try:
        keys: KeySource
        if jwks.startswith(("https://", "http://")):
            keys = RemoteKeySet(jwks)
        else:
            keys = StaticKeySet(load_jwks_file(jwks))
    except JwksError as exc:
        raise TokenSetupError(f"{JWKS_VARIABLE}: {exc}") from None
    return ExternalIssuer(
        issuer=issuer,
        audience=audience,
        keys=keys,
        role_claim=claims[ROLE_CLAIM_VARIABLE],
        agents_claim=claims[AGENTS_CLAIM_VARIABLE],
    )


def _header(token: str) -> dict[str, Any]:
    header = read_header(token)
    if header["alg"] not in ALGORITHMS:
        raise Refused(Refusal.ALGORITHM_NOT_ALLOWED, "the token's algorithm is not accepted here")
    return header


def _role(value: object, claim: str) -> Role:
    if value is None:
        return "user"
    if isinstance(value, list):
        for role in ("admin", "user"):
            if role in value:
                return read_role(role, claim)
        raise Refused(Refusal.BAD_CLAIM, f"the token's {claim!r} claim names no Lockgate role (admin or user)")
    return read_role(value, claim)
