"""The REST door in the core: one-request sessions scoped to a server, and how their answers become HTTP."""

from __future__ import annotations

import json
from typing import Any

from lockgate.core import (
    Audit,
    CancelTimer,
    ClientClosed,
    ClientOpened,
    ErrorCode,
    Principal,
    RestAnswer,
    SendToClient,
    SendToDownstream,
    rest_answer,
    rest_message,
)
from lockgate.core._jsonrpc import error, request, result

from .harness import JSON, Driver, make_config, sent_downstream, sent_to_client
from .harness import FakeDownstream
from .test_aggregate import DB_RESOURCES, DB_TEMPLATES, DB_TOOLS, RULES, UTIL_PROMPTS, UTIL_TOOLS


def rest_driver(**settings: Any) -> Driver:
    """A gateway in on-demand mode (servers list only their tools at the handshake), serving the REST door."""
    settings.setdefault("transport", "http")
    return Driver(make_config(RULES, ("db", "util"), **settings))


def handshake_db(ds: FakeDownstream) -> list[Any]:
    """db offers tools, resources and prompts; on demand it lists only its tools at the handshake."""
    capabilities = {"tools": {}, "resources": {}, "prompts": {}}
    ds.answer("initialize", result={"protocolVersion": "2025-11-25", "capabilities": capabilities, "serverInfo": {"name": "db", "version": "1"}})
    return ds.answer("tools/list", result={"tools": DB_TOOLS})


def handshake_util(ds: FakeDownstream) -> list[Any]:
    capabilities = {"tools": {}, "prompts": {}}
    ds.answer("initialize", result={"protocolVersion": "2025-11-25", "capabilities": capabilities, "serverInfo": {"name": "util", "version": "1"}})
    return ds.answer("tools/list", result={"tools": UTIL_TOOLS})


def rest(d: Driver, client: str, server: str, operation: str, params: JSON | None = None, **meta: Any) -> list[Any]:
    """Open a REST session for ``server`` and feed it one request (id 1); the actions of that request."""
    d.handle(ClientOpened(now=d.now, client=client, transport="rest", server=server))
    return d.send(rest_message(operation, params or {}, **meta), client=client)


def ready_servers(d: Driver) -> None:
    """Start both servers through a first REST list, and finish their handshakes."""
    rest(d, "rest:0", "db", "tools/list", agent_id="dev")
    handshake_db(d.server("db"))
    rest(d, "rest:00", "util", "tools/list", agent_id="dev")
    handshake_util(d.server("util"))


def test_a_rest_session_needs_no_handshake_and_lists_one_servers_items_under_their_own_names() -> None:
    d = rest_driver()
    actions = rest(d, "rest:1", "db", "tools/list", agent_id="dev")
    # The server starts on its behalf; the list waits for its catalogue.
    assert sent_to_client(actions) == []
    db = d.server("db")
    listed = sent_to_client(handshake_db(db))
    # Only what dev may call, as db names it: no prefix, no gateway tools.
    assert listed == [result(1, {"tools": [DB_TOOLS[0]]})]
    # Resources are listed when first wanted (both lists), then kept.
    actions = rest(d, "rest:2", "db", "resources/list", agent_id="dev")
    assert [m["method"] for m in sent_downstream(actions)] == ["resources/list", "resources/templates/list"]
    assert sent_to_client(actions) == []
    db.answer("resources/list", result={"resources": DB_RESOURCES})
    [resources] = sent_to_client(db.answer("resources/templates/list", result={"resourceTemplates": DB_TEMPLATES}))
    assert resources == result(1, {"resources": [DB_RESOURCES[0]], "resourceTemplates": DB_TEMPLATES})
    actions = rest(d, "rest:22", "db", "resources/list", agent_id="dev")
    assert sent_downstream(actions) == [] and sent_to_client(actions) == [resources]
    rest(d, "rest:3", "util", "prompts/list", agent_id="dev")
    util = d.server("util")
    handshake_util(util)
    [prompts] = sent_to_client(util.answer("prompts/list", result={"prompts": UTIL_PROMPTS}))
    assert prompts == result(1, {"prompts": [UTIL_PROMPTS[0]]})
    # A server that offers no resources has none, and is not asked.
    actions = rest(d, "rest:4", "util", "resources/list", agent_id="dev")
    assert sent_downstream(actions) == [] and sent_to_client(actions) == [result(1, {"resources": [], "resourceTemplates": []})]


def test_a_rest_call_is_forwarded_under_the_servers_name_and_audited_with_its_door() -> None:
    d = rest_driver()
    ready_servers(d)
    message = rest_message("tools/call", {"name": "get_row", "arguments": {"id": 1}}, agent_id="dev")
    d.handle(ClientOpened(now=d.now, client="rest:1", transport="rest", server="db"))
    actions = d.send(message, client="rest:1")
    db = d.server("db")
    forwarded = db.request("tools/call")
    assert forwarded == request(forwarded["id"], "tools/call", {"name": "get_row", "arguments": {"id": 1}})
    assert [a for a in actions if isinstance(a, SendToDownstream)] == [SendToDownstream(downstream=db.id, message=forwarded)]
    d.now = 0.25
    answer = {"content": [{"type": "text", "text": "row"}], "isError": False}
    actions = db.answer(forwarded, result=answer)
    [timer] = [a for a in actions if isinstance(a, CancelTimer)]
    assert actions == [
        timer,
        SendToClient(client="rest:1", message=result(1, answer), request=1),
        Audit(record={
            "agent": "dev", "transport": "rest", "operation": "tools/call", "server": "db", "tool": "get_row",
            "decision": "ALLOW", "rule": "agents.dev.allow.servers[0]", "latency_ms": 250.0, "error_code": None,
            "args": {"keys": ["id"], "request_bytes": len(message)},
        }),
    ]
    assert d.handle(ClientClosed(now=d.now, client="rest:1")) == []


def test_a_denied_tool_is_denied_with_its_rule_and_an_unknown_one_is_not_found() -> None:
    d = rest_driver()
    ready_servers(d)
    before = len(d.server("db").received)
    [denied] = sent_to_client(rest(d, "rest:1", "db", "tools/call", {"name": "drop_table"}, agent_id="dev"))
    assert denied["error"]["code"] == ErrorCode.DENIED_BY_POLICY
    assert denied["error"]["data"]["rule"] == "agents.dev.deny.tools.db[0]"
    [unknown] = sent_to_client(rest(d, "rest:2", "db", "tools/call", {"name": "nothing"}, agent_id="dev"))
    assert unknown["error"]["code"] == ErrorCode.TOOL_NOT_FOUND
    assert len(d.server("db").received) == before
    assert rest_answer(denied).status == 403 and rest_answer(unknown).status == 404


def test_an_unknown_server_is_not_found_and_a_server_the_agent_may_not_use_is_denied() -> None:
    d = rest_driver()
    [unknown] = sent_to_client(rest(d, "rest:1", "nowhere", "tools/list", agent_id="dev"))
    assert unknown == error(1, ErrorCode.TOOL_NOT_FOUND, "Unknown server: nowhere", {"code": "TOOL_NOT_FOUND"})
    assert rest_answer(unknown) == RestAnswer(404, {"error": {
        "code": "SERVER_NOT_FOUND", "message": "Unknown server: nowhere", "status": 404, "data": {},
    }})
    actions = rest(d, "rest:2", "util", "tools/call", {"name": "secret"}, agent_id="reader")
    [denied] = sent_to_client(actions)
    assert denied["error"]["code"] == ErrorCode.DENIED_BY_POLICY
    # A call is audited even when refused before any server is asked; nothing was started.
    [audit] = [a.record for a in actions if isinstance(a, Audit)]
    assert audit["transport"] == "rest" and audit["decision"] == "DENY" and audit["agent"] == "reader"
    assert d.downstreams == {}


def test_a_rest_session_asks_nothing_but_its_operations() -> None:
    d = rest_driver()
    ready_servers(d)
    d.handle(ClientOpened(now=d.now, client="rest:1", transport="rest", server="db"))
    for n, method in enumerate(("initialize", "resources/subscribe", "completion/complete", "logging/setLevel"), start=1):
        [answer] = sent_to_client(d.send(request(n, method, {}), client="rest:1"))
        if method == "initialize":
            assert answer["error"]["message"] == "Session already initialized"
        else:
            assert answer["error"]["code"] == ErrorCode.METHOD_NOT_FOUND
    # The gateway's own tools are not a REST session's: execute_tool is a name db does not have.
    [gateway_tool] = sent_to_client(rest(d, "rest:2", "db", "tools/call", {"name": "execute_tool"}, agent_id="dev"))
    assert gateway_tool["error"]["code"] == ErrorCode.TOOL_NOT_FOUND


def test_a_rest_calls_own_timeout_applies_and_a_bad_one_is_refused() -> None:
    d = rest_driver()
    ready_servers(d)
    rest(d, "rest:1", "db", "tools/call", {"name": "get_row"}, agent_id="dev", timeout_ms=500)
    [timeout] = sent_to_client(d.advance(0.5))
    assert timeout["error"]["code"] == ErrorCode.TIMEOUT and timeout["error"]["data"]["timeout_ms"] == 500
    assert rest_answer(timeout).status == 504
    d.handle(ClientOpened(now=d.now, client="rest:2", transport="rest", server="db"))
    bad = json.dumps(request(1, "tools/call", {"name": "get_row", "_meta": {"agent_id": "dev", "timeout_ms": -1}})).encode()
    [refused] = sent_to_client(d.send(bad, client="rest:2"))
    assert refused["error"]["code"] == ErrorCode.INVALID_PARAMS


def test_closing_a_rest_session_cancels_its_call_downstream() -> None:
    d = rest_driver()
    ready_servers(d)
    rest(d, "rest:1", "db", "tools/call", {"name": "get_row"}, agent_id="dev")
    db = d.server("db")
    forwarded = db.request("tools/call")
    actions = d.handle(ClientClosed(now=d.now, client="rest:1"))
    assert {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": forwarded["id"], "reason": "the client went away"}} in sent_downstream(actions)
    [audit] = [a.record for a in actions if isinstance(a, Audit)]
    assert audit["error_code"] == "CANCELLED" and audit["transport"] == "rest"


def test_a_delegated_credentials_own_tool_list_holds_at_the_rest_door() -> None:
    d = rest_driver()
    ready_servers(d)
    narrow = Principal(id="key:1", agents=("dev",), default_agent="dev", tools=("util/*",))
    d.handle(ClientOpened(now=d.now, client="rest:1", transport="rest", server="db", principal=narrow))
    [refused] = sent_to_client(d.send(rest_message("tools/call", {"name": "get_row"}), client="rest:1"))
    assert refused["error"]["code"] == ErrorCode.DENIED_BY_POLICY and refused["error"]["data"]["rule"] == "credential.tools"
    d.handle(ClientOpened(now=d.now, client="rest:2", transport="rest", server="db", principal=narrow))
    [listed] = sent_to_client(d.send(rest_message("tools/list", {}), client="rest:2"))
    assert listed == result(1, {"tools": []})


# -- answers as HTTP ------------------------------------------------------------------


def test_each_gateway_error_has_its_status_and_a_servers_own_error_is_a_bad_gateway() -> None:
    def gateway_error(code: ErrorCode, **data: Any) -> JSON:
        return error(1, code, "m", {"code": code.name, **data})

    assert rest_answer(result(1, {"content": []})) == RestAnswer(200, {"content": []})
    statuses = {code: rest_answer(gateway_error(code)).status for code in ErrorCode}
    assert statuses == {
        ErrorCode.PARSE_ERROR: 400, ErrorCode.INVALID_REQUEST: 400, ErrorCode.METHOD_NOT_FOUND: 404,
        ErrorCode.INVALID_PARAMS: 400, ErrorCode.INTERNAL_ERROR: 500, ErrorCode.DENIED_BY_POLICY: 403,
        ErrorCode.SERVER_UNAVAILABLE: 503, ErrorCode.TOOL_NOT_FOUND: 404, ErrorCode.INVALID_AGENT_ID: 403,
        ErrorCode.TIMEOUT: 504, ErrorCode.RATE_LIMITED: 429, ErrorCode.NO_FALLBACK_CONFIGURED: 400,
        ErrorCode.FALLBACK_AGENT_NOT_IN_RULES: 403, ErrorCode.CANCELLED: 503, ErrorCode.TOOL_CHANGED: 409,
        ErrorCode.RATE_LIMIT_UNAVAILABLE: 503,
        ErrorCode.HEADER_MISMATCH: 400, ErrorCode.MISSING_CLIENT_CAPABILITY: 400, ErrorCode.UNSUPPORTED_PROTOCOL_VERSION: 400,
    }
    limited = rest_answer(gateway_error(ErrorCode.RATE_LIMITED, retry_after_ms=1200))
    assert limited.headers == (("retry-after", "2"),) and limited.body["error"]["data"] == {"retry_after_ms": 1200}
    # A server's own error carries no gateway code name, whatever its number.
    assert rest_answer(error(1, -32000, "db is down")) == RestAnswer(502, {"error": {
        "code": "DOWNSTREAM_ERROR", "message": "db is down", "status": 502, "data": {"downstream_code": -32000},
    }})
    assert rest_answer(error(1, -32002, "Resource not found", {"uri": "x"})).body["error"]["code"] == "RESOURCE_NOT_FOUND"
    assert rest_answer(error(1, -32602, "bad")).status == 400
    assert rest_answer(error(1, -32602, "Unknown resource: x"), "resources/read").status == 404
    # A code name that does not match the number is no gateway error either.
    assert rest_answer(error(1, -32000, "m", {"code": "TIMEOUT"})).status == 502
    assert rest_answer({"jsonrpc": "2.0", "id": 1}).status == 502


def test_rest_message_carries_agent_and_timeout_in_meta_only_when_given() -> None:
    assert json.loads(rest_message("tools/list", {})) == request(1, "tools/list", {})
    assert json.loads(rest_message("tools/call", {"name": "x"}, agent_id="a", timeout_ms=5)) == request(
        1, "tools/call", {"name": "x", "_meta": {"agent_id": "a", "timeout_ms": 5}}
    )
