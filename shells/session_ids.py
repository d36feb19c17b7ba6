"""Streamable HTTP session ids that carry their session, sealed, so that any gateway holding the key continues it.

A handshake-era session is settled by its ``initialize``: the protocol
version, the client's capabilities, the agent and the mode
(:class:`~lockgate.core.SessionRecord`). The id the gateway hands out in
``Mcp-Session-Id`` is that record, with the principal whose credential
opened the session, when it was made and when it expires, sealed with
AES-256-GCM (:class:`~.sealed.KeyRing`, associated data ``mcp-session``) and
written in base64url without padding: visible ASCII, as the spec asks of a
session id. A gateway that gets a request for a session it does not hold
opens the id and, if it authenticates, has not expired and belongs to the
request's credential, continues the session from it without another
``initialize`` (``ClientOpened(restored=...)``).

The sealing's random 96-bit nonce makes every id different and, with the
authentication tag, impossible to guess or forge without the key. Nothing in
it is secret from the client that holds it but the key; it is encrypted so
that a proxy or a log that sees the header learns nothing of the session.

The plaintext is a JSON array, ``[1, version, capabilities, principal,
agent, mode, created, expires]`` (times in whole Unix seconds), so an id is
about 130 characters, plus the size of the client's capabilities (about 190
for a client that declares sampling and roots).

What is not in the id is not continued: the session's open SSE streams, its
calls in flight, its event buffers (``Last-Event-ID``) and its
``logging/setLevel`` stay with the gateway that had them.

An id ended here (DELETE, or idle for ``session_ttl``) is remembered until
it expires, so that this gateway does not continue it again; another
gateway cannot know, and would continue it until then. ``session_lifetime``
bounds that window.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from lockgate.core import SessionRecord
from lockgate.core._eras import HANDSHAKE_VERSIONS

from .logs import get_logger
from .sealed import KeyRing, SecretBox, SecretKeyError, UnsealError, associated_data

__all__ = ["MAX_ID_CHARACTERS", "SessionClaims", "SessionIds"]

_log = get_logger("http")

#: Format of the sealed array (its first item).
_FORMAT = 1
#: Where a session id's blob is sealed for: nothing else of the gateway's opens as one.
_PLACE = associated_data("mcp-session")
#: An id longer than this is not one of ours (a header that large is refused long before, anyway).
MAX_ID_CHARACTERS = 4096
_BASE64URL = re.compile(r"[A-Za-z0-9_-]+")
_MODES = ("on_demand", "aggregate")


@dataclass(frozen=True, slots=True)
class SessionClaims:
    """What an id says, once it opened: the session's record, whose it is, and its lifetime (Unix seconds)."""

    record: SessionRecord
    principal_id: str | None
    created: float
    expires: float


class SessionIds:
    """Mints and opens sealed session ids (see the module docstring); remembers those ended here."""

    def __init__(self, keys: KeyRing | Callable[[], KeyRing | None], lifetime: float, clock: Callable[[], float] = time.time) -> None:
        """Ids sealed under ``keys`` (a ring, or what makes one when first needed), valid ``lifetime`` seconds.

        ``keys`` returning ``None`` (no key configured) or raising
        :class:`~.sealed.SecretKeyError` leaves a key of this process alone:
        its sessions then live and die with it, as unsealed ones would.
        """
        self._keys = keys
        self._ring: KeyRing | None = keys if isinstance(keys, KeyRing) else None
        self.lifetime = lifetime
        self._clock = clock
        #: Ids ended here, until they expire: never continued again by this gateway.
        self._ended: dict[str, float] = {}
        self._prune_at = 1024

    @classmethod
    def from_environ(cls, environ: Mapping[str, str], lifetime: float) -> SessionIds:
        """Ids under ``GATEWAY_SESSION_KEY``, else the secret key (:meth:`.sealed.KeyRing.for_sessions`), read at first use."""
        return cls(lambda: KeyRing.for_sessions(environ), lifetime)

    def ring(self) -> KeyRing:
        """The keys, read (or made) at first use."""
        if self._ring is None:
            assert not isinstance(self._keys, KeyRing)
            try:
                ring = self._keys()
            except SecretKeyError as exc:
                _log.warning(f"session ids are sealed under a key of this process alone, so no other gateway continues its sessions: {exc}")
                ring = None
            else:
                if ring is None:
                    _log.info(
                        "session ids are sealed under a key of this process alone: set GATEWAY_SESSION_KEY "
                        "(or GATEWAY_SECRET_KEY) for other gateways to continue its sessions"
                    )
            self._ring = ring if ring is not None else KeyRing([SecretBox(secrets.token_bytes(32))])
        return self._ring

    def mint(self, record: SessionRecord, principal_id: str | None) -> tuple[str, float]:
        """A new id for the session ``record`` describes, which ``principal_id`` opened (``None``: no credential), and when it expires."""
        created = int(self._clock())
        expires = created + max(1, round(self.lifetime))
        plain = [
            _FORMAT, record.protocol_version, dict(record.capabilities), principal_id, record.agent, record.mode, created, expires,
        ]
        return _text(self.ring().seal(plain, _PLACE)), float(expires)

    def open(self, session_id: str) -> SessionClaims | None:
        """What ``session_id`` says, or ``None``: not an id of these keys, altered, expired, or ended here."""
        if len(session_id) > MAX_ID_CHARACTERS or not _BASE64URL.fullmatch(session_id) or session_id in self._ended:
            return None
        try:
            blob = base64.urlsafe_b64decode(session_id + "=" * (-len(session_id) % 4))
        except (binascii.Error, ValueError):
            return None  # a length no base64 has
        if _text(blob) != session_id:
            # The last character's spare bits: another spelling of the same bytes, which would
            # be another key of the sessions held and of the ids ended. One spelling opens.
            return None
        try:
            value = self.ring().open(blob, _PLACE)
        except UnsealError:
            return None
        claims = _claims(value)
        if claims is None or claims.expires <= self._clock():
            return None
        return claims

    def ended(self, session_id: str, expires: float | None = None) -> None:
        """``session_id`` ended here: this gateway does not continue it again before it expires."""
        if expires is None:
            claims = self.open(session_id)
            if claims is None:
                return  # not one of ours, or expired already: nothing would continue it
            expires = claims.expires
        self._ended[session_id] = expires
        if len(self._ended) >= self._prune_at:
            now = self._clock()
            self._ended = {ended: until for ended, until in self._ended.items() if until > now}
            # Pruned when it has doubled since: the cost per id ended stays constant.
            self._prune_at = max(1024, 2 * len(self._ended))


def _text(blob: bytes) -> str:
    """``blob`` in base64url without padding: the one spelling of it an id may have."""
    return base64.urlsafe_b64encode(blob).rstrip(b"=").decode("ascii")


def _claims(value: Any) -> SessionClaims | None:
    """The claims of an opened array; ``None`` for one of another format (a later Lockgate's)."""
    if not (isinstance(value, list) and len(value) == 8 and value[0] == _FORMAT):
        return None
    _, version, capabilities, principal, agent, mode, created, expires = value
    if version not in HANDSHAKE_VERSIONS or mode not in _MODES or not isinstance(capabilities, dict):
        return None
    if not (principal is None or isinstance(principal, str)) or not (agent is None or isinstance(agent, str)):
        return None
    if not all(isinstance(t, int) and not isinstance(t, bool) for t in (created, expires)):
        return None
    record = SessionRecord(protocol_version=version, capabilities=capabilities, agent=agent, mode=mode)
    return SessionClaims(record=record, principal_id=principal, created=float(created), expires=float(expires))
