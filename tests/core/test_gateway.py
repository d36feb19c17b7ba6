"""Gateway state machine: feed events, compare the actions that come out."""

from __future__ import annotations

import json

import pytest

from lockgate.core import __version__
from lockgate.core._actions import (
    Audit,
    CancelTimer,
    Log,
    SendToClient,
    SendToDownstream,
    SetTimer,
    StartDownstream,
    StopDownstream,
)
from lockgate.core._config import Settings
from lockgate.core._errors import LocalProtocolError
from lockgate.core._events import ClientClosed, ClientMessageReceived, ClientOpened, ConfigReloaded, ShutdownRequested
from lockgate.core._jsonrpc import encode
from lockgate.core._tools import gateway_tools

from .harness import (
    DROP_TOOL,
    ECHO_TOOL,
    GET_TOOL,
    RULES,
    Driver,
    audits,
    call,
    make_config,
    req,
    sent_downstream,
    sent_to_client,
    server,
    structured,
    without_logs,
)

INIT = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "lockgate", "version": __version__}}


def ready(d: Driver, srv: str = "db", tools: list | None = None) -> None:
    """Bring a server to READY through a get_server_tools call and drop the output."""
    d.send(call(900, "get_server_tools", agent_id="dev", server=srv))
    d.handshake(srv, tools if tools is not None else [ECHO_TOOL, DROP_TOOL, GET_TOOL])


# -- the client session --------------------------------------------------------


def test_initialize_answers_with_the_gateways_own_capabilities() -> None:
    d = Driver()
    actions = d.send(req(1, "initialize", {"protocolVersion": "2025-06-18", "capabilities": {}}))
    assert actions == [
        SendToClient(
            client=0,
            request=1,
            message={
                "jsonrpc": "2.0",
                "id": 1,
                "result": {
                    "protocolVersion": "2025-06-18",
                    "capabilities": {"tools": {"listChanged": False}, "logging": {}},
                    "serverInfo": {"name": "lockgate", "version": __version__},
                    "instructions": (
                        "Tools of other MCP servers are reached through this gateway: call list_servers, "
                        "then get_server_tools for a server, then execute_tool."
                    ),
                },
            },
        )
    ]


@pytest.mark.parametrize(
    ("requested", "answered"),
    [("2024-11-05", "2024-11-05"), ("2025-03-26", "2025-03-26"), ("2025-11-25", "2025-11-25"),
     ("2026-07-28", "2025-11-25"), ("1999-01-01", "2025-11-25")],
)
def test_version_negotiation(requested: str, answered: str) -> None:
    d = Driver()
    [msg] = sent_to_client(d.send(req(1, "initialize", {"protocolVersion": requested})))
    assert msg["result"]["protocolVersion"] == answered


def test_requests_before_initialize_get_an_error_but_ping_works() -> None:
    d = Driver()
    assert sent_to_client(d.send(req(1, "tools/list"))) == [
        {"jsonrpc": "2.0", "id": 1, "error": {"code": -32600, "message": "Session not initialized: send initialize first", "data": {"code": "INVALID_REQUEST"}}}
    ]
    assert sent_to_client(d.send(req(2, "ping"))) == [{"jsonrpc": "2.0", "id": 2, "result": {}}]


def test_second_initialize_and_bad_initialize_params() -> None:
    d = Driver()
    [bad] = sent_to_client(d.send(req(1, "initialize", {})))
    assert bad["error"]["code"] == -32602 and bad["error"]["data"]["parameter"] == "protocolVersion"
    d.initialize()
    [again] = sent_to_client(d.send(req(2, "initialize", {"protocolVersion": "2025-11-25"})))
    assert again["error"] == {"code": -32600, "message": "Session already initialized", "data": {"code": "INVALID_REQUEST"}}


def test_tools_list_is_the_gateway_tools_and_small() -> None:
    d = Driver()
    d.initialize()
    [msg] = sent_to_client(d.send(req(1, "tools/list")))
    names = [t["name"] for t in msg["result"]["tools"]]
    assert names == ["list_servers", "get_server_tools", "execute_tool"]
    # Every agent pays for this in context before doing anything: pin its size.
    assert len(encode(msg["result"])) == 1161
    assert len(encode({"tools": gateway_tools(debug=True)})) <= 1400


def test_debug_adds_get_gateway_status() -> None:
    d = Driver(make_config(debug=True))
    d.initialize()
    [msg] = sent_to_client(d.send(req(1, "tools/list")))
    assert [t["name"] for t in msg["result"]["tools"]][-1] == "get_gateway_status"
    [status] = sent_to_client(d.send(call(2, "get_gateway_status")))
    value = structured(status)
    assert value["servers"]["db"]["state"] == "idle" and value["clients"] == 1


def test_get_gateway_status_is_unknown_without_debug() -> None:
    d = Driver()
    d.initialize()
    [msg] = sent_to_client(d.send(call(1, "get_gateway_status")))
    assert msg["error"] == {"code": -32602, "message": "Unknown tool: get_gateway_status", "data": {"code": "INVALID_PARAMS", "parameter": "name"}}


def test_unknown_methods_and_server_discover_get_method_not_found() -> None:
    d = Driver()
    d.initialize()
    for i, method in enumerate(["server/discover", "resources/list", "bogus/thing"]):
        [msg] = sent_to_client(d.send(req(i, method)))
        assert msg["error"]["code"] == -32601 and method in msg["error"]["message"]


def test_logging_set_level() -> None:
    d = Driver()
    d.initialize()
    assert sent_to_client(d.send(req(1, "logging/setLevel", {"level": "debug"}))) == [{"jsonrpc": "2.0", "id": 1, "result": {}}]
    [bad] = sent_to_client(d.send(req(2, "logging/setLevel", {"level": "loud"})))
    assert bad["error"]["code"] == -32602


# -- bad input -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"{not json", -32700),
        (b"\xff\xfe", -32700),
        (b"[]", -32600),
        (b'[{"jsonrpc":"2.0","id":1,"method":"ping"}]', -32600),
        (b"42", -32600),
        (b'{"jsonrpc":"1.0","id":1,"method":"ping"}', -32600),
        (b'{"jsonrpc":"2.0","id":1,"method":7}', -32600),
        (b'{"jsonrpc":"2.0","id":1,"method":"ping","params":[1]}', -32600),
        (b'{"jsonrpc":"2.0","id":{"a":1},"method":"ping"}', -32600),
    ],
)
def test_malformed_input_gets_an_error_and_the_next_message_works(data: bytes, code: int) -> None:
    d = Driver()
    d.initialize()
    [msg] = sent_to_client(d.send(data))
    assert msg["error"]["code"] == code
    assert sent_to_client(d.send(req(5, "ping"))) == [{"jsonrpc": "2.0", "id": 5, "result": {}}]


def test_malformed_json_answers_with_id_null() -> None:
    d = Driver()
    [msg] = sent_to_client(d.send(b'{"jsonrpc": "2.0", "id": 3,'))
    assert msg["id"] is None and msg["error"]["code"] == -32700


# -- poison frames: valid JSON syntax the gateway could not write back --------------

EXECUTE = b'{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"execute_tool","arguments":{"agent_id":"dev","server":"db","tool":"echo","args":%s}}}'


def test_a_poisoned_id_is_answered_with_id_null() -> None:
    # Regression: this one line once stopped the whole gateway (UnicodeEncodeError on the answer).
    d = Driver()
    actions = d.send(b'{"jsonrpc":"2.0","id":"\\ud800","method":"ping"}')
    assert actions == [
        SendToClient(
            client=0,
            request=None,
            message={
                "jsonrpc": "2.0",
                "id": None,
                "error": {
                    "code": -32600,
                    "message": "Invalid Request: a string holds a lone UTF-16 surrogate at id",
                    "data": {"code": "INVALID_REQUEST", "path": "id"},
                },
            },
        )
    ]
    encode(actions[0].message)  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("args", "code", "path"),
    [
        (b'{"text":"\\udfff"}', -32602, "params.arguments.args.text"),
        (b'{"text":"\xed\xa0\x80"}', -32700, "params.arguments.args.text"),
        (b'{"n":NaN}', -32700, "params.arguments.args.n"),
        (b'{"n":Infinity}', -32700, "params.arguments.args.n"),
        (b'{"n":1e400}', -32602, "params.arguments.args.n"),
        (b'{"n":' + b"1" * 400 + b"}", -32602, "params.arguments.args.n"),
        (b'{"\\ud800":1}', -32602, 'params.arguments.args["\\ufffd"]'),
        (b'{"deep":' + b"[" * 900 + b"]" * 900 + b"}", -32602, None),
    ],
)
def test_poison_in_forwarded_arguments_is_refused_with_the_request_id_and_audited(args: bytes, code: int, path: str | None) -> None:
    d = Driver()
    d.initialize()
    ready(d)
    actions = d.send(EXECUTE % args)
    [msg] = sent_to_client(actions)
    assert msg["id"] == 5 and msg["error"]["code"] == code
    if path is not None:
        assert msg["error"]["data"]["path"] == path
    assert sent_downstream(actions) == []  # nothing unencodable is forwarded
    # The call still leaves its audit record: what could be salvaged, and what could not be recorded.
    [record] = audits(actions)
    assert (record["operation"], record["decision"], record["agent"]) == ("execute_tool", "ERROR", None)
    assert record["args"]["keys"] == ["agent_id", "args", "server", "tool"]
    assert record["args"]["invalid"] == msg["error"]["message"]
    encode(msg)
    encode(record)


def test_a_key_that_cannot_be_encoded_is_audited_as_a_replacement_character() -> None:
    d = Driver()
    d.initialize()
    frame = b'{"jsonrpc":"2.0","id":6,"method":"tools/call","params":{"name":"list_servers","arguments":{"\\ud800":1}}}'
    [record] = audits(d.send(frame))
    assert record["args"] == {
        "keys": ["\ufffd"],
        "request_bytes": len(frame),
        "invalid": 'Invalid params: a key holds a lone UTF-16 surrogate at params.arguments["\\ufffd"]',
    }
    # And the next call is audited as usual.
    assert audits(d.send(call(7, "list_servers", agent_id="dev")))[0]["decision"] == "ALLOW"


def test_a_huge_timeout_is_refused_before_any_arithmetic() -> None:
    d = Driver()
    d.initialize()
    ready(d)
    [msg] = sent_to_client(d.send(call(8, "execute_tool", agent_id="dev", server="db", tool="echo", timeout_ms=10**400)))
    assert (msg["id"], msg["error"]["code"], msg["error"]["data"]["path"]) == (8, -32602, "params.arguments.timeout_ms")
    [msg] = sent_to_client(d.send(call(9, "execute_tool", agent_id="dev", server="db", tool="echo", timeout_ms=1e300)))
    assert (msg["id"], msg["error"]["data"]) == (9, {"code": "INVALID_PARAMS", "parameter": "timeout_ms"})


def test_a_poisoned_notification_or_response_gets_no_answer() -> None:
    d = Driver()
    d.initialize()
    for frame in (
        b'{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"reason":"\\ud800"}}',
        b'{"jsonrpc":"2.0","id":8,"result":{"x":NaN}}',
    ):
        actions = d.send(frame)
        assert sent_to_client(actions) == []
        [log] = [a for a in actions if isinstance(a, Log)]
        assert log.message == "ignored an invalid notification or response"


def test_a_request_whose_id_follows_a_member_too_deep_to_parse_is_answered_with_id_null() -> None:
    # Regression: the id was lost with the members after the deep one, and the
    # frame was taken for a notification and dropped without an answer.
    d = Driver()
    d.initialize()
    deep = b"[" * 50_000 + b"]" * 50_000
    actions = d.send(b'{"jsonrpc":"2.0","method":"tools/call","params":{"name":"execute_tool","arguments":{"args":' + deep + b'}},"id":30}')
    [msg] = sent_to_client(actions)
    assert (msg["id"], msg["error"]["code"], msg["error"]["data"]["path"]) == (None, -32602, "params")


def test_an_answer_that_cannot_be_forwarded_fails_the_call_at_once() -> None:
    d = Driver()
    d.initialize()
    ready(d)
    d.send(call("c", "execute_tool", agent_id="dev", server="db", tool="echo", args={"text": "hi"}))
    actions = d.downstream("db", b'{"jsonrpc":"2.0","id":3,"result":{"content":[{"type":"text","text":"\\ud800"}]}}')
    [msg] = sent_to_client(actions)
    reason = "sent an answer that cannot be forwarded (Invalid Request: a string holds a lone UTF-16 surrogate at result.content[0].text)"
    assert msg == {
        "jsonrpc": "2.0",
        "id": "c",
        "error": {
            "code": -32603,
            "message": f"Server 'db' {reason}",
            "data": {"code": "INTERNAL_ERROR", "server": "db", "reason": reason, "path": "result.content[0].text"},
        },
    }
    assert CancelTimer(timer=3) in actions
    # The server is fine otherwise: the next call goes out on the same connection.
    assert sent_downstream(d.send(call("d", "execute_tool", agent_id="dev", server="db", tool="echo", args={})))[0]["id"] == 4


def test_a_poisoned_request_from_a_server_gets_an_error_and_garbage_is_logged() -> None:
    d = Driver()
    d.initialize()
    ready(d)
    [reply] = sent_downstream(d.downstream("db", b'{"jsonrpc":"2.0","id":"s1","method":"roots/list","params":{"x":NaN}}'))
    assert (reply["id"], reply["error"]["code"]) == ("s1", -32700)
    actions = d.downstream("db", b'{"jsonrpc":"2.0","id":99,"result":NaN}')  # answers nothing of ours
    assert sent_to_client(actions) == [] and sent_downstream(actions) == []


def test_an_oversized_message_gets_an_error() -> None:
    d = Driver(make_config(max_message_bytes=1000))
    actions = d.handle(ClientMessageReceived(now=0, client=0, data=b"", too_large=True))
    assert sent_to_client(actions) == [
        {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": "Message exceeds the 1000-byte limit", "data": {"code": "INVALID_REQUEST", "limit": 1000}}}
    ]


@pytest.mark.parametrize(
    ("arguments", "parameter"),
    [
        ({}, "server"),
        ({"server": 5, "tool": "echo"}, "server"),
        ({"server": "db"}, "tool"),
        ({"server": "db", "tool": "echo", "args": "x"}, "args"),
        ({"server": "db", "tool": "echo", "timeout_ms": -1}, "timeout_ms"),
        ({"server": "db", "tool": "echo", "agent_id": 7}, "agent_id"),
    ],
)
def test_wrong_arguments_name_the_parameter(arguments: dict, parameter: str) -> None:
    d = Driver()
    d.initialize()
    actions = d.send(call(1, "execute_tool", **arguments))
    [msg] = sent_to_client(actions)
    assert msg["error"]["code"] == -32602
    assert msg["error"]["data"] == {"code": "INVALID_PARAMS", "parameter": parameter}
    assert parameter in msg["error"]["message"]
    assert audits(actions)[0]["decision"] == "ERROR"


def test_tools_call_without_name_or_with_bad_arguments_is_refused_and_audited() -> None:
    d = Driver()
    d.initialize()
    outcomes = [
        d.send(req(1, "tools/call", {"arguments": {}})),
        d.send(req(2, "tools/call", {"name": "execute_tool", "arguments": [1]})),
        d.send(call(3, "no_such_tool", x=1)),
    ]
    parameters = [sent_to_client(actions)[0]["error"]["data"]["parameter"] for actions in outcomes]
    assert parameters == ["name", "arguments", "name"]
    # Every gateway tool call leaves exactly one audit record, refused ones included.
    records = [audits(actions) for actions in outcomes]
    assert [[(r["operation"], r["decision"], r["error_code"]) for r in rs] for rs in records] == [
        [(None, "ERROR", "INVALID_PARAMS")],
        [("execute_tool", "ERROR", "INVALID_PARAMS")],
        [("no_such_tool", "ERROR", "INVALID_PARAMS")],
    ]


def test_a_reused_request_id_is_refused_while_the_first_is_in_flight() -> None:
    d = Driver()
    d.initialize()
    d.send(call(1, "get_server_tools", agent_id="dev", server="db"))
    [msg] = sent_to_client(d.send(call(1, "get_server_tools", agent_id="dev", server="db")))
    assert msg["error"]["code"] == -32600


def test_events_about_a_client_the_core_let_go_of_are_ignored() -> None:
    d = Driver()
    d.initialize()
    d.handle(ClientClosed(now=0, client=0))
    # A shell may still hold messages of a client the core closed (or never opened).
    assert d.send(req(1, "ping")) == []
    assert d.send(req(1, "ping"), client=99) == []
    assert d.handle(ClientClosed(now=0, client=0)) == []


def test_opening_a_client_twice_is_misuse() -> None:
    d = Driver()
    with pytest.raises(LocalProtocolError):
        d.handle(ClientOpened(now=0, client=0))


# -- list_servers and identity ---------------------------------------------------


def test_list_servers_is_filtered_by_policy_and_never_shows_env() -> None:
    config = make_config()
    secret = server("db", env={"TOKEN": "hunter2"}, headers={"Authorization": "x"})
    config = type(config)(servers={"db": secret, "util": server("util")}, policy=config.policy, settings=config.settings)
    d = Driver(config)
    d.initialize()
    [msg] = sent_to_client(d.send(call(1, "list_servers", agent_id="reader")))
    assert structured(msg) == {"result": [{"name": "db", "description": "db server"}]}
    [meta] = sent_to_client(d.send(call(2, "list_servers", agent_id="dev", include_metadata=True)))
    assert structured(meta)["result"] == [
        {"name": "db", "description": "db server", "transport": "stdio", "command": "srv"},
        {"name": "util", "description": "util server", "transport": "stdio", "command": "srv"},
    ]
    assert "hunter2" not in json.dumps(meta)


@pytest.mark.parametrize(
    ("agent_id", "rules_defaults", "default_agent", "code", "name"),
    [
        ("bad id!", False, None, -32003, "INVALID_AGENT_ID"),
        ("ghost", False, None, -32000, "DENIED_BY_POLICY"),
        (None, True, None, -32000, "DENIED_BY_POLICY"),
        (None, False, "ghost", -32007, "FALLBACK_AGENT_NOT_IN_RULES"),
    ],
)
def test_identity_refusals(agent_id: str | None, rules_defaults: bool, default_agent: str | None, code: int, name: str) -> None:
    rules = {**RULES, "defaults": {"deny_on_missing_agent": rules_defaults}}
    d = Driver(make_config(rules, default_agent=default_agent))
    d.initialize()
    args = {} if agent_id is None else {"agent_id": agent_id}
    actions = d.send(call(1, "list_servers", **args))
    [msg] = sent_to_client(actions)
    assert msg["error"]["code"] == code and msg["error"]["data"]["code"] == name
    [record] = audits(actions)
    assert record["decision"] == ("DENY" if name == "DENIED_BY_POLICY" else "ERROR") and record["error_code"] == name


def test_no_fallback_configured() -> None:
    rules = {"agents": {"dev": {"allow": {"servers": ["*"]}}}, "defaults": {"deny_on_missing_agent": False}}
    d = Driver(make_config(rules))
    d.initialize()
    [msg] = sent_to_client(d.send(call(1, "list_servers")))
    assert msg["error"]["code"] == -32006 and msg["error"]["data"]["code"] == "NO_FALLBACK_CONFIGURED"


def test_missing_agent_id_falls_back_to_default_agent_then_to_the_default_rule() -> None:
    d = Driver(make_config())
    d.initialize()
    [msg] = sent_to_client(d.send(call(1, "list_servers")))
    assert [s["name"] for s in structured(msg)["result"]] == ["util"]
    d = Driver(make_config(default_agent="reader"))
    d.initialize()
    [msg] = sent_to_client(d.send(call(1, "list_servers")))
    assert [s["name"] for s in structured(msg)["result"]] == ["db"]


# -- get_server_tools ------------------------------------------------------------


def test_get_server_tools_starts_the_downstream_once_and_answers_from_its_list() -> None:
    d = Driver()
    d.initialize()
    d.now = 1.0
    actions = d.send(call(7, "get_server_tools", agent_id="reader", server="db"))
    assert actions == [
        SetTimer(timer=1, deadline=61.0),
        StartDownstream(downstream=1, server="db", spec=server("db")),
        SendToDownstream(downstream=1, message={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": INIT}),
        SetTimer(timer=2, deadline=31.0),
    ]
    d.now = 1.5
    actions = d.downstream("db", {"jsonrpc": "2.0", "id": 1, "result": {"protocolVersion": "2025-06-18", "capabilities": {}, "serverInfo": {"name": "db"}}})
    assert actions == [
        SendToDownstream(downstream=1, message={"jsonrpc": "2.0", "method": "notifications/initialized"}),
        SendToDownstream(downstream=1, message={"jsonrpc": "2.0", "id": 2, "method": "tools/list"}),
    ]
    d.now = 2.0
    actions = without_logs(d.downstream("db", {"jsonrpc": "2.0", "id": 2, "result": {"tools": [ECHO_TOOL, DROP_TOOL, GET_TOOL]}}))
    value = {"tools": [GET_TOOL], "server": "db", "total_available": 1, "returned": 1, "tokens_used": 13}
    assert actions == [
        CancelTimer(timer=2),
        CancelTimer(timer=1),
        SendToClient(
            client=0,
            request=7,
            message={"jsonrpc": "2.0", "id": 7, "result": {"content": [{"type": "text", "text": encode(value).decode()}], "structuredContent": value, "isError": False}},
        ),
        Audit(record={"agent": "reader", "operation": "get_server_tools", "server": "db", "tool": None, "decision": "ALLOW", "rule": "agents.reader.allow.servers[0]", "latency_ms": 1000.0, "error_code": None, "args": {"keys": ["agent_id", "server"], "request_bytes": 144}}),
    ]
    # A second call is served from the cache: no downstream traffic at all.
    actions = d.send(call(8, "get_server_tools", agent_id="dev", server="db", pattern="*_*"))
    assert sent_downstream(actions) == []
    assert [t["name"] for t in structured(sent_to_client(actions)[0])["tools"]] == ["get_user"]


def test_get_server_tools_filters_by_names_and_token_budget() -> None:
    d = Driver()
    d.initialize()
    ready(d)
    [msg] = sent_to_client(d.send(call(1, "get_server_tools", agent_id="dev", server="db", names="echo, get_user,nope")))
    assert [t["name"] for t in structured(msg)["tools"]] == ["echo", "get_user"]
    # echo costs 37 tokens, get_user 13: a budget of 20 skips echo and still fits get_user.
    [msg] = sent_to_client(d.send(call(2, "get_server_tools", agent_id="dev", server="db", max_schema_tokens=20)))
    value = structured(msg)
    assert [t["name"] for t in value["tools"]] == ["get_user"] and value["tokens_used"] == 13
    assert value["total_available"] == 2  # drop_table is denied to dev


def test_get_server_tools_denied_and_unknown_servers() -> None:
    d = Driver()
    d.initialize()
    actions = d.send(call(1, "get_server_tools", agent_id="reader", server="util"))
    [msg] = sent_to_client(actions)
    assert msg["error"] == {"code": -32000, "message": "Access to server 'util' is denied", "data": {"code": "DENIED_BY_POLICY", "rule": "agents.reader: no rule allows it"}}
    assert [a for a in actions if isinstance(a, StartDownstream)] == []
    [msg] = sent_to_client(d.send(call(2, "get_server_tools", agent_id="dev", server="nosuch")))
    assert msg["error"]["data"] == {"code": "SERVER_UNAVAILABLE", "server": "nosuch", "reason": "not configured"}


# -- execute_tool ----------------------------------------------------------------


def test_execute_tool_forwards_under_its_own_id_and_returns_the_result_untouched() -> None:
    d = Driver()
    d.initialize()
    ready(d)
    actions = d.send(call("abc", "execute_tool", agent_id="dev", server="db", tool="echo", args={"text": "hi"}))
    assert actions == [
        SetTimer(timer=3, deadline=60.0),
        SendToDownstream(downstream=1, message={"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "echo", "arguments": {"text": "hi"}}}),
    ]
    downstream_result = {"content": [{"type": "text", "text": "hi"}], "structuredContent": {"result": "hi"}, "isError": False, "_meta": {"x": 1}, "extra": [1]}
    actions = d.downstream("db", {"jsonrpc": "2.0", "id": 3, "result": downstream_result})
    assert actions[:2] == [
        CancelTimer(timer=3),
        SendToClient(client=0, request="abc", message={"jsonrpc": "2.0", "id": "abc", "result": downstream_result}),
    ]
    [record] = audits(actions)
    assert record["decision"] == "ALLOW" and record["rule"] == "agents.dev.allow.servers[0]"
    assert record["args"]["keys"] == ["agent_id", "args", "server", "tool"]
    assert "hi" not in json.dumps(record)  # argument values stay out of the audit log


def test_a_downstream_error_and_an_is_error_result_are_forwarded_as_they_are() -> None:
    d = Driver()
    d.initialize()
    ready(d)
    d.send(call(1, "execute_tool", agent_id="dev", server="db", tool="echo", args={}))
    err = {"code": -32602, "message": "bad text", "data": {"why": 1}}
    [msg] = sent_to_client(d.downstream("db", {"jsonrpc": "2.0", "id": 3, "error": err}))
    assert msg == {"jsonrpc": "2.0", "id": 1, "error": err}
    d.send(call(2, "execute_tool", agent_id="dev", server="db", tool="echo", args={}))
    res = {"content": [{"type": "text", "text": "boom"}], "isError": True}
    [msg] = sent_to_client(d.downstream("db", {"jsonrpc": "2.0", "id": 4, "result": res}))
    assert msg == {"jsonrpc": "2.0", "id": 2, "result": res}


def test_execute_tool_denials_name_the_rule() -> None:
    d = Driver()
    d.initialize()
    ready(d)
    actions = d.send(call(1, "execute_tool", agent_id="dev", server="db", tool="drop_table", args={}))
    [msg] = sent_to_client(actions)
    assert msg["error"] == {"code": -32000, "message": "Access to tool 'drop_table' on server 'db' is denied", "data": {"code": "DENIED_BY_POLICY", "rule": "agents.dev.deny.tools.db[0]"}}
    assert sent_downstream(actions) == []
    [record] = audits(actions)
    assert (record["decision"], record["rule"], record["tool"]) == ("DENY", "agents.dev.deny.tools.db[0]", "drop_table")


def test_execute_tool_unknown_tool() -> None:
    d = Driver()
    d.initialize()
    ready(d)
    [msg] = sent_to_client(d.send(call(1, "execute_tool", agent_id="dev", server="db", tool="nope", args={})))
    assert msg["error"] == {"code": -32002, "message": "Tool 'nope' not found on server 'db'", "data": {"code": "TOOL_NOT_FOUND", "server": "db", "tool": "nope"}}


def test_calls_wait_while_the_downstream_starts_and_go_out_in_order() -> None:
    d = Driver()
    d.initialize()
    d.send(call(1, "execute_tool", agent_id="dev", server="db", tool="echo", args={"text": "a"}))
    d.send(call(2, "execute_tool", agent_id="dev", server="db", tool="echo", args={"text": "b"}))
    actions = d.handshake("db", [ECHO_TOOL])
    assert [m["params"]["arguments"]["text"] for m in sent_downstream(actions)] == ["a", "b"]


def test_progress_tokens_are_rewritten_both_ways() -> None:
    d = Driver()
    d.initialize()
    ready(d)
    msg = call(1, "execute_tool", agent_id="dev", server="db", tool="echo", args={})
    msg["params"]["_meta"] = {"progressToken": "client-token"}
    [forwarded] = sent_downstream(d.send(msg))
    assert forwarded["params"]["_meta"] == {"progressToken": 3}
    actions = d.downstream("db", {"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": 3, "progress": 1, "total": 2, "message": "half"}})
    assert actions == [
        SendToClient(client=0, request=1, message={"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": "client-token", "progress": 1, "total": 2, "message": "half"}})
    ]
    # Progress for a call nobody asked progress for, or for an unknown token, goes nowhere.
    assert d.downstream("db", {"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": 99, "progress": 1}}) == []


# -- failures ----------------------------------------------------------------------


def test_a_call_that_times_out_is_cancelled_downstream_and_others_keep_working() -> None:
    d = Driver()
    d.initialize()
    ready(d)
    d.send(call(1, "execute_tool", agent_id="dev", server="db", tool="echo", args={}, timeout_ms=500))
    d.send(call(2, "execute_tool", agent_id="dev", server="db", tool="echo", args={}))
    d.now = 0.5
    actions = d.fire(3)
    assert actions[:2] == [
        SendToDownstream(downstream=1, message={"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 3, "reason": "timed out after 500 ms"}}),
        SendToClient(client=0, request=1, message={"jsonrpc": "2.0", "id": 1, "error": {"code": -32004, "message": "No answer from server 'db' within 500 ms", "data": {"code": "TIMEOUT", "server": "db", "timeout_ms": 500}}}),
    ]
    assert audits(actions)[0]["error_code"] == "TIMEOUT"
    # The late answer is dropped; the other call is answered.
    assert sent_to_client(d.downstream("db", {"jsonrpc": "2.0", "id": 3, "result": {"content": []}})) == []
    [msg] = sent_to_client(d.downstream("db", {"jsonrpc": "2.0", "id": 4, "result": {"content": []}}))
    assert msg["id"] == 2


def test_a_crash_fails_pending_calls_at_once_and_the_next_call_restarts_it() -> None:
    d = Driver()
    d.initialize()
    ready(d)
    d.send(call(1, "execute_tool", agent_id="dev", server="db", tool="echo", args={}))
    actions = d.exit("db", "killed by signal SIGKILL")
    [msg] = sent_to_client(actions)
    assert msg["error"] == {"code": -32001, "message": "Server 'db' is unavailable: killed by signal SIGKILL", "data": {"code": "SERVER_UNAVAILABLE", "server": "db", "reason": "killed by signal SIGKILL"}}
    actions = d.send(call(2, "execute_tool", agent_id="dev", server="db", tool="echo", args={}))
    [start] = [a for a in actions if isinstance(a, StartDownstream)]
    assert start.downstream == 2
    forwarded = sent_downstream(d.handshake("db", [ECHO_TOOL]))
    assert forwarded[0]["params"]["name"] == "echo"


def test_a_server_that_keeps_failing_to_start_backs_off() -> None:
    d = Driver()
    d.initialize()
    d.send(call(1, "execute_tool", agent_id="dev", server="db", tool="echo", args={}))
    [msg] = sent_to_client(d.exit("db", "command not found: srv"))
    assert msg["error"]["data"]["reason"] == "command not found: srv"
    # The first failure retries at once; the second one waits 0.5 s.
    d.send(call(2, "execute_tool", agent_id="dev", server="db", tool="echo", args={}))
    d.exit("db", "command not found: srv")
    actions = d.send(call(3, "execute_tool", agent_id="dev", server="db", tool="echo", args={}))
    assert [a for a in actions if isinstance(a, StartDownstream)] == []
    [msg] = sent_to_client(actions)
    assert msg["error"]["data"]["reason"] == "command not found: srv; next start attempt in 0.5 s"
    d.now = 0.5
    actions = d.send(call(4, "execute_tool", agent_id="dev", server="db", tool="echo", args={}))
    assert len([a for a in actions if isinstance(a, StartDownstream)]) == 1


def test_a_handshake_that_never_finishes_times_out() -> None:
    d = Driver(make_config(start_timeout_ms=2000))
    d.initialize()
    d.send(call(1, "get_server_tools", agent_id="dev", server="db"))
    d.now = 2.0
    actions = d.fire(2)
    assert actions[0] == StopDownstream(downstream=1)
    [msg] = sent_to_client(actions)
    assert msg["error"]["data"]["reason"] == "did not finish its MCP handshake within 2 s"


def test_initialize_error_and_garbage_output() -> None:
    d = Driver()
    d.initialize()
    d.send(call(1, "get_server_tools", agent_id="dev", server="db"))
    logs = [a for a in d.downstream("db", b"Starting server...") if isinstance(a, Log)]
    assert logs[0].level == "warning" and logs[0].fields and logs[0].fields["server"] == "db"
    actions = d.downstream("db", {"jsonrpc": "2.0", "id": 1, "error": {"code": -32602, "message": "Unsupported protocol version"}})
    assert StopDownstream(downstream=1) in actions
    [msg] = sent_to_client(actions)
    assert msg["error"]["data"]["reason"] == "initialize failed: Unsupported protocol version"


def test_downstream_requests_get_answers() -> None:
    d = Driver()
    d.initialize()
    ready(d)
    assert sent_downstream(d.downstream("db", {"jsonrpc": "2.0", "id": "s1", "method": "ping"})) == [{"jsonrpc": "2.0", "id": "s1", "result": {}}]
    [reply] = sent_downstream(d.downstream("db", {"jsonrpc": "2.0", "id": "s2", "method": "sampling/createMessage", "params": {}}))
    assert reply["error"]["code"] == -32601


def test_tools_list_changed_refreshes_the_cache() -> None:
    d = Driver()
    d.initialize()
    ready(d, tools=[ECHO_TOOL])
    [listing] = sent_downstream(d.downstream("db", {"jsonrpc": "2.0", "method": "notifications/tools/list_changed"}))
    assert listing == {"jsonrpc": "2.0", "id": 3, "method": "tools/list"}
    d.downstream("db", {"jsonrpc": "2.0", "id": 3, "result": {"tools": [GET_TOOL], "nextCursor": "p2"}})
    d.downstream("db", {"jsonrpc": "2.0", "id": 4, "result": {"tools": [ECHO_TOOL]}})
    [msg] = sent_to_client(d.send(call(1, "get_server_tools", agent_id="dev", server="db")))
    assert [t["name"] for t in structured(msg)["tools"]] == ["get_user", "echo"]


def test_client_cancellation_reaches_the_downstream_and_no_answer_follows() -> None:
    d = Driver()
    d.initialize()
    ready(d)
    d.send(call(1, "execute_tool", agent_id="dev", server="db", tool="echo", args={}))
    actions = d.send({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 1, "reason": "user"}})
    assert sent_downstream(actions) == [{"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 3, "reason": "user"}}]
    assert sent_to_client(actions) == [] and audits(actions)[0]["error_code"] == "CANCELLED"
    assert sent_to_client(d.downstream("db", {"jsonrpc": "2.0", "id": 3, "result": {}})) == []


def test_a_closed_client_cancels_what_it_had_in_flight() -> None:
    d = Driver()
    d.initialize()
    ready(d)
    d.send(call(1, "execute_tool", agent_id="dev", server="db", tool="echo", args={}))
    actions = d.handle(ClientClosed(now=0, client=0))
    assert sent_downstream(actions)[0]["method"] == "notifications/cancelled"
    assert sent_to_client(actions) == []


def test_eager_start_and_shutdown_stop_every_downstream() -> None:
    d = Driver(make_config(init_strategy="eager"))
    actions = d.start()
    assert [a.server for a in actions if isinstance(a, StartDownstream)] == ["db", "util"]
    d.initialize()
    d.send(call(1, "execute_tool", agent_id="dev", server="db", tool="echo", args={}))
    actions = d.handle(ShutdownRequested(now=0))
    assert [a for a in actions if isinstance(a, StopDownstream)] == [StopDownstream(downstream=1), StopDownstream(downstream=2)]
    [msg] = sent_to_client(actions)
    assert msg["error"]["message"] == "The gateway is shutting down"
    [msg] = sent_to_client(d.send(call(2, "list_servers", agent_id="dev")))
    assert msg["error"]["code"] == -32001


def test_reload_applies_policy_to_the_next_call_and_drains_changed_servers() -> None:
    d = Driver()
    d.initialize()
    ready(d)
    d.send(call(1, "execute_tool", agent_id="dev", server="db", tool="echo", args={}))
    rules = {"agents": {"dev": {"allow": {"servers": ["util"]}}}}
    changed = make_config(rules)
    changed = type(changed)(servers={"db": server("db", timeout_ms=5), "util": server("util")}, policy=changed.policy, settings=changed.settings)
    actions = d.handle(ConfigReloaded(now=0, config=changed))
    assert [a for a in actions if isinstance(a, StopDownstream)] == []  # a call is still in flight
    [msg] = sent_to_client(d.send(call(2, "execute_tool", agent_id="dev", server="db", tool="echo", args={})))
    assert msg["error"]["data"]["code"] == "DENIED_BY_POLICY"
    actions = d.downstream("db", {"jsonrpc": "2.0", "id": 3, "result": {"content": []}})
    assert sent_to_client(actions)[0]["id"] == 1
    assert StopDownstream(downstream=1) in actions


def test_identical_event_sequences_give_identical_actions() -> None:
    def run() -> list:
        d = Driver()
        out = d.initialize()
        out += d.send(call(1, "execute_tool", agent_id="dev", server="db", tool="echo", args={}))
        out += d.handshake("db", [ECHO_TOOL])
        out += d.exit("db")
        return out

    assert run() == run()


def test_settings_default_is_a_sixty_second_call_timeout() -> None:
    assert Settings().call_timeout_ms == 60_000


def test_unhashable_ids_in_notifications_are_ignored() -> None:
    # Regression: a list as requestId or progressToken made handle() raise TypeError.
    d = Driver()
    d.initialize()
    ready(d)
    assert d.send({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": []}}) == []
    assert d.downstream("db", {"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": {"a": 1}}}) == []
