"""One entry point for a bearer token, whoever issued it: Lockgate itself or the configured external issuer.

The token's ``iss``, read before anything is verified, picks the verifier;
that verifier then checks everything, ``iss`` included, with its own keys
and algorithms. Reading it first only chooses whom to ask: a token naming
an issuer Lockgate does not trust is refused as ``wrong_issuer``.
"""

from __future__ import annotations

from collections.abc import Mapping

from .checks import Refused, unverified_claims
from .credentials import Refusal, TokenRefused, VerifiedCredential
from .external import ExternalIssuer, external_issuer_from_environ
from .jwks import RemoteKeySet
from .tokens import DEFAULT_ISSUER, TokenIssuer, TokenSetupError

__all__ = ["BearerTokens"]


class BearerTokens:
    """Lockgate's own :class:`~.tokens.TokenIssuer` and, optionally, one :class:`~.external.ExternalIssuer`."""

    def __init__(self, lockgate: TokenIssuer, external: ExternalIssuer | None = None) -> None:
        if external is not None and external.issuer == lockgate.issuer:
            raise ValueError(f"the external issuer {external.issuer!r} has the same name as Lockgate's own")
        self.lockgate = lockgate
        self.external = external

    @classmethod
    def from_environ(
        cls, environ: Mapping[str, str], *, issuer: str = DEFAULT_ISSUER, audience: str = DEFAULT_ISSUER
    ) -> BearerTokens:
        """Lockgate's own issuer and the external one ``environ`` configures.

        Lockgate's is named ``issuer`` and ``audience``, with the secret and
        the lifetime ``environ`` gives.

        Raises:
            TokenSetupError: any setting that cannot be used (see
                :meth:`.TokenIssuer.from_environ` and
                :func:`.external_issuer_from_environ`), or an external
                issuer named as Lockgate is.
        """
        lockgate = TokenIssuer.from_environ(environ, issuer=issuer, audience=audience)
        external = external_issuer_from_environ(environ)
        if external is not None and external.issuer == lockgate.issuer:
            raise TokenSetupError(
                f"the external issuer {external.issuer!r} has the same name as Lockgate's own: "
                "Lockgate could not tell its own tokens from the issuer's"
            )
        return cls(lockgate, external)

    async def verify(self, token: str, *, now: float) -> VerifiedCredential | TokenRefused:
        """What ``token`` proves at wall-clock ``now``, or why it proves nothing. Never raises on any string.

        An external issuer's keys are fetched if they must be.
        """
        issuer = self._issuer(token)
        if isinstance(issuer, TokenRefused):
            return issuer
        if isinstance(issuer, TokenIssuer):
            return self.lockgate.verify(token, now=now)
        return await issuer.verify(token, now=now)

    def verify_offline(self, token: str, *, now: float) -> VerifiedCredential | TokenRefused:
        """As :meth:`verify`, without any I/O: an external issuer's keys are the ones in hand.

        For a synchronous caller; with a key set from a URL, run its
        :meth:`.RemoteKeySet.keep_fresh` as a task (:meth:`keep_fresh`).
        """
        issuer = self._issuer(token)
        if isinstance(issuer, TokenRefused):
            return issuer
        if isinstance(issuer, TokenIssuer):
            return self.lockgate.verify(token, now=now)
        return issuer.verify_offline(token, now=now)

    async def keep_fresh(self) -> None:
        """Keep the external issuer's fetched keys fresh for :meth:`verify_offline`; returns at once without such keys."""
        if self.external is not None and isinstance(self.external.keys, RemoteKeySet):
            await self.external.keys.keep_fresh()

    def _issuer(self, token: str) -> TokenIssuer | ExternalIssuer | TokenRefused:
        try:
            issuer = unverified_claims(token).get("iss")
        except Refused as refused:
            return refused.answer
        if issuer == self.lockgate.issuer:
            return self.lockgate
        if self.external is not None and issuer == self.external.issuer:
            return self.external
        if issuer is None:
            return TokenRefused(Refusal.MISSING_CLAIM, "the token has no 'iss' claim")
        return TokenRefused(Refusal.WRONG_ISSUER, "the token is from an issuer Lockgate does not trust")
