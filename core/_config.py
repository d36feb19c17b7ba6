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
:attr:`Config.warnings`, unless :attr:`Settings.strict` makes every warning
an error too. Nothing that could be a typo is ignored quietly: an unknown or
repeated key is an error, and a name that refers to nothing (a server the
rules name that is not configured, an unknown ``GATEWAY_*`` variable) is a
warning with the closest name that exists.

Those three modules import pydantic, which costs more to import than the
rest of the core together, so they are imported when a configuration is
loaded (:func:`load_config`, :func:`settings_from_env`,
:func:`config_schema`), not with this module: an embedder that builds its
:class:`Config` in code never pays for pydantic.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal

from ._identity import Rate
from ._policy import Mode, Policy, json_path
from ._strictjson import Flawed, parse

if TYPE_CHECKING:
    from ._validation import Issue

__all__ = [
    "Config",
    "ConfigError",
    "DownstreamEra",
    "EnvironmentVariable",
    "STRICT_NOTE",
    "GRANTS",
    "Grant",
    "InstanceSpec",
    "Isolation",
    "OAuthSpec",
    "Mode",
    "PinMode",
    "Prefix",
    "Problem",
    "ServerSpec",
    "Settings",
    "Strategy",
    "STRATEGIES",
    "config_schema",
    "environment_variables",
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
#: How Lockgate gets an OAuth token for a server: a person logs in, or the gateway asks with its own credentials.
Grant = Literal["authorization_code", "client_credentials"]
GRANTS: tuple[Grant, ...] = ("authorization_code", "client_credentials")
DEFAULT_HTTP_HOST = "127.0.0.1"
DEFAULT_HTTP_PORT = 8000
DEFAULT_SESSION_TTL = 3600.0
#: A day: how long a sealed session id opens at all, however active its session (see lockgate.shells.session_ids).
DEFAULT_SESSION_LIFETIME = 86400.0
DEFAULT_SHUTDOWN_GRACE = 10.0
DEFAULT_MAX_CONNECTIONS = 1000
DEFAULT_MAX_CONNECTIONS_PER_ADDRESS = 256
DEFAULT_HTTP_HEAD_TIMEOUT = 10.0
DEFAULT_WS_PING_INTERVAL = 20.0
DEFAULT_WS_PING_TIMEOUT = 20.0
#: ``GATEWAY_TRANSPORT``: stdio, Streamable HTTP, WebSocket, or both of the last on one port.
Transport = Literal["stdio", "http", "ws", "http,ws"]

LogThreshold = Literal["debug", "info", "warning", "error"]
#: ``GATEWAY_PREFIX``: when aggregate mode names a tool or prompt ``server<sep>name``.
Prefix = Literal["auto", "always", "never"]
DEFAULT_NAME_SEPARATOR = "__"
#: ``GATEWAY_PINS`` and a server's ``pins``: hold back new tools too (``strict``),
#: pin them as they come (``new-ok``), or pin nothing (``off``); see :mod:`._pins`.
PinMode = Literal["strict", "new-ok", "off"]
#: ``GATEWAY_DOWNSTREAM_ERA``: how the gateway chooses the era of MCP it speaks to each server.
DownstreamEra = Literal["auto", "handshake", "stateless"]

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


STRICT_NOTE = "; strict mode makes this warning an error"
"""What the message of a warning :attr:`Settings.strict` made an error ends with."""


class ConfigError(Exception):
    """The configuration is invalid; ``problems`` says every way it is.

    ``warnings`` holds the warnings found on the way, for tools that show
    everything at once. In strict mode there are none: each is in
    ``problems``, its message ending with :data:`STRICT_NOTE`, and in
    ``promoted``, so a tool can say how many errors were warnings.
    """

    def __init__(
        self,
        problems: list[Problem],
        *,
        warnings: tuple[Problem, ...] = (),
        promoted: tuple[Problem, ...] = (),
    ) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems
        self.warnings = warnings
        self.promoted = promoted


@dataclass(frozen=True, slots=True, kw_only=True)
class OAuthSpec:
    """How Lockgate authorizes itself to an HTTP server that answers 401 (MCP 2025-11-25, "Authorization").

    Every HTTP server without a configured ``Authorization`` header gets the
    defaults: on a 401, the authorization-code flow with a dynamically
    registered client and one token for the whole gateway. ``enabled=False``
    (``"oauth": false``) turns that off: a 401 is an error. The core only
    reads ``per_user`` (whose token a link uses) and ``grant`` (whether a
    person must log in); the shell runs the flow.
    """

    enabled: bool = True
    grant: Grant = "authorization_code"
    #: A client registered by hand; ``None``: register one dynamically (RFC 7591).
    client_id: str | None = None
    client_secret: str | None = field(default=None, repr=False)
    #: The scopes to ask for; empty: what the server's challenge or metadata names.
    scopes: tuple[str, ...] = ()
    #: Each Lockgate principal logs in for itself, and its calls carry its own token.
    per_user: bool = False
    #: The authorization server the credentials belong to (its issuer URL); ``None``: the one the server names.
    issuer: str | None = None
    #: The loopback port of the redirect URI, for a client registered by hand with a fixed one; ``None``: any free port.
    redirect_port: int | None = None
    #: An HTTPS URL that is the client's id (a Client ID Metadata Document), where the server supports it.
    client_metadata_url: str | None = None


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
    #: How to get a token on a 401 (HTTP only); ``None``: the defaults of :class:`OAuthSpec`.
    oauth: OAuthSpec | None = None
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
    #: Its own pinning mode; ``None``: ``GATEWAY_PINS``.
    pins: PinMode | None = None

    @property
    def per_user(self) -> bool:
        """Does each principal use its own OAuth token for this server (``oauth.per_user``)?"""
        return self.oauth is not None and self.oauth.enabled and self.oauth.per_user

    def launch_specs(self) -> tuple[InstanceSpec, ...]:
        """The instances to balance over: ``instances``, or the server itself as its one instance, ``"0"``.

        Each has its id: an instance given without one (``id=""``) gets its
        position, ``"0"``, ``"1"``, ...
        """
        if not self.instances:
            return (InstanceSpec(spec=self, id="0"),)
        return tuple(i if i.id else replace(i, id=str(n)) for n, i in enumerate(self.instances))


@dataclass(frozen=True, slots=True, kw_only=True)
class InstanceSpec:
    """One instance of a server: how to start it (a one-instance :class:`ServerSpec`) and its weight.

    ``spec`` is what :class:`~lockgate.core._actions.StartDownstream` carries,
    so a shell starts an instance exactly as it starts a plain server.
    """

    spec: ServerSpec
    weight: int = 1
    #: Its name within the server: the servers file's ``id`` key or the
    #: registration's ``instance_id``; ``""`` stands for its position (see
    #: :meth:`ServerSpec.launch_specs`, which fills it in).
    id: str = ""
    #: Where it was configured: the servers file, or the live registry.
    source: Literal["file", "registry"] = "file"
    description: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """Process-wide settings from ``GATEWAY_*`` variables and command-line flags."""

    default_agent: str | None = None
    debug: bool = False
    #: ``GATEWAY_STRICT`` or ``lockgate validate --strict``: every warning is
    #: an error, so :func:`load_config` refuses a configuration that has any.
    strict: bool = False
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
    transport: Transport = "stdio"
    http_host: str = DEFAULT_HTTP_HOST
    http_port: int = DEFAULT_HTTP_PORT
    cors_origins: tuple[str, ...] = ()
    allowed_hosts: tuple[str, ...] = ()
    session_ttl: float = DEFAULT_SESSION_TTL
    #: Seconds a Streamable HTTP session id is valid from its ``initialize``, on any gateway (``GATEWAY_SESSION_LIFETIME``).
    session_lifetime: float = DEFAULT_SESSION_LIFETIME
    shutdown_grace: float = DEFAULT_SHUTDOWN_GRACE
    #: Connections the HTTP front holds open at once (``GATEWAY_MAX_CONNECTIONS``).
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    #: ... from one peer address, 0 for no limit (``GATEWAY_MAX_CONNECTIONS_PER_ADDRESS``).
    max_connections_per_address: int = DEFAULT_MAX_CONNECTIONS_PER_ADDRESS
    #: Seconds a request head may take from its first byte (``GATEWAY_HTTP_HEAD_TIMEOUT``).
    http_head_timeout: float = DEFAULT_HTTP_HEAD_TIMEOUT
    #: Seconds between keep-alive pings of a WebSocket client, 0 for none (``GATEWAY_WS_PING_INTERVAL``).
    ws_ping_interval: float = DEFAULT_WS_PING_INTERVAL
    #: Seconds a WebSocket client has to answer a ping before it is closed (``GATEWAY_WS_PING_TIMEOUT``).
    ws_ping_timeout: float = DEFAULT_WS_PING_TIMEOUT
    #: ``GATEWAY_AUTH``: ``required`` (every caller proves a credential),
    #: ``none`` (said explicitly: no authentication, even off loopback) or
    #: ``off`` (unset). The shell authenticates; the core decides on the
    #: :class:`~lockgate.core.Principal` it hands in.
    auth: Literal["off", "required", "none"] = "off"
    #: ``GATEWAY_RATE_LIMIT``: the rate limit of each agent whose rules set no
    #: ``rate``; ``None``: no limit.
    rate_limit: Rate | None = None
    # Aggregate mode (GATEWAY_MODE, GATEWAY_CONTEXT_WINDOW, GATEWAY_AUTO_THRESHOLD, GATEWAY_PREFIX,
    # GATEWAY_GATEWAY_TOOLS, GATEWAY_NAME_SEPARATOR).
    #: ``GATEWAY_MODE``: how an agent whose rules set no ``mode`` sees the
    #: servers: through the gateway's tools (``on_demand``), or with their
    #: tools, resources and prompts listed as the gateway's own (``aggregate``),
    #: or one of the two by what the tools cost (``auto``, see ``auto_threshold``).
    mode: Mode = "on_demand"
    #: ``GATEWAY_CONTEXT_WINDOW``: the tokens of the context window the
    #: agents run with, for ``mode: auto``.
    context_window: int = 200_000
    #: ``GATEWAY_AUTO_THRESHOLD``: ``mode: auto`` aggregates when the tools an
    #: agent may call cost fewer tokens than this share of ``context_window``,
    #: and serves the gateway's tools otherwise.
    auto_threshold: float = 0.10
    #: ``GATEWAY_TOKENIZER``: what the shell counts tokens with and hands the
    #: core (``Gateway(config, count_tokens=...)``): ``cl100k_base``, a real
    #: tokenizer, or ``estimate``, compact JSON bytes / 4 rounded up, which
    #: loads nothing. The core counts with the counter it is given, whatever
    #: this says; its own default is the estimate.
    tokenizer: Literal["cl100k_base", "estimate"] = "cl100k_base"
    #: ``GATEWAY_PREFIX``: aggregate mode names tools and prompts
    #: ``server<sep>name`` always, never (the names unchanged; only with one
    #: server configured, which :func:`load_config` checks), or ``auto``: when
    #: more than one server is configured.
    prefix: Prefix = "auto"
    #: ``GATEWAY_GATEWAY_TOOLS``: in aggregate mode, list the gateway's own
    #: tools beside the servers', as on-demand mode lists them
    #: (``list_servers``, ``get_server_tools``, ``execute_tool``, and
    #: ``get_gateway_status`` in debug mode).
    gateway_tools: bool = False
    #: ``GATEWAY_NAME_SEPARATOR``: what joins a server's name and an item's,
    #: 1 to 4 of ``A-Z a-z 0-9 _ . -``.
    name_separator: str = DEFAULT_NAME_SEPARATOR
    #: ``GATEWAY_PINS``: tool-definition pinning of servers whose entry sets
    #: no ``pins`` (see :mod:`lockgate.core._pins`).
    pins: PinMode = "new-ok"
    #: ``GATEWAY_DOWNSTREAM_ERA``: which era of MCP the gateway speaks to a
    #: server: ``auto`` probes with ``server/discover`` and speaks 2026-07-28
    #: to a server that offers it, the handshake era to any other;
    #: ``handshake`` sends ``initialize`` only; ``stateless`` speaks
    #: 2026-07-28 only (see :mod:`lockgate.core._downstream_era`).
    downstream_era: DownstreamEra = "auto"
    #: Rate limits are kept in a store the replicas share (``GATEWAY_REDIS_URL``
    #: is set; the shell holds the URL): the core asks the shell to take tokens
    #: (:class:`~lockgate.core.TakeTokens`) rather than keep buckets itself.
    shared_limits: bool = False
    #: ``GATEWAY_REDIS_FAILURE``: what a call under a rate limit meets when the
    #: shared store does not answer: ``closed`` refuses it
    #: (``RATE_LIMIT_UNAVAILABLE``), ``open`` lets it go ahead unchecked.
    redis_failure: Literal["closed", "open"] = "closed"
    #: ``GATEWAY_REDIS_TIMEOUT``: seconds the shell waits for Redis to take a
    #: call's tokens (connecting included) before it reports it unavailable.
    redis_timeout: float = 0.1


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


@dataclass(frozen=True, slots=True)
class EnvironmentVariable:
    """One ``GATEWAY_*`` variable as an operator sees it: its name, its default as one would write it, its use."""

    name: str
    default: str
    description: str


def environment_variables() -> tuple[EnvironmentVariable, ...]:
    """Every ``GATEWAY_*`` variable Lockgate reads, for help texts: the two file variables first, then the settings."""
    from . import _settings

    return _settings.environment_variables()


def config_schema(kind: Literal["servers", "rules"]) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of the servers file or of the rules file.

    It is generated from the pydantic types that validate the file, so it
    says what :func:`load_config` accepts without a warning: an editor
    flags unknown keys, as the gateway does. The same
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
    """Collects every problem found, in the order it is reported, each marked error or warning."""

    def __init__(self) -> None:
        self.found: list[tuple[Problem, bool]] = []

    def add(self, file: str, issues: Iterable[Issue]) -> None:
        """Add what was found in ``file``, each at its JSON path."""
        for issue in issues:
            self.found.append((Problem(file=file, path=json_path(*issue.loc), message=issue.message), issue.warning))

    def extend(self, problems: Iterable[Problem], *, warning: bool) -> None:
        self.found.extend((problem, warning) for problem in problems)

    def has_errors(self) -> bool:
        return any(not warning for _, warning in self.found)

    def warnings(self) -> tuple[Problem, ...]:
        return tuple(problem for problem, warning in self.found if warning)

    def error(self, strict: bool) -> ConfigError:
        """The error to raise: every error, and in ``strict`` mode every warning too, made an error."""
        if not strict:
            return ConfigError([p for p, warning in self.found if not warning], warnings=self.warnings())
        problems = [replace(p, message=p.message + STRICT_NOTE) if warning else p for p, warning in self.found]
        promoted = tuple(p for p, (_, warning) in zip(problems, self.found) if warning)
        return ConfigError(problems, promoted=promoted)


_NOT_JSON = object()  # what _parse_json returns for a file that is not JSON


def _parse_json(source: str | Mapping[str, Any]) -> tuple[object, list[Issue]]:
    """Parse one file: its value, or :data:`_NOT_JSON` when it is not JSON, and the errors found.

    A file is held to the same strict JSON as messages
    (:mod:`~lockgate.core._strictjson`): a description with a lone surrogate
    or a timeout of ``NaN`` would otherwise reach an encoder later. A mapping
    goes through its JSON text, so it meets the very same checks. A repeated
    key is an error too (:func:`~._validation.duplicate_keys`), though the
    value, with the last of each, is still validated.
    """
    from ._validation import Issue, duplicate_keys

    if isinstance(source, str):
        text = source
    else:
        try:
            text = json.dumps(source)
        except (TypeError, ValueError, RecursionError) as exc:
            return _NOT_JSON, [Issue((), f"not a JSON document: {exc}")]
    try:
        repeated = duplicate_keys(text)
    except json.JSONDecodeError as exc:
        return _NOT_JSON, [Issue((), _syntax_error(exc))]
    except ValueError:  # Python's limit on the digits of an int
        return _NOT_JSON, [Issue((), "invalid JSON: a number has too many digits")]
    except RecursionError:
        return _NOT_JSON, [Issue((), "invalid JSON: nested too deeply")]
    value = parse(text)
    if isinstance(value, Flawed):
        return _NOT_JSON, [Issue(flaw.path, f"invalid JSON: {flaw.detail}") for flaw in value.flaws]
    return value, repeated


def _syntax_error(exc: json.JSONDecodeError) -> str:
    """What is wrong, at the place a person would fix it.

    Python's parser stops where it can no longer go on: after a trailing
    comma that is the closing bracket, after ``//`` the slash. Files written
    by hand meet those two most, so they are named where they are.
    """
    text, pos = exc.doc, exc.pos
    if text.startswith(("//", "/*", "#"), pos):
        return f"invalid JSON: comments are not allowed in JSON (line {exc.lineno}, column {exc.colno})"
    before = text[:pos].rstrip()
    if before.endswith(",") and text.startswith(("}", "]"), pos):
        comma = len(before) - 1
        line = text.count("\n", 0, comma) + 1
        column = comma - (text.rfind("\n", 0, comma) + 1) + 1
        return f"invalid JSON: a trailing comma before '{text[pos]}' (line {line}, column {column})"
    return f"invalid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"


def load_config(
    *,
    servers: str | Mapping[str, Any],
    rules: str | Mapping[str, Any],
    environ: Mapping[str, str],
    servers_file: str = "servers",
    rules_file: str = "rules",
    settings: Settings | None = None,
    base_dir: str | None = None,
) -> Config:
    """Parse and validate both files into one :class:`Config`.

    Each file is given as its text or as the mapping it would parse into;
    a mapping is checked exactly as its text would be (a ``NaN``, a lone
    surrogate or a value JSON cannot hold is a problem, not a crash).

    Args:
        servers: the servers file (``.mcp.json`` shape).
        rules: the rules file.
        environ: the variables for ``${VAR}`` substitution, for
            :func:`settings_from_env` when ``settings`` is not given, and to
            warn about ``GATEWAY_*`` names Lockgate does not read. Nothing
            is read from ``os.environ``: pass it in if that is what you mean.
        servers_file: the servers file's name, as problems should show it.
        rules_file: the rules file's name, as problems should show it.
        base_dir: the servers file's folder, absolute: a stdio server's
            ``cwd`` is resolved against it, and is it when not given, so
            relative paths in the file mean the same from any working
            directory. ``None`` leaves them to the gateway's working directory.
        settings: settings already built (from command-line flags, say).
            When ``settings.strict``, every warning is an error.

    Raises:
        ConfigError: with every problem found, each naming file and JSON path,
            in the order of each file: the servers file, the rules file, the
            environment (a setting that does not fit the servers, such as
            ``GATEWAY_PREFIX=never`` with two of them, among its errors).
    """
    from . import _rules, _servers, _settings
    from ._validation import in_document_order

    report = _Report()

    servers_doc, found = _parse_json(servers)
    specs = None
    if servers_doc is not _NOT_JSON:
        specs, checked = _servers.parse(servers_doc, environ, base_dir)
        found = in_document_order(servers_doc, [*found, *checked])
    report.add(servers_file, found)

    rules_doc, found = _parse_json(rules)
    document = policy = None
    if rules_doc is not _NOT_JSON:
        document, checked = _rules.parse(rules_doc)
        found += checked
        if document is not None:
            policy = Policy.compile(document)
            if specs is not None:
                found += _rules.check_names(document, policy, specs, servers_file)
        found = in_document_order(rules_doc, found)
    report.add(rules_file, found)

    if settings is None:
        try:
            settings = settings_from_env(environ)
        except ConfigError as exc:
            report.extend(exc.problems, warning=False)
            settings = Settings()
    if specs is not None:
        report.extend(_settings.check_servers(settings, specs, servers_file), warning=False)
    report.extend(_settings.check_environment(environ, settings, policy, rules_file), warning=True)

    if report.has_errors() or (settings.strict and report.found):
        raise report.error(settings.strict)
    assert policy is not None and specs is not None  # no errors implies both parsed
    return Config(servers=MappingProxyType(specs), policy=policy, settings=settings, warnings=report.warnings())
