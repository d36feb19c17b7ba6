"""A downstream MCP server for end-to-end tests, built on the SDK's MCPServer.

``--garbage`` writes a non-JSON line to stdout before serving (as careless
servers do); ``--exit-at-start`` exits with code 3 before reading anything.
"""

from __future__ import annotations

import os
import sys
import time

from mcp.server import MCPServer

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


if __name__ == "__main__":
    if "--exit-at-start" in sys.argv:
        sys.exit(3)
    if "--garbage" in sys.argv:
        sys.stdout.write("Starting testing server (this is not JSON)\n")
        sys.stdout.flush()
    app.run("stdio")
