"""An MCP server built on the SDK's ``MCPServer``, for conformance scenarios.

``echo``, ``slow(steps)`` (one progress notification per step, no sleeping,
so every recording sees the same messages) and ``big(size)`` (a text of
``size`` bytes, for large results).
"""

from __future__ import annotations

from mcp.server import MCPServer
from mcp.server.mcpserver import Context

app = MCPServer("conformance-sdk")


@app.tool()
def echo(text: str) -> str:
    """Return the text unchanged."""
    return text


@app.tool()
async def slow(steps: int, ctx: Context) -> str:
    """Report progress once per step, then finish."""
    for step in range(1, steps + 1):
        await ctx.report_progress(step, steps, f"step {step} of {steps}")
    return f"done after {steps} steps"


@app.tool()
def big(size: int) -> str:
    """Return a text of `size` bytes."""
    return "x" * size


if __name__ == "__main__":
    app.run("stdio")
