"""Property tests of the core: hostile input never raises, views match calls."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lockgate.core._actions import Audit, SendToClient, SendToDownstream
from lockgate.core._events import ClientClosed, ShutdownRequested
from lockgate.core._jsonrpc import encode
from lockgate.core._policy import Policy

from .harness import Driver, call, make_config, sent_to_client, structured

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)


def _nested(depth: int) -> Any:
    value: Any = []
    for _ in range(depth):
        value = [value]
    return value


# What Python's json accepts but cannot write back (see lockgate.core._strictjson).
poison = (
    st.sampled_from([float("nan"), float("inf"), float("-inf"), 10**30, -(10**400), 1e308 * 10])
    | st.text(st.characters(categories=["Cs"]), min_size=1, max_size=3)
    | st.integers(129, 1500).map(_nested)
)
poisoned_values = st.recursive(
    st.none() | st.integers(-5, 5) | st.text(max_size=5) | poison,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5) | poison.filter(lambda p: isinstance(p, str)), inner, max_size=3),
    max_leaves=8,
)

METHODS = ["initialize", "ping", "tools/list", "tools/call", "logging/setLevel", "server/discover",
           "notifications/initialized", "notifications/cancelled", "nope"]
TOOLS = ["list_servers", "search_tools", "get_server_tools", "execute_tool", "get_gateway_status", "x"]


@st.composite
def messages(draw: st.DrawFn) -> Any:
    """Mostly well-formed JSON-RPC with random holes, ids, params and arguments."""
    msg: dict[str, Any] = {}
    if draw(st.integers(0, 9)) > 0:
        msg["jsonrpc"] = draw(st.sampled_from(["2.0", "2.0", "2.0", "1.0", 2]))
    msg["method"] = draw(st.sampled_from(METHODS) | st.text(max_size=5) | st.integers())
    if draw(st.booleans()):
        msg["id"] = draw(st.integers(-3, 30) | st.text(max_size=3) | json_values)
    params = draw(
        st.fixed_dictionaries(
            {},
            optional={
                "protocolVersion": st.sampled_from(["2025-11-25", "2024-11-05", "x"]) | json_values,
                "name": st.sampled_from(TOOLS) | json_values,
                "arguments": st.fixed_dictionaries(
                    {},
                    optional={
                        "agent_id": st.sampled_from(["dev", "reader", "bad id", "ghost"]) | json_values,
                        "server": st.sampled_from(["db", "util", "none"]) | json_values,
                        "tool": st.sampled_from(["echo", "get_user", "drop_table"]) | json_values,
                        "args": json_values,
                        "names": json_values,
                        "pattern": st.sampled_from(["*", "[", "get_*"]) | json_values,
                        "max_schema_tokens": json_values,
                        "timeout_ms": json_values,
                    },
                )
                | json_values,
                "requestId": json_values,
                "level": st.sampled_from(["info", "loud"]),
                "_meta": json_values,
            },
        )
        | json_values
    )
    if draw(st.booleans()):
        msg["params"] = params
    return msg


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.binary(max_size=200), max_size=10))
def test_random_bytes_never_raise_and_each_frame_is_answered(frames: list[bytes]) -> None:
    d = Driver(make_config(debug=True))
    for frame in frames:
        try:
            json.loads(frame)
        except ValueError:
            # Anything that is not JSON gets exactly one -32700 answer.
            assert [m["error"]["code"] for m in sent_to_client(d.send(frame))] == [-32700]
        else:
            d.send(frame)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(messages(), max_size=12))
def test_random_json_rpc_never_raises_and_every_request_is_answered(msgs: list[Any]) -> None:
    d = Driver(make_config(debug=True))
    d.initialize()
    asked: list[Any] = []
    answered: list[Any] = []
    for msg in msgs:
        if _sound_id(msg.get("id")) and isinstance(msg.get("method"), str):
            asked.append(msg["id"])
        for action in d.send(msg):
            if isinstance(action, SendToClient) and "id" in action.message:
                answered.append(action.message["id"])
    for action in d.handle(ShutdownRequested(now=d.now)):
        if isinstance(action, SendToClient):
            answered.append(action.message["id"])
    for request_id in asked:
        assert request_id in answered
    # Nothing is left behind once the gateway has shut down.
    status = d.gw.status()
    assert status["calls_in_flight"] == 0
    assert all(s["pending_calls"] == 0 and s["waiting_calls"] == 0 for s in status["servers"].values())


def _sound_id(value: Any) -> bool:
    """A request id the gateway can echo: a string without lone surrogates, or an integer within the strict JSON limits."""
    if isinstance(value, str):
        return not any("\ud800" <= c <= "\udfff" for c in value)
    return isinstance(value, int) and not isinstance(value, bool) and abs(value) < 10**21


@st.composite
def poisoned_frames(draw: st.DrawFn) -> tuple[Any, bytes]:
    """A tools/call (or another request) with poison somewhere in it, framed as Python's json writes it."""
    msg: dict[str, Any] = {"jsonrpc": "2.0", "method": draw(st.sampled_from(["tools/call", "ping", "initialize"]) | poison)}
    if draw(st.integers(0, 4)):
        msg["id"] = draw(st.integers(-3, 30) | st.text(max_size=3) | poison)
    msg["params"] = {
        "name": draw(st.sampled_from(TOOLS) | poison),
        "arguments": {
            "agent_id": draw(st.sampled_from(["dev", "ghost"]) | poison),
            "server": draw(st.sampled_from(["db", "util"]) | poison),
            "tool": draw(st.sampled_from(["echo", "get_user"]) | poison),
            "args": draw(poisoned_values),
            "timeout_ms": draw(st.none() | st.integers(1, 10**6) | poison),
        },
    }
    text = json.dumps(msg, ensure_ascii=draw(st.booleans()))
    return msg, text.encode("utf-8", "surrogatepass")


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(poisoned_frames(), min_size=1, max_size=8))
def test_poisoned_frames_never_raise_every_output_encodes_and_sound_ids_are_answered(frames: list[tuple[Any, bytes]]) -> None:
    d = Driver(make_config(debug=True))
    d.initialize()
    d.send(call(0, "get_server_tools", agent_id="dev", server="db"))
    d.handshake("db", [{"name": "echo", "inputSchema": {"type": "object"}}])
    asked, answered = [], []
    for msg, frame in frames:
        if _sound_id(msg.get("id")):
            asked.append(msg["id"])
        for action in d.send(frame):
            if isinstance(action, (SendToClient, SendToDownstream)):
                encode(action.message)
            if isinstance(action, SendToClient):
                answered.append(action.message.get("id"))
            if isinstance(action, Audit):
                encode(action.record)
    for action in d.handle(ShutdownRequested(now=d.now)):
        if isinstance(action, SendToClient):
            answered.append(action.message.get("id"))
    for request_id in asked:
        assert request_id in answered


names = st.sampled_from(["echo", "get_user", "get_item", "drop_table", "list_all", "x_user"])
patterns = names | st.sampled_from(["*", "get_*", "*_user", "?et_*", "[dl]*"])
servers = st.sampled_from(["db", "util", "*", "d*"])


@st.composite
def rule_sets(draw: st.DrawFn) -> dict[str, Any]:
    def side() -> dict[str, Any]:
        out: dict[str, Any] = {}
        if draw(st.booleans()):
            out["servers"] = draw(st.lists(servers, max_size=3))
        if draw(st.booleans()):
            out["tools"] = draw(st.dictionaries(st.sampled_from(["db", "util"]), st.lists(patterns, max_size=3), max_size=2))
        return out

    return {"agents": {"a": {"allow": side(), "deny": side()}}, "defaults": {"deny_on_missing_agent": True}}


TOOL_NAMES = ["echo", "get_user", "get_item", "drop_table", "list_all", "x_user"]


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(rule_sets())
def test_what_an_agent_is_shown_is_exactly_what_it_may_call(rules: dict[str, Any]) -> None:
    d = Driver(make_config(rules))
    d.initialize()
    d.send(call(1, "get_server_tools", agent_id="a", server="db"))
    if not d.downstreams:
        # The server itself is denied: then so is every tool on it.
        for i, tool in enumerate(TOOL_NAMES):
            [msg] = sent_to_client(d.send(call(10 + i, "execute_tool", agent_id="a", server="db", tool=tool, args={})))
            assert msg["error"]["data"]["code"] == "DENIED_BY_POLICY"
        return
    [shown_msg] = sent_to_client(d.handshake("db", [{"name": n, "inputSchema": {"type": "object"}} for n in TOOL_NAMES]))
    shown = {t["name"] for t in structured(shown_msg)["tools"]}
    callable_ = set()
    for i, tool in enumerate(TOOL_NAMES):
        actions = d.send(call(10 + i, "execute_tool", agent_id="a", server="db", tool=tool, args={}))
        if any(isinstance(a, SendToDownstream) for a in actions):
            callable_.add(tool)
        else:
            [msg] = sent_to_client(actions)
            assert msg["error"]["data"]["code"] == "DENIED_BY_POLICY"
    assert shown == callable_
    assert shown == {t for t in TOOL_NAMES if Policy.compile(rules).decide("a", "db", t).allowed}


@settings(max_examples=100)
@given(st.lists(st.sampled_from(["call", "close", "answer", "cancel"]), max_size=20))
def test_id_maps_are_empty_once_every_session_closed(steps: list[str]) -> None:
    d = Driver()
    d.initialize()
    d.send(call(0, "get_server_tools", agent_id="dev", server="db"))
    d.handshake("db", [{"name": "echo", "inputSchema": {"type": "object"}}])
    db = d.server("db")
    next_id = 1
    for step in steps:
        if step == "call":
            d.send(call(next_id, "execute_tool", agent_id="dev", server="db", tool="echo", args={}))
            next_id += 1
        elif step == "answer" and db.requests("tools/call"):
            db.answer(db.requests("tools/call")[0], result={"content": []})  # the oldest, cancelled or not
        elif step == "cancel":
            d.send({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": next_id - 1}})
    d.handle(ClientClosed(now=d.now, client=0))
    status = d.gw.status()
    assert status["calls_in_flight"] == 0 and status["servers"]["db"]["pending_calls"] == 0
    # Every call's timer was cancelled along with it.
    assert not d.live_timers
    assert d.clients[0].closed and db.alive
