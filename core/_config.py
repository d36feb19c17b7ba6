"""Configuration: the immutable, validated values the core uses, and :func:`load_config`.

Parsing is pure: the shell reads the files and the environment and hands
their text and a mapping in; a :class:`Config` or a :class:`ConfigError`
comes out. Nothing here touches the file system.

Each source has its module: :mod:`._servers` (the servers file, ``.mcp.json``
shape), :mod:`._rules` (the rules file) and :mod:`._settings` (the
``GATEWAY_*`` variables). Each declares its source's shape with pydantic and
converts what it validated into the values here (:class:`ServerSpec`,
:class:`Settings`, the document :meth:`Policy.compile` takes); the values,
not the pydantic types, are what the rest of the core sees.
:mod:`._validation` says how pydantic's findings become problems.

Validation never stops at the first problem: every error and warning in both
files and the environment is collected, each located by file and JSON path
(:func:`~._policy.json_path`), so one run of ``lockgate validate`` shows them
all. Errors refuse the configuration; warnings ride along in
:attr:`Config.warnings`.

Those three modules import pydantic, which costs more to import than the
rest of the core together, so they are imported when a configuration is
loaded (:func:`load_config`, :func:`settings_from_env`,
:func:`config_schema`), not with this module: an embedder that builds its
:class:`Config` in code never pays for pydantic.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from ._policy import Policy, json_path
from ._strictjson import Flawed, parse

__all__ = [
    "Config",
    "ConfigError",
    "InstanceSpec",
    "Isolation",
    "Problem",
    "ServerSpec",
    "Settings",
    "Strategy",
    "STRATEGIES",
    "config_schema",
    "load_config",
    "settings_from_env",
]

DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024
DEFAULT_CALL_TIMEOUT_MS = 60_000
DEFAULT_START_TIMEOUT_MS = 30_000
DEFAULT_AUDIT_LOG = "./logs/audit.jsonl"
DEFAULT_HEALTH_INTERVAL = 30.0
DEFAULT_HEALTH_TIMEOUT = 10.0
#: The hard cap on a call that progress notifications keep alive, unless a
#: server sets ``max_timeout_ms``.
DEFAULT_MAX_TIMEOUT_MS = 600_000

Strategy = Literal["round_robin", "least_connections", "weighted", "health_based", "random"]
STRATEGIES: tuple[Strategy, ...] = ("round_robin", "least_connections", "weighted", "health_based", "random")
Isolation = Literal["shared", "per_client"]
DEFAULT_HTTP_HOST = "127.0.0.1"
DEFAULT_HTTP_PORT = 8000
DEFAULT_SESSION_TTL = 3600.0
DEFAULT_SHUTDOWN_GRACE = 10.0
DEFAULT_MAX_CONNECTIONS = 1000
DEFAULT_MAX_CONNECTIONS_PER_ADDRESS = 256
DEFAULT_HTTP_HEAD_TIMEOUT = 10.0

LogThreshold = Literal["debug", "info", "warning", "error"]

ENVIRONMENT = "environment"
"""The ``file`` of problems found in ``GATEWAY_*`` variables."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Problem:
    """One error or warning, located by file and JSON path (``mcpServers.git.args[2]``)."""

    file: str
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}: {self.path}" if self.path else self.file
        return f"{where}: {self.message}"


class ConfigError(Exception):
    """The configuration is invalid; ``problems`` says every way it is.

    ``warnings`` holds the warnings found on the way, for tools that show
    everything at once.
    """

    def __init__(self, problems: list[Problem], *, warnings: tuple[Problem, ...] = ()) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems
        self.warnings = warnings


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerSpec:
    """One downstream server from ``mcpServers``, after ``${VAR}`` substitution.

    ``transport`` to ``headers`` say how to start the server; with
    ``instances`` they are copied from the first instance (for display), and
    each instance carries its own. The other fields shape the pool of
    instances (see :mod:`lockgate.core._pool`). Seconds are floats;
    ``None`` means "the gateway's setting" (health) or "off" (idle timeout,
    process cap).
    """

    name: str
    transport: Literal["stdio", "http"]
    command: str | None = None
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: str | None = None
    url: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    description: str = ""
    timeout_ms: int | None = None
    instances: tuple[InstanceSpec, ...] = ()
    strategy: Strategy = "round_robin"
    isolation: Isolation = "shared"
    retry_calls: bool = False
    max_timeout_ms: int | None = None
    idle_timeout: float | None = None
    health_interval: float | None = None
    health_timeout: float | None = None
    max_processes: int | None = None

    def launch_specs(self) -> tuple[InstanceSpec, ...]:
        """The instances to balance over: ``instances``, or the server itself as its one instance."""
        return self.instances or (InstanceSpec(spec=self),)


@dataclass(frozen=True, slots=True, kw_only=True)
class InstanceSpec:
    """One instance of a server: how to start it (a one-instance :class:`ServerSpec`) and its weight.

    ``spec`` is what :class:`~lockgate.core._actions.StartDownstream` carries,
    so a shell starts an instance exactly as it starts a plain server.
    """

    spec: ServerSpec
    weight: int = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """Process-wide settings from ``GATEWAY_*`` variables and command-line flags."""

    default_agent: str | None = None
    debug: bool = False
    init_strategy: Literal["eager", "lazy"] = "eager"
    audit_log: str = DEFAULT_AUDIT_LOG
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    call_timeout_ms: int = DEFAULT_CALL_TIMEOUT_MS
    start_timeout_ms: int = DEFAULT_START_TIMEOUT_MS
    #: ``GATEWAY_LOG_LEVEL``; ``None`` is the quiet default (start-up summary,
    #: warnings, errors), or everything when ``debug`` is on.
    log_level: LogThreshold | None = None
    #: ``GATEWAY_LOG_FORMAT``: one ``key=value`` line or one JSON object per record.
    log_format: Literal["text", "json"] = "text"
    #: Seconds between health-check pings of a live instance (0: no checks).
    health_interval: float = DEFAULT_HEALTH_INTERVAL
    #: Seconds a health-check ping may take.
    health_timeout: float = DEFAULT_HEALTH_TIMEOUT
    # Streamable HTTP front (GATEWAY_TRANSPORT, GATEWAY_HTTP_*, GATEWAY_CORS_ORIGINS, ...).
    transport: Literal["stdio", "http"] = "stdio"
    http_host: str = DEFAULT_HTTP_HOST
    http_port: int = DEFAULT_HTTP_PORT
    cors_origins: tuple[str, ...] = ()
    allowed_hosts: tuple[str, ...] = ()
    session_ttl: float = DEFAULT_SESSION_TTL
    shutdown_grace: float = DEFAULT_SHUTDOWN_GRACE
    #: Connections the HTTP front holds open at once (``GATEWAY_MAX_CONNECTIONS``).
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    #: ... from one peer address, 0 for no limit (``GATEWAY_MAX_CONNECTIONS_PER_ADDRESS``).
    max_connections_per_address: int = DEFAULT_MAX_CONNECTIONS_PER_ADDRESS
    #: Seconds a request head may take from its first byte (``GATEWAY_HTTP_HEAD_TIMEOUT``).
    http_head_timeout: float = DEFAULT_HTTP_HEAD_TIMEOUT


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    """Everything the core needs to decide: servers, compiled policy, settings."""

    servers: Mapping[str, ServerSpec]
    policy: Policy
    settings: Settings = field(default_factory=Settings)
    warnings: tuple[Problem, ...] = ()


# Loading


def settings_from_env(environ: Mapping[str, str], *, debug: bool = False) -> Settings:
    """Build :class:`Settings` from ``GATEWAY_*`` variables; ``debug`` forces debug on.

    An empty variable counts as unset: ``GATEWAY_X=`` is how compose files and
    CI systems clear a variable.

    Raises:
        ConfigError: a variable holds a value of the wrong kind; every such
            variable is reported.
    """
    from . import _settings

    return _settings.settings_from_env(environ, debug=debug)


def config_schema(kind: Literal["servers", "rules"]) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of the servers file or of the rules file.

    It is generated from the pydantic types that validate the file, so it
    says what :func:`load_config` accepts without a warning (an editor
    flags unknown keys, which the gateway ignores with a warning). The same
    documents ship with the package as ``lockgate/core/schemas/servers.schema.json``
    and ``rules.schema.json``.

    Raises:
        ValueError: ``kind`` is neither ``"servers"`` nor ``"rules"``.
    """
    if kind == "servers":
        from ._servers import schema
    elif kind == "rules":
        from ._rules import schema
    else:
        raise ValueError(f"no schema for {kind!r}: use 'servers' or 'rules'")
    return schema()


class _Report:
    """Collects the problems found in one file."""

    def __init__(self, file: str, errors: list[Problem], warnings: list[Problem]) -> None:
        self.file = file
        self.errors = errors
        self.warnings = warnings

    def add(self, path: tuple[str | int, ...], message: str, *, warning: bool = False) -> None:
        problem = Problem(file=self.file, path=json_path(*path), message=message)
        (self.warnings if warning else self.errors).append(problem)


_NOT_JSON = object()  # what _parse_json returns for a file that is not JSON


def _parse_json(source: str | Mapping[str, Any], report: _Report) -> object:
    """Parse one file; :data:`_NOT_JSON` (with an error) when it is not JSON.

    A file is held to the same strict JSON as messages
    (:mod:`~lockgate.core._strictjson`): a description with a lone surrogate
    or a timeout of ``NaN`` would otherwise reach an encoder later. A mapping
    goes through its JSON text, so it meets the very same checks.
    """
    if isinstance(source, str):
        text = source
    else:
        try:
            text = json.dumps(source)
        except (TypeError, ValueError, RecursionError) as exc:
            report.add((), f"not a JSON document: {exc}")
            return _NOT_JSON
    try:
        json.loads(text)
    except json.JSONDecodeError as exc:
        report.add((), f"invalid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})")
        return _NOT_JSON
    except ValueError:  # Python's limit on the digits of an int
        report.add((), "invalid JSON: a number has too many digits")
        return _NOT_JSON
    except RecursionError:
        report.add((), "invalid JSON: nested too deeply")
        return _NOT_JSON
    value = parse(text)
    if isinstance(value, Flawed):
        for flaw in value.flaws:
            report.add(flaw.path, f"invalid JSON: {flaw.detail}")
        return _NOT_JSON
    return value


def load_config(
    *,
    servers: str | Mapping[str, Any],
    rules: str | Mapping[str, Any],
    environ: Mapping[str, str],
    servers_file: str = "servers",
    rules_file: str = "rules",
    settings: Settings | None = None,
) -> Config:
    """Parse and validate both files into one :class:`Config`.

    Each file is given as its text or as the mapping it would parse into;
    a mapping is checked exactly as its text would be (a ``NaN``, a lone
    surrogate or a value JSON cannot hold is a problem, not a crash).

    Args:
        servers: the servers file (``.mcp.json`` shape).
        rules: the rules file.
        environ: the variables for ``${VAR}`` substitution, and for
            :func:`settings_from_env` when ``settings`` is not given. Nothing
            is read from ``os.environ``: pass it in if that is what you mean.
        servers_file: the servers file's name, as problems should show it.
        rules_file: the rules file's name, as problems should show it.
        settings: settings already built (from command-line flags, say).

    Raises:
        ConfigError: with every problem found, each naming file and JSON path.
    """
    from . import _rules, _servers

    errors: list[Problem] = []
    warnings: list[Problem] = []

    servers_report = _Report(servers_file, errors, warnings)
    servers_doc = _parse_json(servers, servers_report)
    specs = None
    if servers_doc is not _NOT_JSON:
        specs, found = _servers.parse(servers_doc, environ)
        for issue in found:
            servers_report.add(issue.loc, issue.message, warning=issue.warning)

    rules_report = _Report(rules_file, errors, warnings)
    rules_doc = _parse_json(rules, rules_report)
    document = None
    if rules_doc is not _NOT_JSON:
        document, found = _rules.parse(rules_doc)
        for issue in found:
            rules_report.add(issue.loc, issue.message, warning=issue.warning)

    if settings is None:
        try:
            settings = settings_from_env(environ)
        except ConfigError as exc:
            errors.extend(exc.problems)
            settings = Settings()

    if specs is not None and document is not None:
        for path, server in _rules.mentioned_servers(document):
            if server not in specs:
                rules_report.add(path, f"server {server!r} is not configured in {servers_file}", warning=True)

    if errors:
        raise ConfigError(errors, warnings=tuple(warnings))
    assert document is not None and specs is not None  # no errors implies both parsed
    policy = Policy.compile(document)
    if settings.default_agent is not None and settings.default_agent not in policy.agents:
        warnings.append(
            Problem(
                file=ENVIRONMENT,
                path="GATEWAY_DEFAULT_AGENT",
                message=f"agent {settings.default_agent!r} is not defined in {rules_file}",
            )
        )
    return Config(
        servers=MappingProxyType(specs),
        policy=policy,
        settings=settings,
        warnings=tuple(warnings),
    )
