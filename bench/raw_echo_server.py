"""A minimal MCP server over stdio with no SDK: one ``echo`` tool, as fast as it gets.

It reads one JSON-RPC message per line from stdin and writes one per line to
stdout, flushing each. It answers ``initialize`` (echoing the client's
protocol version), ``ping``, ``tools/list`` and ``tools/call``; it ignores
notifications and answers any other request with -32601. No pydantic, no
validation beyond what the benchmark needs: it exists so the benchmark can
show the gateway's own cost without an SDK server's cost on top.
"""

from __future__ import annotations

import json
import sys
from typing import Any

_ECHO_TOOL: dict[str, Any] = {
    "name": "echo",
    "description": "Return the text unchanged.",
    "inputSchema": {
        "type": "object",
        "properties": {"text": {"type": "string"}},
        "required": ["text"],
    },
}


def _answer(method: str, params: dict[str, Any]) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """Return (result, error) for one request."""
    if method == "initialize":
        return {
            "protocolVersion": params.get("protocolVersion", "2025-06-18"),
            "capabilities": {"tools": {}},
            "serverInfo": {"name": "raw-echo", "version": "1.0.0"},
        }, None
    if method == "ping":
        return {}, None
    if method == "tools/list":
        return {"tools": [_ECHO_TOOL]}, None
    if method == "tools/call":
        if params.get("name") != "echo":
            return None, {"code": -32602, "message": f"unknown tool: {params.get('name')}"}
        text = str((params.get("arguments") or {}).get("text", ""))
        return {"content": [{"type": "text", "text": text}], "isError": False}, None
    return None, {"code": -32601, "message": f"method not found: {method}"}


def main() -> None:
    """Serve until stdin closes."""
    out = sys.stdout
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            message = json.loads(line)
        except ValueError:
            out.write('{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"parse error"}}\n')
            out.flush()
            continue
        if not isinstance(message, dict) or "method" not in message or "id" not in message:
            continue  # a notification or a response: nothing to say
        result, error = _answer(str(message["method"]), message.get("params") or {})
        reply: dict[str, Any] = {"jsonrpc": "2.0", "id": message["id"]}
        if error is None:
            reply["result"] = result
        else:
            reply["error"] = error
        out.write(json.dumps(reply, separators=(",", ":")) + "\n")
        out.flush()


if __name__ == "__main__":
    main()
