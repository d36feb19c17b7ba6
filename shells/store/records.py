"""What the store hands out: users, keys, a login's outcome and a snapshot for a gateway's cache.

None of them holds a secret. A :class:`KeyRecord` carries the SHA-256 of its
secret (kept out of ``repr``), which is what lets a cache check a presented
secret without a database read: the hash of 256 random bits gives nothing
away (see :mod:`.apikeys`). Password hashes never leave the store.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from lockgate.core import Role

from .apikeys import parse_secret, secret_matches

__all__ = ["KeyRecord", "KeyState", "LoginResult", "Snapshot", "UserRecord"]

#: Why a key whose secret matched may still not be used.
KeyState = Literal["active", "revoked", "expired", "owner disabled"]


@dataclass(frozen=True, slots=True, kw_only=True)
class UserRecord:
    """A user, without the password hash."""

    name: str
    role: Role
    disabled: bool
    created_at: datetime
    last_login_at: datetime | None

    @property
    def principal_id(self) -> str:
        """How audit records, logs and metrics name this user: ``user:<name>``."""
        return f"user:{self.name}"


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyRecord:
    """An API key, without its secret.

    ``role`` is the key's effective role: a key owned by a user never has
    more than that user's role, so demoting a user demotes their keys.
    ``user`` is the owner's name (``None``: a key that stands alone) and
    ``owner_disabled`` whether that user is disabled, which stops the key
    too. Times are aware UTC datetimes.
    """

    key_id: str
    name: str
    role: Role
    agents: tuple[str, ...]
    user: str | None
    owner_disabled: bool
    expires_at: datetime | None
    rate: str | None
    revoked: bool
    revoked_at: datetime | None
    created_at: datetime
    last_used_at: datetime | None
    secret_hash: str = field(repr=False)

    @property
    def principal_id(self) -> str:
        """How audit records, logs and metrics name this key: ``key:<key_id>``."""
        return f"key:{self.key_id}"

    def state(self, now: datetime) -> KeyState:
        """Whether the key may be used at ``now``, and if not, why (revoked first, then expired, then its owner)."""
        if self.revoked:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        if self.owner_disabled:
            return "owner disabled"
        return "active"

    def matches(self, secret: str) -> bool:
        """Is ``secret`` this key's secret? Shape first, then the hash, compared in constant time."""
        parsed = parse_secret(secret)
        return parsed is not None and parsed.key_id == self.key_id and secret_matches(secret, self.secret_hash)


@dataclass(frozen=True, slots=True)
class LoginResult:
    """The outcome of a password check: the user, or why not (for the audit record, not for the caller)."""

    user: UserRecord | None
    refusal: Literal["unknown user", "wrong password", "user disabled"] | None = None

    @property
    def ok(self) -> bool:
        return self.user is not None and self.refusal is None


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Every user and key (no secrets) and every revoked token id, as of ``marker``.

    A gateway keeps one in memory and reads a new one when
    :meth:`~lockgate.shells.store.Store.change_marker` no longer equals
    ``marker``. The marker was read before the tables, so a change that
    lands in between makes the snapshot newer than its marker, never older:
    at worst it is read once more.
    """

    marker: int
    users: Mapping[str, UserRecord]
    keys: Mapping[str, KeyRecord]
    revoked_tokens: frozenset[str]

    def lookup(self, secret: str) -> KeyRecord | None:
        """The key whose secret this is (in whatever :meth:`KeyRecord.state`), else ``None``; no database read."""
        parsed = parse_secret(secret)
        if parsed is None:
            return None
        record = self.keys.get(parsed.key_id)
        return record if record is not None and secret_matches(secret, record.secret_hash) else None
