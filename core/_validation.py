"""Checking a configuration with pydantic, and wording what it finds as Lockgate does.

The shapes of the two files (:mod:`._servers`, :mod:`._rules`) and of the
``GATEWAY_*`` variables (:mod:`._settings`) are declared as pydantic types,
and pydantic does the walking: every key, item and value is checked and every
failure is collected with its location. What pydantic does not do is word the
failures as Lockgate always has (``expected a positive integer, got 0``). So
each type that can be wrong carries its own wording, attached with
:func:`said` or :func:`kind`: when the value itself fails, whatever pydantic
found (wrong type, out of range, not in the enum) becomes one custom error
whose message is the final text. Translating a :class:`~pydantic.ValidationError`
is then reading each item's ``msg``, except for the two failures pydantic
words itself:

=====================  ===============================================
pydantic error type    becomes
=====================  ===============================================
``missing``            ``is required``
``extra_forbidden``    the error ``unknown key 'dney' (did you mean 'deny'?)``
``lockgate``           an error, with its message
``lockgate_warning``   a warning, with its message
``lockgate_key``       an error about an object key: pydantic locates it
                       at ``(key, "[key]")``, we at the key
=====================  ===============================================

Rewording at the type keeps the wording next to the rule it explains, and
keeps this translation a few lines; the alternative, mapping pydantic's error
types back to messages, needs to know for every location which field it is
in and what that field's wording is.

Unknown keys are declared forbidden (``extra="forbid"``), so the JSON Schema
says ``additionalProperties: false`` and editors flag typos, and the gateway
refuses them: a misspelt key is never ignored, since ``"dney"`` for ``"deny"``
would quietly allow what was meant to be denied. The closest valid key is
suggested, from the keys the pydantic schema allows at that place
(:func:`keys_at`), so the list cannot drift from the shapes. Keys that belong
to another shape the entry could have had (``headers`` on a stdio server) are
known, and stay warnings: when every issue is a warning, :func:`check` drops
the keys they name and validates again.

A key that appears twice in one object is refused as well
(:func:`duplicate_keys`): JSON parsers keep the last value silently, so a
typo that turns one key into its neighbour's name would replace that
neighbour's rules.

Issues come out in the order of the document (an object's own problem before
its children's), which is the order a reader meets them in the file.
"""

from __future__ import annotations

import copy
import difflib
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

from pydantic import ConfigDict, TypeAdapter, ValidationError, ValidationInfo, WrapValidator
from pydantic_core import ErrorDetails, InitErrorDetails, PydanticCustomError

__all__ = [
    "Issue",
    "Loc",
    "an_object",
    "check",
    "check_part",
    "close_match",
    "closest",
    "duplicate_keys",
    "expected",
    "fail",
    "in_document_order",
    "issues",
    "json_schema",
    "keys_at",
    "kind",
    "said",
    "shape",
]

Loc = tuple[str | int, ...]
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Issue:
    """One problem, located in its document; its file is added by the caller."""

    loc: Loc
    message: str
    warning: bool = False


def expected(what: str, value: object) -> str:
    """Say what a JSON value should have been and what it is.

    Scalars are shown as JSON; strings never are, as they may be secrets.
    """
    if value is None or isinstance(value, (bool, int, float)):
        return f"expected {what}, got {json.dumps(value)}"
    if isinstance(value, str):
        return f"expected {what}, got a string"
    return f"expected {what}, got {'an array' if isinstance(value, list) else 'an object'}"


def said(message: Callable[[Any], str], *, key: bool = False) -> WrapValidator:
    """Annotate a type with the message for a value that fails it.

    Only failures of the value itself are reworded; problems inside it (an
    item of an array, a value of an object) keep their own words and places.
    ``key`` marks the type of an object's keys (see the table above).
    """
    error_type = "lockgate_key" if key else "lockgate"

    def reword(value: Any, handler: Callable[[Any], Any]) -> Any:
        try:
            return handler(value)
        except ValidationError as exc:
            if any(error["loc"] for error in exc.errors()):
                raise
            raise PydanticCustomError(error_type, "{message}", {"message": message(value)}) from None

    return WrapValidator(reword)


def kind(what: str) -> WrapValidator:
    """Annotate a type with ``expected <what>, got <value>``."""
    return said(lambda value: expected(what, value))


def shape(title: str) -> ConfigDict:
    """The configuration of a ``TypedDict`` shape: strict JSON types, unknown keys reported, keys as titles.

    Python rebuilds a ``TypedDict`` on ``dict``, so configuration is not
    inherited: each shape pydantic validates says it (``@with_config``).
    ``defer_build`` leaves building a validator to its first use: a file
    without HTTP servers, say, never pays for the HTTP shapes.
    """
    return ConfigDict(
        title=title, strict=True, extra="forbid", field_title_generator=lambda name, _: name, defer_build=True
    )


def fail(found: Iterable[Issue]) -> NoReturn:
    """Raise several issues at once from inside a validator, each at its place below it."""
    raise ValidationError.from_exception_data(
        "lockgate",
        [
            InitErrorDetails(
                type=PydanticCustomError(
                    "lockgate_warning" if issue.warning else "lockgate", "{message}", {"message": issue.message}
                ),
                loc=issue.loc,
                input=None,
            )
            for issue in found
        ],
    )


def an_object(value: object) -> dict[str, Any]:
    """``value`` if it is a JSON object; raises ``expected an object`` otherwise."""
    if not isinstance(value, dict):
        fail([Issue((), expected("an object", value))])
    return value


def check_part(
    adapter: TypeAdapter[Any],
    part: dict[str, Any],
    info: ValidationInfo,
    problem: str | None = None,
    ignored: Callable[[str | int], str | None] = lambda key: None,
) -> Any:
    """Validate part of a document from inside a validator, with ``adapter``'s shape.

    ``problem`` is one with the part as a whole, raised with any others. A
    key the shape does not have is unknown (an error), unless ``ignored``
    words it as one the gateway knows but ignores here (a warning).
    """
    found = [] if problem is None else [Issue((), problem)]
    try:
        value = adapter.validate_python(part, context=info.context)
    except ValidationError as exc:
        for issue in issues(exc, adapter):
            message = ignored(issue.loc[0]) if len(issue.loc) == 1 else None
            found.append(issue if message is None else Issue(issue.loc, message, warning=True))
        fail(found)
    if found:
        fail(found)
    return value


def issues(exc: ValidationError, adapter: TypeAdapter[Any] | None = None) -> list[Issue]:
    """Translate pydantic's errors, in pydantic's order.

    ``adapter`` is what raised them: an unknown key is matched against the
    keys its schema allows at that place, for a "did you mean".
    """
    return [_issue(error, adapter) for error in exc.errors()]


def _issue(error: ErrorDetails, adapter: TypeAdapter[Any] | None) -> Issue:
    loc = tuple(error["loc"])
    match error["type"]:
        case "missing":
            return Issue(loc, "is required")
        case "extra_forbidden":
            valid = keys_at(adapter, loc[:-1]) if adapter is not None else ()
            return Issue(loc, f"unknown key {loc[-1]!r}{closest(str(loc[-1]), valid)}")
        case "lockgate_warning":
            return Issue(loc, error["msg"], warning=True)
        case "lockgate_key":
            return Issue(loc[:-1], error["msg"])
        case _:  # "lockgate", or a failure no type words (pydantic's message then)
            return Issue(loc, error["msg"])


def close_match(name: str, candidates: Iterable[str]) -> str | None:
    """The candidate most like ``name``, if one is close enough to be what was meant.

    :func:`difflib.get_close_matches` with its usual cutoff: a letter or two
    wrong, missing, extra or swapped in a word of four letters or more.
    """
    found = difflib.get_close_matches(name, sorted(candidates), n=1)
    return found[0] if found else None


def closest(name: str, candidates: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` with :func:`close_match`, or ``""`` when none is close."""
    found = close_match(name, candidates)
    return "" if found is None else f" (did you mean {found!r}?)"


def keys_at(adapter: TypeAdapter[Any], loc: Loc) -> list[str]:
    """The keys the object at ``loc`` may have, read from ``adapter``'s pydantic core schema.

    The walk follows object fields, the values of maps and the items of
    arrays through the wrappers pydantic puts around them; at a union, the
    keys of every member count.
    """
    definitions: dict[str, Any] = {}
    nodes = [_unwrap(dict(adapter.core_schema), definitions)]
    for segment in loc:
        following: list[Any] = []
        for node in nodes:
            for choice in node["choices"] if node["type"] == "union" else [node]:
                choice = _unwrap(choice[0] if isinstance(choice, tuple) else choice, definitions)
                if choice["type"] == "typed-dict" and segment in choice["fields"]:
                    following.append(choice["fields"][segment]["schema"])
                elif choice["type"] == "dict" and "values_schema" in choice:
                    following.append(choice["values_schema"])
                elif choice["type"] == "list" and "items_schema" in choice:
                    following.append(choice["items_schema"])
        nodes = [_unwrap(node, definitions) for node in following]
    keys: list[str] = []
    for node in nodes:
        for choice in node["choices"] if node["type"] == "union" else [node]:
            choice = _unwrap(choice[0] if isinstance(choice, tuple) else choice, definitions)
            if choice["type"] == "typed-dict":
                keys.extend(key for key in choice["fields"] if key not in keys)
    return keys


def _unwrap(node: Any, definitions: dict[str, Any]) -> Any:
    """The schema that does the checking under validators, defaults and references."""
    while True:
        if node["type"] == "definitions":
            definitions.update((item["ref"], item) for item in node["definitions"])
        if node["type"] == "definition-ref":
            node = definitions[node["schema_ref"]]
        elif node["type"] not in ("typed-dict", "model-fields") and isinstance(node.get("schema"), dict):
            node = node["schema"]
        else:
            return node


def check(
    adapter: TypeAdapter[T], doc: object, context: Mapping[str, Any] | None = None
) -> tuple[T, list[Issue]] | tuple[None, list[Issue]]:
    """Validate a parsed document: the value (``None`` on any error) and every issue, in document order.

    When every issue is a warning, each names a key the gateway knows but
    ignores where it stands (a key of the other transport): the value is
    validated again without those keys.
    """
    try:
        return adapter.validate_python(doc, context=context), []
    except ValidationError as exc:
        found = in_document_order(doc, issues(exc, adapter))
    if any(not issue.warning for issue in found):
        return None, found
    return adapter.validate_python(_without(doc, [issue.loc for issue in found]), context=context), found


def in_document_order(doc: object, found: Iterable[Issue]) -> list[Issue]:
    """``found`` in the order a reader meets their places in ``doc``; ties keep their order."""
    return sorted(found, key=lambda issue: _position(doc, issue.loc))


def duplicate_keys(text: str) -> list[Issue]:
    """An error for each key that appears again in the same object of a JSON text, at its place.

    ``text`` must be valid JSON. Python's parser, like most, keeps the last
    value of a repeated key and says nothing.
    """
    found: list[Issue] = []

    def walk(node: object, loc: Loc) -> None:
        if isinstance(node, _Pairs):
            seen: set[str] = set()
            for key, value in node:
                if key in seen:
                    found.append(Issue((*loc, key), f"duplicate key {key!r}: JSON keeps only the last one"))
                seen.add(key)
                walk(value, (*loc, key))
        elif isinstance(node, list):
            for index, item in enumerate(node):
                walk(item, (*loc, index))

    walk(json.loads(text, object_pairs_hook=_Pairs), ())
    return found


class _Pairs(list[tuple[str, Any]]):
    """A JSON object as its (key, value) pairs, repeated keys included."""


def _position(doc: object, loc: Loc) -> tuple[int, ...]:
    """Where ``loc`` is in ``doc``, as indices (of keys, in their order, and of items)."""
    position: list[int] = []
    for segment in loc:
        if isinstance(doc, dict) and segment in doc:
            position.append(list(doc).index(segment))
            doc = doc[segment]
        elif isinstance(doc, list) and isinstance(segment, int) and 0 <= segment < len(doc):
            position.append(segment)
            doc = doc[segment]
        else:  # a missing key: after those present
            position.append(len(doc) if isinstance(doc, (dict, list)) else 0)
            break
    return tuple(position)


def _without(doc: object, locs: list[Loc]) -> object:
    """A copy of ``doc`` without the keys at ``locs``."""
    doc = copy.deepcopy(doc)
    for loc in locs:
        parent: Any = doc
        for segment in loc[:-1]:
            parent = parent[segment]
        del parent[loc[-1]]
    return doc


def json_schema(adapter: TypeAdapter[Any], *, title: str, description: str) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of what ``adapter`` validates, titled for editors."""
    schema = adapter.json_schema()
    schema.pop("title", None)
    schema.pop("description", None)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": title,
        "description": description,
        **schema,
    }
