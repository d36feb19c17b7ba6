"""HTTP downstreams in the core: lost sessions (404) and HTTP error statuses.

The core never sees HTTP; the shell reports a refused message as
``DownstreamSessionLost`` or ``DownstreamHttpError`` and the core decides.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from lockgate.core import __version__
from lockgate.core._actions import CancelTimer, Log, SendToClient, SendToDownstream, SetTimer, StopDownstream
from lockgate.core._events import DownstreamHttpError, DownstreamSessionLost
from lockgate.core._jsonrpc import encode

from .harness import DROP_TOOL, ECHO_TOOL, GET_TOOL, Driver, audited, call, sent_downstream, sent_to_client

JSON = dict[str, Any]
INIT = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "lockgate", "version": __version__}}
TOOLS = [ECHO_TOOL, DROP_TOOL, GET_TOOL]


def ready_driver() -> Driver:
    """A driver whose client is initialized and whose server ``db`` is READY (timers 1, 2 used)."""
    d = Driver()
    d.initialize()
    d.send(call(900, "get_server_tools", agent_id="dev", server="db"))
    d.handshake("db", TOOLS)
    return d


def wire(message: JSON) -> bytes:
    """The bytes the shell sent (the runtime adds a newline)."""
    return encode(message) + b"\n"


def lost(d: Driver, message: JSON | None) -> list[Any]:
    """The shell reports that ``db`` refused ``message`` with 404 (``None``: on its notification stream)."""
    db = d.server("db")
    if message is not None:
        db.answered.add(message.get("id"))  # refused, so the fake will never answer it
    return d.handle(DownstreamSessionLost(now=d.now, downstream=db.id, data=None if message is None else wire(message)))


def http_error(d: Driver, message: JSON | None, status: int, body: bytes = b"") -> list[Any]:
    """The shell reports that ``db`` answered ``message`` with HTTP ``status``."""
    db = d.server("db")
    if message is not None:
        db.answered.add(message.get("id"))
    data = None if message is None else wire(message)
    return d.handle(DownstreamHttpError(now=d.now, downstream=db.id, data=data, status=status, body=body))


def echo(wire_id: int, text: str = "hi") -> JSON:
    return {"jsonrpc": "2.0", "id": wire_id, "method": "tools/call", "params": {"name": "echo", "arguments": {"text": text}}}


def unavailable(request_id: Any, reason: str) -> JSON:
    return {
        "jsonrpc": "2.0",
        "id": request_id,
        "error": {
            "code": -32001,
            "message": f"Server 'db' is unavailable: {reason}",
            "data": {"code": "SERVER_UNAVAILABLE", "server": "db", "reason": reason},
        },
    }


# -- a lost session ----------------------------------------------------------


def test_a_refused_call_waits_for_a_new_session_and_is_sent_again() -> None:
    d = ready_driver()
    db = d.server("db")
    first = call("a", "execute_tool", agent_id="dev", server="db", tool="echo", args={"text": "hi"})
    assert sent_downstream(d.send(first)) == [echo(3)]

    actions = lost(d, db.request("tools/call"))
    assert actions == [
        Log(level="info", message="server lost our MCP session; opening a new one", fields={"server": "db"}),
        SendToDownstream(downstream=1, message={"jsonrpc": "2.0", "id": 4, "method": "initialize", "params": INIT}),
        SetTimer(timer=4, deadline=30.0),
    ]
    # A call that arrives meanwhile waits too, and the client hears nothing yet.
    assert d.send(call("b", "execute_tool", agent_id="dev", server="db", tool="echo", args={"text": "b"})) == [
        SetTimer(timer=5, deadline=60.0)
    ]
    actions = db.answer("initialize", result={"protocolVersion": "2025-11-25", "capabilities": {}, "serverInfo": {"name": "db", "version": "2"}})
    assert actions == [
        SendToDownstream(downstream=1, message={"jsonrpc": "2.0", "method": "notifications/initialized"}),
        SendToDownstream(downstream=1, message={"jsonrpc": "2.0", "id": 5, "method": "tools/list"}),
    ]
    actions = db.answer("tools/list", result={"tools": [ECHO_TOOL]})
    assert actions == [
        CancelTimer(timer=4),
        Log(level="info", message="server ready", fields={"server": "db", "tools": 1, "protocol": "2025-11-25"}),
        SendToDownstream(downstream=1, message=echo(6)),
        SendToDownstream(downstream=1, message=echo(7, "b")),
    ]
    actions = db.answer(echo(6), result={"content": [], "isError": False})
    assert actions == [
        CancelTimer(timer=3),
        SendToClient(client=0, request="a", message={"jsonrpc": "2.0", "id": "a", "result": {"content": [], "isError": False}}),
        audited(first, rule="agents.dev.allow.servers[0]"),
    ]
    assert d.gw.status()["servers"]["db"]["starts"] == 1  # the same connection all along


def test_a_call_refused_twice_in_a_row_fails_and_others_carry_on() -> None:
    d = ready_driver()
    db = d.server("db")
    first = call("a", "execute_tool", agent_id="dev", server="db", tool="echo", args={"text": "hi"})
    d.send(first)
    lost(d, db.request("tools/call"))
    assert sent_downstream(db.complete_handshake(TOOLS)) == [echo(6)]

    actions = lost(d, echo(6))
    assert actions == [
        # The session the resent call found gone is replaced for the next calls...
        Log(level="info", message="server lost our MCP session; opening a new one", fields={"server": "db"}),
        SendToDownstream(downstream=1, message={"jsonrpc": "2.0", "id": 7, "method": "initialize", "params": INIT}),
        SetTimer(timer=5, deadline=30.0),
        # ... but the call is not sent a third time, and the connection is not stopped.
        CancelTimer(timer=3),
        SendToClient(client=0, request="a", message=unavailable("a", "lost its MCP session twice in a row")),
        audited(first, "ERROR", rule="agents.dev.allow.servers[0]", error_code="SERVER_UNAVAILABLE"),
    ]


def test_refusals_from_an_older_session_need_no_new_handshake() -> None:
    d = ready_driver()
    db = d.server("db")
    d.send(call("a", "execute_tool", agent_id="dev", server="db", tool="echo", args={"text": "a"}))
    d.send(call("b", "execute_tool", agent_id="dev", server="db", tool="echo", args={"text": "b"}))
    d.send(call("c", "execute_tool", agent_id="dev", server="db", tool="echo", args={"text": "c"}))
    lost(d, echo(3, "a"))
    # "b" was sent under the same lost session; its 404 comes while we handshake.
    assert lost(d, echo(4, "b")) == []
    assert sent_downstream(db.complete_handshake(TOOLS)) == [echo(8, "a"), echo(9, "b")]
    # "c"'s 404 comes after the new session is READY: it is sent again at once.
    assert lost(d, echo(5, "c")) == [SendToDownstream(downstream=1, message=echo(10, "c"))]
    # A duplicate refusal of a call already sent again changes nothing.
    assert lost(d, echo(4, "b")) == []


def test_a_loss_noticed_on_the_notification_stream_opens_a_new_session() -> None:
    d = ready_driver()
    db = d.server("db")
    assert lost(d, None) == [
        Log(level="info", message="server lost our MCP session; opening a new one", fields={"server": "db"}),
        SendToDownstream(downstream=1, message={"jsonrpc": "2.0", "id": 3, "method": "initialize", "params": INIT}),
        SetTimer(timer=3, deadline=30.0),
    ]
    assert d.gw.status()["servers"]["db"]["state"] == "starting"
    # Cached tools still answer get_server_tools once the new session is READY.
    d.send(call(1, "get_server_tools", agent_id="dev", server="db"))
    [msg] = sent_to_client(db.complete_handshake([ECHO_TOOL]))
    assert msg["result"]["structuredContent"]["returned"] == 1


def test_losing_the_session_the_handshake_just_opened_fails_the_connection() -> None:
    d = ready_driver()
    db = d.server("db")
    first = call("a", "execute_tool", agent_id="dev", server="db", tool="echo", args={})
    d.send(first)
    lost(d, None)
    db.answer("initialize", result={"protocolVersion": "2025-11-25", "capabilities": {}})
    reason = "lost its MCP session during the handshake"
    assert lost(d, db.request("tools/list")) == [
        StopDownstream(downstream=1),
        CancelTimer(timer=4),
        Log(level="warning", message="server unavailable", fields={"server": "db", "instance": 0, "reason": reason}),
        SetTimer(timer=5, deadline=0.0),
        CancelTimer(timer=3),
        SendToClient(client=0, request="a", message=unavailable("a", reason)),
        audited(first, "ERROR", rule="agents.dev.allow.servers[0]", error_code="SERVER_UNAVAILABLE"),
    ]
    assert d.gw.status()["servers"]["db"]["instances"][0]["state"] == "backoff"


def test_a_loss_reported_after_the_connection_is_gone_is_ignored() -> None:
    d = ready_driver()
    d.server("db").exit()
    assert lost(d, None) == []
    assert http_error(d, None, 401) == []


# -- HTTP error statuses ---------------------------------------------------------


def test_401_fails_the_connection_with_how_to_log_in_and_no_backoff() -> None:
    d = Driver()
    d.initialize()
    tools = call(1, "get_server_tools", agent_id="dev", server="db")
    d.send(tools)
    actions = http_error(d, d.server("db").request("initialize"), 401, b"")
    reason = "authorization required: the server answered 401; to log in, run: lockgate auth login db"
    assert actions == [
        Log(level="warning", message="server needs authorization", fields={"server": "db", "instance": 0, "reason": reason}),
        StopDownstream(downstream=1),
        CancelTimer(timer=2),
        CancelTimer(timer=1),
        SendToClient(client=0, request=1, message=unavailable(1, reason)),
        audited(tools, "ERROR", rule="agents.dev.allow.servers[0]", error_code="SERVER_UNAVAILABLE"),
    ]
    # Not the server's fault: no backoff, so a call after logging in starts it again at once.
    assert d.gw.status()["servers"]["db"]["instances"][0]["state"] == "idle"


def test_a_4xx_with_a_json_rpc_error_body_is_the_answer() -> None:
    d = ready_driver()
    first = call("a", "execute_tool", agent_id="dev", server="db", tool="echo", args={})
    d.send(first)
    body = json.dumps({"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": "Bad Request: bad header"}}).encode()
    assert http_error(d, d.server("db").request("tools/call"), 400, body) == [  # and the connection carries on
        CancelTimer(timer=3),
        SendToClient(client=0, request="a", message={"jsonrpc": "2.0", "id": "a", "error": {"code": -32600, "message": "Bad Request: bad header"}}),
        audited(first, rule="agents.dev.allow.servers[0]", error_code="DOWNSTREAM_ERROR"),
    ]


def test_a_4xx_without_one_fails_only_that_call() -> None:
    d = ready_driver()
    db = d.server("db")
    first = call("a", "execute_tool", agent_id="dev", server="db", tool="echo", args={})
    d.send(first)
    d.send(call("b", "execute_tool", agent_id="dev", server="db", tool="echo", args={}))
    assert http_error(d, db.requests("tools/call")[0], 413, b"Payload Too Large") == [  # the connection carries on
        CancelTimer(timer=3),
        SendToClient(client=0, request="a", message=unavailable("a", "HTTP status 413 from the server")),
        audited(first, "ERROR", rule="agents.dev.allow.servers[0]", error_code="SERVER_UNAVAILABLE"),
    ]
    [msg] = sent_to_client(db.answer("tools/call", result={"content": []}))
    assert msg["id"] == "b"


def test_a_5xx_fails_the_connection_and_every_call_on_it() -> None:
    d = ready_driver()
    db = d.server("db")
    d.send(call("a", "execute_tool", agent_id="dev", server="db", tool="echo", args={}))
    d.send(call("b", "execute_tool", agent_id="dev", server="db", tool="echo", args={}))
    actions = http_error(d, db.requests("tools/call")[0], 503, b'{"jsonrpc":"2.0","id":null,"error":{"code":-32603,"message":"x"}}')
    assert actions[0] == StopDownstream(downstream=1)
    assert sent_to_client(actions) == [
        unavailable("a", "HTTP status 503 from the server"),
        unavailable("b", "HTTP status 503 from the server"),
    ]


def test_a_handshake_request_refused_without_an_error_body_fails_the_connection() -> None:
    d = Driver()
    d.initialize()
    d.send(call(1, "get_server_tools", agent_id="dev", server="db"))
    actions = http_error(d, d.server("db").request("initialize"), 404, b"Not Found")
    assert actions[0] == StopDownstream(downstream=1)
    assert sent_to_client(actions) == [unavailable(1, "HTTP status 404 from the server")]


def test_an_initialize_refused_with_an_error_body_fails_with_its_message() -> None:
    d = Driver()
    d.initialize()
    d.send(call(1, "get_server_tools", agent_id="dev", server="db"))
    body = b'{"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"Unsupported protocol version"}}'
    actions = http_error(d, d.server("db").request("initialize"), 400, body)
    assert actions[0] == StopDownstream(downstream=1)
    assert sent_to_client(actions) == [unavailable(1, "initialize failed: Unsupported protocol version")]


def test_refused_notifications_and_answers_are_only_logged() -> None:
    d = ready_driver()
    actions = http_error(d, {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 3}}, 400)
    assert actions == [
        Log(level="warning", message="server refused a message", fields={"server": "db", "status": 400, "method": "notifications/cancelled"})
    ]
    assert [type(a) for a in http_error(d, {"jsonrpc": "2.0", "id": 7, "result": {}}, 400)] == [Log]
    assert [type(a) for a in http_error(d, None, 500)] == [Log]
    # A late refusal of a request nobody waits for any more changes nothing.
    assert http_error(d, echo(99), 400, b"") == []
    assert d.gw.status()["servers"]["db"]["state"] == "ready"


def test_session_loss_and_http_errors_are_deterministic() -> None:
    def run() -> list[Any]:
        d = ready_driver()
        out = d.send(call("a", "execute_tool", agent_id="dev", server="db", tool="echo", args={}))
        out += lost(d, d.server("db").request("tools/call"))
        out += http_error(d, None, 401)
        return out

    assert run() == run()


@given(data=st.one_of(st.none(), st.binary(max_size=64)), status=st.integers(100, 599), body=st.binary(max_size=64))
@settings(max_examples=200)
def test_any_refusal_the_shell_reports_never_raises(data: bytes | None, status: int, body: bytes) -> None:
    d = ready_driver()
    d.send(call("a", "execute_tool", agent_id="dev", server="db", tool="echo", args={}))
    d.handle(DownstreamHttpError(now=d.now, downstream=1, data=data, status=status, body=body))
    d.handle(DownstreamSessionLost(now=d.now, downstream=1, data=data))
    d.handle(DownstreamSessionLost(now=d.now, downstream=1, data=wire(echo(3))))
