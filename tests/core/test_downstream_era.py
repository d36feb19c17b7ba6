"""The era of MCP the gateway speaks to each server: the ``server/discover`` probe, the stateless link, the fallback.

A fake stateless server's answers are fed as events and whole action lists
compared: discover → stateless link → ``tools/list`` and ``tools/call`` in
the era's ``_meta`` envelope; discover refused (-32601, an HTTP 4xx,
-32022, a result without 2026-07-28) → ``initialize`` on the same
connection; health checks with ``server/discover``.
"""

from __future__ import annotations

import json
from typing import Any

from lockgate.core import __version__, routing_headers
from lockgate.core._actions import Audit, CancelTimer, Log, SendToClient, SendToDownstream, SetTimer, StartDownstream, StopDownstream
from lockgate.core._downstream_era import header_value
from lockgate.core._events import DownstreamHttpError
from lockgate.core._jsonrpc import Request, decode, encode

from .harness import ECHO_TOOL, GET_TOOL, Driver, audited, call, make_config, req, sent_downstream, sent_to_client, server, structured

JSON = dict[str, Any]

CLIENT_INFO = {"name": "lockgate", "version": __version__}
#: The envelope of an on-demand gateway: it relays nothing a server asks, so it declares no capability.
ENVELOPE: JSON = {
    "io.modelcontextprotocol/protocolVersion": "2026-07-28",
    "io.modelcontextprotocol/clientCapabilities": {},
    "io.modelcontextprotocol/clientInfo": CLIENT_INFO,
}
INIT = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": CLIENT_INFO}
#: What an SDK MCPServer answers to server/discover (2026-07-28).
DISCOVERED: JSON = {
    "supportedVersions": ["2026-07-28"],
    "capabilities": {"tools": {"listChanged": True}, "logging": {}},
    "instructions": "Use echo to echo.",
    "resultType": "complete",
    "ttlMs": 0,
    "cacheScope": "public",
    "_meta": {"io.modelcontextprotocol/serverInfo": {"name": "db-server", "version": "2.0"}},
}


def discover(wire_id: int, envelope: JSON = ENVELOPE) -> SendToDownstream:
    return SendToDownstream(downstream=1, message=req(wire_id, "server/discover", {"_meta": envelope}))


def started(era: str = "auto", **settings: Any) -> tuple[Driver, list[Any]]:
    """A driver whose client asked for db's tools (starting db at t=1), and the actions of that request."""
    d = Driver(make_config(downstream_era=era, **settings))
    d.initialize()
    d.now = 1.0
    return d, d.send(call(7, "get_server_tools", agent_id="dev", server="db"))


def stateless_ready(**settings: Any) -> Driver:
    """A driver whose server db is READY on a stateless link, offering echo and get_user."""
    d, _ = started(**settings)
    db = d.server("db")
    db.answer("server/discover", result=DISCOVERED)
    db.answer("tools/list", result={"tools": [ECHO_TOOL, GET_TOOL], "resultType": "complete", "ttlMs": 0, "cacheScope": "public"})
    return d


# -- the probe -------------------------------------------------------------------


def test_a_stateless_server_gets_discover_then_every_request_in_the_envelope() -> None:
    d, actions = started()
    assert actions == [
        SetTimer(timer=1, deadline=61.0),
        StartDownstream(downstream=1, server="db", spec=server("db")),
        discover(1),
        SetTimer(timer=2, deadline=31.0),  # the start timeout covers the probe and what follows
    ]
    db = d.server("db")
    d.now = 1.5
    # No initialize, no notifications/initialized: the discover result stands for them.
    assert db.answer("server/discover", result=DISCOVERED) == [
        SendToDownstream(downstream=1, message=req(2, "tools/list", {"_meta": ENVELOPE})),
    ]
    d.now = 2.0
    page = {"tools": [ECHO_TOOL], "nextCursor": "2", "resultType": "complete", "ttlMs": 60000, "cacheScope": "public"}
    # Pagination: the cursor and the envelope side by side.
    assert db.answer("tools/list", result=page) == [
        SendToDownstream(downstream=1, message=req(3, "tools/list", {"cursor": "2", "_meta": ENVELOPE})),
    ]
    actions = db.answer("tools/list", result={"tools": [GET_TOOL], "resultType": "complete", "ttlMs": 60000, "cacheScope": "public"})
    value = structured(sent_to_client(actions)[0])
    assert [t["name"] for t in value["tools"]] == ["echo", "get_user"]  # the cached catalogue, both pages
    assert actions[:4] == [
        CancelTimer(timer=2),
        Log(level="info", message="server ready", fields={"server": "db", "tools": 2, "protocol": "2026-07-28"}),
        # What it says outside a call comes only on a listen stream: the list changes it offers.
        SendToDownstream(downstream=1, message=req(4, "subscriptions/listen", {"notifications": {"toolsListChanged": True}, "_meta": ENVELOPE})),
        CancelTimer(timer=1),
    ]
    d.now = 3.0
    first = call(8, "execute_tool", agent_id="dev", server="db", tool="echo", args={"text": "hi"})
    assert d.send(first) == [
        SetTimer(timer=3, deadline=63.0),
        SendToDownstream(downstream=1, message=req(5, "tools/call", {"name": "echo", "arguments": {"text": "hi"}, "_meta": ENVELOPE})),
    ]
    # The result goes back as the server sent it, resultType included.
    answer = {"content": [{"type": "text", "text": "hi"}], "isError": False, "resultType": "complete"}
    assert db.answer("tools/call", result=answer) == [
        CancelTimer(timer=3),
        SendToClient(client=0, request=8, message={"jsonrpc": "2.0", "id": 8, "result": answer}),
        audited(first, rule="agents.dev.allow.servers[0]"),
    ]


def test_the_discover_result_stands_for_the_initialize_result() -> None:
    d = stateless_ready()
    link = d.gw._ctx.pools["db"].shared[0]
    assert (link.era, link.protocol_version) == ("stateless", "2026-07-28")
    assert link.capabilities == DISCOVERED["capabilities"]
    assert link.instructions == "Use echo to echo."
    assert link.server_info == {"name": "db-server", "version": "2.0"}
    db = d.gw.status()["servers"]["db"]
    assert (db["protocol_version"], db["era"], db["server_info"]) == ("2026-07-28", "stateless", {"name": "db-server", "version": "2.0"})
    assert [i["era"] for i in db["instances"]] == ["stateless"]
    assert d.gw.readiness()["eras"] == {"db": "stateless", "util": None}


def test_a_handshake_era_server_answers_minus_32601_and_gets_initialize_on_the_same_connection() -> None:
    d, _ = started()
    db = d.server("db")
    d.now = 1.5
    not_found = {"code": -32601, "message": "Method not found: server/discover"}
    assert db.answer("server/discover", error=not_found) == [
        Log(level="debug", message="server does not speak the stateless era; using initialize", fields={"server": "db", "reason": "error -32601"}),
        SendToDownstream(downstream=1, message=req(2, "initialize", INIT)),  # no new start timer: the probe's runs on
    ]
    assert db.answer("initialize", result={"protocolVersion": "2025-11-25", "capabilities": {}, "serverInfo": {"name": "db"}}) == [
        SendToDownstream(downstream=1, message={"jsonrpc": "2.0", "method": "notifications/initialized"}),
        SendToDownstream(downstream=1, message=req(3, "tools/list")),  # and no envelope
    ]
    db.answer("tools/list", result={"tools": [ECHO_TOOL]})
    d.send(call(8, "execute_tool", agent_id="dev", server="db", tool="echo", args={}))
    assert db.request("tools/call") == req(4, "tools/call", {"name": "echo", "arguments": {}})
    assert d.gw.status()["servers"]["db"]["era"] == "handshake"


def test_any_other_answer_falls_back_too() -> None:
    errors: list[JSON] = [
        {"error": {"code": -32600, "message": "Invalid Request"}},
        {"error": {"code": -32602, "message": "Invalid params"}},
        {"result": {"supportedVersions": ["2025-11-25"], "capabilities": {}}},  # discover, and no stateless version
        {"result": {"capabilities": {}}},
        {"error": {"code": -32022, "message": "Unsupported", "data": {"supported": ["2025-06-18"], "requested": "2026-07-28"}}},
    ]
    for answer in errors:
        d, _ = started()
        db = d.server("db")
        assert sent_downstream(db.send({"jsonrpc": "2.0", "id": 1, **answer})) == [req(2, "initialize", INIT)], answer


def test_minus_32022_naming_no_version_the_gateway_speaks_says_so_and_still_tries_initialize() -> None:
    d, _ = started()
    db = d.server("db")
    refusal = {"code": -32022, "message": "Unsupported protocol version", "data": {"supported": ["2027-01-01"], "requested": "2026-07-28"}}
    assert db.answer("server/discover", error=refusal) == [
        Log(level="warning", message="server supports no protocol version the gateway speaks", fields={"server": "db", "supported": ["2027-01-01"]}),
        SendToDownstream(downstream=1, message=req(2, "initialize", INIT)),
    ]


def test_an_http_4xx_to_the_probe_means_handshake_era() -> None:
    for status, body in ((400, b"Bad Request"), (404, b""), (405, b"Method Not Allowed")):
        d, _ = started()
        db = d.server("db")
        probe = db.request("server/discover")
        db.answered.add(probe["id"])
        actions = d.handle(DownstreamHttpError(now=d.now, downstream=db.id, data=encode(probe) + b"\n", status=status, body=body))
        assert sent_downstream(actions) == [req(2, "initialize", INIT)], status
        assert db.alive
    # With a JSON-RPC error body, that error is the probe's answer: the same fallback.
    d, _ = started()
    db = d.server("db")
    probe = db.request("server/discover")
    db.answered.add(probe["id"])
    body = json.dumps({"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": "Bad Request: unsupported version"}}).encode()
    actions = d.handle(DownstreamHttpError(now=d.now, downstream=db.id, data=encode(probe) + b"\n", status=400, body=body))
    assert sent_downstream(actions) == [req(2, "initialize", INIT)]


def test_a_probe_never_answered_fails_the_start_in_its_timeout_and_the_next_start_skips_it() -> None:
    d, _ = started()
    actions = d.advance(30)  # start_timeout_ms: 30 s for probe and handshake together
    assert StopDownstream(downstream=1) in actions
    assert d.gw.status()["servers"]["db"]["last_error"] == "did not finish its MCP handshake within 30 s"
    d.advance(1)  # the backoff is over: the second start goes straight to initialize
    assert d.server("db").received == [req(1, "initialize", INIT)]


def test_handshake_setting_never_probes_and_stateless_setting_never_falls_back() -> None:
    d, actions = started("handshake")
    assert sent_downstream(actions) == [req(1, "initialize", INIT)]
    d, actions = started("stateless")
    assert sent_downstream(actions) == [discover(1).message]
    db = d.server("db")
    actions = db.answer("server/discover", error={"code": -32601, "message": "Method not found"})
    assert actions[0] == StopDownstream(downstream=1)
    reason = "does not speak MCP 2026-07-28 (error -32601), and GATEWAY_DOWNSTREAM_ERA is stateless"
    assert d.gw.status()["servers"]["db"]["last_error"] == reason


def test_a_restart_decides_the_era_again() -> None:
    d = stateless_ready()
    d.server("db").exit()
    d.advance(1)
    db = d.server("db")
    assert db.received == [discover(1).message]
    db.answer("server/discover", error={"code": -32601, "message": "Method not found"})
    assert db.received[-1] == req(2, "initialize", INIT)  # a plain request: the old connection's envelope is gone


# -- health checks ---------------------------------------------------------------


def test_a_stateless_link_is_health_checked_with_discover() -> None:
    d = stateless_ready(health_interval=10)
    d.now = 1.0
    actions = d.advance(10)
    assert sent_downstream(actions) == [req(4, "server/discover", {"_meta": ENVELOPE})]  # 3 is its listen stream
    db = d.server("db")
    actions = db.answer("server/discover", result=DISCOVERED)
    assert [type(a) for a in actions] == [CancelTimer, SetTimer]  # alive: the next check is set


def test_a_handshake_link_is_still_pinged() -> None:
    d, _ = started(health_interval=10)
    db = d.server("db")
    db.answer("server/discover", error={"code": -32601, "message": "Method not found"})
    db.complete_handshake([ECHO_TOOL])
    assert sent_downstream(d.advance(10)) == [req(4, "ping")]


# -- aggregate mode --------------------------------------------------------------

AGGREGATE_ENVELOPE = {
    **ENVELOPE,
    "io.modelcontextprotocol/clientCapabilities": {"sampling": {}, "elicitation": {"form": {}, "url": {}}, "roots": {"listChanged": True}},
}


def aggregate_ready() -> Driver:
    """An aggregate client over one stateless server db (its tools, resources, and logging)."""
    d = Driver(make_config(servers=("db",), mode="aggregate", default_agent="dev", downstream_era="auto"))
    d.send(req(0, "initialize", {"protocolVersion": "2025-11-25", "capabilities": {}}))
    db = d.server("db")
    assert db.received == [req(1, "server/discover", {"_meta": AGGREGATE_ENVELOPE})]
    offer = {**DISCOVERED, "capabilities": {"tools": {}, "logging": {}, "resources": {"subscribe": True}}}
    db.answer("server/discover", result=offer)
    db.answer("tools/list", result={"tools": [ECHO_TOOL], "resultType": "complete", "ttlMs": 0, "cacheScope": "public"})
    db.answer("resources/list", result={"resources": [{"uri": "file:///a", "name": "a"}], "resultType": "complete", "ttlMs": 0, "cacheScope": "public"})
    db.answer("resources/templates/list", result={"resourceTemplates": [], "resultType": "complete", "ttlMs": 0, "cacheScope": "public"})
    d.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
    return d


def test_aggregate_calls_merge_the_envelope_with_the_progress_token_and_the_log_level() -> None:
    d = aggregate_ready()
    db = d.server("db")
    # logging/setLevel is not in the stateless era: answered, kept, and not sent down.
    actions = d.send(req(1, "logging/setLevel", {"level": "info"}))
    assert sent_downstream(actions) == []
    assert sent_to_client(actions) == [{"jsonrpc": "2.0", "id": 1, "result": {}}]
    d.send(req(2, "tools/call", {"name": "echo", "arguments": {"text": "x"}, "_meta": {"progressToken": "p"}}))
    # The call declares its own client's capabilities, of those the gateway relays: here none.
    meta = {"progressToken": 5, "io.modelcontextprotocol/logLevel": "info", **ENVELOPE}
    assert db.request("tools/call") == req(5, "tools/call", {"name": "echo", "arguments": {"text": "x"}, "_meta": meta})
    # So a server that asks anyway is out of turn: the call ends with -32021.
    pending = {"resultType": "input_required", "inputRequests": {"a": {"method": "elicitation/create"}}, "requestState": "opaque"}
    [refused] = sent_to_client(db.answer("tools/call", result=pending))
    assert refused["id"] == 2 and refused["error"]["code"] == -32021
    assert refused["error"]["data"] == {"code": "MISSING_CLIENT_CAPABILITY", "server": "db"}


def test_a_stateless_servers_questions_become_requests_to_a_handshake_era_client_and_its_answers_the_retry() -> None:
    d = Driver(make_config(servers=("db",), mode="aggregate", default_agent="dev", downstream_era="auto"))
    d.send(req(0, "initialize", {"protocolVersion": "2025-11-25", "capabilities": {"elicitation": {}, "roots": {}}}))
    db = d.server("db")
    db.answer("server/discover", result=DISCOVERED)
    db.answer("tools/list", result={"tools": [ECHO_TOOL], "resultType": "complete", "ttlMs": 0, "cacheScope": "public"})
    d.send(req(2, "tools/call", {"name": "echo", "arguments": {"text": "x"}}))
    first = db.request("tools/call")
    assert first["params"]["_meta"]["io.modelcontextprotocol/clientCapabilities"] == {"elicitation": {}, "roots": {}}
    asked = {
        "resultType": "input_required", "requestState": "opaque-1",
        "inputRequests": {
            "name": {"method": "elicitation/create", "params": {"message": "Name?", "requestedSchema": {"type": "object"}}},
            "where": {"method": "roots/list", "params": {}},
        },
    }
    actions = db.answer(first, result=asked)
    assert actions[:2] == [
        SendToClient(client=0, request=2, message=req("lockgate-1", "elicitation/create", {"message": "Name?", "requestedSchema": {"type": "object"}})),
        SendToClient(client=0, request=2, message=req("lockgate-2", "roots/list", {})),
    ]
    assert sent_downstream(d.send({"jsonrpc": "2.0", "id": "lockgate-2", "result": {"roots": []}})) == []
    actions = d.send({"jsonrpc": "2.0", "id": "lockgate-1", "result": {"action": "accept", "content": {"name": "Ada"}}})
    [retry] = sent_downstream(actions)
    assert retry["method"] == "tools/call" and retry["id"] != first["id"]
    assert retry["params"]["inputResponses"] == {"name": {"action": "accept", "content": {"name": "Ada"}}, "where": {"roots": []}}
    assert retry["params"]["requestState"] == "opaque-1" and retry["params"]["name"] == "echo"
    done = db.answer(retry, result={"content": [{"type": "text", "text": "hi Ada"}], "resultType": "complete"})
    assert sent_to_client(done) == [{"jsonrpc": "2.0", "id": 2, "result": {"content": [{"type": "text", "text": "hi Ada"}], "resultType": "complete"}}]
    assert [type(a) for a in done if isinstance(a, Audit)] == [Audit]


def test_aggregate_subscriptions_are_the_gateways_own_on_a_stateless_link() -> None:
    d = aggregate_ready()
    db = d.server("db")
    before = len(db.received)
    actions = d.send(req(3, "resources/subscribe", {"uri": "file:///a"}))
    assert sent_to_client(actions) == [{"jsonrpc": "2.0", "id": 3, "result": {}}]
    assert [type(a) for a in actions if isinstance(a, Audit)] == [Audit]
    # No resources/subscribe in the stateless era: a listen stream for the resource instead.
    assert db.received[before:] == [req(5, "subscriptions/listen", {"notifications": {"resourceSubscriptions": ["file:///a"]}, "_meta": AGGREGATE_ENVELOPE})]
    assert d.gw._ctx.subscriptions == {("db", "file:///a"): {0}}
    # An update on it reaches the subscriber.
    update = db.send({"jsonrpc": "2.0", "method": "notifications/resources/updated", "params": {
        "uri": "file:///a", "_meta": {"io.modelcontextprotocol/subscriptionId": 5}}})
    assert [m["method"] for m in sent_to_client(update)] == ["notifications/resources/updated"]
    assert sent_to_client(d.send(req(4, "resources/unsubscribe", {"uri": "file:///a"}))) == [{"jsonrpc": "2.0", "id": 4, "result": {}}]
    # Nothing left to listen for: the stream is cancelled and none opened.
    assert db.received[before + 1:] == [{"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 5, "reason": "listening again"}}]


def test_a_cancelled_call_on_a_stateless_stdio_link_is_cancelled_by_notification() -> None:
    d = stateless_ready()
    d.send(call(8, "execute_tool", agent_id="dev", server="db", tool="echo", args={}))
    wire = d.server("db").request("tools/call")["id"]
    actions = d.send({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 8, "reason": "user"}})
    # The HTTP shell turns this into closing the request's stream; over stdio it is the era's own spelling.
    assert sent_downstream(actions) == [{"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": wire, "reason": "user"}}]


# -- the shapes --------------------------------------------------------------------


def test_routing_headers_come_from_the_body() -> None:
    def headers(message: JSON) -> dict[str, str] | None:
        msg = decode(encode(message))
        assert isinstance(msg, Request)
        return routing_headers(msg)

    base = {"mcp-protocol-version": "2026-07-28"}
    assert headers(req(1, "tools/call", {"name": "echo", "_meta": ENVELOPE})) == {**base, "mcp-method": "tools/call", "mcp-name": "echo"}
    assert headers(req(1, "resources/read", {"uri": "file:///ä", "_meta": ENVELOPE})) == {
        **base, "mcp-method": "resources/read", "mcp-name": "=?base64?ZmlsZTovLy/DpA==?=",
    }
    assert headers(req(1, "tools/list", {"_meta": ENVELOPE})) == {**base, "mcp-method": "tools/list"}
    assert headers(req(1, "tools/call", {"name": "echo"})) is None  # handshake era: none of these
    assert headers(req(1, "initialize", INIT)) is None
    assert header_value("a b") == "a b"
    assert header_value(" a") == "=?base64?IGE=?="
    assert header_value("=?base64?eA==?=") == "=?base64?PT9iYXNlNjQ/ZUE9PT89?="
    assert header_value("line\nbreak") == "=?base64?bGluZQpicmVhaw==?="


def test_a_transcript_recorded_before_the_setting_replays_in_the_handshake_era() -> None:
    from lockgate.core._transcript_json import config_from_json, config_to_json

    config = make_config(downstream_era="auto")
    written = config_to_json(config, {"agents": {}})
    assert written["settings"]["downstream_era"] == "auto"
    del written["settings"]["downstream_era"]
    assert config_from_json(written).settings.downstream_era == "handshake"



def test_a_stateless_servers_list_change_on_its_listen_stream_reaches_aggregate_clients() -> None:
    d = Driver(make_config(servers=("db",), mode="aggregate", default_agent="dev", downstream_era="auto"))
    d.send(req(0, "initialize", {"protocolVersion": "2025-11-25", "capabilities": {}}))
    db = d.server("db")
    db.answer("server/discover", result={**DISCOVERED, "capabilities": {"tools": {"listChanged": True}}})
    listed = {"tools": [ECHO_TOOL], "resultType": "complete", "ttlMs": 0, "cacheScope": "public"}
    db.answer("tools/list", result=listed)
    d.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
    listen = db.request("subscriptions/listen")
    assert listen["params"]["notifications"] == {"toolsListChanged": True}
    # The server acknowledges, then tells of a change, tagged with the stream's id.
    tag = {"_meta": {"io.modelcontextprotocol/subscriptionId": listen["id"]}}
    assert sent_to_client(db.send({"jsonrpc": "2.0", "method": "notifications/subscriptions/acknowledged", "params": {
        "notifications": {"toolsListChanged": True}, **tag}})) == []
    relisted = db.send({"jsonrpc": "2.0", "method": "notifications/tools/list_changed", "params": tag})
    assert [m["method"] for m in sent_downstream(relisted)] == ["tools/list"]
    changed = db.answer("tools/list", result={**listed, "tools": [ECHO_TOOL, GET_TOOL]})
    assert sent_to_client(changed) == [{"jsonrpc": "2.0", "method": "notifications/tools/list_changed"}]
    # A server that ends its stream is not asked again at once.
    ended = db.answer(listen, result={"_meta": tag["_meta"]})
    assert sent_downstream(ended) == []
