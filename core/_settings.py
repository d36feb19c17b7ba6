"""The ``GATEWAY_*`` environment variables: a pydantic model of them, and the :class:`Settings` they give.

Each field of :class:`Variables` is one variable (``default_agent`` is
``GATEWAY_DEFAULT_AGENT``) and has the name of the :class:`Settings` field it
sets. Every variable is text, with a grammar pydantic's own coercions do not
have (``GATEWAY_MAX_MESSAGE_BYTES`` takes digits only, not ``+5`` or
``1_000``), so each field is read by one small function below that says what
is wrong in Lockgate's words. pydantic maps names, collects every problem and
keeps their order. A blank variable (or, for most, one of spaces) counts as
unset: ``GATEWAY_X=`` is how compose files and CI systems clear a variable.
``None`` means unset: :class:`Settings` then keeps its default.

The model names every ``GATEWAY_*`` variable Lockgate reads, those the
shell reads itself (the two files, the database, credentials) included (:data:`VARIABLES`), so a
variable it does not name is a typo or someone else's: :func:`check_environment`
warns about it with the closest known name, since a misspelt variable is
ignored and its default (or, for one meant to clear a variable, the value it
was meant to clear) applies instead.

A setting can be wrong for the servers it works with while valid on its own:
:func:`check_servers` finds those errors (``GATEWAY_PREFIX=never`` with more
than one server) once the servers file is read.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Collection, Mapping
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, PlainValidator, ValidationError
from pydantic_core import PydanticCustomError

from ._config import ENVIRONMENT, ConfigError, DownstreamEra, EnvironmentVariable, PinMode, Prefix, Problem, Settings, Transport
from ._identity import Rate, parse_rate
from ._policy import _AGENT_ID_RULE, Mode, json_path, valid_agent_id
from ._validation import close_match, closest, issues

if TYPE_CHECKING:
    from ._policy import Policy

__all__ = [
    "VARIABLES",
    "Variables",
    "check_environment",
    "check_servers",
    "environment_variables",
    "settings_from_env",
]

_PREFIX = "GATEWAY_"


def _wrong(raw: str, what: str) -> PydanticCustomError:
    return PydanticCustomError("lockgate", "{message}", {"message": f"{raw!r} is not {what}"})


def _word(what: str, *words: str) -> Callable[[str], str | None]:
    def parse(raw: str) -> str | None:
        word = raw.strip().lower()
        if word and word not in words:
            raise _wrong(word, what)
        return word or None

    return parse


def _redis_url(raw: str) -> str | None:
    url = raw.strip()
    if url and not url.lower().startswith(("redis://", "rediss://", "unix://")):
        # Not the value itself: a Redis URL may hold a password.
        raise PydanticCustomError(
            "lockgate", "{message}", {"message": "is not a Redis URL: use redis://HOST:PORT/DB, rediss://… (TLS) or unix://PATH"}
        )
    return url or None


def _count(what: str, *, minimum: int, maximum: float = float("inf")) -> Callable[[str], int | None]:
    def parse(raw: str) -> int | None:
        text = raw.strip()
        if not text:
            return None
        # Digits only: int() would also take "+5", "1_000" and "-3".
        if not (text.isascii() and text.isdigit()) or not minimum <= int(text) <= maximum:
            raise _wrong(text, what)
        return int(text)

    return parse


def _seconds(*, zero: bool) -> Callable[[str], float | None]:
    def parse(raw: str) -> float | None:
        text = raw.strip()
        if not text:
            return None
        # A finite, non-negative decimal number.
        if not re.fullmatch(r"[0-9]+(\.[0-9]+)?", text) or (float(text) == 0 and not zero):
            raise _wrong(text, "a number of seconds, 0 or more" if zero else "a positive number of seconds")
        return float(text)

    return parse


def _boolean(raw: str) -> bool:
    word = raw.strip().lower()
    if word in ("1", "true", "yes", "on"):
        return True
    if word in ("", "0", "false", "no", "off"):
        return False
    raise _wrong(word, "a boolean: use 1/true/yes/on or 0/false/no/off")


def _agent_id(raw: str) -> str | None:
    if raw and not valid_agent_id(raw):
        raise _wrong(raw, f"a valid agent id: {_AGENT_ID_RULE}")
    return raw or None


def _rate(raw: str) -> Rate | None:
    text = raw.strip()
    if not text:
        return None
    rate = parse_rate(text)
    if rate is None:
        raise _wrong(text[:64], "a rate: use COUNT/UNIT, e.g. 120/min (units s, min, h)")
    return rate


# What an MCP tool name may hold (MCP 2025-11-25, server/tools, "Tool names"),
# so that a separator never makes an aggregated name invalid.
_SEPARATOR = re.compile(r"[A-Za-z0-9_.-]{1,4}")


def _separator(raw: str) -> str | None:
    text = raw.strip()
    if text and not _SEPARATOR.fullmatch(text):
        raise _wrong(
            text[:64], "a name separator: use 1 to 4 letters, digits, '_', '.' or '-' (what a tool name may hold)"
        )
    return text or None


def _fraction(raw: str) -> float | None:
    text = raw.strip()
    if not text:
        return None
    # A decimal number in (0, 1]: a share of the context window.
    if not re.fullmatch(r"[0-9]+(\.[0-9]+)?", text) or not 0 < float(text) <= 1:
        raise _wrong(text, "a fraction above 0 and at most 1, e.g. 0.1")
    return float(text)


def _transport(raw: str) -> Transport | None:
    # Both fronts on one port may be written in either order.
    words = sorted({word.strip().lower() for word in raw.split(",") if word.strip()})
    match words:
        case []:
            return None
        case ["stdio"]:
            return "stdio"
        case ["http"]:
            return "http"
        case ["ws"]:
            return "ws"
        case ["http", "ws"]:
            return "http,ws"
    raise _wrong(raw.strip(), "a transport: use 'stdio', 'http', 'ws' or 'http,ws'")


def _items(raw: str) -> tuple[str, ...] | None:
    return tuple(item.strip() for item in raw.split(",") if item.strip()) or None


def _text(raw: str) -> str | None:
    return raw.strip() or None


_KEY = re.compile(r"[A-Za-z0-9_-]{43}=?")


def _session_keys(raw: str) -> str | None:
    """Keys of 32 bytes in base64url, comma-separated; checked at start-up, and never quoted in the problem."""
    keys = [key.strip() for key in raw.split(",")] if raw.strip() else []
    for position, key in enumerate(keys, start=1):
        if not _KEY.fullmatch(key):
            message = (
                f"key {position} of {len(keys)} is not 32 bytes in base64url (43 characters); "
                "make one with: python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"
            )
            raise PydanticCustomError("lockgate", "{message}", {"message": message})
    return raw.strip() or None


_POSITIVE_INT = PlainValidator(_count("a positive integer", minimum=1))
_POSITIVE_SECONDS = PlainValidator(_seconds(zero=False))


class Variables(BaseModel):
    """The ``GATEWAY_*`` variables Lockgate reads, in the order their problems are reported."""

    model_config = ConfigDict(alias_generator=lambda name: f"{_PREFIX}{name.upper()}", extra="ignore", frozen=True)

    default_agent: Annotated[str | None, PlainValidator(_agent_id)] = None
    debug: Annotated[bool, PlainValidator(_boolean)] = False
    strict: Annotated[bool, PlainValidator(_boolean)] = False
    init_strategy: Annotated[
        Literal["eager", "lazy"] | None, PlainValidator(_word("a strategy: use 'eager' or 'lazy'", "eager", "lazy"))
    ] = None
    max_message_bytes: Annotated[int | None, _POSITIVE_INT] = None
    log_level: Annotated[
        Literal["debug", "info", "warning", "error"] | None,
        PlainValidator(_word("a level: use debug, info, warning or error", "debug", "info", "warning", "error")),
    ] = None
    log_format: Annotated[
        Literal["text", "json"] | None, PlainValidator(_word("a format: use 'text' or 'json'", "text", "json"))
    ] = None
    health_interval: Annotated[float | None, PlainValidator(_seconds(zero=True))] = None
    health_timeout: Annotated[float | None, _POSITIVE_SECONDS] = None
    audit_log: Annotated[str | None, PlainValidator(lambda raw: raw or None)] = None
    # The Streamable HTTP front
    transport: Annotated[Transport | None, PlainValidator(_transport)] = None
    http_host: Annotated[str | None, PlainValidator(lambda raw: raw.strip() or None)] = None
    http_port: Annotated[
        int | None, PlainValidator(_count("a port number (0 to 65535)", minimum=0, maximum=65535))
    ] = None
    cors_origins: Annotated[tuple[str, ...] | None, PlainValidator(_items)] = None
    allowed_hosts: Annotated[tuple[str, ...] | None, PlainValidator(_items)] = None
    max_connections: Annotated[int | None, _POSITIVE_INT] = None
    max_connections_per_address: Annotated[int | None, PlainValidator(_count("an integer, 0 or more", minimum=0))] = None
    session_ttl: Annotated[float | None, _POSITIVE_SECONDS] = None
    session_lifetime: Annotated[float | None, _POSITIVE_SECONDS] = None
    shutdown_grace: Annotated[float | None, _POSITIVE_SECONDS] = None
    http_head_timeout: Annotated[float | None, _POSITIVE_SECONDS] = None
    # The WebSocket front
    ws_ping_interval: Annotated[float | None, PlainValidator(_seconds(zero=True))] = None
    ws_ping_timeout: Annotated[float | None, _POSITIVE_SECONDS] = None
    # Identity and limits
    auth: Annotated[
        Literal["required", "none"] | None,
        PlainValidator(_word("an authentication mode: use 'required' or 'none'", "required", "none")),
    ] = None
    rate_limit: Annotated[Rate | None, PlainValidator(_rate)] = None
    redis_failure: Annotated[
        Literal["closed", "open"] | None,
        PlainValidator(_word("a failure mode: use 'closed' or 'open'", "closed", "open")),
    ] = None
    redis_timeout: Annotated[float | None, _POSITIVE_SECONDS] = None
    # Aggregate mode
    mode: Annotated[
        Mode | None,
        PlainValidator(_word("a mode: use 'on_demand', 'aggregate' or 'auto'", "on_demand", "aggregate", "auto")),
    ] = None
    context_window: Annotated[int | None, _POSITIVE_INT] = None
    auto_threshold: Annotated[float | None, PlainValidator(_fraction)] = None
    tokenizer: Annotated[
        Literal["cl100k_base", "estimate"] | None,
        PlainValidator(_word("a tokenizer: use 'cl100k_base' or 'estimate'", "cl100k_base", "estimate")),
    ] = None
    prefix: Annotated[
        Prefix | None, PlainValidator(_word("a prefix rule: use 'auto', 'always' or 'never'", "auto", "always", "never"))
    ] = None
    gateway_tools: Annotated[bool, PlainValidator(_boolean)] = False
    name_separator: Annotated[str | None, PlainValidator(_separator)] = None
    # Tool-definition pinning
    pins: Annotated[
        PinMode | None,
        PlainValidator(_word("a pinning mode: use 'strict', 'new-ok' or 'off'", "strict", "new-ok", "off")),
    ] = None
    # The era of MCP spoken to servers
    downstream_era: Annotated[
        DownstreamEra | None,
        PlainValidator(_word("an era choice: use 'auto', 'handshake' or 'stateless'", "auto", "handshake", "stateless")),
    ] = None
    # Read by the shell to find the two files (lockgate.shells.configfiles),
    # not settings; declared so that this model names every variable.
    mcp_config: Annotated[str | None, PlainValidator(lambda raw: raw or None)] = None
    rules: Annotated[str | None, PlainValidator(lambda raw: raw or None)] = None
    # Read by the shell to share rate limits between replicas (lockgate.shells.shared_limits);
    # set, it turns Settings.shared_limits on. It may hold a password: nothing here repeats it.
    redis_url: Annotated[str | None, PlainValidator(_redis_url)] = None
    # Read by the shell to open the identity database (lockgate.shells.store).
    database_url: Annotated[str | None, PlainValidator(lambda raw: raw.strip() or None)] = None
    state_dir: Annotated[str | None, PlainValidator(lambda raw: raw.strip() or None)] = None
    # Read by the shell to verify credentials (lockgate.shells.auth, lockgate.shells.identity).
    # Secrets among them never appear in a problem: nothing here refuses a value.
    api_key: Annotated[str | None, PlainValidator(_text)] = None
    jwt_secret: Annotated[str | None, PlainValidator(_text)] = None
    jwt_issuer: Annotated[str | None, PlainValidator(_text)] = None
    jwt_audience: Annotated[str | None, PlainValidator(_text)] = None
    jwt_jwks: Annotated[str | None, PlainValidator(_text)] = None
    jwt_role_claim: Annotated[str | None, PlainValidator(_text)] = None
    jwt_agents_claim: Annotated[str | None, PlainValidator(_text)] = None
    token_ttl: Annotated[str | None, PlainValidator(_text)] = None
    # Read by the shell to seal OAuth tokens for downstream servers (lockgate.shells.sealed).
    secret_key: Annotated[str | None, PlainValidator(_text)] = None
    # Read by the shell to seal Streamable HTTP session ids (lockgate.shells.session_ids).
    session_key: Annotated[str | None, PlainValidator(_session_keys)] = None
    # Read by the shell: may a stdio gateway open the browser to log in to a downstream (lockgate.shells.oauth)?
    oauth_browser: Annotated[str | None, PlainValidator(_text)] = None


#: Every ``GATEWAY_*`` variable Lockgate reads.
VARIABLES: frozenset[str] = frozenset(field.alias for field in Variables.model_fields.values() if field.alias)

# The fields of Variables that are settings (the others are the shell's).
_SETTINGS = frozenset(field.name for field in dataclasses.fields(Settings))

#: What each variable does, in a line, for ``lockgate serve --help``; README.md has the full table.
_ABOUT: dict[str, str] = {
    "mcp_config": "servers file when --config is not given (unset: ./.mcp.json, then ./config/.mcp.json)",
    "rules": "rules file when --rules is not given (unset: ./.mcp-gateway-rules.json, then ./config/…)",
    "database_url": "users and keys: sqlite:///PATH or postgresql://… (unset: lockgate.db in the state folder)",
    "state_dir": "state folder (unset: $XDG_STATE_HOME/lockgate, else ~/.local/state/lockgate)",
    "default_agent": "agent for calls without agent_id, when the rules let such calls run",
    "debug": "log everything and offer get_gateway_status; as --debug",
    "strict": "every warning is an error, at start-up and on reload",
    "init_strategy": "eager starts every server at start-up, lazy each on first use",
    "max_message_bytes": "largest message from a client (over HTTP: largest body)",
    "log_level": "debug, info, warning or error; unset: summary, reloads, warnings, errors",
    "log_format": "text (key=value lines) or json (one object per line)",
    "health_interval": "seconds between health-check pings of a live server (0: no checks)",
    "health_timeout": "seconds a health-check ping may take",
    "audit_log": "audit log file",
    "transport": "stdio, http (Streamable HTTP), ws (WebSocket) or http,ws (both on one port); as --transport",
    "http_host": "address to bind for HTTP; as --host",
    "http_port": "port for HTTP (0 picks a free one); as --port",
    "cors_origins": "comma-separated browser origins allowed besides loopback ones",
    "allowed_hosts": "comma-separated Host values accepted besides the bound address",
    "max_connections": "HTTP connections held open at once",
    "max_connections_per_address": "HTTP connections from one peer address (0: no limit)",
    "session_ttl": "seconds an idle HTTP session lives",
    "session_lifetime": "seconds an HTTP session id is valid on any gateway holding the session key, however active",
    "shutdown_grace": "seconds requests in flight get to finish on SIGTERM/SIGINT (HTTP)",
    "http_head_timeout": "seconds an HTTP request head may take from its first byte",
    "ws_ping_interval": "seconds between keep-alive pings of a WebSocket client (0: no pings)",
    "ws_ping_timeout": "seconds a WebSocket client has to answer a ping before it is closed (1011)",
    "auth": "required: every caller proves a credential; none: no authentication, said explicitly; as --auth",
    "rate_limit": "rate limit of each agent whose rules set no rate, e.g. 120/min (unset: none)",
    "redis_url": "redis://HOST:PORT/DB whose Redis every replica shares rate limits through (unset: each process keeps its own)",
    "redis_failure": "when Redis does not answer, calls under a rate limit are refused (closed) or go ahead unchecked (open)",
    "redis_timeout": "seconds a call waits for Redis to take its tokens before Redis counts as not answering",
    "mode": "on_demand (the gateway's tools), aggregate (the servers' tools, resources and prompts as its own) or auto",
    "context_window": "tokens of the agents' context window, for mode auto",
    "auto_threshold": "mode auto aggregates when an agent's tools cost less than this share of the context window",
    "tokenizer": "what tokens are counted with: cl100k_base, or estimate (JSON bytes / 4, loads nothing)",
    "prefix": "aggregate tool and prompt names are server<sep>name: auto (2+ servers), always, never (1 server only)",
    "gateway_tools": "in aggregate mode, list the gateway's own tools too",
    "name_separator": "what joins server and name in aggregate mode: 1 to 4 of A-Z a-z 0-9 _ . -",
    "pins": "tool-definition pinning: new-ok (pin new tools, quarantine changed ones), strict (hold back new ones too) or off",
    "downstream_era": "era of MCP spoken to servers: auto (2026-07-28 where offered, else initialize), handshake or stateless",
    "api_key": "API key a stdio launcher passes when GATEWAY_AUTH=required",
    "jwt_secret": "secret that signs Lockgate's own tokens (unset: one kept in the state folder)",
    "secret_key": "key that seals OAuth tokens for downstream servers: base64url of 32 bytes (unset: secret.key in the state folder)",
    "session_key": "keys that seal HTTP session ids, current first, comma-separated: base64url of 32 bytes each (unset: the secret key)",
    "oauth_browser": "auto: a stdio gateway on a desktop opens the browser to log in to a server that answers 401; never",
    "jwt_issuer": "iss of an external token issuer",
    "jwt_audience": "aud an external issuer's tokens carry (the resource URI)",
    "jwt_jwks": "an external issuer's public keys: a JWKS file or https:// URL",
    "jwt_role_claim": "claim of an external token that holds the role (unset: role)",
    "jwt_agents_claim": "claim of an external token that holds the agent grants (unset: agents)",
    "token_ttl": "seconds a login token lives (unset: 3600)",
}


def environment_variables() -> tuple[EnvironmentVariable, ...]:
    """Every ``GATEWAY_*`` variable Lockgate reads, the two file variables first, then the settings in model order."""
    defaults = Settings()
    found = []
    for name, field in Variables.model_fields.items():
        assert field.alias is not None  # the alias generator names every field
        found.append(EnvironmentVariable(field.alias, _written(getattr(defaults, name, None)), _ABOUT.get(name, "")))
    found.sort(key=lambda variable: variable.name not in (f"{_PREFIX}MCP_CONFIG", f"{_PREFIX}RULES"))
    return tuple(found)


def _written(value: object) -> str:
    """A default as an operator would write it in the variable."""
    if value is None or value == ():
        return "unset"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def settings_from_env(environ: Mapping[str, str], *, debug: bool = False) -> Settings:
    """Build :class:`Settings` from ``GATEWAY_*`` variables; ``debug`` forces debug on.

    Raises:
        ConfigError: a variable holds a value of the wrong kind; every such
            variable is reported.
    """
    try:
        variables = Variables.model_validate({k: v for k, v in environ.items() if k.startswith("GATEWAY_")})
    except ValidationError as exc:
        problems = [Problem(file=ENVIRONMENT, path=json_path(*i.loc), message=i.message) for i in issues(exc)]
        raise ConfigError(problems) from None
    values: dict[str, Any] = {name: value for name, value in variables if value is not None and name in _SETTINGS}
    if debug:
        values["debug"] = True
    if variables.redis_url is not None:
        values["shared_limits"] = True
    return Settings(**values)


def check_servers(settings: Settings, servers: Collection[str], servers_file: str) -> list[Problem]:
    """Errors in settings that do not fit the configured servers.

    - ``GATEWAY_PREFIX=never`` with more than one server: the items of two
      servers would be listed under their own names, which may clash.
    """
    found: list[Problem] = []
    if settings.prefix == "never" and len(servers) > 1:
        found.append(
            Problem(
                file=ENVIRONMENT,
                path="GATEWAY_PREFIX",
                message=f"'never' needs exactly one server, and {servers_file} configures {len(servers)}: "
                "the names of two servers' tools may clash unprefixed; use 'auto' or 'always'",
            )
        )
    return found


def check_environment(
    environ: Mapping[str, str], settings: Settings, policy: Policy | None, rules_file: str
) -> list[Problem]:
    """Warnings about the variables, given the rules they work with (``None``: rules with errors).

    - ``GATEWAY_DEFAULT_AGENT`` names an agent the rules do not define;
    - ``GATEWAY_DEFAULT_AGENT`` is set but never used, as the rules refuse
      calls without ``agent_id`` before any fallback (see
      :meth:`~._policy.Policy.resolve_agent`);
    - a ``GATEWAY_*`` variable Lockgate does not read, in name order.
    """
    found: list[Problem] = []

    def warn(variable: str, message: str) -> None:
        found.append(Problem(file=ENVIRONMENT, path=variable, message=message))

    agent = settings.default_agent
    if agent is not None and policy is not None:
        if agent not in policy.agents:
            warn("GATEWAY_DEFAULT_AGENT", f"agent {agent!r} is not defined in {rules_file}{closest(agent, policy.agents)}")
        if policy.deny_on_missing_agent:
            warn(
                "GATEWAY_DEFAULT_AGENT",
                f"has no effect: {rules_file} does not set defaults.deny_on_missing_agent to false, so calls "
                f"without agent_id are refused rather than run as agent {agent!r}; set it to false to run them "
                "as that agent, or unset GATEWAY_DEFAULT_AGENT",
            )
    known = {name.removeprefix(_PREFIX) for name in VARIABLES}
    for name in sorted(name for name in environ if name.startswith(_PREFIX) and name not in VARIABLES):
        # Matched without the prefix, which would make any two names look alike.
        match = close_match(name.removeprefix(_PREFIX), known)
        warn(name, "unknown variable, ignored" + ("" if match is None else f" (did you mean {_PREFIX + match!r}?)"))
    return found
