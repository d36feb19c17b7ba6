"""Lockgate's REST API from Python: tools, a batch, a refusal, and the gateway's health and stats.

Start the bundled example over HTTP first (``make run``, or
``lockgate serve --config examples/.mcp.json --rules examples/.mcp-gateway-rules.json --transport http``),
then::

    python examples/client_example.py [--url http://127.0.0.1:8000] [--api-key KEY]

It runs under asyncio; :class:`~lockgate.client.GatewayClient` works the same
under trio, and :class:`~lockgate.client.SyncGatewayClient` has the same
methods for code without an event loop.
"""

from __future__ import annotations

import argparse
import asyncio
import os

from lockgate.client import CallToolResult, GatewayClient, GatewayError, PermissionDenied


async def main(url: str, api_key: str | None) -> None:
    async with GatewayClient(url, api_key=api_key) as gateway:
        # What the researcher may use on utils, with each tool's definition as the server gave it.
        tools = await gateway.list_tools("utils", agent_id="researcher")
        print(f"utils offers the researcher {tools.count} tools: {', '.join(tool.name for tool in tools.tools)}")

        # A call: the server's result comes back unchanged.
        counted = await gateway.call_tool("utils", "word_count", {"text": "one two three"}, agent_id="researcher")
        print(f"word_count: {counted.structured_content}")

        # A tool's own failure is a result with is_error, not an exception.
        failed = await gateway.call_tool("utils", "fail", {"message": "on purpose"}, agent_id="researcher")
        print(f"fail: is_error={failed.is_error}, text={failed.text()!r}")

        # A refusal is an exception of its family, with the gateway's code and the rule that decided.
        try:
            await gateway.call_tool("notes", "delete_note", {"title": "x"}, agent_id="writer")
        except PermissionDenied as exc:
            print(f"writer may not delete: {exc.code} (rule {exc.data.get('rule')})")

        # Several calls at once: each result or error, in order.
        batch = await gateway.call_tools([
            {"server": "utils", "name": "echo", "arguments": {"text": "first"}, "agent_id": "researcher"},
            {"server": "utils", "name": "add", "arguments": {"a": 2, "b": 3}, "agent_id": "researcher"},
            {"server": "nowhere", "name": "echo", "arguments": {}, "agent_id": "researcher"},
        ])
        for item in batch:
            print("batch:", item.text() if isinstance(item, CallToolResult) else f"{type(item).__name__} {item.code}")

        health = await gateway.health()
        print(f"gateway {health.status}: " + ", ".join(f"{name} {s.state}" for name, s in health.servers.items()))
        stats = await gateway.stats()
        print(f"{stats.requests.total} requests so far, p95 {stats.latency_ms.p95:.1f} ms")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("LOCKGATE_URL", "http://127.0.0.1:8000"))
    parser.add_argument("--api-key", default=os.environ.get("LOCKGATE_API_KEY"))
    options = parser.parse_args()
    try:
        asyncio.run(main(options.url, options.api_key))
    except GatewayError as exc:
        raise SystemExit(f"client_example: {exc}") from None
