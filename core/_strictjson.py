"""Strict JSON: accept only what can be written back, so no encoder ever fails on input.

Python's :mod:`json` parses text it cannot serialise again: strings holding
lone UTF-16 surrogates (``"\\ud800"``, or the bytes ``ED A0 80``, which it
decodes with ``surrogatepass``), ``NaN`` and ``Infinity``, numbers that
overflow a double (``1e400`` becomes ``inf``), integers of any length, and
nesting as deep as the interpreter's stack allows. Each of these once made
an answer, an audit line or a forwarded message fail to encode. Every
message the gateway reads goes through :func:`parse`, whose limits are:

- UTF-8 only (RFC 8259, section 8.1), and no string, key or value, holds a
  lone surrogate (RFC 8259, section 8.2; I-JSON, RFC 7493, section 2.1).
- No ``NaN``, ``Infinity`` or ``-Infinity`` (not JSON: RFC 8259, section 6),
  and no number that overflows an IEEE 754 double.
- Integers of at most :data:`MAX_INTEGER_DIGITS` digits: every int64 and
  uint64, and every integer JavaScript writes without an exponent (below
  1e21). RFC 8259, section 6, leaves the range to implementations.
- At most :data:`MAX_DEPTH` levels of arrays and objects, the outermost
  value counting as level 1 (RFC 8259, section 9, lets a parser set one).

The fast path costs about what :func:`json.loads` costs: the number checks
run inside the parser, and the surrogate and depth checks walk the value
only when a cheap scan of the bytes says they might fail (a ``\\uD8..``
escape, or more open brackets than the depth limit). A refused text comes
back as :class:`Flawed`, located by JSON path, with a *salvaged* copy in
which every flaw is replaced (``None`` for a value, U+FFFD for a
surrogate), so callers can still answer with the request's id and audit
what the request was, without ever handling the unencodable parts.
"""

from __future__ import annotations

import json
import math
import re
from array import array
from dataclasses import dataclass
from itertools import accumulate
from typing import Any, Literal

__all__ = ["MAX_DEPTH", "MAX_INTEGER_DIGITS", "Flaw", "FlawKind", "Flawed", "parse"]

MAX_DEPTH = 128
MAX_INTEGER_DIGITS = 21

#: Flaws that make the text not JSON at all (a parse error), and those that
#: make well-formed JSON unrepresentable.
FlawKind = Literal["syntax", "utf8", "constant", "number", "integer", "surrogate", "depth"]
_NOT_JSON: frozenset[str] = frozenset({"syntax", "utf8", "constant"})

#: At most this many flaws are kept per text: enough to say what is wrong.
_MAX_FLAWS = 16


@dataclass(frozen=True, slots=True)
class Flaw:
    """One reason a text was refused: what, and where (a path of keys and indices).

    ``detail`` never quotes the offending content, so it is always safe to
    encode, log and send back.
    """

    kind: FlawKind
    path: tuple[str | int, ...]
    detail: str

    @property
    def not_json(self) -> bool:
        """True when the text is not JSON at all, rather than JSON the gateway cannot carry."""
        return self.kind in _NOT_JSON


@dataclass(frozen=True, slots=True)
class Flawed:
    """A refused text: its flaws (the first one first) and what could be salvaged.

    ``salvaged`` is the parsed value with every flaw replaced, or ``None``
    when the text did not parse at all; it is always safe to encode.
    ``tainted`` names the members of a top-level object that held a flaw
    (all of them, even when ``flaws`` was cut short), so that a salvaged
    ``id`` is never mistaken for the one the peer sent. ``partial``: the
    members after a flaw too deep to parse could not be read at all, so
    ``salvaged`` may lack some (an ``id`` that came last, say).
    """

    flaws: tuple[Flaw, ...]
    salvaged: Any
    tainted: frozenset[str] = frozenset()
    partial: bool = False

    @property
    def first(self) -> Flaw:
        return self.flaws[0]


class _Refused(ValueError):
    """Raised by the fast path's parse hooks: leave for the slow path, which says why."""


@dataclass(frozen=True, slots=True)
class _Bad:
    """What the slow path's parse hooks put where an unrepresentable value stood."""

    kind: FlawKind
    detail: str


def _strict_int(text: str) -> int:
    if len(text) - text.startswith("-") > MAX_INTEGER_DIGITS:
        raise _Refused
    return int(text)


def _strict_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise _Refused
    return value


def _strict_constant(name: str) -> Any:
    raise _Refused


def _lenient_int(text: str) -> int | _Bad:
    if len(text) - text.startswith("-") > MAX_INTEGER_DIGITS:
        return _Bad("integer", f"an integer of more than {MAX_INTEGER_DIGITS} digits")
    return int(text)


def _lenient_float(text: str) -> float | _Bad:
    value = float(text)
    if math.isinf(value):
        return _Bad("number", "a number out of the range of a double")
    return value


def _lenient_constant(name: str) -> _Bad:
    return _Bad("constant", f"{name} is not JSON")


_STRICT = json.JSONDecoder(parse_int=_strict_int, parse_float=_strict_float, parse_constant=_strict_constant)
# For large texts whose numbers a scan found harmless: the number hooks cost a
# call per number, which more than doubles the parse of a numeric payload.
_STRICT_CONSTANTS = json.JSONDecoder(parse_constant=_strict_constant)
_LENIENT = json.JSONDecoder(parse_int=_lenient_int, parse_float=_lenient_float, parse_constant=_lenient_constant)

# A lone surrogate can only come from a \uD800-\uDFFF escape once the bytes are
# valid UTF-8; these are the cheap tests for one (any case of the hex digits).
_ESCAPES = (b"\\ud", b"\\uD")
_SURROGATE = re.compile("[\ud800-\udfff]")
_WHITESPACE = re.compile(r"[ \t\n\r]*")
# Texts at least this long get the number scan below instead of the number hooks.
_SCAN_FROM = 64 * 1024
# Digits become "0", exponent marks "e", signs "+", anything else a space: a
# number can only break a limit where 22 digits follow each other, or an
# exponent has three digits or more.
_NUMBER_SHAPES = bytes(
    b"0"[0] if b"0"[0] <= b <= b"9"[0] else b"e"[0] if b in b"eE" else b"+"[0] if b in b"+-" else b" "[0]
    for b in range(256)
)
_LONG_NUMBER = (b"0" * (MAX_INTEGER_DIGITS + 1), b"e000", b"e+000")
# Bytes other than brackets, deleted before the depth bound is summed.
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
# Opening brackets step +1, closing ones -1 (0xFF read as a signed byte).
_STEPS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")


def parse(data: bytes | bytearray | str) -> Any:
    """Parse one JSON text under the limits above; a :class:`Flawed` when it breaks one.

    Never raises. Returns the value (a dict, list, str, int, float, bool or
    ``None``) or a :class:`Flawed`, which no JSON value is.
    """
    # A str is checked as the UTF-8 it stands for: a lone surrogate in it
    # becomes bytes that are not UTF-8, refused below.
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else bytes(data)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return _diagnose(raw)
    decoder = _STRICT
    if len(raw) >= _SCAN_FROM:
        shapes = raw.translate(_NUMBER_SHAPES)
        if not any(pattern in shapes for pattern in _LONG_NUMBER):
            decoder = _STRICT_CONSTANTS
    try:
        value = decoder.decode(text)
    except (ValueError, RecursionError):
        return _diagnose(raw)
    if _needs_walk(raw) and not _walk_ok(value):
        return _diagnose(raw)
    return value


def _needs_walk(raw: bytes) -> bool:
    """Whether ``raw`` might hide a lone surrogate or nesting past the limit (cheap, may say yes wrongly)."""
    if _ESCAPES[0] in raw or _ESCAPES[1] in raw:
        return True
    if raw.count(b"[") + raw.count(b"{") <= MAX_DEPTH:
        return False
    # An upper bound on the depth: brackets inside strings count too.
    steps = array("b", raw.translate(_STEPS, _NOT_BRACKETS))
    return max(accumulate(steps)) > MAX_DEPTH


def _walk_ok(value: Any) -> bool:
    """Whether ``value`` has no lone surrogate and no nesting past :data:`MAX_DEPTH`."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                return False
        elif isinstance(item, dict):
            if depth > MAX_DEPTH:
                return False
            for key, member in item.items():
                if _SURROGATE.search(key):
                    return False
                stack.append((member, depth + 1))
        elif isinstance(item, list):
            if depth > MAX_DEPTH:
                return False
            stack.extend((member, depth + 1) for member in item)
    return True


def _diagnose(raw: bytes) -> Flawed:
    """The slow path: parse leniently, then find and replace every flaw."""
    bad_utf8: int | None = None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        bad_utf8 = exc.start
        # Invalid bytes inside strings become lone surrogates, found below.
        text = raw.decode("utf-8", "surrogateescape")
    try:
        value = _LENIENT.decode(text)
    except RecursionError:
        return _too_deep(text)
    except json.JSONDecodeError as exc:
        # str(exc) names line, column and character, never the text itself.
        detail = f"invalid UTF-8 at byte {bad_utf8}" if bad_utf8 is not None else str(exc)
        return Flawed((Flaw("utf8" if bad_utf8 is not None else "syntax", (), detail),), None)
    except ValueError:
        # int() past the interpreter's digit limit cannot happen (the hooks
        # count digits first); anything else the parser raises is a syntax error.
        return Flawed((Flaw("syntax", (), "not a JSON text"),), None)
    found = _Found()
    salvaged = _salvage(value, (), 1, found)
    flaws = found.flaws
    if bad_utf8 is not None:
        where = next((f.path for f in flaws if f.kind == "surrogate"), ())
        flaws.insert(0, Flaw("utf8", where, f"invalid UTF-8 at byte {bad_utf8}"))
    if not flaws:
        # The strict parser refused what the lenient one found fine; cannot
        # happen, but a refusal must always say something.
        flaws.append(Flaw("syntax", (), "not a JSON text"))
    return Flawed(tuple(flaws[:_MAX_FLAWS]), salvaged, frozenset(found.tainted))


def _too_deep(text: str) -> Flawed:
    """A text too deep for the parser itself: salvage the top-level members before the deep one.

    The parser recurses once per level, so past the interpreter's stack it
    cannot return anything. Members of a top-level object are parsed one by
    one instead, so the ``id`` of ``{"id": 1, "params": [[[...]]]}`` is
    still found; the member that is too deep is left out.
    """
    flaw = Flaw("depth", (), "nesting too deep to parse")
    members: dict[str, Any] = {}
    end = _WHITESPACE.match(text).end()  # type: ignore[union-attr]  # matches the empty string
    if not text.startswith("{", end):
        return Flawed((flaw,), None)
    end += 1
    try:
        while True:
            end = _WHITESPACE.match(text, end).end()  # type: ignore[union-attr]
            key, end = _LENIENT.raw_decode(text, end)
            end = _WHITESPACE.match(text, end).end()  # type: ignore[union-attr]
            if not isinstance(key, str) or not text.startswith(":", end):
                break
            end = _WHITESPACE.match(text, end + 1).end()  # type: ignore[union-attr]
            try:
                members[key], end = _LENIENT.raw_decode(text, end)
            except RecursionError:
                flaw = Flaw("depth", (key,), "nesting too deep to parse")
                members[key] = None
                break
            end = _WHITESPACE.match(text, end).end()  # type: ignore[union-attr]
            if not text.startswith(",", end):
                break
            end += 1
    except (ValueError, RecursionError):
        pass
    if not members:
        return Flawed((flaw,), None)
    found = _Found()
    salvaged = _salvage(members, (), 1, found)
    found.tainted.update(k for k in flaw.path if isinstance(k, str))
    return Flawed((flaw, *found.flaws)[:_MAX_FLAWS], salvaged, frozenset(found.tainted), partial=True)


class _Found:
    """The flaws :func:`_salvage` met: the first few in full, and every tainted top-level member."""

    __slots__ = ("count", "flaws", "tainted")

    def __init__(self) -> None:
        self.count = 0
        self.flaws: list[Flaw] = []
        self.tainted: set[str] = set()

    def add(self, flaw: Flaw) -> None:
        self.count += 1
        if len(self.flaws) < _MAX_FLAWS:
            self.flaws.append(flaw)


def _salvage(value: Any, path: tuple[str | int, ...], depth: int, found: _Found) -> Any:
    """A copy of ``value`` with each flaw replaced and recorded in ``found``."""
    if isinstance(value, str):
        if _SURROGATE.search(value):
            found.add(Flaw("surrogate", path, "a string holds a lone UTF-16 surrogate"))
            return _SURROGATE.sub("\ufffd", value)
        return value
    if isinstance(value, _Bad):
        found.add(Flaw(value.kind, path, value.detail))
        return None
    if isinstance(value, (dict, list)) and depth > MAX_DEPTH:
        found.add(Flaw("depth", path, f"nesting deeper than {MAX_DEPTH} levels"))
        return None
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, member in value.items():
            before = found.count
            clean = key
            if _SURROGATE.search(key):
                clean = _SURROGATE.sub("\ufffd", key)
                found.add(Flaw("surrogate", (*path, clean), "a key holds a lone UTF-16 surrogate"))
            out[clean] = _salvage(member, (*path, clean), depth + 1, found)
            if depth == 1 and found.count > before:
                found.tainted.add(clean)
        return out
    if isinstance(value, list):
        return [_salvage(member, (*path, i), depth + 1, found) for i, member in enumerate(value)]
    return value
