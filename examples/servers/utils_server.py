"""An offline MCP server "utils": small tools for demos and tests.

``echo``, ``add``, ``get_time_utc`` and ``word_count`` answer at once;
``slow`` sleeps and reports progress every 0.1 s (pass a progress token to
see it); ``fail`` always fails, which the client sees as a result with
``isError: true`` rather than as a protocol error.
"""

from __future__ import annotations

import datetime

import anyio
from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError

app = MCPServer("utils")

_PROGRESS_STEP_S = 0.1


@app.tool()
def echo(text: str) -> str:
    """Return the text unchanged."""
    return text


@app.tool()
def add(a: float, b: float) -> float:
    """Return a + b."""
    return a + b


@app.tool()
def get_time_utc() -> str:
    """Return the current UTC time in ISO 8601 form."""
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


@app.tool()
def word_count(text: str) -> int:
    """Count the whitespace-separated words in the text."""
    return len(text.split())


@app.tool()
async def slow(seconds: float, ctx: Context) -> str:
    """Wait this many seconds (at most 600), reporting progress every 0.1 s."""
    if not 0 <= seconds <= 600:
        raise ToolError("seconds must be between 0 and 600")
    elapsed, ticks = 0.0, 0
    while elapsed < seconds:
        ticks += 1
        target = min(round(ticks * _PROGRESS_STEP_S, 6), seconds)
        await anyio.sleep(target - elapsed)
        elapsed = target
        await ctx.report_progress(elapsed, seconds, f"{elapsed:.2f}s of {seconds:g}s")
    return f"waited {seconds:g}s"


@app.tool()
def fail(message: str) -> str:
    """Always fail with this message (the result comes back with isError true)."""
    raise ToolError(message)


if __name__ == "__main__":
    app.run("stdio")
