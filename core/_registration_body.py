"""The shape of a ``POST /gateway/register`` body, validated with pydantic like the servers file.

Kept apart from :mod:`._registry` because it imports pydantic, which the
core imports only when something is validated (see :mod:`._config`). The
keys reuse the servers file's rules (:mod:`._server_keys`) without
``${VAR}`` expansion: a registration comes over the network, and expanding
it would hand the gateway's own environment to whoever registers.

============================  ======================================
the body has                  and also
============================  ======================================
``command``, no ``endpoint``  a stdio instance
``endpoint``, no ``command``  an HTTP instance: ``args``, ``env``
                              and ``working_dir`` are errors
both, or neither              an error on the body
============================  ======================================
"""

# No `from __future__ import annotations`: pydantic reads the annotations below.
from typing import Annotated, Any

from pydantic import AfterValidator, Field, TypeAdapter, ValidationError, with_config
from typing_extensions import Required, TypedDict

from ._server_keys import INSTANCE_ID_PATTERN, PositiveInt, Text, _http_url, _not_empty
from ._validation import Issue, expected, issues, kind, said, shape

__all__ = ["RegistrationBody", "check_body"]

Loc = tuple[str | int, ...]

ServerName = Annotated[
    str,
    Field(min_length=1, max_length=128, pattern=r"^[^/\x00-\x1f\x7f]+$"),
    said(lambda value: expected("a server name: 1 to 128 characters, no '/'", value)),
]
InstanceId = Annotated[
    str,
    Field(pattern=f"^{INSTANCE_ID_PATTERN}$"),
    said(lambda value: expected("1 to 64 letters, digits, '.', '_' or '-'", value)),
]
Endpoint = Annotated[Text, AfterValidator(_http_url)]
Command = Annotated[Text, AfterValidator(_not_empty)]
Args = Annotated[list[Text], kind("an array of strings")]
Env = Annotated[dict[str, Text], kind("an object of strings")]


@with_config(shape("Registration"))
class RegistrationBody(TypedDict, total=False):
    """A registration: which server, and a command (stdio) or an endpoint (Streamable HTTP)."""

    server: Required[ServerName]
    endpoint: Endpoint
    command: Command
    args: Args
    working_dir: Text
    env: Env
    instance_id: InstanceId
    weight: PositiveInt
    description: Text


_BODY: TypeAdapter[RegistrationBody] = TypeAdapter(Annotated[RegistrationBody, kind("an object")])
_STDIO_ONLY = ("args", "env", "working_dir")


def check_body(body: object) -> dict[str, Any] | list[tuple[Loc, str]]:
    """The validated body, or every problem found, each as (where, what), in the order of the body."""
    found: list[Issue] = []
    if isinstance(body, dict):
        if "endpoint" in body and "command" in body:
            found.append(Issue((), "give either 'endpoint' (HTTP) or 'command' (stdio), not both"))
        elif "endpoint" not in body and "command" not in body:
            found.append(Issue((), "needs 'endpoint' (HTTP) or 'command' (stdio)"))
        elif "endpoint" in body:
            found += [Issue((key,), f"{key!r} applies only to stdio instances (with 'command')") for key in _STDIO_ONLY if key in body]
    try:
        checked = _BODY.validate_python(body)
    except ValidationError as exc:
        found += issues(exc, _BODY)
    if found:
        return [(issue.loc, issue.message) for issue in found]
    return dict(checked)
