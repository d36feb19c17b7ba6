"""Reading a Streamable HTTP server's replies, for :mod:`.downstream_http`.

Small pure helpers: a body read up to a limit, a response's media type, which
message is the answer to a request, the protocol version an ``initialize``
result names (both through :func:`lockgate.core.decode`, so the shells parse
JSON-RPC one way), and a short reason for a transport failure that names only
host and port, never the URL's path, query or credentials.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import httpx

from lockgate.core import Request, Response, decode

from .downstream_http_client import LeanResponse
from .sse_parser import SseParser

__all__ = [
    "TooLarge",
    "content_type",
    "describe_failure",
    "fresh_parser",
    "host_and_port",
    "initialize_version",
    "is_response",
    "read_body",
]


class TooLarge(Exception):
    """A response body grew past the message size limit."""


def describe_failure(exc: BaseException, where: str) -> str:
    """A short reason for a transport failure, naming only ``host:port``."""
    if isinstance(exc, httpx.ConnectTimeout):
        return f"connection to {where} timed out"
    if isinstance(exc, httpx.ConnectError):
        if _caused_by(exc, ConnectionRefusedError):
            return f"connection refused to {where}"
        return f"cannot connect to {where}"
    if isinstance(exc, httpx.TimeoutException):
        return f"timed out talking to {where}"
    if isinstance(exc, (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError, httpx.CloseError)):
        return f"connection to {where} was lost"
    return f"HTTP request to {where} failed ({type(exc).__name__})"


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    """Whether ``kind`` is among the causes of ``exc``, exception groups included."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, kind):
            return True
        if isinstance(current, BaseExceptionGroup):
            todo.extend(current.exceptions)
        for linked in (current.__cause__, current.__context__):
            if linked is not None:
                todo.append(linked)
    return False


def host_and_port(url: str) -> str:
    """``host:port`` of ``url`` (``[v6]:port``), for reasons that may reach clients."""
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return "the server"
    host = parts.hostname or "the server"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def content_type(response: httpx.Response | LeanResponse) -> str:
    """The media type of ``response``, lower case, without parameters."""
    return str(response.headers.get("content-type", "")).partition(";")[0].strip().lower()


async def read_body(response: httpx.Response | LeanResponse, limit: int, *, truncate: bool = False) -> bytes:
    """Read a body up to ``limit`` bytes: cut there, or raise :class:`TooLarge`."""
    parts: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        parts.append(chunk)
        size += len(chunk)
        if size > limit:
            if truncate:
                break
            raise TooLarge()
    return b"".join(parts)[:limit]


def fresh_parser(previous: SseParser, limit: int) -> SseParser:
    """A parser for a new stream that remembers where the last one left off."""
    parser = SseParser(limit)
    parser.last_event_id = previous.last_event_id
    parser.retry = previous.retry
    return parser


def initialize_version(message: bytes) -> str | None:
    """The ``protocolVersion`` of an initialize result, else ``None``."""
    msg = decode(message)
    result = msg.raw.get("result") if isinstance(msg, Response) else None
    if not isinstance(result, dict) or not isinstance(result.get("serverInfo"), dict):
        return None
    version = result.get("protocolVersion")
    return version if isinstance(version, str) else None


def request_id(message: bytes) -> int | None:
    """The id of a request the gateway sent (its own wire ids are integers), else ``None``."""
    msg = decode(message)
    return msg.id if isinstance(msg, Request) and isinstance(msg.id, int) else None


def is_response(message: bytes) -> bool:
    """Whether ``message`` answers a request (a result or an error), which ends its stream."""
    return isinstance(decode(message), Response)
