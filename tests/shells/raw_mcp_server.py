"""A plain JSON-lines MCP server for HTTP shell tests (no SDK, starts fast).

Tools: ``echo(text)``; ``progress(steps)`` sends one progress notification per
step when the call carries a progress token, then answers; ``sleep(seconds)``
answers after a pause; ``big(size)`` answers with a text of ``size`` bytes
(one line); ``deaf()`` never answers and stops reading stdin. ``--start-delay
S`` waits before answering ``initialize`` (to watch ``/ready`` say 503 first).
"""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import Any

TOOLS = [
    {"name": "echo", "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}}},
    {"name": "progress", "inputSchema": {"type": "object", "properties": {"steps": {"type": "integer"}}}},
    {"name": "sleep", "inputSchema": {"type": "object", "properties": {"seconds": {"type": "number"}}}},
    {"name": "big", "inputSchema": {"type": "object", "properties": {"size": {"type": "integer"}}}},
    {"name": "deaf", "inputSchema": {"type": "object"}},
]
lock = threading.Lock()


def write(message: dict[str, Any]) -> None:
    with lock:
        sys.stdout.write(json.dumps(message) + "\n")
        sys.stdout.flush()


def text(request_id: Any, value: str) -> None:
    write({"jsonrpc": "2.0", "id": request_id, "result": {"content": [{"type": "text", "text": value}]}})


def call(request_id: Any, params: dict[str, Any]) -> None:
    name = params.get("name")
    args = params.get("arguments") or {}
    if name == "echo":
        text(request_id, str(args.get("text", "")))
    elif name == "progress":
        token = (params.get("_meta") or {}).get("progressToken")
        steps = int(args.get("steps", 2))
        for step in range(steps):
            if token is not None:
                write({"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": token, "progress": step + 1, "total": steps}})
            time.sleep(0.05)
        text(request_id, f"{steps} steps")
    elif name == "sleep":
        time.sleep(float(args.get("seconds", 1)))
        text(request_id, "slept")
    elif name == "big":
        text(request_id, "x" * int(args.get("size", 1)))
    else:
        write({"jsonrpc": "2.0", "id": request_id, "error": {"code": -32602, "message": f"unknown tool {name}"}})


def main() -> None:
    delay = float(sys.argv[sys.argv.index("--start-delay") + 1]) if "--start-delay" in sys.argv else 0.0
    for line in sys.stdin:
        message = json.loads(line)
        method, request_id = message.get("method"), message.get("id")
        if request_id is None or method is None:
            continue
        if method == "initialize":
            time.sleep(delay)
            write({"jsonrpc": "2.0", "id": request_id, "result": {"protocolVersion": "2025-11-25", "capabilities": {"tools": {}}, "serverInfo": {"name": "raw", "version": "1"}}})
        elif method == "tools/list":
            write({"jsonrpc": "2.0", "id": request_id, "result": {"tools": TOOLS}})
        elif method == "tools/call" and (message.get("params") or {}).get("name") == "deaf":
            time.sleep(3600)  # stdin is read no more: the gateway's writes pile up
        elif method == "tools/call":
            threading.Thread(target=call, args=(request_id, message.get("params") or {}), daemon=True).start()
        else:
            write({"jsonrpc": "2.0", "id": request_id, "result": {}})


if __name__ == "__main__":
    main()
