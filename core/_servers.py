"""The servers file (``.mcp.json`` shape): its pydantic shape and the :class:`ServerSpec` values it gives.

The file is the one Claude Code and other clients write::

    {"mcpServers": {"git": {"command": "uvx", "args": ["mcp-server-git"], "env": {"TOKEN": "${TOKEN}"}},
                    "search": {"url": "https://mcp.example.com/mcp"}}}

plus optional keys for instances, balancing, health checks and isolation.

Theory of operation
-------------------
Each key has a type (:mod:`._server_keys`) holding its rule, its wording when
it is wrong and its description for the JSON Schema. ``TypedDict`` shapes say
which keys an entry may have: a key may be absent but is never ``null``. An entry is validated as one of these shapes, chosen by the keys it
has rather than by trying each (pydantic's union would report the problems of
every member):

=========================  =====================  ======================================
the entry has              shape                  and also
=========================  =====================  ======================================
``instances``              :class:`PooledServer`  an error if ``command`` or ``url`` too
``command``, no ``url``    :class:`StdioServer`   ``url``, ``headers`` ignored (warning)
``url``, no ``command``    :class:`HttpServer`    ``args``, ``env``, ``cwd`` ignored
both, or neither           every launch key       an error on the entry
=========================  =====================  ======================================

Each item of ``instances`` is chosen the same way (from the second row on).
"""

# No `from __future__ import annotations`: pydantic reads the annotations of
# the shapes below, and builds their validators on first use (defer_build),
# when a string annotation would be resolved in the caller's namespace.
import posixpath
from collections.abc import Callable, Mapping
from dataclasses import replace
from types import MappingProxyType
from typing import Annotated, Any

from pydantic import AfterValidator, Field, TypeAdapter, ValidationInfo, WrapValidator, with_config
from typing_extensions import Required, TypedDict

from ._config import InstanceSpec, ServerSpec
from ._oauth_key import OAuthKey, oauth_spec
from ._server_keys import (
    AnyType,
    Args,
    Command,
    Cwd,
    Description,
    Env,
    Headers,
    HealthInterval,
    HealthTimeout,
    HttpType,
    IdleTimeout,
    InstanceId,
    IsolationKey,
    MaxProcesses,
    MaxTimeoutMs,
    PinsKey,
    RetryCalls,
    StdioType,
    StrategyKey,
    TimeoutMs,
    Url,
    Weight,
    described,
)
from ._validation import Issue, an_object, check, check_part, fail, json_schema, kind, said, shape

__all__ = ["HttpServer", "PooledServer", "ServersFile", "StdioServer", "parse", "schema"]

_STDIO_KEYS = ("command", "args", "env", "cwd")
_HTTP_KEYS = ("url", "headers", "oauth")


# The shapes


class _Stdio(TypedDict, total=False):
    command: Required[Command]
    args: Args
    env: Env
    cwd: Cwd


class _Http(TypedDict, total=False):
    url: Required[Url]
    headers: Headers
    oauth: OAuthKey


class _Unclear(TypedDict, total=False):
    type: AnyType
    command: Command
    args: Args
    env: Env
    cwd: Cwd
    url: Url
    headers: Headers
    oauth: OAuthKey


class _Entry(TypedDict, total=False):
    description: Description
    timeout_ms: TimeoutMs
    strategy: StrategyKey
    isolation: IsolationKey
    retry_calls: RetryCalls
    max_timeout_ms: MaxTimeoutMs
    idle_timeout: IdleTimeout
    health_interval: HealthInterval
    health_timeout: HealthTimeout
    max_processes: MaxProcesses
    pins: PinsKey


class _Weighted(TypedDict, total=False):
    id: InstanceId
    weight: Weight


@with_config(shape("Stdio instance"))
class StdioInstance(_Stdio, _Weighted, total=False):
    """One instance started as a child process, speaking MCP over stdio."""

    type: StdioType


@with_config(shape("HTTP instance"))
class HttpInstance(_Http, _Weighted, total=False):
    """One instance reached over Streamable HTTP."""

    type: HttpType


@with_config(shape("Instance"))
class _UnclearInstance(_Unclear, _Weighted, total=False):
    pass


@with_config(shape("Stdio server"))
class StdioServer(_Stdio, _Entry, total=False):
    """A server started as a child process, speaking MCP over stdio."""

    type: StdioType


@with_config(shape("HTTP server"))
class HttpServer(_Http, _Entry, total=False):
    """A server reached over Streamable HTTP (MCP 2025-11-25)."""

    type: HttpType


@with_config(shape("Server"))
class _UnclearServer(_Unclear, _Entry, total=False):
    pass


# Choosing the shape


def _launch(entry: dict[str, Any], shapes: Mapping[str, TypeAdapter[Any]], info: ValidationInfo) -> Any:
    """Validate a server entry or an instance by its launch keys (see the table above)."""
    if "command" in entry and "url" in entry:
        return check_part(shapes["unclear"], entry, info, "give either 'command' (stdio) or 'url' (HTTP), not both")
    if "command" in entry:
        return check_part(shapes["stdio"], entry, info, ignored=_only_for("HTTP", _HTTP_KEYS))
    if "url" in entry:
        return check_part(shapes["http"], entry, info, ignored=_only_for("stdio", _STDIO_KEYS))
    return check_part(shapes["unclear"], entry, info, "needs 'command' (stdio) or 'url' (HTTP)")


def _only_for(transport: str, keys: tuple[str, ...]) -> Callable[[str | int], str | None]:
    return lambda key: f"{key!r} applies only to {transport} servers and is ignored" if key in keys else None


def _shapes(stdio: type[Any], http: type[Any], unclear: type[Any]) -> dict[str, TypeAdapter[Any]]:
    return {"stdio": TypeAdapter(stdio), "http": TypeAdapter(http), "unclear": TypeAdapter(unclear)}


_INSTANCE_SHAPES = _shapes(StdioInstance, HttpInstance, _UnclearInstance)
_SERVER_SHAPES = _shapes(StdioServer, HttpServer, _UnclearServer)


def _instance(value: object, _union: Any, info: ValidationInfo) -> Any:
    """Validate one item of ``instances`` as the shape its keys choose, not as pydantic's union would."""
    return _launch(an_object(value), _INSTANCE_SHAPES, info)


def _unique_ids(instances: list[Any]) -> list[Any]:
    """A repeated ``id`` is an error, at each repetition: ids name instances in the registry and the status."""
    seen: set[str] = set()
    repeated: list[Issue] = []
    for index, item in enumerate(instances):
        given = item.get("id")
        own = given if given is not None else str(index)  # an instance without one is named by its position
        if own in seen:
            where, what = ((index, "id"), f"id {own!r}") if given is not None else ((index,), f"its position, {own!r},")
            repeated.append(Issue(where, f"{what} is already the id of another instance of this server"))
        seen.add(own)
    if repeated:
        fail(repeated)
    return instances


Instances = Annotated[
    list[Annotated[StdioInstance | HttpInstance, WrapValidator(_instance)]],
    AfterValidator(_unique_ids),
    Field(min_length=1),
    kind("a non-empty array of objects"),
    described("The instances to balance over; each says how it starts, with command or url."),
]


@with_config(shape("Server with instances"))
class PooledServer(_Entry, total=False):
    """A server run as several instances, balanced by strategy."""

    instances: Required[Instances]
    type: Annotated[Any, described("Ignored: each instance says how it starts.")]


_POOLED = TypeAdapter(PooledServer)


def _server(value: object, _union: Any, info: ValidationInfo) -> Any:
    """Validate one ``mcpServers`` entry as the shape its keys choose, not as pydantic's union would."""
    entry = an_object(value)
    if "instances" not in entry:
        return _launch(entry, _SERVER_SHAPES, info)
    # `command` or `url` in place of instances is an error (reported once,
    # not also as ignored); the other launch keys are ignored.
    given = [key for key in ("command", "url") if key in entry]
    return check_part(
        _POOLED,
        {key: item for key, item in entry.items() if key not in given},
        info,
        f"give either 'instances' or {given[0]!r}, not both" if given else None,
        lambda key: f"{key!r} is ignored: each instance says how it starts" if key in _STDIO_KEYS + _HTTP_KEYS else None,
    )


# The file

ServerName = Annotated[str, Field(min_length=1), said(lambda _: "a server name must not be empty", key=True)]
Server = Annotated[StdioServer | HttpServer | PooledServer, WrapValidator(_server)]


@with_config(shape("Servers file"))
class ServersFile(TypedDict):
    """The servers file, in the .mcp.json shape Claude Code and other MCP clients use."""

    mcpServers: Annotated[
        dict[ServerName, Server],
        kind("an object"),
        described("The servers, by name. Each has command (stdio), url (Streamable HTTP) or instances."),
    ]


_FILE: TypeAdapter[ServersFile] = TypeAdapter(Annotated[ServersFile, kind("an object")])


def parse(
    doc: object, environ: Mapping[str, str], base_dir: str | None = None
) -> tuple[dict[str, ServerSpec] | None, list[Issue]]:
    """Validate a parsed servers file: its servers (``None`` on any error) and every issue, in file order.

    With ``base_dir`` (the servers file's folder), a stdio server's ``cwd``
    is resolved against it, and is it when not given.
    """
    checked, found = check(_FILE, doc, {"environ": environ})
    if checked is None:
        return None, found
    return {name: _spec(name, entry, base_dir) for name, entry in checked["mcpServers"].items()}, found


def schema() -> dict[str, Any]:
    """The servers file's JSON Schema."""
    return json_schema(
        _FILE,
        title="Lockgate servers file (.mcp.json)",
        description="The MCP servers Lockgate fronts, in the .mcp.json shape, with Lockgate's optional keys "
        "for instances, balancing, health checks, isolation and timeouts.",
    )


# The values


def _spec(name: str, entry: Mapping[str, Any], base_dir: str | None) -> ServerSpec:
    """The :class:`ServerSpec` of a validated entry; with instances, it shows the first one's launch keys."""
    instances = tuple(
        InstanceSpec(spec=_launch_spec(name, item, base_dir), weight=item.get("weight", 1), id=item.get("id", str(index)))
        for index, item in enumerate(entry.get("instances", ()))
    )
    launch = instances[0].spec if instances else _launch_spec(name, entry, base_dir)
    # The keys every entry may have are the ServerSpec fields of the same names.
    given = {key: entry[key] for key in _Entry.__optional_keys__ if key in entry}
    if launch.per_user or any(instance.spec.per_user for instance in instances):
        # A principal's token must never serve another's calls: each client
        # session gets its own downstream session, as per_client gives.
        given["isolation"] = "per_client"
    return replace(launch, instances=instances, **given)


def _launch_spec(name: str, entry: Mapping[str, Any], base_dir: str | None) -> ServerSpec:
    """How to start a server or an instance, from its validated launch keys."""
    stdio = "command" in entry
    cwd = entry.get("cwd")
    if stdio and base_dir is not None:
        # posixpath.join keeps an absolute cwd as it is.
        cwd = posixpath.normpath(posixpath.join(base_dir, cwd)) if cwd else base_dir
    return ServerSpec(
        name=name,
        transport="stdio" if stdio else "http",
        command=entry.get("command"),
        args=tuple(entry.get("args", ())),
        env=MappingProxyType(dict(entry.get("env", {}))),
        cwd=cwd,
        url=entry.get("url"),
        headers=MappingProxyType(dict(entry.get("headers", {}))),
        oauth=oauth_spec(entry.get("oauth")),
    )
