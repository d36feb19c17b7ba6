"""A downstream MCP server whose one tool answers only when the test lets it.

``wait_for(path)`` returns once ``path`` exists, so a test can hold a call in
flight for as long as it needs (a configuration reload, say) without sleeping.
The reply names the server's ``--name`` so a test can tell old and new apart.
"""

from __future__ import annotations

import os
import sys
import time

from mcp.server import MCPServer

app = MCPServer("gated")
NAME = sys.argv[sys.argv.index("--name") + 1] if "--name" in sys.argv else "gated"


@app.tool()
def wait_for(path: str) -> str:
    """Answer once the file at path exists."""
    deadline = time.monotonic() + 60
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.01)
    return f"{NAME}: released"


@app.tool()
def whoami() -> str:
    """Say which server this is."""
    return NAME


if __name__ == "__main__":
    app.run("stdio")
