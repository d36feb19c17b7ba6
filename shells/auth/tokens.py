"""Bearer tokens Lockgate issues itself: at login, and to sub-agents by delegation.

Library: PyJWT with ``cryptography`` (``PyJWT[crypto]``). It is the most used
JOSE library for Python, maintained, typed, small (JWS and JWT only, the
part Lockgate needs, with no JWE surface to misconfigure), and it takes the
accepted algorithms from the caller rather than the token. ``cryptography``
gives it RSA, EC and EdDSA for external issuers' keys. python-jose is barely
maintained; Authlib and jwcrypto are larger than this needs.

Signing: HS256 under a secret of at least 32 bytes: ``GATEWAY_JWT_SECRET``
when set, else a random one made once and kept in ``jwt-secret`` in the
state folder (mode 0600), so tokens survive a restart and every gateway on
the machine accepts the others' tokens. Gateways on several machines share
``GATEWAY_JWT_SECRET``.

Claims: ``iss`` and ``aud`` (Lockgate's issuer string and the resource, both
``lockgate`` unless configured), ``sub`` (the principal id the token speaks
for: ``user:alice``, ``key:3f9a1c2b``), ``role``, ``agents`` (grants),
``iat``, ``nbf``, ``exp``, ``jti`` (random), optionally ``tools`` and
``rate`` (``120/min``), and for a delegated token ``parent`` (its parent's
credential id), ``chain`` (every ancestor's, root first) and, when an
ancestor has a rate, ``shared_rates`` (``[[principal id, "120/min"], …]``:
the buckets its calls also count against).

A verified token's principal id is its ``sub`` (a login token stands for
its user, so a user's rate limit and sessions do not change with each
login) or ``delegated:<jti>`` for a delegated token (each sub-agent its own
principal); its credential id, for revocation, is ``jwt:<jti>``. See
:mod:`.credentials`.
"""

from __future__ import annotations

import base64
import binascii
import math
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import jwt

from lockgate.core import Principal, Rate, grant_problem, parse_rate

from ..private_files import PrivateFileError, read_or_make
from .checks import DEFAULT_LEEWAY, Refused, decode, read_grants, read_role, read_string
from .credentials import Refusal, TokenRefused, VerifiedCredential
from .delegation import (
    DEFAULT_DELEGATION_TTL,
    MAX_CHAIN,
    DelegationRefused,
    DelegationRequest,
    plan_delegation,
    tool_pattern_problem,
)

__all__ = [
    "ALGORITHM",
    "DEFAULT_ISSUER",
    "DEFAULT_TTL",
    "MIN_SECRET_BYTES",
    "SECRET_FILE",
    "SECRET_VARIABLE",
    "TTL_VARIABLE",
    "IssuedToken",
    "TokenIssuer",
    "TokenSetupError",
    "secret_from_file",
    "signing_secret",
    "token_ttl",
]

ALGORITHM = "HS256"
DEFAULT_ISSUER = "lockgate"
#: Seconds a login token lives unless ``GATEWAY_TOKEN_TTL`` says otherwise.
DEFAULT_TTL = 3600
MIN_SECRET_BYTES = 32
SECRET_VARIABLE = "GATEWAY_JWT_SECRET"
TTL_VARIABLE = "GATEWAY_TOKEN_TTL"
#: The secret's file in the state folder, when ``GATEWAY_JWT_SECRET`` is unset.
SECRET_FILE = "jwt-secret"
_MAKE_ONE = "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"
# The longest principal id a shared_rates claim may name (a JWT subject can be long, not unbounded).
_MAX_ID = 512


class TokenSetupError(Exception):
    """The token settings cannot be used; ``str()`` is one line for the operator, never the secret."""


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """A token just signed: ``expires_in`` seconds from issue (``expires_at``, epoch seconds), and its ids.

    ``credential_id`` and ``principal_id`` are for the audit record; the
    token itself stays out of ``repr``.
    """

    token: str = field(repr=False)
    expires_in: int
    expires_at: int
    credential_id: str
    principal_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenIssuer:
    """Signs and verifies Lockgate's own tokens.

    ``ttl`` is a login token's lifetime and the ceiling for a delegated
    one's, whose default is ``delegation_ttl``; ``leeway`` is the clock skew
    forgiven. Every method takes the wall-clock ``now`` (``time.time()``) so
    that it is exact under test.
    """

    secret: bytes = field(repr=False)
    issuer: str = DEFAULT_ISSUER
    audience: str = DEFAULT_ISSUER
    ttl: int = DEFAULT_TTL
    delegation_ttl: int = DEFAULT_DELEGATION_TTL
    leeway: float = DEFAULT_LEEWAY

    def __post_init__(self) -> None:
        if len(self.secret) < MIN_SECRET_BYTES:
            raise ValueError(f"the signing secret must be at least {MIN_SECRET_BYTES} bytes")
        if self.ttl < 1 or self.delegation_ttl < 1:
            raise ValueError("token lifetimes must be 1 second or more")
        if not self.issuer or not self.audience:
            raise ValueError("the issuer and the audience must not be empty")

    @classmethod
    def from_environ(
        cls, environ: Mapping[str, str], *, issuer: str = DEFAULT_ISSUER, audience: str = DEFAULT_ISSUER
    ) -> TokenIssuer:
        """An issuer with the secret (:func:`signing_secret`) and lifetime (:func:`token_ttl`) ``environ`` gives.

        Raises:
            TokenSetupError: a secret or lifetime that cannot be used, or a
                secret file that cannot be read, made or trusted.
        """
        return cls(secret=signing_secret(environ), issuer=issuer, audience=audience, ttl=token_ttl(environ))

    def issue(self, principal: Principal, *, now: float, ttl: int | None = None) -> IssuedToken:
        """A login token for ``principal`` (its id becomes ``sub``), living ``ttl`` seconds (default :attr:`ttl`).

        ``principal.default_agent`` and ``expires`` are not carried: a
        verified token's default agent is its first plain agent grant, and
        its expiry is ``exp``.

        Raises:
            ValueError: a principal or lifetime that no token should carry
                (a bad grant, tool pattern or role; a rate ``120/min`` cannot
                spell; a lifetime under 1 second).
        """
        lifetime = self.ttl if ttl is None else ttl
        if lifetime < 1:
            raise ValueError("a token lives 1 second or more")
        if not principal.id:
            raise ValueError("a principal without an id cannot have a token")
        issued_at = math.floor(now)
        jti = _new_jti()
        claims = self._claims(
            subject=principal.id,
            role=principal.role,
            agents=principal.agents,
            tools=principal.tools,
            rate=principal.rate,
            issued_at=issued_at,
            expires_at=issued_at + lifetime,
            jti=jti,
        )
        return self._sign(claims, principal_id=principal.id)

    def delegate(
        self, parent: VerifiedCredential, request: DelegationRequest, *, now: float
    ) -> IssuedToken | DelegationRefused:
        """A token for a sub-agent of ``parent``, or why ``request`` asks for more than ``parent`` has.

        ``parent`` is a verified token (from :meth:`verify` or an external
        issuer) or an API key (:meth:`VerifiedCredential.from_principal`);
        the caller has checked that it is not revoked. The rules are in
        :mod:`.delegation`.
        """
        plan = plan_delegation(parent, request, now=now, max_ttl=self.ttl, default_ttl=self.delegation_ttl)
        if isinstance(plan, DelegationRefused):
            return plan
        issued_at = math.floor(now)
        expires_at = math.floor(now + plan.lifetime)
        if parent.expires_at is not None:
            expires_at = min(expires_at, math.floor(parent.expires_at))
        if expires_at <= issued_at:
            return DelegationRefused("ttl", "the parent credential has expired or is about to")
        jti = _new_jti()
        claims = self._claims(
            subject=parent.subject,
            role=plan.role,
            agents=plan.agents,
            tools=plan.tools,
            rate=plan.rate,
            issued_at=issued_at,
            expires_at=expires_at,
            jti=jti,
        )
        claims["parent"] = plan.chain[-1]
        claims["chain"] = list(plan.chain)
        if plan.shared_rates:
            claims["shared_rates"] = [[ancestor, str(rate)] for ancestor, rate in plan.shared_rates]
        return self._sign(claims, principal_id=f"delegated:{jti}")

    def verify(self, token: str, *, now: float) -> VerifiedCredential | TokenRefused:
        """What ``token`` proves, if Lockgate signed it and it is valid at ``now``; else why not.

        Never raises on any string: every fault is a :class:`TokenRefused`.
        """
        try:
            claims = decode(
                token,
                key=self.secret,
                algorithm=ALGORITHM,
                issuer=self.issuer,
                audience=self.audience,
                now=now,
                leeway=self.leeway,
                required=("sub", "iat", "nbf", "jti", "role", "agents"),
            )
            return self._credential(claims)
        except Refused as refused:
            return refused.answer

    def _credential(self, claims: dict[str, Any]) -> VerifiedCredential:
        subject = read_string(claims, "sub")
        jti = read_string(claims, "jti")
        chain = _read_chain(claims)
        return VerifiedCredential(
            principal_id=f"delegated:{jti}" if chain else subject,
            credential_id=f"jwt:{jti}",
            subject=subject,
            issuer=self.issuer,
            role=read_role(claims["role"], "role"),
            agents=read_grants(claims["agents"], "agents"),
            tools=_read_tools(claims),
            rate=_read_rate(claims),
            expires_at=float(claims["exp"]),
            chain=chain,
            shared_rates=_read_shared_rates(claims, chain),
        )

    def _claims(
        self,
        *,
        subject: str,
        role: str,
        agents: tuple[str, ...],
        tools: tuple[str, ...] | None,
        rate: Rate | None,
        issued_at: int,
        expires_at: int,
        jti: str,
    ) -> dict[str, Any]:
        if role not in ("admin", "user"):
            raise ValueError(f"{role!r} is not a role")
        for grant in agents:
            problem = grant_problem(grant)
            if problem is not None:
                raise ValueError(problem)
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": subject,
            "role": role,
            "agents": list(agents),
            "iat": issued_at,
            "nbf": issued_at,
            "exp": expires_at,
            "jti": jti,
        }
        if tools is not None:
            for pattern in tools:
                problem = tool_pattern_problem(pattern)
                if problem is not None:
                    raise ValueError(problem)
            claims["tools"] = list(tools)
        if rate is not None:
            if parse_rate(str(rate)) != rate:
                raise ValueError(f"rate {rate} cannot be written as N/s, N/min or N/h")
            claims["rate"] = str(rate)
        return claims

    def _sign(self, claims: dict[str, Any], *, principal_id: str) -> IssuedToken:
        token = jwt.encode(claims, self.secret, algorithm=ALGORITHM)
        return IssuedToken(
            token=token,
            expires_in=claims["exp"] - claims["iat"],
            expires_at=claims["exp"],
            credential_id=f"jwt:{claims['jti']}",
            principal_id=principal_id,
        )


def signing_secret(environ: Mapping[str, str]) -> bytes:
    """The HS256 secret: ``GATEWAY_JWT_SECRET``, else the state folder's (:func:`secret_from_file`).

    The variable's UTF-8 bytes are the secret, without surrounding
    whitespace (so a trailing newline from a file or a secret store does not
    make two gateways disagree).

    Raises:
        TokenSetupError: a secret shorter than :data:`MIN_SECRET_BYTES`, or
            a secret file that cannot be used.
    """
    given = environ.get(SECRET_VARIABLE, "").strip()
    if given:
        secret = given.encode("utf-8")
        if len(secret) < MIN_SECRET_BYTES:
            raise TokenSetupError(
                f"{SECRET_VARIABLE} is {len(secret)} bytes long; it must be at least {MIN_SECRET_BYTES} "
                f"(make one with: {_MAKE_ONE})"
            )
        return secret
    # Imported here: the store package brings SQLAlchemy, which a command
    # that never signs a token should not pay for.
    from ..store.database import state_dir

    return secret_from_file(os.path.join(state_dir(environ), SECRET_FILE))


def secret_from_file(path: str) -> bytes:
    """The secret kept in ``path``, made (32 random bytes, mode 0600, folder 0700) if the file does not exist.

    Gateways starting together agree: the file appears whole or not at all
    (written aside, then linked into place), and the first one wins.

    Raises:
        TokenSetupError: the file cannot be read or made, other users may
            read it, or it does not hold a secret of at least
            :data:`MIN_SECRET_BYTES` bytes.
    """
    try:
        text = read_or_make(path, "the token signing secret", _new_secret_text)
    except PrivateFileError as exc:
        raise TokenSetupError(str(exc)) from None
    try:
        secret = base64.urlsafe_b64decode(text + b"=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        secret = b""
    if len(secret) < MIN_SECRET_BYTES:
        raise TokenSetupError(
            f"{path} does not hold a token signing secret of {MIN_SECRET_BYTES} bytes or more "
            "(base64url); remove it to have a new one made, which ends every token issued so far"
        )
    return secret


def token_ttl(environ: Mapping[str, str]) -> int:
    """``GATEWAY_TOKEN_TTL``: a login token's lifetime in whole seconds (default :data:`DEFAULT_TTL`).

    Raises:
        TokenSetupError: not a whole number of seconds, 1 or more.
    """
    given = environ.get(TTL_VARIABLE, "").strip()
    if not given:
        return DEFAULT_TTL
    if not given.isdecimal() or int(given) < 1:
        raise TokenSetupError(f"{TTL_VARIABLE} must be a whole number of seconds, 1 or more (got {given[:40]!r})")
    return int(given)


def _new_secret_text() -> bytes:
    return base64.urlsafe_b64encode(secrets.token_bytes(MIN_SECRET_BYTES)).rstrip(b"=") + b"\n"


def _new_jti() -> str:
    return secrets.token_urlsafe(16)


def _read_chain(claims: dict[str, Any]) -> tuple[str, ...]:
    chain, parent = claims.get("chain"), claims.get("parent")
    if chain is None and parent is None:
        return ()
    if (
        not isinstance(chain, list)
        or not 1 <= len(chain) <= MAX_CHAIN
        or not all(isinstance(item, str) and item for item in chain)
        or parent != chain[-1]
    ):
        raise Refused(Refusal.BAD_CLAIM, "the token's delegation chain is not a list of ids ending in its parent")
    return tuple(chain)


def _read_tools(claims: dict[str, Any]) -> tuple[str, ...] | None:
    tools = claims.get("tools")
    if tools is None:
        return None
    if not isinstance(tools, list) or not all(isinstance(t, str) and tool_pattern_problem(t) is None for t in tools):
        raise Refused(Refusal.BAD_CLAIM, "the token's 'tools' claim is not a list of server/tool patterns")
    return tuple(tools)


def _read_shared_rates(claims: dict[str, Any], chain: tuple[str, ...]) -> tuple[tuple[str, Rate], ...]:
    value = claims.get("shared_rates")
    if value is None:
        return ()
    shared: list[tuple[str, Rate]] = []
    if chain and isinstance(value, list) and len(value) <= len(chain):
        for item in value:
            if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str) and isinstance(item[1], str)):
                break
            rate = parse_rate(item[1])
            if not item[0] or len(item[0]) > _MAX_ID or rate is None:
                break
            shared.append((item[0], rate))
        else:
            return tuple(shared)
    raise Refused(Refusal.BAD_CLAIM, "the token's 'shared_rates' claim is not a list of [principal id, rate] of its ancestors")


def _read_rate(claims: dict[str, Any]) -> Rate | None:
    text = claims.get("rate")
    if text is None:
        return None
    rate = parse_rate(text) if isinstance(text, str) else None
    if rate is None:
        raise Refused(Refusal.BAD_CLAIM, "the token's 'rate' claim is not a rate such as 120/min")
    return rate
