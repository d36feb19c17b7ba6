"""Handshake, version negotiation and the plain methods (ping, logging, unknown ones)."""

from __future__ import annotations

from typing import Any

from conformance.clients import INIT, Raw
from conformance.scenarios.base import RawScript, scenario

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
