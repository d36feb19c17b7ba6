"""A scripted tour of Lockgate: one MCP client, two servers, three agents.

    python examples/demo.py [--debug]        (or: make demo)

It starts ``lockgate serve --config examples/.mcp.json --rules
examples/.mcp-gateway-rules.json`` as a subprocess, connects to it over stdio
with the MCP Python SDK, and walks through discovery, calls and denials,
printing what it asks and what comes back. It exits 0 when every step did
what the rules say it should, 1 otherwise.
"""

from __future__ import annotations

import json
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import trio
from mcp import Client, MCPError, StdioServerParameters
from mcp.types import CallToolResult, TextContent

ROOT = Path(__file__).resolve().parent.parent
CONFIG = "examples/.mcp.json"
RULES = "examples/.mcp-gateway-rules.json"
TIME_LIMIT_S = 60


def lockgate_command() -> list[str]:
    """The command that starts Lockgate with this same Python."""
    return [sys.executable, "-m", "lockgate.shells"]


def text_of(result: CallToolResult) -> str:
    """The text blocks of a result, joined (other block types are named, not shown)."""
    parts = [b.text if isinstance(b, TextContent) else f"<{b.type}>" for b in result.content]
    return " | ".join(parts)


def structured(result: CallToolResult) -> Any:
    """The structured content of a gateway tool's result, falling back to its JSON text."""
    if result.structured_content is not None:
        return result.structured_content
    return json.loads(text_of(result))


class Tour:
    """Prints the narrative and keeps score of the expectations."""

    def __init__(self, gateway: Client) -> None:
        self.gateway = gateway
        self.failures: list[str] = []
        self.step = 0

    def say(self, title: str) -> None:
        self.step += 1
        print(f"\n[{self.step}] {title}")

    def show(self, label: str, value: Any) -> None:
        shown = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        print(f"    {label}: {shown}")

    def expect(self, ok: bool, what: str) -> None:
        print(f"    {'ok' if ok else 'UNEXPECTED'}: {what}")
        if not ok:
            self.failures.append(f"step {self.step}: {what}")

    async def call(self, tool: str, args: dict[str, Any]) -> CallToolResult:
        shown = ", ".join(f"{k}={json.dumps(v)}" for k, v in args.items())
        print(f"    -> {tool}({shown})")
        return await self.gateway.call_tool(tool, args)

    async def denied(self, tool: str, args: dict[str, Any], why: str) -> None:
        """Call and expect DENIED_BY_POLICY; show the rule that decided."""
        try:
            result = await self.call(tool, args)
        except MCPError as exc:
            data = exc.data if isinstance(exc.data, dict) else {}
            self.show("error", f"{exc.code} {exc.message}")
            self.show("data.code", data.get("code"))
            self.show("data.rule", data.get("rule"))
            self.expect(exc.code == -32000 and data.get("code") == "DENIED_BY_POLICY", why)
        else:
            self.show("result", text_of(result))
            self.expect(False, f"{why} (but the call went through)")


async def tour(gateway: Client) -> list[str]:
    t = Tour(gateway)

    t.say("What the client sees: only the gateway's own tools, not every downstream tool")
    listed = await gateway.list_tools()
    names = [tool.name for tool in listed.tools]
    t.show("tools", names)
    t.expect({"list_servers", "get_server_tools", "execute_tool"} <= set(names), "the three gateway tools are there")

    t.say("The researcher asks which servers it may use")
    servers = structured(await t.call("list_servers", {"agent_id": "researcher", "include_metadata": True}))
    servers = servers.get("result", servers) if isinstance(servers, dict) else servers
    for server in servers:
        t.show(server.get("name", "?"), server.get("description", ""))
    t.expect({s.get("name") for s in servers} == {"notes", "utils"}, "researcher sees notes and utils")

    t.say("The researcher fetches the notes tools it is allowed (list_notes, get_note, search_*)")
    found = structured(await t.call("get_server_tools", {"agent_id": "researcher", "server": "notes"}))
    tool_names = sorted(tool["name"] for tool in found["tools"])
    t.show("tools", tool_names)
    t.show(
        "returned / available / tokens",
        f"{found.get('returned')} / {found.get('total_available')} / {found.get('tokens_used')}",
    )
    t.expect(tool_names == ["get_note", "list_notes", "search_notes"], "add_note and delete_note are filtered out")

    t.say("The researcher searches the notes through the gateway")
    result = await t.call(
        "execute_tool", {"agent_id": "researcher", "server": "notes", "tool": "search_notes", "args": {"query": "milk"}}
    )
    t.show("result", text_of(result))
    t.expect(not result.is_error and "groceries" in text_of(result), "the downstream's result comes back unchanged")

    t.say("The writer adds a note (writer has all of notes except delete_*)")
    result = await t.call(
        "execute_tool",
        {
            "agent_id": "writer",
            "server": "notes",
            "tool": "add_note",
            "args": {"title": "plan", "body": "ship the gateway"},
        },
    )
    t.show("result", text_of(result))
    t.expect(not result.is_error, "writer may add notes")

    t.say("The researcher reads the writer's note: both agents share the same downstream server")
    result = await t.call(
        "execute_tool", {"agent_id": "researcher", "server": "notes", "tool": "get_note", "args": {"title": "plan"}}
    )
    t.show("result", text_of(result))
    t.expect(text_of(result) == "ship the gateway", "the note is there")

    t.say("The writer tries to delete it: a deny wildcard (delete_*) wins over the allow")
    await t.denied(
        "execute_tool",
        {"agent_id": "writer", "server": "notes", "tool": "delete_note", "args": {"title": "plan"}},
        "writer is denied delete_note",
    )

    t.say("The researcher tries to add a note: add_note is not on its allow list")
    await t.denied(
        "execute_tool",
        {"agent_id": "researcher", "server": "notes", "tool": "add_note", "args": {"title": "x", "body": "y"}},
        "researcher is denied add_note",
    )

    t.say("The writer asks for the utils tools: utils is not among its servers")
    await t.denied("get_server_tools", {"agent_id": "writer", "server": "utils"}, "writer is denied utils")

    t.say("A downstream failure is a result with isError, passed through as it is, not a gateway error")
    result = await t.call(
        "execute_tool",
        {"agent_id": "researcher", "server": "utils", "tool": "fail", "args": {"message": "the disk is on fire"}},
    )
    t.show("isError", result.is_error)
    t.show("result", text_of(result))
    t.expect(result.is_error and "the disk is on fire" in text_of(result), "the failure arrives as isError")

    t.say("The admin may use every server, except utils.fail which its rules deny")
    result = await t.call(
        "execute_tool", {"agent_id": "admin", "server": "utils", "tool": "add", "args": {"a": 2, "b": 40}}
    )
    t.show("result", text_of(result))
    t.expect(text_of(result) in {"42", "42.0"}, "admin may call utils.add")
    await t.denied(
        "execute_tool",
        {"agent_id": "admin", "server": "utils", "tool": "fail", "args": {"message": "x"}},
        "admin is denied utils.fail",
    )

    t.say("No agent_id: the 'default' agent applies (deny_on_missing_agent is false)")
    servers = structured(await t.call("list_servers", {}))
    servers = servers.get("result", servers) if isinstance(servers, dict) else servers
    t.show("servers", [s.get("name") for s in servers])
    t.expect([s.get("name") for s in servers] == ["utils"], "default sees utils only")
    result = await t.call(
        "execute_tool", {"server": "utils", "tool": "word_count", "args": {"text": "one endpoint, many servers"}}
    )
    t.show("result", text_of(result))
    t.expect(text_of(result) == "4", "default may count words")
    await t.denied(
        "execute_tool",
        {"server": "utils", "tool": "get_time_utc", "args": {}},
        "default is denied get_time_utc",
    )
    return t.failures


def show_audit(path: Path) -> None:
    """Summarise the audit log the gateway wrote during the tour."""
    print("\n[audit] Every decision above was also written to the audit log, one JSON line each")
    if not path.is_file():
        print("    (no audit log was written)")
        return
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    decisions = Counter(str(r.get("decision")) for r in records)
    print(f"    {len(records)} records: " + ", ".join(f"{n} {d}" for d, n in sorted(decisions.items())))
    for record in records:
        if record.get("decision") == "DENY":
            target = ".".join(str(part) for part in (record.get("server"), record.get("tool")) if part)
            print(f"    DENY {record.get('agent')} {target}  rule: {record.get('rule')}")


async def main(debug: bool) -> int:
    command = lockgate_command()
    args = [*command[1:], "serve", "--config", CONFIG, "--rules", RULES, *(["--debug"] if debug else [])]
    print("Lockgate demo")
    print(f"  starting: {' '.join([Path(command[0]).name, *args])}  (in {ROOT})")
    with tempfile.TemporaryDirectory(prefix="lockgate-demo-") as tmp:
        # The audit log goes to a temporary file (not ./logs) so the tour can show it and leave nothing behind.
        audit_log = Path(tmp) / "audit.jsonl"
        env = {"PYTHON": sys.executable, "GATEWAY_AUDIT_LOG": str(audit_log)}
        params = StdioServerParameters(command=command[0], args=args, cwd=str(ROOT), env=env)
        with trio.fail_after(TIME_LIMIT_S):
            async with Client(params, mode="legacy") as gateway:
                failures = await tour(gateway)
        show_audit(audit_log)
    print()
    if failures:
        print(f"{len(failures)} step(s) did not go as the rules say:")
        for failure in failures:
            print(f"  - {failure}")
        return 1
    print("Every step went as the rules say.")
    return 0


if __name__ == "__main__":
    sys.exit(trio.run(main, "--debug" in sys.argv[1:]))
