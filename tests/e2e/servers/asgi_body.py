"""Reading an ASGI request body in middleware that still hands the request on, for the OAuth test servers."""

from __future__ import annotations

from starlette.types import Message, Receive

__all__ = ["read_body", "replaying"]


async def read_body(receive: Receive) -> bytes:
    """The whole request body."""
    body = b""
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return body
        chunk: bytes = message.get("body", b"")
        body += chunk
        if not message.get("more_body", False):
            return body


def replaying(body: bytes, receive: Receive) -> Receive:
    """A receive channel that gives ``body`` once, then the real channel (for ``http.disconnect``).

    Giving the body again would make the handler (a streaming one) wait for a body that never ends.
    """
    given = False

    async def replay() -> Message:
        nonlocal given
        if given:
            return await receive()
        given = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay
