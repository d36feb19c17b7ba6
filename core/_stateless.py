"""The front's stateless era (MCP 2026-07-28): the per-request envelope, and results shaped for it.

A 2026-07-28 client opens no session. Every request carries, in
``params._meta``, the protocol version and the client's capabilities; the
gateway answers ``server/discover`` itself; every result says what it is in
``resultType``; lists, ``resources/read`` and discover also say how long
they may be cached (``ttlMs``) and by whom (``cacheScope``)
(https://modelcontextprotocol.io/specification/2026-07-28/basic).

Theory of operation
-------------------
Which era a client speaks is decided once per client of the core: over
stdio and WebSocket by its first request (:func:`speaks_stateless`: a
``server/discover``, or any request whose ``_meta`` names a protocol
version, rather than ``initialize``), and over Streamable HTTP by the
shell, per request, from the ``MCP-Protocol-Version`` header (a stateless
request is a client of its own, opened with ``transport="stateless"``).

A stateless client's request passes :func:`read_envelope` first (the
spec's ladder: the envelope's presence, then over HTTP the routing headers
against the body, then the version), then :class:`StatelessFront` takes
what the handshake era learnt at ``initialize`` from the envelope (the
capabilities, the version, the log level; the agent and the mode from the
first request) and hands it to the same code that serves a handshake-era
session. What goes back passes :func:`shape_answer` on its way out
(:meth:`~._context.Context.emit`): ``resultType`` when the result has none,
``cacheScope: private`` and a ``ttlMs`` on the cacheable answers (private
always: under a policy every answer depends on who asks), and the stateless
era's code for an unknown resource. A notification about no request goes
only to the ``subscriptions/listen`` streams that asked for it
(:meth:`StatelessFront.listen`), since there is no session stream; a request
a server sends is never passed to such a client: :mod:`._bridge` turns it
into an ``input_required`` answer, and its retry into the server's answer.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._actions import SendToClient
from ._eras import (
    CLIENT_CAPABILITIES_KEY,
    CLIENT_INFO_KEY,
    LOG_LEVEL_KEY,
    MODERN_VERSIONS,
    NAME_BEARING,
    PROTOCOL_VERSION_KEY,
    SERVER_INFO_KEY,
    SUBSCRIPTION_ID_KEY,
)
from ._errors import ErrorCode
from ._jsonrpc import Request, notification
from ._session import LOG_LEVELS, ClientSession, SessionTrigger

if TYPE_CHECKING:
    from ._bridge import Bridge
    from ._context import Context
    from ._surface import Surface

__all__ = [
    "CACHEABLE",
    "Envelope",
    "Refused",
    "StatelessFront",
    "decode_header_value",
    "discover_result",
    "read_envelope",
    "shape_answer",
    "speaks_stateless",
    "unsupported_version",
]

JSONObject = dict[str, Any]

#: Answers that carry ``ttlMs`` and ``cacheScope`` (2026-07-28, schema: ``CacheableResult``).
CACHEABLE = frozenset({
    "server/discover", "tools/list", "prompts/list", "resources/list", "resources/templates/list", "resources/read",
})
#: Methods the stateless era removed: answered as unknown.
_REMOVED = frozenset({"ping", "logging/setLevel", "resources/subscribe", "resources/unsubscribe"})
#: MCP's code for an unknown resource up to 2025-11-25; 2026-07-28 answers -32602 instead.
_OLD_RESOURCE_NOT_FOUND = -32002
#: How long a client may keep a gateway answer: not at all. The gateway's lists
#: change with the servers and with reloads, and a stateless client has no
#: ``list_changed`` to tell it (outside ``subscriptions/listen``).
_TTL_MS = 0

_HEADER_VERSION = "mcp-protocol-version"
_HEADER_METHOD = "mcp-method"
_HEADER_NAME = "mcp-name"
_BASE64_PREFIX, _BASE64_SUFFIX = "=?base64?", "?="


@dataclass(frozen=True, slots=True)
class Envelope:
    """What a stateless request's ``_meta`` says about its client (the handshake era's ``initialize``, per request)."""

    version: str
    capabilities: JSONObject
    client_info: Any = None
    log_level: str | None = None


@dataclass(frozen=True, slots=True)
class Refused:
    """A request the envelope ladder refuses: the error to answer with (``data`` goes into the error's ``data``)."""

    code: ErrorCode
    message: str
    data: JSONObject

    @property
    def http_status(self) -> int:
        """Over Streamable HTTP: 400 for each of the ladder's refusals."""
        return 400


def speaks_stateless(req: Request) -> bool:
    """Whether a client's first request opens the stateless era (else it speaks the handshake era)."""
    if req.method == "server/discover":
        return True
    meta = req.params.get("_meta")
    return isinstance(meta, dict) and PROTOCOL_VERSION_KEY in meta


def read_envelope(req: Request, headers: Mapping[str, str] | None = None) -> Envelope | Refused:
    """Check a stateless request's envelope, as the spec orders the checks; the first failure wins.

    1. ``params._meta`` is an object with the protocol version and the client
       capabilities (-32602 naming what is missing);
    2. with ``headers`` (Streamable HTTP; lower-case names, repeated ones
       joined by ``", "``): ``MCP-Protocol-Version`` equals the envelope's
       version, ``Mcp-Method`` the method, and ``Mcp-Name`` (plain or in its
       ``=?base64?…?=`` form) the item a ``tools/call``, ``prompts/get`` or
       ``resources/read`` names (-32020); a client that disagrees with
       itself is told so before anything else about its version;
    3. the version is a string (-32602) the gateway speaks (-32022 with
       ``supported`` and ``requested``).

    A repeated routing header reaches here joined, so it never equals the
    body and is refused at step 2, which is what the spec asks for it.
    """
    meta = req.params.get("_meta")
    if not isinstance(meta, dict):
        return Refused(
            ErrorCode.INVALID_PARAMS,
            f"params._meta must be an object carrying {PROTOCOL_VERSION_KEY!r} and {CLIENT_CAPABILITIES_KEY!r}",
            {"parameter": "_meta"},
        )
    missing = [key for key in (PROTOCOL_VERSION_KEY, CLIENT_CAPABILITIES_KEY) if key not in meta]
    if missing:
        return Refused(
            ErrorCode.INVALID_PARAMS, f"params._meta is missing {', '.join(missing)}", {"parameter": f"_meta.{missing[0]}"}
        )
    version = meta[PROTOCOL_VERSION_KEY]
    if headers is not None:
        problem = _header_problem(req, version, headers)
        if problem is not None:
            return Refused(ErrorCode.HEADER_MISMATCH, problem, {})
    if not isinstance(version, str):
        return Refused(ErrorCode.INVALID_PARAMS, "The protocol version in params._meta must be a string", {"parameter": f"_meta.{PROTOCOL_VERSION_KEY}"})
    if version not in MODERN_VERSIONS:
        return unsupported_version(version)
    capabilities = meta[CLIENT_CAPABILITIES_KEY]
    if not isinstance(capabilities, dict):
        return Refused(ErrorCode.INVALID_PARAMS, "The client capabilities in params._meta must be an object", {"parameter": f"_meta.{CLIENT_CAPABILITIES_KEY}"})
    level = meta.get(LOG_LEVEL_KEY)
    return Envelope(version, capabilities, meta.get(CLIENT_INFO_KEY), level if level in LOG_LEVELS else None)


def unsupported_version(version: str) -> Refused:
    """-32022 for a version the gateway does not speak: the ones it does, so the client can retry with one."""
    return Refused(
        ErrorCode.UNSUPPORTED_PROTOCOL_VERSION, f"Unsupported protocol version: {version[:64]}",
        {"supported": list(MODERN_VERSIONS), "requested": version},
    )


def _header_problem(req: Request, version: Any, headers: Mapping[str, str]) -> str | None:
    """Why the routing headers disagree with the body, or ``None`` when they agree."""
    if headers.get(_HEADER_VERSION) != version:
        return "The MCP-Protocol-Version header does not match the protocol version in params._meta"
    if headers.get(_HEADER_METHOD) != req.method:
        return "The Mcp-Method header does not match the request's method"
    key = NAME_BEARING.get(req.method)
    if key is not None:
        named = req.params.get(key)
        if named is not None and decode_header_value(headers.get(_HEADER_NAME)) != named:
            return f"The Mcp-Name header does not match the request's {key!r}"
    return None


def decode_header_value(value: str | None) -> str | None:
    """A routing header's value: as sent, or decoded from ``=?base64?…?=``; ``None`` when absent or malformed.

    Only canonical base64 of UTF-8 counts, so one value has one spelling.
    """
    if value is None or not (value.startswith(_BASE64_PREFIX) and value.endswith(_BASE64_SUFFIX)):
        return value
    payload = value[len(_BASE64_PREFIX):-len(_BASE64_SUFFIX)]
    try:
        raw = base64.b64decode(payload, validate=True)
        text = raw.decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return text if base64.b64encode(raw).decode("ascii") == payload else None


def discover_result(opening: JSONObject) -> JSONObject:
    """The ``server/discover`` answer made from what ``initialize`` would have answered (``opening``)."""
    result: JSONObject = {"supportedVersions": list(MODERN_VERSIONS), "capabilities": opening.get("capabilities", {})}
    if "instructions" in opening:
        result["instructions"] = opening["instructions"]
    result["_meta"] = {SERVER_INFO_KEY: opening.get("serverInfo")}
    return result


def shape_answer(message: JSONObject, method: str | None) -> JSONObject:
    """An answer to a stateless client's ``method`` request, as the stateless era shapes it (see the module docstring).

    Returns ``message`` itself when nothing changes; never changes it in place.
    """
    answer = message.get("result")
    if isinstance(answer, dict):
        cacheable = method in CACHEABLE
        if "resultType" in answer and not cacheable:
            return message
        shaped = dict(answer)
        shaped.setdefault("resultType", "complete")
        if cacheable:
            shaped["cacheScope"] = "private"
            ttl = shaped.get("ttlMs")
            if isinstance(ttl, bool) or not isinstance(ttl, int) or ttl < 0:
                shaped["ttlMs"] = _TTL_MS
        return {**message, "result": shaped}
    failure = message.get("error")
    if method == "resources/read" and isinstance(failure, dict) and failure.get("code") == _OLD_RESOURCE_NOT_FOUND:
        return {**message, "error": {**failure, "code": int(ErrorCode.INVALID_PARAMS)}}
    return message


def shape_outgoing(session: ClientSession, action: SendToClient) -> list[SendToClient]:
    """What of ``action`` reaches a stateless client: answers shaped, and nothing it has no place for.

    A notification about no request travels on each ``subscriptions/listen``
    stream that asked for it, tagged with that stream's subscription id, and
    nowhere else (there is no session stream); a server's request is never
    sent (:mod:`._bridge` answers the call ``input_required`` instead; this
    is the last guard).
    """
    message = action.message
    if "method" in message:
        if "id" in message:
            return []
        if action.request is not None:
            return [action]
        method = message["method"]
        params = message.get("params")
        uri = params.get("uri") if method == _RESOURCE_UPDATED and isinstance(params, dict) else None
        return [
            SendToClient(client=action.client, message=_tagged(message, listen), request=listen)
            for listen, (methods, uris) in session.listens.items()
            if method in methods or uri in uris
        ]
    request_id = action.request if action.request is not None else message.get("id")
    method = session.methods.pop(request_id, None) if request_id is not None else None
    shaped = shape_answer(message, method)
    return [action if shaped is message else SendToClient(client=action.client, message=shaped, request=action.request)]


def _tagged(message: JSONObject, listen: Any) -> JSONObject:
    """A notification for one listen stream: its ``_meta`` names the subscription (the listen request's id)."""
    params = message.get("params")
    params = dict(params) if isinstance(params, dict) else {}
    meta = params.get("_meta")
    params["_meta"] = {**(meta if isinstance(meta, dict) else {}), SUBSCRIPTION_ID_KEY: listen}
    return {**message, "params": params}


_RESOURCE_UPDATED = "notifications/resources/updated"
#: Resources one listen request may subscribe to: each holds a subscription on a server.
_MAX_LISTEN_URIS = 256

#: What a listen filter's keys ask for, and the notification each one lets through.
_LISTEN_KINDS = {
    "toolsListChanged": "notifications/tools/list_changed",
    "promptsListChanged": "notifications/prompts/list_changed",
    "resourcesListChanged": "notifications/resources/list_changed",
}


class StatelessFront:
    """A stateless client's requests, up to where they join the handshake era's path (see the module docstring)."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self.surface: Surface
        self.bridge: Bridge

    def admit(self, session: ClientSession, req: Request, request_bytes: int) -> bool:
        """Check a stateless request and take what its envelope says; True when it goes on to be served.

        Answers it here (and returns False) when the envelope is refused or
        names a method the stateless era removed (``initialize`` too), and
        for the retry of a parked call (:mod:`._bridge`); a first request
        that waits for mode ``auto`` to choose is served later.
        """
        ctx = self._ctx
        envelope = read_envelope(req)
        if isinstance(envelope, Refused):
            ctx.reply_error(session.id, req.id, envelope.code, envelope.message, **envelope.data)
            return False
        session.capabilities = dict(envelope.capabilities)
        session.protocol_version = envelope.version
        if envelope.log_level is not None:
            session.log_level = envelope.log_level
        if req.method == "initialize" or req.method in _REMOVED:
            why = "has no sessions" if req.method == "initialize" else f"removed {req.method}"
            ctx.reply_error(session.id, req.id, ErrorCode.METHOD_NOT_FOUND, f"Method not found: {req.method} (MCP {envelope.version} {why})")
            return False
        if not session.initialized:
            session.move(SessionTrigger.INITIALIZE)
            session.move(SessionTrigger.INITIALIZED)
            if self.surface.adopt(session, req, request_bytes):
                session.methods[req.id] = req.method
                return False  # mode auto: served once the agent's servers have answered
        session.methods[req.id] = req.method
        if self.bridge.resume(session, req):
            return False  # the retry of a call a server asked something during (:mod:`._bridge`)
        return True

    def listen(self, session: ClientSession, req: Request) -> None:
        """Open a ``subscriptions/listen`` stream: acknowledge what it will carry; it stays open until the client ends it.

        The gateway's own acknowledgement comes first, naming what it
        honours: the list changes, in aggregate mode (on demand, the
        gateway's tools never change). The servers' notifications reach it
        through :func:`shape_outgoing`, already merged and filtered per
        agent by :mod:`._surface`, each tagged with the stream's
        subscription id. ``resourceSubscriptions`` are honoured for the
        resources the agent may read on servers that tell of updates
        (:meth:`~._surface.Surface.listen_resources`); the acknowledgement
        names those, and leaves out the rest, as the spec says of anything a
        server does not support.
        """
        wanted = req.params.get("notifications")
        if not isinstance(wanted, dict):
            self._ctx.reply_error(session.id, req.id, ErrorCode.INVALID_PARAMS, "notifications must be an object", parameter="notifications")
            return
        aggregate = session.mode == "aggregate"
        honoured: JSONObject = {key: True for key in _LISTEN_KINDS if wanted.get(key) is True and aggregate}
        asked = wanted.get("resourceSubscriptions")
        uris: list[str] = []
        if aggregate and isinstance(asked, list):
            uris = self.surface.listen_resources(session, [uri for uri in asked[:_MAX_LISTEN_URIS] if isinstance(uri, str)])
            if uris:
                honoured["resourceSubscriptions"] = uris
        session.listens[req.id] = (frozenset(_LISTEN_KINDS[key] for key in honoured if key in _LISTEN_KINDS), frozenset(uris))
        ack = notification("notifications/subscriptions/acknowledged", {"notifications": honoured, "_meta": {SUBSCRIPTION_ID_KEY: req.id}})
        self._ctx.emit(SendToClient(client=session.id, message=ack, request=req.id))
