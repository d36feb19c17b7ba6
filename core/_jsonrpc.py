"""JSON-RPC 2.0 framing shared by every transport: decode, classify, encode.

https://www.jsonrpc.org/specification. MCP sends one message per frame and,
since 2025-06-18, no batches; a batch array is answered with -32600.
Messages stay plain dicts end to end so that fields the gateway does not know
(``_meta``, schemas, extensions) survive forwarding untouched.

Every frame is parsed by :func:`lockgate.core._strictjson.parse`, so whatever
:func:`decode` returns as a message can be encoded again: a frame holding a
lone surrogate, ``NaN``, an out-of-range number or nesting past the limit is
:class:`Invalid`, answered with the request's id whenever that id is sound.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, TypeGuard, Union

from ._errors import ErrorCode
from ._policy import json_path
from ._strictjson import Flawed, parse

__all__ = [
    "Invalid",
    "Notification",
    "Request",
    "Response",
    "decode",
    "encode",
    "classify",
    "answer_bytes",
    "error",
    "error_with",
    "internal_error",
    "is_request_id",
    "notification",
    "request",
    "result",
]

JSONObject = dict[str, Any]
RequestId = Union[int, str]

_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def encode(message: JSONObject) -> bytes:
    """Serialise one message compactly as UTF-8, without a trailing newline.

    JSON escapes every control character inside strings, so the result never
    holds a raw newline and can be framed one message per line.
    """
    return _encoder.encode(message).encode("utf-8")


@dataclass(frozen=True, slots=True)
class Request:
    """A message with a ``method`` and an ``id``: it wants an answer."""

    id: RequestId
    method: str
    params: JSONObject
    raw: JSONObject


@dataclass(frozen=True, slots=True)
class Notification:
    """A message with a ``method`` and no ``id``: nobody answers it."""

    method: str
    params: JSONObject
    raw: JSONObject


@dataclass(frozen=True, slots=True)
class Response:
    """A ``result`` or ``error`` answering one of our requests.

    ``data``: the bytes it was decoded from (set by :func:`decode`), so an
    answer passed on untouched can keep them (:func:`answer_bytes`).
    """

    id: RequestId
    raw: JSONObject
    data: bytes | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Invalid:
    """Bytes that are not one valid JSON-RPC message, and the error to answer with.

    ``id`` is the request id when one could be read (so the error can name
    it), else ``None`` as the spec requires for unreadable requests.
    ``path`` locates the flaw of a frame refused by the strict parser
    (``params.arguments.args.x``), and ``salvaged`` is that frame with every
    flaw replaced (see :class:`~lockgate.core._strictjson.Flawed`), so the
    gateway can still audit what was asked; both are ``None`` otherwise.
    ``partial``: members after a flaw too deep to parse could not be read.
    """

    code: ErrorCode
    message: str
    id: RequestId | None = None
    path: str | None = None
    salvaged: dict[str, Any] | None = None
    partial: bool = False

    @property
    def answer_owed(self) -> bool:
        """Whether the frame may be a request, so an error answers it (JSON-RPC: never a notification or a response).

        A frame read only in part may be a request whose ``id`` came after
        what could be read: it is answered, with ``id`` null.
        """
        salvaged = self.salvaged
        if salvaged is None:
            return True  # nothing could be read: answered with id null, as JSON-RPC says
        if "method" in salvaged:
            return "id" in salvaged or self.partial
        return not ("result" in salvaged or "error" in salvaged)


Message = Union[Request, Notification, Response, Invalid]


def decode(data: bytes | str) -> Message:
    """Parse and classify one frame; never raises on bad input."""
    value = parse(data)
    if isinstance(value, Flawed):
        return _refused(value)
    msg = classify(value)
    if type(msg) is Response and isinstance(data, bytes):
        return Response(msg.id, msg.raw, data)
    return msg


def _refused(flawed: Flawed) -> Invalid:
    """The error for a frame the strict parser refused, with the request's id when it is sound.

    Text that is not JSON at all (bad syntax, invalid UTF-8, ``NaN``) is a
    parse error (-32700); well-formed JSON the gateway cannot carry is
    -32602 when the flaw is inside ``params``, else -32600.
    """
    flaw = flawed.first
    salvaged = flawed.salvaged if isinstance(flawed.salvaged, dict) else None
    msg_id: RequestId | None = None
    if salvaged is not None and "id" not in flawed.tainted and is_request_id(salvaged.get("id")):
        msg_id = salvaged["id"]
    where = _short_path(flaw.path)
    if flaw.not_json or flawed.salvaged is None:
        code, prefix = ErrorCode.PARSE_ERROR, "Parse error"
    elif flaw.path[:1] == ("params",):
        code, prefix = ErrorCode.INVALID_PARAMS, "Invalid params"
    else:
        code, prefix = ErrorCode.INVALID_REQUEST, "Invalid Request"
    message = f"{prefix}: {flaw.detail}" + (f" at {where}" if where else "")
    return Invalid(code, message, msg_id, path=where or None, salvaged=salvaged, partial=flawed.partial)


def _short_path(path: tuple[str | int, ...], keep: int = 8) -> str:
    """``json_path`` of ``path``, its first ``keep`` steps only when it is deeper."""
    if len(path) <= keep:
        return json_path(*path)
    return f"{json_path(*path[:keep])}... ({len(path) - keep} levels more)"


def classify(obj: Any) -> Message:
    """Classify an already parsed JSON value as a JSON-RPC message."""
    if isinstance(obj, list):
        return Invalid(ErrorCode.INVALID_REQUEST, "Invalid Request: batches are not supported")
    if not isinstance(obj, dict):
        return Invalid(ErrorCode.INVALID_REQUEST, "Invalid Request: a message must be a JSON object")
    raw_id = obj.get("id")
    msg_id: RequestId | None = raw_id if is_request_id(raw_id) else None
    if obj.get("jsonrpc") != "2.0":
        return Invalid(ErrorCode.INVALID_REQUEST, 'Invalid Request: "jsonrpc" must be "2.0"', msg_id)
    if "method" in obj:
        method = obj["method"]
        if not isinstance(method, str):
            return Invalid(ErrorCode.INVALID_REQUEST, 'Invalid Request: "method" must be a string', msg_id)
        params = obj.get("params", {})
        if params is None:
            params = {}
        if not isinstance(params, dict):
            # MCP params are always objects (by-name); positional arrays are not used.
            return Invalid(ErrorCode.INVALID_REQUEST, 'Invalid Request: "params" must be an object', msg_id)
        if "id" not in obj:
            return Notification(method, params, obj)
        if msg_id is None:
            return Invalid(ErrorCode.INVALID_REQUEST, 'Invalid Request: "id" must be a string or an integer')
        return Request(msg_id, method, params, obj)
    if ("result" in obj) != ("error" in obj) and msg_id is not None:
        return Response(msg_id, obj)
    return Invalid(ErrorCode.INVALID_REQUEST, "Invalid Request: neither a request, a notification nor a response", msg_id)


def is_request_id(value: Any) -> TypeGuard[RequestId]:
    """Tell whether a value can be a JSON-RPC request id (a string or an integer)."""
    # bool is an int subclass but never a valid id.
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


def request(request_id: RequestId, method: str, params: JSONObject | None = None) -> JSONObject:
    """A request; ``params`` is included only when given."""
    message: JSONObject = {"jsonrpc": "2.0", "id": request_id, "method": method}
    if params is not None:
        message["params"] = params
    return message


def notification(method: str, params: JSONObject | None = None) -> JSONObject:
    """A notification; ``params`` is included only when given."""
    message: JSONObject = {"jsonrpc": "2.0", "method": method}
    if params is not None:
        message["params"] = params
    return message


def result(request_id: RequestId, value: JSONObject) -> JSONObject:
    """A success response."""
    return {"jsonrpc": "2.0", "id": request_id, "result": value}


def error_with(request_id: RequestId | None, err: Any) -> JSONObject:
    """An error response carrying the error object ``err`` as it is (a server's, forwarded untouched)."""
    return {"jsonrpc": "2.0", "id": request_id, "error": err}


def error(
    request_id: RequestId | None,
    code: int,
    message: str,
    data: JSONObject | None = None,
) -> JSONObject:
    """An error response; ``data`` is included only when given."""
    err: JSONObject = {"code": int(code), "message": message}
    if data is not None:
        err["data"] = data
    return error_with(request_id, err)


_WS = rb"[ \t\r\n]*"
#: The start of an answer whose first members are ``jsonrpc``, ``id`` (an integer: the
#: gateway's wire ids are) and ``result`` or ``error``, up to that member's value.
_ENVELOPE = re.compile(
    _WS + rb"\{" + _WS + rb'"jsonrpc"' + _WS + b":" + _WS + rb'"2\.0"' + _WS + b"," + _WS + rb'"id"' + _WS + b":" + _WS
    + rb"(-?[0-9]+)" + _WS + b"," + _WS + rb'"(result|error)"' + _WS + b":" + _WS
)


def answer_bytes(msg: Response, request_id: RequestId) -> bytes | None:
    """The bytes of ``msg`` answering ``request_id`` instead: its ``result`` or ``error`` left as the server wrote it.

    The same message as ``result(request_id, msg.raw["result"])`` (or
    :func:`error_with`) encoded, without encoding that value again: only the
    envelope around it is written. ``None`` when the bytes do not show
    plainly where that value starts and ends; the caller then encodes.

    It is plain when the server wrote ``jsonrpc``, ``id`` and the value's key
    first, in that order and nothing after the value (``msg.raw`` has exactly
    those three members), on one line, and the text spells no key with a ``\\u00``
    escape and holds ``"id"`` and ``"jsonrpc"`` once each: so no second
    ``id`` can follow the value and reach the client. The bytes were parsed
    already (:func:`decode`), so they are valid JSON the gateway can carry.
    """
    data = msg.data
    if data is None or len(msg.raw) != 3 or not isinstance(msg.id, int):
        return None
    head = _ENVELOPE.match(data)
    if head is None or int(head[1]) != msg.id:
        return None
    if b"\\u00" in data or data.count(b'"id"') != 1 or data.count(b'"jsonrpc"') != 1:
        return None
    end = data.rstrip(b" \t\r\n")
    if not end.endswith(b"}"):
        return None
    value = end[head.end() : -1].rstrip(b" \t\r\n")
    if b"\n" in value or b"\r" in value:
        return None  # whitespace a server put between tokens: it would break one-message-per-line framing
    return b'{"jsonrpc":"2.0","id":' + _encoder.encode(request_id).encode("utf-8") + b',"' + head[2] + b'":' + value + b"}"


def internal_error(frame: bytes) -> JSONObject | None:
    """The -32603 answer to the request in ``frame`` after the gateway failed to handle it; ``None`` if it is no request.

    For the last line of defence: a shell whose ``Gateway.handle`` raised
    (a bug) still answers the request that met the bug, and nothing else.
    """
    message = decode(frame)
    if not isinstance(message, Request):
        return None
    return error(
        message.id,
        ErrorCode.INTERNAL_ERROR,
        "Internal error: the gateway failed to handle this request (logged)",
        {"code": ErrorCode.INTERNAL_ERROR.name},
    )


def internal_error_replacing(message: JSONObject) -> JSONObject | None:
    """The -32603 that stands in for an answer a transport could not send; ``None`` for a notification.

    A notification is dropped instead: losing it loses no answer.
    """
    request_id = message.get("id")
    if "method" in message or not is_request_id(request_id):
        return None
    return error(
        request_id,
        ErrorCode.INTERNAL_ERROR,
        "Internal error: the answer could not be sent (logged)",
        {"code": ErrorCode.INTERNAL_ERROR.name},
    )
