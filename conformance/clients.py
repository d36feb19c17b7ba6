"""Clients that drive a recording gateway: over its stdin and stdout, or inside its process."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import trio

JSON = dict[str, Any]

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


class MemoryClient:
    """A client of an in-process Runtime: messages in through ``feed``, out through ``send``."""

    def __init__(self, runtime: Any, client: int, tap: Any) -> None:
        self.runtime = runtime
        self.client = client
        self.tap = tap
        self.received: list[JSON] = []
        self._changed = trio.Event()

    async def send_action(self, action: Any) -> None:
        from lockgate.core import encode

        data = encode(action.message)
        self.tap("s2c", data)
        self.received.append(json.loads(data))
        self._changed.set()
        self._changed = trio.Event()

    async def request(self, request_id: int, method: str, params: JSON | None = None) -> JSON:
        from lockgate.core import ClientMessageReceived

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
