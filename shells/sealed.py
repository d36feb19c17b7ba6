"""Small secrets kept sealed at rest: OAuth tokens and client secrets in the identity database.

A :class:`SecretBox` seals a small JSON value with AES-256-GCM (the
``cryptography`` package) under the gateway's secret key, and opens it again.
Each value is sealed for one place, its *associated data*
(:func:`associated_data`, such as ``oauth-token``, the server and the
principal): the data is not stored in the blob, but a blob opens only with the
same data, so a sealed token copied into another row does not open there.

The key is ``GATEWAY_SECRET_KEY`` (32 bytes in base64url) when set, else the
file ``secret.key`` in the state folder, made on first use (32 random bytes,
mode 0600, in a folder made 0700) and refused when other users may read it.
Losing the key loses every sealed value (the flows that made them must run
again); anyone holding the key and the database can open them all.

A blob reads ``version (1 byte) | key id (4 bytes) | nonce (12 bytes) |
ciphertext and tag``. The key id is the start of a hash of the key, so a blob
sealed under another key is told apart from a damaged one, and a rotation can
later keep old keys by id. The version and key id are authenticated with the
associated data.

Every failure to open (another key, a changed byte, other associated data, an
unknown version) is one :class:`UnsealError`; nothing is ever returned from
a blob that did not authenticate. No exception message, ``repr`` or log
names a key or a sealed value.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import secrets
from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .locations import state_dir
from .private_files import PrivateFileError, read_or_make

__all__ = [
    "KEY_BYTES",
    "KEY_FILE",
    "KEY_VARIABLE",
    "SESSION_KEY_VARIABLE",
    "KeyRing",
    "SecretBox",
    "SecretKeyError",
    "UnsealError",
    "associated_data",
    "key_from_environ",
    "key_from_file",
]

KEY_VARIABLE = "GATEWAY_SECRET_KEY"
#: The keys of Streamable HTTP session ids: the current one, then those still accepted (see :class:`KeyRing`).
SESSION_KEY_VARIABLE = "GATEWAY_SESSION_KEY"
KEY_FILE = "secret.key"
KEY_BYTES = 32

_VERSION = 1
_KEY_ID_BYTES = 4
_NONCE_BYTES = 12
_TAG_BYTES = 16
_HEADER_BYTES = 1 + _KEY_ID_BYTES
_SMALLEST = _HEADER_BYTES + _NONCE_BYTES + _TAG_BYTES
#: What "small" means: a token response or a client registration is a few
#: kilobytes at most; anything far larger is a mistake, not a value to seal.
MAX_VALUE_BYTES = 64 * 1024
#: 32 bytes in base64url: 43 characters, and an optional "=" of padding.
_KEY_TEXT = re.compile(rb"[A-Za-z0-9_-]{43}=?")
_MAKE_ONE = "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"


class SecretKeyError(Exception):
    """The secret key cannot be had: a bad ``GATEWAY_SECRET_KEY``, or a key file that cannot be used.

    ``str()`` is one line for the operator, naming the variable or the file
    and what to do; never the key.
    """


class UnsealError(Exception):
    """A sealed value did not open: another key, a damaged or altered blob, or other associated data.

    ``str()`` says which of these it can tell, never anything of the value.
    """


def associated_data(kind: str, *parts: str) -> bytes:
    """What binds a sealed value to where it is kept: ``kind``, then each part, NUL-separated, in UTF-8.

    ``associated_data("oauth-token", server, principal)`` is
    ``b"oauth-token\\0" + server + b"\\0" + principal``. A part may be empty
    (the gateway-wide principal is ``""``), but none may hold a NUL, which
    would let two different places share the same bytes.

    Raises:
        ValueError: ``kind`` is empty, or a part holds a NUL.
    """
    if not kind:
        raise ValueError("the kind of a sealed value's place must not be empty")
    fields = (kind, *parts)
    if any("\0" in field for field in fields):
        raise ValueError("a sealed value's place cannot hold a NUL character")
    return b"\0".join(field.encode("utf-8") for field in fields)


class SecretBox:
    """Seals and opens small JSON values under one 32-byte key (see the module docstring).

    Make one with :meth:`from_environ` (the variable or the state folder's
    key file) or from the key's bytes. Thread-safe: it keeps nothing but the key.
    """

    __slots__ = ("_aead", "_key_id")

    def __init__(self, key: bytes) -> None:
        """A box for ``key``, exactly :data:`KEY_BYTES` bytes.

        Raises:
            ValueError: another length.
        """
        if len(key) != KEY_BYTES:
            raise ValueError(f"a secret key is {KEY_BYTES} bytes, not {len(key)}")
        self._aead = AESGCM(key)
        self._key_id = _key_id(key)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> SecretBox:
        """The gateway's box: :func:`key_from_environ`.

        Raises:
            SecretKeyError: see :func:`key_from_environ`.
        """
        return cls(key_from_environ(environ))

    @property
    def key_id(self) -> str:
        """The key's public id, in hex: the start of a hash of the key, not the key."""
        return self._key_id.hex()

    def __repr__(self) -> str:
        return f"SecretBox(key id {self.key_id})"

    def seal(self, value: Any, associated: bytes) -> bytes:
        """``value`` (anything :func:`json.dumps` takes, without NaN or infinities) sealed for ``associated``.

        Each call draws a fresh random nonce, so sealing the same value twice
        gives two different blobs.

        Raises:
            ValueError: ``value`` is not JSON, or larger than :data:`MAX_VALUE_BYTES`.
        """
        try:
            plain = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")
        except (TypeError, ValueError):
            # The message of json's own error may quote the value: say only what kind of thing it was.
            raise ValueError(f"only JSON values can be sealed: this {type(value).__name__} is not one, or holds something that is not") from None
        if len(plain) > MAX_VALUE_BYTES:
            raise ValueError(f"a sealed value is at most {MAX_VALUE_BYTES} bytes of JSON, not {len(plain)}")
        header = bytes([_VERSION]) + self._key_id
        nonce = secrets.token_bytes(_NONCE_BYTES)
        return header + nonce + self._aead.encrypt(nonce, plain, header + associated)

    def open(self, blob: bytes, associated: bytes) -> Any:
        """The value sealed in ``blob`` for ``associated``.

        Raises:
            UnsealError: anything but a blob this key sealed, unchanged, for
                exactly ``associated``.
        """
        if len(blob) < _SMALLEST:
            raise UnsealError("the sealed value is damaged: too short to be one")
        version = blob[0]
        if version != _VERSION:
            raise UnsealError(f"the sealed value has format version {version}, which this Lockgate does not know")
        header, nonce, sealed = blob[:_HEADER_BYTES], blob[_HEADER_BYTES:_HEADER_BYTES + _NONCE_BYTES], blob[_HEADER_BYTES + _NONCE_BYTES:]
        if header[1:] != self._key_id:
            raise UnsealError(f"the value was sealed under another secret key than {KEY_VARIABLE} or {KEY_FILE} holds now")
        try:
            plain = self._aead.decrypt(nonce, sealed, header + associated)
        except InvalidTag:
            raise UnsealError("the sealed value does not open: it was altered, or sealed for another place") from None
        try:
            return json.loads(plain.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):  # pragma: no cover - only this class seals, and it seals JSON
            raise UnsealError("the sealed value opened but is not JSON") from None


class KeyRing:
    """Several boxes for a rotation with an overlap window: seals under the first, opens under any.

    A blob names its key (the key id in its header), so opening picks the
    box of that key at once; a blob of a key no longer on the ring is an
    :class:`UnsealError`, like any other that does not open.
    """

    __slots__ = ("_boxes", "current")

    def __init__(self, boxes: list[SecretBox]) -> None:
        """A ring of ``boxes``, the first the current one.

        Raises:
            ValueError: no box.
        """
        if not boxes:
            raise ValueError("a key ring holds at least one key")
        self.current = boxes[0]
        self._boxes = {box._key_id: box for box in reversed(boxes)}

    @property
    def key_ids(self) -> list[str]:
        """The public ids of the keys it opens with, the current one first."""
        return [self.current.key_id, *(box.key_id for box in self._boxes.values() if box is not self.current)]

    def __repr__(self) -> str:
        return f"KeyRing(key ids {', '.join(self.key_ids)})"

    def seal(self, value: Any, associated: bytes) -> bytes:
        """:meth:`SecretBox.seal` under the current key."""
        return self.current.seal(value, associated)

    def open(self, blob: bytes, associated: bytes) -> Any:
        """:meth:`SecretBox.open` under whichever key of the ring sealed ``blob``.

        Raises:
            UnsealError: as :meth:`SecretBox.open`; a key no longer on the ring included.
        """
        box = self._boxes.get(blob[1:_HEADER_BYTES]) if len(blob) >= _SMALLEST else None
        return (box or self.current).open(blob, associated)

    @classmethod
    def for_sessions(cls, environ: Mapping[str, str]) -> KeyRing | None:
        """The keys of session ids: ``GATEWAY_SESSION_KEY``, else the secret key if there is one; else ``None``.

        ``GATEWAY_SESSION_KEY`` is one key (32 bytes in base64url), or
        several separated by commas: ids are sealed under the first and
        open under any, which is how a key is rotated with an overlap (put
        the new key first and keep the old one second until the ids it
        sealed have expired, then drop it).

        Unset, the secret key seals them (:func:`key_from_environ`) when it
        is configured: ``GATEWAY_SECRET_KEY``, or a state folder that
        exists, whose ``secret.key`` is then made if missing (gateways
        sharing the folder agree on it). ``None``: neither, and nothing is
        made for it; the caller then keeps a key of its process alone.

        Raises:
            SecretKeyError: a key of the variable is not 32 bytes of
                base64url (the message says which one, by position), or
                the secret key cannot be had.
        """
        given = environ.get(SESSION_KEY_VARIABLE, "").strip()
        if not given:
            if environ.get(KEY_VARIABLE, "").strip() or os.path.isdir(state_dir(environ)):
                return cls([SecretBox(key_from_environ(environ))])
            return None
        boxes: list[SecretBox] = []
        for position, text in enumerate(given.split(","), start=1):
            key = _decode_key(text.strip().encode("ascii", errors="replace"))
            if key is None:
                raise SecretKeyError(
                    f"{SESSION_KEY_VARIABLE} must be keys of {KEY_BYTES} bytes in base64url (43 characters each), "
                    f"separated by commas, and its key {position} is not; make one with: {_MAKE_ONE}"
                )
            boxes.append(SecretBox(key))
        return cls(boxes)


def key_from_environ(environ: Mapping[str, str]) -> bytes:
    """The secret key: ``GATEWAY_SECRET_KEY`` when set, else :func:`key_from_file` in the state folder.

    The variable is 32 bytes in base64url (padding optional), without
    surrounding whitespace.

    Raises:
        SecretKeyError: the variable is not 32 bytes of base64url (the
            message names it, and says how to make one), or the key file
            cannot be used.
    """
    given = environ.get(KEY_VARIABLE, "").strip()
    if given:
        key = _decode_key(given.encode("ascii", errors="replace"))
        if key is None:
            # Its length is no secret; its characters are, so none are quoted.
            raise SecretKeyError(
                f"{KEY_VARIABLE} must be {KEY_BYTES} bytes in base64url, 43 characters, and it is not "
                f"({len(given)} characters); make one with: {_MAKE_ONE}"
            )
        return key
    return key_from_file(os.path.join(state_dir(environ), KEY_FILE))


def key_from_file(path: str) -> bytes:
    """The key kept in ``path``: made (32 random bytes, mode 0600, folder 0700) if the file does not exist.

    Gateways starting together agree: the file appears whole or not at all
    (written aside, then linked into place), and the first one wins.

    Raises:
        SecretKeyError: the file cannot be read or made, users other than
            its owner may use it, or it does not hold a key.
    """
    try:
        text = read_or_make(path, "the secret key that seals OAuth tokens", _new_key_text)
    except PrivateFileError as exc:
        raise SecretKeyError(str(exc)) from None
    key = _decode_key(text)
    if key is None:
        raise SecretKeyError(
            f"{path} does not hold a secret key ({KEY_BYTES} bytes in base64url); remove it to have a new "
            "one made, which loses every sealed OAuth token and client secret"
        )
    return key


def _decode_key(text: bytes) -> bytes | None:
    """32 bytes from their base64url text (padding optional), else ``None``."""
    if not _KEY_TEXT.fullmatch(text):
        return None
    key = base64.urlsafe_b64decode(text.rstrip(b"=") + b"=")
    return key if len(key) == KEY_BYTES else None


def _new_key_text() -> bytes:
    return base64.urlsafe_b64encode(secrets.token_bytes(KEY_BYTES)).rstrip(b"=") + b"\n"


def _key_id(key: bytes) -> bytes:
    # A hash under a label of its own, so that the id says nothing usable about the key.
    return hashlib.sha256(b"lockgate secret key id\0" + key).digest()[:_KEY_ID_BYTES]
