"""What a verified bearer token (or API key) stands for, why a token was refused, and revocation.

A :class:`VerifiedCredential` is what the verifiers hand back: the facts the
token proved, ready to become a :class:`lockgate.core.Principal` for the
core. A :class:`TokenRefused` is the other answer: a :class:`Refusal` short
enough for an audit record and a one-line detail for a log, neither of which
ever repeats the token.

Three ids name a credential, each for its own purpose:

- ``principal_id``: who calls, for the core (audit, rate limits, sessions):
  ``user:alice`` for a token Lockgate issued at login (its ``sub``),
  ``delegated:<jti>`` for a delegated token, ``jwt:<iss>#<sub>`` for a token
  from an external issuer, ``key:<key id>`` for an API key;
- ``credential_id``: this very credential, for revocation and for a
  delegated child's ``parent``: ``jwt:<jti>`` for a token Lockgate issued,
  the principal id for the others;
- ``subject``: on whose behalf, kept down a delegation chain (a delegated
  token's ``sub`` is its root's).

A revoked id anywhere in :attr:`VerifiedCredential.lineage` (the subject,
every ancestor, the credential itself) revokes the credential:
:func:`is_revoked`.
"""

from __future__ import annotations

import enum
from collections.abc import Container, Iterable
from dataclasses import dataclass

from lockgate.core import Principal, Rate, Role, grant_problem

__all__ = ["Refusal", "TokenRefused", "VerifiedCredential", "default_agent_of", "is_revoked"]


class Refusal(enum.StrEnum):
    """Why a token was refused, as an audit record names it."""

    MALFORMED = "malformed"
    TOO_LARGE = "too_large"
    ALGORITHM_NOT_ALLOWED = "algorithm_not_allowed"
    BAD_SIGNATURE = "bad_signature"
    UNKNOWN_KEY = "unknown_key"
    KEYS_UNAVAILABLE = "keys_unavailable"
    EXPIRED = "expired"
    NOT_YET_VALID = "not_yet_valid"
    WRONG_ISSUER = "wrong_issuer"
    WRONG_AUDIENCE = "wrong_audience"
    MISSING_CLAIM = "missing_claim"
    BAD_CLAIM = "bad_claim"


@dataclass(frozen=True, slots=True)
class TokenRefused:
    """A token that proves nothing: ``reason`` for the audit record, ``detail`` in words (never the token)."""

    reason: Refusal
    detail: str

    def __str__(self) -> str:
        return f"bearer token refused: {self.detail}"


@dataclass(frozen=True, slots=True, kw_only=True)
class VerifiedCredential:
    """What a verified token (or API key) proved; see the module docstring for the three ids.

    ``expires_at`` is wall-clock time (seconds since the epoch, as JWT's
    ``exp``), ``None`` for a credential that does not expire (an API key
    without expiry). ``chain`` lists the credential ids of a delegated
    token's ancestors, root first; it is empty for any other credential.
    ``shared_rates`` are the rate limits of those ancestors that have one, by
    principal id (see :attr:`lockgate.core.Principal.shared_rates`).
    """

    principal_id: str
    credential_id: str
    subject: str
    issuer: str
    role: Role
    agents: tuple[str, ...]
    tools: tuple[str, ...] | None = None
    rate: Rate | None = None
    expires_at: float | None = None
    chain: tuple[str, ...] = ()
    shared_rates: tuple[tuple[str, Rate], ...] = ()

    @classmethod
    def from_principal(cls, principal: Principal, *, expires_at: float | None = None) -> VerifiedCredential:
        """An API key's principal as a credential, to delegate from: all three ids are the principal's."""
        return cls(
            principal_id=principal.id,
            credential_id=principal.id,
            subject=principal.id,
            issuer="lockgate",
            role=principal.role,
            agents=principal.agents,
            tools=principal.tools,
            rate=principal.rate,
            expires_at=expires_at,
            shared_rates=principal.shared_rates,
        )

    @property
    def default_agent(self) -> str | None:
        """The agent a request that declares none acts as: see :func:`default_agent_of`."""
        return default_agent_of(self.agents)

    @property
    def delegated(self) -> bool:
        """Was this credential delegated from another?"""
        return bool(self.chain)

    @property
    def lineage(self) -> tuple[str, ...]:
        """Every id whose revocation revokes this credential: subject, ancestors root first, itself; no repeats."""
        return tuple(dict.fromkeys((self.subject, *self.chain, self.credential_id)))

    def remaining(self, now: float) -> float | None:
        """Seconds of validity left at wall-clock ``now`` (negative once expired); ``None``: no expiry."""
        return None if self.expires_at is None else self.expires_at - now

    def to_principal(self, *, now: float, event_now: float) -> Principal:
        """The principal the core works with.

        The core's clock is not the wall clock, so the expiry is moved onto
        it: ``now`` is the wall-clock time and ``event_now`` the core's event
        time at the same moment.
        """
        remaining = self.remaining(now)
        return Principal(
            id=self.principal_id,
            role=self.role,
            agents=self.agents,
            default_agent=self.default_agent,
            tools=self.tools,
            rate=self.rate,
            shared_rates=self.shared_rates,
            expires=None if remaining is None else event_now + remaining,
            subject=None if self.subject == self.principal_id else self.subject,
        )


def default_agent_of(grants: Iterable[str]) -> str | None:
    """The first grant that names one agent (not a subtree or ``*``); ``None`` when there is none."""
    return next((grant for grant in grants if "*" not in grant and grant_problem(grant) is None), None)


def is_revoked(lineage: Iterable[str], revoked: Container[str]) -> bool:
    """Is any id of ``lineage`` (pass :attr:`VerifiedCredential.lineage`) among the ``revoked`` ids?

    So a revoked parent, whether a token (``jwt:<jti>``), an API key
    (``key:<key id>``) or a user (``user:<name>``), revokes every token
    delegated from it, however deep.
    """
    return any(credential_id in revoked for credential_id in lineage)
