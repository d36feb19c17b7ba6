"""The server the official MCP conformance suite tests: every fixture its server scenarios name.

``@modelcontextprotocol/conformance`` (``conformance server --url …``) is a
client: each server scenario connects to one URL and calls fixtures by name
(``test_simple_text``, ``test://static-text``, ``test_prompt_with_arguments``
…) and checks what comes back against the texts in its scenario
descriptions. This module is that server, written with the MCP Python SDK's
``MCPServer`` and served over Streamable HTTP at ``/mcp`` on 127.0.0.1. It
passes every scored server scenario of ``--requirements 2025-11-25``, and
``run.py`` then puts Lockgate in front of it to see which scenarios survive
the gateway.

What the scenarios expect (``conformance@0.2.0-alpha.12``; the texts are the
scenarios', keep them exact):

- tools: ``test_simple_text``, ``test_image_content``, ``test_audio_content``,
  ``test_embedded_resource``, ``test_multiple_content_types``,
  ``test_tool_with_logging`` (three info logs ~50 ms apart),
  ``test_tool_with_progress`` (0, 50, 100 of 100), ``test_error_handling``
  (``isError``), ``test_sampling(prompt)``, ``test_elicitation(message)``,
  ``test_elicitation_sep1034_defaults``, ``test_elicitation_sep1330_enums``,
  ``test_reconnection`` (closes the POST SSE stream mid-call, SEP-1699) and
  ``json_schema_2020_12_tool`` (an input schema with 2020-12 keywords);
- resources: ``test://static-text``, ``test://static-binary``,
  ``test://watched-resource`` (``resources/subscribe`` and ``unsubscribe``)
  and the template ``test://template/{id}/data``;
- prompts: ``test_simple_prompt``, ``test_prompt_with_arguments(arg1, arg2)``,
  ``test_prompt_with_embedded_resource(resourceUri)``,
  ``test_prompt_with_image``;
- ``completion/complete`` (an empty list is enough), ``logging/setLevel``,
  and the SDK's own ping, sessions, concurrent SSE streams and DNS-rebinding
  check (Host and Origin must be loopback).

The SDK's everything example server
(``examples/servers/everything-server`` in modelcontextprotocol/python-sdk)
is the suite's reference fixture; this one is written from the scenarios, for
the 2025-11-25 (handshake) wire only.

Run: ``python conformance/official/fixture_server.py --port PORT``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import warnings
from typing import Any

from mcp.server import MCPServer, ServerRequestContext
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.prompts.base import UserMessage
from mcp.server.streamable_http import EventCallback, EventId, EventMessage, EventStore, StreamId
from mcp.shared.exceptions import MCPDeprecationWarning
from mcp.types import (
    AudioContent,
    CompleteRequestParams,
    CompleteResult,
    Completion,
    EmbeddedResource,
    EmptyResult,
    ImageContent,
    JSONRPCMessage,
    SamplingMessage,
    SetLevelRequestParams,
    SubscribeRequestParams,
    TextContent,
    TextResourceContents,
    UnsubscribeRequestParams,
)

#: A 1x1 PNG and a WAV with one sample: the smallest content the image and audio checks accept.
PNG_BASE64 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
WAV_BASE64 = "UklGRiYAAABXQVZFZm10IBAAAAABAAEAQB8AAAB9AAACABAAZGF0YQIAAAA="

#: Pause between the log and progress notifications of one call (the scenarios say ~50 ms).
STEP_SECONDS = 0.05

#: What ``json-schema-2020-12`` checks survives ``tools/list`` unchanged (SEP-1613, SEP-2106).
JSON_SCHEMA_2020_12: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "$defs": {
        "address": {
            "$anchor": "addressDef",
            "type": "object",
            "properties": {"street": {"type": "string"}, "city": {"type": "string"}},
        }
    },
    "properties": {
        "name": {"type": "string"},
        "address": {"$ref": "#/$defs/address"},
        "contactMethod": {"type": "string", "enum": ["phone", "email"]},
        "phone": {"type": "string"},
        "email": {"type": "string"},
    },
    "allOf": [{"anyOf": [{"required": ["phone"]}, {"required": ["email"]}]}],
    "if": {"properties": {"contactMethod": {"const": "phone"}}, "required": ["contactMethod"]},
    "then": {"required": ["phone"]},
    "else": {"required": ["email"]},
    "additionalProperties": False,
}

#: ``tools-call-elicitation``: the schema its description shows.
USER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "username": {"type": "string", "description": "User's response"},
        "email": {"type": "string", "description": "User's email address"},
    },
    "required": ["username", "email"],
}

#: ``elicitation-sep1034-defaults``: a default for every primitive type.
DEFAULTS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "description": "User name", "default": "John Doe"},
        "age": {"type": "integer", "description": "User age", "default": 30},
        "score": {"type": "number", "description": "User score", "default": 95.5},
        "status": {
            "type": "string",
            "description": "User status",
            "enum": ["active", "inactive", "pending"],
            "default": "active",
        },
        "verified": {"type": "boolean", "description": "Verification status", "default": True},
    },
}

#: ``elicitation-sep1330-enums``: the five enum shapes of SEP-1330.
ENUMS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "untitledSingle": {"type": "string", "enum": ["option1", "option2", "option3"]},
        "titledSingle": {
            "type": "string",
            "oneOf": [
                {"const": "value1", "title": "First Option"},
                {"const": "value2", "title": "Second Option"},
                {"const": "value3", "title": "Third Option"},
            ],
        },
        "legacyEnum": {
            "type": "string",
            "enum": ["opt1", "opt2", "opt3"],
            "enumNames": ["Option One", "Option Two", "Option Three"],
        },
        "untitledMulti": {"type": "array", "items": {"type": "string", "enum": ["option1", "option2", "option3"]}},
        "titledMulti": {
            "type": "array",
            "items": {
                "anyOf": [
                    {"const": "value1", "title": "First Choice"},
                    {"const": "value2", "title": "Second Choice"},
                    {"const": "value3", "title": "Third Choice"},
                ]
            },
        },
    },
}


class MemoryEventStore(EventStore):
    """Every SSE event of the process, kept so that a client may resume a stream (SEP-1699).

    ``test_reconnection`` closes its POST stream mid-call; the client comes
    back with ``Last-Event-ID`` and must get what it missed.
    """

    def __init__(self) -> None:
        self._events: list[tuple[StreamId, int, JSONRPCMessage | None]] = []

    async def store_event(self, stream_id: StreamId, message: JSONRPCMessage | None) -> EventId:
        self._events.append((stream_id, len(self._events) + 1, message))
        return str(len(self._events))

    async def replay_events_after(self, last_event_id: EventId, send_callback: EventCallback) -> StreamId | None:
        if not last_event_id.isdigit() or not 0 < int(last_event_id) <= len(self._events):
            return None
        stream, after, _ = self._events[int(last_event_id) - 1]
        for other, number, message in self._events:
            if other == stream and number > after and message is not None:  # None: a priming event
                await send_callback(EventMessage(message, str(number)))
        return stream


def build() -> MCPServer:
    """The fixture server, every tool, resource, prompt and handler registered."""
    server = MCPServer(name="lockgate-conformance-fixture", version="1.0.0", log_level="WARNING")
    subscriptions: set[str] = set()

    @server.tool(description="Returns one text block.")
    def test_simple_text() -> str:
        return "This is a simple text response for testing."

    @server.tool(description="Returns one image block (a 1x1 PNG).")
    def test_image_content() -> list[ImageContent]:
        return [ImageContent(type="image", data=PNG_BASE64, mime_type="image/png")]

    @server.tool(description="Returns one audio block (a tiny WAV).")
    def test_audio_content() -> list[AudioContent]:
        return [AudioContent(type="audio", data=WAV_BASE64, mime_type="audio/wav")]

    @server.tool(description="Returns one embedded text resource.")
    def test_embedded_resource() -> list[EmbeddedResource]:
        text = "This is an embedded resource content."
        resource = TextResourceContents(uri="test://embedded-resource", mime_type="text/plain", text=text)
        return [EmbeddedResource(type="resource", resource=resource)]

    @server.tool(description="Returns a text, an image and an embedded resource.")
    def test_multiple_content_types() -> list[TextContent | ImageContent | EmbeddedResource]:
        data = TextResourceContents(
            uri="test://mixed-content-resource", mime_type="application/json", text='{"test": "data", "value": 123}'
        )
        return [
            TextContent(type="text", text="Multiple content types test:"),
            ImageContent(type="image", data=PNG_BASE64, mime_type="image/png"),
            EmbeddedResource(type="resource", resource=data),
        ]

    @server.tool(description="Sends three info log messages while it runs.")
    async def test_tool_with_logging(ctx: Context) -> str:
        for number, text in enumerate(["Tool execution started", "Tool processing data", "Tool execution completed"]):
            if number:
                await asyncio.sleep(STEP_SECONDS)
            await ctx.info(text)
        return "Tool with logging executed successfully"

    @server.tool(description="Reports progress 0, 50 and 100 of 100 while it runs.")
    async def test_tool_with_progress(ctx: Context) -> str:
        for number, progress in enumerate([0, 50, 100]):
            if number:
                await asyncio.sleep(STEP_SECONDS)
            await ctx.report_progress(progress=progress, total=100, message=f"Completed step {progress} of 100")
        return "Tool with progress executed successfully"

    @server.tool(description="Always fails: the result has isError set.")
    def test_error_handling() -> str:
        raise RuntimeError("This tool intentionally returns an error for testing")

    @server.tool(description="Asks the client's model to complete `prompt` (sampling/createMessage).")
    async def test_sampling(prompt: str, ctx: Context) -> str:
        message = SamplingMessage(role="user", content=TextContent(type="text", text=prompt))
        result = await ctx.request_context.session.create_message(
            [message], max_tokens=100, related_request_id=ctx.request_id
        )
        answer = result.content.text if result.content.type == "text" else "(not text)"
        return f"LLM response: {answer}"

    @server.tool(description="Asks the user for a username and an email (elicitation/create).")
    async def test_elicitation(message: str, ctx: Context) -> str:
        return "User response: " + await _elicit(ctx, message, USER_SCHEMA)

    @server.tool(description="Asks the user with a default for every primitive type (SEP-1034).")
    async def test_elicitation_sep1034_defaults(ctx: Context) -> str:
        return "Elicitation completed: " + await _elicit(ctx, "Please provide user information", DEFAULTS_SCHEMA)

    @server.tool(description="Asks the user with every enum shape of SEP-1330.")
    async def test_elicitation_sep1330_enums(ctx: Context) -> str:
        return "Elicitation completed: " + await _elicit(ctx, "Please select some options", ENUMS_SCHEMA)

    @server.tool(description="Closes its SSE stream mid-call; the client resumes it (SEP-1699).")
    async def test_reconnection(ctx: Context) -> str:
        await ctx.info("Before disconnect")
        await ctx.close_sse_stream()
        await asyncio.sleep(0.2)  # the client reconnects with Last-Event-ID meanwhile
        await ctx.info("After reconnect")
        return "Reconnection test completed"

    @server.tool(name="json_schema_2020_12_tool", description="Tool with JSON Schema 2020-12 features")
    def json_schema_2020_12_tool() -> str:
        return "json_schema_2020_12_tool"

    # MCPServer derives a tool's input schema from its signature and has no
    # parameter to give one; this tool's schema is the point of its scenario.
    tool = server._tool_manager.get_tool("json_schema_2020_12_tool")
    assert tool is not None
    tool.parameters = JSON_SCHEMA_2020_12

    @server.resource("test://static-text", description="A static text resource.", mime_type="text/plain")
    def static_text() -> str:
        return "This is the content of the static text resource."

    @server.resource("test://static-binary", description="A static binary resource (a PNG).", mime_type="image/png")
    def static_binary() -> bytes:
        return base64.b64decode(PNG_BASE64)

    @server.resource(
        "test://template/{id}/data", description="A template: {id} is substituted.", mime_type="application/json"
    )
    def template(id: str) -> str:
        return json.dumps({"id": id, "templateTest": True, "data": f"Data for ID: {id}"})

    @server.resource("test://watched-resource", description="A resource to subscribe to.", mime_type="text/plain")
    def watched() -> str:
        return "Watched resource content"

    @server.prompt(description="A prompt without arguments.")
    def test_simple_prompt() -> list[UserMessage]:
        return [UserMessage(TextContent(type="text", text="This is a simple prompt for testing."))]

    @server.prompt(description="A prompt with two required arguments.")
    def test_prompt_with_arguments(arg1: str, arg2: str) -> list[UserMessage]:
        text = f"Prompt with arguments: arg1='{arg1}', arg2='{arg2}'"
        return [UserMessage(TextContent(type="text", text=text))]

    @server.prompt(description="A prompt that embeds the resource at resourceUri.")
    def test_prompt_with_embedded_resource(resourceUri: str) -> list[UserMessage]:  # the scenario's argument name
        text = "Embedded resource content for testing."
        resource = TextResourceContents(uri=resourceUri, mime_type="text/plain", text=text)
        return [
            UserMessage(EmbeddedResource(type="resource", resource=resource)),
            UserMessage(TextContent(type="text", text="Please process the embedded resource above.")),
        ]

    @server.prompt(description="A prompt with an image.")
    def test_prompt_with_image() -> list[UserMessage]:
        return [
            UserMessage(ImageContent(type="image", data=PNG_BASE64, mime_type="image/png")),
            UserMessage(TextContent(type="text", text="Please analyze the image above.")),
        ]

    async def complete(ctx: ServerRequestContext[Any], params: CompleteRequestParams) -> CompleteResult:
        return CompleteResult(completion=Completion(values=[], total=0, has_more=False))  # the shape is checked only

    async def set_level(ctx: ServerRequestContext[Any], params: SetLevelRequestParams) -> EmptyResult:
        return EmptyResult()

    async def subscribe(ctx: ServerRequestContext[Any], params: SubscribeRequestParams) -> EmptyResult:
        subscriptions.add(str(params.uri))
        return EmptyResult()

    async def unsubscribe(ctx: ServerRequestContext[Any], params: UnsubscribeRequestParams) -> EmptyResult:
        subscriptions.discard(str(params.uri))
        return EmptyResult()

    # MCPServer has no decorator for the last three (and an untyped one for
    # completions); the low-level server takes them as handlers and advertises
    # completions, logging and resources.subscribe for them.
    lowlevel = server._lowlevel_server
    lowlevel.add_request_handler("completion/complete", CompleteRequestParams, complete)
    lowlevel.add_request_handler("logging/setLevel", SetLevelRequestParams, set_level)
    lowlevel.add_request_handler("resources/subscribe", SubscribeRequestParams, subscribe)
    lowlevel.add_request_handler("resources/unsubscribe", UnsubscribeRequestParams, unsubscribe)
    return server


async def _elicit(ctx: Context, message: str, schema: dict[str, Any]) -> str:
    """Send ``elicitation/create`` with ``schema`` as given; the answer as ``action=…, content=…``."""
    result = await ctx.request_context.session.elicit_form(message, schema, related_request_id=ctx.request_id)
    return f"action={result.action}, content={json.dumps(result.content or {}, sort_keys=True)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True, help="port on 127.0.0.1 to serve /mcp on")
    args = parser.parse_args()
    # Logging, sampling and SSE polling are deprecated as of 2026-07-28; the 2025-11-25 scenarios test them.
    warnings.simplefilter("ignore", MCPDeprecationWarning)
    build().run(
        "streamable-http", host="127.0.0.1", port=args.port, event_store=MemoryEventStore(), retry_interval=100
    )


if __name__ == "__main__":
    main()
