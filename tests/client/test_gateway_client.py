"""GatewayClient and SyncGatewayClient against a real gateway serving real MCP servers: every method, typed errors."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from lockgate.client import (
    AuthenticationError,
    BadRequest,
    CallToolResult,
    Conflict,
    GatewayClient,
    GatewayError,
    NotFound,
    PermissionDenied,
    SyncGatewayClient,
    ToolCall,
)

from .conftest import TESTING_SERVER, Gateway, Site


async def test_every_per_server_method(gateway: Gateway) -> None:
    async with GatewayClient(gateway.url) as client:
        tools = await client.list_tools("testing")
        assert "echo" in [tool.name for tool in tools.tools]
        assert "drop_everything" not in [tool.name for tool in tools.tools]  # dev may not see it
        assert tools.count == len(tools.tools)
        echo = next(tool for tool in tools.tools if tool.name == "echo")
        assert echo.input_schema["properties"]["text"]["type"] == "string"

        result = await client.call_tool("testing", "echo", {"text": "over rest"})
        assert isinstance(result, CallToolResult)
        assert result.structured_content == {"result": "over rest"}
        assert result.text() == "over rest"
        assert result.is_error is False

        timed = await client.call_tool("testing", "echo", {"text": "in time"}, timeout_ms=20_000, agent_id="dev")
        assert timed.text() == "in time"

        resources = await client.list_resources("catalog")
        assert {"notes://today", "notes://private"} <= {r["uri"] for r in resources.resources}
        assert [t["uriTemplate"] for t in resources.resource_templates] == ["notes://day/{day}"]
        assert resources.count == len(resources.resources)

        read = await client.read_resource("catalog", "notes://today")
        assert read.contents[0]["text"] == "buy milk"

        prompts = await client.list_prompts("catalog")
        assert [p["name"] for p in prompts.prompts] == ["summarise"]
        prompt = await client.get_prompt("catalog", "summarise", {"topic": "milk"})
        assert "Summarise my notes on milk." in prompt.messages[0]["content"]["text"]

        health = await client.server_health("testing")
        assert health.template_name == "testing"
        assert health.total_instances == 1
        assert list(health.instances) == ["0"]


async def test_every_gateway_method(gateway: Gateway) -> None:
    async with GatewayClient(gateway.url) as client:
        await client.call_tool("testing", "echo", {"text": "counted"})

        health = await client.health()
        assert health.status in ("healthy", "degraded")
        assert set(health.servers) == {"testing", "catalog"}
        assert health.uptime_seconds >= 0

        stats = await client.stats()
        assert stats.requests.total >= 1
        assert "testing" in stats.servers
        assert 0.0 <= stats.requests.error_rate <= 1.0

        registry = await client.registry()
        assert set(registry.servers) == {"testing", "catalog"}
        testing = registry.servers["testing"]
        assert testing.source == "file"
        [instance] = testing.instances
        assert (instance.id, instance.source, instance.transport, instance.command) == ("0", "file", "stdio", sys.executable)

        audit = await client.audit(limit=5)
        assert 1 <= len(audit.records) <= 5
        assert any(record.server == "testing" for record in audit.records)


async def test_register_then_deregister_an_instance(gateway: Gateway, tmp_path: Path) -> None:
    async with GatewayClient(gateway.url) as client:
        added = await client.register(
            "extra", command=sys.executable, args=[TESTING_SERVER], env={"EXTRA_TOKEN": "not shown"}, description="added at run time"
        )
        assert added.server == "extra" and added.transport == "stdio" and added.registered
        assert added.instance_id.startswith("reg-")

        registry = await client.registry()
        [instance] = registry.servers["extra"].instances
        assert (instance.id, instance.source, instance.env_keys) == (added.instance_id, "registry", ["EXTRA_TOKEN"])
        assert "not shown" not in registry.model_dump_json()

        result = await client.call_tool("extra", "echo", {"text": "registered"})
        assert result.structured_content == {"result": "registered"}

        named = await client.register("extra", command=sys.executable, args=[TESTING_SERVER], instance_id="second", weight=2)
        assert named.instance_id == "second"
        with pytest.raises(Conflict) as twice:
            await client.register("extra", command=sys.executable, args=[TESTING_SERVER], instance_id="second")
        assert twice.value.status == 409

        removed = await client.deregister("extra", "second")
        assert (removed.server, removed.instance_id, removed.deregistered) == ("extra", "second", True)
        await client.deregister("extra", added.instance_id)

        with pytest.raises(NotFound):
            await client.deregister("extra", "second")
        with pytest.raises(Conflict):  # a file instance is not the registry's to remove
            await client.deregister("testing", "0")
        with pytest.raises(ValueError):  # both endpoint and command: refused before sending
            await client.register("x", endpoint="http://127.0.0.1:9/mcp", command="python")


async def test_the_batch_gives_each_result_or_error_in_order(gateway: Gateway) -> None:
    async with GatewayClient(gateway.url) as client:
        results = await client.call_tools([
            ToolCall(server="testing", name="echo", arguments={"text": "one"}),
            {"server": "testing", "name": "drop_everything"},
            {"server": "nowhere", "name": "echo", "arguments": {"text": "x"}},
            {"server": "testing", "name": "echo", "arguments": {"text": "four"}},
        ])
    assert len(results) == 4
    first, denied, unknown, last = results
    assert isinstance(first, CallToolResult) and first.text() == "one"
    assert isinstance(denied, PermissionDenied) and denied.code == "DENIED_BY_POLICY"
    assert isinstance(unknown, NotFound) and unknown.status == 404
    assert isinstance(last, CallToolResult) and last.text() == "four"


async def test_typed_errors(gateway: Gateway) -> None:
    async with GatewayClient(gateway.url) as client:
        with pytest.raises(NotFound) as unknown:
            await client.list_tools("nowhere")
        assert (unknown.value.status, unknown.value.code) == (404, "SERVER_NOT_FOUND")

        with pytest.raises(PermissionDenied) as denied:
            await client.call_tool("testing", "drop_everything")
        assert (denied.value.status, denied.value.code) == (403, "DENIED_BY_POLICY")
        assert denied.value.data.get("rule")

        with pytest.raises(PermissionDenied):  # guest may not use testing at all
            await client.list_tools("testing", agent_id="guest")

        with pytest.raises(NotFound) as no_tool:
            await client.call_tool("testing", "no_such_tool")
        assert no_tool.value.code == "TOOL_NOT_FOUND"

        with pytest.raises(BadRequest) as bad:
            await client.call_tool("testing", "echo", timeout_ms=0)
        assert bad.value.status == 400
        assert isinstance(bad.value, GatewayError)


def test_bad_key_is_an_authentication_error(site: Site) -> None:
    from lockgate.shells.store import Store

    database = f"sqlite:///{site.tmp / 'state' / 'lockgate.db'}"
    with Store.open(database) as store:
        store.upgrade()
        key = store.create_key("dev", role="user", agents=["dev"])[1]
    site.env.update(GATEWAY_DATABASE_URL=database, GATEWAY_JWT_SECRET="a test signing secret of at least thirty-two bytes")
    with site.serve("--auth") as gateway:
        with SyncGatewayClient(gateway.url, api_key=key) as good:
            assert good.call_tool("testing", "echo", {"text": "with a key"}).text() == "with a key"
        for credential in (None, "lg_00000000_" + "x" * 43):
            with SyncGatewayClient(gateway.url, api_key=credential) as bad, pytest.raises(AuthenticationError) as refused:
                bad.list_tools("testing")
            assert refused.value.status == 401
        with SyncGatewayClient(gateway.url, api_key=key) as user, pytest.raises(PermissionDenied):
            user.register("extra", command=sys.executable, args=[TESTING_SERVER])  # needs an admin
        # The commands take the credential from the environment or --api-key.
        from .test_remote_commands import lockgate

        assert lockgate("registry", "--url", gateway.url, LOCKGATE_API_KEY=key).returncode == 0
        bad_key = lockgate("stats", "--url", gateway.url, "--api-key", "lg_00000000_" + "x" * 43)
        assert bad_key.returncode == 1 and bad_key.stderr.startswith("lockgate: error: the gateway refused: 401 ")


def test_the_sync_facade(gateway: Gateway) -> None:
    with SyncGatewayClient(gateway.url + "/mcp") as client:  # the MCP endpoint's URL works too
        assert "echo" in [tool.name for tool in client.list_tools("testing").tools]
        assert client.call_tool("testing", "echo", {"text": "sync"}).structured_content == {"result": "sync"}
        assert client.read_resource("catalog", "notes://today").contents[0]["text"] == "buy milk"
        assert client.list_resources("catalog").count >= 2
        assert client.list_prompts("catalog").count == 1
        assert client.get_prompt("catalog", "summarise", {"topic": "tea"}).messages
        assert client.server_health("catalog").template_name == "catalog"
        assert client.health().servers["testing"].total_instances == 1
        assert client.stats().requests.total >= 1
        assert "catalog" in client.registry().servers
        assert client.audit(limit=2).records
        [ok, refused] = client.call_tools([{"server": "testing", "name": "echo", "arguments": {"text": "b"}}, {"server": "nowhere", "name": "x"}])
        assert isinstance(ok, CallToolResult) and isinstance(refused, NotFound)
        added = client.register("extra", command=sys.executable, args=[TESTING_SERVER])
        assert client.deregister("extra", added.instance_id).deregistered
        with pytest.raises(NotFound):
            client.server_health("nowhere")


def test_the_async_client_under_asyncio(gateway: Gateway) -> None:
    async def main() -> str:
        async with GatewayClient(gateway.url) as client:
            return (await client.call_tool("testing", "echo", {"text": "asyncio"})).text()

    assert asyncio.run(main()) == "asyncio"
