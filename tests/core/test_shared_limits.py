"""Rate limits shared through a store (GATEWAY_REDIS_URL): the core asks (TakeTokens), waits, and goes on with the answer."""

from __future__ import annotations

from typing import Any

from lockgate.core import (
    ErrorCode, Log, Principal, Rate, SendToClient, SendToDownstream, ShutdownRequested, TakeTokens, TokensTaken,
)
from lockgate.core._jsonrpc import error, notification, result
from lockgate.core._tools import tool_result
from lockgate.core._transcript_json import action_to_json, event_from_json, event_to_json

from .harness import Driver, audited, audits, call, make_config, req, sent_to_client

RULES: dict[str, Any] = {
    "agents": {
        "dev": {"allow": {"servers": ["*"]}, "rate": "2/min"},
        "ops": {"allow": {"servers": ["*"]}},
    },
    "defaults": {"deny_on_missing_agent": False},
}
ALL = tool_result([{"name": "db", "description": "db server"}, {"name": "util", "description": "util server"}])
DEV = (("agent:dev", 2, 60.0),)


def gateway(rules: dict[str, Any] = RULES, principal: Principal | None = None, **settings: Any) -> Driver:
    settings.setdefault("shared_limits", True)
    d = Driver(make_config(rules, **settings), client="c")
    if principal is not None:
        d.open("s", "http", principal=principal)
        d.client = "s"
    d.initialize()
    return d


def taken(d: Driver, ticket: int, refused: tuple[int, float] | None = None, unavailable: str | None = None) -> list[Any]:
    return d.handle(TokensTaken(now=d.now, ticket=ticket, refused=refused, unavailable=unavailable))


def test_a_limited_call_asks_the_store_and_waits_then_goes_on_exactly_as_with_local_buckets() -> None:
    d = gateway()
    msg = call(1, "list_servers", agent_id="dev")
    assert d.send(msg) == [TakeTokens(ticket=1, limits=DEV)]
    assert taken(d, 1) == [SendToClient(client="c", request=1, message=result(1, ALL)), audited(msg)]


def test_a_call_no_limit_applies_to_never_asks_the_store() -> None:
    d = gateway()
    msg = call(1, "list_servers", agent_id="ops")
    assert d.send(msg) == [SendToClient(client="c", request=1, message=result(1, ALL)), audited(msg)]


def test_the_stores_refusal_is_answered_as_a_local_one_with_the_wait_it_gave() -> None:
    d = gateway()
    msg = call(1, "list_servers", agent_id="dev")
    d.send(msg)
    data = {"code": "RATE_LIMITED", "retry_after_ms": 15000, "limit": "2/min", "scope": "agent"}
    assert taken(d, 1, refused=(0, 14.9999999)) == [
        SendToClient(client="c", request=1, message=error(
            1, ErrorCode.RATE_LIMITED, "Rate limit 2/min of agent 'dev' exceeded: retry in 15000 ms", data)),
        audited(msg, "ERROR", rule="agents.dev.rate", error_code="RATE_LIMITED"),
    ]
    assert d.gw.metrics_json(d.now)["rate_limited"] == {"credential": 0, "agent": 1}


def test_every_limit_of_a_call_goes_in_one_ask_and_the_refusal_names_the_one_that_refused() -> None:
    key = Principal(id="delegated:t1", agents=("dev",), default_agent="dev", rate=Rate(5, 1.0),
                    shared_rates=(("key:00c0ffee", Rate(7, 3600.0)),))
    d = gateway(principal=key)
    msg = call(1, "list_servers")
    assert d.send(msg) == [TakeTokens(ticket=1, limits=(
        ("credential:delegated:t1", 5, 1.0), ("credential:key:00c0ffee", 7, 3600.0), ("agent:dev", 2, 60.0),
    ))]
    [answer] = sent_to_client(taken(d, 1, refused=(1, 0.25)))
    assert answer["error"]["data"] == {"code": "RATE_LIMITED", "retry_after_ms": 250, "limit": "7/h", "scope": "credential"}
    assert answer["error"]["message"] == "Rate limit 7/h of credential key:00c0ffee exceeded: retry in 250 ms"


def test_a_store_that_does_not_answer_refuses_the_call_by_default_and_the_log_says_so_once() -> None:
    d = gateway()
    msg = call(1, "list_servers", agent_id="dev")
    d.send(msg)
    message = "Rate limits are shared through a store that does not answer now: the call is refused (GATEWAY_REDIS_FAILURE=closed)"
    refusal = SendToClient(client="c", request=1, message=error(
        1, ErrorCode.RATE_LIMIT_UNAVAILABLE, message, {"code": "RATE_LIMIT_UNAVAILABLE", "failure_mode": "closed"}))
    assert taken(d, 1, unavailable="no answer within 100 ms") == [
        Log(level="warning", message="the shared rate limit store does not answer: calls under a rate limit are refused until it does",
            fields={"reason": "no answer within 100 ms", "failure_mode": "closed"}),
        refusal,
        audited(msg, "ERROR", rule="GATEWAY_REDIS_FAILURE", error_code="RATE_LIMIT_UNAVAILABLE"),
    ]
    msg = call(2, "list_servers", agent_id="dev")
    d.send(msg)
    assert [type(a).__name__ for a in taken(d, 2, unavailable="connection refused")] == ["SendToClient", "Audit"]
    # The other methods go on meanwhile: tools/list needs no token.
    [listed] = sent_to_client(d.send(req(3, "tools/list")))
    assert "tools" in listed["result"]
    msg = call(4, "list_servers", agent_id="dev")
    d.send(msg)
    assert taken(d, 3) == [
        Log(level="notice", message="the shared rate limit store answers again", fields=None),
        SendToClient(client="c", request=4, message=result(4, ALL)), audited(msg),
    ]


def test_with_failure_open_a_store_that_does_not_answer_lets_the_call_go_ahead_unchecked() -> None:
    d = gateway(redis_failure="open")
    msg = call(1, "list_servers", agent_id="dev")
    d.send(msg)
    assert taken(d, 1, unavailable="no answer within 100 ms") == [
        Log(level="warning", message="the shared rate limit store does not answer: calls under a rate limit go ahead unchecked until it does",
            fields={"reason": "no answer within 100 ms", "failure_mode": "open"}),
        SendToClient(client="c", request=1, message=result(1, ALL)), audited(msg),
    ]


def test_a_client_that_goes_away_while_its_call_waits_is_audited_once_and_never_answered() -> None:
    d = gateway()
    msg = call(1, "list_servers", agent_id="dev")
    d.send(msg)
    assert d.clients["c"].close() == [audited(msg, "ERROR", error_code="CANCELLED", agent="dev")]
    assert taken(d, 1) == []  # the late answer finds nobody
    assert len(d.gw._ctx.parked) == 0


def test_a_call_cancelled_while_it_waits_ends_unanswered_and_its_id_is_free_again() -> None:
    d = gateway()
    msg = call(7, "list_servers", agent_id="dev")
    d.send(msg)
    # Its id is in use while it waits.
    [dup] = sent_to_client(d.send(call(7, "list_servers", agent_id="ops")))
    assert dup["error"]["message"] == "Request id 7 is already in use"
    cancel = notification("notifications/cancelled", {"requestId": 7, "reason": "user"})
    assert d.send(cancel) == [audited(msg, "ERROR", error_code="CANCELLED", agent="dev")]
    assert taken(d, 1) == []
    msg = call(7, "list_servers", agent_id="dev")
    assert d.send(msg) == [TakeTokens(ticket=2, limits=DEV)]


def test_execute_tool_is_forwarded_only_once_the_store_said_yes() -> None:
    d = gateway()
    d.send(call(1, "execute_tool", agent_id="dev", server="db", tool="echo", args={"x": 1}))
    assert d.downstreams == {}
    taken(d, 1)
    db = d.server("db")
    db.complete_handshake([{"name": "echo", "inputSchema": {"type": "object"}}])
    [forwarded] = db.requests("tools/call")
    assert forwarded["params"] == {"name": "echo", "arguments": {"x": 1}}


def test_aggregate_calls_wait_for_the_store_too() -> None:
    rules = {"agents": {"dev": {"allow": {"servers": ["*"]}, "rate": "2/min", "mode": "aggregate"}},
             "defaults": {"deny_on_missing_agent": False}}
    d = gateway(rules, default_agent="dev", servers=("db",))
    db = d.server("db")
    db.complete_handshake([{"name": "echo", "inputSchema": {"type": "object"}}])
    d.clients["c"].received.clear()
    actions = d.send(req(1, "tools/call", {"name": "echo", "arguments": {}}))
    assert actions == [TakeTokens(ticket=1, limits=DEV)]
    actions = taken(d, 1)
    assert [a.message["method"] for a in actions if isinstance(a, SendToDownstream)] == ["tools/call"]


def test_a_call_whose_answer_comes_after_shutdown_began_is_refused_as_shutting_down() -> None:
    d = gateway()
    msg = call(1, "list_servers", agent_id="dev")
    d.send(msg)
    d.handle(ShutdownRequested(now=d.now))
    [answer] = sent_to_client(taken(d, 1))
    assert answer["error"]["code"] == ErrorCode.SERVER_UNAVAILABLE
    assert answer["error"]["message"] == "The gateway is shutting down"


def test_take_and_taken_round_trip_through_transcript_lines() -> None:
    action = TakeTokens(ticket=3, limits=(("agent:dev", 2, 60.0), ("credential:k", 5, 1.0)))
    assert action_to_json(action) == {"action": "TakeTokens", "ticket": 3, "limits": [["agent:dev", 2, 60.0], ["credential:k", 5, 1.0]]}
    for event in (TokensTaken(now=1.0, ticket=3), TokensTaken(now=1.0, ticket=3, refused=(1, 0.5)),
                  TokensTaken(now=1.0, ticket=3, unavailable="timed out")):
        assert event_from_json(event_to_json(event)) == event
