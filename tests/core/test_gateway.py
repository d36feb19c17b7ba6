"""Gateway state machine: feed events, compare the actions that come out."""

from __future__ import annotations

import json
import textwrap

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

from . import harness
from .harness import (
    DROP_TOOL,
    ECHO_TOOL,
    GET_TOOL,
    RULES,
    Driver,
    audited,
    audits,
    call,
    make_config,
    req,
    sent_downstream,
    sent_to_client,
    server,
    structured,
)

#: The rule that lets dev reach every server.
DEV = "agents.dev.allow.servers[0]"
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
    assert d.send(req(1, "tools/list")) == [
        SendToClient(
            client=0,
            request=1,
            message={"jsonrpc": "2.0", "id": 1, "error": {"code": -32600, "message": "Session not initialized: send initialize first", "data": {"code": "INVALID_REQUEST"}}},
        )
    ]
    assert d.send(req(2, "ping")) == [SendToClient(client=0, request=2, message={"jsonrpc": "2.0", "id": 2, "result": {}})]


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
    assert names == ["list_servers", "search_tools", "get_server_tools", "execute_tool"]
    # Every agent pays for this in context before doing anything: pin its size.
    assert len(encode(msg["result"])) == 1225
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
    assert d.send(req(1, "logging/setLevel", {"level": "debug"})) == [
        SendToClient(client=0, request=1, message={"jsonrpc": "2.0", "id": 1, "result": {}})
    ]
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
    assert d.send(req(5, "ping")) == [SendToClient(client=0, request=5, message={"jsonrpc": "2.0", "id": 5, "result": {}})]


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
    # An answer and its audit record, and nothing unencodable is forwarded.
    assert [type(a) for a in actions] == [SendToClient, Audit]
    [msg] = sent_to_client(actions)
    assert msg["id"] == 5 and msg["error"]["code"] == code
    if path is not None:
        assert msg["error"]["data"]["path"] == path
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
    for frame, error in (
        (b'{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"reason":"\\ud800"}}', "Invalid params: a string holds a lone UTF-16 surrogate at params.reason"),
        (b'{"jsonrpc":"2.0","id":8,"result":{"x":NaN}}', "Parse error: NaN is not JSON at result.x"),
    ):
        assert d.send(frame) == [
            Log(level="warning", message="ignored an invalid notification or response", fields={"client": "0", "error": error})
        ]


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
    execute = call("c", "execute_tool", agent_id="dev", server="db", tool="echo", args={"text": "hi"})
    assert d.send(execute) == [
        SetTimer(timer=3, deadline=60.0),
        SendToDownstream(downstream=1, message={"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "echo", "arguments": {"text": "hi"}}}),
    ]
    actions = d.server("db").send(b'{"jsonrpc":"2.0","id":3,"result":{"content":[{"type":"text","text":"\\ud800"}]}}')
    error = "Invalid Request: a string holds a lone UTF-16 surrogate at result.content[0].text"
    reason = f"sent an answer that cannot be forwarded ({error})"
    assert actions == [
        Log(level="warning", message="server sent an answer that cannot be forwarded", fields={"server": "db", "error": error}),
        CancelTimer(timer=3),
        SendToClient(
            client=0,
            request="c",
            message={
                "jsonrpc": "2.0",
                "id": "c",
                "error": {
                    "code": -32603,
                    "message": f"Server 'db' {reason}",
                    "data": {"code": "INTERNAL_ERROR", "server": "db", "reason": reason, "path": "result.content[0].text"},
                },
            },
        ),
        # The server answered, badly: recorded as its error, not the gateway's.
        audited(execute, rule=DEV, error_code="DOWNSTREAM_ERROR"),
    ]
    # The server is fine otherwise: the next call goes out on the same connection, under the next id.
    assert d.send(call("d", "execute_tool", agent_id="dev", server="db", tool="echo", args={})) == [
        SetTimer(timer=4, deadline=60.0),
        SendToDownstream(downstream=1, message={"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": {"name": "echo", "arguments": {}}}),
    ]


def test_a_poisoned_request_from_a_server_gets_an_error_and_garbage_is_logged() -> None:
    d = Driver()
    d.initialize()
    ready(d)
    db = d.server("db")
    assert db.send(b'{"jsonrpc":"2.0","id":"s1","method":"roots/list","params":{"x":NaN}}') == [
        SendToDownstream(downstream=db.id, message={"jsonrpc": "2.0", "id": "s1", "error": {"code": -32700, "message": "Parse error: NaN is not JSON at params.x"}})
    ]
    assert db.send(b'{"jsonrpc":"2.0","id":99,"result":NaN}') == [  # answers nothing of ours
        Log(level="warning", message="ignored output that is not JSON-RPC", fields={"server": "db", "error": "Parse error: NaN is not JSON at result"})
    ]


def test_an_oversized_message_gets_an_error() -> None:
    d = Driver(make_config(max_message_bytes=1000))
    actions = d.handle(ClientMessageReceived(now=0, client=0, data=b"", too_large=True))
    assert actions == [
        SendToClient(
            client=0,
            request=None,
            message={"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": "Message exceeds the 1000-byte limit", "data": {"code": "INVALID_REQUEST", "limit": 1000}}},
        )
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


@pytest.mark.parametrize("situation", ["request id in flight", "shutting down"])
def test_a_call_refused_for_the_sessions_state_is_audited_too(situation: str) -> None:
    d = Driver()
    d.initialize()
    d.send(call(1, "get_server_tools", agent_id="dev", server="db"))
    if situation == "shutting down":
        d.handle(ShutdownRequested(now=d.now))
    refused = call(1, "get_server_tools", agent_id="dev", server="util")
    actions = d.send(refused)
    [answer] = sent_to_client(actions)
    assert answer["error"]["data"]["code"] == ("INVALID_REQUEST" if situation == "request id in flight" else "SERVER_UNAVAILABLE")
    assert [(r["operation"], r["decision"]) for r in audits(actions)] == [("get_server_tools", "ERROR")]


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
    db = d.server("db")
    d.now = 1.5
    actions = db.answer("initialize", result={"protocolVersion": "2025-06-18", "capabilities": {}, "serverInfo": {"name": "db"}})
    assert actions == [
        SendToDownstream(downstream=1, message={"jsonrpc": "2.0", "method": "notifications/initialized"}),
        SendToDownstream(downstream=1, message={"jsonrpc": "2.0", "id": 2, "method": "tools/list"}),
    ]
    d.now = 2.0
    actions = db.answer("tools/list", result={"tools": [ECHO_TOOL, DROP_TOOL, GET_TOOL]})
    value = {"tools": [GET_TOOL], "server": "db", "total_available": 1, "returned": 1, "tokens_used": 13}
    assert actions == [
        CancelTimer(timer=2),
        Log(level="info", message="server ready", fields={"server": "db", "tools": 3, "protocol": "2025-06-18"}),
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
    assert [type(a) for a in actions] == [SetTimer, CancelTimer, SendToClient, Audit]
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
    denied = call(1, "get_server_tools", agent_id="reader", server="util")
    assert d.send(denied) == [  # and nothing starts
        SendToClient(
            client=0,
            request=1,
            message={"jsonrpc": "2.0", "id": 1, "error": {"code": -32000, "message": "Access to server 'util' is denied (agents.reader: no rule allows it)", "data": {"code": "DENIED_BY_POLICY", "rule": "agents.reader: no rule allows it"}}},
        ),
        audited(denied, "DENY", rule="agents.reader: no rule allows it", error_code="DENIED_BY_POLICY"),
    ]
    unknown = call(2, "get_server_tools", agent_id="dev", server="nosuch")
    assert d.send(unknown) == [
        SendToClient(
            client=0,
            request=2,
            message={"jsonrpc": "2.0", "id": 2, "error": {"code": -32001, "message": "Server 'nosuch' is not configured", "data": {"code": "SERVER_UNAVAILABLE", "server": "nosuch", "reason": "not configured"}}},
        ),
        audited(unknown, "ERROR", rule=DEV, error_code="SERVER_UNAVAILABLE"),
    ]


# -- execute_tool ----------------------------------------------------------------


def test_execute_tool_forwards_under_its_own_id_and_returns_the_result_untouched() -> None:
    d = Driver()
    d.initialize()
    ready(d)
    execute = call("abc", "execute_tool", agent_id="dev", server="db", tool="echo", args={"text": "hi"})
    actions = d.send(execute)
    assert actions == [
        SetTimer(timer=3, deadline=60.0),
        SendToDownstream(downstream=1, message={"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "echo", "arguments": {"text": "hi"}}}),
    ]
    downstream_result = {"content": [{"type": "text", "text": "hi"}], "structuredContent": {"result": "hi"}, "isError": False, "_meta": {"x": 1}, "extra": [1]}
    actions = d.server("db").answer("tools/call", result=downstream_result)
    assert actions == [
        CancelTimer(timer=3),
        SendToClient(client=0, request="abc", message={"jsonrpc": "2.0", "id": "abc", "result": downstream_result}),
        audited(execute, rule=DEV),
    ]
    [record] = audits(actions)
    assert record["args"]["keys"] == ["agent_id", "args", "server", "tool"]
    assert "hi" not in json.dumps(record)  # argument values stay out of the audit log


def test_a_downstream_error_and_an_is_error_result_are_forwarded_as_they_are() -> None:
    d = Driver()
    d.initialize()
    ready(d)
    db = d.server("db")
    first = call(1, "execute_tool", agent_id="dev", server="db", tool="echo", args={})
    d.send(first)
    err = {"code": -32602, "message": "bad text", "data": {"why": 1}}
    assert db.answer("tools/call", error=err) == [
        CancelTimer(timer=3),
        SendToClient(client=0, request=1, message={"jsonrpc": "2.0", "id": 1, "error": err}),
        audited(first, rule=DEV, error_code="DOWNSTREAM_ERROR"),  # allowed; the server said no
    ]
    second = call(2, "execute_tool", agent_id="dev", server="db", tool="echo", args={})
    d.send(second)
    res = {"content": [{"type": "text", "text": "boom"}], "isError": True}
    assert db.answer("tools/call", result=res) == [
        CancelTimer(timer=4),
        SendToClient(client=0, request=2, message={"jsonrpc": "2.0", "id": 2, "result": res}),
        audited(second, rule=DEV),  # a tool's own failure is an answer like any other
    ]


def test_execute_tool_denials_name_the_rule() -> None:
    d = Driver()
    d.initialize()
    ready(d)
    denied = call(1, "execute_tool", agent_id="dev", server="db", tool="drop_table", args={})
    assert d.send(denied) == [  # and nothing is forwarded
        SendToClient(
            client=0,
            request=1,
            message={"jsonrpc": "2.0", "id": 1, "error": {"code": -32000, "message": "Access to tool 'drop_table' on server 'db' is denied (agents.dev.deny.tools.db[0])", "data": {"code": "DENIED_BY_POLICY", "rule": "agents.dev.deny.tools.db[0]"}}},
        ),
        audited(denied, "DENY", rule="agents.dev.deny.tools.db[0]", error_code="DENIED_BY_POLICY"),
    ]


def test_execute_tool_unknown_tool() -> None:
    d = Driver()
    d.initialize()
    ready(d)
    unknown = call(1, "execute_tool", agent_id="dev", server="db", tool="nope", args={})
    assert d.send(unknown) == [
        # Routed like any call (with its timer), then refused by the server's cached tool list.
        SetTimer(timer=3, deadline=60.0),
        CancelTimer(timer=3),
        SendToClient(
            client=0,
            request=1,
            message={"jsonrpc": "2.0", "id": 1, "error": {"code": -32002, "message": "Tool 'nope' not found on server 'db'", "data": {"code": "TOOL_NOT_FOUND", "server": "db", "tool": "nope"}}},
        ),
        audited(unknown, "ERROR", rule=DEV, error_code="TOOL_NOT_FOUND"),
    ]


def test_calls_wait_while_the_downstream_starts_and_go_out_in_order() -> None:
    d = Driver()
    d.initialize()
    d.send(call(1, "execute_tool", agent_id="dev", server="db", tool="echo", args={"text": "a"}))
    d.send(call(2, "execute_tool", agent_id="dev", server="db", tool="echo", args={"text": "b"}))
    assert d.server("db").complete_handshake([ECHO_TOOL]) == [
        CancelTimer(timer=2),  # the start timer
        Log(level="info", message="server ready", fields={"server": "db", "tools": 1, "protocol": "2025-11-25"}),
        SendToDownstream(downstream=1, message={"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "echo", "arguments": {"text": "a"}}}),
        SendToDownstream(downstream=1, message={"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": {"name": "echo", "arguments": {"text": "b"}}}),
    ]


def test_progress_tokens_are_rewritten_both_ways() -> None:
    d = Driver()
    d.initialize()
    ready(d)
    db = d.server("db")
    msg = call(1, "execute_tool", agent_id="dev", server="db", tool="echo", args={})
    msg["params"]["_meta"] = {"progressToken": "client-token"}
    [forwarded] = sent_downstream(d.send(msg))
    assert forwarded["params"]["_meta"] == {"progressToken": 3}  # the gateway's own token: the wire id
    actions = db.progress(progress=1, total=2, message="half")
    assert actions == [
        SendToClient(client=0, request=1, message={"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": "client-token", "progress": 1, "total": 2, "message": "half"}})
    ]
    # Progress for a call nobody asked progress for, or for an unknown token, goes nowhere.
    assert db.notify("notifications/progress", progressToken=99, progress=1) == []


# -- failures ----------------------------------------------------------------------


def test_a_call_that_times_out_is_cancelled_downstream_and_others_keep_working() -> None:
    d = Driver()
    d.initialize()
    ready(d)
    db = d.server("db")
    slow = call(1, "execute_tool", agent_id="dev", server="db", tool="echo", args={}, timeout_ms=500)
    d.send(slow)
    late = db.request("tools/call")
    d.send(call(2, "execute_tool", agent_id="dev", server="db", tool="echo", args={}))
    actions = d.advance(0.5)
    assert actions == [
        SendToDownstream(downstream=1, message={"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": late["id"], "reason": "timed out after 500 ms"}}),
        SendToClient(client=0, request=1, message={"jsonrpc": "2.0", "id": 1, "error": {"code": -32004, "message": "No answer from server 'db' within 500 ms", "data": {"code": "TIMEOUT", "server": "db", "timeout_ms": 500}}}),
        audited(slow, "ERROR", rule=DEV, latency_ms=500.0, error_code="TIMEOUT"),
        # A slow call is no failure, but is the server alive? A ping asks at once.
        Log(level="warning", message="a call timed out; checking that the server is alive", fields={"server": "db", "reason": "a call timed out after 500 ms"}),
        SendToDownstream(downstream=1, message={"jsonrpc": "2.0", "id": 5, "method": "ping"}),
        SetTimer(timer=5, deadline=10.5),
    ]
    # The late answer is dropped; the other call is answered.
    assert db.answer(late, result={"content": []}) == []
    [msg] = sent_to_client(db.answer("tools/call", result={"content": []}))
    assert msg["id"] == 2


def test_a_crash_fails_pending_calls_at_once_and_the_next_call_restarts_it() -> None:
    d = Driver()
    d.initialize()
    ready(d)
    first = call(1, "execute_tool", agent_id="dev", server="db", tool="echo", args={})
    d.send(first)
    reason = "killed by signal SIGKILL"
    assert d.server("db").exit(reason) == [
        Log(level="warning", message="server unavailable", fields={"server": "db", "instance": 0, "reason": reason}),
        SetTimer(timer=4, deadline=0.0),  # its restart: the first failure waits no backoff
        CancelTimer(timer=3),
        SendToClient(client=0, request=1, message={"jsonrpc": "2.0", "id": 1, "error": {"code": -32001, "message": f"Server 'db' is unavailable: {reason}", "data": {"code": "SERVER_UNAVAILABLE", "server": "db", "reason": reason}}}),
        audited(first, "ERROR", rule=DEV, error_code="SERVER_UNAVAILABLE"),
    ]
    assert d.send(call(2, "execute_tool", agent_id="dev", server="db", tool="echo", args={})) == [
        SetTimer(timer=5, deadline=60.0),
        CancelTimer(timer=4),  # the call starts it now instead
        StartDownstream(downstream=2, server="db", spec=server("db")),
        SendToDownstream(downstream=2, message={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": INIT}),
        SetTimer(timer=6, deadline=30.0),
    ]
    forwarded = sent_downstream(d.server("db").complete_handshake([ECHO_TOOL]))
    assert forwarded[0]["params"]["name"] == "echo"


def test_a_server_that_keeps_failing_to_start_backs_off() -> None:
    d = Driver()
    d.initialize()
    d.send(call(1, "execute_tool", agent_id="dev", server="db", tool="echo", args={}))
    [msg] = sent_to_client(d.server("db").exit("command not found: srv"))
    assert msg["error"]["data"]["reason"] == "command not found: srv"
    # The first failure retries at once; the second one waits 0.5 s.
    d.send(call(2, "execute_tool", agent_id="dev", server="db", tool="echo", args={}))
    d.server("db").exit("command not found: srv")
    third = call(3, "execute_tool", agent_id="dev", server="db", tool="echo", args={})
    reason = "command not found: srv; next start attempt in 0.5 s"
    assert d.send(third) == [  # and nothing starts
        SendToClient(client=0, request=3, message={"jsonrpc": "2.0", "id": 3, "error": {"code": -32001, "message": f"Server 'db' is unavailable: {reason}", "data": {"code": "SERVER_UNAVAILABLE", "server": "db", "reason": reason}}}),
        audited(third, "ERROR", rule=DEV, error_code="SERVER_UNAVAILABLE"),
    ]
    d.now = 0.5
    actions = d.send(call(4, "execute_tool", agent_id="dev", server="db", tool="echo", args={}))
    assert [a.downstream for a in actions if isinstance(a, StartDownstream)] == [3]


def test_a_handshake_that_never_finishes_times_out() -> None:
    d = Driver(make_config(start_timeout_ms=2000))
    d.initialize()
    tools = call(1, "get_server_tools", agent_id="dev", server="db")
    d.send(tools)
    reason = "did not finish its MCP handshake within 2 s"
    assert d.advance(2.0) == [
        StopDownstream(downstream=1),
        Log(level="warning", message="server unavailable", fields={"server": "db", "instance": 0, "reason": reason}),
        SetTimer(timer=3, deadline=2.0),
        CancelTimer(timer=1),
        SendToClient(client=0, request=1, message={"jsonrpc": "2.0", "id": 1, "error": {"code": -32001, "message": f"Server 'db' is unavailable: {reason}", "data": {"code": "SERVER_UNAVAILABLE", "server": "db", "reason": reason}}}),
        audited(tools, "ERROR", rule=DEV, latency_ms=2000.0, error_code="SERVER_UNAVAILABLE"),
        # Its restart timer fell due at once (no backoff after one failure): a shared server starts again.
        StartDownstream(downstream=2, server="db", spec=server("db")),
        SendToDownstream(downstream=2, message={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": INIT}),
        SetTimer(timer=4, deadline=4.0),
    ]


def test_initialize_error_and_garbage_output() -> None:
    d = Driver()
    d.initialize()
    tools = call(1, "get_server_tools", agent_id="dev", server="db")
    d.send(tools)
    db = d.server("db")
    assert db.send(b"Starting server...") == [
        Log(level="warning", message="ignored output that is not JSON-RPC", fields={"server": "db", "error": "Parse error: Expecting value: line 1 column 1 (char 0)"})
    ]
    reason = "initialize failed: Unsupported protocol version"
    assert db.answer("initialize", error={"code": -32602, "message": "Unsupported protocol version"}) == [
        StopDownstream(downstream=1),
        CancelTimer(timer=2),
        Log(level="warning", message="server unavailable", fields={"server": "db", "instance": 0, "reason": reason}),
        SetTimer(timer=3, deadline=0.0),
        CancelTimer(timer=1),
        SendToClient(client=0, request=1, message={"jsonrpc": "2.0", "id": 1, "error": {"code": -32001, "message": f"Server 'db' is unavailable: {reason}", "data": {"code": "SERVER_UNAVAILABLE", "server": "db", "reason": reason}}}),
        audited(tools, "ERROR", rule=DEV, error_code="SERVER_UNAVAILABLE"),
    ]


def test_downstream_requests_get_answers() -> None:
    d = Driver()
    d.initialize()
    ready(d)
    db = d.server("db")
    assert db.send({"jsonrpc": "2.0", "id": "s1", "method": "ping"}) == [
        SendToDownstream(downstream=1, message={"jsonrpc": "2.0", "id": "s1", "result": {}})
    ]
    assert db.send({"jsonrpc": "2.0", "id": "s2", "method": "sampling/createMessage", "params": {}}) == [
        SendToDownstream(downstream=1, message={"jsonrpc": "2.0", "id": "s2", "error": {"code": -32601, "message": "Method not supported by the gateway: sampling/createMessage"}})
    ]


def test_tools_list_changed_refreshes_the_cache() -> None:
    d = Driver()
    d.initialize()
    ready(d, tools=[ECHO_TOOL])
    db = d.server("db")
    assert db.notify("notifications/tools/list_changed") == [
        SendToDownstream(downstream=1, message={"jsonrpc": "2.0", "id": 3, "method": "tools/list"})
    ]
    assert db.answer("tools/list", result={"tools": [GET_TOOL], "nextCursor": "p2"}) == [
        SendToDownstream(downstream=1, message={"jsonrpc": "2.0", "id": 4, "method": "tools/list", "params": {"cursor": "p2"}})
    ]
    assert db.answer("tools/list", result={"tools": [ECHO_TOOL]}) == []
    [msg] = sent_to_client(d.send(call(1, "get_server_tools", agent_id="dev", server="db")))
    assert [t["name"] for t in structured(msg)["tools"]] == ["get_user", "echo"]


def test_client_cancellation_reaches_the_downstream_and_no_answer_follows() -> None:
    d = Driver()
    d.initialize()
    ready(d)
    execute = call(1, "execute_tool", agent_id="dev", server="db", tool="echo", args={})
    d.send(execute)
    forwarded = d.server("db").request("tools/call")
    actions = d.send({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 1, "reason": "user"}})
    assert actions == [
        SendToDownstream(downstream=1, message={"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": forwarded["id"], "reason": "user"}}),
        CancelTimer(timer=3),
        audited(execute, "ERROR", rule=DEV, error_code="CANCELLED"),
    ]
    assert d.server("db").answer(forwarded) == []


def test_a_closed_client_cancels_what_it_had_in_flight() -> None:
    d = Driver()
    d.initialize()
    ready(d)
    execute = call(1, "execute_tool", agent_id="dev", server="db", tool="echo", args={})
    d.send(execute)
    forwarded = d.server("db").request("tools/call")
    assert d.clients[0].close() == [
        SendToDownstream(downstream=1, message={"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": forwarded["id"], "reason": "the client went away"}}),
        CancelTimer(timer=3),
        audited(execute, "ERROR", rule=DEV, error_code="CANCELLED"),
    ]


def test_eager_start_and_shutdown_stop_every_downstream() -> None:
    d = Driver(make_config(init_strategy="eager"))
    assert d.start() == [
        StartDownstream(downstream=1, server="db", spec=server("db")),
        SendToDownstream(downstream=1, message={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": INIT}),
        SetTimer(timer=1, deadline=30.0),
        StartDownstream(downstream=2, server="util", spec=server("util")),
        SendToDownstream(downstream=2, message={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": INIT}),
        SetTimer(timer=2, deadline=30.0),
    ]
    d.initialize()
    execute = call(1, "execute_tool", agent_id="dev", server="db", tool="echo", args={})
    d.send(execute)
    assert d.handle(ShutdownRequested(now=0)) == [
        CancelTimer(timer=3),
        SendToClient(client=0, request=1, message={"jsonrpc": "2.0", "id": 1, "error": {"code": -32001, "message": "The gateway is shutting down", "data": {"code": "SERVER_UNAVAILABLE", "server": "db", "reason": "shutting down"}}}),
        audited(execute, "ERROR", rule=DEV, error_code="SERVER_UNAVAILABLE"),
        StopDownstream(downstream=1),
        CancelTimer(timer=1),
        StopDownstream(downstream=2),
        CancelTimer(timer=2),
    ]
    [msg] = sent_to_client(d.send(call(2, "list_servers", agent_id="dev")))
    assert msg["error"]["code"] == -32001


def test_reload_applies_policy_to_the_next_call_and_drains_changed_servers() -> None:
    d = Driver()
    d.initialize()
    ready(d)
    execute = call(1, "execute_tool", agent_id="dev", server="db", tool="echo", args={})
    d.send(execute)
    rules = {"agents": {"dev": {"allow": {"servers": ["util"]}}}}
    changed = make_config(rules)
    changed = type(changed)(servers={"db": server("db", timeout_ms=5), "util": server("util")}, policy=changed.policy, settings=changed.settings)
    assert d.handle(ConfigReloaded(now=0, config=changed)) == [  # nothing stops: a call is still in flight
        Log(level="notice", message="configuration reloaded", fields={"files": [], "added": [], "removed": [], "changed": ["db"], "agents": 1})
    ]
    [msg] = sent_to_client(d.send(call(2, "execute_tool", agent_id="dev", server="db", tool="echo", args={})))
    assert msg["error"]["data"]["code"] == "DENIED_BY_POLICY"
    assert d.server("db").answer("tools/call", result={"content": []}) == [
        CancelTimer(timer=3),
        SendToClient(client=0, request=1, message={"jsonrpc": "2.0", "id": 1, "result": {"content": []}}),
        audited(execute, rule=DEV),  # under the rules it started with
        StopDownstream(downstream=1),  # drained
    ]


def test_identical_event_sequences_give_identical_actions() -> None:
    def run() -> list:
        d = Driver()
        out = d.initialize()
        out += d.send(call(1, "execute_tool", agent_id="dev", server="db", tool="echo", args={}))
        out += d.handshake("db", [ECHO_TOOL])
        out += d.server("db").exit()
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
    assert d.server("db").notify("notifications/progress", progressToken={"a": 1}) == []


# -- the harness ------------------------------------------------------------------


def test_the_harness_example_runs() -> None:
    """The example in tests/core/harness.py's docstring is a test too, so it cannot go stale."""
    example = (harness.__doc__ or "").split("::\n\n", 1)[1].split("\n\n", 1)[0]
    exec(textwrap.dedent(example), dict(vars(harness)))  # noqa: S102 (our own docstring)
