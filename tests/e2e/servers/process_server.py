"""A downstream MCP server (the SDK's MCPServer, stdio) that says which process serves it.

``whoami`` answers its own pid and its parent's: behind ``lockgate serve
--workers N`` the parent is the worker that started it, which tells the
workers apart from outside. Extra arguments (a ``--marker``) are ignored.
"""

from __future__ import annotations

import os

import anyio
from mcp.server import MCPServer

app = MCPServer("process")


@app.tool()
def whoami() -> dict[str, int]:
    """This server's pid and its parent's (the gateway process that started it)."""
    return {"pid": os.getpid(), "parent": os.getppid()}


@app.tool()
async def nap(seconds: float) -> dict[str, int]:
    """Answer as whoami does, after ``seconds``: a call that stays in flight a while."""
    await anyio.sleep(seconds)
    return whoami()


if __name__ == "__main__":
    app.run("stdio")
