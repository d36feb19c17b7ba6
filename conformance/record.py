"""Record the conformance corpus: ``make conformance-record`` (or ``python conformance/record.py``).

Each scenario below starts a real ``lockgate serve --record`` over stdio in a
scratch folder, drives it with a real client (the MCP SDK ``Client``, or a
raw JSON-lines client for what the SDK never sends), and keeps the session's
core and wire transcripts as ``transcripts/<scenario>.core.jsonl`` and
``transcripts/<scenario>.wire.jsonl``. The downstreams are real too: the
SDK server and the raw misbehaving server in ``servers/``, the bundled
examples, the PyPI ``mcp-server-time`` and ``mcp-server-git``, and
``fake_server.py`` answering from the recorded sessions in ``fixtures/``.

Server commands and paths are relative to the scratch folder (``python``
from ``PATH``, ``servers/…``), so transcripts do not depend on where the
checkout lives. The scratch folder holds: ``servers`` and ``examples``
(links to this checkout), ``fixtures``, ``fake_server.py`` and ``repo`` (a
small git repository with fixed dates, for ``mcp-server-git``).

    python conformance/record.py                 # every scenario
    python conformance/record.py crash timeout   # only these (names or prefixes)
    python conformance/record.py --list
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

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

INIT = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "conformance", "version": "1"}}


def call_params(name: str, meta: JSON | None = None, /, **arguments: Any) -> JSON:
    params: JSON = {"name": name, "arguments": arguments}
    if meta is not None:
        params["_meta"] = meta
    return params


class Raw:
    """A JSON-lines client on the gateway's stdin/stdout that waits for what it asks."""

    def __init__(self, process: trio.Process) -> None:
        assert process.stdin is not None and process.stdout is not None
        self._stdin = process.stdin
        self._stdout = process.stdout
        self.received: list[Any] = []
        self._changed = trio.Event()
        self._next_id = 1

    async def reader(self) -> None:
        buffer = b""
        async for chunk in self._stdout:
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                self.received.append(json.loads(line))
            self._changed.set()
            self._changed = trio.Event()

    async def send(self, message: JSON | bytes) -> None:
        data = message if isinstance(message, bytes) else json.dumps(message, separators=(",", ":")).encode()
        await self._stdin.send_all(data + b"\n")

    async def wait(self, predicate: Callable[[Any], bool]) -> Any:
        with trio.fail_after(30):
            while True:
                for message in self.received:
                    if predicate(message):
                        return message
                await self._changed.wait()

    async def response(self, request_id: Any) -> JSON:
        found: JSON = await self.wait(lambda m: isinstance(m, dict) and "method" not in m and m.get("id") == request_id)
        return found

    def new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    async def request(self, method: str, params: JSON | None = None, *, id: Any = None) -> JSON:
        request_id = self.new_id() if id is None else id
        message: JSON = {"jsonrpc": "2.0", "id": request_id, "method": method}
        if params is not None:
            message["params"] = params
        await self.send(message)
        return await self.response(request_id)

    async def notify(self, method: str, params: JSON | None = None) -> None:
        message: JSON = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            message["params"] = params
        await self.send(message)

    async def send_bad(self, data: bytes) -> None:
        """Send a line that gets an error with a null or unknown id; wait for that error."""
        count = sum(1 for m in self.received if isinstance(m, dict) and "error" in m)
        await self.send(data)
        await self.wait(lambda _: sum(1 for m in self.received if isinstance(m, dict) and "error" in m) > count)

    async def init(self, version: str = "2025-11-25") -> JSON:
        answer = await self.request("initialize", {**INIT, "protocolVersion": version}, id=1)
        await self.notify("notifications/initialized")
        return answer

    async def call(self, name: str, /, **arguments: Any) -> JSON:
        return await self.request("tools/call", call_params(name, **arguments))


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


@scenario("error_command_not_found", "a server whose command does not exist: SERVER_UNAVAILABLE with the reason, each time",
          servers={"raw": RAW, "missing": {"command": "no-such-mcp-server", "description": "Not installed."}})
async def _(raw: Raw) -> None:
    await raw.init()
    await raw.call("execute_tool", agent_id="dev", server="missing", tool="anything")
    await raw.call("get_server_tools", agent_id="dev", server="missing")


@scenario("error_exit_at_start", "a server that exits at start: SERVER_UNAVAILABLE (exited with code 3), restarted on next use",
          servers={"raw": {**RAW, "args": ["servers/raw_server.py", "--exit-at-start", "3"]}})
async def _(raw: Raw) -> None:
    await raw.init()
    await raw.call("get_server_tools", agent_id="dev", server="raw")
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


# -- the MCP Inspector CLI ---------------------------------------------------------------

INSPECTOR: list[tuple[str, str, list[str]]] = [
    ("inspector_tools_list", "the MCP Inspector CLI 2.12.0: initialize, logging/setLevel, tools/list", ["--method", "tools/list"]),
    ("inspector_execute_tool", "the MCP Inspector CLI 2.12.0 calls execute_tool (echo)",
     ["--method", "tools/call", "--tool-name", "execute_tool", "--tool-arg", "agent_id=dev", "server=raw", "tool=echo", 'args={"text":"hi"}']),
    ("inspector_denied", "the MCP Inspector CLI 2.12.0 calls a denied tool and gets DENIED_BY_POLICY",
     ["--method", "tools/call", "--tool-name", "execute_tool", "--tool-arg", "agent_id=dev", "server=raw", "tool=drop_table", 'args={"table":"t"}']),
]
"""Scenarios driven by the real Inspector CLI (it needs Node 22: ``make conformance-record`` installs both)."""


def _inspector() -> list[str] | None:
    """The command that runs ``mcp-inspector``, in a network namespace of its own when possible; ``None`` without Node 22."""
    import shutil

    found = shutil.which("mcp-inspector")
    node = shutil.which("node")
    if found is None or node is None:
        return None
    version = subprocess.run([node, "--version"], capture_output=True, text=True).stdout.strip().lstrip("v")
    if not version.split(".")[0].isdigit() or int(version.split(".")[0]) < 22:
        return None
    # Some Node tools listen on every interface; with only loopback nothing can reach them.
    isolated = shutil.which("unshare") and subprocess.run(["unshare", "-rn", "true"], capture_output=True).returncode == 0
    return (["unshare", "-rn"] if isolated else []) + [found, "--cli"]


async def record_inspector(name: str, arguments: list[str], command: list[str], out: Path = TRANSCRIPTS) -> None:
    with tempfile.TemporaryDirectory(prefix="lockgate-record-") as scratch:
        work = Path(scratch)
        _prepare(work)
        # The Inspector takes --config for itself: the gateway finds its files under their default names.
        (work / ".mcp.json").write_text(json.dumps({"mcpServers": {"raw": RAW}}, indent=2))
        (work / ".mcp-gateway-rules.json").write_text(json.dumps(RULES, indent=2))
        env = {**_environ(Scenario(name=name, about="")), "HOME": str(work), "MCP_CATALOG_PATH": str(work / "catalog.json")}
        argv = [*command, "--cwd", str(work), "-e", "GATEWAY_AUDIT_LOG=audit.jsonl", "-e", "GATEWAY_INIT_STRATEGY=lazy",
                *arguments, "--", "python", "-m", "lockgate.shells", "serve", "--record", "recording"]
        with trio.fail_after(60):
            await trio.run_process(argv, cwd=str(work), env=env, capture_stdout=True, capture_stderr=True, check=False)
        sessions = sorted((work / "recording").glob("*-s1.*.jsonl"))
        if len(sessions) != 2:
            raise RuntimeError(f"{name}: expected a core and a wire transcript, found {sessions}")
        for path in sessions:
            kind = path.name.rsplit(".", 2)[-2]
            if kind == "core":
                keep(path, out / f"{name}.core.jsonl")
            else:
                (out / f"{name}.wire.jsonl").write_bytes(path.read_bytes())


# -- concurrent sessions (two clients of one gateway, in process) -----------------------

SESSIONS = "concurrent_sessions"
"""Two clients of one gateway, sharing the raw server: recorded in process (stdio has one client).

They give two transcripts: ``concurrent_sessions_1`` (the run until the first
client leaves) and ``concurrent_sessions_2`` (the whole run). Their wire
sides are each client's own traffic.
"""


class MemoryClient:
    """A client of an in-process Runtime: messages in through ``feed``, out through ``send``."""

    def __init__(self, runtime: Any, client: int, tap: Any) -> None:
        self.runtime = runtime
        self.client = client
        self.tap = tap
        self.received: list[JSON] = []
        self._changed = trio.Event()

    async def send_action(self, action: Any) -> None:
        from lockgate.core.jsonrpc import encode

        data = encode(action.message)
        self.tap("s2c", data)
        self.received.append(json.loads(data))
        self._changed.set()
        self._changed = trio.Event()

    async def request(self, request_id: int, method: str, params: JSON | None = None) -> JSON:
        from lockgate.core.events import ClientMessageReceived

        message: JSON = {"jsonrpc": "2.0", "id": request_id, "method": method}
        if params is not None:
            message["params"] = params
        data = json.dumps(message, separators=(",", ":")).encode()
        self.tap("c2s", data)
        await self.runtime.feed(ClientMessageReceived(now=trio.current_time(), client=self.client, data=data))
        with trio.fail_after(30):
            while True:
                for m in self.received:
                    if m.get("id") == request_id and "method" not in m:
                        return m
                await self._changed.wait()


async def record_sessions(out: Path = TRANSCRIPTS) -> None:
    from lockgate.core.config import load_config
    from lockgate.core.events import ClientClosed, ClientOpened, GatewayStarted, ShutdownRequested
    from lockgate.core.gateway import Gateway
    from lockgate.shells.record import Recorder
    from lockgate.shells.runtime import Runtime

    with tempfile.TemporaryDirectory(prefix="lockgate-record-") as scratch:
        work = Path(scratch)
        _prepare(work)
        servers_text = json.dumps({"mcpServers": {"raw": RAW, "sdk": SDK}})
        rules_text = json.dumps(RULES)
        environ = _environ(Scenario(name=SESSIONS, about=""))
        old = os.getcwd()
        os.chdir(work)  # server commands and the audit log are relative to the gateway's folder
        try:
            config = load_config(servers_text=servers_text, servers_file="servers.json", rules_text=rules_text,
                                 rules_file="rules.json", environ=environ)
            recorder = Recorder(work / "recording", config, RULES, transport="memory", prefix="run")
            runtime = Runtime(recorder.wrap(Gateway(config)), settings=config.settings, environ=environ)
            async with trio.open_nursery() as nursery:
                await nursery.start(runtime.run)
                await runtime.feed(GatewayStarted(now=trio.current_time()))
                clients = [MemoryClient(runtime, n, recorder.wire(n)) for n in (1, 2)]
                for c in clients:
                    runtime.register_client(c.client, c.send_action)
                    await runtime.feed(ClientOpened(now=trio.current_time(), client=c.client, transport="memory"))

                async def session(c: MemoryClient, agent: str, server: str) -> None:
                    await c.request(1, "initialize", INIT)
                    await c.request(2, "tools/call", call_params("execute_tool", agent_id=agent, server=server, tool="echo", args={"text": agent}))
                    await c.request(3, "tools/call", call_params("execute_tool", agent_id=agent, server="raw", tool="slow", args={"steps": 2}))
                    await c.request(4, "tools/call", call_params("get_server_tools", agent_id=agent, server="raw", names="echo,drop_table"))

                async with trio.open_nursery() as both:
                    both.start_soon(session, clients[0], "dev", "sdk")
                    both.start_soon(session, clients[1], "reader", "raw")
                await runtime.feed(ClientClosed(now=trio.current_time(), client=1))
                await clients[1].request(5, "ping")
                await runtime.feed(ClientClosed(now=trio.current_time(), client=2))
                await runtime.feed(ShutdownRequested(now=trio.current_time()))
                await runtime.aclose()
            recorder.close()
        finally:
            os.chdir(old)
        for n in (1, 2):
            keep(work / "recording" / f"run-s{n}.core.jsonl", out / f"{SESSIONS}_{n}.core.jsonl")
            data = (work / "recording" / f"run-s{n}.wire.jsonl").read_bytes()
            (out / f"{SESSIONS}_{n}.wire.jsonl").write_bytes(data)


# -- canonical time --------------------------------------------------------------------

_BACKOFF_SECONDS = re.compile(r"next start attempt in [0-9.]+ s")


def _timeless(action: JSON) -> str:
    """An action with what depends on the clock blanked, as text."""
    action = json.loads(json.dumps(action))
    action.pop("deadline", None)
    if isinstance(action.get("record"), dict):
        action["record"].pop("latency_ms", None)
    return _BACKOFF_SECONDS.sub("next start attempt in N s", json.dumps(action, sort_keys=True))


def canonical(lines: list[JSON]) -> list[JSON] | None:
    """The transcript with event n at ``now = n`` ms and the actions computed again.

    Real times make every recording of a scenario differ from the last; on a
    clock that counts events, only changes of order or behaviour show in a
    diff. The core uses time only for deadlines, latencies and the backoff
    wait, so the actions must come out the same apart from those; if they do
    not, ``None`` says to keep the real times.
    """
    from lockgate.core.gateway import Gateway
    from lockgate.core.transcript import action_to_json, config_from_json, event_from_json

    gateway = Gateway(config_from_json(lines[0]["config"]))
    out: list[JSON] = [lines[0]]
    recorded: list[JSON] = []
    produced: list[JSON] = []
    count = 0
    for line in [*lines[1:], None]:
        if line is None or "event" in line:
            if [_timeless(a) for a in recorded] != [_timeless(a) for a in produced]:
                return None
            out.extend(produced)
            recorded, produced = [], []
            if line is None:
                break
            event = {**line, "now": count / 1000}
            count += 1
            out.append(event)
            produced = [action_to_json(a) for a in gateway.handle(event_from_json(event))]
        else:
            recorded.append(line)
    return out


def keep(source: Path, target: Path) -> None:
    """Copy a core transcript into the corpus, on canonical time when that changes nothing else."""
    lines = [json.loads(text) for text in source.read_text(encoding="utf-8").splitlines()]
    result = canonical(lines)
    if result is None:
        print(f"note: {target.name} keeps its real times (on an event clock it would decide otherwise)")
        result = lines
    target.write_text("".join(json.dumps(line, ensure_ascii=False) + "\n" for line in result), encoding="utf-8")


# -- running ---------------------------------------------------------------------------


def _prepare(work: Path) -> None:
    (work / "servers").symlink_to(HERE / "servers")
    (work / "examples").symlink_to(ROOT / "examples" / "servers")
    (work / "fixtures").symlink_to(HERE / "fixtures")
    (work / "fake_server.py").symlink_to(HERE / "fake_server.py")
    repo = work / "repo"
    repo.mkdir()
    env = {**os.environ, "GIT_AUTHOR_NAME": "Lockgate", "GIT_AUTHOR_EMAIL": "conformance@example.invalid",
           "GIT_COMMITTER_NAME": "Lockgate", "GIT_COMMITTER_EMAIL": "conformance@example.invalid",
           "GIT_AUTHOR_DATE": "2026-01-01T00:00:00Z", "GIT_COMMITTER_DATE": "2026-01-01T00:00:00Z"}
    (repo / "README.md").write_text("A fixture repository.\n")
    for args in (["init", "-q", "-b", "main"], ["add", "README.md"], ["commit", "-q", "-m", "First commit"]):
        subprocess.run(["git", *args], cwd=repo, env=env, check=True)


def _environ(scenario: Scenario) -> dict[str, str]:
    bin_dir = str(Path(sys.executable).parent)
    return {
        "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", "/tmp"),
        "GATEWAY_AUDIT_LOG": "audit.jsonl",
        "GATEWAY_INIT_STRATEGY": "lazy",
        **scenario.env,
    }


async def record(scenario: Scenario, out: Path = TRANSCRIPTS) -> None:
    """Run one scenario and keep its core and wire transcripts in ``out``."""
    with tempfile.TemporaryDirectory(prefix="lockgate-record-") as scratch:
        work = Path(scratch)
        _prepare(work)
        (work / "servers.json").write_text(json.dumps({"mcpServers": scenario.servers}, indent=2))
        (work / "rules.json").write_text(json.dumps(scenario.rules, indent=2))
        argv = [sys.executable, "-m", "lockgate.shells", "serve", "--config", "servers.json", "--rules", "rules.json",
                "--record", "recording"]
        env = _environ(scenario)
        with trio.fail_after(60):
            if scenario.sdk is not None:
                from mcp import Client, StdioServerParameters

                params = StdioServerParameters(command=argv[0], args=argv[1:], env=env, cwd=str(work))
                async with Client(params, mode=scenario.sdk_mode, read_timeout_seconds=30) as client:  # type: ignore[arg-type]
                    await scenario.sdk(client)
                # The client has closed the gateway's stdin; wait for it to finish writing.
                with trio.move_on_after(10):
                    while not list((work / "recording").glob("*.core.jsonl")) or _open_sessions(work / "recording"):
                        await trio.sleep(0.05)
            else:
                assert scenario.raw is not None
                with (work / "stderr.log").open("wb") as stderr:
                    process = await trio.lowlevel.open_process(argv, stdin=-1, stdout=-1, stderr=stderr, cwd=str(work), env=env)
                    raw = Raw(process)
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(raw.reader)
                        await scenario.raw(raw)
                        assert process.stdin is not None
                        await process.stdin.aclose()
                        code = await process.wait()
                if code != 0:
                    raise RuntimeError(f"{scenario.name}: lockgate exited with {code}:\n{(work / 'stderr.log').read_text()[-2000:]}")
        sessions = sorted((work / "recording").glob("*-s1.core.jsonl"))
        wires = sorted((work / "recording").glob("*-s1.wire.jsonl"))
        if len(sessions) != 1 or len(wires) != 1:
            raise RuntimeError(f"{scenario.name}: expected one session, found {sessions} {wires}")
        out.mkdir(parents=True, exist_ok=True)
        keep(sessions[0], out / f"{scenario.name}.core.jsonl")
        (out / f"{scenario.name}.wire.jsonl").write_bytes(wires[0].read_bytes())


def _open_sessions(directory: Path) -> bool:
    """Whether a recording gateway is still running there (its run transcript lacks the shutdown)."""
    for run in directory.glob("*.all.core.jsonl"):
        text = run.read_text()
        if '"ShutdownRequested"' not in text:
            return True
    return False


async def main_async(names: list[str]) -> int:
    chosen = [s for s in SCENARIOS if not names or any(s.name == n or s.name.startswith(n) for n in names)]
    failures = 0
    total = len(chosen)
    inspector = [entry for entry in INSPECTOR if not names or any(entry[0].startswith(n) for n in names)]
    if inspector:
        command = _inspector()
        if command is None:
            print("skipped the MCP Inspector scenarios: mcp-inspector and Node 22 are not on PATH (make conformance-record installs them)")
        for name, _about, arguments in inspector if command is not None else []:
            total += 1
            try:
                await record_inspector(name, arguments, command)
                print(f"recorded {name}")
            except Exception as exc:
                failures += 1
                print(f"FAILED {name}: {exc!r}", file=sys.stderr)
    if not names or any(SESSIONS.startswith(n) or n.startswith(SESSIONS) for n in names):
        total += 1
        try:
            await record_sessions()
            print(f"recorded {SESSIONS}_1 and {SESSIONS}_2")
        except Exception as exc:
            failures += 1
            print(f"FAILED {SESSIONS}: {exc!r}", file=sys.stderr)
    for s in chosen:
        try:
            await record(s)
            print(f"recorded {s.name}")
        except Exception as exc:  # report every scenario, not just the first failure
            failures += 1
            print(f"FAILED {s.name}: {exc!r}", file=sys.stderr)
    print(f"{total - failures} of {total} scenarios recorded into {TRANSCRIPTS.relative_to(ROOT)}")
    return 1 if failures else 0


def main() -> int:
    parser = argparse.ArgumentParser(description="Record the conformance corpus.")
    parser.add_argument("names", nargs="*", help="scenario names or prefixes (default: all)")
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    args = parser.parse_args()
    if args.list:
        for s in SCENARIOS:
            print(f"{s.name:36} {s.about}")
        for name, about, _ in INSPECTOR:
            print(f"{name:36} {about}")
        print(f"{SESSIONS + '_1, _2':36} two clients of one gateway at once, recorded in process (core replay only)")
        return 0
    return trio.run(main_async, args.names)


if __name__ == "__main__":
    sys.exit(main())
