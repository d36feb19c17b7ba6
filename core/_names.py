"""Aggregate mode's names: tool and prompt names, resource URIs, list cursors.

In aggregate mode the gateway serves the tools, prompts and resources of many
downstream servers as one list each. A client then names an item by a single
string, so every item needs a public name that is unique, acceptable to the
client, and leads back to exactly one ``(server, name)``.

Theory of operation
-------------------
**Tool and prompt names** (:class:`Namer`, one per list: tools and prompts are
separate namespaces in MCP, so each gets its own). MCP 2025-11-25, server/tools
§ "Tool Names", says names SHOULD be 1 to 128 characters, case-sensitive, made
only of ASCII letters, digits, ``_``, ``-`` and ``.`` (no spaces, commas or
other special characters), and unique within a server. We keep to that
alphabet and to 64 characters, not 128: several clients and model APIs refuse
longer tool names. (Some model APIs refuse ``.`` as well; a downstream name
with one passes through, as the spec allows, and the default separator
``__`` adds none.) Prompt names get the same treatment, which is stricter
than the spec asks of them and harmless.

A name's *wanted* form is ``server + separator + name`` when the namer
prefixes, else ``name`` unchanged. ``prefix="always"`` prefixes, ``"never"``
does not, ``"auto"`` prefixes when the mapping given to :meth:`Namer.build`
has more than one key (a server with no items still counts, so a caller that
passes every configured server keeps names stable while one of them is down).

The ``(server, name)`` pairs are taken in sorted order (by server, then name,
by code point) and each gets its wanted form if that is valid (1 to 64
characters of ``[A-Za-z0-9_.-]``) and no earlier pair or ``reserved`` name has
it. So when two servers offer the same name under ``"never"``, the first
server in sorted order keeps the plain name. Every other pair then gets, in
the same order, its *short form*::

    readable + separator + digest

where ``digest`` is the first 8 hex digits (lowercase) of
``sha256(UTF-8(server + "\\0" + name))`` (a lone surrogate encoded as
Python's ``surrogatepass`` does, so no name makes it fail), and ``readable``
is the wanted form (``server + separator + name`` instead, for a name that
lost a collision under ``"never"``: the prefix is what tells the two apart),
with every character outside ``[A-Za-z0-9_.-]`` replaced by ``_`` and cut to
the length that makes the whole name at most 64 characters. If that string is taken too (by a
plain name chosen to look like it, or by a 32-bit digest collision),
``-2``, ``-3``, ... is appended to the digest, the readable part giving way,
until it is free; the trailing number makes each try distinct, so this ends.

Everything depends only on the set of pairs, the separator, the prefix mode
and the reserved names, never on the order they were given in, on the machine
or on the run. :meth:`Namer.resolve` is a dictionary look-up of names issued:
a name that merely looks like ``server__tool`` resolves to nothing.

**Resource URIs** (:class:`UriMap`). A resource keeps its URI when the client
can route it back without help: when exactly one server lists it, or when
the map has only one server. Any other URI is published as::

    lockgate://<server>/<original URI, unchanged>

with ``<server>`` percent-encoded (UTF-8, every character but ``A-Z a-z 0-9
_ . - ~``), so it holds no ``/`` and the original URI is everything after the
first ``/`` that follows it. The original stays verbatim, not
percent-encoded: a resource template published this way must still expand
into the URI its server would have produced (RFC 6570 expansion escapes the
values it inserts, and decoding the whole URI afterwards would undo those
escapes). So any string round-trips, including ones with ``/``, ``?``, ``#``,
spaces or non-ASCII text. The gateway owns ``lockgate://``: a downstream URI
that starts with it is always published namespaced, so no plain URI can be
mistaken for a namespaced one.

Templates are published unchanged when the map has one server and
namespaced otherwise: a URI expanded from a template is not in any list, so
only the namespace can say which server it belongs to.

**Cursors**. MCP 2025-11-25, server/utilities/pagination: a cursor is an
opaque string, clients must not parse it, and an invalid one SHOULD get
-32602 (Invalid params). The gateway pages merged lists itself, and a cursor
is::

    base64url_unpadded(ASCII(offset + "." + fingerprint) + check)

where ``check`` is the first 4 bytes of ``sha256(b"lockgate cursor 1\\0" +
ASCII(offset + "." + fingerprint))``. The check is not a signature (the core
holds no secret); it makes random or damaged text fail, and forging a cursor
only lets a client page through a list it can already page through. The
fingerprint names the list (:func:`fingerprint`): a cursor for a list that has
changed since it was issued is refused rather than silently skipping or
repeating items.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Literal, TypeVar, get_args
from urllib.parse import quote

from ._errors import LocalProtocolError

__all__ = [
    "MAX_NAME_LENGTH",
    "NAMESPACE",
    "Namer",
    "Prefix",
    "UriMap",
    "decode_cursor",
    "encode_cursor",
    "fingerprint",
    "page",
]

T = TypeVar("T")

Prefix = Literal["auto", "always", "never"]

#: The longest public tool or prompt name: the spec allows 128, clients often 64.
MAX_NAME_LENGTH = 64

#: How namespaced resource URIs begin; see the module docstring for the form.
NAMESPACE = "lockgate://"

_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_NOT_NAME_CHAR = re.compile(r"[^A-Za-z0-9_.-]")
_DIGEST_CHARS = 8

# A separator longer than this would leave the short form little room to be
# readable; no sensible configuration needs more.
_MAX_SEPARATOR = 8

_MAX_OFFSET = 2**53 - 1  # what a JSON number holds exactly, and far beyond any list
_FINGERPRINT = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_OFFSET = re.compile(r"0|[1-9][0-9]{0,15}")
_CURSOR_CHARS = re.compile(r"[A-Za-z0-9_-]+")
_CHECK_BYTES = 4
_CHECK_DOMAIN = b"lockgate cursor 1\0"
# The longest cursor encode_cursor makes is 114 characters (16 digits, ".",
# 64 fingerprint characters, 4 check bytes). decode_cursor looks at nothing
# longer, so hostile input costs one length check.
_MAX_CURSOR = 128


def _utf8(text: str) -> bytes:
    # surrogatepass: a lone surrogate can arrive in JSON ("\ud800"); hashing
    # it must not raise, and valid text encodes exactly as plain UTF-8.
    return text.encode("utf-8", "surrogatepass")


def _digest(server: str, name: str) -> str:
    return hashlib.sha256(_utf8(server + "\0" + name)).hexdigest()[:_DIGEST_CHARS]


def _short_form(readable: str, separator: str, digest: str, taken: set[str]) -> str:
    """The first free ``readable + separator + digest[-n]`` (see the module docstring)."""
    # Cutting before substituting is the same (one character for one) and
    # bounded however long the name is.
    readable = _NOT_NAME_CHAR.sub("_", readable[:MAX_NAME_LENGTH])
    attempt = 1
    while True:
        suffix = separator + digest + ("" if attempt == 1 else f"-{attempt}")
        candidate = readable[: MAX_NAME_LENGTH - len(suffix)] + suffix
        if candidate not in taken:
            return candidate
        attempt += 1


class Namer:
    """Public tool (or prompt) names for many servers' items, and their inverse.

    Immutable once built; a new downstream list means a new namer.

    Attributes:
        separator: what joins a server's name to an item's.
        prefixed: whether wanted names carry the server prefix.
        names: every public name issued, mapped to its ``(server, name)``.
    """

    __slots__ = ("_by_pair", "_names", "_prefixed", "_separator")

    def __init__(self, names: Mapping[str, tuple[str, str]], *, separator: str, prefixed: bool) -> None:
        """Use :meth:`build`; this takes the finished table."""
        self._names = MappingProxyType(dict(names))
        self._by_pair = MappingProxyType({pair: public for public, pair in names.items()})
        self._separator = separator
        self._prefixed = prefixed

    @property
    def separator(self) -> str:
        return self._separator

    @property
    def prefixed(self) -> bool:
        return self._prefixed

    @property
    def names(self) -> Mapping[str, tuple[str, str]]:
        return self._names

    @classmethod
    def build(
        cls,
        servers: Mapping[str, Iterable[str]],
        *,
        separator: str = "__",
        prefix: Prefix = "auto",
        reserved: Iterable[str] = (),
    ) -> Namer:
        """Name every item of every server: ``{"github": ["create_issue"], "db": [...]}``.

        Args:
            servers: each server's item names; duplicates count once.
            separator: 1 to 8 characters of ``[A-Za-z0-9_.-]``.
            prefix: ``"auto"``, ``"always"`` or ``"never"`` (module docstring).
            reserved: names no item may have, such as the gateway's own tools.

        Raises:
            LocalProtocolError: the separator or prefix mode is not one of the
                above (configuration validation should have caught it).
        """
        if not (_NAME.fullmatch(separator) and len(separator) <= _MAX_SEPARATOR):
            raise LocalProtocolError(f"separator {separator!r}: use 1 to 8 of A-Z a-z 0-9 _ . -")
        if prefix not in get_args(Prefix):
            raise LocalProtocolError(f"prefix {prefix!r}: use 'auto', 'always' or 'never'")
        prefixed = prefix == "always" or (prefix == "auto" and len(servers) > 1)

        pairs = sorted({(server, name) for server, items in servers.items() for name in items})
        taken = set(reserved)
        names: dict[str, tuple[str, str]] = {}
        shortened: list[tuple[str, str, str]] = []  # server, name, readable
        for server, name in pairs:
            wanted = server + separator + name if prefixed else name
            if not _NAME.fullmatch(wanted):
                shortened.append((server, name, wanted))
            elif wanted in taken:
                shortened.append((server, name, server + separator + name))
            else:
                names[wanted] = (server, name)
                taken.add(wanted)
        # Short forms come after every plain name, so no short form can take
        # the plain name of a pair later in the order.
        for server, name, readable in shortened:
            public = _short_form(readable, separator, _digest(server, name), taken)
            names[public] = (server, name)
            taken.add(public)
        return cls(names, separator=separator, prefixed=prefixed)

    def public(self, server: str, name: str) -> str:
        """The name a client sees for ``server``'s item ``name``.

        Raises:
            LocalProtocolError: the pair was not given to :meth:`build`.
        """
        public = self._by_pair.get((server, name))
        if public is None:
            raise LocalProtocolError(f"no item {name!r} of server {server!r} was named")
        return public

    def resolve(self, public_name: str) -> tuple[str, str] | None:
        """The ``(server, name)`` a public name was issued for, or None if it never was."""
        return self.names.get(public_name)

    def __len__(self) -> int:
        return len(self.names)

    def __repr__(self) -> str:
        return f"Namer({len(self.names)} names, separator={self.separator!r}, prefixed={self.prefixed!r})"


def _host(server: str) -> str:
    # Nothing but unreserved characters and %XX, so never a "/".
    return quote(server, safe="", errors="surrogatepass")


class UriMap:
    """Public resource URIs for many servers, and their inverse.

    Immutable once built; a new downstream list means a new map.

    Attributes:
        servers: the servers the map knows.
    """

    __slots__ = ("_hosts", "_owner", "_servers", "_sole")

    def __init__(self, owner: Mapping[str, str], servers: Iterable[str]) -> None:
        """Use :meth:`build`; this takes each plain URI's server and every server."""
        self._servers = frozenset(servers)
        self._owner = MappingProxyType(dict(owner))
        self._hosts = MappingProxyType({_host(server): server for server in self._servers})
        self._sole = next(iter(self._servers)) if len(self._servers) == 1 else None

    @property
    def servers(self) -> frozenset[str]:
        return self._servers

    @classmethod
    def build(
        cls,
        resources: Mapping[str, Iterable[str]],
        templates: Mapping[str, Iterable[str]] | None = None,
    ) -> UriMap:
        """Map every server's resource URIs: ``{"fs": ["file:///a"], "db": [...]}``.

        Args:
            resources: each server's resource URIs. Every key is a server,
                including servers that list no resources.
            templates: each server's ``uriTemplate`` strings. Only the keys
                matter (they count as servers too): whether a template is
                namespaced depends on the number of servers, not on the
                template (see :meth:`public_template`).
        """
        servers = set(resources) | set(templates or {})
        offered_by: dict[str, set[str]] = {}
        for server, uris in resources.items():
            for uri in uris:
                offered_by.setdefault(uri, set()).add(server)
        owner = {
            uri: min(offering)
            for uri, offering in offered_by.items()
            if len(offering) == 1 and not uri.startswith(NAMESPACE)
        }
        return cls(owner, servers)

    def _plain(self, server: str, uri: str) -> bool:
        if server not in self._servers:
            raise LocalProtocolError(f"server {server!r} is not in the resource map")
        return not uri.startswith(NAMESPACE) and (self._sole == server or self._owner.get(uri) == server)

    def _namespaced(self, server: str, uri: str) -> str:
        return f"{NAMESPACE}{_host(server)}/{uri}"

    def public(self, server: str, uri: str) -> str:
        """The URI a client sees for ``server``'s resource ``uri``.

        Unchanged when this server alone lists it (or is the only server),
        else namespaced. Any URI may be asked for, not only listed ones, so
        the gateway can also rewrite resource links in results.

        Raises:
            LocalProtocolError: ``server`` is not in the map.
        """
        return uri if self._plain(server, uri) else self._namespaced(server, uri)

    def public_template(self, server: str, uri_template: str) -> str:
        """The ``uriTemplate`` a client sees: unchanged only when the map has one server.

        Raises:
            LocalProtocolError: ``server`` is not in the map.
        """
        if server not in self._servers:
            raise LocalProtocolError(f"server {server!r} is not in the resource map")
        if self._sole == server and not uri_template.startswith(NAMESPACE):
            return uri_template
        return self._namespaced(server, uri_template)

    def resolve(self, public_uri: str) -> tuple[str, str] | None:
        """The ``(server, uri)`` a client's URI stands for, or None if no server has it.

        A namespaced URI of a known server resolves whether or not the URI was
        listed (it may come from a template). A plain URI resolves to the one
        server that lists it, or to the map's only server; otherwise None.
        """
        if public_uri.startswith(NAMESPACE):
            host, slash, uri = public_uri[len(NAMESPACE) :].partition("/")
            server = self._hosts.get(host)
            return (server, uri) if server is not None and slash else None
        owner = self._owner.get(public_uri, self._sole)
        return (owner, public_uri) if owner is not None else None

    def __repr__(self) -> str:
        return f"UriMap(servers={sorted(self._servers)!r}, plain={len(self._owner)})"


def fingerprint(names: Iterable[str]) -> str:
    """A short digest of a list's item names in order: 16 hex digits.

    Equal for equal lists on every machine and run; a change of any name, or
    of the order, changes it (with overwhelming likelihood).
    """
    digest = hashlib.sha256(b"lockgate list 1\0")
    for name in names:
        data = _utf8(name)
        # Length-prefixed, so ["ab"] and ["a", "b"] differ.
        digest.update(len(data).to_bytes(8, "big"))
        digest.update(data)
    return digest.hexdigest()[:16]


def _check(raw: bytes) -> bytes:
    return hashlib.sha256(_CHECK_DOMAIN + raw).digest()[:_CHECK_BYTES]


def encode_cursor(offset: int, fingerprint: str) -> str:
    """An opaque, URL-safe cursor for position ``offset`` in the list ``fingerprint`` names.

    Raises:
        LocalProtocolError: ``offset`` is not in ``0 .. 2**53 - 1`` or
            ``fingerprint`` is not 1 to 64 of ``A-Z a-z 0-9 _ . -``.
    """
    if isinstance(offset, bool) or not 0 <= offset <= _MAX_OFFSET or not _FINGERPRINT.fullmatch(fingerprint):
        raise LocalProtocolError(f"cannot make a cursor of offset {offset!r} and fingerprint {fingerprint!r}")
    raw = f"{offset}.{fingerprint}".encode("ascii")
    return base64.urlsafe_b64encode(raw + _check(raw)).rstrip(b"=").decode("ascii")


def decode_cursor(text: str) -> tuple[int, str] | None:
    """The ``(offset, fingerprint)`` in a cursor :func:`encode_cursor` made, else None.

    Never raises: anything that is not such a cursor, of any length or type,
    gives None.
    """
    # len % 4 == 1 is never valid unpadded base64; everything else decodes.
    if not isinstance(text, str) or len(text) > _MAX_CURSOR or len(text) % 4 == 1:
        return None
    if not _CURSOR_CHARS.fullmatch(text):
        return None
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    raw, check = data[:-_CHECK_BYTES], data[-_CHECK_BYTES:]
    # Latin-1 turns any bytes into text without failing; the patterns then
    # admit only ASCII.
    offset, dot, mark = raw.decode("latin-1").partition(".")
    if not (dot and _OFFSET.fullmatch(offset) and _FINGERPRINT.fullmatch(mark) and check == _check(raw)):
        return None
    decoded = int(offset), mark
    if decoded[0] > _MAX_OFFSET:
        return None  # 16 digits can say more than encode_cursor writes
    # Base64 has more than one spelling of some byte strings (unused low
    # bits); only the one encode_cursor writes is a cursor.
    return decoded if encode_cursor(*decoded) == text else None


def page(
    items: Sequence[T], cursor: str | None, size: int, fingerprint: str
) -> tuple[list[T], str | None] | None:
    """One page of ``items``, from the start or from ``cursor``, and the next cursor.

    The next cursor is None on the last page. Returns None (answer -32602)
    when ``cursor`` is not a cursor, belongs to another list (its fingerprint
    differs: the list changed) or points where no page of this list starts.

    Raises:
        LocalProtocolError: ``size`` is less than 1, or ``fingerprint`` is not
            one :func:`encode_cursor` takes.
    """
    if size < 1:
        raise LocalProtocolError(f"page size {size!r} must be at least 1")
    if not _FINGERPRINT.fullmatch(fingerprint):
        raise LocalProtocolError(f"fingerprint {fingerprint!r}: use 1 to 64 of A-Z a-z 0-9 _ . -")
    start = 0
    if cursor is not None:
        decoded = decode_cursor(cursor)
        if decoded is None or decoded[1] != fingerprint:
            return None
        start = decoded[0]
        # Only offsets inside the list are issued: 0 needs no cursor, and a
        # cursor at the end is never made.
        if not 0 < start < len(items):
            return None
    end = start + size
    following = encode_cursor(end, fingerprint) if end < len(items) else None
    return list(items[start:end]), following
