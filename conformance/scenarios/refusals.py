"""Errors, denials and the identity fallback: every way the gateway says no."""

from __future__ import annotations

from conformance.clients import Raw
from conformance.scenarios.base import RAW, RULES, SDK, scenario

# -- errors ----------------------------------------------------------------------------


@scenario("error_tool_not_found", "execute_tool of a tool the server does not have: TOOL_NOT_FOUND -32002")
async def _(raw: Raw) -> None:
    await raw.init()
    await raw.call("execute_tool", agent_id="dev", server="raw", tool="nope")


@scenario("error_server_not_configured", "a server the rules allow but nobody configured: SERVER_UNAVAILABLE -32001")
async def _(raw: Raw) -> None:
    await raw.init()
    await raw.call("get_server_tools", agent_id="dev", server="ghost")
    await raw.call("execute_tool", agent_id="dev", server="ghost", tool="echo")


@scenario("error_invalid_params", "gateway tools with missing or mistyped arguments, an unknown tool name, bad arguments: -32602")
async def _(raw: Raw) -> None:
    await raw.init()
    await raw.call("get_server_tools", agent_id="dev")
    await raw.call("execute_tool", agent_id="dev", server="raw")
    await raw.call("execute_tool", agent_id="dev", server="raw", tool="echo", args="text")
    await raw.call("execute_tool", agent_id="dev", server="raw", tool="echo", timeout_ms=0)
    await raw.call("get_server_tools", agent_id="dev", server="raw", max_schema_tokens=-1)
    await raw.call("list_servers", agent_id="dev", include_metadata="yes")
    await raw.call("search_tools", agent_id="dev")
    await raw.request("tools/call", {"arguments": {}})
    await raw.request("tools/call", {"name": "list_servers", "arguments": [1]})


@scenario("error_invalid_agent_id", "agent ids that are not valid: INVALID_AGENT_ID -32003")
async def _(raw: Raw) -> None:
    await raw.init()
    await raw.call("list_servers", agent_id="bad id")
    await raw.call("execute_tool", agent_id="x" * 129, server="raw", tool="echo")
    await raw.call("list_servers", agent_id=7)


@scenario("error_timeout", "a call that hangs past its timeout_ms: TIMEOUT -32004, the server gets notifications/cancelled")
async def _(raw: Raw) -> None:
    await raw.init()
    await raw.call("execute_tool", agent_id="dev", server="raw", tool="hang", timeout_ms=300)
    await raw.call("execute_tool", agent_id="dev", server="raw", tool="echo", args={"text": "still here"})


@scenario("error_server_timeout_ms", "a server's timeout_ms applies when the call gives none", servers={"raw": {**RAW, "timeout_ms": 250}})
async def _(raw: Raw) -> None:
    await raw.init()
    await raw.call("execute_tool", agent_id="dev", server="raw", tool="hang")


# One call each: the gateway restarts a failed server on its own right away, so
# what a second call finds depends on whether that restart has failed yet.
@scenario("error_command_not_found", "a server whose command does not exist: SERVER_UNAVAILABLE with the reason",
          servers={"raw": RAW, "missing": {"command": "no-such-mcp-server", "description": "Not installed."}})
async def _(raw: Raw) -> None:
    await raw.init()
    await raw.call("execute_tool", agent_id="dev", server="missing", tool="anything")


@scenario("error_exit_at_start", "a server that exits at start: SERVER_UNAVAILABLE (exited with code 3)",
          servers={"raw": {**RAW, "args": ["servers/raw_server.py", "--exit-at-start", "3"]}})
async def _(raw: Raw) -> None:
    await raw.init()
    await raw.call("get_server_tools", agent_id="dev", server="raw")


@scenario("error_backoff", "a server that keeps failing: the third call is refused during the backoff wait",
          servers={"raw": {**RAW, "args": ["servers/raw_server.py", "--exit-at-start", "3"]}})
async def _(raw: Raw) -> None:
    await raw.init()
    for _ in range(3):
        await raw.call("get_server_tools", agent_id="dev", server="raw")


@scenario("error_no_fallback", "no agent_id, no GATEWAY_DEFAULT_AGENT and no default agent: NO_FALLBACK_CONFIGURED -32006",
          rules={"agents": {"dev": {"allow": {"servers": ["*"]}}}, "defaults": {"deny_on_missing_agent": False}})
async def _(raw: Raw) -> None:
    await raw.init()
    await raw.call("list_servers")
    await raw.call("execute_tool", server="raw", tool="echo", args={"text": "hi"})


@scenario("error_fallback_not_in_rules", "GATEWAY_DEFAULT_AGENT names an agent the rules lack: FALLBACK_AGENT_NOT_IN_RULES -32007",
          env={"GATEWAY_DEFAULT_AGENT": "ghost"})
async def _(raw: Raw) -> None:
    await raw.init()
    await raw.call("list_servers")
    await raw.call("list_servers", agent_id="dev")


# -- denials ---------------------------------------------------------------------------


@scenario("deny_explicit_tool", "a tool both allowed and denied by name: the explicit deny decides")
async def _(raw: Raw) -> None:
    await raw.init()
    await raw.call("execute_tool", agent_id="ops", server="raw", tool="delete_user", args={"id": "1"})
    await raw.call("execute_tool", agent_id="ops", server="raw", tool="echo", args={"text": "allowed"})


@scenario("deny_wildcard_tool", "a tool denied by a pattern (drop_*), and hidden from get_server_tools")
async def _(raw: Raw) -> None:
    await raw.init()
    await raw.call("execute_tool", agent_id="dev", server="raw", tool="drop_table", args={"table": "t"})
    await raw.call("get_server_tools", agent_id="dev", server="raw", names="drop_table")


@scenario("deny_default", "a tool no rule allows: denied by default (no rule allows it)")
async def _(raw: Raw) -> None:
    await raw.init()
    await raw.call("execute_tool", agent_id="reader", server="raw", tool="add", args={"a": 1, "b": 1})
    await raw.call("execute_tool", agent_id="reader", server="raw", tool="get_user", args={"id": "1"})


@scenario("deny_server_explicit", "a server denied by name: every call on it and get_server_tools", servers={"raw": RAW, "sdk": SDK})
async def _(raw: Raw) -> None:
    await raw.init()
    await raw.call("get_server_tools", agent_id="blocked", server="raw")
    await raw.call("execute_tool", agent_id="blocked", server="raw", tool="echo", args={"text": "x"})


@scenario("deny_server_wildcard", "a server denied by a pattern (r*), another allowed by name", servers={"raw": RAW, "sdk": SDK})
async def _(raw: Raw) -> None:
    await raw.init()
    await raw.call("execute_tool", agent_id="narrow", server="raw", tool="echo", args={"text": "x"})
    await raw.call("execute_tool", agent_id="narrow", server="sdk", tool="echo", args={"text": "y"})


@scenario("deny_unknown_agent", "an agent_id the rules do not define is denied, never treated as the default")
async def _(raw: Raw) -> None:
    await raw.init()
    await raw.call("list_servers", agent_id="stranger")
    await raw.call("execute_tool", agent_id="stranger", server="raw", tool="echo", args={"text": "x"})


# -- identity fallback -----------------------------------------------------------------


@scenario("identity_missing_agent_denied", "no agent_id with deny_on_missing_agent true: DENIED_BY_POLICY",
          rules={**RULES, "defaults": {"deny_on_missing_agent": True}})
async def _(raw: Raw) -> None:
    await raw.init()
    await raw.call("list_servers")
    await raw.call("execute_tool", server="raw", tool="echo", args={"text": "x"})


@scenario("identity_default_agent_rules", "no agent_id, deny_on_missing_agent false: the rules' default agent")
async def _(raw: Raw) -> None:
    await raw.init()
    await raw.call("list_servers")
    await raw.call("execute_tool", server="raw", tool="echo", args={"text": "as default"})
    await raw.call("execute_tool", server="raw", tool="add", args={"a": 1, "b": 2})


@scenario("identity_default_agent_env", "no agent_id with GATEWAY_DEFAULT_AGENT=reader: acts as reader", env={"GATEWAY_DEFAULT_AGENT": "reader"})
async def _(raw: Raw) -> None:
    await raw.init()
    await raw.call("execute_tool", server="raw", tool="get_user", args={"id": "7"})
    await raw.call("execute_tool", server="raw", tool="add", args={"a": 1, "b": 2})
