"""Verified callers: which agent a call acts as, the tools a narrower credential reaches, and the audit of it all."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from lockgate.core import (
    Audit,
    AuthenticationFailed,
    AuthenticationSucceeded,
    CancelTimer,
    ClientMessageReceived,
    ClientOpened,
    ErrorCode,
    Principal,
    Rate,
    SendToClient,
    SendToDownstream,
    SetTimer,
    ShutdownRequested,
    StartDownstream,
)
from lockgate.core._jsonrpc import error, result
from lockgate.core._tools import tool_result
from lockgate.core.transcript import (
    action_to_json,
    event_from_json,
    event_to_json,
    header,
    replay,
)

from .harness import (
    ECHO_TOOL,
    GET_TOOL,
    Driver,
    audited,
    audits,
    call,
    make_config,
    sent_to_client,
    structured,
)

RULES: dict[str, Any] = {
    "agents": {
        "backend": {"allow": {"servers": ["db"]}},
        "backend.reviewer": {"allow": {"servers": ["db"], "tools": {"db": ["get_*", "echo"]}}},
        "admin": {"allow": {"servers": ["*"]}},
        "default": {"allow": {"servers": ["util"]}},
    },
    "defaults": {"deny_on_missing_agent": False},
}

#: A key that may act as backend and every agent below it, backend by default.
KEY = Principal(id="key:3f9a1c2b", agents=("backend", "backend.*"), default_agent="backend")
DB_ONLY = tool_result([{"name": "db", "description": "db server"}])


def opened(principal: Principal, **config: Any) -> Driver:
    """A gateway with an initialized HTTP session ``"s"`` opened under ``principal``."""
    d = Driver(make_config(config.pop("rules", RULES), **config))
    d.open("s", "http", principal=principal)
    d.client = "s"
    d.initialize()
    return d


def refusal(request_id: Any, code: ErrorCode, message: str, **data: Any) -> SendToClient:
    return SendToClient(client="s", request=request_id, message=error(request_id, code, message, {"code": code.name, **data}))


# -- which agent -------------------------------------------------------------------


def test_a_declared_agent_the_credential_is_granted_acts_and_the_record_names_the_principal() -> None:
    d = opened(KEY)
    msg = call(1, "list_servers", agent_id="backend")
    actions = d.send(msg)
    assert actions == [
        SendToClient(client="s", request=1, message=result(1, DB_ONLY)),
        audited(msg, principal="key:3f9a1c2b"),
    ]
    # The principal comes right after the agent; the rest of the record is as without one.
    assert list(audits(actions)[0])[:3] == ["agent", "principal", "operation"]


def test_a_subtree_grant_covers_the_agents_below_it() -> None:
    d = opened(KEY)
    msg = call(1, "list_servers", agent_id="backend.reviewer")
    assert d.send(msg) == [
        SendToClient(client="s", request=1, message=result(1, DB_ONLY)),
        audited(msg, principal="key:3f9a1c2b"),
    ]


def test_a_declared_agent_the_credential_is_not_granted_is_denied_and_says_so() -> None:
    d = opened(KEY)
    msg = call(1, "list_servers", agent_id="admin")
    message = "credential key:3f9a1c2b may not act as agent 'admin'"
    assert d.send(msg) == [
        refusal(1, ErrorCode.DENIED_BY_POLICY, message, rule="credential.agents"),
        audited(msg, "DENY", agent=None, principal="key:3f9a1c2b", rule="credential.agents", error_code="DENIED_BY_POLICY"),
    ]


def test_an_agent_not_granted_is_denied_the_same_whether_the_rules_define_it_or_not() -> None:
    # The credential learns nothing about which agents exist beyond its own.
    d = opened(KEY)
    [ghost] = sent_to_client(d.send(call(1, "list_servers", agent_id="ghost")))
    assert ghost["error"]["message"] == "credential key:3f9a1c2b may not act as agent 'ghost'"
    assert ghost["error"]["data"] == {"code": "DENIED_BY_POLICY", "rule": "credential.agents"}


def test_a_granted_agent_the_rules_do_not_define_is_denied_as_without_a_credential() -> None:
    d = opened(KEY)
    msg = call(1, "list_servers", agent_id="backend.ghost")
    assert d.send(msg) == [
        refusal(1, ErrorCode.DENIED_BY_POLICY, "agent 'backend.ghost' is not defined in the rules", rule='agents["backend.ghost"]: not defined'),
        audited(msg, "DENY", agent=None, principal="key:3f9a1c2b", rule='agents["backend.ghost"]: not defined', error_code="DENIED_BY_POLICY"),
    ]


def test_an_invalid_agent_id_is_refused_as_without_a_credential() -> None:
    d = opened(KEY)
    msg = call(1, "list_servers", agent_id="bad id!")
    assert d.send(msg) == [
        refusal(1, ErrorCode.INVALID_AGENT_ID, "agent_id 'bad id!' is invalid: use letters, digits, '-', '_' and '.'"),
        audited(msg, "ERROR", agent=None, principal="key:3f9a1c2b", error_code="INVALID_AGENT_ID"),
    ]


def test_without_agent_id_the_credentials_default_agent_acts() -> None:
    d = opened(KEY)
    msg = call(1, "list_servers")
    assert d.send(msg) == [
        SendToClient(client="s", request=1, message=result(1, DB_ONLY)),
        audited(msg, agent="backend", principal="key:3f9a1c2b"),
    ]


def test_without_agent_id_and_without_a_default_agent_the_call_is_denied() -> None:
    d = opened(Principal(id="user:alice", agents=("*",)))
    msg = call(1, "list_servers")
    message = "agent_id is required: credential user:alice has no default agent"
    assert d.send(msg) == [
        refusal(1, ErrorCode.DENIED_BY_POLICY, message, rule="credential.default_agent"),
        audited(msg, "DENY", principal="user:alice", rule="credential.default_agent", error_code="DENIED_BY_POLICY"),
    ]


def test_a_default_agent_the_credential_is_not_granted_is_denied() -> None:
    d = opened(Principal(id="key:00000001", agents=("backend",), default_agent="admin"))
    msg = call(1, "list_servers")
    assert d.send(msg) == [
        refusal(1, ErrorCode.DENIED_BY_POLICY, "credential key:00000001 may not act as agent 'admin'", rule="credential.agents"),
        audited(msg, "DENY", principal="key:00000001", rule="credential.agents", error_code="DENIED_BY_POLICY"),
    ]


def test_a_default_agent_the_rules_do_not_define_is_denied() -> None:
    d = opened(Principal(id="key:00000002", agents=("*",), default_agent="ghost"))
    [answer] = sent_to_client(d.send(call(1, "list_servers")))
    assert answer["error"]["data"] == {"code": "DENIED_BY_POLICY", "rule": "agents.ghost: not defined"}


def test_the_fallbacks_for_callers_without_a_credential_do_not_apply_to_one() -> None:
    # GATEWAY_DEFAULT_AGENT and a 'default' agent would let a call without agent_id act as admin or default;
    # a credential names its own default, and the rules' deny_on_missing_agent is for callers without one.
    for deny_on_missing_agent in (True, False):
        rules = {**RULES, "defaults": {"deny_on_missing_agent": deny_on_missing_agent}}
        d = opened(KEY, rules=rules, default_agent="admin")
        assert audits(d.send(call(1, "list_servers")))[0]["agent"] == "backend"
        d = opened(Principal(id="user:bob", agents=("*",)), rules=rules, default_agent="admin")
        [answer] = sent_to_client(d.send(call(1, "list_servers")))
        assert answer["error"]["data"]["rule"] == "credential.default_agent"


def test_a_session_without_a_principal_decides_as_before_and_its_records_have_no_principal() -> None:
    d = Driver(make_config(RULES))
    d.initialize()
    actions = d.send(call(1, "list_servers", agent_id="admin"))
    assert "principal" not in audits(actions)[0] and audits(actions)[0]["agent"] == "admin"
    assert "principal" not in audits(d.send(call(2, "list_servers")))[0]


# -- expiry ------------------------------------------------------------------------


def test_a_credential_is_refused_from_the_moment_it_expires_on_the_event_clock() -> None:
    d = opened(Principal(id="delegated:t1", agents=("backend",), default_agent="backend", expires=10.0))
    d.now = 9.999
    assert audits(d.send(call(1, "list_servers")))[0]["decision"] == "ALLOW"
    d.now = 10.0
    msg = call(2, "list_servers", agent_id="backend")
    assert d.send(msg) == [
        refusal(2, ErrorCode.DENIED_BY_POLICY, "credential delegated:t1 expired", rule="credential.expires"),
        audited(msg, "DENY", agent=None, principal="delegated:t1", rule="credential.expires", error_code="DENIED_BY_POLICY"),
    ]


# -- a narrower tool list ----------------------------------------------------------

NARROW = Principal(id="delegated:t2", agents=("backend",), default_agent="backend", tools=("db/get_*",))


def test_a_tool_outside_the_credentials_own_list_is_denied_though_the_rules_allow_it() -> None:
    d = opened(NARROW)
    msg = call(1, "execute_tool", server="db", tool="echo", args={})
    message = "Access to tool 'echo' on server 'db' is denied: credential delegated:t2 may not call it (credential.tools)"
    assert d.send(msg) == [
        refusal(1, ErrorCode.DENIED_BY_POLICY, message, rule="credential.tools"),
        audited(msg, "DENY", agent="backend", principal="delegated:t2", server="db", tool="echo",
                rule="credential.tools", error_code="DENIED_BY_POLICY"),
    ]


def test_a_tool_on_the_credentials_list_is_called_and_audited_with_the_principal() -> None:
    d = opened(NARROW)
    msg = call(1, "execute_tool", server="db", tool="get_user", args={})
    started = d.send(msg)
    assert [type(a) for a in started] == [SetTimer, StartDownstream, SendToDownstream, SetTimer]
    d.handshake("db", [ECHO_TOOL, GET_TOOL])
    d.now = 0.5
    [forwarded] = d.server("db").requests("tools/call")
    assert forwarded["params"] == {"name": "get_user", "arguments": {}}
    call_timer = started[0]
    assert isinstance(call_timer, SetTimer) and call_timer.deadline == 60.0  # the call's timeout
    assert d.server("db").answer("tools/call", result={"content": []}) == [
        CancelTimer(timer=call_timer.timer),
        SendToClient(client="s", request=1, message=result(1, {"content": []})),
        audited(msg, agent="backend", principal="delegated:t2", server="db", tool="get_user",
                rule="agents.backend.allow.servers[0]", latency_ms=500.0),
    ]


def test_the_rules_still_decide_first_for_a_narrower_credential() -> None:
    d = opened(Principal(id="delegated:t3", agents=("backend.reviewer",), default_agent="backend.reviewer", tools=("*",)))
    [answer] = sent_to_client(d.send(call(1, "execute_tool", server="db", tool="drop_table", args={})))
    assert answer["error"]["data"] == {"code": "DENIED_BY_POLICY", "rule": 'agents["backend.reviewer"]: no rule allows it'}


def test_get_server_tools_shows_only_what_the_credential_may_call() -> None:
    d = opened(NARROW)
    msg = call(1, "get_server_tools", server="db")
    d.send(msg)
    actions = d.handshake("db", [ECHO_TOOL, GET_TOOL])
    [answer] = sent_to_client(actions)
    assert structured(answer) == {"tools": [GET_TOOL], "server": "db", "total_available": 1, "returned": 1, "tokens_used": 13}
    [record] = audits(actions)
    assert record == audited(msg, agent="backend", principal="delegated:t2", server="db", rule="agents.backend.allow.servers[0]").record
    # Without a list of its own, a credential sees what its agent may.
    d = opened(KEY)
    d.send(call(1, "get_server_tools", server="db"))
    [answer] = sent_to_client(d.handshake("db", [ECHO_TOOL, GET_TOOL]))
    assert structured(answer)["returned"] == 2


# -- the other refusals of a call name the principal too ---------------------------


def test_calls_refused_before_an_agent_is_known_name_the_principal() -> None:
    d = opened(KEY)
    [record] = audits(d.send(call(1, "no_such_tool")))
    assert (record["principal"], record["error_code"]) == ("key:3f9a1c2b", "INVALID_PARAMS")
    frame = b'{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"list_servers","arguments":{"\\ud800":1}}}'
    [record] = audits(d.send(frame))
    assert (record["principal"], record["error_code"]) == ("key:3f9a1c2b", "INVALID_PARAMS")
    d.handle(ShutdownRequested(now=d.now))
    [record] = audits(d.send(call(3, "list_servers")))
    assert (record["principal"], record["error_code"]) == ("key:3f9a1c2b", "SERVER_UNAVAILABLE")


# -- authentication, audited -------------------------------------------------------


def test_every_authentication_the_shell_reports_is_one_audit_record_without_a_secret() -> None:
    d = Driver()
    assert d.handle(AuthenticationSucceeded(now=1.0, principal=KEY, address="127.0.0.1")) == [
        Audit(record={"operation": "authenticate", "decision": "ALLOW", "principal": "key:3f9a1c2b", "role": "user",
                      "address": "127.0.0.1"})
    ]
    assert d.handle(AuthenticationFailed(now=2.0, reason="revoked API key", credential="key:3f9a1c2b", address="10.0.0.7")) == [
        Audit(record={"operation": "authenticate", "decision": "DENY", "credential": "key:3f9a1c2b", "address": "10.0.0.7",
                      "reason": "revoked API key"})
    ]
    assert d.handle(AuthenticationFailed(now=3.0, reason="no credential")) == [
        Audit(record={"operation": "authenticate", "decision": "DENY", "credential": None, "address": None,
                      "reason": "no credential"})
    ]
    # What the shell says is bounded in the record.
    [long] = d.handle(AuthenticationFailed(now=4.0, reason="x" * 1000, credential="y" * 1000))
    assert isinstance(long, Audit) and (len(long.record["reason"]), len(long.record["credential"])) == (300, 300)
    assert d.gw.metrics_json(5.0)["authentications"] == {"success": 1, "failure": 3}
    prometheus = d.gw.metrics_prometheus(5.0)
    assert 'lockgate_authentications_total{outcome="failure"} 3' in prometheus
    assert 'lockgate_authentications_total{outcome="success"} 1' in prometheus


# -- transcripts -------------------------------------------------------------------


def test_a_session_whose_credential_fails_a_recheck_is_refused_until_one_succeeds() -> None:
    d = Driver(make_config(RULES))
    d.open(1, "stdio", principal=KEY)
    d.client = 1
    d.initialize()
    revoked = AuthenticationFailed(now=5.0, reason="API key revoked", credential="key:3f9a1c2b", client=1)
    assert d.handle(revoked) == [
        Audit(record={"operation": "authenticate", "decision": "DENY", "credential": "key:3f9a1c2b", "address": None,
                      "reason": "API key revoked"}),
    ]
    # Whatever agent it names, even one granted: nothing to act as.
    for request_id, agent in ((1, "backend"), (2, None), (3, "admin")):
        msg = call(request_id, "list_servers", **({} if agent is None else {"agent_id": agent}))
        assert d.send(msg) == [
            SendToClient(client=1, request=request_id, message=error(
                request_id, ErrorCode.DENIED_BY_POLICY, "credential key:3f9a1c2b refused: API key revoked",
                {"code": "DENIED_BY_POLICY", "rule": "credential.refused"})),
            audited(msg, "DENY", agent=None, principal="key:3f9a1c2b", rule="credential.refused",
                    error_code="DENIED_BY_POLICY"),
        ]
    # The store answers again and the key is good: the session acts again, as what it proves now.
    narrower = Principal(id="key:3f9a1c2b", agents=("backend",), default_agent="backend")
    assert d.handle(AuthenticationSucceeded(now=6.0, principal=narrower, client=1)) == [
        Audit(record={"operation": "authenticate", "decision": "ALLOW", "principal": "key:3f9a1c2b", "role": "user",
                      "address": None}),
    ]
    msg = call(4, "list_servers")
    assert d.send(msg) == [
        SendToClient(client=1, request=4, message=result(4, DB_ONLY)),
        audited(msg, agent="backend", principal="key:3f9a1c2b"),
    ]
    [denied] = sent_to_client(d.send(call(5, "list_servers", agent_id="backend.reviewer")))
    assert denied["error"]["data"]["rule"] == "credential.agents"


def test_a_recheck_of_a_session_without_a_credential_or_of_one_gone_changes_nothing() -> None:
    d = Driver(make_config(RULES))
    d.open(1, "stdio")
    d.client = 1
    d.initialize()
    d.handle(AuthenticationFailed(now=1.0, reason="API key revoked", client=1))
    d.handle(AuthenticationFailed(now=1.0, reason="API key revoked", client=2))
    msg = call(1, "list_servers", agent_id="backend")
    assert d.send(msg) == [SendToClient(client=1, request=1, message=result(1, DB_ONLY)), audited(msg)]


def test_a_principal_is_recorded_only_when_there_is_one_and_comes_back_whole() -> None:
    plain = ClientOpened(now=0.0, client=1, transport="stdio")
    assert event_to_json(plain) == {"event": "ClientOpened", "now": 0.0, "client": 1, "transport": "stdio"}
    full = Principal(id="delegated:t4", role="admin", agents=("backend.*",), default_agent="backend.reviewer",
                     tools=("db/get_*",), rate=Rate(5, 30.0), shared_rates=(("key:1", Rate(9, 60.0)),), expires=12.5)
    for event in (
        ClientOpened(now=1.0, client="s", transport="http", principal=full),
        ClientOpened(now=1.0, client="s", transport="http", principal=KEY),
        AuthenticationSucceeded(now=2.0, principal=full, address="::1"),
        AuthenticationFailed(now=3.0, reason="token expired", credential="jwt:https://idp#42"),
        AuthenticationFailed(now=3.0, reason="API key revoked", credential="key:1", client=1),
        AuthenticationSucceeded(now=4.0, principal=KEY, client="s"),
    ):
        line = json.loads(json.dumps(event_to_json(event)))
        assert event_from_json(line) == event
    assert event_to_json(ClientOpened(now=1.0, client="s", principal=KEY))["principal"] == {
        "id": "key:3f9a1c2b", "role": "user", "agents": ["backend", "backend.*"], "default_agent": "backend", "expires": None,
    }


def test_a_session_with_a_principal_replays_exactly() -> None:
    config = make_config(RULES, rate_limit=Rate(2, 60.0))
    d = Driver(config)
    lines: list[dict[str, Any]] = [header(config, RULES)]

    def feed(event: Any) -> None:
        lines.append(event_to_json(event))
        lines.extend(action_to_json(a) for a in d.handle(event))

    def send(now: float, message: dict[str, Any]) -> None:
        feed(ClientMessageReceived(now=now, client="s", data=json.dumps(message).encode()))

    feed(AuthenticationSucceeded(now=0.0, principal=KEY))
    feed(ClientOpened(now=0.0, client="s", transport="http", principal=KEY))
    send(0.0, {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": "2025-11-25"}})
    send(1.0, call(1, "list_servers", agent_id="admin"))
    send(2.0, call(2, "list_servers", agent_id="backend"))
    send(3.0, call(3, "list_servers"))
    send(4.0, call(4, "list_servers", agent_id="backend"))
    assert replay(json.loads(json.dumps(lines))) is None
    records = [line["record"] for line in lines if line.get("action") == "Audit" and "agent" in line["record"]]
    assert [(r["agent"], r["principal"], r["error_code"]) for r in records] == [
        (None, "key:3f9a1c2b", "DENIED_BY_POLICY"),
        ("backend", "key:3f9a1c2b", None),
        ("backend", "key:3f9a1c2b", None),
        ("backend", "key:3f9a1c2b", "RATE_LIMITED"),
    ]


# -- the property ------------------------------------------------------------------

AGENTS = ["backend", "backend.reviewer", "backend.reviewer.deep", "admin", "ops.x", "default", "opsx"]
GRANTS = ["backend", "backend.*", "backend.reviewer", "backend.reviewer.*", "admin", "ops.*", "*", "default"]
PROPERTY_RULES = {"agents": {a: {"allow": {"servers": ["*"]}} for a in AGENTS}, "defaults": {"deny_on_missing_agent": False}}
PROPERTY_CONFIG = make_config(PROPERTY_RULES, default_agent="admin")


def _covers(grant: str, agent: str) -> bool:
    """Written out again, apart from the core's own: the grant forms of the rules' hierarchical names."""
    if grant == "*":
        return True
    if grant.endswith(".*"):
        return agent.startswith(grant[:-1]) and agent != grant[:-2]
    return grant == agent


@settings(max_examples=300, deadline=None)
@given(
    grants=st.lists(st.sampled_from(GRANTS), max_size=4).map(tuple),
    default=st.none() | st.sampled_from([*AGENTS, "ghost"]),
    declared=st.lists(st.none() | st.sampled_from([*AGENTS, "ghost", "backend.ghost", "bad id", "*", "backend.*"]),
                      min_size=1, max_size=4),
)
def test_no_call_ever_acts_as_an_agent_its_credential_was_not_granted(
    grants: tuple[str, ...], default: str | None, declared: list[str | None]
) -> None:
    d = Driver(PROPERTY_CONFIG)
    d.open("s", "http", principal=Principal(id="key:prop", agents=grants, default_agent=default))
    d.client = "s"
    d.initialize()
    for i, agent_id in enumerate(declared, start=1):
        arguments = {} if agent_id is None else {"agent_id": agent_id}
        [record] = audits(d.send(call(i, "list_servers", **arguments)))
        wanted = default if agent_id is None else agent_id
        allowed = wanted is not None and wanted in AGENTS and any(_covers(g, wanted) for g in grants)
        assert record["principal"] == "key:prop"
        # It acts as exactly the agent it asked for (or its default), granted and defined, or as none.
        assert record["agent"] == (wanted if allowed else None), (grants, default, agent_id, record)
        assert (record["decision"] == "ALLOW") == allowed


# -- management and sign-in ----------------------------------------------------------


def test_only_an_admin_whose_credential_is_valid_may_manage_users_and_keys() -> None:
    from lockgate.core import admin_refusal
    from lockgate.core._policy import Refusal

    admin = Principal(id="user:root", role="admin", agents=("*",), expires=10.0)
    assert admin_refusal(admin, 9.9) is None
    assert admin_refusal(admin, 10.0) == Refusal(ErrorCode.DENIED_BY_POLICY, "credential user:root expired", "credential.expires")
    assert admin_refusal(KEY, 0.0) == Refusal(
        ErrorCode.DENIED_BY_POLICY,
        "credential key:3f9a1c2b has role user: only an admin may manage users and keys",
        "credential.role",
    )


def test_a_failed_login_spends_a_token_of_its_name_and_of_its_address() -> None:
    from lockgate.core import LOGIN_ADDRESS_RATE, LOGIN_NAME_RATE, RateBuckets, login_limits

    assert login_limits("alice", "10.0.0.7") == (
        (("login-name", "alice"), LOGIN_NAME_RATE),
        (("login-address", "10.0.0.7"), LOGIN_ADDRESS_RATE),
    )
    assert login_limits("x" * 500, None) == ((("login-name", "x" * 128), LOGIN_NAME_RATE),)
    # Five wrong guesses at one name, from five addresses: the sixth waits for the name's bucket.
    buckets = RateBuckets()
    for n in range(LOGIN_NAME_RATE.count):
        assert buckets.first_refusal(login_limits("alice", f"10.0.0.{n}"), 0.0) is None
        for key, rate in login_limits("alice", f"10.0.0.{n}"):
            buckets.take(key, rate, 0.0)
    assert buckets.first_refusal(login_limits("alice", "10.0.0.99"), 0.0) == (0, 12.0)
    assert buckets.first_refusal(login_limits("bob", "10.0.0.1"), 0.0) is None
