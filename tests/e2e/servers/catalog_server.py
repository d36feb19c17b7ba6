"""A downstream MCP server with a whole catalogue, for aggregate mode: tools, resources, a template, prompts.

Its ``ask``, ``confirm`` and ``roots`` tools ask the client something
(sampling, elicitation, roots), as servers that need a person or a model do.
Built on the SDK's MCPServer, over stdio (or Streamable HTTP with ``--http PORT``).
"""

from __future__ import annotations

from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp_types import SamplingMessage, TextContent
from pydantic import BaseModel

app = MCPServer("catalog", instructions="Notes live here; read them before you write.")


@app.tool()
def add_note(text: str) -> str:
    """Keep a note."""
    return f"kept: {text}"


@app.tool()
def delete_notes() -> str:
    """Forget every note."""
    return "forgotten"


class Confirmation(BaseModel):
    ok: bool


@app.tool()
async def ask(question: str, ctx: Context) -> str:
    """Ask the client's model."""
    answer = await ctx.session.create_message(
        [SamplingMessage(role="user", content=TextContent(type="text", text=question))],
        max_tokens=20,
        related_request_id=ctx.request_id,
    )
    return answer.content.text if isinstance(answer.content, TextContent) else "?"


@app.tool()
async def confirm(ctx: Context) -> str:
    """Ask the person at the client."""
    answer = await ctx.elicit("Delete everything?", Confirmation)
    return f"{answer.action}:{getattr(answer, 'data', None)}"


@app.tool()
async def roots(ctx: Context) -> str:
    """The client's roots."""
    listed = await ctx.session.list_roots()
    return ",".join(str(root.uri) for root in listed.roots)


@app.resource("notes://today", name="today", mime_type="text/plain")
def today() -> str:
    return "buy milk"


@app.resource("notes://private", name="private", mime_type="text/plain")
def private() -> str:
    return "the diary"


@app.resource("notes://day/{day}", name="day", mime_type="text/plain")
def day(day: str) -> str:
    return f"notes of {day}"


@app.prompt()
def summarise(topic: str) -> str:
    """Summarise the notes on a topic."""
    return f"Summarise my notes on {topic}."


if __name__ == "__main__":
    import sys

    # --http PORT: Streamable HTTP at /mcp on 127.0.0.1 instead of stdio.
    if len(sys.argv) == 3 and sys.argv[1] == "--http":
        app.run("streamable-http", host="127.0.0.1", port=int(sys.argv[2]))
    else:
        app.run("stdio")
