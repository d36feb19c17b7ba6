"""Configuration: validated, immutable values built from the two JSON files.

Parsing is pure: the shell reads the files and the environment and hands
their text and a mapping in; a :class:`Config` or a :class:`ConfigError`
comes out. Nothing here touches the file system.

Validation never stops at the first problem: every error and warning in both
files and the environment is collected, each located by file and JSON path
(:func:`~.policy.json_path`), so one run of ``lockgate validate`` shows them all.
Errors refuse the configuration; warnings ride along in :attr:`Config.warnings`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal
from urllib.parse import urlsplit

# Private helpers shared so that both files word their problems alike.
from ._policy import _AGENT_ID_RULE, _expected
from ._policy import Policy, check_rules, is_glob, json_path, valid_agent_id
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
_LOG_THRESHOLDS: dict[str, LogThreshold] = {"debug": "debug", "info": "info", "warning": "warning", "error": "error"}

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
    instances (see :mod:`lockgate.core._downstream`). Seconds are floats;
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


# Environment

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"", "0", "false", "no", "off"})


def settings_from_env(environ: Mapping[str, str], *, debug: bool = False) -> Settings:
    """Build :class:`Settings` from ``GATEWAY_*`` variables; ``debug`` forces debug on.

    An empty variable counts as unset: ``GATEWAY_X=`` is how compose files and
    CI systems clear a variable.

    Raises:
        ConfigError: a variable holds a value of the wrong kind; every such
            variable is reported.
    """
    problems: list[Problem] = []

    def problem(name: str, message: str) -> None:
        problems.append(Problem(file=ENVIRONMENT, path=name, message=message))

    default_agent = environ.get("GATEWAY_DEFAULT_AGENT") or None
    if default_agent is not None and not valid_agent_id(default_agent):
        message = f"{default_agent!r} is not a valid agent id: {_AGENT_ID_RULE}"
        problem("GATEWAY_DEFAULT_AGENT", message)

    raw_debug = environ.get("GATEWAY_DEBUG", "").strip().lower()
    if raw_debug in _TRUE:
        debug = True
    elif raw_debug not in _FALSE:
        message = f"{raw_debug!r} is not a boolean: use 1/true/yes/on or 0/false/no/off"
        problem("GATEWAY_DEBUG", message)

    audit_log = environ.get("GATEWAY_AUDIT_LOG") or DEFAULT_AUDIT_LOG

    init_strategy: Literal["eager", "lazy"] = "eager"
    raw_strategy = environ.get("GATEWAY_INIT_STRATEGY", "").strip().lower()
    if raw_strategy == "lazy":
        init_strategy = "lazy"
    elif raw_strategy not in ("", "eager"):
        message = f"{raw_strategy!r} is not a strategy: use 'eager' or 'lazy'"
        problem("GATEWAY_INIT_STRATEGY", message)

    max_message_bytes = DEFAULT_MAX_MESSAGE_BYTES
    raw_max = environ.get("GATEWAY_MAX_MESSAGE_BYTES", "").strip()
    if raw_max:
        # Digits only: int() would also take "+5", "1_000" and "-3".
        if raw_max.isascii() and raw_max.isdigit() and int(raw_max) > 0:
            max_message_bytes = int(raw_max)
        else:
            problem("GATEWAY_MAX_MESSAGE_BYTES", f"{raw_max!r} is not a positive integer")

    raw_level = environ.get("GATEWAY_LOG_LEVEL", "").strip().lower()
    log_level = _LOG_THRESHOLDS.get(raw_level)
    if raw_level and log_level is None:
        problem("GATEWAY_LOG_LEVEL", f"{raw_level!r} is not a level: use debug, info, warning or error")

    log_format: Literal["text", "json"] = "text"
    raw_format = environ.get("GATEWAY_LOG_FORMAT", "").strip().lower()
    if raw_format == "json":
        log_format = "json"
    elif raw_format not in ("", "text"):
        problem("GATEWAY_LOG_FORMAT", f"{raw_format!r} is not a format: use 'text' or 'json'")
    def seconds(name: str, default: float, *, zero: bool) -> float:
        raw = environ.get(name, "").strip()
        if not raw:
            return default
        value = _parse_seconds(raw)
        if value is None or (value == 0 and not zero):
            kind = "a number of seconds, 0 or more" if zero else "a positive number of seconds"
            problem(name, f"{raw!r} is not {kind}")
            return default
        return value

    health_interval = seconds("GATEWAY_HEALTH_INTERVAL", DEFAULT_HEALTH_INTERVAL, zero=True)
    health_timeout = seconds("GATEWAY_HEALTH_TIMEOUT", DEFAULT_HEALTH_TIMEOUT, zero=False)

    http = _http_settings(environ, problem)

    if problems:
        raise ConfigError(problems)
    return Settings(
        default_agent=default_agent,
        debug=debug,
        init_strategy=init_strategy,
        audit_log=audit_log,
        max_message_bytes=max_message_bytes,
        log_level=log_level,
        log_format=log_format,
        health_interval=health_interval,
        health_timeout=health_timeout,
        **http,
    )


def _http_settings(environ: Mapping[str, str], problem: Callable[[str, str], None]) -> dict[str, Any]:
    """The Streamable HTTP settings from ``GATEWAY_*`` variables, as keyword arguments of :class:`Settings`."""
    values: dict[str, Any] = {}
    transport = environ.get("GATEWAY_TRANSPORT", "").strip().lower()
    if transport in ("stdio", "http"):
        values["transport"] = transport
    elif transport:
        problem("GATEWAY_TRANSPORT", f"{transport!r} is not a transport: use 'stdio' or 'http'")
    host = environ.get("GATEWAY_HTTP_HOST", "").strip()
    if host:
        values["http_host"] = host
    raw_port = environ.get("GATEWAY_HTTP_PORT", "").strip()
    if raw_port:
        if raw_port.isascii() and raw_port.isdigit() and int(raw_port) <= 65535:
            values["http_port"] = int(raw_port)
        else:
            problem("GATEWAY_HTTP_PORT", f"{raw_port!r} is not a port number (0 to 65535)")
    for variable, key in (("GATEWAY_CORS_ORIGINS", "cors_origins"), ("GATEWAY_ALLOWED_HOSTS", "allowed_hosts")):
        items = tuple(item.strip() for item in environ.get(variable, "").split(",") if item.strip())
        if items:
            values[key] = items
    for variable, key, zero in (
        ("GATEWAY_MAX_CONNECTIONS", "max_connections", False),
        ("GATEWAY_MAX_CONNECTIONS_PER_ADDRESS", "max_connections_per_address", True),
    ):
        raw = environ.get(variable, "").strip()
        if not raw:
            continue
        if raw.isascii() and raw.isdigit() and (zero or int(raw) > 0):
            values[key] = int(raw)
        else:
            problem(variable, f"{raw!r} is not {'an integer, 0 or more' if zero else 'a positive integer'}")
    for variable, key in (
        ("GATEWAY_SESSION_TTL", "session_ttl"),
        ("GATEWAY_SHUTDOWN_GRACE", "shutdown_grace"),
        ("GATEWAY_HTTP_HEAD_TIMEOUT", "http_head_timeout"),
    ):
        raw = environ.get(variable, "").strip()
        if not raw:
            continue
        seconds = _parse_seconds(raw)
        if not seconds:
            problem(variable, f"{raw!r} is not a positive number of seconds")
        else:
            values[key] = seconds
    return values


def _parse_seconds(raw: str) -> float | None:
    """A finite, non-negative decimal number of seconds, or ``None``."""
    if not re.fullmatch(r"[0-9]+(\.[0-9]+)?", raw):
        return None
    return float(raw)


# Shared validation helpers

Path = tuple[str | int, ...]


class _Report:
    """Collects the problems found in one file."""

    def __init__(self, file: str, errors: list[Problem], warnings: list[Problem]) -> None:
        self.file = file
        self.errors = errors
        self.warnings = warnings

    def error(self, path: Path, message: str) -> None:
        self.errors.append(Problem(file=self.file, path=json_path(*path), message=message))

    def warn(self, path: Path, message: str) -> None:
        self.warnings.append(Problem(file=self.file, path=json_path(*path), message=message))


_NOT_JSON = object()  # what _parse_json returns for a file that is not JSON


def _parse_json(text: str, report: _Report) -> object:
    """Parse one file; :data:`_NOT_JSON` (with an error) when it is not JSON.

    A file is held to the same strict JSON as messages
    (:mod:`~lockgate.core._strictjson`): a description with a lone surrogate
    or a timeout of ``NaN`` would otherwise reach an encoder later.
    """
    try:
        json.loads(text)
    except json.JSONDecodeError as exc:
        report.error((), f"invalid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})")
        return _NOT_JSON
    except ValueError:  # Python's limit on the digits of an int
        report.error((), "invalid JSON: a number has too many digits")
        return _NOT_JSON
    except RecursionError:
        report.error((), "invalid JSON: nested too deeply")
        return _NOT_JSON
    value = parse(text)
    if isinstance(value, Flawed):
        for flaw in value.flaws:
            report.error(flaw.path, f"invalid JSON: {flaw.detail}")
        return _NOT_JSON
    return value


def _string_list(value: object, path: Path, report: _Report) -> list[str] | None:
    if not isinstance(value, list):
        report.error(path, _expected("an array of strings", value))
        return None
    bad = [index for index, item in enumerate(value) if not isinstance(item, str)]
    for index in bad:
        report.error((*path, index), _expected("a string", value[index]))
    return None if bad else value


def _string_map(value: object, path: Path, report: _Report) -> dict[str, str] | None:
    if not isinstance(value, dict):
        report.error(path, _expected("an object of strings", value))
        return None
    bad = [key for key, item in value.items() if not isinstance(item, str)]
    for key in bad:
        report.error((*path, key), _expected("a string", value[key]))
    return None if bad else value


# ${VAR} substitution

# `${` up to the next `}`; a missing `}` leaves `close` empty.
_REFERENCE = re.compile(r"\$\{(?P<body>[^}]*)(?P<close>\}?)")
_REFERENCE_BODY = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>.*))?", re.DOTALL)


def _substitute(value: str, environ: Mapping[str, str], path: Path, report: _Report) -> str:
    """Expand ``${VAR}`` and ``${VAR:-default}`` in one value.

    A ``$`` not followed by ``{`` is kept. The default applies when the
    variable is unset, not when it is set but empty: "VAR if set, otherwise
    default", as Claude Code documents it for the same files. One level only:
    a value that contains ``${`` is not expanded again. Messages never quote
    the value: it may hold a secret.
    """

    def expand(match: re.Match[str]) -> str:
        body = match["body"]
        if not match["close"]:
            report.error(path, "'${' has no closing '}'")
            return match[0]
        reference = _REFERENCE_BODY.fullmatch(body)
        if reference is None:
            message = f"'${{{body}}}' is not a reference: use ${{VAR}} or ${{VAR:-default}}"
            report.error(path, message)
            return match[0]
        name, default = reference["name"], reference["default"]
        if default is not None and "${" in default:
            report.error(path, f"${{{name}:-...}}: a default cannot hold another reference")
            return match[0]
        if name in environ:
            return environ[name]
        if default is not None:
            return default
        report.error(path, f"${{{name}}} is not set")
        return match[0]

    return _REFERENCE.sub(expand, value)


# Servers file (.mcp.json)

_COMMON_KEYS = frozenset({"type", "description", "timeout_ms"})
_STDIO_KEYS = frozenset({"command", "args", "env", "cwd"})
_HTTP_KEYS = frozenset({"url", "headers"})
# How a server's instances are pooled, balanced, checked and timed out.
_POOL_KEYS = frozenset(
    {
        "instances",
        "strategy",
        "isolation",
        "retry_calls",
        "max_timeout_ms",
        "idle_timeout",
        "health_interval",
        "health_timeout",
        "max_processes",
    }
)
_HTTP_TYPES = ("http", "streamable-http")
_ISOLATIONS = ("shared", "per_client")


def _parse_servers(
    doc: object, environ: Mapping[str, str], report: _Report
) -> dict[str, ServerSpec] | None:
    """Validate the servers document; ``None`` when it has errors."""
    if not isinstance(doc, dict):
        report.error((), _expected("an object", doc))
        return None
    for key in doc:
        if key != "mcpServers":
            report.warn((key,), f"unknown key {key!r} is ignored")
    entries = doc.get("mcpServers")
    if not isinstance(entries, dict):
        missing = "mcpServers" not in doc
        message = "is required" if missing else _expected("an object", entries)
        report.error(("mcpServers",), message)
        return None
    errors_before = len(report.errors)
    servers: dict[str, ServerSpec] = {}
    for name, entry in entries.items():
        spec = _parse_server(name, entry, environ, report)
        if spec is not None:
            servers[name] = spec
    return servers if len(report.errors) == errors_before else None


def _parse_server(
    name: str, entry: object, environ: Mapping[str, str], report: _Report
) -> ServerSpec | None:
    """Validate one ``mcpServers`` entry; ``None`` when it has errors."""
    base: Path = ("mcpServers", name)
    errors_before = len(report.errors)
    if not name:
        report.error(base, "a server name must not be empty")
    if not isinstance(entry, dict):
        report.error(base, _expected("an object", entry))
        return None

    description = entry.get("description", "")
    if not isinstance(description, str):
        report.error((*base, "description"), _expected("a string", description))
    timeout_ms = _positive_int(entry, "timeout_ms", base, report)
    max_timeout_ms = _positive_int(entry, "max_timeout_ms", base, report)
    max_processes = _positive_int(entry, "max_processes", base, report)
    idle_timeout = _seconds(entry, "idle_timeout", base, report, zero=False)
    health_interval = _seconds(entry, "health_interval", base, report, zero=True)
    health_timeout = _seconds(entry, "health_timeout", base, report, zero=False)
    strategy: Strategy = "round_robin"
    if "strategy" in entry:
        value = entry["strategy"]
        if value in STRATEGIES:
            strategy = value
        else:
            report.error((*base, "strategy"), f"{value!r} is not a strategy: use {', '.join(STRATEGIES)}")
    isolation: Isolation = "shared"
    if "isolation" in entry:
        value = entry["isolation"]
        if value in _ISOLATIONS:
            isolation = value
        else:
            report.error((*base, "isolation"), f"{value!r} is not an isolation: use 'shared' or 'per_client'")
    retry_calls = entry.get("retry_calls", False)
    if not isinstance(retry_calls, bool):
        report.error((*base, "retry_calls"), _expected("true or false", retry_calls))

    instances: list[InstanceSpec] = []
    if "instances" in entry:
        given = [key for key in ("command", "url") if key in entry]
        if given:
            report.error(base, f"give either 'instances' or {given[0]!r}, not both")
        for key in entry:
            if key in _STDIO_KEYS | _HTTP_KEYS and key not in given:
                report.warn((*base, key), f"{key!r} is ignored: each instance says how it starts")
            elif key not in _COMMON_KEYS | _STDIO_KEYS | _HTTP_KEYS | _POOL_KEYS:
                report.warn((*base, key), f"unknown key {key!r} is ignored")
        raw = entry["instances"]
        if not isinstance(raw, list) or not raw:
            report.error((*base, "instances"), _expected("a non-empty array of objects", raw))
        else:
            for index, item in enumerate(raw):
                instance = _parse_instance(name, item, (*base, "instances", index), environ, report)
                if instance is not None:
                    instances.append(instance)
        launch = instances[0].spec if instances else None
    else:
        launch = _parse_launch(name, entry, base, environ, report, _COMMON_KEYS | _POOL_KEYS)

    if launch is None or len(report.errors) != errors_before:
        return None
    return ServerSpec(
        name=name,
        transport=launch.transport,
        command=launch.command,
        args=launch.args,
        env=launch.env,
        cwd=launch.cwd,
        url=launch.url,
        headers=launch.headers,
        description=description,
        timeout_ms=timeout_ms,
        instances=tuple(instances),
        strategy=strategy,
        isolation=isolation,
        retry_calls=retry_calls,
        max_timeout_ms=max_timeout_ms,
        idle_timeout=idle_timeout,
        health_interval=health_interval,
        health_timeout=health_timeout,
        max_processes=max_processes,
    )


def _parse_instance(
    name: str, item: object, base: Path, environ: Mapping[str, str], report: _Report
) -> InstanceSpec | None:
    """One entry of ``instances``: a command or a url, and an optional weight."""
    if not isinstance(item, dict):
        report.error(base, _expected("an object", item))
        return None
    weight = _positive_int(item, "weight", base, report)
    launch = _parse_launch(name, item, base, environ, report, frozenset({"type", "weight"}))
    return None if launch is None else InstanceSpec(spec=launch, weight=weight or 1)


def _parse_launch(
    name: str,
    entry: Mapping[str, Any],
    base: Path,
    environ: Mapping[str, str],
    report: _Report,
    other_keys: frozenset[str],
) -> ServerSpec | None:
    """How to start a server (or one instance): ``command``... or ``url``...; ``None`` on errors.

    Keys that are neither launch keys nor ``other_keys`` are warned about.
    """
    errors_before = len(report.errors)
    transport: Literal["stdio", "http"] | None = None
    if "command" in entry and "url" in entry:
        report.error(base, "give either 'command' (stdio) or 'url' (HTTP), not both")
    elif "command" in entry:
        transport = "stdio"
    elif "url" in entry:
        transport = "http"
    else:
        report.error(base, "needs 'command' (stdio) or 'url' (HTTP)")
    _check_type(entry, transport, base, report)

    for key in entry:
        if key in _STDIO_KEYS and transport == "http":
            report.warn((*base, key), f"{key!r} applies only to stdio servers and is ignored")
        elif key in _HTTP_KEYS and transport == "stdio":
            report.warn((*base, key), f"{key!r} applies only to HTTP servers and is ignored")
        elif key not in _STDIO_KEYS | _HTTP_KEYS | other_keys:
            report.warn((*base, key), f"unknown key {key!r} is ignored")

    def text(key: str) -> str | None:
        """A string field, substituted; ``None`` when absent or wrong."""
        if key not in entry:
            return None
        value = entry[key]
        if not isinstance(value, str):
            report.error((*base, key), _expected("a string", value))
            return None
        errors = len(report.errors)
        value = _substitute(value, environ, (*base, key), report)
        # A failed reference is reported once, not again by the checks on the result.
        return value if len(report.errors) == errors else None

    def text_map(key: str) -> dict[str, str]:
        """An object of strings, values substituted."""
        if key not in entry:
            return {}
        values = _string_map(entry[key], (*base, key), report) or {}
        return {k: _substitute(v, environ, (*base, key, k), report) for k, v in values.items()}

    # Keys of the other transport were warned about above and are not read.
    command = cwd = url = None
    args: list[str] = []
    env: dict[str, str] = {}
    headers: dict[str, str] = {}
    if transport != "http":
        command = text("command")
        if command is not None and not command.strip():
            report.error((*base, "command"), "must not be empty")
        if "args" in entry:
            raw = _string_list(entry["args"], (*base, "args"), report) or []
            args = [_substitute(a, environ, (*base, "args", i), report) for i, a in enumerate(raw)]
        env = text_map("env")
        cwd = text("cwd")
    if transport != "stdio":
        url = text("url")
        if url is not None and not _is_http_url(url):
            report.error((*base, "url"), "expected an http:// or https:// URL with a host")
        headers = text_map("headers")

    if transport is None or len(report.errors) != errors_before:
        return None
    return ServerSpec(
        name=name,
        transport=transport,
        command=command,
        args=tuple(args),
        env=MappingProxyType(env),
        cwd=cwd,
        url=url,
        headers=MappingProxyType(headers),
    )


def _positive_int(entry: Mapping[str, Any], key: str, base: Path, report: _Report) -> int | None:
    if key not in entry:
        return None
    value = entry[key]
    # bool is an int to Python but not to JSON.
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    report.error((*base, key), _expected("a positive integer", value))
    return None


def _seconds(entry: Mapping[str, Any], key: str, base: Path, report: _Report, *, zero: bool) -> float | None:
    if key not in entry:
        return None
    value = entry[key]
    if isinstance(value, (int, float)) and not isinstance(value, bool) and (value > 0 or (zero and value == 0)):
        if value < 1e9:  # also refuses inf and absurd values
            return float(value)
    kind = "a number of seconds, 0 or more" if zero else "a positive number of seconds"
    report.error((*base, key), _expected(kind, value))
    return None


def _check_type(
    entry: Mapping[str, Any], transport: str | None, base: Path, report: _Report
) -> None:
    """Check the optional ``type`` Claude Code writes against the keys given."""
    if "type" not in entry:
        return
    kind = entry["type"]
    path = (*base, "type")
    if not isinstance(kind, str):
        report.error(path, _expected("a string", kind))
    elif kind == "sse":
        report.error(path, "the SSE transport is not supported; use Streamable HTTP")
    elif kind == "stdio":
        if transport == "http":
            report.error(path, "type 'stdio' needs 'command', not 'url'")
    elif kind in _HTTP_TYPES:
        if transport == "stdio":
            report.error(path, f"type {kind!r} needs 'url', not 'command'")
    else:
        report.error(path, f"unknown type {kind!r}: use 'stdio', 'http' or 'streamable-http'")


def _is_http_url(url: str) -> bool:
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError on a port out of range
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


# Rules file (.mcp-gateway-rules.json): its shape is checked by policy.check_rules.


def _mentioned_servers(rules: Mapping[str, Any]) -> Iterator[tuple[Path, str]]:
    """Every literal server name a checked rules document names, with its path."""
    for agent, body in (rules.get("agents") or {}).items():
        for side in ("allow", "deny"):
            lists = body.get(side) or {}
            for index, entry in enumerate(lists.get("servers") or ()):
                if not is_glob(entry):
                    yield ("agents", agent, side, "servers", index), entry
            # Keys of `tools` are server names, always literal.
            for server in lists.get("tools") or {}:
                yield ("agents", agent, side, "tools", server), server


# Both files


def load_config(
    *,
    servers_text: str,
    servers_file: str,
    rules_text: str,
    rules_file: str,
    environ: Mapping[str, str],
    settings: Settings | None = None,
) -> Config:
    """Parse and validate both files into one :class:`Config`.

    Args:
        servers_text: the text of the servers file (``.mcp.json`` shape).
        servers_file: its name, as problems should show it.
        rules_text: the text of the rules file.
        rules_file: its name, as problems should show it.
        environ: the variables for ``${VAR}`` substitution, and for
            :func:`settings_from_env` when ``settings`` is not given.
        settings: settings already built (from command-line flags, say).

    Raises:
        ConfigError: with every problem found, each naming file and JSON path.
    """
    errors: list[Problem] = []
    warnings: list[Problem] = []

    servers_report = _Report(servers_file, errors, warnings)
    servers_doc = _parse_json(servers_text, servers_report)
    servers = None
    if servers_doc is not _NOT_JSON:
        servers = _parse_servers(servers_doc, environ, servers_report)

    rules_report = _Report(rules_file, errors, warnings)
    rules_doc = _parse_json(rules_text, rules_report)
    rules_ok = False
    if rules_doc is not _NOT_JSON:
        found = check_rules(rules_doc)
        for problem in found:
            (rules_report.warnings if problem.warning else rules_report.errors).append(
                Problem(file=rules_file, path=problem.path, message=problem.message)
            )
        rules_ok = not any(not problem.warning for problem in found)

    if settings is None:
        try:
            settings = settings_from_env(environ)
        except ConfigError as exc:
            errors.extend(exc.problems)
            settings = Settings()

    if servers is not None and rules_ok:
        assert isinstance(rules_doc, dict)  # check_rules found no error
        for path, server in _mentioned_servers(rules_doc):
            if server not in servers:
                rules_report.warn(path, f"server {server!r} is not configured in {servers_file}")

    if errors:
        raise ConfigError(errors, warnings=tuple(warnings))
    assert isinstance(rules_doc, dict) and servers is not None  # no errors implies both parsed
    policy = Policy.compile(rules_doc)
    if settings.default_agent is not None and settings.default_agent not in policy.agents:
        warnings.append(
            Problem(
                file=ENVIRONMENT,
                path="GATEWAY_DEFAULT_AGENT",
                message=f"agent {settings.default_agent!r} is not defined in {rules_file}",
            )
        )
    return Config(
        servers=MappingProxyType(servers),
        policy=policy,
        settings=settings,
        warnings=tuple(warnings),
    )
