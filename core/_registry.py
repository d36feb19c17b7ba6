"""The live registry: instances registered while the gateway runs, merged into the configuration.

Theory of operation
-------------------
An operator registers an instance of a server (``POST /gateway/register``):
a stdio command or a Streamable HTTP endpoint, with an id, a weight and a
description. The shell keeps registrations in its database; the core only
turns them into configuration, here, without I/O:

- :func:`parse_registration` checks a request body and gives a
  :class:`Registration`, or the problems with it, each naming its field;
- :func:`merge_registrations` adds registrations to a :class:`Config` built
  from the files: an instance of a server in the file joins its instances (a
  plain server becomes a pool whose instance ``"0"`` is its own launch), a
  registration for a new name makes a server of its own. What cannot be
  merged (an id that is taken, a value that is no longer valid) is skipped
  with a warning.

The merged configuration goes to the core as any reload does
(:class:`~lockgate.core.ConfigReloaded`); the reload keeps the instances
that did not change running (see :mod:`~lockgate.core._reload`). Registered
servers are subject to the same rules as the others: the registry grants no
access.

:func:`registry_view` is the ``GET /gateway/registry`` body: every server
and instance with where it came from and how it is, never an ``env`` or a
header value.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit, urlunsplit

from ._config import Config, InstanceSpec, Problem, ServerSpec
from ._policy import json_path

if TYPE_CHECKING:
    from ._pool import Pool

__all__ = [
    "INSTANCE_ID",
    "REGISTRY",
    "FieldProblem",
    "Registration",
    "merge_registrations",
    "parse_registration",
    "registry_view",
]

JSONObject = dict[str, Any]

#: The ``file`` of the problems :func:`merge_registrations` reports.
REGISTRY = "registry"

#: What an instance id may be (as the servers file's ``id`` key).
INSTANCE_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")

#: The message of a rules warning about a server the files do not configure
#: (:func:`~._rules.check_names`); a registered server of that name makes it moot.
_NOT_CONFIGURED = "server {!r} is not configured in "


@dataclass(frozen=True, slots=True, kw_only=True)
class Registration:
    """One registered instance: which server, its id, and how to start it (a command or an endpoint).

    ``env`` values are what the process needs; nothing that lists
    registrations shows them.
    """

    server: str
    instance_id: str
    transport: Literal["stdio", "http"]
    endpoint: str | None = None
    command: str | None = None
    args: tuple[str, ...] = ()
    working_dir: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    weight: int = 1
    description: str = ""

    def launch(self) -> ServerSpec:
        """How to start it: the :class:`ServerSpec` a ``StartDownstream`` carries."""
        return ServerSpec(
            name=self.server,
            transport=self.transport,
            command=self.command,
            args=self.args,
            env=MappingProxyType(dict(self.env)),
            cwd=self.working_dir,
            url=self.endpoint,
        )

    def instance(self) -> InstanceSpec:
        """The instance it adds to its server."""
        return InstanceSpec(
            spec=self.launch(), weight=self.weight, id=self.instance_id, source="registry", description=self.description
        )

    def problems(self) -> list[str]:
        """What is wrong with it as a value (one read back from a database is checked again)."""
        found: list[str] = []
        if not self.server or "/" in self.server or not self.server.isprintable():
            found.append("the server name must be 1 or more printable characters without '/'")
        if not INSTANCE_ID.fullmatch(self.instance_id):
            found.append(f"instance id {self.instance_id!r} is not 1 to 64 letters, digits, '.', '_' or '-'")
        if self.weight < 1:
            found.append("the weight must be 1 or more")
        if self.transport == "stdio" and not (self.command or "").strip():
            found.append("a stdio instance needs a command")
        if self.transport == "http" and not _http_url(self.endpoint or ""):
            found.append("an HTTP instance needs an http:// or https:// endpoint with a host")
        return found


@dataclass(frozen=True, slots=True)
class FieldProblem:
    """What is wrong with a registration request, at the field it concerns (``loc``, empty for the whole body)."""

    loc: tuple[str | int, ...]
    message: str

    @property
    def path(self) -> str:
        """The field as a JSON path: ``env.TOKEN``, ``args[2]``."""
        return json_path(*self.loc)

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.loc else self.message


def parse_registration(body: object, *, default_id: str) -> Registration | list[FieldProblem]:
    """Check a ``POST /gateway/register`` body; the :class:`Registration`, or every problem with it.

    The body is ``{"server", "endpoint"}`` or ``{"server", "command", "args"?,
    "working_dir"?, "env"?}``, with an optional ``instance_id``, ``weight``
    and ``description``. Exactly one of ``endpoint`` and ``command`` is
    given; an endpoint is an http(s) URL with a host. Types are strict JSON
    types and unknown keys are errors, as in the servers file. Nothing is
    expanded: a ``${VAR}`` stays as it is.

    Args:
        body: the parsed JSON body.
        default_id: the instance id when the body gives none (the shell
            mints ``reg-`` and 8 hex digits: the core draws no random numbers).
    """
    from ._registration_body import check_body

    checked = check_body(body)
    if isinstance(checked, list):
        return [FieldProblem(loc, message) for loc, message in checked]
    stdio = "command" in checked
    return Registration(
        server=checked["server"],
        instance_id=checked.get("instance_id", default_id),
        transport="stdio" if stdio else "http",
        endpoint=checked.get("endpoint"),
        command=checked.get("command"),
        args=tuple(checked.get("args", ())),
        working_dir=checked.get("working_dir"),
        env=MappingProxyType(dict(checked.get("env", {}))),
        weight=checked.get("weight", 1),
        description=checked.get("description", ""),
    )


def _http_url(url: str) -> bool:
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError on a port out of range
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def _launch_only(spec: ServerSpec) -> ServerSpec:
    """A plain server's launch keys alone: what its instance ``"0"`` is once it has registered company."""
    return ServerSpec(
        name=spec.name,
        transport=spec.transport,
        command=spec.command,
        args=spec.args,
        env=spec.env,
        cwd=spec.cwd,
        url=spec.url,
        headers=spec.headers,
    )


def merge_registrations(config: Config, registrations: Sequence[Registration]) -> tuple[Config, tuple[Problem, ...]]:
    """``config`` with ``registrations`` added, and a warning for each that was skipped.

    An instance of a server in ``config`` joins its instances, after those
    it has; a plain server becomes a pool whose first instance, ``"0"``, is
    its own launch. A registration for a server ``config`` does not have
    makes one, with the defaults a servers file entry has, whose description
    is the first registration's. A registration is skipped (a warning whose
    ``file`` is ``"registry"``) when its instance id is taken on its server
    or when it is not valid; a new server is also skipped when
    ``GATEWAY_PREFIX=never`` allows only one. The warnings are in the
    returned configuration's :attr:`~Config.warnings` too, and rules
    warnings about a server only a registration configures are dropped.
    """
    servers: dict[str, ServerSpec] = dict(config.servers)
    problems: list[Problem] = []
    added: set[str] = set()

    def skip(registration: Registration, why: str) -> None:
        where = json_path(registration.server, registration.instance_id)
        problems.append(Problem(file=REGISTRY, path=where, message=f"registration skipped: {why}"))

    for registration in registrations:
        wrong = registration.problems()
        if wrong:
            skip(registration, "; ".join(wrong))
            continue
        existing = servers.get(registration.server)
        if existing is None:
            if config.settings.prefix == "never" and servers:
                skip(registration, "GATEWAY_PREFIX=never allows only one server, and this would add another")
                continue
            instance = registration.instance()
            servers[registration.server] = replace(
                instance.spec, instances=(instance,), description=registration.description
            )
            added.add(registration.server)
            continue
        instances = existing.launch_specs()
        if any(i.id == registration.instance_id for i in instances):
            skip(registration, f"server {registration.server!r} has an instance {registration.instance_id!r} already")
            continue
        if not existing.instances:
            instances = (InstanceSpec(spec=_launch_only(existing), id="0"),)
        servers[registration.server] = replace(existing, instances=(*instances, registration.instance()))
    moot = tuple(_NOT_CONFIGURED.format(name) for name in added)
    warnings = tuple(w for w in config.warnings if not (w.message.startswith(moot) and moot))
    merged = replace(config, servers=MappingProxyType(servers), warnings=(*warnings, *problems))
    return merged, tuple(problems)


# The view


def registry_view(pools: Mapping[str, Pool], now: float) -> JSONObject:
    """The ``GET /gateway/registry`` body: each server and its instances, where they came from and how they are.

    ``state`` is the link's state (``idle``, ``starting``, ``listing``,
    ``ready``, ``backoff``; under ``per_client`` isolation the busiest of
    its clients' links, or ``idle``). ``healthy``: the instance takes
    requests and has not failed since it last answered. Only the names of
    ``env`` are shown, no header at all, and a URL without its query or
    credentials (a token in a URL is a secret too).
    """
    servers: JSONObject = {}
    for name, pool in pools.items():
        specs = pool.spec.launch_specs()
        instances = []
        for instance, spec in zip(pool.instances, specs):
            launch = instance.spec
            states = [link.state.value for link in pool.links() if link.instance is instance]
            stdio = launch.transport == "stdio"
            instances.append(
                {
                    "id": instance.id,
                    "source": spec.source,
                    "transport": launch.transport,
                    "state": _busiest(states),
                    "weight": instance.weight,
                    "healthy": instance.failures == 0 and instance.accepts(now),
                    "endpoint": None if stdio or launch.url is None else _public_url(launch.url),
                    "command": launch.command if stdio else None,
                    "args": list(launch.args) if stdio else [],
                    "working_dir": launch.cwd if stdio else None,
                    "env_keys": sorted(launch.env) if stdio else [],
                    "description": spec.description,
                }
            )
        sources = {spec.source for spec in specs}
        servers[name] = {
            "source": sources.pop() if len(sources) == 1 else "both",
            "description": pool.spec.description,
            "strategy": pool.spec.strategy,
            "state": pool.summary(now).value,
            "instances": instances,
        }
    return {"servers": servers}


def _public_url(url: str) -> str:
    """``url`` without user information, query or fragment."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


_BUSY = ("ready", "listing", "starting", "backoff", "idle")


def _busiest(states: list[str]) -> str:
    for state in _BUSY:
        if state in states:
            return state
    return "idle"
