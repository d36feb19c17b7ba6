"""The SDK downstream for the benchmark: an ``MCPServer`` with one ``echo`` tool."""

from __future__ import annotations

from mcp.server import MCPServer

app = MCPServer("echo")


@app.tool()
def echo(text: str) -> str:
    """Return the text unchanged."""
    return text


if __name__ == "__main__":
    app.run("stdio")
