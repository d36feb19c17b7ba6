"""The SDK downstream for the benchmarks: an ``MCPServer`` with one ``echo`` tool.

Without arguments it serves stdio. With ``--http-fd N`` it serves Streamable
HTTP at ``/mcp`` on the listening socket inherited as file descriptor N (the
benchmark binds it on a free port first).
"""

from __future__ import annotations

import socket
import sys

from mcp.server import MCPServer

app = MCPServer("echo")


@app.tool()
def echo(text: str) -> str:
    """Return the text unchanged."""
    return text


def serve_http(fd: int) -> None:
    import anyio
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app.streamable_http_app(), log_level="warning", lifespan="on"))
    sock = socket.socket(fileno=fd)
    anyio.run(lambda: server.serve(sockets=[sock]))


if __name__ == "__main__":
    if "--http-fd" in sys.argv:
        serve_http(int(sys.argv[sys.argv.index("--http-fd") + 1]))
    else:
        app.run("stdio")
