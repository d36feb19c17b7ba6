"""The gateway's own tools: their definitions, argument checks and results.

The names, parameters and result shapes follow agent-mcp-gateway's README so
that agent prompts written for it keep working. Descriptions are short on
purpose: the whole ``tools/list`` answer is what every agent pays for in
context before it does anything.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from fnmatch import translate
from typing import Any, Union

from ._jsonrpc import encode

__all__ = [
    "ArgumentError",
    "ExecuteTool",
    "GetServerTools",
    "GetStatus",
    "ListServers",
    "SearchTools",
    "TokenCounter",
    "ToolCall",
    "ToolTokens",
    "estimate_bytes",
    "estimate_tokens",
    "gateway_tools",
    "parse_call",
    "select_tools",
    "tool_result",
    "tool_tokens",
]

JSONObject = dict[str, Any]

#: The longest ``timeout_ms`` a call may ask for: 2**31 - 1 ms, about 24.8 days
#: (the largest delay most timer APIs take), so deadlines stay ordinary floats.
MAX_TIMEOUT_MS = 2**31 - 1

# Every tools/list pays for these bytes, so agent_id is explained once, where an agent starts.
_AGENT = {"type": "string"}
_BUDGET = {"type": "integer"}

#: The most tools one ``search_tools`` call returns.
MAX_SEARCH_LIMIT = 50

_LIST_SERVERS: JSONObject = {
    "name": "list_servers",
    "description": "List the MCP servers you may use. Start here.",
    "inputSchema": {
        "type": "object",
        "properties": {
            "agent_id": {"type": "string", "description": "Your agent id, for every gateway tool."},
            "include_metadata": {"type": "boolean"},
        },
    },
}

_GET_SERVER_TOOLS: JSONObject = {
    "name": "get_server_tools",
    "description": "Get a server's tool definitions.",
    "inputSchema": {
        "type": "object",
        "properties": {
            "agent_id": _AGENT,
            "server": {"type": "string"},
            "names": {"type": "string", "description": "Comma-separated tool names."},
            "pattern": {"type": "string", "description": "Glob, e.g. get_*."},
            "max_schema_tokens": _BUDGET,
        },
        "required": ["server"],
    },
}

_SEARCH_TOOLS: JSONObject = {
    "name": "search_tools",
    "description": "Find tools for a task across servers, best first.",
    "inputSchema": {
        "type": "object",
        "properties": {
            "agent_id": _AGENT,
            "query": {"type": "string"},
            "servers": {"type": "string"},
            "limit": {"type": "integer"},
            "max_schema_tokens": _BUDGET,
        },
        "required": ["query"],
    },
}

_EXECUTE_TOOL: JSONObject = {
    "name": "execute_tool",
    "description": "Call a tool on a server.",
    "inputSchema": {
        "type": "object",
        "properties": {
            "agent_id": _AGENT,
            "server": {"type": "string"},
            "tool": {"type": "string"},
            "args": {"type": "object"},
            "timeout_ms": {"type": "integer"},
        },
        "required": ["server", "tool"],
    },
}

_GET_GATEWAY_STATUS: JSONObject = {
    "name": "get_gateway_status",
    "description": "Gateway diagnostics.",
    "inputSchema": {"type": "object", "properties": {"agent_id": _AGENT}},
}


def gateway_tools(*, debug: bool) -> list[JSONObject]:
    """The ``tools`` array of the gateway's ``tools/list`` result."""
    tools = [_LIST_SERVERS, _SEARCH_TOOLS, _GET_SERVER_TOOLS, _EXECUTE_TOOL]
    if debug:
        tools.append(_GET_GATEWAY_STATUS)
    return tools


@dataclass(frozen=True, slots=True)
class ArgumentError:
    """A gateway tool was called with a missing or wrongly typed argument."""

    parameter: str
    message: str


@dataclass(frozen=True, slots=True)
class ListServers:
    agent_id: str | None
    include_metadata: bool


@dataclass(frozen=True, slots=True)
class GetServerTools:
    agent_id: str | None
    server: str
    names: tuple[str, ...] | None
    pattern: str | None
    max_schema_tokens: int | None


@dataclass(frozen=True, slots=True)
class SearchTools:
    agent_id: str | None
    query: str
    servers: tuple[str, ...] | None
    limit: int
    max_schema_tokens: int | None


@dataclass(frozen=True, slots=True)
class ExecuteTool:
    agent_id: str | None
    server: str
    tool: str
    args: JSONObject
    timeout_ms: int | None


@dataclass(frozen=True, slots=True)
class GetStatus:
    agent_id: str | None


ToolCall = Union[ListServers, SearchTools, GetServerTools, ExecuteTool, GetStatus]


class _Args:
    """Typed access to one call's ``arguments`` that remembers the first problem."""

    def __init__(self, arguments: JSONObject) -> None:
        self._arguments = arguments
        self.error: ArgumentError | None = None

    def _fail(self, name: str, message: str) -> None:
        if self.error is None:
            self.error = ArgumentError(name, message)

    def string(self, name: str, *, required: bool = False) -> str | None:
        value = self._arguments.get(name)
        if value is None:
            if required:
                self._fail(name, f"missing required parameter '{name}'")
            return None
        if not isinstance(value, str) or (required and not value):
            self._fail(name, f"parameter '{name}' must be a non-empty string")
            return None
        return value

    def boolean(self, name: str) -> bool:
        value = self._arguments.get(name)
        if value is None:
            return False
        if not isinstance(value, bool):
            self._fail(name, f"parameter '{name}' must be a boolean")
            return False
        return value

    def integer(self, name: str, *, minimum: int, maximum: int | None = None) -> int | None:
        value = self._arguments.get(name)
        if value is None:
            return None
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if (
            not isinstance(value, int)
            or isinstance(value, bool)
            or value < minimum
            or (maximum is not None and value > maximum)
        ):
            too_big = maximum is not None and isinstance(value, int) and not isinstance(value, bool) and value > maximum
            bound = f"<= {maximum}" if too_big else f">= {minimum}"
            self._fail(name, f"parameter '{name}' must be an integer {bound}")
            return None
        return value

    def names(self, name: str) -> tuple[str, ...] | None:
        value = self._arguments.get(name)
        if value is None:
            return None
        # Agents often send a list even though the schema says string; both are clear.
        if isinstance(value, str):
            parts = value.split(",")
        elif isinstance(value, list) and all(isinstance(v, str) for v in value):
            parts = value
        else:
            self._fail(name, f"parameter '{name}' must be a comma-separated string")
            return None
        return tuple(p.strip() for p in parts if p.strip())

    def object(self, name: str) -> JSONObject:
        value = self._arguments.get(name)
        if value is None:
            return {}
        if not isinstance(value, dict):
            self._fail(name, f"parameter '{name}' must be an object")
            return {}
        return value


def parse_call(name: str, arguments: JSONObject, *, debug: bool) -> ToolCall | ArgumentError:
    """Check one gateway tool call's name and arguments (an unknown tool is an error about ``name``)."""
    a = _Args(arguments)
    call: ToolCall
    if name == "list_servers":
        call = ListServers(a.string("agent_id"), a.boolean("include_metadata"))
    elif name == "get_server_tools":
        call = GetServerTools(
            a.string("agent_id"),
            a.string("server", required=True) or "",
            a.names("names"),
            a.string("pattern"),
            a.integer("max_schema_tokens", minimum=0),
        )
    elif name == "search_tools":
        call = SearchTools(
            a.string("agent_id"),
            a.string("query", required=True) or "",
            a.names("servers"),
            a.integer("limit", minimum=1, maximum=MAX_SEARCH_LIMIT) or 5,
            a.integer("max_schema_tokens", minimum=0),
        )
    elif name == "execute_tool":
        call = ExecuteTool(
            a.string("agent_id"),
            a.string("server", required=True) or "",
            a.string("tool", required=True) or "",
            a.object("args"),
            a.integer("timeout_ms", minimum=1, maximum=MAX_TIMEOUT_MS),
        )
    elif name == "get_gateway_status" and debug:
        call = GetStatus(a.string("agent_id"))
    else:
        return ArgumentError("name", f"Unknown tool: {name}")
    return a.error or call


#: Tokens a piece of UTF-8 text costs in a model's context. The core takes
#: one from the shell (a real tokenizer, :mod:`lockgate.shells.tokenizer`) and
#: never loads one itself: it stays pure and its tests exact.
TokenCounter = Callable[[bytes], int]


def estimate_bytes(data: bytes) -> int:
    """Bytes / 4, rounded up: the core's default :data:`TokenCounter`.

    Four bytes a token is the usual rule of thumb for English and JSON; it is
    deterministic and monotonic in size, which is all the core's tests need.
    """
    return math.ceil(len(data) / 4)


def estimate_tokens(definition: JSONObject) -> int:
    """Tokens a definition costs by :func:`estimate_bytes` of its compact JSON."""
    return estimate_bytes(encode(definition))


class ToolTokens:
    """Tokens each tool definition costs, counted once per definition.

    A server's tool list is parsed once per ``tools/list`` and its
    definitions are then served as the same objects until the list changes,
    so a definition's identity is a good key: the cost is counted (encoded
    and tokenized) the first time and looked up afterwards. Each entry holds
    the definition itself, so its ``id`` cannot be reused while the entry
    lives; a new list brings new objects, and the cache is emptied whole
    when it reaches ``limit`` entries (the live ones are counted again on
    use). Definitions must not be changed in place (the core never does).
    """

    __slots__ = ("count", "_costs", "_limit")

    def __init__(self, count: TokenCounter = estimate_bytes, *, limit: int = 20_000) -> None:
        self.count = count
        self._costs: dict[int, tuple[JSONObject, int]] = {}
        self._limit = limit

    def __call__(self, tool: JSONObject) -> int:
        """The tokens ``tool``'s compact JSON costs."""
        found = self._costs.get(id(tool))
        if found is not None and found[0] is tool:
            return found[1]
        cost = self.count(encode(tool))
        if len(self._costs) >= self._limit:
            self._costs.clear()
        self._costs[id(tool)] = (tool, cost)
        return cost

    def total(self, tools: Iterable[JSONObject]) -> int:
        """The tokens of a list of definitions: the sum of each one's."""
        return sum(self(tool) for tool in tools)


def tool_tokens(count: TokenCounter | ToolTokens, tool: JSONObject) -> int:
    """The tokens ``tool`` costs: cached through a :class:`ToolTokens` (``ctx.tool_tokens``), counted afresh by a bare counter."""
    if isinstance(count, ToolTokens):
        return count(tool)
    return count(encode(tool))


def select_tools(
    tools: Iterable[JSONObject],
    *,
    names: tuple[str, ...] | None,
    pattern: str | None,
    max_tokens: int | None,
    cost: Callable[[JSONObject], int] = estimate_tokens,
) -> tuple[list[JSONObject], int]:
    """Apply the ``names``, ``pattern`` and token-budget filters, in that order.

    The budget takes whole tools only, in server order, skipping any tool that
    would overflow it so smaller ones after it still fit. ``cost`` counts a
    definition's tokens (the gateway passes its :class:`ToolTokens`). Returns
    the tools and the tokens they use.
    """
    wanted = set(names) if names is not None else None
    regex = re.compile(translate(pattern)) if pattern is not None else None
    chosen: list[JSONObject] = []
    used = 0
    for tool in tools:
        name = tool.get("name")
        if wanted is not None and name not in wanted:
            continue
        if regex is not None and not (isinstance(name, str) and regex.match(name)):
            continue
        tokens = cost(tool)
        if max_tokens is not None and used + tokens > max_tokens:
            continue
        chosen.append(tool)
        used += tokens
    return chosen, used


def tool_result(value: Any) -> JSONObject:
    """A ``CallToolResult`` carrying ``value`` as JSON text and as structured content.

    Structured content must be an object (MCP 2025-06-18, server/tools), so a
    list travels as ``{"result": [...]}`` as the Python SDK wraps it.
    """
    structured = value if isinstance(value, dict) else {"result": value}
    return {
        "content": [{"type": "text", "text": encode(value).decode("utf-8")}],
        "structuredContent": structured,
        "isError": False,
    }
