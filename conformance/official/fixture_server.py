"""The server the official MCP conformance suite tests: every fixture its server scenarios name.

``@modelcontextprotocol/conformance`` (``conformance server --url …``) is a
client: each server scenario connects to one URL and calls fixtures by name
(``test_simple_text``, ``test://static-text``, ``test_prompt_with_arguments``
…) and checks what comes back against the texts in its scenario
descriptions. This module is that server, written with the MCP Python SDK's
``MCPServer`` and served over Streamable HTTP at ``/mcp`` on 127.0.0.1. It
passes every scored server scenario of ``--requirements 2025-11-25`` and of
``--requirements 2026-07-28``, and ``run.py`` then puts Lockgate in front of
it to see which scenarios survive the gateway.

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

2026-07-28 (the stateless era) adds (``add_stateless_fixtures``):

- multi-round-trip requests (SEP-2322), each answering ``input_required``
  until its questions are answered, under the keys the scenarios name:
  ``test_input_required_result_elicitation`` (``user_name``),
  ``…_sampling`` (``capital_question``), ``…_list_roots``
  (``client_roots``), ``…_request_state`` and ``…_tampered_state``
  (``confirm``, with a requestState; "state-ok" once it comes back),
  ``…_multiple_inputs`` (all three kinds at once), ``…_multi_round``
  (``step1`` then ``step2``, a new requestState each round),
  ``…_capabilities`` (asks only what the client declared) and the prompt
  ``test_input_required_result_prompt`` (``user_context``);
- ``server-stateless``'s diagnostics: ``test_missing_capability`` (needs
  ``sampling``: -32021 without it), ``test_streaming_elicitation`` (asks
  through its result, never a request on the stream), ``test_logging_tool``
  (logs, which the SDK drops unless the request set a log level) and
  ``test_trigger_tool_change`` / ``test_trigger_prompt_change`` (add or
  remove a tool or prompt and tell ``subscriptions/listen`` streams);
- and from the SDK: ``server/discover``, the envelope checks,
  ``subscriptions/listen``, and sealing requestState against tampering.

The multi-round-trip fixtures serve the handshake wire too, asking their
questions there as standalone requests during the call. The SDK's
everything example server (``examples/servers/everything-server`` in
modelcontextprotocol/python-sdk) is the suite's reference fixture; this one
is written from the scenarios.

Run: ``python conformance/official/fixture_server.py --port PORT``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from mcp.server import MCPServer, ServerRequestContext
from mcp.server.mcpserver import Context, Resolve, Sample
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.prompts.base import UserMessage
from mcp.server.streamable_http import EventCallback, EventId, EventMessage, EventStore, StreamId
from mcp.shared.exceptions import MCPDeprecationWarning
from mcp.shared.message import ServerMessageMetadata
from mcp.types import (
    AudioContent,
    ClientCapabilities,
    CompleteRequestParams,
    CompleteResult,
    Completion,
    CreateMessageRequest,
    CreateMessageRequestParams,
    CreateMessageResult,
    CreateMessageResultWithTools,
    ElicitRequest,
    ElicitRequestFormParams,
    ElicitResult,
    EmbeddedResource,
    EmptyResult,
    ImageContent,
    InputRequest,
    InputRequests,
    InputRequiredResult,
    InputResponse,
    InputResponses,
    JSONRPCMessage,
    ListRootsRequest,
    ListRootsResult,
    SamplingMessage,
    SetLevelRequestParams,
    SubscribeRequestParams,
    TextContent,
    TextResourceContents,
    UnsubscribeRequestParams,
)
from mcp_types.version import is_version_at_least

T = TypeVar("T")

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


#: The first revision whose clients get an InputRequiredResult instead of requests of the server's.
STATELESS_VERSION = "2026-07-28"

#: A bound on the rounds of one handshake-era call (the fixtures need at most three).
MAX_ROUNDS = 5

#: The plaintext requestState of the confirmation fixtures (the SDK seals it on the way out).
CONFIRM_STATE = "awaiting-confirmation"

#: The tool and the prompt the two trigger tools add and remove.
DYNAMIC_TOOL = "test_dynamic_tool"
DYNAMIC_PROMPT = "test_dynamic_prompt"


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
    add_stateless_fixtures(server)
    return server


def add_stateless_fixtures(server: MCPServer) -> None:
    """The fixtures the 2026-07-28 scenarios call: multi-round-trip requests, -32021, listen streams.

    Each input-required fixture is one round function (below, at module
    level) run by ``_rounds``, which serves both wires: on 2026-07-28 a round
    is one request, answered with an InputRequiredResult until the client has
    answered every question; on the handshake wire the questions go to the
    client as standalone requests during the one call. The questions are
    named as the scenarios name them (``user_name``, ``capital_question`` …):
    the suite answers by key.
    """
    # The tool and the prompt the two triggers have added, each taken away by the next trigger.
    present: set[str] = set()

    @server.tool(description="Asks for the user's name and greets them.")
    async def test_input_required_result_elicitation(ctx: Context) -> InputRequiredResult | str:
        return await _rounds(ctx, _greeting)

    @server.tool(description="Asks the client's model a question and reports its answer.")
    async def test_input_required_result_sampling(ctx: Context) -> InputRequiredResult | str:
        return await _rounds(ctx, _capital)

    @server.tool(description="Asks for the client's roots and lists them.")
    async def test_input_required_result_list_roots(ctx: Context) -> InputRequiredResult | str:
        return await _rounds(ctx, _roots)

    @server.tool(description="Asks for a confirmation with a requestState, and checks the state comes back.")
    async def test_input_required_result_request_state(ctx: Context) -> InputRequiredResult | str:
        return await _rounds(ctx, _confirmation)

    @server.tool(description="Asks for a name, a greeting from the model and the roots in one round.")
    async def test_input_required_result_multiple_inputs(ctx: Context) -> InputRequiredResult | str:
        return await _rounds(ctx, _three_questions)

    @server.tool(description="Asks two questions in two rounds; the requestState carries the first answer.")
    async def test_input_required_result_multi_round(ctx: Context) -> InputRequiredResult | str:
        return await _rounds(ctx, _two_steps)

    @server.tool(description="Asks for a confirmation with a requestState the SDK seals against tampering.")
    async def test_input_required_result_tampered_state(ctx: Context) -> InputRequiredResult | str:
        # A tampered token never gets here: the SDK answers -32602 when it fails to unseal it.
        return await _rounds(ctx, _confirmation)

    @server.tool(description="Asks only for the inputs the client declared capabilities for.")
    async def test_input_required_result_capabilities(ctx: Context) -> InputRequiredResult | str:
        return await _rounds(ctx, _declared_only)

    @server.tool(description="Asks for a confirmation; on 2026-07-28 the question rides the result.")
    async def test_streaming_elicitation(ctx: Context) -> InputRequiredResult | str:
        # The scenario reads this call's response stream: no request of the server's may be on it.
        return await _rounds(ctx, _streamed_confirmation)

    @server.tool(description="Needs the client's sampling capability; without it the call is refused (-32021).")
    def test_missing_capability(answer: Annotated[CreateMessageResult, Resolve(capital_question)]) -> str:
        # The SDK checks the capability before asking (-32021 with requiredCapabilities
        # {"sampling": {}}), asks in the era's way, and runs this body with the answer.
        return f"The model answered: {_sampled_text(answer)}"

    @server.tool(description="Logs three info messages; a client gets them only if its request set a log level.")
    async def test_logging_tool(ctx: Context) -> str:
        # On 2026-07-28 the SDK sends these only when the request's _meta carries
        # io.modelcontextprotocol/logLevel, and then on this request's own stream.
        for text in ["Logging tool started", "Logging tool working", "Logging tool finished"]:
            await ctx.info(text)
        return "Logging tool executed"

    def dynamic_tool() -> str:
        return "This tool comes and goes with test_trigger_tool_change."

    def dynamic_prompt() -> list[UserMessage]:
        text = "This prompt comes and goes with test_trigger_prompt_change."
        return [UserMessage(TextContent(type="text", text=text))]

    @server.tool(description="Adds or removes test_dynamic_tool and tells subscriptions/listen streams.")
    async def test_trigger_tool_change(ctx: Context) -> str:
        if DYNAMIC_TOOL in present:
            server.remove_tool(DYNAMIC_TOOL)
            present.discard(DYNAMIC_TOOL)
        else:
            server.tool(name=DYNAMIC_TOOL, description="Listed after every other test_trigger_tool_change.")(
                dynamic_tool
            )
            present.add(DYNAMIC_TOOL)
        await ctx.notify_tools_changed()
        return f"{DYNAMIC_TOOL} is {'listed' if DYNAMIC_TOOL in present else 'gone'}"

    @server.tool(description="Adds or removes test_dynamic_prompt and tells subscriptions/listen streams.")
    async def test_trigger_prompt_change(ctx: Context) -> str:
        if DYNAMIC_PROMPT in present:
            server.remove_prompt(DYNAMIC_PROMPT)
            present.discard(DYNAMIC_PROMPT)
        else:
            server.prompt(name=DYNAMIC_PROMPT, description="Listed after every other test_trigger_prompt_change.")(
                dynamic_prompt
            )
            present.add(DYNAMIC_PROMPT)
        await ctx.notify_prompts_changed()
        return f"{DYNAMIC_PROMPT} is {'listed' if DYNAMIC_PROMPT in present else 'gone'}"

    @server.prompt(description="Asks what context to use, then renders with it.")
    async def test_input_required_result_prompt(ctx: Context) -> list[UserMessage] | InputRequiredResult:
        return await _rounds(ctx, _prompt_context)


@dataclass(frozen=True)
class Round:
    """What one round of a multi-round-trip request knows.

    ``responses`` answer the questions of the round before (empty on round
    one); ``state`` is the requestState that round minted (the SDK has
    verified it); ``capabilities`` are what the client declared.
    """

    responses: InputResponses
    state: str | None
    capabilities: ClientCapabilities | None


async def _rounds(ctx: Context, step: Callable[[Round], InputRequiredResult | T]) -> InputRequiredResult | T:
    """Run the multi-round-trip fixture ``step`` in the era of the request.

    On 2026-07-28 this request is one round: ``step`` sees the client's
    answers and echoed state, and its InputRequiredResult goes back as the
    result. On the handshake wire the rounds run here, within the one call:
    each question goes to the client as a standalone request on this call's
    stream, and the answers feed the next round.
    """
    now = Round(ctx.input_responses or {}, ctx.request_state, ctx.client_capabilities)
    if ctx.protocol_version is not None and is_version_at_least(ctx.protocol_version, STATELESS_VERSION):
        return step(now)
    for _ in range(MAX_ROUNDS):
        result = step(now)
        if not isinstance(result, InputRequiredResult):
            return result
        answers: InputResponses = {}
        for key, request in (result.input_requests or {}).items():
            answers[key] = await _send(ctx, request)
        now = Round(answers, result.request_state, now.capabilities)
    raise ToolError(f"still asking after {MAX_ROUNDS} rounds")


async def _send(ctx: Context, request: InputRequest) -> InputResponse:
    """Ask one question as a standalone request (the handshake era's way), on the call's own stream."""
    session = ctx.request_context.session
    metadata = ServerMessageMetadata(related_request_id=ctx.request_id)
    if isinstance(request, ElicitRequest):
        return await session.send_request(request, ElicitResult, metadata=metadata)
    if isinstance(request, CreateMessageRequest):
        return await session.send_request(request, CreateMessageResult, metadata=metadata)
    return await session.send_request(request, ListRootsResult, metadata=metadata)


def _greeting(now: Round) -> InputRequiredResult | str:
    """``input-required-result-basic-elicitation`` (and the scenarios that reuse its tool)."""
    name = _form_answer(now.responses, "user_name", "name")
    if name is None:  # round 1, or the answer is missing or unusable: ask (again)
        return InputRequiredResult(input_requests={"user_name": _ask_form("What is your name?", "name")})
    return f"Hello, {name}!"


def _capital(now: Round) -> InputRequiredResult | str:
    """``input-required-result-basic-sampling``."""
    answer = _model_answer(now.responses, "capital_question")
    if answer is None:
        question = _ask_model("What is the capital of France?", max_tokens=100)
        return InputRequiredResult(input_requests={"capital_question": question})
    return f"The model answered: {answer}"


def _roots(now: Round) -> InputRequiredResult | str:
    """``input-required-result-basic-list-roots``."""
    roots = _roots_answer(now.responses, "client_roots")
    if roots is None:
        return InputRequiredResult(input_requests={"client_roots": ListRootsRequest()})
    return f"The client's roots: {roots}"


def _confirmation(now: Round) -> InputRequiredResult | str:
    """``input-required-result-request-state`` and ``-tampered-state``: done only when the state comes back."""
    ok = _form_answer(now.responses, "confirm", "ok")
    if ok is None or now.state != CONFIRM_STATE:
        question = _ask_form("Please confirm", "ok", "boolean")
        return InputRequiredResult(input_requests={"confirm": question}, request_state=CONFIRM_STATE)
    return f"state-ok: the requestState came back as minted (confirmed: {ok})"


def _three_questions(now: Round) -> InputRequiredResult | str:
    """``input-required-result-multiple-input-requests``: one of each kind in one round."""
    name = _form_answer(now.responses, "user_name", "name")
    greeting = _model_answer(now.responses, "greeting")
    roots = _roots_answer(now.responses, "client_roots")
    if name is None or greeting is None or roots is None:
        requests: InputRequests = {
            "user_name": _ask_form("What is your name?", "name"),
            "greeting": _ask_model("Generate a greeting", max_tokens=50),
            "client_roots": ListRootsRequest(),
        }
        return InputRequiredResult(input_requests=requests, request_state="multiple-inputs")
    return f"{greeting} (to {name}; roots: {roots})"


def _two_steps(now: Round) -> InputRequiredResult | str:
    """``input-required-result-multi-round``: the second round's state carries the first answer."""
    state = _load_state(now.state)
    name = state.get("name")
    if not isinstance(name, str):  # round 1, or its answer is still missing
        name = _form_answer(now.responses, "step1", "name")
        if name is None:
            step1 = _ask_form("Step 1: What is your name?", "name")
            return InputRequiredResult(input_requests={"step1": step1}, request_state=json.dumps({"step": 1}))
    color = _form_answer(now.responses, "step2", "color") if state.get("step") == 2 else None
    if color is None:
        step2 = _ask_form("Step 2: What is your favorite color?", "color")
        # A new state: it now holds the first answer, which the client sees only sealed.
        return InputRequiredResult(input_requests={"step2": step2}, request_state=json.dumps({"step": 2, "name": name}))
    return f"{name}'s favorite color is {color}."


def _declared_only(now: Round) -> InputRequiredResult | str:
    """``input-required-result-capability-check``: no question the client could not answer."""
    declared = now.capabilities
    wanted: InputRequests = {}
    if declared is not None and declared.elicitation is not None:
        wanted["user_name"] = _ask_form("What is your name?", "name")
    if declared is not None and declared.sampling is not None:
        wanted["capital_question"] = _ask_model("What is the capital of France?", max_tokens=100)
    if declared is not None and declared.roots is not None:
        wanted["client_roots"] = ListRootsRequest()
    missing = {key: request for key, request in wanted.items() if key not in now.responses}
    if missing:
        return InputRequiredResult(input_requests=missing)
    return "Answered; asked for: " + (", ".join(sorted(wanted)) or "nothing (no input capability declared)")


def _streamed_confirmation(now: Round) -> InputRequiredResult | str:
    """``server-stateless``'s response-stream check: a confirmation, without requestState."""
    ok = _form_answer(now.responses, "confirm", "ok")
    if ok is None:
        return InputRequiredResult(input_requests={"confirm": _ask_form("Please confirm", "ok", "boolean")})
    return f"Confirmed: {ok}"


def _prompt_context(now: Round) -> InputRequiredResult | list[UserMessage]:
    """``input-required-result-non-tool-request``: a prompt that asks before it renders."""
    context = _form_answer(now.responses, "user_context", "context")
    if context is None:
        question = _ask_form("What context should the prompt use?", "context")
        return InputRequiredResult(input_requests={"user_context": question})
    return [UserMessage(TextContent(type="text", text=f"Answer with this context in mind: {context}"))]


def capital_question() -> Sample:
    """The sampling request ``test_missing_capability`` resolves its argument with.

    At module level: the SDK reads the tool's ``Annotated[…, Resolve(…)]``
    hint by name, so the resolver must be a global of this module.
    """
    message = SamplingMessage(role="user", content=TextContent(type="text", text="What is the capital of France?"))
    return Sample([message], max_tokens=100)


def _ask_form(message: str, field: str, kind: str = "string") -> ElicitRequest:
    """An ``elicitation/create`` form with one required field, the shape the scenarios show."""
    schema = {"type": "object", "properties": {field: {"type": kind}}, "required": [field]}
    return ElicitRequest(params=ElicitRequestFormParams(message=message, requested_schema=schema))


def _ask_model(text: str, *, max_tokens: int) -> CreateMessageRequest:
    """A ``sampling/createMessage`` request with one user message."""
    message = SamplingMessage(role="user", content=TextContent(type="text", text=text))
    return CreateMessageRequest(params=CreateMessageRequestParams(messages=[message], max_tokens=max_tokens))


def _form_answer(responses: InputResponses | None, key: str, field: str) -> str | None:
    """The answer to form ``key``: ``field``'s value, or the action when the user did not accept.

    None when there is nothing to use (no answer, another kind of answer, no
    ``field``): the tool asks again rather than fail, as SEP-2322 recommends.
    """
    answer = (responses or {}).get(key)
    if not isinstance(answer, ElicitResult):
        return None
    if answer.action != "accept":
        return f"({answer.action})"
    value = (answer.content or {}).get(field)
    return None if value is None else str(value)


def _model_answer(responses: InputResponses | None, key: str) -> str | None:
    """The text of the model's answer to sampling request ``key``; None when there is none."""
    answer = (responses or {}).get(key)
    if not isinstance(answer, CreateMessageResult | CreateMessageResultWithTools):
        return None
    return _sampled_text(answer)


def _sampled_text(answer: CreateMessageResult | CreateMessageResultWithTools) -> str:
    """The text blocks of a sampling answer, joined."""
    blocks = answer.content if isinstance(answer.content, list) else [answer.content]
    return " ".join(block.text for block in blocks if isinstance(block, TextContent)) or "(no text)"


def _roots_answer(responses: InputResponses | None, key: str) -> str | None:
    """The client's roots from the answer to ``key``, listed; None when there is no such answer."""
    answer = (responses or {}).get(key)
    if not isinstance(answer, ListRootsResult):
        return None
    return ", ".join(str(root.uri) for root in answer.roots) or "(none)"


def _load_state(request_state: str | None) -> dict[str, Any]:
    """The multi-round tool's state: what it minted last round, or empty on round 1."""
    if request_state is None:
        return {}
    try:
        state = json.loads(request_state)
    except ValueError:
        return {}
    return state if isinstance(state, dict) else {}


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
