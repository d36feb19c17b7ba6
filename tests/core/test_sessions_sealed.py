"""Sessions continued without ``initialize``: ``ClientOpened(restored=...)`` and ``Gateway.session_record``.

A Streamable HTTP session's id carries a :class:`SessionRecord` sealed (see
:mod:`lockgate.shells.session_ids`); a gateway that did not open the session
continues it from that record. These tests are the core's half: what a
settled session records, and what a restored one does with its first requests.
"""

from __future__ import annotations

import json

import pytest

from lockgate.core import Principal, SessionRecord, SetTimer
from lockgate.core._events import ClientOpened
from lockgate.core._jsonrpc import result
from lockgate.core._transcript_json import event_from_json, event_to_json

from .harness import JSON, Driver, audits, call, make_config, req, sent_to_client
from .test_aggregate import DB_TOOLS, RULES, UTIL_TOOLS, gateway, handshake_db, handshake_util

GATEWAY_TOOLS = ["list_servers", "search_tools", "get_server_tools", "execute_tool"]


def restore(d: Driver, client: str, record: SessionRecord, principal: Principal | None = None) -> list[object]:
    return list(d.handle(ClientOpened(now=d.now, client=client, transport="http", principal=principal, restored=record)))


def on_demand(agent: str | None = "dev") -> SessionRecord:
    return SessionRecord(protocol_version="2025-06-18", capabilities={"roots": {}}, agent=agent, mode="on_demand")


# -- what a session records --------------------------------------------------------


def test_an_initialized_session_records_its_version_capabilities_agent_and_mode() -> None:
    d = Driver(make_config(RULES))
    d.open("s", transport="http")
    assert d.gw.session_record("s") is None  # nothing settled before initialize
    params = {"protocolVersion": "2025-06-18", "capabilities": {"sampling": {}}, "_meta": {"agent_id": "reader"}}
    d.send(req(0, "initialize", params), client="s")
    assert d.gw.session_record("s") == SessionRecord(
        protocol_version="2025-06-18", capabilities={"sampling": {}}, agent="reader", mode="on_demand",
    )
    assert d.gw.session_record("nobody") is None


def test_an_aggregate_session_records_its_mode_once_initialize_is_answered() -> None:
    d = gateway()
    d.open("s", transport="http")
    d.send(req(0, "initialize", {"protocolVersion": "2025-11-25", "capabilities": {}}), client="s")
    handshake_db(d.server("db"))
    handshake_util(d.server("util"))
    assert d.clients["s"].received[-1]["id"] == 0
    assert d.gw.session_record("s") == SessionRecord(protocol_version="2025-11-25", capabilities={}, agent="dev", mode="aggregate")


def test_auto_records_the_mode_it_settled_on() -> None:
    d = gateway(mode="auto", context_window=1_000_000)
    d.open("s", transport="http")
    d.send(req(0, "initialize", {"protocolVersion": "2025-11-25", "capabilities": {}}), client="s")
    assert d.gw.session_record("s") is None  # still deciding: nothing to seal yet
    handshake_db(d.server("db"))
    handshake_util(d.server("util"))
    record = d.gw.session_record("s")
    assert record is not None and record.mode == "aggregate"


def test_stdio_rest_and_stateless_clients_have_no_record() -> None:
    d = Driver(make_config(RULES))
    d.initialize()
    assert d.gw.session_record(0) is not None  # a handshake session over any transport has one
    d.open("r", transport="rest")
    d.open("x", transport="stateless")
    assert (d.gw.session_record("r"), d.gw.session_record("x")) == (None, None)


# -- a restored session ------------------------------------------------------------------


def test_a_restored_session_is_ready_and_serves_without_initialize() -> None:
    d = Driver(make_config(RULES, session_ttl=100.0))
    d.now = 3.0
    assert restore(d, "s", on_demand()) == [SetTimer(timer=1, deadline=103.0)]  # it expires when idle, as any
    [tools] = sent_to_client(d.send(req(1, "tools/list"), client="s"))
    assert [t["name"] for t in tools["result"]["tools"]] == GATEWAY_TOOLS
    assert d.gw.session_record("s") == on_demand()


def test_a_restored_session_refuses_a_second_initialize() -> None:
    d = Driver(make_config(RULES))
    restore(d, "s", on_demand())
    [answer] = sent_to_client(d.send(req(1, "initialize", {"protocolVersion": "2025-11-25", "capabilities": {}}), client="s"))
    assert answer["error"]["message"] == "Session already initialized"


def test_a_restored_session_calls_tools() -> None:
    d = Driver(make_config(RULES))
    restore(d, "s", on_demand(agent="dev"))
    execute = call(1, "execute_tool", agent_id="dev", server="util", tool="echo", args={"text": "hi"})
    d.send(execute, client="s")
    util = d.server("util")
    util.complete_handshake([{"name": "echo", "inputSchema": {"type": "object"}}])
    actions = util.answer("tools/call", result={"content": []})
    assert sent_to_client(actions)[0]["result"]["content"] == []
    assert [(a["agent"], a["decision"]) for a in audits(actions)] == [("dev", "ALLOW")]


def test_a_restored_session_acts_only_as_its_credential_allows_now() -> None:
    # The record's agent is a default, checked on every request as after initialize.
    d = gateway()
    principal = Principal(id="k1", role="agent", agents=("reader",), default_agent="reader")
    restore(d, "s", SessionRecord(protocol_version="2025-11-25", capabilities={}, agent="dev", mode="aggregate"), principal)
    d.send(req(1, "tools/list"), client="s")
    handshake_db(d.server("db"))
    [refused] = sent_to_client(handshake_util(d.server("util")))
    assert refused["id"] == 1 and refused["error"]["data"]["code"] == "DENIED_BY_POLICY"
    assert "k1" in refused["error"]["message"]


def test_a_restored_aggregate_session_waits_for_its_agents_servers_before_a_call() -> None:
    d = gateway()
    restore(d, "s", SessionRecord(protocol_version="2025-11-25", capabilities={}, agent="dev", mode="aggregate"))
    msg = req(7, "tools/call", {"name": "db__get_row", "arguments": {}})
    assert sent_to_client(d.send(msg, client="s")) == []  # waits, as initialize did, for the catalogues
    assert sent_to_client(d.send(req(8, "ping"), client="s")) == [result(8, {})]  # a ping never waits
    handshake_db(d.server("db"))
    actions = handshake_util(d.server("util"))
    forwarded = d.server("db").request("tools/call")
    assert forwarded["params"]["name"] == "get_row"
    assert sent_to_client(actions) == []
    assert sent_to_client(d.server("db").answer(forwarded, result={"content": []})) == [result(7, {"content": []})]
    # Warm now: the next request is served at once.
    [tools] = sent_to_client(d.send(req(9, "tools/list"), client="s"))
    assert [t["name"] for t in tools["result"]["tools"]] == ["db__get_row", "util__echo"]


def test_a_restored_aggregate_session_on_a_warm_gateway_is_served_at_once() -> None:
    d = gateway()
    d.initialize()
    handshake_db(d.server("db"))
    handshake_util(d.server("util"))
    restore(d, "s", SessionRecord(protocol_version="2025-11-25", capabilities={}, agent="dev", mode="aggregate"))
    [tools] = sent_to_client(d.send(req(1, "tools/list"), client="s"))
    assert tools == result(1, {"tools": [{**DB_TOOLS[0], "name": "db__get_row"}, {**UTIL_TOOLS[0], "name": "util__echo"}]})


def test_a_restored_session_closed_while_warming_is_forgotten() -> None:
    d = gateway()
    restore(d, "s", SessionRecord(protocol_version="2025-11-25", capabilities={}, agent="dev", mode="aggregate"))
    d.send(req(1, "tools/list"), client="s")
    d.clients["s"].close()
    handshake_db(d.server("db"))
    assert sent_to_client(handshake_util(d.server("util"))) == []


@pytest.mark.parametrize("record", [None, on_demand()])
def test_a_restored_open_round_trips_through_a_transcript(record: SessionRecord | None) -> None:
    event = ClientOpened(now=1.0, client="s", transport="http", restored=record)
    line: JSON = json.loads(json.dumps(event_to_json(event)))
    assert ("restored" in line) is (record is not None)
    assert event_from_json(line) == event
