"""A downstream MCP server for end-to-end tests, built on the SDK's MCPServer.

``--garbage`` writes a non-JSON line to stdout before serving (as careless
servers do); ``--exit-at-start`` exits with code 3 before reading anything.

``--http-fd N`` serves Streamable HTTP at ``/mcp`` instead of stdio, on the
listening socket inherited as file descriptor N (the test binds it, so the
port is known before the server starts and survives a restart of it).
``--http-log FILE`` appends one JSON line per HTTP request: method, session
id, protocol version and the ``x-token`` header.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from typing import Any

import anyio
from mcp.server import MCPServer
from mcp.server.mcpserver import Context

app = MCPServer("testing")


@app.tool()
def echo(text: str) -> str:
    """Echo text back."""
    return text


@app.tool()
def big(size: int) -> str:
    """Return a string of `size` bytes."""
    return "x" * size


@app.tool()
def length(text: str) -> int:
    """Return the length of text."""
    return len(text)


@app.tool()
def hang() -> str:
    """Never answer."""
    time.sleep(3600)
    return "unreachable"


@app.tool()
def crash() -> str:
    """Die mid-call, as a segfaulting server would."""
    os._exit(1)


@app.tool()
def drop_everything() -> str:
    """A tool the rules deny."""
    return "dropped"


# Two more tools, registered in the HTTP mode only (see serve_http), so the
# stdio server stays exactly what the stdio tests were written against.


async def slow(seconds: float) -> str:
    """Answer after `seconds` without blocking other calls."""
    await anyio.sleep(seconds)
    return f"slept {seconds}"


async def count(steps: int, ctx: Context) -> str:
    """Report progress `steps` times, then answer."""
    for step in range(1, steps + 1):
        await ctx.report_progress(step, steps, f"step {step}")
    return f"counted {steps}"


def _option(name: str) -> str | None:
    return sys.argv[sys.argv.index(name) + 1] if name in sys.argv else None


def serve_http(fd: int, log: str | None) -> None:
    import uvicorn

    app.tool()(slow)
    app.tool()(count)
    inner = app.streamable_http_app()

    async def recording(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and log is not None:
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
            line = {
                "method": scope["method"],
                "session": headers.get("mcp-session-id"),
                "protocol": headers.get("mcp-protocol-version"),
                "token": headers.get("x-token"),
                "authorization": headers.get("authorization"),
            }
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
        sys.exit(0)
    if "--exit-at-start" in sys.argv:
        sys.exit(3)
    if "--garbage" in sys.argv:
        sys.stdout.write("Starting testing server (this is not JSON)\n")
        sys.stdout.flush()
    app.run("stdio")
