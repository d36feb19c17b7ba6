"""Aggregate mode (``GATEWAY_MODE=aggregate``): the servers' own tools, resources, templates and prompts as one server.

Every scenario here runs the SDK ``Client`` against two servers, the raw
server and the SDK server, each with ``--catalog`` (resources, a template, a
prompt and more; see ``servers/``), as agent ``dev`` by default
(``GATEWAY_DEFAULT_AGENT``), whose rules hide the raw server's ``drop_*``
tools and its ``raw://secret`` resource. Two servers, so tool and prompt
names are ``server__name``, and ``conformance://shared``, which both list, is
published as ``lockgate://<server>/conformance://shared``.

A notification the gateway sends on its own (a list change it passes on after
listing the server again) races with the client's next request; the scripts
wait for it (:class:`Inbox`) before going on, so two recordings agree.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import mcp_types as types
import trio

from conformance.scenarios.base import JSON, RAW, SDK, scenario

RAW_CATALOG: JSON = {**RAW, "args": ["servers/raw_server.py", "--catalog"],
                     "description": "The raw server with resources, a template, a prompt and subscriptions."}
SDK_CATALOG: JSON = {**SDK, "args": ["servers/sdk_server.py", "--catalog"],
                     "description": "An SDK MCPServer with resources, a template, a prompt, completions, logging and sampling."}
SERVERS: JSON = {"raw": RAW_CATALOG, "sdk": SDK_CATALOG}

AGGREGATE_RULES: JSON = {
    "agents": {
        # everything but the raw server's drop_* tools and its secret
        "dev": {"allow": {"servers": ["*"]}, "deny": {"tools": {"raw": ["drop_*"]}, "resources": {"raw": ["raw://secret"]}}},
    },
    "defaults": {"deny_on_missing_agent": False},
}
ENV = {"GATEWAY_MODE": "aggregate", "GATEWAY_DEFAULT_AGENT": "dev"}


def aggregate(name: str, about: str, **options: Any) -> Callable[[Any], Any]:
    """Register an aggregate-mode scenario: the SDK Client, both catalogue servers, the rules and settings above."""
    return scenario(name, about, sdk=True, **{"servers": SERVERS, "rules": AGGREGATE_RULES, "env": ENV, **options})


class Inbox:
    """The notifications an SDK ``Client`` received (its ``message_handler``), to wait for one."""

    def __init__(self) -> None:
        self.methods: list[str] = []
        self._changed = trio.Event()

    async def handler(self, message: Any) -> None:
        if not isinstance(message, Exception):
            self.methods.append(str(message.method))
            self._changed.set()
            self._changed = trio.Event()

    def count(self, method: str) -> int:
        return self.methods.count(method)

    async def wait(self, method: str, count: int) -> None:
        """Wait until ``method`` has arrived ``count`` times in all."""
        with trio.fail_after(10):
            while self.count(method) < count:
                await self._changed.wait()


async def sample(context: Any, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
    """The client's model: it answers every question the same way."""
    return types.CreateMessageResult(role="assistant", content=types.TextContent(type="text", text="42"), model="conformance-model")


async def _progress(value: float, total: float | None, message: str | None) -> None:
    pass


async def _refused(call: Any) -> None:
    """Await a request the gateway must refuse with a JSON-RPC error."""
    from mcp import MCPError

    try:
        await call
    except MCPError:
        return
    raise AssertionError("the gateway answered a request it should have refused")


@aggregate("aggregate_tools_list", "aggregate: tools/list merges both servers as server__tool; the denied raw__drop_table is not listed")
async def _(client: Any) -> None:
    await client.list_tools()


@aggregate("aggregate_tools_call", "aggregate: tools/call routed by name to each server, with progress; a hidden and an unknown name are refused")
async def _(client: Any) -> None:
    await client.call_tool("sdk__echo", {"text": "to the SDK server"})
    await client.call_tool("raw__add", {"a": 2, "b": 3})
    await client.call_tool("sdk__slow", {"steps": 3}, progress_callback=_progress)
    await client.call_tool("raw__slow", {"steps": 2}, progress_callback=_progress)
    await _refused(client.call_tool("raw__drop_table", {"table": "t"}))
    await _refused(client.call_tool("raw__nope", {}))


@aggregate("aggregate_resources", "aggregate: resources/list, templates/list, resources/read by plain, namespaced and template URIs; hidden and ambiguous URIs are not found")
async def _(client: Any) -> None:
    await client.list_resources()
    await client.list_resource_templates()
    for uri in ("conformance://readme", "raw://status", "lockgate://raw/conformance://shared", "lockgate://sdk/conformance://shared",
                "lockgate://sdk/conformance://items/42", "lockgate://raw/raw://logs/monday"):
        await client.read_resource(uri)
    for uri in ("raw://secret", "conformance://shared", "nowhere://at-all"):
        await _refused(client.read_resource(uri))


subscribed = Inbox()


@aggregate("aggregate_subscribe", "aggregate: resources/subscribe, a server's resources/updated passed on under the public URI, unsubscribe",
           client_options={"message_handler": subscribed.handler})
async def _(client: Any) -> None:
    await client.subscribe_resource("raw://status")
    await client.subscribe_resource("lockgate://raw/conformance://shared")
    await client.call_tool("raw__touch", {"uri": "raw://status"})
    await client.call_tool("raw__touch", {"uri": "conformance://shared"})
    await client.unsubscribe_resource("raw://status")
    await client.call_tool("raw__touch", {"uri": "raw://status"})  # no longer passed on
    await client.call_tool("raw__touch", {"uri": "raw://secret"})  # never subscribed: not passed on


@aggregate("aggregate_prompts", "aggregate: prompts/list merged, prompts/get on each server, completion/complete for a prompt and a template; an unknown prompt is refused")
async def _(client: Any) -> None:
    await client.list_prompts()
    await client.get_prompt("sdk__greet", {"name": "bob"})
    await client.get_prompt("raw__summary", {"topic": "the week"})
    await client.complete(types.PromptReference(type="ref/prompt", name="sdk__greet"), {"name": "name", "value": "al"})
    await client.complete(types.ResourceTemplateReference(type="ref/resource", uri="lockgate://sdk/conformance://items/{id}"),
                          {"name": "id", "value": "4"})
    await _refused(client.get_prompt("sdk__nope", {}))


@aggregate("aggregate_logging", "aggregate: logging/setLevel passed on to both servers; their log messages reach the client at or above its level")
async def _(client: Any) -> None:
    await client.set_logging_level("info")
    await client.call_tool("raw__log", {})  # a warning: passed on
    await client.call_tool("sdk__note", {"level": "debug", "text": "below info"})  # not passed on
    await client.call_tool("sdk__note", {"level": "error", "text": "at error"})  # passed on
    await client.set_logging_level("error")
    await client.call_tool("raw__log", {})  # a warning, now below the level: not passed on


changes = Inbox()


@aggregate("aggregate_list_changed", "aggregate: a server's tools/list_changed and resources/list_changed are passed on once the gateway has listed it again",
           client_options={"message_handler": changes.handler})
async def _(client: Any) -> None:
    # Listed first, so the Client knows raw__grow's output schema and does not list tools
    # by itself after the call, which would race with the gateway listing the server again.
    await client.list_tools()
    tools = changes.count("notifications/tools/list_changed")
    await client.call_tool("raw__grow", {})
    await changes.wait("notifications/tools/list_changed", tools + 1)
    await client.list_tools()
    await client.call_tool("raw__grown", {})
    resources = changes.count("notifications/resources/list_changed")
    await client.call_tool("raw__add_resource", {})
    await changes.wait("notifications/resources/list_changed", resources + 1)
    await client.list_resources()
    await client.read_resource("raw://added")


@aggregate("aggregate_sampling", "aggregate: a server's sampling/createMessage during a call is relayed to the client that made it, and its answer back",
           client_options={"sampling_callback": sample})
async def _(client: Any) -> None:
    await client.call_tool("sdk__ask", {"question": "What is six times seven?"})
    await client.call_tool("sdk__echo", {"text": "after"})


@aggregate("aggregate_sampling_refused", "aggregate: a server asks a client that declared no sampling: the server gets -32601, the call its result")
async def _(client: Any) -> None:
    await client.call_tool("raw__talk_back", {})
    await client.call_tool("raw__echo", {"text": "after"})


@aggregate("aggregate_http", "aggregate over HTTP: tools/list, a call with progress over SSE, resources/read, prompts/get, a sampling relay",
           transport="http", client_options={"sampling_callback": sample})
async def _(client: Any) -> None:
    await client.list_tools()
    await client.call_tool("sdk__slow", {"steps": 2}, progress_callback=_progress)
    await client.list_resources()
    await client.read_resource("lockgate://sdk/conformance://shared")
    await client.get_prompt("sdk__greet", {"name": "alice"})
    await client.call_tool("sdk__ask", {"question": "And over HTTP?"})
