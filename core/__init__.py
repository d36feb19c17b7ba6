"""Lockgate's sans-IO core: parsed events and configuration in, actions out.

Embed it as a library: build a :class:`Gateway` from a :class:`Config`
(:func:`load_config` reads the two JSON files from text you hand it, with the
environment passed in), feed it events, and perform the actions it returns,
in order. Nothing here does I/O, reads a clock or draws random numbers, so
identical event sequences give identical action sequences.
``docs/embedding.md`` walks through a complete example.

Everything an embedder needs is importable from here; the modules with a
leading underscore are internal and may change. Two submodules are public
too: :mod:`lockgate.core.http`, the Streamable HTTP rules a shell asks what
to answer, and :mod:`lockgate.core.transcript`, the JSON Lines form of
events and actions that recording and replay use.
"""

__version__ = "0.1.0"

from ._actions import (
    Action,
    Audit,
    CancelTimer,
    CloseClient,
    DropStream,
    Log,
    LogLevel,
    SavePins,
    SendToClient,
    TakeTokens,
    SendToDownstream,
    SetTimer,
    StartDownstream,
    StopDownstream,
)
from ._config import (
    Config,
    ConfigError,
    EnvironmentVariable,
    InstanceSpec,
    OAuthSpec,
    Problem,
    ServerSpec,
    Settings,
    config_schema,
    environment_variables,
    load_config,
    settings_from_env,
)
from ._errors import ErrorCode, LocalProtocolError
from ._events import (
    AuthenticationFailed,
    AuthenticationSucceeded,
    ClientClosed,
    ClientFellBehind,
    ClientId,
    ClientMessageReceived,
    ClientOpened,
    ConfigRejected,
    ConfigReloaded,
    DownstreamExited,
    DownstreamHttpError,
    DownstreamUnauthorized,
    DownstreamMessageReceived,
    DownstreamNotReading,
    DownstreamSessionLost,
    Event,
    GatewayStarted,
    PinAccepted,
    PinsLoaded,
    SessionRecord,
    ShutdownRequested,
    TimerFired,
    TokensTaken,
)
from ._pins import PIN_MODES, PINNED_FIELDS, changed_fields, pinned_definition, tool_digest
from ._authorize import admin_refusal, authentication_record
from ._gateway import Gateway
from ._grants import grant_problem, grants_within, may_act_as
from ._identity import Principal, Rate, Role, parse_rate
from ._rest import RestAnswer, rest_answer, rest_error, rest_message, rest_refusal
from ._ratelimit import LOGIN_ADDRESS_RATE, LOGIN_NAME_RATE, login_limits
from ._ratelimit import Buckets as RateBuckets
from ._links import downstream_message_bytes
from ._downstream_era import routing_headers
from ._jsonrpc import (
    Invalid,
    Message,
    Notification,
    Request,
    Response,
    decode,
    encode,
    internal_error,
    internal_error_replacing,
)
from ._reload import problem_json
from ._registry import REGISTRY, FieldProblem, Registration, merge_registrations, parse_registration, registry_view
from ._report import context_report, explain_agent, tool_cost
from ._tools import TokenCounter, estimate_bytes

__all__ = [
    "__version__",
    # The state machine.
    "Gateway",
    # Identity: the verified caller the shell hands in.
    "Principal",
    "Rate",
    "Role",
    "parse_rate",
    "RateBuckets",
    "grant_problem",
    "grants_within",
    "may_act_as",
    "authentication_record",
    "admin_refusal",
    "login_limits",
    "LOGIN_NAME_RATE",
    "LOGIN_ADDRESS_RATE",
    # Configuration.
    "Config",
    "ConfigError",
    "InstanceSpec",
    "OAuthSpec",
    "Problem",
    "ServerSpec",
    "Settings",
    "load_config",
    "settings_from_env",
    "EnvironmentVariable",
    "environment_variables",
    "downstream_message_bytes",
    "routing_headers",
    "config_schema",
    "problem_json",
    # The live registry: registered instances merged into the configuration.
    "Registration",
    "FieldProblem",
    "REGISTRY",
    "parse_registration",
    "merge_registrations",
    "registry_view",
    # Events: what the shell reports.
    "Event",
    "ClientId",
    "GatewayStarted",
    "ClientOpened",
    "ClientMessageReceived",
    "ClientClosed",
    "ClientFellBehind",
    "DownstreamMessageReceived",
    "DownstreamNotReading",
    "DownstreamExited",
    "DownstreamSessionLost",
    "DownstreamHttpError",
    "DownstreamUnauthorized",
    "TimerFired",
    "ConfigReloaded",
    "ConfigRejected",
    "SessionRecord",
    "ShutdownRequested",
    "AuthenticationSucceeded",
    "AuthenticationFailed",
    "PinsLoaded",
    "PinAccepted",
    "TokensTaken",
    # Actions: what the shell performs.
    "Action",
    "LogLevel",
    "SendToClient",
    "DropStream",
    "CloseClient",
    "StartDownstream",
    "SendToDownstream",
    "StopDownstream",
    "SetTimer",
    "CancelTimer",
    "Audit",
    "Log",
    "SavePins",
    "TakeTokens",
    # Tool-definition pinning (lockgate.core._pins): what a pin covers, for stores and ``lockgate pin``.
    "PIN_MODES",
    "PINNED_FIELDS",
    "tool_digest",
    "pinned_definition",
    "changed_fields",
    # The REST API's requests and answers (lockgate.core._rest).
    "RestAnswer",
    "rest_answer",
    "rest_error",
    "rest_message",
    "rest_refusal",
    # Errors.
    "ErrorCode",
    "LocalProtocolError",
    # JSON-RPC messages, as the core reads and writes them.
    "Message",
    "Request",
    "Notification",
    "Response",
    "Invalid",
    "decode",
    "encode",
    "internal_error",
    "internal_error_replacing",
    # Reports for tools that inspect a configuration (``lockgate explain``, ``lockgate check``).
    "explain_agent",
    "context_report",
    "tool_cost",
    # Token counting: what a shell's tokenizer must be, and the default.
    "TokenCounter",
    "estimate_bytes",
]
