"""An MCP server built on the SDK's ``MCPServer``, for conformance scenarios.

``echo``, ``slow(steps)`` (one progress notification per step, no sleeping,
so every recording sees the same messages) and ``big(size)`` (a text of
``size`` bytes, for large results).

``--catalog`` adds what aggregate-mode scenarios need, and nothing else
changes without it: the tools ``ask(question)`` (asks the client's model,
``sampling/createMessage``) and ``note(level, text)`` (a log message at that
level, then the result); the resources ``conformance://readme`` and
``conformance://shared`` (the raw server's ``--catalog`` lists the same URI),
the template ``conformance://items/{id}``; the prompt ``greet(name)``, with
completions for ``name``; and ``logging/setLevel``.
"""

from __future__ import annotations

import sys
import warnings
from typing import Any

from mcp.server import MCPServer, ServerRequestContext
from mcp.server.mcpserver import Context
from mcp.shared.exceptions import MCPDeprecationWarning
from mcp.types import (
    CompleteRequestParams,
    CompleteResult,
    Completion,
    EmptyResult,
    LoggingLevel,
    SamplingMessage,
    SetLevelRequestParams,
    TextContent,
)

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


#: The names ``greet``'s ``name`` argument completes to.
NAMES = ("alice", "albert", "bob")


def add_catalog(server: MCPServer) -> None:
    """Register the ``--catalog`` tools, resources, template, prompt and handlers (see the module docstring)."""
    # Logging and sampling are deprecated as of 2026-07-28; the handshake era these scenarios use has them.
    warnings.simplefilter("ignore", MCPDeprecationWarning)

    @server.tool()
    async def ask(question: str, ctx: Context) -> str:
        """Ask the client's model a question (sampling/createMessage) and return its answer."""
        answer = await ctx.request_context.session.create_message(
            [SamplingMessage(role="user", content=TextContent(type="text", text=question))],
            max_tokens=20,
            related_request_id=ctx.request_id,
        )
        text = answer.content.text if isinstance(answer.content, TextContent) else "(not text)"
        return f"the model says: {text}"

    @server.tool()
    async def note(level: LoggingLevel, text: str, ctx: Context) -> str:
        """Send a log message at `level`, then answer."""
        await ctx.log(level, text, logger_name="sdk")
        return f"noted at {level}"

    @server.resource("conformance://readme", name="readme", description="Read me first.", mime_type="text/plain")
    def readme() -> str:
        return "Read me first: the SDK server's readme."

    @server.resource("conformance://shared", name="shared", description="A URI both servers list.", mime_type="text/plain")
    def shared() -> str:
        return "shared, as the SDK server has it"

    @server.resource("conformance://items/{id}", name="item", description="One item by id.", mime_type="text/plain")
    def item(id: str) -> str:
        return f"item {id} of the SDK server"

    @server.prompt(description="Greet someone by name.")
    def greet(name: str) -> str:
        return f"Say hello to {name}."

    async def complete(ctx: ServerRequestContext[Any], params: CompleteRequestParams) -> CompleteResult:
        prefix = params.argument.value if params.argument.name == "name" else "\0"
        values = [name for name in NAMES if name.startswith(prefix)]
        return CompleteResult(completion=Completion(values=values, total=len(values), has_more=False))

    async def set_level(ctx: ServerRequestContext[Any], params: SetLevelRequestParams) -> EmptyResult:
        return EmptyResult()

    # MCPServer has no decorator for these two; the low-level server takes them
    # as handlers and advertises completions and logging for them.
    server._lowlevel_server.add_request_handler("completion/complete", CompleteRequestParams, complete)
    server._lowlevel_server.add_request_handler("logging/setLevel", SetLevelRequestParams, set_level)


if __name__ == "__main__":
    if "--catalog" in sys.argv[1:]:
        add_catalog(app)
    app.run("stdio")
