"""The conformance scenarios: what each recorded session does, and against which servers.

Each scenario names its servers (entries of a ``.mcp.json``, with commands
relative to the recording folder, see ``record.py``), its rules and
``GATEWAY_*`` settings, and a client script: a raw JSON-lines client
(:class:`~conformance.clients.Raw`) or the MCP SDK ``Client``. Add one with
``@scenario(name, about, ...)``; ``make conformance-record`` records it.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conformance.clients import INIT, Raw, call_params

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TRANSCRIPTS = HERE / "transcripts"

JSON = dict[str, Any]

RAW: JSON = {"command": "python", "args": ["servers/raw_server.py"], "description": "A plain JSON-lines server that misbehaves on request."}
SDK: JSON = {"command": "python", "args": ["servers/sdk_server.py"], "description": "An SDK MCPServer: echo, slow, big."}
TIME: JSON = {"command": "mcp-server-time", "args": ["--local-timezone", "UTC"], "description": "Time and time zones (PyPI mcp-server-time)."}
GIT: JSON = {"command": "mcp-server-git", "args": ["--repository", "repo"], "description": "A git repository (PyPI mcp-server-git)."}
NOTES: JSON = {"command": "python", "args": ["examples/notes_server.py"], "description": "An in-memory note store."}
UTILS: JSON = {"command": "python", "args": ["examples/utils_server.py"], "description": "Small utilities."}


def fixture(name: str) -> JSON:
    return {"command": "python", "args": ["fake_server.py", "--wire", f"fixtures/{name}"], "description": f"Answers from {name}."}


RULES: JSON = {
    "agents": {
        # allow everything but drop_* on raw: a wildcard tool deny
        "dev": {"allow": {"servers": ["*"]}, "deny": {"tools": {"raw": ["drop_*"]}}},
        # delete_user is both allowed and denied by name: the explicit deny wins
        "ops": {"allow": {"servers": ["raw"], "tools": {"raw": ["echo", "delete_user"]}}, "deny": {"tools": {"raw": ["delete_user"]}}},
        # only get_* and echo: anything else is denied by default
        "reader": {"allow": {"servers": ["raw"], "tools": {"raw": ["get_*", "echo"]}}},
        # every server but raw, by name
        "blocked": {"allow": {"servers": ["*"]}, "deny": {"servers": ["raw"]}},
        # sdk by name, any server starting with r denied by pattern
        "narrow": {"allow": {"servers": ["sdk"]}, "deny": {"servers": ["r*"]}},
        "default": {"allow": {"servers": ["raw"], "tools": {"raw": ["echo"]}}},
    },
    "defaults": {"deny_on_missing_agent": False},
}


RawScript = Callable[[Raw], Awaitable[None]]
SdkScript = Callable[[Any], Awaitable[None]]


@dataclass
class Scenario:
    name: str
    about: str
    raw: RawScript | None = None
    sdk: SdkScript | None = None
    sdk_mode: str = "legacy"
    servers: JSON = field(default_factory=lambda: {"raw": RAW})
    rules: JSON = field(default_factory=lambda: RULES)
    env: dict[str, str] = field(default_factory=dict)
    #: ``stdio``, or ``http``: ``lockgate serve --transport http`` and the SDK ``Client`` on its URL.
    transport: str = "stdio"
    #: Over HTTP, clients at once: more than one gives the script a list of
    #: clients and the corpus ``NAME_1`` … ``NAME_N``, one transcript per session.
    sessions: int = 1


SCENARIOS: list[Scenario] = []


def scenario(name: str, about: str, **options: Any) -> Callable[[Any], Any]:
    def register(script: Any) -> Any:
        kind = "sdk" if options.pop("sdk", False) else "raw"
        SCENARIOS.append(Scenario(name=name, about=about, **{kind: script}, **options))
        return script

    return register


# -- handshake and version negotiation -------------------------------------------------


@scenario("handshake_sdk_legacy", "SDK Client (mode legacy): initialize, tools/list, ping", sdk=True)
async def _(client: Any) -> None:
    await client.list_tools()
    await client.send_ping()


@scenario("handshake_sdk_auto", "SDK Client (mode auto): server/discover gets -32601, the client falls back to initialize", sdk=True, sdk_mode="auto")
async def _(client: Any) -> None:
    await client.list_tools()


def _version(version: str) -> RawScript:
    async def script(raw: Raw) -> None:
        await raw.init(version)
        await raw.request("tools/list")

    return script


for _v in ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"):
    scenario(f"handshake_version_{_v.replace('-', '_')}", f"initialize asking for {_v}: the gateway agrees")(_version(_v))
scenario("handshake_version_unknown", "initialize asking for 2099-01-01: the gateway offers 2025-11-25")(_version("2099-01-01"))
scenario("handshake_version_modern", "initialize asking for 2026-07-28 (stateless era): the gateway offers 2025-11-25")(_version("2026-07-28"))


@scenario("handshake_errors", "requests before initialize (-32600), initialize without a version (-32602), a second initialize (-32600)")
async def _(raw: Raw) -> None:
    await raw.request("tools/list")
    await raw.request("ping")
    await raw.request("initialize", {"capabilities": {}})
    await raw.init()
    await raw.request("initialize", INIT)


@scenario("methods_ping_logging_unknown", "ping, logging/setLevel (valid and invalid), unknown methods, server/discover after initialize")
async def _(raw: Raw) -> None:
    await raw.init()
    await raw.request("ping")
    await raw.request("logging/setLevel", {"level": "debug"})
    await raw.request("logging/setLevel", {"level": "loud"})
    await raw.request("resources/list")
    await raw.request("server/discover")
    await raw.notify("notifications/unknown")
    await raw.request("ping")


# -- list, get, execute ----------------------------------------------------------------


@scenario("list_servers", "list_servers for several agents, and with include_metadata", servers={"raw": RAW, "sdk": SDK})
async def _(raw: Raw) -> None:
    await raw.init()
    for agent in ("dev", "blocked", "narrow"):
        await raw.call("list_servers", agent_id=agent)
    await raw.call("list_servers", agent_id="dev", include_metadata=True)


@scenario("get_server_tools_all", "get_server_tools without filters; the policy hides drop_table")
async def _(raw: Raw) -> None:
    await raw.init()
    await raw.call("get_server_tools", agent_id="dev", server="raw")
    await raw.call("get_server_tools", agent_id="reader", server="raw")


@scenario("get_server_tools_names", "get_server_tools with names as a string and as an array, including unknown and denied names")
async def _(raw: Raw) -> None:
    await raw.init()
    await raw.call("get_server_tools", agent_id="dev", server="raw", names="echo,add")
    await raw.call("get_server_tools", agent_id="dev", server="raw", names=["slow", "nope", "drop_table"])


@scenario("get_server_tools_pattern", "get_server_tools with a glob pattern, alone and with names")
async def _(raw: Raw) -> None:
    await raw.init()
    await raw.call("get_server_tools", agent_id="dev", server="raw", pattern="*_user")
    await raw.call("get_server_tools", agent_id="dev", server="raw", pattern="[eg]*", names="echo,get_user,add")


@scenario("get_server_tools_budget", "get_server_tools with max_schema_tokens: 0, small, and enough for all")
async def _(raw: Raw) -> None:
    await raw.init()
    for budget in (0, 60, 100000):
        await raw.call("get_server_tools", agent_id="dev", server="raw", max_schema_tokens=budget)


@scenario("execute_sdk_client", "SDK Client: list_servers, get_server_tools and execute_tool on the SDK server", sdk=True, servers={"sdk": SDK})
async def _(client: Any) -> None:
    await client.call_tool("list_servers", {"agent_id": "dev"})
    await client.call_tool("get_server_tools", {"agent_id": "dev", "server": "sdk", "names": "echo"})
    await client.call_tool("execute_tool", {"agent_id": "dev", "server": "sdk", "tool": "echo", "args": {"text": "hello"}})


@scenario("execute_results", "execute_tool: a result, an isError result, a downstream JSON-RPC error, a 0-byte result")
async def _(raw: Raw) -> None:
    await raw.init()
    await raw.call("execute_tool", agent_id="dev", server="raw", tool="add", args={"a": 2, "b": 3})
    await raw.call("execute_tool", agent_id="dev", server="raw", tool="fail", args={"message": "no luck"})
    await raw.call("execute_tool", agent_id="dev", server="raw", tool="rpc_error")
    await raw.call("execute_tool", agent_id="dev", server="raw", tool="big", args={"size": 0})


@scenario("execute_examples", "SDK Client against the bundled examples: researcher, writer and default agents", sdk=True,
          servers={"notes": NOTES, "utils": UTILS}, rules=json.loads((ROOT / "examples" / ".mcp-gateway-rules.json").read_text()))
async def _(client: Any) -> None:
    from mcp import MCPError

    await client.call_tool("list_servers", {"agent_id": "researcher"})
    await client.call_tool("get_server_tools", {"agent_id": "writer", "server": "notes"})
    await client.call_tool("execute_tool", {"agent_id": "writer", "server": "notes", "tool": "add_note", "args": {"title": "t", "body": "b"}})
    await client.call_tool("execute_tool", {"agent_id": "researcher", "server": "notes", "tool": "list_notes", "args": {}})
    await client.call_tool("execute_tool", {"server": "utils", "tool": "word_count", "args": {"text": "one two three"}})
    for denied in ({"agent_id": "writer", "server": "notes", "tool": "delete_note", "args": {"note_id": 1}},
                   {"agent_id": "researcher", "server": "notes", "tool": "add_note", "args": {}}):
        try:
            await client.call_tool("execute_tool", denied)
        except MCPError:
            pass


@scenario("server_time", "the PyPI mcp-server-time behind the gateway: its tools and a conversion", servers={"time": TIME})
async def _(raw: Raw) -> None:
    await raw.init()
    await raw.call("get_server_tools", agent_id="dev", server="time")
    await raw.call("execute_tool", agent_id="dev", server="time", tool="convert_time",
                   args={"source_timezone": "UTC", "time": "12:00", "target_timezone": "UTC"})


@scenario("server_git", "the PyPI mcp-server-git behind the gateway: status and log of a fixed repository", servers={"git": GIT})
async def _(raw: Raw) -> None:
    await raw.init()
    await raw.call("get_server_tools", agent_id="dev", server="git", names="git_status,git_log")
    await raw.call("execute_tool", agent_id="dev", server="git", tool="git_status", args={"repo_path": "repo"})
    await raw.call("execute_tool", agent_id="dev", server="git", tool="git_log", args={"repo_path": "repo", "max_count": 1})


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


# -- downstream lifecycle --------------------------------------------------------------


@scenario("crash_and_restart", "a server that dies mid-call: the call fails at once, the next call restarts it")
async def _(raw: Raw) -> None:
    await raw.init()
    await raw.call("execute_tool", agent_id="dev", server="raw", tool="crash")
    await raw.call("execute_tool", agent_id="dev", server="raw", tool="echo", args={"text": "back"})


@scenario("garbage_output", "a server that writes lines that are not JSON-RPC: ignored",
          servers={"raw": {**RAW, "args": ["servers/raw_server.py", "--garbage-at-start"]}})
async def _(raw: Raw) -> None:
    await raw.init()
    await raw.call("execute_tool", agent_id="dev", server="raw", tool="garbage")


@scenario("paged_tools_list", "a server that pages tools/list 4 at a time: the gateway fetches every page",
          servers={"raw": {**RAW, "args": ["servers/raw_server.py", "--page-size", "4"]}})
async def _(raw: Raw) -> None:
    await raw.init()
    await raw.call("get_server_tools", agent_id="dev", server="raw", pattern="*e*")


@scenario("list_changed", "a server announces notifications/tools/list_changed: the gateway lists again")
async def _(raw: Raw) -> None:
    await raw.init()
    await raw.call("execute_tool", agent_id="dev", server="raw", tool="grow")
    await raw.call("execute_tool", agent_id="dev", server="raw", tool="echo", args={"text": "after"})
    await raw.call("get_server_tools", agent_id="dev", server="raw", names="grown")


@scenario("server_talks_back", "a server sends a log notification, a ping and a sampling request: pong, -32601, a log line")
async def _(raw: Raw) -> None:
    await raw.init()
    await raw.call("execute_tool", agent_id="dev", server="raw", tool="log")
    await raw.call("execute_tool", agent_id="dev", server="raw", tool="talk_back")
    await raw.call("execute_tool", agent_id="dev", server="raw", tool="echo", args={"text": "after"})


@scenario("eager_start", "GATEWAY_INIT_STRATEGY=eager: servers start before the first call", env={"GATEWAY_INIT_STRATEGY": "eager"},
          servers={"raw": RAW, "sdk": SDK})
async def _(raw: Raw) -> None:
    await raw.init()
    await raw.call("execute_tool", agent_id="dev", server="sdk", tool="echo", args={"text": "warm"})


@scenario("debug_status", "--debug: the fourth gateway tool get_gateway_status", env={"GATEWAY_DEBUG": "1"})
async def _(raw: Raw) -> None:
    await raw.init()
    await raw.request("tools/list")
    await raw.call("execute_tool", agent_id="dev", server="raw", tool="echo", args={"text": "x"})
    await raw.call("get_gateway_status", agent_id="dev")


# -- progress, cancellation, concurrency, size -----------------------------------------


@scenario("progress_raw", "progress notifications relayed under the client's token (string and integer tokens)")
async def _(raw: Raw) -> None:
    await raw.init()
    await raw.request("tools/call", call_params("execute_tool", {"progressToken": "p-1"}, agent_id="dev", server="raw", tool="slow", args={"steps": 3}))
    await raw.request("tools/call", call_params("execute_tool", {"progressToken": 99}, agent_id="dev", server="raw", tool="slow", args={"steps": 2}))
    await raw.call("execute_tool", agent_id="dev", server="raw", tool="slow", args={"steps": 2})


@scenario("progress_sdk", "SDK Client with a progress callback, SDK server reporting progress", sdk=True, servers={"sdk": SDK})
async def _(client: Any) -> None:
    seen: list[float] = []

    async def progress(value: float, total: float | None, message: str | None) -> None:
        seen.append(value)

    await client.call_tool("execute_tool", {"agent_id": "dev", "server": "sdk", "tool": "slow", "args": {"steps": 3}}, progress_callback=progress)


@scenario("cancellation", "the client cancels a call in flight: the server gets notifications/cancelled, the client no answer")
async def _(raw: Raw) -> None:
    await raw.init()
    await raw.send({"jsonrpc": "2.0", "id": 50, "method": "tools/call",
                    "params": call_params("execute_tool", {"progressToken": "c"}, agent_id="dev", server="raw", tool="hang")})
    await raw.wait(lambda m: isinstance(m, dict) and m.get("method") == "notifications/progress")
    await raw.notify("notifications/cancelled", {"requestId": 50, "reason": "the user gave up"})
    await raw.notify("notifications/cancelled", {"requestId": 404})
    await raw.call("execute_tool", agent_id="dev", server="raw", tool="echo", args={"text": "after the cancel"})


@scenario("client_goes_away", "stdin closes with a call in flight: the call is abandoned and the server told")
async def _(raw: Raw) -> None:
    await raw.init()
    await raw.send({"jsonrpc": "2.0", "id": 60, "method": "tools/call",
                    "params": call_params("execute_tool", {"progressToken": "g"}, agent_id="dev", server="raw", tool="hang")})
    await raw.wait(lambda m: isinstance(m, dict) and m.get("method") == "notifications/progress")


@scenario("concurrent_requests", "several calls in flight at once on one session, answered by id; a duplicate id is refused",
          servers={"raw": RAW, "sdk": SDK})
async def _(raw: Raw) -> None:
    await raw.init()
    await raw.call("execute_tool", agent_id="dev", server="raw", tool="echo", args={"text": "warm"})
    await raw.call("execute_tool", agent_id="dev", server="sdk", tool="echo", args={"text": "warm"})
    await raw.send({"jsonrpc": "2.0", "id": 70, "method": "tools/call", "params": call_params("execute_tool", agent_id="dev", server="raw", tool="hang", timeout_ms=400)})
    await raw.send({"jsonrpc": "2.0", "id": 70, "method": "tools/call", "params": call_params("list_servers", agent_id="dev")})
    ids = list(range(71, 77))
    for i in ids:
        server = "raw" if i % 2 else "sdk"
        await raw.send({"jsonrpc": "2.0", "id": i, "method": "tools/call", "params": call_params("execute_tool", agent_id="dev", server=server, tool="echo", args={"text": f"n{i}"})})
    for i in [70, *ids]:
        await raw.response(i)


@scenario("large_payloads", "a 70 KB result and a 40 KB argument through the gateway, unchanged", servers={"sdk": SDK, "raw": RAW})
async def _(raw: Raw) -> None:
    await raw.init()
    await raw.call("execute_tool", agent_id="dev", server="raw", tool="big", args={"size": 70_000})
    await raw.call("execute_tool", agent_id="dev", server="sdk", tool="echo", args={"text": "y" * 40_000})


# -- malformed input -------------------------------------------------------------------


@scenario("malformed_json", "lines that are not JSON (-32700), not UTF-8, blank lines and CRLF; the session continues")
async def _(raw: Raw) -> None:
    await raw.init()
    await raw.send_bad(b"{not json")
    await raw.send_bad(b"\xff\xfe\x00garbage")
    await raw.send(b"   ")
    await raw.send(b'{"jsonrpc":"2.0","id":"crlf","method":"ping"}\r')
    await raw.response("crlf")
    await raw.request("ping")


@scenario("malformed_jsonrpc", "valid JSON that is not a valid JSON-RPC request: -32600 each, responses from the client ignored")
async def _(raw: Raw) -> None:
    await raw.init()
    for bad in ([{"jsonrpc": "2.0", "id": 1, "method": "ping"}], "text", 42, {"jsonrpc": "1.0", "id": 2, "method": "ping"},
                {"jsonrpc": "2.0", "id": 3, "method": 7}, {"jsonrpc": "2.0", "id": {"x": 1}, "method": "ping"},
                {"jsonrpc": "2.0", "id": 4, "method": "ping", "params": [1]}, {"jsonrpc": "2.0", "id": 5}):
        await raw.send_bad(json.dumps(bad).encode())
    await raw.send({"jsonrpc": "2.0", "id": 99, "result": {}})
    await raw.request("ping")


@scenario("malformed_oversized", "a line over GATEWAY_MAX_MESSAGE_BYTES: -32600 with the limit, then the session continues",
          env={"GATEWAY_MAX_MESSAGE_BYTES": "4096"})
async def _(raw: Raw) -> None:
    await raw.init()
    await raw.send(json.dumps({"jsonrpc": "2.0", "id": 5, "method": "ping", "params": {"pad": "z" * 5000}}).encode())
    await raw.wait(lambda m: isinstance(m, dict) and m.get("id") is None and "error" in m)
    await raw.request("ping")


# -- the shared fixtures ---------------------------------------------------------------


@scenario("fixture_legacy_basic", "a downstream answering from stdio_legacy_basic.jsonl: add, and slow with progress",
          servers={"spec": fixture("stdio_legacy_basic.jsonl")})
async def _(raw: Raw) -> None:
    await raw.init()
    await raw.call("get_server_tools", agent_id="dev", server="spec")
    await raw.call("execute_tool", agent_id="dev", server="spec", tool="add", args={"a": 1, "b": 2})
    await raw.request("tools/call", call_params("execute_tool", {"progressToken": 4}, agent_id="dev", server="spec", tool="slow", args={"steps": 2}))


@scenario("fixture_legacy_elicit", "a downstream from stdio_legacy_elicit.jsonl asks for elicitation mid-call: the gateway answers -32601",
          servers={"elicit": fixture("stdio_legacy_elicit.jsonl")})
async def _(raw: Raw) -> None:
    await raw.init()
    await raw.call("execute_tool", agent_id="dev", server="elicit", tool="greet")


def _client_side(name: str) -> RawScript:
    async def script(raw: Raw) -> None:
        for line in (HERE / "fixtures" / name).read_text().splitlines():
            item = json.loads(line)
            if item["dir"] != "c2s" or "result" in item["msg"]:
                continue
            await raw.send(item["msg"])
            if "id" in item["msg"]:
                await raw.response(item["msg"]["id"])

    return script


scenario("fixture_inspector_client", "the MCP Inspector CLI 2.12.0's handshake and tools/list (from the fixture) sent to the gateway")(
    _client_side("stdio_inspector_cli_2.12.0_handshake.jsonl"))
scenario("fixture_modern_client", "a 2026-07-28 client (stdio_modern_basic.jsonl) without initialize: -32601 and -32600")(
    _client_side("stdio_modern_basic.jsonl"))


# -- Streamable HTTP ---------------------------------------------------------------------
# The SDK Client over HTTP (mode legacy): one core and one wire transcript per
# HTTP session. Only what reaches the core is in them: a request that the
# HTTP layer refuses (a malformed body, a missing session) never does.


@scenario("http_list_get_execute", "over HTTP: SDK Client lists tools, list_servers, get_server_tools, execute_tool on two servers",
          sdk=True, transport="http", servers={"raw": RAW, "sdk": SDK})
async def _(client: Any) -> None:
    await client.list_tools()
    await client.call_tool("list_servers", {"agent_id": "dev"})
    await client.call_tool("get_server_tools", {"agent_id": "dev", "server": "raw", "names": ["echo", "add"]})
    await client.call_tool("execute_tool", {"agent_id": "dev", "server": "sdk", "tool": "echo", "args": {"text": "over http"}})
    await client.call_tool("execute_tool", {"agent_id": "dev", "server": "raw", "tool": "add", "args": {"a": 2, "b": 3}})


@scenario("http_denied", "over HTTP: a wildcard tool deny, a default deny, an unknown agent (-32000 each); the session goes on",
          sdk=True, transport="http")
async def _(client: Any) -> None:
    from mcp import MCPError

    for arguments in ({"agent_id": "dev", "server": "raw", "tool": "drop_table", "args": {"table": "t"}},
                      {"agent_id": "reader", "server": "raw", "tool": "add", "args": {"a": 1, "b": 1}},
                      {"agent_id": "stranger", "server": "raw", "tool": "echo", "args": {"text": "hi"}}):
        try:
            await client.call_tool("execute_tool", arguments)
        except MCPError:
            pass
    await client.call_tool("execute_tool", {"agent_id": "reader", "server": "raw", "tool": "echo", "args": {"text": "allowed"}})


@scenario("http_progress", "over HTTP: a call with a progress token is answered over SSE, its progress before its response",
          sdk=True, transport="http", servers={"sdk": SDK})
async def _(client: Any) -> None:
    async def progress(value: float, total: float | None, message: str | None) -> None:
        pass

    await client.call_tool("execute_tool", {"agent_id": "dev", "server": "sdk", "tool": "slow", "args": {"steps": 3}}, progress_callback=progress)
    await client.call_tool("execute_tool", {"agent_id": "dev", "server": "sdk", "tool": "echo", "args": {"text": "after"}})


@scenario("http_sessions", "over HTTP: two SDK Clients at once on one gateway, sharing the raw server; one transcript per session",
          sdk=True, transport="http", sessions=2, servers={"raw": RAW, "sdk": SDK})
async def _(clients: Any) -> None:
    import trio

    async def progress(value: float, total: float | None, message: str | None) -> None:
        pass

    async def session(client: Any, server: str, lister: str) -> None:
        await client.call_tool("execute_tool", {"agent_id": "dev", "server": server, "tool": "echo", "args": {"text": server}})
        await client.call_tool("execute_tool", {"agent_id": "dev", "server": "raw", "tool": "slow", "args": {"steps": 2}},
                               progress_callback=progress)
        await client.call_tool("get_server_tools", {"agent_id": lister, "server": "raw", "names": "echo,drop_table"})

    async with trio.open_nursery() as both:
        both.start_soon(session, clients[0], "sdk", "dev")
        both.start_soon(session, clients[1], "raw", "reader")


# -- the MCP Inspector CLI ---------------------------------------------------------------

INSPECTOR: list[tuple[str, str, list[str]]] = [
    ("inspector_tools_list", "the MCP Inspector CLI 2.12.0: initialize, logging/setLevel, tools/list", ["--method", "tools/list"]),
    ("inspector_execute_tool", "the MCP Inspector CLI 2.12.0 calls execute_tool (echo)",
     ["--method", "tools/call", "--tool-name", "execute_tool", "--tool-arg", "agent_id=dev", "server=raw", "tool=echo", 'args={"text":"hi"}']),
    ("inspector_denied", "the MCP Inspector CLI 2.12.0 calls a denied tool and gets DENIED_BY_POLICY",
     ["--method", "tools/call", "--tool-name", "execute_tool", "--tool-arg", "agent_id=dev", "server=raw", "tool=drop_table", 'args={"table":"t"}']),
]
"""Scenarios driven by the real Inspector CLI (it needs Node 22: ``make conformance-record`` installs both)."""


# -- concurrent sessions (two clients of one gateway, in process) -----------------------

SESSIONS = "concurrent_sessions"
"""Two clients of one gateway, sharing the raw server: recorded in process (stdio has one client).

They give two transcripts: ``concurrent_sessions_1`` (the run until the first
client leaves) and ``concurrent_sessions_2`` (the whole run). Their wire
sides are each client's own traffic.
"""
