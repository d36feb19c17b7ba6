"""Rate limits: token buckets on the event clock, per credential and per agent, and their HTTP answer."""

from __future__ import annotations

import json
from typing import Any

import pytest
from lockgate.core import ConfigReloaded, ErrorCode, Principal, Rate, SendToClient
from lockgate.core._jsonrpc import error, result
from lockgate.core._ratelimit import Buckets, retry_after_ms
from lockgate.core._tools import tool_result
from lockgate.core.http import json_status

from .harness import Driver, audited, audits, call, make_config, sent_to_client

# -- the buckets -------------------------------------------------------------------

PER_MINUTE = Rate(2, 60.0)


def test_a_bucket_allows_a_burst_of_count_then_refuses_with_the_wait_for_one_token() -> None:
    b = Buckets()
    assert [b.take("k", PER_MINUTE, 0.0) for _ in range(3)] == [None, None, 30.0]
    assert b.take("k", PER_MINUTE, 10.0) == pytest.approx(20.0)


def test_a_bucket_refills_at_count_per_period_up_to_count() -> None:
    b = Buckets()
    b.take("k", PER_MINUTE, 0.0)
    b.take("k", PER_MINUTE, 0.0)
    assert b.take("k", PER_MINUTE, 30.0) is None  # one token back after 30 s
    assert b.take("k", PER_MINUTE, 30.0) == 30.0
    # Idle for an hour: full again, never fuller than count.
    assert [b.take("k", PER_MINUTE, 3630.0) for _ in range(3)] == [None, None, 30.0]


def test_keys_have_buckets_of_their_own() -> None:
    b = Buckets()
    assert [b.take(key, Rate(1, 1.0), 0.0) for key in ("a", "b", "a")] == [None, None, 1.0]


def test_a_refused_take_and_a_check_take_no_token() -> None:
    b = Buckets()
    b.take("k", Rate(1, 10.0), 0.0)
    assert b.take("k", Rate(1, 10.0), 5.0) == 5.0
    assert b.wait("k", Rate(1, 10.0), 9.0) == pytest.approx(1.0)
    refused = b.first_refusal([("other", Rate(1, 1.0)), ("k", Rate(1, 10.0))], 9.0)
    assert refused is not None and refused[0] == 1 and refused[1] == pytest.approx(1.0)
    assert b.take("k", Rate(1, 10.0), 10.0) is None  # the refusals and checks took nothing
    assert b.first_refusal([("fresh", Rate(1, 1.0))], 10.0) is None
    assert "fresh" not in b._buckets  # a check makes no bucket


def test_a_new_rate_for_a_key_keeps_its_tokens_up_to_the_new_count() -> None:
    b = Buckets()
    for _ in range(10):
        b.take("k", Rate(10, 60.0), 0.0)
    # 10/min -> 60/min: still empty, now refilling at one a second.
    assert b.take("k", Rate(60, 60.0), 0.0) == 1.0
    b = Buckets()
    b.take("k", Rate(10, 60.0), 0.0)
    # 9 tokens left; 3/min holds at most 3.
    assert [b.take("k", Rate(3, 60.0), 0.0) for _ in range(4)] == [None, None, None, 20.0]


def test_idle_buckets_that_refilled_are_dropped_so_memory_follows_the_keys_in_use() -> None:
    b = Buckets()
    for i in range(1000):
        b.take(f"client-{i}", Rate(10, 1.0), 0.0)
    assert len(b) == 1000
    # A second on, all are full again; one busy key's calls sweep them away.
    for _ in range(600):
        b.take("busy", Rate(1000, 1.0), 1.0)
    assert len(b) == 1
    # A bucket still refilling is kept: dropping it would hand out a fresh burst.
    b.take("slow", Rate(1, 3600.0), 2.0)
    for _ in range(10):
        b.take("busy", Rate(1000, 1.0), 3.0)
    assert b.take("slow", Rate(1, 3600.0), 4.0) == pytest.approx(3598.0)


@pytest.mark.parametrize(
    ("seconds", "ms"), [(30.0, 30000), (0.0015, 2), (1 / 3, 334), (0.5 + 1e-13, 500), (1e-7, 1), (0.7 / 3, 234)]
)
def test_retry_after_is_whole_milliseconds_rounded_up(seconds: float, ms: int) -> None:
    assert retry_after_ms(seconds) == ms


# -- in the gateway ----------------------------------------------------------------

RULES: dict[str, Any] = {
    "agents": {
        "dev": {"allow": {"servers": ["*"]}, "rate": "2/min"},
        "ops": {"allow": {"servers": ["*"]}},
        "qa": {"allow": {"servers": ["*"]}},
    },
    "defaults": {"deny_on_missing_agent": False},
}
ALL = tool_result([{"name": "db", "description": "db server"}, {"name": "util", "description": "util server"}])


def gateway(rules: dict[str, Any] = RULES, principal: Principal | None = None, **settings: Any) -> Driver:
    d = Driver(make_config(rules, **settings), client="c")
    if principal is not None:
        d.open("s", "http", principal=principal)
        d.client = "s"
    d.initialize()
    return d


def limited(client: Any, request_id: Any, message: str, *, ms: int, limit: str, scope: str) -> SendToClient:
    data = {"code": "RATE_LIMITED", "retry_after_ms": ms, "limit": limit, "scope": scope}
    return SendToClient(client=client, request=request_id, message=error(request_id, ErrorCode.RATE_LIMITED, message, data))


def test_an_agents_own_rate_limits_its_calls_and_a_refusal_says_how_long_to_wait() -> None:
    d = gateway()
    assert audits(d.send(call(1, "list_servers", agent_id="dev")))[0]["error_code"] is None
    d.now = 10.0
    assert audits(d.send(call(2, "list_servers", agent_id="dev")))[0]["error_code"] is None
    d.now = 15.0
    msg = call(3, "list_servers", agent_id="dev")
    assert d.send(msg) == [
        limited("c", 3, "Rate limit 2/min of agent 'dev' exceeded: retry in 15000 ms", ms=15000, limit="2/min", scope="agent"),
        audited(msg, "ERROR", rule="agents.dev.rate", error_code="RATE_LIMITED"),
    ]
    # Refilled: one token 30 s after the first call.
    d.now = 30.0
    msg = call(4, "list_servers", agent_id="dev")
    assert d.send(msg) == [SendToClient(client="c", request=4, message=result(4, ALL)), audited(msg)]


def test_the_default_limit_applies_to_each_agent_without_a_rate_of_its_own() -> None:
    d = gateway(rate_limit=Rate(1, 1.0))
    for agent in ("ops", "qa", "dev", "dev"):  # dev keeps its own 2/min
        assert audits(d.send(call(1, "list_servers", agent_id=agent)))[0]["error_code"] is None
    msg = call(2, "list_servers", agent_id="ops")
    assert d.send(msg) == [
        limited("c", 2, "Rate limit 1/s of agent 'ops' exceeded: retry in 1000 ms", ms=1000, limit="1/s", scope="agent"),
        audited(msg, "ERROR", rule="GATEWAY_RATE_LIMIT", error_code="RATE_LIMITED"),
    ]
    # Every caller acting as an agent shares its bucket.
    d.open("other")
    d.clients["other"].initialize()
    [answer] = sent_to_client(d.send(call(3, "list_servers", agent_id="qa"), client="other"))
    assert answer["error"]["data"]["scope"] == "agent"


def test_without_any_limit_nothing_is_limited_or_kept() -> None:
    d = gateway({"agents": {"ops": {"allow": {"servers": ["*"]}}}})
    for i in range(50):
        assert audits(d.send(call(i, "list_servers", agent_id="ops")))[0]["error_code"] is None
    assert len(d.gw._ctx.buckets) == 0


def test_a_credentials_own_rate_limits_it_whatever_agent_it_acts_as() -> None:
    key = Principal(id="key:00c0ffee", agents=("ops", "qa"), rate=Rate(2, 1.0))
    d = gateway(principal=key)
    assert audits(d.send(call(1, "list_servers", agent_id="ops")))[0]["error_code"] is None
    assert audits(d.send(call(2, "list_servers", agent_id="qa")))[0]["error_code"] is None
    msg = call(3, "list_servers", agent_id="ops")
    assert d.send(msg) == [
        limited("s", 3, "Rate limit 2/s of credential key:00c0ffee exceeded: retry in 500 ms", ms=500, limit="2/s",
                scope="credential"),
        audited(msg, "ERROR", principal="key:00c0ffee", rule="credential.rate", error_code="RATE_LIMITED"),
    ]


def test_both_limits_must_allow_a_call_and_a_refused_call_takes_no_token_from_either() -> None:
    key = Principal(id="key:0000beef", agents=("dev", "ops"), rate=Rate(5, 60.0))
    d = gateway(principal=key)
    outcomes = [audits(d.send(call(i, "list_servers", agent_id="dev")))[0]["error_code"] for i in range(3)]
    assert outcomes == [None, None, "RATE_LIMITED"]  # dev's own 2/min
    # Had the refusal taken a credential token, only two would be left, not three.
    outcomes = [audits(d.send(call(i, "list_servers", agent_id="ops")))[0]["error_code"] for i in range(3, 7)]
    assert outcomes == [None, None, None, "RATE_LIMITED"]
    [answer] = sent_to_client(d.send(call(7, "list_servers", agent_id="dev")))
    # The credential refuses first, and dev's bucket keeps what it had (empty, refilling from t=0).
    assert answer["error"]["data"] == {"code": "RATE_LIMITED", "retry_after_ms": 12000, "limit": "5/min", "scope": "credential"}
    d.now = 30.0  # 2.5 credential tokens back (one each 12 s) and one of dev's (one each 30 s)
    assert audits(d.send(call(8, "list_servers", agent_id="dev")))[0]["error_code"] is None
    assert audits(d.send(call(9, "list_servers", agent_id="ops")))[0]["error_code"] is None
    [answer] = sent_to_client(d.send(call(10, "list_servers", agent_id="ops")))
    assert answer["error"]["data"] == {"code": "RATE_LIMITED", "retry_after_ms": 6000, "limit": "5/min", "scope": "credential"}


def test_delegated_tokens_spend_their_ancestors_buckets_so_handing_out_tokens_multiplies_no_rate() -> None:
    key = Principal(id="key:0000feed", agents=("ops", "qa"), rate=Rate(3, 60.0))
    children = [
        Principal(id=f"delegated:t{i}", agents=("ops",), default_agent="ops", rate=Rate(3, 60.0),
                  shared_rates=(("key:0000feed", Rate(3, 60.0)),))
        for i in range(2)
    ]
    d = gateway(principal=key)
    for i, child in enumerate(children):
        d.open(f"child{i}", "http", principal=child)
        d.clients[f"child{i}"].initialize()
    assert audits(d.send(call(1, "list_servers", agent_id="qa")))[0]["error_code"] is None
    assert audits(d.send(call(2, "list_servers"), client="child0"))[0]["error_code"] is None
    assert audits(d.send(call(3, "list_servers"), client="child1"))[0]["error_code"] is None
    # Each child has two of its own tokens left, but the key they came from has none.
    msg = call(4, "list_servers")
    assert d.send(msg, client="child0") == [
        limited("child0", 4, "Rate limit 3/min of credential key:0000feed exceeded: retry in 20000 ms", ms=20000,
                limit="3/min", scope="credential"),
        audited(msg, "ERROR", principal="delegated:t0", agent="ops", rule="credential.shared_rates",
                error_code="RATE_LIMITED"),
    ]
    assert audits(d.send(call(5, "list_servers", agent_id="ops")))[0]["error_code"] == "RATE_LIMITED"


def test_every_gateway_tool_is_limited_and_calls_refused_before_an_agent_is_known_are_not() -> None:
    d = gateway({"agents": {"ops": {"allow": {"servers": ["*"]}, "rate": "1/h"}}}, debug=True)
    assert audits(d.send(call(1, "list_servers", agent_id="ops")))[0]["error_code"] is None
    tools: list[tuple[str, dict[str, Any]]] = [
        ("get_server_tools", {"server": "db"}),
        ("execute_tool", {"server": "db", "tool": "echo", "args": {}}),
        ("get_gateway_status", {}),
        ("list_servers", {}),
    ]
    for i, (tool, arguments) in enumerate(tools, start=2):
        actions = d.send(call(i, tool, agent_id="ops", **arguments))
        assert [(r["operation"], r["error_code"]) for r in audits(actions)] == [(tool, "RATE_LIMITED")]
        assert sent_to_client(actions)[0]["error"]["data"]["retry_after_ms"] == 3_600_000
    assert d.downstreams == {}  # nothing was started for the refused calls
    [record] = audits(d.send(call(9, "list_servers", agent_id="nobody")))
    assert record["error_code"] == "DENIED_BY_POLICY"


def test_refusals_are_counted_by_scope_in_both_metrics_views() -> None:
    d = gateway(principal=Principal(id="key:1", agents=("*",), rate=Rate(1, 1.0)), rate_limit=Rate(1, 1.0))
    d.clients["c"].initialize()
    outcomes = [
        audits(d.send(call(1, "list_servers", agent_id="ops"), client="s"))[0]["error_code"],
        sent_to_client(d.send(call(2, "list_servers", agent_id="qa"), client="s"))[0]["error"]["data"]["scope"],
        sent_to_client(d.send(call(3, "list_servers", agent_id="ops"), client="c"))[0]["error"]["data"]["scope"],
        audits(d.send(call(4, "list_servers", agent_id="qa"), client="c"))[0]["error_code"],
        sent_to_client(d.send(call(5, "list_servers", agent_id="qa"), client="c"))[0]["error"]["data"]["scope"],
    ]
    assert outcomes == [None, "credential", "agent", None, "agent"]
    view = d.gw.metrics_json(1.0)
    assert view["rate_limited"] == {"credential": 1, "agent": 2}
    # The refused calls are calls too, with their outcome.
    assert (view["agents"]["qa"]["errors"], view["agents"]["ops"]["errors"]) == (2, 1)
    text = d.gw.metrics_prometheus(1.0)
    assert "# TYPE lockgate_rate_limited_total counter" in text
    assert 'lockgate_rate_limited_total{scope="agent"} 2\nlockgate_rate_limited_total{scope="credential"} 1\n' in text
    assert 'lockgate_calls_total{operation="list_servers",agent="qa",server="none",outcome="rate_limited"} 2' in text


def test_a_reload_keeps_the_buckets_and_a_new_rate_takes_over_from_what_is_left() -> None:
    d = gateway()
    d.send(call(1, "list_servers", agent_id="dev"))
    d.send(call(2, "list_servers", agent_id="dev"))
    d.handle(ConfigReloaded(now=d.now, config=make_config(RULES)))
    [answer] = sent_to_client(d.send(call(3, "list_servers", agent_id="dev")))
    assert answer["error"]["data"]["retry_after_ms"] == 30000
    faster = {**RULES, "agents": {**RULES["agents"], "dev": {"allow": {"servers": ["*"]}, "rate": "10/min"}}}
    d.handle(ConfigReloaded(now=d.now, config=make_config(faster)))
    [answer] = sent_to_client(d.send(call(4, "list_servers", agent_id="dev")))
    assert answer["error"]["data"] == {"code": "RATE_LIMITED", "retry_after_ms": 6000, "limit": "10/min", "scope": "agent"}


# -- over HTTP ---------------------------------------------------------------------


def test_a_rate_limited_answer_is_a_429_with_retry_after_in_whole_seconds_rounded_up() -> None:
    d = gateway({"agents": {"ops": {"allow": {"servers": ["*"]}, "rate": "3/s"}}})
    for i in range(3):
        [answer] = sent_to_client(d.send(call(i, "list_servers", agent_id="ops")))
        assert json_status(answer) == (200, ())
    [answer] = sent_to_client(d.send(call(3, "list_servers", agent_id="ops")))
    assert answer["error"]["data"]["retry_after_ms"] == 334
    assert json_status(answer) == (429, (("retry-after", "1"),))
    d = gateway()
    d.send(call(1, "list_servers", agent_id="dev"))
    d.send(call(2, "list_servers", agent_id="dev"))
    d.now = 0.25
    [answer] = sent_to_client(d.send(call(3, "list_servers", agent_id="dev")))
    assert answer["error"]["data"]["retry_after_ms"] == 29750
    assert json_status(answer) == (429, (("retry-after", "30"),))


@pytest.mark.parametrize(
    "message",
    [
        {"jsonrpc": "2.0", "id": 1, "result": {}},
        error(1, ErrorCode.DENIED_BY_POLICY, "no", {"code": "DENIED_BY_POLICY"}),
        error(1, ErrorCode.RATE_LIMITED, "a server's own -32005, without the gateway's data"),
        error(1, ErrorCode.RATE_LIMITED, "no wait given", {"code": "RATE_LIMITED"}),
        error(1, ErrorCode.RATE_LIMITED, "odd", {"code": "RATE_LIMITED", "retry_after_ms": "soon"}),
        error(1, ErrorCode.RATE_LIMITED, "odd", {"code": "RATE_LIMITED", "retry_after_ms": True}),
        {"jsonrpc": "2.0", "id": 1, "error": "not an object"},
    ],
)
def test_every_other_single_json_answer_is_a_200(message: dict[str, Any]) -> None:
    assert json_status(json.loads(json.dumps(message))) == (200, ())
