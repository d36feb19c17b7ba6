"""A small MCP server over stdio without the SDK, quick to start, for instance tests.

One message per line, handled one at a time (so a blocking tool blocks pings
too, like a hung server). Options: ``--name NAME`` (what ``whoami`` says),
``--crash-every N`` (exit with code 1 instead of answering every Nth
``tools/call``), ``--marker X`` (ignored; lets tests find the process).

Tools: ``whoami`` (name and pid), ``echo`` (text), ``sleep`` (block for
``seconds``), ``slow`` (``steps`` progress notifications ``every`` seconds
apart, then answer; progress only when a token was given), ``poison`` (a
result Python's json writes but a strict peer cannot carry: a lone
surrogate and ``NaN``).
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

name = sys.argv[sys.argv.index("--name") + 1] if "--name" in sys.argv else "raw"
crash_every = int(sys.argv[sys.argv.index("--crash-every") + 1]) if "--crash-every" in sys.argv else 0
calls = 0

TOOLS = [
    {"name": n, "inputSchema": {"type": "object"}} for n in ("whoami", "echo", "sleep", "slow", "poison")
]


def send(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def text(value: str) -> dict[str, Any]:
    return {"content": [{"type": "text", "text": value}], "isError": False}


def call(params: dict[str, Any]) -> dict[str, Any]:
    global calls
    calls += 1
    if crash_every and calls % crash_every == 0:
        os._exit(1)
    args = params.get("arguments") or {}
    tool = params.get("name")
    if tool == "whoami":
        return text(f"{name} {os.getpid()}")
    if tool == "echo":
        return text(str(args.get("text", "")))
    if tool == "sleep":
        time.sleep(float(args.get("seconds", 3600)))
        return text("slept")
    if tool == "slow":
        token = (params.get("_meta") or {}).get("progressToken")
        steps = int(args.get("steps", 5))
        for step in range(steps):
            time.sleep(float(args.get("every", 0.2)))
            if token is not None:
                send({"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": token, "progress": step + 1, "total": steps}})
        return text("done")
    if tool == "poison":
        return {**text("\ud800"), "structuredContent": {"x": float("nan")}}
    raise ValueError(tool)


for line in sys.stdin:
    msg = json.loads(line)
    if "id" not in msg or "method" not in msg:
        continue
    method = msg["method"]
    if method == "initialize":
        result: dict[str, Any] = {"protocolVersion": msg["params"]["protocolVersion"], "capabilities": {"tools": {}}, "serverInfo": {"name": name, "version": "1"}}
    elif method == "ping":
        result = {}
    elif method == "tools/list":
        result = {"tools": TOOLS}
    elif method == "tools/call":
        result = call(msg["params"])
    else:
        send({"jsonrpc": "2.0", "id": msg["id"], "error": {"code": -32601, "message": method}})
        continue
    send({"jsonrpc": "2.0", "id": msg["id"], "result": result})
