"""An external issuer's public keys: a JWKS read from a file at start, or fetched from a URL and cached.

Only signing keys of three kinds are kept, each bound to its one algorithm
(RFC 8725 §3.1: the key, not the token, says how it verifies): RSA of 2048
bits or more for RS256, EC on P-256 for ES256, Ed25519 for EdDSA. A key
whose ``alg`` or ``use`` says otherwise, a symmetric (``oct``) key, or one
that carries private parts is left out, and the set says why
(:attr:`KeySet.skipped`), so an operator sees what a key set is missing.

A URL is fetched with httpx, ``https`` only (``http`` is accepted for a
loopback address), without following redirects, bounded in time and size.
:class:`RemoteKeySet` keeps the keys for :data:`DEFAULT_JWKS_TTL` seconds; a
token naming a key it does not know refetches at most once per
:data:`MIN_REFRESH_INTERVAL` seconds (issuers rotate keys; attackers send
made-up key ids), and tasks that need keys at the same moment share one
fetch. Keys it cannot fetch, or that have aged past their lifetime without
a successful refetch, fail closed: tokens are refused as
``keys_unavailable``.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

import httpx
import trio
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.api_jwk import PyJWK
from jwt.exceptions import PyJWTError

from .credentials import Refusal, TokenRefused

__all__ = [
    "ALGORITHMS",
    "DEFAULT_JWKS_TTL",
    "MAX_JWKS_BYTES",
    "MIN_REFRESH_INTERVAL",
    "JwksError",
    "KeySet",
    "KeySource",
    "RemoteKeySet",
    "StaticKeySet",
    "VerificationKey",
    "load_jwks_file",
    "parse_jwks",
]

#: The algorithms external tokens may use, one per key kind.
ALGORITHMS = ("RS256", "ES256", "EdDSA")
#: Seconds fetched keys are used before they are fetched again.
DEFAULT_JWKS_TTL = 3600.0
#: The least time between two fetches for a key id the set does not know.
MIN_REFRESH_INTERVAL = 60.0
#: The least time between a failed fetch and the next attempt.
RETRY_AFTER_FAILURE = 10.0
#: Seconds a fetch may take, all told.
FETCH_TIMEOUT = 10.0
MAX_JWKS_BYTES = 1024 * 1024
_MIN_RSA_BITS = 2048


class JwksError(Exception):
    """A key set that cannot be read or fetched; ``str()`` is one line for the operator."""


@dataclass(frozen=True, slots=True)
class VerificationKey:
    """One public key and the one algorithm it verifies."""

    kid: str | None
    algorithm: str
    key: PyJWK


@dataclass(frozen=True, slots=True)
class KeySet:
    """Usable keys by id, and what was left out of the JWKS and why."""

    keys: tuple[VerificationKey, ...]
    skipped: tuple[str, ...] = ()

    def find(self, kid: str | None) -> VerificationKey | None:
        """The key ``kid`` names; a token naming none may use the set's only key."""
        if kid is None:
            return self.keys[0] if len(self.keys) == 1 else None
        return next((key for key in self.keys if key.kid == kid), None)


class KeySource(Protocol):
    """Where a verifier gets the key a token names."""

    async def key_for(self, kid: str | None) -> VerificationKey | TokenRefused:
        """The key ``kid`` names, fetched if need be, or why there is none (``unknown_key``, ``keys_unavailable``)."""
        ...

    def key_in_hand(self, kid: str | None) -> VerificationKey | TokenRefused:
        """The key ``kid`` names among the keys held now, without any I/O, or why there is none."""
        ...


def parse_jwks(data: bytes | str, *, source: str) -> KeySet:
    """The usable signing keys of a JWKS document (``{"keys": [...]}``); ``source`` names it in messages.

    Raises:
        JwksError: not a JWKS, or not one usable key in it.
    """
    try:
        document = json.loads(data)
    except (ValueError, RecursionError):
        raise JwksError(f"the key set from {source} is not JSON") from None
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise JwksError(f"the key set from {source} is not a JWKS (an object with a 'keys' list)")
    keys: list[VerificationKey] = []
    skipped: list[str] = []
    for index, entry in enumerate(entries):
        found = _key(entry)
        if isinstance(found, str):
            skipped.append(f"key {index}{_kid_note(entry)}: {found}")
        elif found.kid is not None and any(key.kid == found.kid for key in keys):
            skipped.append(f"key {index}{_kid_note(entry)}: another key has the same kid")
        else:
            keys.append(found)
    if not keys:
        why = f" ({'; '.join(skipped)})" if skipped else ""
        raise JwksError(f"the key set from {source} has no usable signing key for {', '.join(ALGORITHMS)}{why}")
    return KeySet(tuple(keys), tuple(skipped))


def load_jwks_file(path: str) -> KeySet:
    """The key set in the file ``path``.

    Raises:
        JwksError: the file cannot be read, or :func:`parse_jwks` refuses it.
    """
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_JWKS_BYTES + 1)
    except OSError as exc:
        raise JwksError(f"cannot read the key set {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_JWKS_BYTES:
        raise JwksError(f"the key set {path} is larger than {MAX_JWKS_BYTES} bytes")
    return parse_jwks(data, source=path)


class StaticKeySet:
    """Keys read once (from a file): a :class:`KeySource` that never fetches."""

    def __init__(self, keys: KeySet) -> None:
        self.keys = keys

    async def key_for(self, kid: str | None) -> VerificationKey | TokenRefused:
        """The key ``kid`` names, or ``unknown_key``."""
        return self.key_in_hand(kid)

    def key_in_hand(self, kid: str | None) -> VerificationKey | TokenRefused:
        """The key ``kid`` names, or ``unknown_key``."""
        return self.keys.find(kid) or _unknown(kid)


class RemoteKeySet:
    """Keys fetched from ``url`` and cached; a :class:`KeySource`. Times are trio's clock.

    Two ways to use it. An async caller awaits :meth:`key_for`, which
    fetches when it must. A caller that cannot wait (a synchronous
    authentication path) runs :meth:`keep_fresh` as a task and asks
    :meth:`key_in_hand`, which never waits: what it lacks, it asks that task
    to fetch, and the token that needed it is refused meanwhile.

    Raises:
        JwksError: (from the constructor) a URL that is not ``https``, or
            ``http`` to a host other than a loopback address.
    """

    def __init__(
        self,
        url: str,
        *,
        ttl: float = DEFAULT_JWKS_TTL,
        min_refresh_interval: float = MIN_REFRESH_INTERVAL,
        retry_after_failure: float = RETRY_AFTER_FAILURE,
        timeout: float = FETCH_TIMEOUT,
    ) -> None:
        self.url = url
        self.name = _describe(url)
        _check_url(url, self.name)
        self.ttl = ttl
        self.min_refresh_interval = min_refresh_interval
        self.retry_after_failure = retry_after_failure
        self.timeout = timeout
        self._keys: KeySet | None = None
        self._fetched_at = -float("inf")
        self._attempted_at = -float("inf")
        self._failed_at = -float("inf")
        self._failure: str | None = None
        self._fetching: trio.Event | None = None
        self._wanted = trio.Event()

    @property
    def failure(self) -> str | None:
        """Why the last fetch failed, for a log or ``/ready``; ``None`` after a success."""
        return self._failure

    async def key_for(self, kid: str | None) -> VerificationKey | TokenRefused:
        """The key ``kid`` names, fetching the set when it is missing, old, or does not know ``kid``."""
        if not self._fresh():
            await self.refresh()
            if not self._fresh():
                return TokenRefused(
                    Refusal.KEYS_UNAVAILABLE, f"the issuer's keys cannot be fetched from {self.name}"
                )
        assert self._keys is not None
        key = self._keys.find(kid)
        if key is None and trio.current_time() - self._attempted_at >= self.min_refresh_interval:
            await self.refresh()
            if self._keys is not None and self._fresh():
                key = self._keys.find(kid)
        return key or _unknown(kid)

    def key_in_hand(self, kid: str | None) -> VerificationKey | TokenRefused:
        """The key ``kid`` names among the keys held now; never waits.

        Keys that are missing or too old, or a ``kid`` they do not know (at
        most once per :attr:`min_refresh_interval`), wake :meth:`keep_fresh`
        to fetch them for the tokens that come next.
        """
        if not self._fresh():
            self._wanted.set()
            return TokenRefused(Refusal.KEYS_UNAVAILABLE, f"the issuer's keys cannot be fetched from {self.name}")
        assert self._keys is not None
        key = self._keys.find(kid)
        if key is None and trio.current_time() - self._attempted_at >= self.min_refresh_interval:
            self._wanted.set()
        return key or _unknown(kid)

    async def keep_fresh(self) -> None:
        """Fetch the keys now and for ever after: before they age out, and when :meth:`key_in_hand` asks."""
        while True:
            # After a failure, the next attempt waits its turn, however often it is asked for.
            await trio.sleep_until(max(self._failed_at + self.retry_after_failure, trio.current_time()))
            await self.refresh()
            self._wanted = trio.Event()
            if self._fresh():
                # Early enough that the keys in hand never age out while a fetch runs.
                with trio.move_on_at(self._fetched_at + self.ttl * 0.9):
                    await self._wanted.wait()

    async def refresh(self) -> None:
        """Fetch the keys now, unless a fetch is under way (then wait for it) or one failed moments ago.

        A failure keeps the keys fetched before, for as long as their
        lifetime lasts, and is kept in :attr:`failure`; it is never raised.
        """
        if self._fetching is not None:
            await self._fetching.wait()
            return
        if trio.current_time() - self._failed_at < self.retry_after_failure:
            return
        done = self._fetching = trio.Event()
        self._attempted_at = trio.current_time()
        try:
            keys = await self._fetch()
        except JwksError as exc:
            self._failed_at = trio.current_time()
            self._failure = str(exc)
        else:
            self._keys, self._fetched_at, self._failure = keys, trio.current_time(), None
            self._failed_at = -float("inf")
        finally:
            self._fetching = None
            done.set()

    def _fresh(self) -> bool:
        return self._keys is not None and trio.current_time() - self._fetched_at < self.ttl

    async def _fetch(self) -> KeySet:
        body = bytearray()
        try:
            with trio.fail_after(self.timeout):
                async with httpx.AsyncClient(timeout=self.timeout, follow_redirects=False) as client:
                    async with client.stream("GET", self.url, headers={"Accept": "application/json"}) as response:
                        if response.status_code != 200:
                            raise JwksError(f"{self.name} answered HTTP {response.status_code}, not a key set")
                        async for chunk in response.aiter_bytes():
                            body += chunk
                            if len(body) > MAX_JWKS_BYTES:
                                raise JwksError(f"the key set at {self.name} is larger than {MAX_JWKS_BYTES} bytes")
        except trio.TooSlowError:
            raise JwksError(f"{self.name} did not send its key set within {self.timeout:g}s") from None
        except httpx.HTTPError as exc:
            raise JwksError(f"cannot fetch the key set from {self.name}: {type(exc).__name__}") from None
        return parse_jwks(bytes(body), source=self.name)


def _key(entry: object) -> VerificationKey | str:
    """The verification key ``entry`` describes, or why it is left out."""
    if not isinstance(entry, dict):
        return "not a JSON object"
    kty, crv, alg, use = (entry.get(name) for name in ("kty", "crv", "alg", "use"))
    if use not in (None, "sig"):
        return f"its use is {_text(use)}, not sig"
    if any(name in entry for name in ("d", "p", "q", "k")):
        return "it holds private or symmetric key material, which a key set must not publish"
    if kty == "RSA":
        algorithm = "RS256"
    elif kty == "EC" and crv == "P-256":
        algorithm = "ES256"
    elif kty == "OKP" and crv == "Ed25519":
        algorithm = "EdDSA"
    else:
        curve = f" on {_text(crv)}" if crv else ""
        return f"a {_text(kty)} key{curve} is not one Lockgate accepts (RSA, EC P-256, Ed25519)"
    if alg is not None and alg != algorithm:
        return f"its alg is {_text(alg)}; Lockgate accepts a {kty} key only for {algorithm}"
    kid = entry.get("kid")
    if kid is not None and not isinstance(kid, str):
        return "its kid is not a string"
    try:
        key = PyJWK(entry, algorithm)
    except (PyJWTError, ValueError, TypeError, KeyError):
        return "it cannot be read as a key"
    public = key.key
    if algorithm == "RS256" and not (isinstance(public, rsa.RSAPublicKey) and public.key_size >= _MIN_RSA_BITS):
        return f"an RSA key must have {_MIN_RSA_BITS} bits or more"
    if algorithm == "ES256" and not isinstance(public, ec.EllipticCurvePublicKey):
        return "it cannot be read as a key"
    if algorithm == "EdDSA" and not isinstance(public, ed25519.Ed25519PublicKey):
        return "it cannot be read as a key"
    return VerificationKey(kid, algorithm, key)


def _unknown(kid: str | None) -> TokenRefused:
    if kid is None:
        return TokenRefused(Refusal.UNKNOWN_KEY, "the token names no key (kid) and the issuer has several")
    return TokenRefused(Refusal.UNKNOWN_KEY, "the token's key id (kid) is not among the issuer's keys")


def _check_url(url: str, name: str) -> None:
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return
    if parts.scheme == "http" and parts.hostname and _loopback(parts.hostname):
        return
    raise JwksError(f"the key set URL {name} must be https (http only for a loopback address)")


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _describe(url: str) -> str:
    """``url`` without user, password, query or fragment, which may hold secrets."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def _kid_note(entry: object) -> str:
    kid = entry.get("kid") if isinstance(entry, dict) else None
    return f" (kid {_text(kid)})" if kid is not None else ""


def _text(value: object) -> str:
    return repr(value)[:40]
