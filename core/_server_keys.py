"""The keys of the servers file: for each, a type holding its rule, its wording when it is wrong, and its description.

:mod:`._servers` says which keys an entry may have; the types here say what
each key takes. The wording comes from :func:`~._validation.kind` and
:func:`~._validation.said`; the description goes into the JSON Schema, which
editors show on hover. Launch values are expanded (:mod:`._substitution`) as
they are validated, so a bad ``${VAR}`` is located like any other problem.
"""

from __future__ import annotations

from functools import partial
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, Field

from ._config import STRATEGIES, Isolation, PinMode, Strategy
from ._substitution import expand
from ._validation import Issue, expected, fail, kind, said

__all__ = [
    "AnyType",
    "Args",
    "Command",
    "Cwd",
    "Description",
    "Env",
    "Headers",
    "HealthInterval",
    "HealthTimeout",
    "HttpType",
    "IdleTimeout",
    "INSTANCE_ID_PATTERN",
    "InstanceId",
    "IsolationKey",
    "MaxProcesses",
    "MaxTimeoutMs",
    "PinsKey",
    "PositiveInt",
    "RetryCalls",
    "Seconds",
    "SecondsOrZero",
    "StdioType",
    "StrategyKey",
    "Strings",
    "Text",
    "TimeoutMs",
    "Url",
    "Weight",
    "described",
]

def _not_empty(command: str) -> str:
    if not command.strip():
        fail([Issue((), "must not be empty")])
    return command


def _http_url(url: str) -> str:
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError on a port out of range
        ok = parts.scheme in ("http", "https") and bool(parts.hostname)
    except ValueError:
        ok = False
    if not ok:
        fail([Issue((), "expected an http:// or https:// URL with a host")])
    return url


def _type_problem(transport: str | None, value: object) -> str:
    """What is wrong with ``type`` on an entry whose keys say ``transport`` (``None``: unclear)."""
    if not isinstance(value, str):
        return expected("a string", value)
    if value == "sse":
        return "the SSE transport is not supported; use Streamable HTTP"
    if value in ("http", "streamable-http") and transport == "stdio":
        return f"type {value!r} needs 'url', not 'command'"
    if value == "stdio" and transport == "http":
        return "type 'stdio' needs 'command', not 'url'"
    return f"unknown type {value!r}: use 'stdio', 'http' or 'streamable-http'"


def described(text: str, *, expanded: bool = False) -> Any:
    """A key's description; ``expanded`` adds that ``${VAR}`` references are expanded."""
    return Field(description=f"{text} ${{VAR}} and ${{VAR:-default}} are expanded." if expanded else text)


Text = Annotated[str, kind("a string")]
PositiveInt = Annotated[int, Field(gt=0), kind("a positive integer")]
Seconds = Annotated[float, Field(gt=0, lt=1e9), kind("a positive number of seconds")]
SecondsOrZero = Annotated[float, Field(ge=0, lt=1e9), kind("a number of seconds, 0 or more")]
Strings = Annotated[dict[str, Text], kind("an object of strings"), AfterValidator(expand)]

Command = Annotated[
    Text,
    AfterValidator(expand),
    AfterValidator(_not_empty),
    described("Program to run. A bare name is searched on the child's PATH; one with a / is relative to cwd.", expanded=True),
    Field(json_schema_extra={"minLength": 1}),  # what a schema can say of _not_empty
]
Args = Annotated[
    list[Text], kind("an array of strings"), AfterValidator(expand), described("The program's arguments.", expanded=True)
]
Env = Annotated[
    Strings,
    described("Added to the child's environment, which otherwise holds only HOME, LOGNAME, PATH, SHELL, TERM, USER, "
         "LANG, LC_ALL and TMPDIR. Pass secrets here.", expanded=True),
]
Cwd = Annotated[
    Text, AfterValidator(expand), described("Working directory for the child. Default: the gateway's.", expanded=True)
]
Url = Annotated[
    Text,
    AfterValidator(expand),
    AfterValidator(_http_url),
    described("The Streamable HTTP endpoint, an http:// or https:// URL with a host: http://host:port/mcp.", expanded=True),
]
Headers = Annotated[
    Strings, described('Sent with every request, e.g. "Authorization": "Bearer ${API_TOKEN}".', expanded=True)
]
StdioType = Annotated[
    Literal["stdio"],
    said(partial(_type_problem, "stdio")),
    described("Optional (Claude Code writes it); it must agree with command."),
]
HttpType = Annotated[
    Literal["http", "streamable-http"],
    said(partial(_type_problem, "http")),
    described("Optional (Claude Code writes it); it must agree with url. 'sse' is not supported."),
]
AnyType = Annotated[Literal["stdio", "http", "streamable-http"], said(partial(_type_problem, None))]
Description = Annotated[Text, described('Shown by list_servers. Default "".')]
TimeoutMs = Annotated[
    PositiveInt, described("Default execute_tool timeout, in ms; a call's own timeout_ms wins. Default 60000.")
]
StrategyKey = Annotated[
    Strategy, said(lambda value: f"{value!r} is not a strategy: use {', '.join(STRATEGIES)}"),
    described("How a request picks among the instances that take requests. Default round_robin."),
]
IsolationKey = Annotated[
    Isolation, said(lambda value: f"{value!r} is not an isolation: use 'shared' or 'per_client'"),
    described("shared: one downstream session per instance serves every client. per_client: each client session "
         "gets its own (its own process). Default shared."),
]
PinsKey = Annotated[
    PinMode, said(lambda value: f"{value!r} is not a pinning mode: use 'strict', 'new-ok' or 'off'"),
    described("Tool-definition pinning for this server: new-ok pins new tools and quarantines changed ones, strict holds "
         "back new tools too, off pins nothing. Default: GATEWAY_PINS, else new-ok."),
]
RetryCalls = Annotated[
    bool,
    kind("true or false"),
    described("Repeat an execute_tool call on another instance if its own died while the call was forwarded. Default false."),
]
MaxTimeoutMs = Annotated[
    PositiveInt, described("Hard cap, in ms: progress notifications never keep a call alive longer. Default 600000.")
]
IdleTimeout = Annotated[
    Seconds, described("Stop an instance (or a per-client session) after this many idle seconds. Default: off.")
]
HealthInterval = Annotated[
    SecondsOrZero,
    described("Seconds between health-check pings of each live instance; 0: none. Default GATEWAY_HEALTH_INTERVAL."),
]
HealthTimeout = Annotated[Seconds, described("Seconds a health-check ping may take. Default GATEWAY_HEALTH_TIMEOUT.")]
MaxProcesses = Annotated[PositiveInt, described("The most connections this server may have at once. Default: no cap.")]
Weight = Annotated[PositiveInt, described("This instance's share for the weighted and random strategies. Default 1.")]
INSTANCE_ID_PATTERN = r"[A-Za-z0-9._-]{1,64}"
InstanceId = Annotated[
    str,
    Field(pattern=f"^{INSTANCE_ID_PATTERN}$"),
    said(lambda value: expected("1 to 64 letters, digits, '.', '_' or '-'", value)),
    described("This instance's id, unique within the server: 1 to 64 letters, digits, '.', '_' and '-'. "
              "Default: its position, \"0\", \"1\", ..."),
]
