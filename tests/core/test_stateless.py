"""The front's stateless era (MCP 2026-07-28): the envelope, discover, shaped answers, era per client."""

from __future__ import annotations

from typing import Any

import pytest

from lockgate.core import Principal, SendToClient, __version__
from lockgate.core._eras import CLIENT_CAPABILITIES_KEY, PROTOCOL_VERSION_KEY, SERVER_INFO_KEY
from lockgate.core._jsonrpc import Request
from lockgate.core._stateless import Envelope, Refused, decode_header_value, read_envelope, shape_answer

from .harness import ECHO_TOOL, JSON, RULES, Driver, audits, call, make_config, req, sent_downstream, sent_to_client
from .test_aggregate import DB_TOOLS, gateway, handshake_db

MODERN = "2026-07-28"
ENVELOPE: JSON = {PROTOCOL_VERSION_KEY: MODERN, CLIENT_CAPABILITIES_KEY: {}}


def modern(id: Any, method: str, params: JSON | None = None, **meta: Any) -> JSON:
    """A 2026-07-28 request: ``params`` with the envelope in ``_meta``."""
    return req(id, method, {**(params or {}), "_meta": {**ENVELOPE, **meta}})


def modern_call(id: Any, tool: str, /, **arguments: Any) -> JSON:
    message = call(id, tool, **arguments)
    message["params"]["_meta"] = dict(ENVELOPE)
    return message


# -- the envelope ladder ------------------------------------------------------------------


def _request(method: str, params: JSON) -> Request:
    return Request(id=1, method=method, params=params, raw={"jsonrpc": "2.0", "id": 1, "method": method, "params": params})


def test_the_envelope_needs_the_version_and_the_capabilities() -> None:
    assert read_envelope(_request("tools/list", {})) == Refused(
        -32602, f"params._meta must be an object carrying {PROTOCOL_VERSION_KEY!r} and {CLIENT_CAPABILITIES_KEY!r}",
        {"parameter": "_meta"},
    )
    missing = read_envelope(_request("tools/list", {"_meta": {PROTOCOL_VERSION_KEY: MODERN}}))
    assert missing == Refused(
        -32602, f"params._meta is missing {CLIENT_CAPABILITIES_KEY}", {"parameter": f"_meta.{CLIENT_CAPABILITIES_KEY}"}
    )
    assert read_envelope(_request("tools/list", {"_meta": ENVELOPE})) == Envelope(MODERN, {})


def test_an_unsupported_version_names_the_supported_ones() -> None:
    refused = read_envelope(_request("tools/list", {"_meta": {**ENVELOPE, PROTOCOL_VERSION_KEY: "2027-01-01"}}))
    assert refused == Refused(
        -32022, "Unsupported protocol version: 2027-01-01", {"supported": [MODERN], "requested": "2027-01-01"}
    )
    # A handshake-era version in the envelope is not one the stateless era speaks.
    old = read_envelope(_request("tools/list", {"_meta": {**ENVELOPE, PROTOCOL_VERSION_KEY: "2025-11-25"}}))
    assert isinstance(old, Refused) and old.code == -32022
    not_a_string = read_envelope(_request("tools/list", {"_meta": {**ENVELOPE, PROTOCOL_VERSION_KEY: 20260728}}))
    assert isinstance(not_a_string, Refused) and not_a_string.code == -32602


def test_the_routing_headers_must_match_the_body() -> None:
    params = {"name": "echo", "arguments": {}, "_meta": ENVELOPE}
    good = {"mcp-protocol-version": MODERN, "mcp-method": "tools/call", "mcp-name": "echo"}
    assert read_envelope(_request("tools/call", params), good) == Envelope(MODERN, {})
    for header, value in [
        ("mcp-protocol-version", "2025-11-25"), ("mcp-method", "tools/list"), ("mcp-name", "other"),
        ("mcp-name", "echo, echo"),  # sent twice: joined, it matches nothing
    ]:
        refused = read_envelope(_request("tools/call", params), {**good, header: value})
        assert isinstance(refused, Refused) and refused.code == -32020 and refused.http_status == 400, (header, value)
    absent = {k: v for k, v in good.items() if k != "mcp-method"}
    assert isinstance(read_envelope(_request("tools/call", params), absent), Refused)
    # A mismatch is reported before an unsupported version: the client disagrees with itself.
    future = {**params, "_meta": {**ENVELOPE, PROTOCOL_VERSION_KEY: "2027-01-01"}}
    mixed = read_envelope(_request("tools/call", future), good)
    assert isinstance(mixed, Refused) and mixed.code == -32020


def test_mcp_name_in_its_base64_form() -> None:
    uri = "file:///tmp/naïve résumé.txt"
    params = {"uri": uri, "_meta": ENVELOPE}
    encoded = "=?base64?ZmlsZTovLy90bXAvbmHDr3ZlIHLDqXN1bcOpLnR4dA==?="
    assert decode_header_value(encoded) == uri
    headers = {"mcp-protocol-version": MODERN, "mcp-method": "resources/read", "mcp-name": encoded}
    assert read_envelope(_request("resources/read", params), headers) == Envelope(MODERN, {})
    # Malformed or non-canonical base64 matches nothing.
    assert decode_header_value("=?base64?not base64!?=") is None
    assert decode_header_value("=?base64?YQ=?=") is None
    assert decode_header_value("plain") == "plain" and decode_header_value(None) is None


# -- answers shaped for the era ------------------------------------------------------------


def test_every_result_says_what_it_is_and_cacheable_ones_are_private() -> None:
    answer = {"jsonrpc": "2.0", "id": 1, "result": {"content": []}}
    assert shape_answer(answer, "tools/call") == {"jsonrpc": "2.0", "id": 1, "result": {"content": [], "resultType": "complete"}}
    assert answer == {"jsonrpc": "2.0", "id": 1, "result": {"content": []}}  # never changed in place
    mrtr = {"jsonrpc": "2.0", "id": 1, "result": {"resultType": "input_required", "inputRequests": {}, "requestState": "s"}}
    assert shape_answer(mrtr, "tools/call") is mrtr
    listed = shape_answer({"jsonrpc": "2.0", "id": 1, "result": {"tools": []}}, "tools/list")
    assert listed["result"] == {"tools": [], "resultType": "complete", "cacheScope": "private", "ttlMs": 0}
    # A server's public answer is private through a gateway that decides per agent; its ttl stands.
    read = shape_answer({"jsonrpc": "2.0", "id": 1, "result": {"contents": [], "cacheScope": "public", "ttlMs": 5000}}, "resources/read")
    assert read["result"] == {"contents": [], "cacheScope": "private", "ttlMs": 5000, "resultType": "complete"}
    unknown = {"jsonrpc": "2.0", "id": 1, "error": {"code": -32002, "message": "Resource not found", "data": {"uri": "x"}}}
    assert shape_answer(unknown, "resources/read")["error"] == {"code": -32602, "message": "Resource not found", "data": {"uri": "x"}}
    assert shape_answer(unknown, "tools/call") is unknown


# -- a stdio client of the stateless era, on demand ---------------------------------------------


def test_discover_opens_the_stateless_era_on_demand() -> None:
    d = Driver()
    actions = d.send(modern(1, "server/discover"))
    assert actions == [SendToClient(client=0, request=1, message={"jsonrpc": "2.0", "id": 1, "result": {
        "supportedVersions": [MODERN],
        "capabilities": {"tools": {"listChanged": False}, "logging": {}},
        "instructions": (
            "Tools of other MCP servers are reached through this gateway: call list_servers, "
            "then get_server_tools for a server, then execute_tool."
        ),
        "_meta": {SERVER_INFO_KEY: {"name": "lockgate", "version": __version__}},
        "resultType": "complete", "cacheScope": "private", "ttlMs": 0,
    }})]


def test_requests_need_no_initialize_and_each_carries_its_envelope() -> None:
    d = Driver()
    [listed] = sent_to_client(d.send(modern(1, "tools/list")))
    assert listed["result"]["resultType"] == "complete" and listed["result"]["cacheScope"] == "private"
    assert [tool["name"] for tool in listed["result"]["tools"]][:2] == ["list_servers", "search_tools"]
    # Without the envelope: -32602, and the next request with it is served.
    [refused] = sent_to_client(d.send(req(2, "tools/list")))
    assert refused["error"]["code"] == -32602 and refused["id"] == 2
    d.send(modern_call(3, "execute_tool", agent_id="dev", server="db", tool="echo", args={"text": "hi"}))
    db = d.server("db")
    db.complete_handshake(tools=[ECHO_TOOL])
    assert db.request("tools/call")["params"]["name"] == "echo"
    actions = db.answer("tools/call", result={"content": [{"type": "text", "text": "hi"}]})
    assert sent_to_client(actions) == [
        {"jsonrpc": "2.0", "id": 3, "result": {"content": [{"type": "text", "text": "hi"}], "resultType": "complete"}}
    ]


@pytest.mark.parametrize("method", ["ping", "logging/setLevel", "initialize"])
def test_what_the_stateless_era_removed_is_not_found(method: str) -> None:
    d = Driver()
    d.send(modern(1, "server/discover"))
    [answer] = sent_to_client(d.send(modern(2, method, {"level": "info"} if method == "logging/setLevel" else {})))
    assert answer["error"]["code"] == -32601 and answer["id"] == 2


def test_the_first_request_decides_the_era() -> None:
    d = Driver()
    d.initialize()
    # A handshake-era session that sends discover gets what a handshake-era server gives: not found.
    [answer] = sent_to_client(d.send(modern(5, "server/discover")))
    assert answer["error"]["code"] == -32601
    # And a handshake-era answer carries no stateless fields.
    [listed] = sent_to_client(d.send(req(6, "tools/list")))
    assert "resultType" not in listed["result"]
    # A stateless client never becomes a handshake-era one: initialize is not a method it has.
    e = Driver()
    e.send(modern(1, "tools/list"))
    [again] = sent_to_client(e.send(req(2, "initialize", {"protocolVersion": "2025-11-25", "capabilities": {}})))
    assert again["error"]["code"] == -32602  # no envelope, so refused before anything else


def test_an_unsupported_version_is_minus_32022_and_the_client_can_retry() -> None:
    d = Driver()
    [answer] = sent_to_client(d.send(modern(1, "server/discover", **{PROTOCOL_VERSION_KEY: "2099-01-01"})))
    assert answer["error"]["code"] == -32022
    assert answer["error"]["data"] == {"code": "UNSUPPORTED_PROTOCOL_VERSION", "supported": [MODERN], "requested": "2099-01-01"}
    [ok] = sent_to_client(d.send(modern(2, "server/discover")))
    assert ok["result"]["supportedVersions"] == [MODERN]


def test_a_notification_about_no_request_does_not_reach_a_stateless_client() -> None:
    d = gateway()
    d.send(modern(1, "tools/list"))
    db, util = d.server("db"), d.server("util")
    handshake_db(db)
    util.answer("initialize", result={"protocolVersion": "2025-11-25", "capabilities": {"tools": {"listChanged": True}}, "serverInfo": {"name": "util", "version": "1"}})
    [listed] = sent_to_client(util.answer("tools/list", result={"tools": [ECHO_TOOL]}))
    assert [tool["name"] for tool in listed["result"]["tools"]] == ["db__get_row", "util__echo"]
    assert listed["result"]["ttlMs"] == 0 and listed["result"]["cacheScope"] == "private"
    util.notify("notifications/tools/list_changed")
    actions = util.answer("tools/list", result={"tools": [ECHO_TOOL, {"name": "more", "inputSchema": {"type": "object"}}]})
    assert sent_to_client(actions) == []  # no session stream to tell it on


# -- aggregate and auto -----------------------------------------------------------------------


def test_discover_in_aggregate_mode_waits_for_the_servers_and_merges_their_capabilities() -> None:
    d = gateway()
    assert sent_to_client(d.send(modern(1, "server/discover"))) == []
    handshake_db(d.server("db"))
    util = d.server("util")
    util.answer("initialize", result={"protocolVersion": "2025-11-25", "capabilities": {"tools": {}, "prompts": {}}, "serverInfo": {"name": "util", "version": "1"}})
    util.answer("tools/list", result={"tools": []})
    [found] = sent_to_client(util.answer("prompts/list", result={"prompts": []}))
    result = found["result"]
    assert result["supportedVersions"] == [MODERN] and result["resultType"] == "complete"
    assert set(result["capabilities"]) >= {"tools", "resources", "prompts"}
    assert result["_meta"][SERVER_INFO_KEY]["name"] == "lockgate" and "Tables are read-only." in result["instructions"]


def test_aggregate_calls_and_reads_are_shaped_and_an_unknown_resource_is_minus_32602() -> None:
    d = gateway()
    d.send(modern(1, "tools/list"))
    handshake_db(d.server("db"))
    util = d.server("util")
    util.answer("initialize", result={"protocolVersion": "2025-11-25", "capabilities": {"tools": {}}, "serverInfo": {"name": "util", "version": "1"}})
    util.answer("tools/list", result={"tools": []})
    d.send(modern(2, "tools/call", {"name": "db__get_row", "arguments": {}}))
    db = d.server("db")
    [answer] = sent_to_client(db.answer("tools/call", result={"content": []}))
    assert answer == {"jsonrpc": "2.0", "id": 2, "result": {"content": [], "resultType": "complete"}}
    # A tool the agent may not call was never listed to it: unknown, as in the handshake era.
    [denied] = sent_to_client(d.send(modern(3, "tools/call", {"name": "db__drop_table", "arguments": {}})))
    assert denied["error"] == {"code": -32602, "message": "Unknown tool: db__drop_table", "data": {"code": "INVALID_PARAMS"}}
    [missing] = sent_to_client(d.send(modern(4, "resources/read", {"uri": "db://nowhere"})))
    assert missing["id"] == 4 and missing["error"]["code"] == -32602


def test_mode_auto_decides_at_the_first_request_then_serves_it() -> None:
    d = gateway(mode="auto")
    assert sent_to_client(d.send(modern(1, "tools/list"))) == []  # waits for the agent's servers
    handshake_db(d.server("db"))
    util = d.server("util")
    util.answer("initialize", result={"protocolVersion": "2025-11-25", "capabilities": {"tools": {}}, "serverInfo": {"name": "util", "version": "1"}})
    [listed] = sent_to_client(util.answer("tools/list", result={"tools": []}))
    # Two small tools are well under the threshold: aggregate, so the servers' own tools.
    assert [tool["name"] for tool in listed["result"]["tools"]] == ["db__get_row"]
    assert listed["result"]["resultType"] == "complete"


def test_a_stateless_http_request_is_a_client_of_its_own_and_closing_it_cancels_its_call() -> None:
    d = Driver()
    d.open("r1", transport="stateless")
    d.send(modern_call(7, "execute_tool", agent_id="dev", server="db", tool="echo", args={"text": "x"}), client="r1")
    db = d.server("db")
    db.complete_handshake(tools=[ECHO_TOOL])
    wire = db.request("tools/call")
    assert wire["params"]["name"] == "echo"
    actions = d.clients["r1"].close()
    assert sent_downstream(actions) == [
        {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": wire["id"], "reason": "the client went away"}}
    ]
    [record] = audits(actions)
    assert (record["decision"], record["error_code"]) == ("ERROR", "CANCELLED")


def test_tools_listed_for_a_stateless_client_are_in_a_deterministic_order() -> None:
    d = gateway()
    d.send(modern(1, "tools/list"))
    handshake_db(d.server("db"))
    util = d.server("util")
    util.answer("initialize", result={"protocolVersion": "2025-11-25", "capabilities": {"tools": {}}, "serverInfo": {"name": "util", "version": "1"}})
    [first] = sent_to_client(util.answer("tools/list", result={"tools": [ECHO_TOOL, {"name": "abc", "inputSchema": {"type": "object"}}]}))
    [second] = sent_to_client(d.send(modern(2, "tools/list")))
    assert first["result"]["tools"] == second["result"]["tools"]
    assert DB_TOOLS[0]["name"] in first["result"]["tools"][0]["name"]


def test_a_stateless_client_on_a_config_with_rules() -> None:
    d = Driver(make_config(RULES))
    [listed] = sent_to_client(d.send(modern(1, "tools/list")))
    assert listed["result"]["resultType"] == "complete"


# -- subscriptions/listen ---------------------------------------------------------------------


def _ready_aggregate() -> tuple[Driver, Any]:
    d = gateway()
    d.send(modern(1, "tools/list"))
    handshake_db(d.server("db"))
    util = d.server("util")
    util.answer("initialize", result={"protocolVersion": "2025-11-25", "capabilities": {"tools": {"listChanged": True}}, "serverInfo": {"name": "util", "version": "1"}})
    util.answer("tools/list", result={"tools": [ECHO_TOOL]})
    return d, util


def test_listen_is_acknowledged_first_and_carries_only_what_it_asked_for_tagged() -> None:
    d, util = _ready_aggregate()
    wanted = {"toolsListChanged": True, "promptsListChanged": False, "resourcesListChanged": "yes"}
    assert d.send(modern(9, "subscriptions/listen", {"notifications": wanted})) == [SendToClient(client=0, request=9, message={
        "jsonrpc": "2.0", "method": "notifications/subscriptions/acknowledged",
        "params": {"notifications": {"toolsListChanged": True}, "_meta": {"io.modelcontextprotocol/subscriptionId": 9}},
    })]
    util.notify("notifications/tools/list_changed")
    actions = util.answer("tools/list", result={"tools": [ECHO_TOOL, {"name": "more", "inputSchema": {"type": "object"}}]})
    assert [a for a in actions if isinstance(a, SendToClient)] == [SendToClient(client=0, request=9, message={
        "jsonrpc": "2.0", "method": "notifications/tools/list_changed",
        "params": {"_meta": {"io.modelcontextprotocol/subscriptionId": 9}},
    })]
    # Ended by the client (over stdio, by cancelling the listen request): nothing more, and no answer owed.
    assert sent_to_client(d.send({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 9}})) == []
    util.notify("notifications/tools/list_changed")
    assert sent_to_client(util.answer("tools/list", result={"tools": [ECHO_TOOL]})) == []


def test_listen_on_demand_honours_nothing_and_a_bad_filter_is_refused() -> None:
    d = Driver()
    [ack] = sent_to_client(d.send(modern(1, "subscriptions/listen", {"notifications": {"toolsListChanged": True}})))
    assert ack["params"] == {"notifications": {}, "_meta": {"io.modelcontextprotocol/subscriptionId": 1}}
    [refused] = sent_to_client(d.send(modern(2, "subscriptions/listen", {"notifications": ["tools"]})))
    assert refused["error"]["code"] == -32602 and refused["id"] == 2


# -- the bridge: a handshake-era server asks a stateless client -------------------------------

ELICIT = {"message": "What is your name?", "requestedSchema": {"type": "object", "properties": {"name": {"type": "string"}}}}
ELICITING = {**ENVELOPE, CLIENT_CAPABILITIES_KEY: {"elicitation": {"form": {}}}}


def _asking(client: Any = 0) -> tuple[Driver, Any, JSON]:
    """A stateless client's aggregate call that its server answers with a question; the input_required the client got."""
    d, util = _ready_aggregate()
    if client != 0:
        d.open(client, transport="stateless", principal=ALICE)
    call = req(2, "tools/call", {"name": "db__get_row", "arguments": {}, "_meta": ELICITING})
    d.send(call, client=client)
    db = d.server("db")
    wire = db.request("tools/call")
    actions = db.send({"jsonrpc": "2.0", "id": 77, "method": "elicitation/create", "params": ELICIT})
    [answer] = sent_to_client(actions)
    assert sent_downstream(actions) == []  # the server's request waits for the retry
    return d, wire, answer


ALICE = Principal(id="user:alice", agents=("*",), default_agent="dev")
BOB = Principal(id="user:bob", agents=("*",), default_agent="dev")


def _retry(id: Any, state: str, responses: JSON) -> JSON:
    return req(id, "tools/call", {
        "name": "db__get_row", "arguments": {}, "inputResponses": responses, "requestState": state, "_meta": ELICITING,
    })


def test_a_question_becomes_input_required_and_the_retry_resumes_the_call() -> None:
    d, wire, answer = _asking()
    result = answer["result"]
    assert answer["id"] == 2 and result["resultType"] == "input_required"
    assert result["inputRequests"] == {"lockgate-1-1": {"method": "elicitation/create", "params": ELICIT}}
    state = result["requestState"]
    assert state.startswith("lockgate.1.")
    db = d.server("db")
    actions = d.send(_retry(3, state, {"lockgate-1-1": {"action": "accept", "content": {"name": "Ada"}}}))
    assert sent_downstream(actions) == [{"jsonrpc": "2.0", "id": 77, "result": {"action": "accept", "content": {"name": "Ada"}}}]
    assert sent_to_client(actions) == []
    actions = db.answer(wire, result={"content": [{"type": "text", "text": "hi Ada"}]})
    assert sent_to_client(actions) == [
        {"jsonrpc": "2.0", "id": 3, "result": {"content": [{"type": "text", "text": "hi Ada"}], "resultType": "complete"}}
    ]
    [record] = audits(actions)
    assert record["decision"] == "ALLOW" and record["tool"] == "get_row"
    # The state was used: presented again, it is refused.
    [again] = sent_to_client(d.send(_retry(4, state, {"lockgate-1-1": {"action": "decline"}})))
    assert again["error"]["code"] == -32602 and "expired or already used" in again["error"]["message"]


def test_a_second_question_parks_the_call_again() -> None:
    d, wire, answer = _asking()
    db = d.server("db")
    d.send(_retry(3, answer["result"]["requestState"], {"lockgate-1-1": {"action": "accept", "content": {"name": "Ada"}}}))
    # What the client did not declare (roots) is refused to the server, as in the handshake era.
    refused = db.send({"jsonrpc": "2.0", "id": 78, "method": "roots/list", "params": {}})
    assert sent_to_client(refused) == []
    assert sent_downstream(refused)[0]["error"]["code"] == -32601
    [again] = sent_to_client(db.send({"jsonrpc": "2.0", "id": 79, "method": "elicitation/create", "params": ELICIT}))
    assert again["id"] == 3 and again["result"]["inputRequests"] == {"lockgate-2-1": {"method": "elicitation/create", "params": ELICIT}}
    actions = d.send(_retry(4, again["result"]["requestState"], {"lockgate-2-1": {"action": "decline"}}))
    assert sent_downstream(actions) == [{"jsonrpc": "2.0", "id": 79, "result": {"action": "decline"}}]
    [done] = sent_to_client(db.answer(wire, result={"content": []}))
    assert done["id"] == 4


@pytest.mark.parametrize(("mangle", "why"), [
    (lambda s: s[:-2] + ("AA" if not s.endswith("AA") else "BB"), "altered"),
    (lambda s: "lockgate.1.e30.AAAAAAAAAAAAAAAAAAAAAA", "altered"),
    (lambda s: "lockgate.1.!!!", "not one this gateway issued"),
])
def test_a_tampered_state_is_refused_and_the_call_still_waits(mangle: Any, why: str) -> None:
    d, wire, answer = _asking()
    state = answer["result"]["requestState"]
    [refused] = sent_to_client(d.send(_retry(3, mangle(state), {"lockgate-1-1": {"action": "decline"}})))
    assert refused["error"]["code"] == -32602 and why in refused["error"]["message"]
    # The genuine state still works.
    actions = d.send(_retry(4, state, {"lockgate-1-1": {"action": "decline"}}))
    assert sent_downstream(actions) == [{"jsonrpc": "2.0", "id": 77, "result": {"action": "decline"}}]


def test_a_state_presented_by_another_credential_or_answering_the_unasked_is_refused() -> None:
    d, wire, answer = _asking(client="alice-1")
    state = answer["result"]["requestState"]
    d.open("bob-1", transport="stateless", principal=BOB)
    [other] = sent_to_client(d.send(_retry(3, state, {"lockgate-1-1": {"action": "decline"}}), client="bob-1"))
    assert other["error"]["code"] == -32602 and "another credential" in other["error"]["message"]
    d.open("alice-2", transport="stateless", principal=ALICE)
    [unasked] = sent_to_client(d.send(_retry(4, state, {"lockgate-9-9": {"action": "decline"}}), client="alice-2"))
    assert unasked["error"]["code"] == -32602 and "never asked: lockgate-9-9" in unasked["error"]["message"]
    # Closing the first request's client does not touch the parked call.
    assert sent_downstream(d.clients["alice-1"].close()) == []
    actions = d.send(_retry(5, state, {"lockgate-1-1": {"action": "decline"}}), client="alice-2")
    assert sent_downstream(actions) == [{"jsonrpc": "2.0", "id": 77, "result": {"action": "decline"}}]


def test_a_parked_call_nobody_comes_back_for_times_out_and_is_cancelled_downstream() -> None:
    d, wire, answer = _asking()
    actions = d.advance(301)
    assert sent_downstream(actions) == [{"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {
        "requestId": wire["id"], "reason": "the client did not answer what the server asked"}}]
    assert sent_to_client(actions) == []
    [record] = audits(actions)
    assert (record["decision"], record["error_code"]) == ("ERROR", "TIMEOUT")
    [late] = sent_to_client(d.send(_retry(3, answer["result"]["requestState"], {"lockgate-1-1": {"action": "decline"}})))
    assert late["error"]["code"] == -32602 and "expired" in late["error"]["message"]


def test_a_question_that_would_park_one_call_too_many_is_refused_to_its_server(monkeypatch: pytest.MonkeyPatch) -> None:
    import lockgate.core._bridge as bridge

    monkeypatch.setattr(bridge, "MAX_PARKED", 1)
    d, wire, answer = _asking()
    assert answer["result"]["resultType"] == "input_required"
    db = d.server("db")
    d.send(req(5, "tools/call", {"name": "db__get_row", "arguments": {}, "_meta": ELICITING}))
    actions = db.send({"jsonrpc": "2.0", "id": 90, "method": "elicitation/create", "params": ELICIT})
    assert sent_to_client(actions) == []
    [refused] = sent_downstream(actions)
    assert refused["id"] == 90 and refused["error"]["message"] == "The gateway holds too many calls waiting for their clients"


def test_listen_subscribes_to_the_resources_the_agent_may_read_and_carries_their_updates() -> None:
    d, util = _ready_aggregate()
    db = d.server("db")
    wanted = {"resourceSubscriptions": ["db://tables/users", "db://secrets/key", "nowhere://x"]}
    actions = d.send(modern(9, "subscriptions/listen", {"notifications": wanted}))
    # Only what the agent may read, on a server that tells of updates; the server is subscribed once.
    [ack] = sent_to_client(actions)
    assert ack["params"]["notifications"] == {"resourceSubscriptions": ["db://tables/users"]}
    [subscribe] = sent_downstream(actions)
    assert subscribe["method"] == "resources/subscribe" and subscribe["params"] == {"uri": "db://tables/users"}
    updated = db.send({"jsonrpc": "2.0", "method": "notifications/resources/updated", "params": {"uri": "db://tables/users"}})
    assert sent_to_client(updated) == [{"jsonrpc": "2.0", "method": "notifications/resources/updated", "params": {
        "uri": "db://tables/users", "_meta": {"io.modelcontextprotocol/subscriptionId": 9}}}]
    # An update of anything else goes nowhere.
    assert sent_to_client(db.send({"jsonrpc": "2.0", "method": "notifications/resources/updated", "params": {"uri": "db://secrets/key"}})) == []
