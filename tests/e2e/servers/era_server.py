"""An SDK MCPServer that speaks both eras, for the tests of the era Lockgate speaks to servers.

Over stdio by default (the SDK's stdio server locks its era on the first
message); ``--http-fd N`` serves Streamable HTTP at ``/mcp`` (both eras) on
the listening socket inherited as file descriptor N, and ``--http-log FILE``
appends one JSON line per HTTP request: its method and the headers the eras
route by. ``--marker X`` is ignored (it lets tests find the process).

Tools: ``echo`` (text), ``wait`` (sleeps ``seconds``; with ``--cancel-file
PATH`` it writes ``started`` there when it begins and ``cancelled`` when it
is cancelled).
"""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path
from typing import Any

import anyio
from mcp.server import MCPServer

app = MCPServer("era", instructions="Echoes, and waits.")


def _option(name: str) -> str | None:
    return sys.argv[sys.argv.index(name) + 1] if name in sys.argv else None


CANCEL_FILE = _option("--cancel-file")


@app.tool()
def echo(text: str) -> str:
    """Echo text back."""
    return text


@app.tool()
async def wait(seconds: float) -> str:
    """Answer after `seconds`, saying when it was cancelled instead."""
    if CANCEL_FILE is not None:
        Path(CANCEL_FILE).write_text("started")
    try:
        await anyio.sleep(seconds)
    except anyio.get_cancelled_exc_class():
        if CANCEL_FILE is not None:
            Path(CANCEL_FILE).write_text("cancelled")
        raise
    return f"waited {seconds}"


def serve_http(fd: int, log: str | None) -> None:
    import uvicorn

    inner = app.streamable_http_app()

    async def recording(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and log is not None:
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
            line = {"method": scope["method"], **{k: headers.get(k) for k in ("mcp-session-id", "mcp-protocol-version", "mcp-method", "mcp-name")}}
            with open(log, "a") as file:
                file.write(json.dumps(line) + "\n")
        await inner(scope, receive, send)

    sock = socket.socket(fileno=fd)
    server = uvicorn.Server(uvicorn.Config(recording, log_level="warning", lifespan="on"))
    anyio.run(lambda: server.serve(sockets=[sock]))


if __name__ == "__main__":
    http_fd = _option("--http-fd")
    if http_fd is not None:
        serve_http(int(http_fd), _option("--http-log"))
    else:
        app.run("stdio")
