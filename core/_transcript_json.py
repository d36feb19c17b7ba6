"""Events, actions and configuration as JSON: the lines of a core transcript.

The format is documented in ``conformance/README.md``; :mod:`lockgate.core.transcript`
is the public face of this module. Bytes are kept as UTF-8 text when they
are, else as base64; a server's ``env`` and ``headers`` values and its OAuth client secret are redacted.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, assert_never

from . import __version__
from . import _actions as act
from . import _events as ev
from ._config import Config, InstanceSpec, OAuthSpec, Problem, ServerSpec, Settings
from ._identity import Principal, Rate
from ._policy import Policy

__all__ = [
    "FORMAT",
    "REDACTED",
    "TranscriptError",
    "action_to_json",
    "config_from_json",
    "config_to_json",
    "event_from_json",
    "event_to_json",
    "header",
]

JSONObject = dict[str, Any]

FORMAT = 1
"""The transcript format version written in every header."""

REDACTED = "<redacted>"
"""What the values of a server's ``env`` and ``headers`` become: they hold secrets."""


class TranscriptError(ValueError):
    """A transcript line is not what this format version allows."""


# -- bytes -----------------------------------------------------------------------


def _put_bytes(out: JSONObject, key: str, data: bytes) -> None:
    """Store ``data`` as UTF-8 text under ``key``, or as base64 under ``key_base64``."""
    try:
        out[key] = data.decode("utf-8")
    except UnicodeDecodeError:
        out[key + "_base64"] = base64.b64encode(data).decode("ascii")


def _get_bytes(line: Mapping[str, Any], key: str) -> bytes:
    if isinstance(line.get(key), str):
        text: str = line[key]
        return text.encode("utf-8")
    encoded = line.get(key + "_base64")
    if not isinstance(encoded, str):
        raise TranscriptError(f"{key!r} or {key + '_base64'!r} is missing")
    try:
        return base64.b64decode(encoded, validate=True)
    except binascii.Error as exc:
        raise TranscriptError(f"{key + '_base64'!r} is not base64: {exc}") from None


# -- configuration ---------------------------------------------------------------


def _spec_to_json(spec: ServerSpec) -> JSONObject:
    """Every field of a spec (instances included), with secrets redacted; ``oauth`` only when configured.

    Generic over the dataclass fields, so a new configuration key is recorded
    without touching this module.
    """
    out: JSONObject = {}
    for f in dataclasses.fields(spec):
        value = getattr(spec, f.name)
        if f.name in ("env", "headers"):
            value = {key: REDACTED for key in value}
        elif f.name == "instances":
            value = [_instance_to_json(i) for i in value]
        elif f.name == "oauth":
            if value is None:
                continue  # not configured: older transcripts read the same
            value = _oauth_to_json(value)
        elif f.name == "pins" and value is None:
            continue  # the gateway's setting: older transcripts read the same
        elif isinstance(value, tuple):
            value = list(value)
        out[f.name] = value
    return out


def _spec_from_json(value: Mapping[str, Any]) -> ServerSpec:
    known = {f.name for f in dataclasses.fields(ServerSpec)}
    kwargs: JSONObject = {k: v for k, v in value.items() if k in known}
    kwargs["args"] = tuple(kwargs.get("args", ()))
    kwargs["env"] = MappingProxyType(dict(kwargs.get("env", {})))
    kwargs["headers"] = MappingProxyType(dict(kwargs.get("headers", {})))
    oauth = kwargs.get("oauth")
    kwargs["oauth"] = None if oauth is None else OAuthSpec(**{**oauth, "scopes": tuple(oauth.get("scopes", ()))})
    kwargs["instances"] = tuple(
        InstanceSpec(
            spec=_spec_from_json(i["spec"]),
            weight=i.get("weight", 1),
            id=i.get("id", ""),
            source="registry" if i.get("source") == "registry" else "file",
            description=i.get("description", ""),
        )
        for i in kwargs.get("instances", ())
    )
    return ServerSpec(**kwargs)


def _oauth_to_json(oauth: OAuthSpec) -> JSONObject:
    """A server's OAuth settings, its client secret redacted."""
    out: JSONObject = {f.name: getattr(oauth, f.name) for f in dataclasses.fields(oauth)}
    out["scopes"] = list(oauth.scopes)
    if oauth.client_secret is not None:
        out["client_secret"] = REDACTED
    return out


def _instance_to_json(instance: InstanceSpec) -> JSONObject:
    """An instance; its id, source and description only when set, so older transcripts read the same."""
    out: JSONObject = {"spec": _spec_to_json(instance.spec), "weight": instance.weight}
    if instance.id:
        out["id"] = instance.id
    if instance.source != "file":
        out["source"] = instance.source
    if instance.description:
        out["description"] = instance.description
    return out


def _problem(problem: Problem) -> JSONObject:
    return {"file": problem.file, "path": problem.path, "message": problem.message}


def config_to_json(config: Config, rules: Mapping[str, Any]) -> JSONObject:
    """The configuration in a form :func:`config_from_json` rebuilds.

    Args:
        config: the configuration the Gateway runs under.
        rules: the rules document ``config.policy`` was compiled from (the
            compiled :class:`~.policy.Policy` does not keep it).

    Server ``env`` and ``headers`` values are replaced by :data:`REDACTED`;
    the core never looks at them, so replay is unaffected.
    """
    s = config.settings
    return {
        "servers": [_spec_to_json(spec) for spec in config.servers.values()],
        "rules": rules,
        "settings": {f.name: _plain(getattr(s, f.name)) for f in dataclasses.fields(s)},
        "warnings": [_problem(w) for w in config.warnings],
    }


def config_from_json(value: Mapping[str, Any]) -> Config:
    """Rebuild a :class:`Config` written by :func:`config_to_json`.

    Raises:
        TranscriptError: a field is missing or of the wrong kind.
    """
    try:
        servers = {spec.name: spec for spec in (_spec_from_json(v) for v in value["servers"])}
        return Config(
            servers=MappingProxyType(servers),
            policy=Policy.compile(value["rules"]),
            settings=_settings_from_json(value["settings"]),
            warnings=tuple(Problem(**w) for w in value.get("warnings", ())),
        )
    except (KeyError, TypeError, AttributeError) as exc:
        raise TranscriptError(f"the configuration cannot be rebuilt: {exc!r}") from None


def _plain(value: Any) -> Any:
    if isinstance(value, Rate):
        return _rate_to_json(value)
    return list(value) if isinstance(value, tuple) else value


def _settings_from_json(value: Mapping[str, Any]) -> Settings:
    fields = {f.name: f for f in dataclasses.fields(Settings)}
    kwargs = {k: v for k, v in value.items() if k in fields}
    # Recorded before the gateway spoke the stateless era to servers: it sent them initialize only.
    kwargs.setdefault("downstream_era", "handshake")
    for name, v in kwargs.items():
        # Tuples were written as lists, rates as objects; anything else is plain JSON already.
        if isinstance(v, list) and isinstance(getattr(Settings(), name), tuple):
            kwargs[name] = tuple(v)
        elif name == "rate_limit" and v is not None:
            kwargs[name] = _rate_from_json(v)
    return Settings(**kwargs)


def _rate_to_json(rate: Rate) -> JSONObject:
    return {"count": rate.count, "period": rate.period}


def _rate_from_json(value: Mapping[str, Any]) -> Rate:
    return Rate(value["count"], float(value["period"]))


def _principal_to_json(principal: Principal) -> JSONObject:
    """Every field of a principal (it holds no secret); ``tools``, ``rate``, ``shared_rates`` and ``subject`` only when set."""
    out: JSONObject = {
        "id": principal.id,
        "role": principal.role,
        "agents": list(principal.agents),
        "default_agent": principal.default_agent,
        "expires": principal.expires,
    }
    if principal.tools is not None:
        out["tools"] = list(principal.tools)
    if principal.rate is not None:
        out["rate"] = _rate_to_json(principal.rate)
    if principal.shared_rates:
        out["shared_rates"] = [[ancestor, _rate_to_json(rate)] for ancestor, rate in principal.shared_rates]
    if principal.subject is not None:
        out["subject"] = principal.subject
    return out


def _principal_from_json(value: Mapping[str, Any]) -> Principal:
    tools = value.get("tools")
    rate = value.get("rate")
    return Principal(
        id=value["id"],
        role=value.get("role", "user"),
        agents=tuple(value.get("agents", ())),
        default_agent=value.get("default_agent"),
        tools=None if tools is None else tuple(tools),
        rate=None if rate is None else _rate_from_json(rate),
        shared_rates=tuple((ancestor, _rate_from_json(r)) for ancestor, r in value.get("shared_rates", ())),
        expires=value.get("expires"),
        subject=value.get("subject"),
    )


def header(config: Config, rules: Mapping[str, Any], **extra: Any) -> JSONObject:
    """The first line of a transcript; ``extra`` adds free-form fields (``session``, ``transport``)."""
    return {
        "transcript": "lockgate-core",
        "format": FORMAT,
        "lockgate": __version__,
        **extra,
        "config": config_to_json(config, rules),
    }


# -- events ----------------------------------------------------------------------


def _put_operation(out: JSONObject, operation: str, target: str | None, client: ev.ClientId | None) -> None:
    """An authentication event's operation, target and session, only when not the defaults."""
    if operation != "authenticate":
        out["operation"] = operation
    if target is not None:
        out["target"] = target
    if client is not None:
        out["client"] = client


def event_to_json(event: ev.Event, rules: Mapping[str, Any] | None = None) -> JSONObject:
    """One event line. ``rules`` is the rules document of a ``ConfigReloaded``'s configuration."""
    out: JSONObject = {"event": type(event).__name__, "now": event.now}
    match event:
        case ev.GatewayStarted():
            if event.seed:
                out["seed"] = event.seed
        case ev.ShutdownRequested():
            pass
        case ev.ClientOpened():
            out["client"] = event.client
            out["transport"] = event.transport
            # Only when set: transcripts without credentials stay as they were.
            if event.principal is not None:
                out["principal"] = _principal_to_json(event.principal)
            if event.server is not None:
                out["server"] = event.server
            if event.restored is not None:
                record = event.restored
                out["restored"] = {
                    "protocol_version": record.protocol_version, "capabilities": dict(record.capabilities),
                    "agent": record.agent, "mode": record.mode,
                }
        case ev.AuthenticationSucceeded():
            out.update(principal=_principal_to_json(event.principal), address=event.address)
            _put_operation(out, event.operation, event.target, event.client)
        case ev.AuthenticationFailed():
            out.update(reason=event.reason, credential=event.credential, address=event.address)
            _put_operation(out, event.operation, event.target, event.client)
        case ev.ClientMessageReceived():
            out["client"] = event.client
            if event.too_large:
                out["too_large"] = True
            else:
                _put_bytes(out, "data", event.data)
        case ev.ClientClosed():
            out["client"] = event.client
        case ev.DownstreamMessageReceived():
            out["downstream"] = event.downstream
            if event.too_large:
                out["too_large"] = True
            else:
                _put_bytes(out, "data", event.data)
            if event.related is not None:
                out["related"] = event.related
        case ev.DownstreamNotReading():
            out["downstream"] = event.downstream
        case ev.ClientFellBehind():
            out.update(client=event.client, request=event.request)
        case ev.DownstreamExited():
            out["downstream"] = event.downstream
            out["reason"] = event.reason
        case ev.TimerFired():
            out["timer"] = event.timer
        case ev.DownstreamSessionLost():
            out["downstream"] = event.downstream
            if event.data is not None:
                _put_bytes(out, "data", event.data)
        case ev.DownstreamHttpError():
            out.update(downstream=event.downstream, status=event.status)
            if event.data is not None:
                _put_bytes(out, "data", event.data)
            _put_bytes(out, "body", event.body)
        case ev.DownstreamUnauthorized():
            out.update(downstream=event.downstream, reason=event.reason, login=event.login)
            if event.data is not None:
                _put_bytes(out, "data", event.data)
        case ev.ConfigReloaded():
            out["config"] = None if rules is None else config_to_json(event.config, rules)
            out.update(files=list(event.files), time=event.time)
        case ev.ConfigRejected():
            out.update(
                problems=[_problem(p) for p in event.problems],
                warnings=[_problem(p) for p in event.warnings],
                files=list(event.files),
                time=event.time,
            )
        case ev.PinsLoaded():
            out.update(pins=dict(event.pins), unreadable=event.unreadable)
        case ev.PinAccepted():
            out.update(server=event.server, tool=event.tool)
        case ev.TokensTaken():
            out.update(ticket=event.ticket, refused=None if event.refused is None else list(event.refused), unavailable=event.unavailable)
        case _:
            assert_never(event)
    return out


def event_from_json(line: Mapping[str, Any]) -> ev.Event:
    """Rebuild an event from its line.

    Raises:
        TranscriptError: not an event line, or a field is missing.
    """
    kind = line.get("event")
    now = line.get("now")
    if not isinstance(now, (int, float)):
        raise TranscriptError(f"event line without a numeric 'now': {kind!r}")
    try:
        match kind:
            case "GatewayStarted":
                return ev.GatewayStarted(now=now, seed=line.get("seed", 0))
            case "ShutdownRequested":
                return ev.ShutdownRequested(now=now)
            case "ClientOpened":
                principal = line.get("principal")
                return ev.ClientOpened(
                    now=now,
                    client=line["client"],
                    transport=line.get("transport", "stdio"),
                    principal=None if principal is None else _principal_from_json(principal),
                    server=line.get("server"),
                    restored=None if "restored" not in line else ev.SessionRecord(**line["restored"]),
                )
            case "AuthenticationSucceeded":
                return ev.AuthenticationSucceeded(
                    now=now, principal=_principal_from_json(line["principal"]), address=line.get("address"),
                    operation=line.get("operation", "authenticate"), target=line.get("target"),
                    client=line.get("client"),
                )
            case "AuthenticationFailed":
                return ev.AuthenticationFailed(
                    now=now, reason=line["reason"], credential=line.get("credential"), address=line.get("address"),
                    operation=line.get("operation", "authenticate"), target=line.get("target"),
                    client=line.get("client"),
                )
            case "ClientMessageReceived":
                if line.get("too_large"):
                    return ev.ClientMessageReceived(now=now, client=line["client"], data=b"", too_large=True)
                return ev.ClientMessageReceived(now=now, client=line["client"], data=_get_bytes(line, "data"))
            case "ClientClosed":
                return ev.ClientClosed(now=now, client=line["client"])
            case "DownstreamMessageReceived":
                if line.get("too_large"):
                    return ev.DownstreamMessageReceived(now=now, downstream=line["downstream"], data=b"", too_large=True)
                return ev.DownstreamMessageReceived(
                    now=now, downstream=line["downstream"], data=_get_bytes(line, "data"), related=line.get("related")
                )
            case "DownstreamNotReading":
                return ev.DownstreamNotReading(now=now, downstream=line["downstream"])
            case "ClientFellBehind":
                return ev.ClientFellBehind(now=now, client=line["client"], request=line.get("request"))
            case "DownstreamExited":
                return ev.DownstreamExited(now=now, downstream=line["downstream"], reason=line["reason"])
            case "TimerFired":
                return ev.TimerFired(now=now, timer=line["timer"])
            case "ConfigReloaded":
                if line.get("config") is None:
                    raise TranscriptError("ConfigReloaded without a recorded configuration")
                return ev.ConfigReloaded(
                    now=now,
                    config=config_from_json(line["config"]),
                    files=tuple(line.get("files", ())),
                    time=line.get("time"),
                )
            case "ConfigRejected":
                return ev.ConfigRejected(
                    now=now,
                    problems=tuple(Problem(**p) for p in line["problems"]),
                    warnings=tuple(Problem(**p) for p in line.get("warnings", ())),
                    files=tuple(line.get("files", ())),
                    time=line.get("time"),
                )
            case "PinsLoaded":
                return ev.PinsLoaded(now=now, pins=line["pins"], unreadable=line.get("unreadable"))
            case "PinAccepted":
                return ev.PinAccepted(now=now, server=line["server"], tool=line.get("tool"))
            case "TokensTaken":
                refused = line.get("refused")
                return ev.TokensTaken(
                    now=now, ticket=line["ticket"], refused=None if refused is None else (int(refused[0]), float(refused[1])),
                    unavailable=line.get("unavailable"),
                )
            case "DownstreamSessionLost":
                data = _get_bytes(line, "data") if "data" in line or "data_base64" in line else None
                return ev.DownstreamSessionLost(now=now, downstream=line["downstream"], data=data)
            case "DownstreamHttpError":
                data = _get_bytes(line, "data") if "data" in line or "data_base64" in line else None
                return ev.DownstreamHttpError(
                    now=now, downstream=line["downstream"], data=data, status=line["status"], body=_get_bytes(line, "body")
                )
            case "DownstreamUnauthorized":
                data = _get_bytes(line, "data") if "data" in line or "data_base64" in line else None
                return ev.DownstreamUnauthorized(
                    now=now, downstream=line["downstream"], data=data, reason=line["reason"], login=line.get("login", True)
                )
    except KeyError as exc:
        raise TranscriptError(f"{kind} line without {exc}") from None
    raise TranscriptError(f"unknown event {kind!r}")


# -- actions ---------------------------------------------------------------------


def action_to_json(action: act.Action) -> JSONObject:
    """One action line, in plain JSON (tuples become lists), so lines compare as JSON."""
    out: JSONObject = {"action": type(action).__name__}
    match action:
        case act.SendToClient():
            out.update(client=action.client, message=action.message, request=action.request)
        case act.DropStream():
            out.update(client=action.client, request=action.request)
        case act.CloseClient():
            out["client"] = action.client
        case act.StartDownstream():
            out.update(
                downstream=action.downstream, server=action.server, spec=_spec_to_json(action.spec), instance=action.instance
            )
            if action.principal is not None:
                out["principal"] = action.principal
        case act.SendToDownstream():
            out.update(downstream=action.downstream, message=action.message)
        case act.StopDownstream():
            out["downstream"] = action.downstream
            if action.kill:
                out["kill"] = True
        case act.SetTimer():
            out.update(timer=action.timer, deadline=action.deadline)
        case act.CancelTimer():
            out["timer"] = action.timer
        case act.Audit():
            out["record"] = action.record
        case act.Log():
            out.update(level=action.level, message=action.message, fields=action.fields)
        case act.SavePins():
            out.update(server=action.server, record=action.record)
        case act.TakeTokens():
            out.update(ticket=action.ticket, limits=[list(limit) for limit in action.limits])
        case _:
            assert_never(action)
    # Round-trip through JSON text: what is compared is what a file would hold.
    normalised: JSONObject = json.loads(json.dumps(out))
    return normalised
