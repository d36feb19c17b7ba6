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
``extra_forbidden``    ``unknown key 'x' is ignored``, a warning (or the
                       error ``unknown key 'x'``: :data:`UNKNOWN_KEYS_ARE_ERRORS`)
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
says ``additionalProperties: false`` and editors flag typos, while the gateway
only warns: when every issue is a warning, :func:`check` drops the keys they
name and validates again.

Issues come out in the order of the document (an object's own problem before
its children's), which is the order a reader meets them in the file.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

from pydantic import ConfigDict, TypeAdapter, ValidationError, ValidationInfo, WrapValidator
from pydantic_core import ErrorDetails, InitErrorDetails, PydanticCustomError

__all__ = [
    "UNKNOWN_KEYS_ARE_ERRORS",
    "Issue",
    "Loc",
    "an_object",
    "check",
    "check_part",
    "expected",
    "fail",
    "issues",
    "json_schema",
    "kind",
    "said",
    "shape",
]

#: The one switch between "an unknown key is ignored, with a warning" (today)
#: and "an unknown key refuses the file".
UNKNOWN_KEYS_ARE_ERRORS = False

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
    key the shape does not have is unknown, unless ``ignored`` words it as one
    the gateway knows but ignores here (a warning either way).
    """
    found = [] if problem is None else [Issue((), problem)]
    try:
        value = adapter.validate_python(part, context=info.context)
    except ValidationError as exc:
        for issue in issues(exc):
            message = ignored(issue.loc[0]) if len(issue.loc) == 1 else None
            found.append(issue if message is None else Issue(issue.loc, message, warning=True))
        fail(found)
    if found:
        fail(found)
    return value


def issues(exc: ValidationError) -> list[Issue]:
    """Translate pydantic's errors, in pydantic's order."""
    return [_issue(error) for error in exc.errors()]


def _issue(error: ErrorDetails) -> Issue:
    loc = tuple(error["loc"])
    match error["type"]:
        case "missing":
            return Issue(loc, "is required")
        case "extra_forbidden" if UNKNOWN_KEYS_ARE_ERRORS:
            return Issue(loc, f"unknown key {loc[-1]!r}")
        case "extra_forbidden":
            return Issue(loc, f"unknown key {loc[-1]!r} is ignored", warning=True)
        case "lockgate_warning":
            return Issue(loc, error["msg"], warning=True)
        case "lockgate_key":
            return Issue(loc[:-1], error["msg"])
        case _:  # "lockgate", or a failure no type words (pydantic's message then)
            return Issue(loc, error["msg"])


def check(
    adapter: TypeAdapter[T], doc: object, context: Mapping[str, Any] | None = None
) -> tuple[T, list[Issue]] | tuple[None, list[Issue]]:
    """Validate a parsed document: the value (``None`` on any error) and every issue, in document order.

    When every issue is a warning, each names something the gateway ignores
    (an unknown key, a key of the other transport): the value is validated
    again without those keys.
    """
    try:
        return adapter.validate_python(doc, context=context), []
    except ValidationError as exc:
        found = sorted(issues(exc), key=lambda issue: _position(doc, issue.loc))
    if any(not issue.warning for issue in found):
        return None, found
    return adapter.validate_python(_without(doc, [issue.loc for issue in found]), context=context), found


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
