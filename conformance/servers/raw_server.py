"""A plain JSON-lines MCP server (no SDK) whose tools misbehave on request.

It exists for conformance scenarios that need a downstream to crash, hang,
write garbage, report progress, page its tool list or talk back, and to do
so the same way every time (nothing here sleeps or reads a clock).

Tools: ``echo``, ``add``, ``slow`` (one progress notification per step, then
the result), ``hang`` (one progress notification if asked, then never
answers), ``crash`` (exits with code 1 mid-call), ``fail`` (an ``isError``
result), ``rpc_error`` (a JSON-RPC error), ``big`` (a text of ``size``
bytes), ``garbage`` (a non-JSON line, then the result), ``log`` (a
``notifications/message``, then the result), ``talk_back`` (sends the
gateway a ``ping`` and a ``sampling/createMessage`` request, then the
result), ``grow`` (adds a tool and sends ``notifications/tools/list_changed``),
and ``drop_table``, ``get_user``, ``delete_user`` for the rules.

Flags: ``--exit-at-start N`` exits with code N before reading anything;
``--garbage-at-start`` writes a non-JSON line first; ``--page-size N`` pages
``tools/list`` N tools at a time.

``--catalog`` adds what aggregate-mode scenarios need, and nothing else
changes without it: resources (``conformance://shared``, a URI the SDK
server's ``--catalog`` lists too, ``raw://status`` and ``raw://secret``), the
template ``raw://logs/{day}``, the prompt ``summary(topic)``,
``resources/subscribe`` and ``unsubscribe``, ``logging/setLevel``, and the
tools ``touch`` (sends ``notifications/resources/updated`` for ``uri``, then
the result) and ``add_resource`` (lists ``raw://added`` from then on and sends
``notifications/resources/list_changed``).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

JSON = dict[str, Any]


def _tool(name: str, description: str, **properties: str) -> JSON:
    return {
        "name": name,
        "description": description,
        "inputSchema": {
            "type": "object",
            "properties": {key: {"type": kind} for key, kind in properties.items()},
            "required": list(properties),
        },
    }


TOOLS: list[JSON] = [
    _tool("echo", "Return the text unchanged.", text="string"),
    _tool("add", "Add two integers.", a="integer", b="integer"),
    _tool("slow", "Report progress for each step, then finish.", steps="integer"),
    _tool("hang", "Never answer."),
    _tool("crash", "Exit with code 1 in the middle of the call."),
    _tool("fail", "Answer with an isError result.", message="string"),
    _tool("rpc_error", "Answer with a JSON-RPC error."),
    _tool("big", "Return a text of `size` bytes.", size="integer"),
    _tool("garbage", "Write a line that is not JSON, then answer."),
    _tool("log", "Send a log message notification, then answer."),
    _tool("talk_back", "Send the client a ping and a sampling request, then answer."),
    _tool("grow", "Add a tool and announce that the tool list changed."),
    _tool("drop_table", "Drop a table.", table="string"),
    _tool("get_user", "Read a user.", id="string"),
    _tool("delete_user", "Delete a user.", id="string"),
]


#: ``--catalog``: more tools, and resources, a template and a prompt.
CATALOG_TOOLS: list[JSON] = [
    _tool("touch", "Announce that the resource at `uri` was updated.", uri="string"),
    _tool("add_resource", "List one more resource and announce that the resource list changed."),
]
RESOURCES: dict[str, str] = {
    "conformance://shared": "shared, as the raw server has it",
    "raw://status": "all good",
    "raw://secret": "the raw server's secret",
}
TEMPLATE = "raw://logs/{day}"
PROMPT: JSON = {
    "name": "summary",
    "description": "Summarise a topic.",
    "arguments": [{"name": "topic", "description": "What to summarise.", "required": True}],
}
#: MCP's error code for a resource that does not exist (server/resources, "Error Handling").
RESOURCE_NOT_FOUND = -32002


class Server:
    def __init__(self, page_size: int | None, catalog: bool = False) -> None:
        self.tools = list(TOOLS) + (CATALOG_TOOLS if catalog else [])
        self.page_size = page_size
        self.next_id = 1000
        self.catalog = catalog
        self.resources = dict(RESOURCES)

    def write(self, message: JSON) -> None:
        sys.stdout.write(json.dumps(message, separators=(",", ":")) + "\n")
        sys.stdout.flush()

    def text(self, request_id: Any, text: str, *, is_error: bool = False) -> None:
        self.write({"jsonrpc": "2.0", "id": request_id, "result": {"content": [{"type": "text", "text": text}], "isError": is_error}})

    def progress(self, token: Any, progress: int, total: int | None) -> None:
        params: JSON = {"progressToken": token, "progress": progress, "message": f"step {progress}"}
        if total is not None:
            params["total"] = total
        self.write({"jsonrpc": "2.0", "method": "notifications/progress", "params": params})

    def request(self, message: JSON) -> None:
        method = message.get("method")
        request_id = message.get("id")
        params = message.get("params") or {}
        if method == "initialize":
            capabilities: JSON = {"tools": {"listChanged": True}, "logging": {}}
            if self.catalog:
                capabilities.update({"resources": {"subscribe": True, "listChanged": True}, "prompts": {"listChanged": True}})
            self.write({"jsonrpc": "2.0", "id": request_id, "result": {
                "protocolVersion": params.get("protocolVersion", "2025-11-25"),
                "capabilities": capabilities,
                "serverInfo": {"name": "raw-server", "version": "1.0.0"},
            }})
        elif self.catalog and isinstance(method, str) and self.catalog_request(request_id, method, params):
            pass
        elif method == "ping":
            self.write({"jsonrpc": "2.0", "id": request_id, "result": {}})
        elif method == "tools/list":
            start = int(params.get("cursor") or 0)
            end = len(self.tools) if self.page_size is None else start + self.page_size
            result: JSON = {"tools": self.tools[start:end]}
            if end < len(self.tools):
                result["nextCursor"] = str(end)
            self.write({"jsonrpc": "2.0", "id": request_id, "result": result})
        elif method == "tools/call":
            self.call(request_id, params.get("name"), params.get("arguments") or {}, (params.get("_meta") or {}).get("progressToken"))
        else:
            self.write({"jsonrpc": "2.0", "id": request_id, "error": {"code": -32601, "message": f"Method not found: {method}"}})

    def catalog_request(self, request_id: Any, method: str, params: JSON) -> bool:
        """Answer a ``--catalog`` request; False for a method that is not one."""
        answer: JSON
        if method == "resources/list":
            answer = {"resources": [{"uri": uri, "name": uri.split("/")[-1], "mimeType": "text/plain"} for uri in self.resources]}
        elif method == "resources/templates/list":
            answer = {"resourceTemplates": [{"uriTemplate": TEMPLATE, "name": "logs", "mimeType": "text/plain"}]}
        elif method == "resources/read":
            uri = str(params.get("uri"))
            if uri in self.resources:
                text = self.resources[uri]
            elif uri.startswith("raw://logs/"):
                text = f"the raw server's log of {uri.removeprefix('raw://logs/')}"
            else:
                self.write({"jsonrpc": "2.0", "id": request_id, "error": {"code": RESOURCE_NOT_FOUND, "message": "Resource not found", "data": {"uri": uri}}})
                return True
            answer = {"contents": [{"uri": uri, "mimeType": "text/plain", "text": text}]}
        elif method in ("resources/subscribe", "resources/unsubscribe", "logging/setLevel"):
            answer = {}
        elif method == "prompts/list":
            answer = {"prompts": [PROMPT]}
        elif method == "prompts/get" and params.get("name") == "summary":
            topic = str((params.get("arguments") or {}).get("topic", ""))
            answer = {"description": "Summarise a topic.", "messages": [{"role": "user", "content": {"type": "text", "text": f"Summarise {topic}."}}]}
        elif method == "tools/call" and params.get("name") == "touch":
            uri = str((params.get("arguments") or {}).get("uri", ""))
            self.write({"jsonrpc": "2.0", "method": "notifications/resources/updated", "params": {"uri": uri}})
            self.text(request_id, f"touched {uri}")
            return True
        elif method == "tools/call" and params.get("name") == "add_resource":
            self.resources["raw://added"] = "added later"
            self.write({"jsonrpc": "2.0", "method": "notifications/resources/list_changed"})
            self.text(request_id, "added raw://added")
            return True
        else:
            return False
        self.write({"jsonrpc": "2.0", "id": request_id, "result": answer})
        return True

    def call(self, request_id: Any, name: Any, args: JSON, token: Any) -> None:
        if name == "echo":
            self.text(request_id, str(args.get("text", "")))
        elif name == "add":
            self.text(request_id, str(int(args.get("a", 0)) + int(args.get("b", 0))))
        elif name == "slow":
            steps = int(args.get("steps", 3))
            for step in range(1, steps + 1):
                if token is not None:
                    self.progress(token, step, steps)
            self.text(request_id, f"done after {steps} steps")
        elif name == "hang":
            if token is not None:
                self.progress(token, 1, None)
        elif name == "crash":
            sys.exit(1)
        elif name == "fail":
            self.text(request_id, str(args.get("message", "it failed")), is_error=True)
        elif name == "rpc_error":
            self.write({"jsonrpc": "2.0", "id": request_id, "error": {"code": -32603, "message": "the tool broke", "data": {"detail": "on purpose"}}})
        elif name == "big":
            self.text(request_id, "x" * int(args.get("size", 0)))
        elif name == "garbage":
            sys.stdout.write("this line is not JSON-RPC\n")
            self.text(request_id, "after the garbage")
        elif name == "log":
            self.write({"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": "warning", "logger": "raw", "data": "a log line"}})
            self.text(request_id, "logged")
        elif name == "talk_back":
            self.next_id += 1
            self.write({"jsonrpc": "2.0", "id": self.next_id, "method": "ping"})
            self.next_id += 1
            self.write({"jsonrpc": "2.0", "id": self.next_id, "method": "sampling/createMessage", "params": {"messages": [], "maxTokens": 1}})
            self.text(request_id, "talked back")
        elif name == "grow":
            if not any(t["name"] == "grown" for t in self.tools):
                self.tools.append(_tool("grown", "A tool that appeared later."))
            self.write({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"})
            self.text(request_id, "grown")
        elif isinstance(name, str) and any(t["name"] == name for t in self.tools):
            self.text(request_id, f"{name} ok")
        else:
            self.write({"jsonrpc": "2.0", "id": request_id, "error": {"code": -32602, "message": f"Unknown tool: {name}"}})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--exit-at-start", type=int)
    parser.add_argument("--garbage-at-start", action="store_true")
    parser.add_argument("--page-size", type=int)
    parser.add_argument("--catalog", action="store_true")
    args = parser.parse_args()
    if args.exit_at_start is not None:
        sys.exit(args.exit_at_start)
    if args.garbage_at_start:
        sys.stdout.write("raw-server starting (not JSON)\n")
        sys.stdout.flush()
    server = Server(args.page_size, args.catalog)
    for line in sys.stdin:
        try:
            message = json.loads(line)
        except ValueError:
            continue
        if isinstance(message, dict) and "method" in message and "id" in message:
            server.request(message)


if __name__ == "__main__":
    main()
