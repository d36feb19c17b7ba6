"""Password hashes: argon2id through ``argon2-cffi``.

Why argon2id: it is memory-hard (each guess costs an attacker 64 MiB as well
as time, which is what makes GPU and ASIC cracking expensive), it won the
Password Hashing Competition, it is OWASP's first choice for password storage
and RFC 9106's recommendation, and ``argon2-cffi`` is the well-kept binding
of the reference implementation. Its ``PasswordHasher`` defaults are RFC
9106's second recommended profile (t=3, m=64 MiB, p=4); a hash made with other
parameters is replaced at the next successful login (:func:`needs_rehash`).

Hashing is slow by design (tens of milliseconds): callers on an event loop
run it in a worker thread.
"""

from __future__ import annotations

import secrets
from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from .errors import InvalidInput

__all__ = ["MAX_LENGTH", "MIN_LENGTH", "check_password", "hash_password", "needs_rehash", "verify_password"]

#: NIST SP 800-63B's floor for a password a person chooses.
MIN_LENGTH = 8
#: Long enough for any passphrase, short enough that a request cannot make hashing its payload expensive.
MAX_LENGTH = 1024

_HASHER = PasswordHasher()


@cache
def _dummy() -> str:
    """What an unknown user's password is checked against, so that the answer
    takes as long as for a user who exists (no probing names by timing)."""
    return _HASHER.hash(secrets.token_urlsafe(16))


def check_password(password: str) -> None:
    """Refuse a password Lockgate will not store.

    Raises:
        InvalidInput: too short or too long.
    """
    if len(password) < MIN_LENGTH:
        raise InvalidInput(f"the password is too short: use at least {MIN_LENGTH} characters")
    if len(password) > MAX_LENGTH:
        raise InvalidInput(f"the password is too long: use at most {MAX_LENGTH} characters")


def hash_password(password: str) -> str:
    """The argon2id hash of ``password`` (a PHC string with its own salt and parameters)."""
    check_password(password)
    return _HASHER.hash(password)


def verify_password(stored: str | None, password: str) -> bool:
    """Does ``password`` match ``stored``? ``None`` (no such user) takes as long and is never a match."""
    if len(password) > MAX_LENGTH:
        return False
    try:
        return _HASHER.verify(_dummy() if stored is None else stored, password) and stored is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(stored: str) -> bool:
    """Was ``stored`` made with other parameters than today's (so it should be hashed again)?"""
    try:
        return _HASHER.check_needs_rehash(stored)
    except InvalidHashError:
        return True
