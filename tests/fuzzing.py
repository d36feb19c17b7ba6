"""Frames to fuzz a live gateway with, the bookkeeping of their answers, and a raw stdio client.

Shared by ``tests/e2e/test_fuzz.py``, ``tests/e2e/test_poison.py`` and
``bench/fuzz.py``.

:class:`FrameMaker` draws frames from a seeded :class:`random.Random`:
well-formed JSON-RPC (requests, tool calls through the gateway, notifications,
responses), the same with poison in it (what Python's json reads but cannot
write back, see :mod:`lockgate.core._strictjson`: lone surrogates as ``\\uD800``
escapes or as the bytes ``ED A0 80``, other invalid UTF-8, ``NaN``,
``Infinity``, numbers past a double, integers of more than 21 digits, nesting
past 128 levels), ids that are not sound, batches and scalars, truncated
frames, byte noise, blank lines, CRLF, and lines at and over the size limit.
Every id is unique in a run, and each :class:`Frame` says what the gateway owes
for it: exactly one answer with its id (``asked``), at most one
(``tolerated``), or none carrying its id. :class:`Ledger` matches the answers
against that, by id, in whatever order they come.

Why a seeded ``Random`` and not Hypothesis: a fuzz run is one long stateful
conversation with one process, so Hypothesis could not shrink a failure (the
gateway's state depends on every frame before it), and its engine draws about
125 examples a second outside a test of its own (measured with hypothesis
6.170), where the benchmark sends 100,000 frames. A seed and a frame index name
every frame exactly, which is what a report of a failure needs. The core's
property tests (``tests/core/test_properties.py``) keep Hypothesis, where
shrinking works.

:class:`RawGateway` runs ``lockgate serve`` over stdio and lets a test write
any bytes to its stdin (the SDK client could not send any of these frames),
reading and indexing every answer by id as it comes.
"""

from __future__ import annotations

import json
import random
import subprocess
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import httpx
import trio

__all__ = [
    "Discrepancy",
    "Frame",
    "HTTP_HEADERS",
    "FrameMaker",
    "KINDS",
    "Ledger",
    "Raw",
    "RawGateway",
    "encode",
    "http_messages",
    "id_key",
    "open_http_session",
    "rss_kib",
]

RequestId = Union[int, str]
#: An id as the ledger files it: ``("int", 5)`` and ``("str", "5")`` are different ids.
Key = tuple[str, Any]

#: Nesting past this is too deep for Python's json parser itself (about 980
#: levels with the gateway's stack). A request whose ``id`` comes after such a
#: member is answered with id null, since that id cannot be read (see
#: test_poison.py), so the frames drawn here put the ``id`` first whenever
#: they hold nesting this deep.
PARSER_SAFE_DEPTH = 900


def id_key(value: Any) -> Key | None:
    """The ledger's key for a sound request id, ``None`` for anything else (null included)."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        return None
    return (type(value).__name__, value)


@dataclass(frozen=True, slots=True)
class Raw:
    """JSON text put into a frame as it is: what no serialiser writes (poison)."""

    text: bytes


def encode(value: Any, *, ascii_only: bool = False, spaced: bool = False) -> bytes:
    """Serialise ``value`` as JSON text, :class:`Raw` parts verbatim (keys too)."""
    out: list[bytes] = []
    _encode(value, out, ascii_only, b", " if spaced else b",", b": " if spaced else b":")
    return b"".join(out)


def _encode(value: Any, out: list[bytes], ascii_only: bool, comma: bytes, colon: bytes) -> None:
    if isinstance(value, Raw):
        out.append(value.text)
    elif value is None or isinstance(value, (bool, int, float)):
        out.append(json.dumps(value, allow_nan=False).encode())
    elif isinstance(value, str):
        out.append(json.dumps(value, ensure_ascii=ascii_only).encode("utf-8"))
    elif isinstance(value, list):
        out.append(b"[")
        for i, item in enumerate(value):
            if i:
                out.append(comma)
            _encode(item, out, ascii_only, comma, colon)
        out.append(b"]")
    elif isinstance(value, dict):
        out.append(b"{")
        for i, (key, item) in enumerate(value.items()):
            if i:
                out.append(comma)
            _encode(key, out, ascii_only, comma, colon)
            out.append(colon)
            _encode(item, out, ascii_only, comma, colon)
        out.append(b"}")
    else:
        raise TypeError(f"cannot encode {type(value).__name__}")


@dataclass(frozen=True, slots=True)
class Frame:
    """One frame and what the gateway owes for it.

    ``line`` is what goes on stdin (the terminator included, sometimes after
    blank lines); ``body`` is the same frame as an HTTP POST body. ``asked``
    must get exactly one answer carrying it; ``tolerated`` at most one (a
    poisoned response, which the gateway answers with an error); ``cancels``
    names an earlier asked id that this ``notifications/cancelled`` may leave
    unanswered. No answer may carry any other id a frame held.
    """

    kind: str
    line: bytes
    body: bytes
    asked: RequestId | None = None
    tolerated: RequestId | None = None
    cancels: RequestId | None = None


# Characters for sound strings: quotes, escapes, controls, non-ASCII, non-BMP
# (written as a surrogate *pair* when escaped, which is sound), and the
# noncharacters JSON allows.
_ALPHABET = (
    "abcxyz019 _-./:#"
    '"\\\t\n\r\x00\x1f\x7f'
    "éü€中ß"
    "\u2028\u2029\ufeff\ufffd\uffff\ufffe"
    "😀𝄞\U0010ffff"
)
_ID_PREFIXES = ["", "id-", "é", "😀", '"\\', "\u2028", "\x00", " ", "\ufffd", "ab cd"]
# Invalid UTF-8: encoded surrogates, overlong forms, past U+10FFFF, lone and truncated sequences.
_BAD_UTF8 = [
    b"\xed\xa0\x80", b"\xed\xbf\xbf", b"\xed\xa0\xbd\xed\xb8\x80", b"\xff", b"\xfe", b"\xc0\x80", b"\xc1\xbf",
    b"\xe0\x80\x80", b"\xf0\x80\x80\x80", b"\xf4\x90\x80\x80", b"\xf8\x88\x80\x80\x80", b"\x80", b"\xbf",
    b"\xc3", b"\xe2\x82", b"\xf0\x9f\x98",
]
_NOT_JSON_CONSTANTS = [b"NaN", b"Infinity", b"-Infinity"]
_OVERFLOWS = [b"1e400", b"-1e400", b"1E309", b"2e308", b"-1.8e308", b"1e999999999", b"1" * 400 + b".5", b"0.1e310"]
# Sound but unusual number texts.
_ODD_NUMBERS = [b"1e-400", b"-0", b"-0.0", b"1E+2", b"0.000", b"5e-324", b"1.7976931348623157e308", b"123456789012345678901"]

_REQUEST_METHODS = [
    ("tools/call", 40), ("ping", 15), ("tools/list", 5), ("initialize", 3), ("logging/setLevel", 4),
    ("server/discover", 2), ("resources/list", 2), ("prompts/list", 2), ("completion/complete", 1),
    ("notifications/initialized", 1), ("", 1), ("nope", 2),
]
_NOTIFICATIONS = [
    "notifications/initialized", "notifications/progress", "notifications/roots/list_changed",
    "notifications/message", "notifications/nope", "ping", "tools/call",
]
_KINDS: list[tuple[str, float]] = [
    ("request", 28), ("poisoned_request", 18), ("poisoned_id", 5), ("notification", 7), ("cancel", 3),
    ("poisoned_notification", 4), ("response", 3), ("poisoned_response", 2), ("invalid_utf8", 3),
    ("truncated", 3), ("noise", 3), ("not_object", 3), ("blank", 3),
    # Lines at and over the limit are large (GATEWAY_MAX_MESSAGE_BYTES each): a few per thousand.
    ("at_limit", 0.15), ("too_long", 0.15),
]
KINDS: tuple[str, ...] = tuple(kind for kind, _ in _KINDS)


class FrameMaker:
    """Draws :class:`Frame` s from ``seed``; the same seed gives the same frames.

    ``server`` and ``agent`` name a downstream and an agent the rules allow
    (tool ``echo`` on it answers, ``drop_everything`` is denied);
    ``max_bytes`` is the gateway's ``GATEWAY_MAX_MESSAGE_BYTES``.
    """

    def __init__(self, seed: int, *, max_bytes: int, server: str = "testing", agent: str = "dev") -> None:
        self.rng = random.Random(seed)
        self.max_bytes = max_bytes
        self.server = server
        self.agent = agent
        self._count = 0
        self._recent_calls: list[RequestId] = []
        self._deep = False
        self._weights = [weight for _, weight in _KINDS]

    def frames(self, count: int) -> list[Frame]:
        """``count`` frames, every kind in :data:`KINDS` among them (when ``count`` allows)."""
        kinds = [*KINDS[:count], *self.rng.choices(KINDS, self._weights, k=max(0, count - len(KINDS)))]
        self.rng.shuffle(kinds)
        return [self.frame(kind) for kind in kinds]

    def frame(self, kind: str | None = None) -> Frame:
        """One frame of ``kind`` (one of :data:`KINDS`), of a random kind by default."""
        if kind is None:
            kind = self.rng.choices(KINDS, self._weights)[0]
        self._deep = False
        frame: Frame = getattr(self, f"_{kind}")()
        return frame

    # -- ids and values ----------------------------------------------------------

    def new_id(self) -> RequestId:
        """A sound id never drawn before in this run (ints and strings of every shape)."""
        n = self._count
        self._count += 1
        shape = self.rng.randrange(6)
        if shape == 0:
            return 1_000_000 + n
        if shape == 1:
            return -(1_000_000 + n)
        if shape == 2:
            return 10**20 + n  # 21 digits: the longest sound integer
        if shape == 3:
            return -(10**20 + n)
        # No prefix holds a digit after "#", so "#<n>" keeps every string unique.
        return f"{self.rng.choice(_ID_PREFIXES)}#{n}"

    def text(self, max_size: int = 12) -> str:
        return "".join(self.rng.choice(_ALPHABET) for _ in range(self.rng.randint(0, max_size)))

    def number(self) -> Any:
        pick = self.rng.randrange(5)
        if pick == 0:
            return self.rng.randint(-5, 5)
        if pick == 1:
            digits = self.rng.randint(1, 21)
            return self.rng.choice([1, -1]) * self.rng.randrange(10 ** (digits - 1), 10**digits)
        if pick == 2:
            return self.rng.uniform(-1e6, 1e6)
        if pick == 3:
            return self.rng.choice([0.0, -0.0, 5e-324, 1.7976931348623157e308, -2.5e-300, 1e21])
        return Raw(self.rng.choice(_ODD_NUMBERS))

    def value(self, depth: int = 0) -> Any:
        """A random sound JSON value, small."""
        pick = self.rng.randrange(8 if depth < 3 else 5)
        if pick == 0:
            return None
        if pick == 1:
            return self.rng.random() < 0.5
        if pick == 2:
            return self.number()
        if pick in (3, 4):
            return self.text()
        if pick in (5, 6):
            return {self.text(6): self.value(depth + 1) for _ in range(self.rng.randint(0, 4))}
        return [self.value(depth + 1) for _ in range(self.rng.randint(0, 4))]

    def _inner(self, text: str | None = None) -> bytes:
        """``text`` (a little random text by default) as it stands between the quotes of a JSON string."""
        return json.dumps(self.text(3) if text is None else text, ensure_ascii=False)[1:-1].encode()

    def poison(self, strings_only: bool = False) -> Raw:
        """A value Python's json reads but the gateway must refuse."""
        pick = self.rng.randrange(3 if strings_only else 8)
        if pick == 0:
            # A lone surrogate as an escape: high alone, low alone, reversed pair, high at the end.
            high = f"\\u{self.rng.randint(0xD800, 0xDBFF):04{self.rng.choice('xX')}}"
            low = f"\\u{self.rng.randint(0xDC00, 0xDFFF):04x}"
            core = self.rng.choice([high, low, low + high, "ab" + high, high + "x", high + high])
            return Raw(f'"{core}"'.encode())
        if pick == 1:
            # A surrogate written as raw UTF-8 bytes (ED A0 80 to ED BF BF).
            bad = bytes([0xED, self.rng.randint(0xA0, 0xBF), self.rng.randint(0x80, 0xBF)])
            return Raw(b'"' + self._inner() + bad + b'"')
        if pick == 2:
            return Raw(b'"' + self.rng.choice(_BAD_UTF8) + self._inner() + b'"')
        if pick == 3:
            return Raw(self.rng.choice(_NOT_JSON_CONSTANTS))
        if pick == 4:
            return Raw(self.rng.choice(_OVERFLOWS))
        if pick == 5:
            digits = self.rng.randint(22, 400)
            text = str(self.rng.randint(1, 9)) + "".join(self.rng.choice("0123456789") for _ in range(digits - 1))
            return Raw((self.rng.choice(["", "-"]) + text).encode())
        depth = self.rng.choice([129, 130, 200, 500, 899, 900, 1000, 1500, 3000])
        self._deep |= depth > PARSER_SAFE_DEPTH
        if self.rng.random() < 0.5:
            return Raw(b"[" * depth + b"]" * depth)
        return Raw(b'{"a":' * depth + b"1" + b"}" * depth)

    def embed(self, poison: Raw, depth: int = 0) -> Any:
        """A small random value with ``poison`` somewhere inside (maybe as a key)."""
        pick = self.rng.randrange(4) if depth < 3 else 0
        if pick == 0:
            return poison
        if pick == 1:
            items = [self.value(2) for _ in range(self.rng.randint(0, 3))]
            items.insert(self.rng.randint(0, len(items)), self.embed(poison, depth + 1))
            return items
        members: dict[Any, Any] = {self.text(5): self.value(2) for _ in range(self.rng.randint(0, 3))}
        if pick == 3 and poison.text.startswith(b'"'):
            members[poison] = self.value(2)
        else:
            members[self.text(5) + "!"] = self.embed(poison, depth + 1)
        return members

    # -- frames --------------------------------------------------------------------

    def _finish(self, kind: str, text: bytes, **expect: Any) -> Frame:
        """Frame ``text`` as a line: LF or CRLF, now and then blank lines or spaces around it."""
        rng = self.rng
        if rng.random() < 0.1:
            text = rng.choice([b" ", b"\t", b"  "]) + text + rng.choice([b"", b" ", b"\t"])
        terminator = b"\r\n" if rng.random() < 0.15 else b"\n"
        before = rng.choice([b"\n", b"\r\n", b" \n", b"\n\n"]) if rng.random() < 0.05 else b""
        return Frame(kind=kind, line=before + text + terminator, body=text, **expect)

    def _dump(self, message: dict[Any, Any]) -> bytes:
        """A message as JSON text: members mostly in the SDK's order, sometimes shuffled.

        The id goes first when the message nests past what Python's parser can
        read (:data:`PARSER_SAFE_DEPTH`): an id after such a member cannot be
        read at all, so the gateway answers with id null (test_poison.py pins
        that), which the ledger here would count as a missing answer.
        """
        items = list(message.items())
        if self.rng.random() < 0.3:
            self.rng.shuffle(items)
        if self._deep:
            items.sort(key=lambda kv: kv[0] != "id")  # stable: the rest keep their order
        return encode(dict(items), ascii_only=self.rng.random() < 0.5, spaced=self.rng.random() < 0.2)

    def _message(self, request_id: Any, method: Any = None) -> dict[Any, Any]:
        """A request (a notification when ``request_id`` is ``...``) with fitting, mostly sound params."""
        rng = self.rng
        if method is None:
            names, weights = zip(*_REQUEST_METHODS)
            method = rng.choices(names, weights)[0] if rng.random() < 0.95 else rng.choice([7, None, ["ping"], self.text(4)])
        message: dict[Any, Any] = {}
        roll = rng.random()
        if roll < 0.93:
            message["jsonrpc"] = "2.0"
        elif roll < 0.97:
            message["jsonrpc"] = rng.choice(["1.0", 2, None, "2.0 "])
        if request_id is not ...:
            message["id"] = request_id
        message["method"] = method
        params = self._params(method)
        if params is not ...:
            message["params"] = params
        return message

    def _params(self, method: Any) -> Any:
        rng = self.rng
        if rng.random() < 0.05:
            return rng.choice([None, [1, 2], "x", 3, self.value()])
        if method == "tools/call":
            return self._tool_call()
        if method == "initialize":
            return {"protocolVersion": rng.choice(["2025-11-25", "2025-06-18", "2024-11-05", "x", 3]), "capabilities": {}}
        if method == "logging/setLevel":
            return {"level": rng.choice(["error", "warning", "info", "loud", 1])}
        if method == "notifications/progress":
            return {"progressToken": self.value(), "progress": self.number()}
        if rng.random() < 0.5:
            return ...
        return {self.text(5): self.value() for _ in range(rng.randint(0, 3))}

    def _tool_call(self) -> dict[str, Any]:
        rng = self.rng
        name = rng.choice(["execute_tool"] * 6 + ["get_server_tools"] * 2 + ["list_servers", "get_gateway_status", "nope"])
        arguments: dict[str, Any] = {
            "agent_id": rng.choice([self.agent] * 8 + ["guest", "ghost", "", 5, None]),
        }
        if name != "list_servers":
            arguments["server"] = rng.choice([self.server] * 8 + ["nope", "", None, 3])
        if name == "execute_tool":
            tool = rng.choice(["echo"] * 6 + ["length", "drop_everything", "big", "nope"])
            arguments["tool"] = tool
            if tool == "big":
                arguments["args"] = {"size": rng.randint(0, 2000)}
            elif rng.random() < 0.85:
                arguments["args"] = {"text": self.text(40)}
            else:
                arguments["args"] = self.value()
            if rng.random() < 0.15:
                arguments["timeout_ms"] = rng.choice([30_000, 60_000, "x", -1, 0, 1.5, None, 2**31])
        elif name == "get_server_tools" and rng.random() < 0.5:
            arguments["pattern"] = rng.choice(["*", "e*", "[", self.text(3)])
        if rng.random() < 0.1:
            arguments[self.text(4) + "?"] = self.value()
        params: dict[str, Any] = {"name": name, "arguments": arguments}
        if rng.random() < 0.05:
            params["_meta"] = {"progressToken": self.rng.choice([1, "t"])}
        return params

    def _request(self) -> Frame:
        request_id = self.new_id()
        message = self._message(request_id)
        if message["method"] == "tools/call":
            self._recent_calls = [*self._recent_calls[-63:], request_id]
        return self._finish("request", self._dump(message), asked=request_id)

    def _poisoned_request(self) -> Frame:
        rng = self.rng
        request_id = self.new_id()
        message = self._message(request_id, method=rng.choice(["tools/call"] * 4 + ["ping", "initialize", "tools/list"]))
        params = message.get("params")
        if not isinstance(params, dict):
            params = message["params"] = self._tool_call()
        arguments = params.get("arguments")
        where = rng.randrange(10)
        if where < 4 and isinstance(arguments, dict):
            arguments["args"] = self.embed(self.poison())
        elif where == 4 and isinstance(arguments, dict):
            arguments[rng.choice(["agent_id", "server", "tool", "timeout_ms"])] = self.poison()
        elif where == 5 and isinstance(arguments, dict):
            arguments[self.poison(strings_only=True)] = 1
        elif where == 6:
            params[rng.choice(["name", "_meta", "protocolVersion"])] = self.embed(self.poison())
        elif where == 7:
            message["method"] = self.poison(strings_only=True)
        elif where == 8:
            message[rng.choice(["jsonrpc", "x"])] = self.embed(self.poison())
        else:
            message["params"] = self.poison()
        return self._finish("poisoned_request", self._dump(message), asked=request_id)

    def _poisoned_id(self) -> Frame:
        rng = self.rng
        unique = self._inner(str(self.new_id()))
        pick = rng.randrange(8)
        if pick == 0:
            bad: Any = Raw(b'"\\ud800#' + unique + b'"')
        elif pick == 1:
            bad = Raw(b'"\xed\xa0\x80#' + unique + b'"')
        elif pick == 2:
            bad = Raw(str(10**21 + self._count).encode())  # 22 digits
        elif pick == 3:
            bad = self.poison()
        else:
            bad = rng.choice([1.5, True, False, None, [], {"a": 1}, Raw(b"1.0"), Raw(b"1e3")])
        message = self._message(bad)
        return self._finish("poisoned_id", self._dump(message))

    def _notification(self) -> Frame:
        message = self._message(..., method=self.rng.choice(_NOTIFICATIONS))
        return self._finish("notification", self._dump(message))

    def _cancel(self) -> Frame:
        rng = self.rng
        params: dict[str, Any] = {"reason": self.text(8)}
        cancels: RequestId | None = None
        if self._recent_calls and rng.random() < 0.7:
            cancels = params["requestId"] = rng.choice(self._recent_calls)
        else:
            # Never an id of this run: ours are at least 10**6 away from 0, or hold "#".
            params["requestId"] = rng.choice([0, 3, -1, "x", None, [], 999_999])
        message = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": params}
        return self._finish("cancel", self._dump(message), cancels=cancels)

    def _poisoned_notification(self) -> Frame:
        message = self._message(..., method=self.rng.choice(_NOTIFICATIONS))
        where = self.rng.randrange(3)
        if where == 0:
            message["params"] = self.embed(self.poison())
        elif where == 1:
            message["method"] = self.poison(strings_only=True)
        else:
            message["x"] = self.embed(self.poison())
        return self._finish("poisoned_notification", self._dump(message))

    def _response(self) -> Frame:
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": self.new_id()}
        if self.rng.random() < 0.6:
            message["result"] = {self.text(4): self.value() for _ in range(self.rng.randint(0, 3))}
        else:
            message["error"] = {"code": self.rng.randint(-32768, 0), "message": self.text()}
        return self._finish("response", self._dump(message))

    def _poisoned_response(self) -> Frame:
        request_id = self.new_id()
        message = {"jsonrpc": "2.0", "id": request_id, "result": {"content": self.embed(self.poison())}}
        # The gateway answers it with an error carrying its id; no answer would do too.
        return self._finish("poisoned_response", self._dump(message), tolerated=request_id)

    def _valid_text(self) -> bytes:
        """A well-formed request text whose id nobody may answer (it goes into a broken frame)."""
        return encode(self._message(self.new_id()), ascii_only=self.rng.random() < 0.5)

    def _invalid_utf8(self) -> Frame:
        # Bad bytes where no string is: the text does not parse, so the answer's id is null.
        text = self._valid_text()
        bad = self.rng.choice(_BAD_UTF8)
        where = self.rng.randrange(3)
        if where == 0:
            text = bad + text
        elif where == 1:
            text = text[:1] + bad + text[1:]
        else:
            text = text[:-1] + bad + text[-1:]
        return self._finish("invalid_utf8", text)

    def _truncated(self) -> Frame:
        text = self._valid_text()
        return self._finish("truncated", text[: self.rng.randint(1, len(text) - 1)])

    def _noise(self) -> Frame:
        data = self.rng.randbytes(self.rng.randint(1, 300)).replace(b"\n", b"\x00")
        return self._finish("noise", data)

    def _not_object(self) -> Frame:
        rng = self.rng
        if rng.random() < 0.5:
            batch = [self._message(self.new_id()) for _ in range(rng.randint(0, 3))]
            return self._finish("not_object", encode(batch))
        return self._finish("not_object", rng.choice([b"1", b'"x"', b"null", b"true", b"[]", b"{}", b"-0", b'"\\ud800"']))

    def _blank(self) -> Frame:
        blank = self.rng.choice([b"", b" ", b"\t", b"  \t "])
        terminator = self.rng.choice([b"\n", b"\r\n"])
        return Frame(kind="blank", line=blank + terminator, body=blank)

    def _padded_ping(self, size: int, request_id: RequestId) -> bytes:
        head = encode({"jsonrpc": "2.0", "id": request_id, "method": "ping", "params": {"pad": ""}})[:-3]
        return head + b"x" * (size - len(head) - 3) + b'"}}'

    def _at_limit(self) -> Frame:
        # Exactly the limit (CRLF or not): still a message, answered as one.
        request_id = self.new_id()
        text = self._padded_ping(self.max_bytes, request_id)
        return Frame(kind="at_limit", line=text + self.rng.choice([b"\n", b"\r\n"]), body=text, asked=request_id)

    def _too_long(self) -> Frame:
        # Over the limit: refused unread, so its id may not come back.
        text = self._padded_ping(self.max_bytes + self.rng.randint(1, 3000), self.new_id())
        return Frame(kind="too_long", line=text + self.rng.choice([b"\n", b"\r\n"]), body=text)


# -- bookkeeping -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Discrepancy:
    """One way the answers broke the contract; ``index`` and ``frame`` locate it when known."""

    problem: str
    index: int | None = None
    frame: Frame | None = None
    detail: str = ""

    def describe(self, limit: int = 160) -> str:
        where = f"frame {self.index} ({self.frame.kind}): {_excerpt(self.frame.line, limit)}" if self.frame else ""
        return "; ".join(part for part in (self.problem, where, self.detail) if part)


def _excerpt(data: bytes, limit: int) -> str:
    text = repr(data)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(data)} bytes)"


class Ledger:
    """What a run asked and what came back, matched by id.

    Call :meth:`sent` before a frame's bytes leave (so that no answer can come
    before the ledger knows it was asked) and :meth:`received` with every
    answer. ``outstanding`` counts asked ids not answered yet.
    """

    def __init__(self) -> None:
        self.asked = 0
        self.answers = 0
        self.null_answers = 0
        self.outstanding = 0
        self._expected: dict[Key, tuple[int, Frame]] = {}
        self._tolerated: dict[Key, tuple[int, Frame]] = {}
        self._counts: dict[Key, int] = {}
        self._problems: list[Discrepancy] = []

    def sent(self, index: int, frame: Frame) -> None:
        if frame.asked is not None:
            key = _sound(frame.asked)
            assert key not in self._expected and key not in self._tolerated, f"frame {index}: {frame.asked!r} is not fresh"
            self._expected[key] = (index, frame)
            self.asked += 1
            self.outstanding += 1
        if frame.tolerated is not None:
            self._tolerated[_sound(frame.tolerated)] = (index, frame)
        if frame.cancels is not None:
            key = _sound(frame.cancels)
            entry = self._expected.pop(key, None)
            if entry is not None:
                # A cancelled call gets no answer (MCP 2025-11-25, basic/utilities/cancellation), unless it beat the cancel.
                self._tolerated[key] = entry
                if not self._counts.get(key):
                    self.outstanding -= 1

    def received(self, message: Any) -> None:
        self.answers += 1
        if not isinstance(message, dict):
            self._problems.append(Discrepancy("an answer that is not a JSON object", detail=_excerpt(json.dumps(message).encode(), 300)))
            return
        error = message.get("error")
        if isinstance(error, dict) and error.get("code") == -32603:
            self._problems.append(Discrepancy("internal error (-32603)", detail=_excerpt(json.dumps(message).encode(), 300)))
        request_id = message.get("id")
        if request_id is None:
            self.null_answers += 1
            return
        key = id_key(request_id)
        entry = None if key is None else self._expected.get(key) or self._tolerated.get(key)
        if key is None or entry is None:
            self._problems.append(Discrepancy("an answer carries an id nobody asked", detail=f"id {request_id!r}"))
            return
        count = self._counts[key] = self._counts.get(key, 0) + 1
        if count == 1 and key in self._expected:
            self.outstanding -= 1
        if count == 2:
            index, frame = entry
            self._problems.append(Discrepancy("more than one answer", index, frame, f"id {request_id!r}"))

    def unreadable(self, line: bytes) -> None:
        self._problems.append(Discrepancy("the gateway wrote a line that is not JSON", detail=_excerpt(line, 300)))

    def missing(self) -> list[Discrepancy]:
        return [
            Discrepancy("no answer", index, frame, f"id {frame.asked!r}")
            for key, (index, frame) in sorted(self._expected.items(), key=lambda item: item[1][0])
            if not self._counts.get(key)
        ]

    def discrepancies(self) -> list[Discrepancy]:
        """Everything wrong so far: wrong or doubled answers as they came, then the missing ones by frame."""
        return [*self._problems, *self.missing()]


def _sound(request_id: RequestId) -> Key:
    key = id_key(request_id)
    assert key is not None, f"{request_id!r} is not a sound id"
    return key


# -- a raw stdio client ------------------------------------------------------------


class GatewayGone(AssertionError):
    """The gateway went away (stopped reading its stdin, closed its stdout) while a test still needed it."""


class RawGateway:
    """``lockgate serve`` over stdio, driven with raw bytes; every answer is read and indexed by id.

    Use :meth:`start`. ``answers`` holds every response in arrival order,
    ``notifications`` what the gateway sent unasked, ``unreadable`` output
    lines that were not JSON, ``stderr`` everything it logged.
    """

    def __init__(self, process: trio.Process, listener: Callable[[Any], None] | None = None) -> None:
        self.process = process
        self.listener = listener
        self.answers: list[Any] = []
        self.by_id: dict[Key, list[Any]] = {}
        self.notifications = 0
        self.unreadable: list[bytes] = []
        self.stderr = bytearray()
        self.returncode: int | None = None
        self._stderr_done = trio.Event()
        self._arrived = trio.Event()
        self._closed_stdout = False
        self._count = 0

    @classmethod
    @asynccontextmanager
    async def start(
        cls,
        argv: Sequence[str],
        env: Mapping[str, str],
        *,
        cwd: str | Path | None = None,
        listener: Callable[[Any], None] | None = None,
        close_timeout: float = 30,
    ) -> AsyncIterator[RawGateway]:
        """Run the gateway for the ``async with`` block; on leaving, close its stdin and wait for it to exit.

        A gateway still running ``close_timeout`` seconds after its stdin
        closed is killed; ``returncode`` is then negative.
        """
        process = await trio.lowlevel.open_process(
            list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(env), cwd=cwd
        )
        gateway = cls(process, listener)
        try:
            async with _unwrapped(), trio.open_nursery() as nursery:
                nursery.start_soon(gateway._read_stdout)
                nursery.start_soon(gateway._read_stderr)
                try:
                    yield gateway
                finally:
                    with trio.CancelScope(shield=True):
                        await gateway.close(close_timeout)
                        with trio.move_on_after(5):  # the pipes end with the process
                            while not gateway._closed_stdout:
                                await gateway._arrived.wait()
                            await gateway._stderr_done.wait()
                    nursery.cancel_scope.cancel()
        finally:
            if process.returncode is None:
                process.kill()
                with trio.CancelScope(shield=True):
                    await process.wait()

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def rss_kib(self) -> int | None:
        return rss_kib(self.process.pid)

    async def send(self, data: bytes) -> None:
        """Write raw bytes to the gateway's stdin; :class:`GatewayGone` if it stopped reading."""
        assert self.process.stdin is not None
        try:
            await self.process.stdin.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise await self._gone("stopped reading its stdin") from None

    async def _gone(self, what: str) -> GatewayGone:
        """The error for a gateway that went away: its exit status and the end of its stderr."""
        with trio.move_on_after(5):
            await self.process.wait()
            await self._stderr_done.wait()
        stderr = self.stderr.decode(errors="replace")
        return GatewayGone(f"the gateway {what} (exit status {self.process.poll()}); its stderr ends:\n{stderr[-3000:]}")

    async def close(self, timeout: float = 30) -> int:
        """Close stdin (the client leaves) and wait for the exit status; kill the gateway after ``timeout``."""
        assert self.process.stdin is not None
        try:
            await self.process.stdin.aclose()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        with trio.move_on_after(timeout):
            await self.process.wait()
        if self.process.returncode is None:
            self.process.kill()
        self.returncode = await self.process.wait()
        return self.returncode

    async def answer_to(self, request_id: RequestId) -> Any:
        """Wait for the first answer carrying ``request_id``; the caller bounds the time."""
        key = id_key(request_id)
        assert key is not None
        while key not in self.by_id:
            if self._closed_stdout:
                raise await self._gone(f"closed its stdout before answering {request_id!r}")
            await self._arrived.wait()
        return self.by_id[key][0]

    async def wait_until(self, condition: Callable[[], bool]) -> None:
        """Wait until ``condition()`` holds after some answer came (or already holds)."""
        while not condition():
            if self._closed_stdout:
                raise await self._gone("closed its stdout")
            await self._arrived.wait()

    async def request(self, message: dict[str, Any]) -> Any:
        """Send one well-formed message and return its answer."""
        await self.send(encode(message) + b"\n")
        return await self.answer_to(message["id"])

    async def initialize(self) -> Any:
        answer = await self.request(
            {"jsonrpc": "2.0", "id": "init", "method": "initialize",
             "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "fuzz", "version": "1"}}}
        )
        await self.send(b'{"jsonrpc":"2.0","method":"notifications/initialized"}\n')
        return answer

    async def call(self, request_id: RequestId, name: str, **arguments: Any) -> Any:
        """A ``tools/call`` of gateway tool ``name``; returns the answer."""
        return await self.request(
            {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": {"name": name, "arguments": arguments}}
        )

    async def exchange(self, frame: bytes) -> list[Any]:
        """Send one raw line (no newline), then a ping; return the answers that came before the ping's.

        The gateway answers a refused frame as it reads it, so its answers are
        exactly those; a frame that is forwarded instead is answered later.
        """
        self._count += 1
        sentinel = f"sentinel#{self._count}"
        before = len(self.answers)
        await self.send(frame + b"\n" + encode({"jsonrpc": "2.0", "id": sentinel, "method": "ping"}) + b"\n")
        ping = await self.answer_to(sentinel)
        got = self.answers[before:]
        return got[: next(i for i, a in enumerate(got) if a is ping)]

    async def _read_stdout(self) -> None:
        assert self.process.stdout is not None
        buffer = bytearray()
        try:
            while chunk := await self.process.stdout.receive_some(1 << 20):
                buffer += chunk
                start = 0
                while (newline := buffer.find(b"\n", start)) >= 0:
                    self._line(bytes(buffer[start:newline]))
                    start = newline + 1
                del buffer[:start]
                self._wake()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            if buffer:
                self._line(bytes(buffer))
            self._closed_stdout = True
            self._wake()

    async def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        try:
            while chunk := await self.process.stderr.receive_some(1 << 16):
                self.stderr += chunk
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            self._stderr_done.set()

    def _line(self, line: bytes) -> None:
        try:
            message = json.loads(line)
        except ValueError:
            self.unreadable.append(line)
            return
        if isinstance(message, dict) and "method" in message:
            self.notifications += 1
            return
        self.answers.append(message)
        key = id_key(message.get("id")) if isinstance(message, dict) else None
        if key is not None:
            self.by_id.setdefault(key, []).append(message)
        if self.listener is not None:
            self.listener(message)

    def _wake(self) -> None:
        self._arrived.set()
        self._arrived = trio.Event()


@asynccontextmanager
async def _unwrapped() -> AsyncIterator[None]:
    """Raise a lone exception out of a nursery as it is, not in an exception group (a test's assertion, say)."""
    try:
        yield
    except BaseExceptionGroup as group:
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise


#: The headers of a POST to ``/mcp`` outside a session.
HTTP_HEADERS = {"accept": "application/json, text/event-stream", "content-type": "application/json"}


async def open_http_session(http: httpx.AsyncClient, url: str) -> dict[str, str]:
    """Initialize a session at ``url`` by hand; the headers of a POST in it."""
    init = {"jsonrpc": "2.0", "id": "init", "method": "initialize", "params": {"protocolVersion": "2025-11-25", "capabilities": {}}}
    response = await http.post(url, json=init, headers=HTTP_HEADERS)
    assert response.status_code == 200, response.text
    headers = {**HTTP_HEADERS, "mcp-session-id": response.headers["mcp-session-id"], "mcp-protocol-version": "2025-11-25"}
    initialized = await http.post(url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=headers)
    assert initialized.status_code == 202, initialized.text
    return headers


def http_messages(content_type: str | None, body: bytes) -> list[Any]:
    """The JSON-RPC messages in an HTTP answer: its JSON body, or each ``data:`` of its SSE stream."""
    if not body.strip():
        return []
    if content_type is not None and content_type.startswith("text/event-stream"):
        messages = []
        for event in body.replace(b"\r\n", b"\n").split(b"\n\n"):
            data = b"\n".join(line[5:].lstrip(b" ") for line in event.split(b"\n") if line.startswith(b"data:"))
            if data.strip():
                messages.append(json.loads(data))
        return messages
    return [json.loads(body)]


def rss_kib(pid: int, field: str = "VmRSS") -> int | None:
    """Resident memory of process ``pid`` in KiB (``VmHWM``: its peak), from Linux ``/proc``; ``None`` when unreadable."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None
