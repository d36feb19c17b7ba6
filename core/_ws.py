"""The WebSocket front's rules, sans-IO: which upgrades to accept, how messages are read, when to ping, how to close.

RFC 6455 (The WebSocket Protocol). MCP JSON-RPC over WebSocket: the client
opens ``ws://HOST:PORT/ws`` offering the subprotocol ``mcp``; after that,
every WebSocket text message carries exactly one JSON-RPC message, both ways.
Each connection is one client of the core, as the stdio client is one.

Theory of operation. The shell (``lockgate.shells.ws``) parses the upgrade
request with h11, frames with wsproto and asks this module:

1. :func:`check_upgrade`: a ``GET /ws`` gets a :class:`Reject` (an HTTP answer,
   then the connection serves HTTP on as before) or an :class:`Upgrade` (the
   headers of the ``101 Switching Protocols``). The checks run in this order:
   ``Host`` (421) and ``Origin`` (403) as for ``/mcp`` (DNS rebinding
   protection; browsers send ``Origin`` on WebSocket handshakes too), method
   (405), a body (400), ``Upgrade``/``Connection`` (426), version 13 (426),
   ``Sec-WebSocket-Key`` (400), and the ``mcp`` subprotocol (400). The
   credential comes after (401 from the authentication shell), as it does
   for ``/mcp``.
2. :class:`Inbound` reassembles one connection's text messages from their
   fragments under the size limit (``GATEWAY_MAX_MESSAGE_BYTES``, the HTTP
   body limit; every fragment counts), and refuses binary ones.
3. :class:`KeepAlive` says when to ping the client and when to give up on
   one whose pong does not come (``GATEWAY_WS_PING_INTERVAL``,
   ``GATEWAY_WS_PING_TIMEOUT``).
4. The close codes (:class:`CloseCode`) and reasons of every way a
   connection ends (:class:`WsClose` and the functions that make them).

With ``--transport ws`` alone, :func:`streamable_off` refuses the Streamable
HTTP endpoint and the REST API (404); ``/health``, ``/ready``, ``/metrics``
and ``/auth/`` stay served on the same port.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum

from ._errors import ErrorCode
from ._http_answers import Headers, Reject, reject
from ._http_requests import MCP_PATH, HttpPolicy, host_allowed, origin_allowed, rest_kind
from ._jsonrpc import RequestId, is_request_id

__all__ = [
    "CloseCode",
    "Inbound",
    "KeepAlive",
    "MAX_FRAGMENTS",
    "SUBPROTOCOL",
    "SendPing",
    "Upgrade",
    "WS_PATH",
    "WaitUntil",
    "WsClose",
    "accept_token",
    "answer_close",
    "check_upgrade",
    "credential_refused",
    "fell_behind",
    "going_away",
    "internal_failure",
    "is_ws_target",
    "keepalive_timeout",
    "opened_request",
    "protocol_failure",
    "session_ended",
    "shutting_down",
    "streamable_off",
]

#: Where the WebSocket front listens, beside ``/mcp`` on the same port.
WS_PATH = "/ws"
#: The subprotocol a client must offer (``Sec-WebSocket-Protocol``); the answer selects it.
SUBPROTOCOL = "mcp"
#: RFC 6455, section 1.3: the GUID appended to the client's key for ``Sec-WebSocket-Accept``.
_ACCEPT_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#: The one protocol version RFC 6455 defines.
_VERSION = "13"
#: Most frames one message may come in. Empty continuation frames add no
#: bytes, so without a count a client could keep one message open for ever.
MAX_FRAGMENTS = 4096
#: A close frame's reason is at most 123 bytes of UTF-8 (RFC 6455, section 5.5: 125 with the code).
_MAX_REASON = 123


class CloseCode(IntEnum):
    """The close codes this front sends (RFC 6455, section 7.4.1)."""

    NORMAL = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    UNSUPPORTED_DATA = 1003
    NO_STATUS = 1005
    ABNORMAL = 1006
    INVALID_DATA = 1007
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011


@dataclass(frozen=True, slots=True)
class WsClose:
    """End the connection with a close frame of ``code`` and ``reason`` (at most 123 bytes of UTF-8)."""

    code: int
    reason: str = ""


def _close(code: CloseCode, reason: str) -> WsClose:
    encoded = reason.encode("utf-8")
    if len(encoded) > _MAX_REASON:
        reason = encoded[:_MAX_REASON].decode("utf-8", "ignore")
    return WsClose(int(code), reason)


# -- the upgrade -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Upgrade:
    """Accept the upgrade: answer ``101 Switching Protocols`` with ``headers``, then speak WebSocket."""

    headers: Headers


def is_ws_target(target: str) -> bool:
    """Whether a request target (path and query) is the WebSocket endpoint."""
    return target.partition("?")[0].partition("#")[0] == WS_PATH


def check_upgrade(method: str, target: str, headers: Mapping[str, str], policy: HttpPolicy) -> Reject | Upgrade:
    """Decide on a request to :data:`WS_PATH` (:func:`is_ws_target`) from its head; see the module docstring.

    ``headers`` as for :func:`lockgate.core.http.check_head`: lower-case
    names, repeated fields joined with ``", "``. A refusal carries a
    JSON-RPC error body, as every refusal of the HTTP front does.
    """
    if not host_allowed(headers.get("host"), policy):
        return reject(421, ErrorCode.INVALID_REQUEST, "Misdirected Request: invalid Host header")
    origin = headers.get("origin")
    if origin is not None and not origin_allowed(origin, policy):
        return reject(403, ErrorCode.INVALID_REQUEST, "Forbidden: Origin not allowed")
    if method != "GET":
        return reject(405, ErrorCode.INVALID_REQUEST, "Method Not Allowed: open the WebSocket with GET", allow="GET")
    if "transfer-encoding" in headers or headers.get("content-length", "0").strip() != "0":
        # The bytes after the head are WebSocket frames; a body would be read as frames.
        return reject(400, ErrorCode.INVALID_REQUEST, "Bad Request: a WebSocket upgrade request has no body")
    if not _has_token(headers.get("upgrade", ""), "websocket") or not _has_token(headers.get("connection", ""), "upgrade"):
        return _upgrade_required(f"Upgrade Required: {WS_PATH} speaks WebSocket (Upgrade: websocket, Connection: Upgrade)")
    if headers.get("sec-websocket-version", "").strip() != _VERSION:
        return _upgrade_required(f"Upgrade Required: WebSocket version {_VERSION} only")
    key = headers.get("sec-websocket-key", "").strip()
    if not _valid_key(key):
        return reject(400, ErrorCode.INVALID_REQUEST, "Bad Request: Sec-WebSocket-Key is not 16 bytes in base64")
    offered = {part.strip() for part in headers.get("sec-websocket-protocol", "").split(",")}
    if SUBPROTOCOL not in offered:
        return reject(
            400, ErrorCode.INVALID_REQUEST, f"Bad Request: Sec-WebSocket-Protocol must offer {SUBPROTOCOL!r}"
        )
    # No Sec-WebSocket-Extensions in the answer: no extension (permessage-deflate
    # included) is agreed, so a message's size on the wire is its size.
    return Upgrade(
        headers=(
            ("upgrade", "websocket"),
            ("connection", "Upgrade"),
            ("sec-websocket-accept", accept_token(key)),
            ("sec-websocket-protocol", SUBPROTOCOL),
        )
    )


def accept_token(key: str) -> str:
    """``Sec-WebSocket-Accept`` for a client's ``Sec-WebSocket-Key`` (RFC 6455, section 4.2.2)."""
    return base64.b64encode(hashlib.sha1(key.encode("ascii") + _ACCEPT_GUID).digest()).decode("ascii")


def _upgrade_required(message: str) -> Reject:
    refused = reject(426, ErrorCode.INVALID_REQUEST, message)
    extra = (("upgrade", "websocket"), ("connection", "Upgrade"), ("sec-websocket-version", _VERSION))
    return Reject(status=426, headers=(*refused.headers, *extra), body=refused.body)


def _has_token(value: str, token: str) -> bool:
    return token in (part.strip().lower() for part in value.split(","))


def _valid_key(key: str) -> bool:
    if not key.isascii():
        return False
    try:
        return len(base64.b64decode(key, validate=True)) == 16
    except (binascii.Error, ValueError):
        return False


def shutting_down() -> Reject:
    """503 to an upgrade that comes while the gateway shuts down; the connection closes after it."""
    refused = reject(503, ErrorCode.INVALID_REQUEST, "Service Unavailable: the gateway is shutting down")
    return Reject(status=503, headers=(*refused.headers, ("connection", "close")), body=refused.body, close=True)


def streamable_off(target: str) -> Reject | None:
    """With WebSocket alone: 404 for the Streamable HTTP endpoint and the REST API, ``None`` for the rest."""
    path = target.partition("?")[0].partition("#")[0]
    if path == MCP_PATH or rest_kind(path) == "rest":
        return reject(
            404, ErrorCode.INVALID_REQUEST, f"Not Found: Streamable HTTP is off; MCP is served over WebSocket at {WS_PATH}"
        )
    return None


# -- messages --------------------------------------------------------------------------


class Inbound:
    """One connection's text messages, put together from their fragments under ``max_bytes``.

    The shell hands in each piece of text the frame parser gives it, as
    UTF-8 bytes, and whether the message ends with it. A message over
    ``max_bytes`` (all its fragments together), or in more than
    :data:`MAX_FRAGMENTS` frames, ends the connection with 1009; a binary
    message with 1003: MCP messages are JSON text.
    """

    __slots__ = ("_frames", "_parts", "_size", "max_bytes")

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._parts: list[bytes] = []
        self._size = 0
        self._frames = 0

    def text(self, data: bytes, *, frame_finished: bool, message_finished: bool) -> bytes | WsClose | None:
        """The whole message once it is finished, ``None`` while more is to come, or why to close."""
        if message_finished and not self._parts:
            # The usual case: a message in one piece.
            if len(data) > self.max_bytes:
                return self._too_big()
            self._frames = 0
            return data
        self._size += len(data)
        self._frames += frame_finished
        if self._size > self.max_bytes:
            return self._too_big()
        if self._frames > MAX_FRAGMENTS:
            return _close(CloseCode.MESSAGE_TOO_BIG, f"a message may come in at most {MAX_FRAGMENTS} frames")
        self._parts.append(data)
        if not message_finished:
            return None
        whole = b"".join(self._parts)
        self._parts, self._size, self._frames = [], 0, 0
        return whole

    def binary(self) -> WsClose:
        """A binary message (or a fragment of one) arrived."""
        return _close(CloseCode.UNSUPPORTED_DATA, "MCP messages are JSON text: send text messages, not binary")

    def _too_big(self) -> WsClose:
        self._parts, self._size = [], 0
        return _close(CloseCode.MESSAGE_TOO_BIG, f"a message may be at most {self.max_bytes} bytes")


def opened_request(data: bytes) -> RequestId | None:
    """The id of the request ``data`` opens, or ``None`` (a notification, a response, not JSON-RPC).

    The shell counts a connection's requests in flight with it, to let them
    finish at shutdown; the core still decides everything about the message.
    """
    if b'"method"' not in data or b'"id"' not in data:
        return None
    try:
        value = json.loads(data)
    except ValueError:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("method"), str):
        return None
    request_id = value.get("id")
    return request_id if is_request_id(request_id) else None


# -- keep-alive ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SendPing:
    """Send a ping with ``payload`` now."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class WaitUntil:
    """Nothing to do before ``deadline`` (``inf``: keep-alive is off), unless a pong arrives first."""

    deadline: float


class KeepAlive:
    """When to ping one client, and when to give up on it.

    A ping goes out ``interval`` seconds after the previous one (the first
    ``interval`` after the connection opened); its pong must come within
    ``timeout`` seconds, else the connection closes with 1011. A pong proves
    the client reads what it is sent, in order, so a client that stopped
    reading is found too, not only one that went away. Only the pong of the
    latest ping counts (its payload names it); unsolicited pongs are
    ignored (RFC 6455, section 5.5.3). ``interval`` 0 turns keep-alive off.
    """

    __slots__ = ("_awaiting", "_deadline", "_due", "_sent", "interval", "timeout")

    def __init__(self, interval: float, timeout: float, now: float) -> None:
        self.interval = interval
        self.timeout = timeout
        self._sent = 0
        self._awaiting: bytes | None = None
        self._deadline = float("inf")
        self._due = now + interval if interval > 0 else float("inf")

    def poll(self, now: float) -> SendPing | WaitUntil | WsClose:
        """What to do at ``now``: ping, wait, or close."""
        if self._awaiting is not None:
            if now >= self._deadline:
                return keepalive_timeout(self.timeout)
            return WaitUntil(min(self._deadline, self._due))
        if now >= self._due:
            self._sent += 1
            payload = str(self._sent).encode("ascii")
            self._awaiting = payload
            self._deadline = now + self.timeout
            self._due = now + self.interval
            return SendPing(payload)
        return WaitUntil(self._due)

    def pong(self, payload: bytes) -> bool:
        """A pong arrived; whether it answered the ping awaited (the next poll then waits for the next ping)."""
        if self._awaiting is None or payload != self._awaiting:
            return False
        self._awaiting = None
        self._deadline = float("inf")
        return True


# -- closing ---------------------------------------------------------------------------


def going_away() -> WsClose:
    """The gateway shuts down (after the grace period)."""
    return _close(CloseCode.GOING_AWAY, "the gateway is shutting down")


def session_ended() -> WsClose:
    """The core ended the session (``CloseClient``)."""
    return _close(CloseCode.NORMAL, "the gateway ended the session")


def fell_behind() -> WsClose:
    """The client does not read its messages: its queue is full."""
    return _close(CloseCode.POLICY_VIOLATION, "the client does not read its messages fast enough")


def keepalive_timeout(timeout: float) -> WsClose:
    """The pong of a keep-alive ping did not come in time."""
    return _close(CloseCode.INTERNAL_ERROR, f"keep-alive ping not answered within {timeout:g} s")


def internal_failure() -> WsClose:
    """The shell failed while serving the connection (a bug)."""
    return _close(CloseCode.INTERNAL_ERROR, "internal error")


def credential_refused(status: int, reason: str) -> WsClose | None:
    """The connection's credential, checked again, proves nothing now: close with 1008, or ``None`` to keep it.

    ``status`` is the HTTP status the refusal would have over HTTP: 401 (the
    credential was revoked or expired) closes; 503 (the credential store does
    not answer) keeps the connection, its calls refused until the store
    answers again, as an HTTP session's would be.
    """
    if status == 503:
        return None
    return _close(CloseCode.POLICY_VIOLATION, f"credential refused: {reason}")


def protocol_failure(code: int, reason: str) -> WsClose:
    """The frame parser refused what the client sent (1002, or 1007 for text that is not UTF-8)."""
    known = CloseCode(code) if code in CloseCode._value2member_map_ else CloseCode.PROTOCOL_ERROR
    return _close(known, reason)


def answer_close(code: int | None) -> WsClose:
    """The reply to the client's close frame: its code echoed (RFC 6455, section 5.5.1); 1000 for none."""
    if code is None or code in (CloseCode.NO_STATUS, CloseCode.ABNORMAL):
        return WsClose(int(CloseCode.NORMAL))
    return WsClose(code)
