"""The checks every bearer token passes, whoever issued it: size, shape, header, signature, claims, times.

The verifiers (:mod:`.tokens` for Lockgate's own tokens, :mod:`.external`
for an external issuer's) differ in keys and in how claims map to a
principal; what they share is here. The rules, after RFC 8725 (JWT best
current practices):

- the size is capped before anything is decoded (:data:`MAX_TOKEN_BYTES`);
- the algorithm is the verifier's, never the token's: the header's ``alg``
  must be the one algorithm the key is for, so ``none``, and an HMAC token
  offered to an RSA verifier (or the reverse), are refused by name before
  any signature is computed (RFC 8725 §2.1, §3.1);
- headers Lockgate does not understand and must not ignore (``crit``,
  ``b64``, RFC 7515 §4.1.11) are refused;
- ``exp`` is required; ``exp``, ``nbf`` and ``iat`` are checked against the
  ``now`` the caller passes, with a small leeway for clock skew, and must be
  finite numbers (JSON as Python reads it allows ``NaN``, which compares
  false with everything and so would never expire).

Failures raise :class:`Refused`, which a verifier turns into its
:class:`~.credentials.TokenRefused` answer at its boundary.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Sequence
from typing import Any

import jwt
from jwt.api_jwk import PyJWK
from jwt.exceptions import InvalidJTIError, InvalidSubjectError

from lockgate.core import Role, grant_problem

from .credentials import Refusal, TokenRefused

__all__ = [
    "DEFAULT_LEEWAY",
    "MAX_TOKEN_BYTES",
    "Refused",
    "check_times",
    "decode",
    "read_grants",
    "read_header",
    "read_role",
    "read_string",
    "unverified_claims",
]

#: The largest token read, in bytes: far above any real one, small enough that
#: decoding a hostile one costs nothing.
MAX_TOKEN_BYTES = 8 * 1024
#: Seconds of clock skew forgiven on ``exp``, ``nbf`` and ``iat``.
DEFAULT_LEEWAY = 30.0
#: Three base64url segments; the signature may be empty only to be refused by name (``alg: none``).
_SHAPE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
_GRANTS_AT_MOST = 256


class Refused(Exception):
    """A token fails a check; :attr:`answer` is what the verifier returns."""

    def __init__(self, reason: Refusal, detail: str) -> None:
        super().__init__(detail)
        self.answer = TokenRefused(reason, detail)


def read_header(token: str) -> dict[str, Any]:
    """The token's JOSE header, once its size and shape pass; nothing is verified yet.

    Raises:
        Refused: too large, not three base64url segments, or a header that is
            not a JSON object with a string ``alg``, or that carries ``crit``
            or ``b64``.
    """
    if len(token) > MAX_TOKEN_BYTES:
        raise Refused(Refusal.TOO_LARGE, f"the token is larger than {MAX_TOKEN_BYTES} bytes")
    if not _SHAPE.fullmatch(token):
        raise Refused(Refusal.MALFORMED, "not a JWT (three base64url segments separated by dots)")
    header = _segment(token.split(".", 1)[0], "header")
    alg = header.get("alg")
    if not isinstance(alg, str) or not alg:
        raise Refused(Refusal.MALFORMED, "the token's header names no algorithm")
    for name in ("crit", "b64"):
        if name in header:
            raise Refused(Refusal.MALFORMED, f"the token's header uses {name!r}, which Lockgate does not support")
    kid = header.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise Refused(Refusal.MALFORMED, "the token's key id (kid) is not a string")
    return header


def unverified_claims(token: str) -> dict[str, Any]:
    """The claims of a token whose header passes :func:`read_header`, unverified: only to choose a verifier.

    Raises:
        Refused: as :func:`read_header`, or a payload that is not a JSON object.
    """
    read_header(token)
    return _segment(token.split(".", 2)[1], "payload")


def decode(
    token: str,
    *,
    key: bytes | PyJWK,
    algorithm: str,
    issuer: str,
    audience: str,
    now: float,
    leeway: float,
    required: Sequence[str],
) -> dict[str, Any]:
    """The claims of ``token``, once its signature under ``key`` with ``algorithm`` and its claims are checked.

    ``required`` names the claims that must be present besides ``iss``,
    ``aud`` and ``exp``, which always must.

    Raises:
        Refused: any check fails.
    """
    header = read_header(token)
    if header["alg"] != algorithm:
        # Named here rather than left to PyJWT: the header's algorithm is
        # attacker-chosen, and the answer should say that it was not used.
        raise Refused(Refusal.ALGORITHM_NOT_ALLOWED, f"algorithm {_short(header['alg'])!r} is not accepted")
    # One parser per call: PyJWT's module-level instance holds options that
    # other code in the process could change.
    parser = jwt.PyJWT(
        {
            "verify_signature": True,
            # Times are checked by check_times against the caller's clock.
            "verify_exp": False,
            "verify_nbf": False,
            "verify_iat": False,
            "verify_aud": True,
            "verify_iss": True,
            "verify_sub": True,
            "verify_jti": True,
            "require": sorted({"iss", "aud", "exp", *required}),
            "enforce_minimum_key_length": True,
        }
    )
    try:
        claims = parser.decode(token, key=key, algorithms=[algorithm], issuer=issuer, audience=audience)
    except jwt.InvalidSignatureError:
        raise Refused(Refusal.BAD_SIGNATURE, "the signature does not verify") from None
    except jwt.InvalidAlgorithmError:
        raise Refused(Refusal.ALGORITHM_NOT_ALLOWED, f"algorithm {_short(header['alg'])!r} is not accepted") from None
    except jwt.InvalidAudienceError:
        raise Refused(Refusal.WRONG_AUDIENCE, "the token is meant for another audience (aud)") from None
    except jwt.InvalidIssuerError:
        raise Refused(Refusal.WRONG_ISSUER, "the token is from another issuer (iss)") from None
    except jwt.MissingRequiredClaimError as exc:
        raise Refused(Refusal.MISSING_CLAIM, f"the token has no {_short(exc.claim)!r} claim") from None
    except (InvalidSubjectError, InvalidJTIError):
        raise Refused(Refusal.BAD_CLAIM, "the token's sub or jti is not a string") from None
    except jwt.InvalidKeyError:
        raise Refused(Refusal.BAD_SIGNATURE, "the key cannot verify this token") from None
    except (jwt.PyJWTError, ValueError, TypeError, OverflowError, RecursionError):
        raise Refused(Refusal.MALFORMED, "the token cannot be decoded") from None
    check_times(claims, now=now, leeway=leeway)
    return claims


def check_times(claims: dict[str, Any], *, now: float, leeway: float) -> None:
    """``exp`` (required), ``nbf`` and ``iat`` (when present) against ``now``, give or take ``leeway`` seconds.

    Raises:
        Refused: expired, not valid yet, or a time that is not a finite number.
    """
    exp = _time(claims, "exp")
    if exp is None:
        raise Refused(Refusal.MISSING_CLAIM, "the token has no 'exp' claim")
    if exp <= now - leeway:
        raise Refused(Refusal.EXPIRED, "the token has expired")
    for name in ("nbf", "iat"):
        moment = _time(claims, name)
        if moment is not None and moment > now + leeway:
            raise Refused(Refusal.NOT_YET_VALID, f"the token is not valid yet ({name})")


def read_string(claims: dict[str, Any], name: str) -> str:
    """The non-empty string claim ``name``.

    Raises:
        Refused: missing, or not a non-empty string.
    """
    value = claims.get(name)
    if value is None:
        raise Refused(Refusal.MISSING_CLAIM, f"the token has no {name!r} claim")
    if not isinstance(value, str) or not value:
        raise Refused(Refusal.BAD_CLAIM, f"the token's {name!r} claim is not a non-empty string")
    return value


def read_role(value: object, claim: str) -> Role:
    """A role claim: ``admin`` or ``user``.

    Raises:
        Refused: anything else; a role Lockgate does not know is never mapped
            to one it does.
    """
    if value == "admin" or value == "user":
        return value
    raise Refused(Refusal.BAD_CLAIM, f"the token's {claim!r} claim is not a Lockgate role (admin or user)")


def read_grants(value: object, claim: str) -> tuple[str, ...]:
    """Agent grants from a claim: a list of strings or one space-separated string, each a grant.

    Raises:
        Refused: another type, or an entry that is not a grant (so a typo
            never becomes a wider grant).
    """
    if isinstance(value, str):
        items: list[object] = list(value.split())
    elif isinstance(value, list):
        items = value
    else:
        raise Refused(Refusal.BAD_CLAIM, f"the token's {claim!r} claim is not a list of agents")
    if len(items) > _GRANTS_AT_MOST or not all(isinstance(item, str) and grant_problem(item) is None for item in items):
        raise Refused(Refusal.BAD_CLAIM, f"the token's {claim!r} claim holds something that is not an agent grant")
    return tuple(dict.fromkeys(str(item) for item in items))


def _segment(segment: str, name: str) -> dict[str, Any]:
    try:
        value = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (binascii.Error, ValueError, RecursionError):
        raise Refused(Refusal.MALFORMED, f"the token's {name} is not base64url-encoded JSON") from None
    if not isinstance(value, dict):
        raise Refused(Refusal.MALFORMED, f"the token's {name} is not a JSON object")
    return value


def _time(claims: dict[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    try:
        moment = float(value) if isinstance(value, int | float) and not isinstance(value, bool) else math.nan
    except OverflowError:
        moment = math.nan
    if not math.isfinite(moment):
        raise Refused(Refusal.BAD_CLAIM, f"the token's {name!r} claim is not a time (seconds since the epoch)")
    return moment


def _short(value: object) -> str:
    """A token-supplied value cut short for a message: an attacker chooses it, a log line should stay a line."""
    text = str(value)
    if len(text) <= 40 and text.isprintable():
        return text
    return text[:40].encode("unicode_escape").decode("ascii") + "…"
