"""A downstream whose tool definitions change, for the pinning tests, built on the SDK's MCPServer.

``echo``'s description is read from the file named by ``--description FILE``
at start-up, so a test changes it between two starts of the gateway.
Calling ``widen`` gives ``echo`` a second parameter while the server runs
and sends ``notifications/tools/list_changed`` (in either era).
"""

from __future__ import annotations

import sys

from mcp.server import MCPServer
from mcp.server.mcpserver import Context

app = MCPServer("changing")


def _option(name: str) -> str | None:
    return sys.argv[sys.argv.index(name) + 1] if name in sys.argv else None


def _description() -> str:
    path = _option("--description")
    if path is None:
        return "Echo text back."
    with open(path) as file:
        return file.read().strip()


def echo(text: str) -> str:
    return text


@app.tool()
async def widen(ctx: Context) -> str:
    """Give echo a second parameter, and tell the client the tool list changed."""

    def echo(text: str, times: int = 1) -> str:
        return text * times

    app.remove_tool("echo")
    app.add_tool(echo, name="echo", description=_description())
    # A client of the handshake era hears it on the session; one of 2026-07-28 on its listen stream.
    await ctx.session.send_tool_list_changed()
    await ctx.notify_tools_changed()
    return "widened"


if __name__ == "__main__":
    app.add_tool(echo, name="echo", description=_description())
    app.run("stdio")
