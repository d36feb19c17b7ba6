"""API key secrets: their shape, how they are made, and the hash the database keeps instead.

A secret reads ``lg_3f9a1c2b_<43 characters>``: the ``lg_`` prefix says what
it is (to a person, and to secret scanners), ``3f9a1c2b`` is the key id, the
public name under which the key is stored, listed and revoked, and the rest is
32 bytes from :mod:`secrets` in base64url, 256 bits an attacker must guess.
The key id inside the secret makes a lookup one indexed row, not a scan.

The database keeps only ``sha256(secret)``. A fast hash is right here,
unlike for passwords: the secret is 256 random bits, so there is nothing to
guess from a stolen hash faster than the secret itself, and a slow hash would
only make every authenticated request slow.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass, field

__all__ = ["PREFIX", "ParsedSecret", "new_key_id", "new_secret", "parse_secret", "secret_hash", "secret_matches"]

PREFIX = "lg_"
_KEY_ID_CHARS = 8
_RANDOM_BYTES = 32
#: ``lg_``, 8 hex characters, ``_``, then 32 bytes of unpadded base64url.
_SHAPE = re.compile(r"lg_([0-9a-f]{8})_([A-Za-z0-9_-]{43})")
_LENGTH = len(PREFIX) + _KEY_ID_CHARS + 1 + 43


@dataclass(frozen=True, slots=True)
class ParsedSecret:
    """A string of the right shape: its key id, and the whole secret (kept out of ``repr``)."""

    key_id: str
    secret: str = field(repr=False)


def new_key_id() -> str:
    """A fresh public key id: 8 lowercase hex characters."""
    return secrets.token_hex(_KEY_ID_CHARS // 2)


def new_secret(key_id: str) -> str:
    """A fresh secret for ``key_id``."""
    return f"{PREFIX}{key_id}_{secrets.token_urlsafe(_RANDOM_BYTES)}"


def parse_secret(candidate: str) -> ParsedSecret | None:
    """``candidate`` if it has a secret's shape, else ``None``; the length is checked before anything else."""
    if len(candidate) != _LENGTH:
        return None
    match = _SHAPE.fullmatch(candidate)
    return None if match is None else ParsedSecret(match.group(1), candidate)


def secret_hash(secret: str) -> str:
    """What the database keeps for ``secret``: its SHA-256, in hex."""
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


def secret_matches(secret: str, stored_hash: str) -> bool:
    """Does ``secret`` hash to ``stored_hash``? Compared in constant time."""
    return hmac.compare_digest(secret_hash(secret), stored_hash)
