"""``${VAR}`` and ``${VAR:-default}`` in the launch keys of the servers file.

:func:`expand` is a pydantic after-validator: it runs once a value has been
checked to be a string, an array of strings or an object of strings (an
array with one wrong item is not expanded at all, so its problems are
reported once), reads the variables from the validation context
(``{"environ": ...}``), and reports every bad reference at its place.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationInfo

from ._validation import Issue, Loc, fail

__all__ = ["expand"]

# `${` up to the next `}`; a missing `}` leaves `close` empty.
_REFERENCE = re.compile(r"\$\{(?P<body>[^}]*)(?P<close>\}?)")
_REFERENCE_BODY = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>.*))?", re.DOTALL)


def expand(value: Any, info: ValidationInfo) -> Any:
    """Expand a string, the items of an array of strings, or the values of an object of strings.

    Raises:
        ValidationError: a reference is malformed or names an unset
            variable without a default; every such reference is reported.
    """
    assert info.context is not None, "validate with the variables as context: {'environ': ...}"
    environ: Mapping[str, str] = info.context["environ"]
    found: list[Issue] = []
    if isinstance(value, str):
        result: Any = _expand(value, environ, (), found)
    elif isinstance(value, list):
        result = [_expand(item, environ, (index,), found) for index, item in enumerate(value)]
    else:
        result = {key: _expand(item, environ, (key,), found) for key, item in value.items()}
    if found:
        fail(found)
    return result


def _expand(value: str, environ: Mapping[str, str], loc: Loc, found: list[Issue]) -> str:
    """Expand one string; add its problems to ``found``.

    A ``$`` not followed by ``{`` is kept. The default applies when the
    variable is unset, not when it is set but empty: "VAR if set, otherwise
    default", as Claude Code documents it for the same files. One level only:
    a value that contains ``${`` is not expanded again. Messages never quote
    the value: it may hold a secret.
    """

    def reference(match: re.Match[str]) -> str:
        body = match["body"]
        parts = _REFERENCE_BODY.fullmatch(body)
        if not match["close"]:
            found.append(Issue(loc, "'${' has no closing '}'"))
        elif parts is None:
            found.append(Issue(loc, f"'${{{body}}}' is not a reference: use ${{VAR}} or ${{VAR:-default}}"))
        elif parts["default"] is not None and "${" in parts["default"]:
            found.append(Issue(loc, f"${{{parts['name']}:-...}}: a default cannot hold another reference"))
        elif parts["name"] in environ:
            return environ[parts["name"]]
        elif parts["default"] is not None:
            return parts["default"]
        else:
            found.append(Issue(loc, f"${{{parts['name']}}} is not set"))
        return match[0]

    return _REFERENCE.sub(reference, value)
