"""Instances, balancing, health, breaker, failover, isolation, caps, idle stop, progress."""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Any

from lockgate.core._actions import Action, Audit, CancelTimer, CloseClient, Log, SendToClient, SendToDownstream, SetTimer, StartDownstream, StopDownstream
from lockgate.core._config import Config, InstanceSpec, ServerSpec, Settings
from lockgate.core._events import ConfigReloaded, ShutdownRequested
from lockgate.core._policy import Policy

from .harness import ECHO_TOOL, RULES, Driver, audited, call, make_config, sent_downstream, sent_to_client, structured

JSON = dict[str, Any]


def pool_config(instances: int | tuple[int, ...] = 2, *, eager: bool = False, **pool: Any) -> Config:
    """One server ``db`` with ``instances`` instances (a tuple gives their weights)."""
    weights = instances if isinstance(instances, tuple) else (1,) * instances
    spec = ServerSpec(
        name="db",
        transport="stdio",
        command="srv",
        instances=tuple(
            InstanceSpec(spec=ServerSpec(name="db", transport="stdio", command="srv", args=(str(i),)), weight=w)
            for i, w in enumerate(weights)
        ),
        **pool,
    )
    return Config(
        servers={"db": spec},
        policy=Policy.compile(RULES),
        settings=Settings(init_strategy="eager" if eager else "lazy", health_interval=0, debug=True, downstream_era="handshake"),
    )


def execute(id: Any, **extra: Any) -> JSON:
    return call(id, "execute_tool", agent_id="dev", server="db", tool="echo", args={}, **extra)


def forwarded_to(actions: list[Action]) -> list[int]:
    """The connections that got a tools/call."""
    return [a.downstream for a in actions if isinstance(a, SendToDownstream) and a.message.get("method") == "tools/call"]


def new_timers(actions: list[Action]) -> list[SetTimer]:
    return [a for a in actions if isinstance(a, SetTimer)]


def all_ready(d: Driver, n: int) -> None:
    """Start every instance eagerly and complete their handshakes (connections 1..n)."""
    d.start()
    d.initialize()
    assert list(d.downstreams) == list(range(1, n + 1))
    for ds in d.downstreams.values():
        ds.complete_handshake([ECHO_TOOL])


def open_client(d: Driver, client: Any) -> None:
    d.open(client).initialize()


def unavailable(request_id: Any, reason: str, client: Any = 0) -> SendToClient:
    message = f"Server 'db' is unavailable: {reason}"
    data = {"code": "SERVER_UNAVAILABLE", "server": "db", "reason": reason}
    return SendToClient(client=client, request=request_id, message={"jsonrpc": "2.0", "id": request_id, "error": {"code": -32001, "message": message, "data": data}})


# -- balancing ----------------------------------------------------------------------


def spread(strategy: str, instances: int | tuple[int, ...], calls: int, **pool: Any) -> list[int]:
    d = Driver(pool_config(instances, eager=True, strategy=strategy, **pool))
    n = instances if isinstance(instances, int) else len(instances)
    all_ready(d, n)
    out: list[int] = []
    for i in range(calls):
        out += forwarded_to(d.send(execute(i)))
    return out


def test_round_robin_is_the_default_and_rotates() -> None:
    assert spread("round_robin", 3, 6) == [1, 2, 3, 1, 2, 3]
    assert Counter(spread("round_robin", 2, 10)) == {1: 5, 2: 5}


def test_weighted_follows_the_weights() -> None:
    assert spread("weighted", (3, 1), 8) == [1, 1, 1, 2, 1, 1, 1, 2]


def test_random_spreads_by_the_shells_seed_reproducibly() -> None:
    def run(seed: int) -> list[int]:
        d = Driver(pool_config(3, eager=True, strategy="random"))
        d.start(seed)
        d.initialize()
        for ds in d.downstreams.values():
            ds.complete_handshake([ECHO_TOOL])
        return [c for i in range(300) for c in forwarded_to(d.send(execute(i)))]

    first = run(12345)
    assert first == run(12345) and first != run(999)
    assert all(70 < n < 130 for n in Counter(first).values())


def test_least_connections_goes_where_fewest_calls_are_in_flight() -> None:
    d = Driver(pool_config(3, eager=True, strategy="least_connections"))
    all_ready(d, 3)
    assert [c for i in range(3) for c in forwarded_to(d.send(execute(i)))] == [1, 2, 3]
    d.downstreams[2].answer("tools/call", result={"content": []})  # connection 2 is free again
    assert forwarded_to(d.send(execute(10))) == [2]
    assert forwarded_to(d.send(execute(11))) == [3]


def test_health_based_avoids_an_instance_that_failed() -> None:
    d = Driver(pool_config(3, eager=True, strategy="health_based"))
    all_ready(d, 3)
    d.downstreams[1].exit()
    assert [c for i in range(3) for c in forwarded_to(d.send(execute(i)))] == [2, 3, 2]


def test_get_server_tools_prefers_a_running_instance() -> None:
    d = Driver(pool_config(3))
    d.initialize()
    d.send(call(1, "get_server_tools", agent_id="dev", server="db"))
    d.server("db").complete_handshake([ECHO_TOOL])
    actions = d.send(call(2, "get_server_tools", agent_id="dev", server="db"))
    assert [type(a) for a in actions] == [SetTimer, CancelTimer, SendToClient, Audit]  # nothing starts
    assert structured(sent_to_client(actions)[0])["returned"] == 1
    # execute_tool spreads the load: it starts the next instance.
    [start] = [a for a in d.send(execute(3)) if isinstance(a, StartDownstream)]
    assert (start.instance, start.spec.args) == (1, ("1",))


# -- failover and retries --------------------------------------------------------------


def test_a_request_that_never_reached_an_instance_fails_over() -> None:
    d = Driver(pool_config(2))
    d.initialize()
    d.send(execute(1))
    actions = d.downstreams[1].exit("command not found: srv")
    assert actions == [  # the client hears nothing: the call moves on
        CancelTimer(timer=2),
        Log(level="warning", message="server unavailable", fields={"server": "db", "instance": 0, "reason": "command not found: srv"}),
        SetTimer(timer=3, deadline=0.0),
        Log(level="info", message="request moved to another instance", fields={"server": "db", "instance": 1}),
        StartDownstream(downstream=2, server="db", spec=d.gw.config.servers["db"].instances[1].spec, instance=1),
        SendToDownstream(downstream=2, message=d.downstreams[1].received[0]),  # initialize, as on the first
        SetTimer(timer=4, deadline=30.0),
    ]
    assert forwarded_to(d.downstreams[2].complete_handshake([ECHO_TOOL])) == [2]


def test_a_call_that_may_have_reached_an_instance_is_not_repeated() -> None:
    d = Driver(pool_config(2, eager=True))
    all_ready(d, 2)
    first = execute(1)
    assert forwarded_to(d.send(first)) == [1]
    reason = "killed by signal SIGKILL"
    assert d.downstreams[1].exit(reason) == [  # not forwarded anywhere else
        Log(level="warning", message="server unavailable", fields={"server": "db", "instance": 0, "reason": reason}),
        SetTimer(timer=4, deadline=0.0),
        CancelTimer(timer=3),
        unavailable(1, reason),
        audited(first, "ERROR", rule="agents.dev.allow.servers[0]", error_code="SERVER_UNAVAILABLE"),
    ]
    # The other instance takes the next call; the dead one restarts after its backoff (0 s).
    assert forwarded_to(d.send(execute(2))) == [2]
    assert [a.instance for a in d.advance(0) if isinstance(a, StartDownstream)] == [0]


def test_retry_calls_repeats_a_call_on_another_instance() -> None:
    d = Driver(pool_config(2, eager=True, retry_calls=True))
    all_ready(d, 2)
    d.send(execute(1))
    actions = d.downstreams[1].exit()
    assert sent_to_client(actions) == [] and forwarded_to(actions) == [2]
    actions = d.downstreams[2].answer("tools/call", result={"content": [], "ok": 1})
    assert sent_to_client(actions) == [{"jsonrpc": "2.0", "id": 1, "result": {"content": [], "ok": 1}}]


def test_every_instance_down_fails_at_once_with_each_reason() -> None:
    d = Driver(pool_config(2))
    d.initialize()
    for i in (1, 2):
        d.send(execute(i))
        d.server("db").exit("command not found: srv")  # instance 0; the call fails over to instance 1
        assert sent_to_client(d.server("db").exit("command not found: srv")) == [unavailable(i, "command not found: srv").message]
    third = execute(3)
    reason = (
        "no instance can take the request (instance 0: command not found: srv; next start attempt in 0.5 s; "
        "instance 1: command not found: srv; next start attempt in 0.5 s)"
    )
    assert d.send(third) == [  # and nothing starts
        unavailable(3, reason),
        audited(third, "ERROR", rule="agents.dev.allow.servers[0]", error_code="SERVER_UNAVAILABLE"),
    ]
    assert d.gw.server_states() == {"db": "unavailable"}
    status = d.gw.status()["servers"]["db"]
    assert [(i["health"], i["breaker"]) for i in status["instances"]] == [("unhealthy", "open")] * 2


# -- health checks and the breaker ----------------------------------------------------


def test_health_checks_ping_and_a_silent_instance_is_restarted() -> None:
    d = Driver(pool_config(1, eager=True, health_interval=5.0, health_timeout=1.0))
    d.start()
    d.initialize()
    db = d.server("db")
    [health] = new_timers(db.complete_handshake([ECHO_TOOL]))
    assert (health.timer, health.deadline) == (2, 5.0)
    assert d.advance(5.0) == [
        SendToDownstream(downstream=1, message={"jsonrpc": "2.0", "id": 3, "method": "ping"}),
        SetTimer(timer=3, deadline=6.0),
    ]
    d.advance(0.5)
    assert db.answer_all_pings() == [CancelTimer(timer=3), SetTimer(timer=4, deadline=10.5)]  # the next check
    assert d.advance(5.0) == [
        SendToDownstream(downstream=1, message={"jsonrpc": "2.0", "id": 4, "method": "ping"}),
        SetTimer(timer=5, deadline=11.5),
    ]
    reason = "did not answer a health check within 1 s"
    assert d.advance(1.0) == [  # the second ping is never answered
        StopDownstream(downstream=1, kill=True),
        Log(level="warning", message="server unavailable", fields={"server": "db", "instance": 0, "reason": reason}),
        SetTimer(timer=6, deadline=11.5),
        # That restart timer falls due at once (no backoff after one failure).
        StartDownstream(downstream=2, server="db", spec=db.start.spec),
        SendToDownstream(downstream=2, message=db.received[0]),
        SetTimer(timer=7, deadline=41.5),
    ]
    assert d.gw.status()["servers"]["db"]["instances"][0]["last_error"] == reason


def test_concurrent_timeouts_are_one_suspicion_and_an_answered_ping_clears_it() -> None:
    # Regression: each timed-out call used to count as a failure of its own, so
    # 20 callers of a briefly stuck server pushed its restart backoff to 30 s.
    d = Driver(pool_config(1, eager=True, health_interval=30.0, health_timeout=1.0))
    all_ready(d, 1)
    db = d.server("db")
    for i in (1, 2):
        d.send(execute(i, timeout_ms=100))
    first, second = db.requests("tools/call")
    actions = d.advance(0.1)  # both calls time out
    assert [m["error"]["data"]["code"] for m in sent_to_client(actions)] == ["TIMEOUT", "TIMEOUT"]
    # Not a failure: one ping goes out at once instead of at the next health check.
    assert sent_downstream(actions) == [
        {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": first["id"], "reason": "timed out after 100 ms"}},
        {"jsonrpc": "2.0", "id": 5, "method": "ping"},
        {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": second["id"], "reason": "timed out after 100 ms"}},
    ]
    [ping] = [t for t in new_timers(actions) if t.deadline == 1.1]
    assert d.gw.status()["servers"]["db"]["instances"][0]["consecutive_failures"] == 0
    # A call arriving meanwhile waits for the ping's verdict instead of joining the stuck ones.
    assert forwarded_to(d.send(execute(3))) == []
    d.advance(0.1)
    actions = db.answer_all_pings()
    assert CancelTimer(timer=ping.timer) in actions
    assert forwarded_to(actions) == [1]
    assert d.gw.server_states() == {"db": "ready"}


def test_a_hung_instance_is_killed_and_restarted_at_once_and_waiting_calls_move_to_it() -> None:
    d = Driver(pool_config(1, eager=True, health_interval=30.0, health_timeout=1.0))
    all_ready(d, 1)
    d.send(execute(1, timeout_ms=100))
    [ping] = [t for t in new_timers(d.advance(0.1)) if t.deadline == 1.1]
    d.advance(0.4)
    [waiting] = new_timers(d.send(execute(2, timeout_ms=5000)))
    actions = d.advance(0.6)
    assert d.now == ping.deadline
    # Killed at once (its whole process group), no backoff, and the waiting call goes to the new connection.
    assert actions[0] == StopDownstream(downstream=1, kill=True)
    assert [(a.downstream, a.instance) for a in actions if isinstance(a, StartDownstream)] == [(2, 0)]
    reason = "stopped answering (a call timed out after 100 ms, and it did not answer a health check within 1 s)"
    assert d.gw.status()["servers"]["db"]["instances"][0]["last_error"] == reason
    assert sent_to_client(actions) == []
    actions = d.downstreams[2].complete_handshake([ECHO_TOOL])
    assert forwarded_to(actions) == [2]
    assert waiting.timer in d.live_timers  # the waiting call still runs under its own timeout


def test_a_hang_with_calls_in_flight_fails_them_and_serves_the_next_ones() -> None:
    d = Driver(pool_config(1, eager=True, health_interval=5.0, health_timeout=1.0))
    all_ready(d, 1)
    first = execute(1, timeout_ms=60_000)
    d.send(first)
    assert sent_downstream(d.advance(5.0)) == [{"jsonrpc": "2.0", "id": 4, "method": "ping"}]
    reason = "did not answer a health check within 1 s"
    hung = d.downstreams[1]
    assert d.advance(1.0) == [
        StopDownstream(downstream=1, kill=True),
        Log(level="warning", message="server unavailable", fields={"server": "db", "instance": 0, "reason": reason}),
        SetTimer(timer=5, deadline=6.0),  # its restart: at once
        CancelTimer(timer=3),
        unavailable(1, reason),
        audited(first, "ERROR", rule="agents.dev.allow.servers[0]", latency_ms=6000.0, error_code="SERVER_UNAVAILABLE"),
        # The restart timer fires: the same instance on a new connection.
        StartDownstream(downstream=2, server="db", spec=hung.start.spec),
        SendToDownstream(downstream=2, message=hung.received[0]),
        SetTimer(timer=6, deadline=36.0),
    ]


def test_a_failed_probe_start_opens_the_breaker_for_longer() -> None:
    d = Driver(pool_config(1))
    d.initialize()
    for i in (1, 2):
        d.send(execute(i))
        d.server("db").exit("exited with code 1")
    d.now = 0.5  # half open: the next start is the probe
    d.send(execute(3))
    assert d.gw.status()["servers"]["db"]["instances"][0]["breaker"] == "half_open"
    [msg] = sent_to_client(d.server("db").exit("exited with code 1"))
    assert msg["error"]["data"]["reason"] == "exited with code 1"
    [msg] = sent_to_client(d.send(execute(4)))
    assert msg["error"]["data"]["reason"] == "exited with code 1; next start attempt in 1.0 s"


# -- isolation and process caps --------------------------------------------------------


def test_per_client_isolation_gives_each_client_its_own_session() -> None:
    d = Driver(pool_config(1, isolation="per_client"))
    d.initialize()
    open_client(d, "b")
    [a] = [x for x in d.send(execute(1)) if isinstance(x, StartDownstream)]
    b_call = execute(1)
    [b] = [x for x in d.send(b_call, client="b") if isinstance(x, StartDownstream)]
    assert (a.downstream, b.downstream) == (1, 2)
    assert forwarded_to(d.downstreams[1].complete_handshake([ECHO_TOOL])) == [1]
    assert forwarded_to(d.downstreams[2].complete_handshake([ECHO_TOOL])) == [2]
    assert forwarded_to(d.send(execute(2))) == [1]
    # A client's cancellation reaches its own session.
    forwarded = d.downstreams[2].request("tools/call")
    actions = d.send({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 1}}, client="b")
    assert actions == [
        SendToDownstream(downstream=2, message={"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": forwarded["id"], "reason": "cancelled by the client"}}),
        CancelTimer(timer=3),  # b's call's
        audited(b_call, "ERROR", rule="agents.dev.allow.servers[0]", error_code="CANCELLED"),
    ]
    assert d.clients["b"].close() == [StopDownstream(downstream=2)]  # its session goes with it
    assert d.gw.status()["servers"]["db"]["sessions"] == 1


def test_per_client_sessions_spread_over_instances_and_a_dead_one_is_replaced() -> None:
    d = Driver(pool_config(2, isolation="per_client", strategy="health_based"))
    d.initialize()
    open_client(d, "b")
    d.send(execute(1))
    d.send(execute(1), client="b")
    assert [ds.instance for ds in d.downstreams.values()] == [0, 1]
    d.downstreams[1].complete_handshake([ECHO_TOOL])
    d.downstreams[1].exit("killed by signal SIGKILL")
    # Client 0's session died with its state; its next call gets a fresh one,
    # on the healthier instance.
    d.send(execute(2))
    assert [ds.instance for ds in d.downstreams.values()] == [0, 1, 1]


def test_max_processes_refuses_a_new_session_clearly() -> None:
    d = Driver(pool_config(1, isolation="per_client", max_processes=1))
    d.initialize()
    open_client(d, "b")
    d.send(execute(1))
    refused = execute(1)
    assert d.send(refused, client="b") == [
        unavailable(1, "all 1 of its processes are in use (max_processes)", client="b"),
        audited(refused, "ERROR", rule="agents.dev.allow.servers[0]", error_code="SERVER_UNAVAILABLE"),
    ]
    d.clients[0].close()
    assert [x for x in d.send(execute(2), client="b") if isinstance(x, StartDownstream)] != []


def test_max_processes_limits_eager_starts_of_shared_instances() -> None:
    d = Driver(pool_config(3, eager=True, max_processes=2))
    assert [a.instance for a in d.start() if isinstance(a, StartDownstream)] == [0, 1]
    d.initialize()
    for ds in d.downstreams.values():
        ds.complete_handshake([ECHO_TOOL])
    assert [c for i in range(4) for c in forwarded_to(d.send(execute(i)))] == [1, 2, 1, 2]


# -- idle stop, progress and the hard cap -------------------------------------------------


def test_an_idle_instance_is_stopped_and_starts_again_on_use() -> None:
    d = Driver(pool_config(1, eager=True, idle_timeout=5.0))
    d.start()
    d.initialize()
    [idle] = new_timers(d.server("db").complete_handshake([ECHO_TOOL]))
    assert idle.deadline == 5.0
    d.advance(1.0)
    d.send(execute(1))
    d.advance(1.0)
    d.server("db").answer("tools/call")
    # At 5 s the idle timer finds it busy 3 s ago: it waits until five seconds after the last call ended.
    assert d.advance(3.0) == [SetTimer(timer=idle.timer + 2, deadline=7.0)]
    assert d.advance(2.0) == [
        Log(level="info", message="stopped an idle server", fields={"server": "db", "instance": 0}),
        StopDownstream(downstream=1),
    ]
    assert d.gw.server_states() == {"db": "idle"}
    assert [a.downstream for a in d.send(execute(2)) if isinstance(a, StartDownstream)] == [2]


def progress(d: Driver, request: dict[str, Any]) -> list[Action]:
    """A progress notification under the token the core put in ``request``, or under its wire id without one."""
    meta = request["params"].get("_meta", {"progressToken": request["id"]})
    return d.downstreams[1].notify("notifications/progress", progressToken=meta["progressToken"], progress=1)


def test_progress_resets_the_call_timeout() -> None:
    d = Driver(pool_config(1, eager=True))
    all_ready(d, 1)
    msg = execute(1, timeout_ms=1000)
    msg["params"]["_meta"] = {"progressToken": "p"}
    [timer] = new_timers(d.send(msg))
    d.advance(0.8)
    assert len(sent_to_client(progress(d, d.downstreams[1].request("tools/call")))) == 1
    assert d.advance(0.2) == [SetTimer(timer=timer.timer + 1, deadline=1.8)]
    [err] = sent_to_client(d.advance(0.8))
    assert err["error"]["message"] == "No answer from server 'db' within 1800 ms (progress extended its 1000 ms timeout)"
    assert err["error"]["data"] == {"code": "TIMEOUT", "server": "db", "timeout_ms": 1000, "waited_ms": 1800}


def test_progress_never_extends_a_call_past_max_timeout_ms() -> None:
    d = Driver(pool_config(1, eager=True, max_timeout_ms=1500))
    all_ready(d, 1)
    [timer] = new_timers(d.send(execute(1, timeout_ms=1000)))
    d.advance(0.8)
    # No token was asked for, so the server has none to use; under the wire id nothing reaches the client, yet the timer moves.
    assert progress(d, d.downstreams[1].request("tools/call")) == []
    assert d.advance(0.2) == [SetTimer(timer=timer.timer + 1, deadline=1.5)]
    actions = d.advance(0.5)
    assert sent_downstream(actions)[0]["method"] == "notifications/cancelled"
    assert sent_to_client(actions)[0]["error"]["data"]["waited_ms"] == 1500


# -- reload, shutdown and status ---------------------------------------------------------


def test_a_changed_pool_is_drained_and_replaced() -> None:
    d = Driver(pool_config(2, eager=True))
    all_ready(d, 2)
    first = execute(1)
    d.send(first)
    # Every instance changes (its arguments): the pool is replaced.
    changed = pool_config(3, eager=True)
    changed = dataclasses.replace(changed, servers={"db": dataclasses.replace(
        changed.servers["db"],
        instances=tuple(dataclasses.replace(i, spec=dataclasses.replace(i.spec, args=("new",))) for i in changed.servers["db"].instances),
    )})
    actions = d.handle(ConfigReloaded(now=0, config=changed))
    assert [a for a in actions if isinstance(a, StopDownstream)] == [StopDownstream(downstream=2)]
    assert [a.instance for a in actions if isinstance(a, StartDownstream)] == [0, 1, 2]
    assert d.downstreams[1].answer("tools/call") == [
        CancelTimer(timer=3),
        SendToClient(client=0, request=1, message={"jsonrpc": "2.0", "id": 1, "result": {}}),
        audited(first, rule="agents.dev.allow.servers[0]"),
        StopDownstream(downstream=1),  # drained: the old instance stops once its call ended
    ]


def test_a_pool_that_only_gains_an_instance_keeps_the_running_ones() -> None:
    d = Driver(pool_config(2, eager=True))
    all_ready(d, 2)
    d.send(execute(1))
    actions = d.handle(ConfigReloaded(now=0, config=pool_config(3, eager=True)))
    assert [a for a in actions if isinstance(a, StopDownstream)] == []
    assert [(a.downstream, a.instance) for a in actions if isinstance(a, StartDownstream)] == [(3, 2)]
    assert [m["id"] for m in sent_to_client(d.downstreams[1].answer("tools/call"))] == [1]
    assert [ds.id for ds in d.live_downstreams] == [1, 2, 3]


def test_shutdown_cancels_restart_timers() -> None:
    d = Driver(pool_config(2, eager=True))
    all_ready(d, 2)
    d.downstreams[1].exit()
    d.handle(ShutdownRequested(now=0))
    assert d.live_timers == {}
    assert d.live_downstreams == []


def test_status_shows_each_instance() -> None:
    d = Driver(pool_config(2, eager=True))
    all_ready(d, 2)
    d.send(execute(1))
    d.downstreams[2].exit()
    [msg] = sent_to_client(d.send(call(5, "get_gateway_status")))
    db = structured(msg)["servers"]["db"]
    assert (db["state"], db["strategy"], db["isolation"], db["sessions"]) == ("degraded", "round_robin", "shared", 2)
    assert db["instances"] == [
        {"transport": "stdio", "weight": 1, "state": "ready", "era": "handshake", "health": "healthy", "breaker": "closed",
         "in_use": 1, "starts": 1, "consecutive_failures": 0, "last_error": None},
        {"transport": "stdio", "weight": 1, "state": "backoff", "era": "handshake", "health": "unhealthy", "breaker": "closed", "in_use": 0,
         "starts": 1, "consecutive_failures": 1, "last_error": "exited with code 1"},
    ]


def test_an_idle_per_client_session_is_stopped_and_the_client_gets_a_new_one() -> None:
    d = Driver(pool_config(2, isolation="per_client", idle_timeout=1.0))
    d.initialize()
    d.send(execute(1))
    d.downstreams[1].complete_handshake([ECHO_TOOL])
    [idle] = new_timers(d.downstreams[1].answer("tools/call"))
    assert idle.deadline == 1.0
    assert d.advance(1.0) == [
        Log(level="info", message="stopped an idle server", fields={"server": "db", "instance": 0}),
        StopDownstream(downstream=1),
    ]
    d.send(execute(2))
    assert [(ds.id, ds.instance) for ds in d.downstreams.values()] == [(1, 0), (2, 1)]


def test_a_shared_pool_at_its_cap_does_not_start_another_instance() -> None:
    d = Driver(pool_config(2, eager=True, max_processes=1))
    all_ready(d, 1)
    assert [ds.instance for ds in d.downstreams.values()] == [0]
    assert forwarded_to(d.send(execute(1))) == [1]  # waits its turn on the running one
    [restart] = new_timers(d.downstreams[1].exit())
    assert restart.deadline == 0.0  # the first failure restarts at once
    d.advance(0)
    [restart] = new_timers(d.downstreams[2].exit())
    # Instance 0 failed twice: its breaker is open until 0.5 s, then its restart is the probe.
    assert restart.deadline == 0.5
    d.advance(0.5)
    assert [ds.instance for ds in d.downstreams.values()] == [0, 0, 0]
    # The probe start holds the only process allowed; instance 1 may not start beside it.
    [msg] = sent_to_client(d.send(execute(4)))
    assert msg["error"]["data"]["reason"] == "all 1 of its processes are in use (max_processes)"


def test_a_stopped_probe_does_not_block_the_instance() -> None:
    d = Driver(pool_config(1, isolation="per_client"))
    d.initialize()
    for i in (1, 2):
        d.send(execute(i))
        d.server("db").exit()
    d.now = 0.5
    d.send(execute(3))  # the probe start
    d.clients[0].close()
    open_client(d, "b")
    assert [a for a in d.send(execute(4), client="b") if isinstance(a, StartDownstream)] != []


def test_reload_retires_per_client_sessions_once_idle() -> None:
    d = Driver(pool_config(1, isolation="per_client"))
    d.initialize()
    first = execute(1)
    d.send(first)
    d.downstreams[1].complete_handshake([ECHO_TOOL])
    # Its instance changes: the client's session retires, the pool is replaced.
    changed = pool_config(2, isolation="per_client")
    changed = dataclasses.replace(changed, servers={"db": dataclasses.replace(changed.servers["db"], instances=tuple(
        dataclasses.replace(i, spec=dataclasses.replace(i.spec, args=("new",))) for i in changed.servers["db"].instances
    ))})
    actions = d.handle(ConfigReloaded(now=0, config=changed))
    assert [a for a in actions if isinstance(a, StopDownstream)] == []
    assert d.downstreams[1].answer("tools/call") == [
        CancelTimer(timer=1),
        SendToClient(client=0, request=1, message={"jsonrpc": "2.0", "id": 1, "result": {}}),
        audited(first, rule="agents.dev.allow.servers[0]"),
        StopDownstream(downstream=1),
    ]
    # The client's next call gets a session from the new pool.
    assert [a.downstream for a in d.send(execute(2)) if isinstance(a, StartDownstream)] == [2]


def test_reload_keeps_per_client_sessions_on_instances_that_stay() -> None:
    d = Driver(pool_config(1, isolation="per_client"))
    d.initialize()
    d.send(execute(1))
    d.downstreams[1].complete_handshake([ECHO_TOOL])
    actions = d.handle(ConfigReloaded(now=0, config=pool_config(2, isolation="per_client")))
    assert [a for a in actions if isinstance(a, (StopDownstream, StartDownstream))] == []
    assert [m["id"] for m in sent_to_client(d.downstreams[1].answer("tools/call"))] == [1]
    assert forwarded_to(d.send(execute(2))) == [1]  # its own session serves it still


def test_an_expired_http_session_stops_its_own_downstream() -> None:
    config = pool_config(1, isolation="per_client")
    d = Driver(dataclasses.replace(config, settings=dataclasses.replace(config.settings, session_ttl=10.0)))
    d.open("h", transport="http").initialize()
    first = execute(1)
    [started] = [x for x in d.send(first, client="h") if isinstance(x, StartDownstream)]
    ds = d.downstreams[started.downstream]
    ds.complete_handshake([ECHO_TOOL])
    assert d.advance(10.0) == [
        SendToDownstream(downstream=ds.id, message={"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": ds.request("tools/call")["id"], "reason": "the session expired"}}),
        CancelTimer(timer=2),
        audited(first, "ERROR", rule="agents.dev.allow.servers[0]", latency_ms=10000.0, error_code="CANCELLED"),
        StopDownstream(downstream=ds.id),
        Log(level="info", message="session expired", fields={"session": "h", "idle_seconds": 10.0}),
        CloseClient(client="h"),
    ]
    assert d.clients["h"].closed
    assert d.gw.status()["servers"]["db"]["sessions"] == 0


def test_a_server_that_keeps_failing_the_same_way_is_logged_ever_more_rarely() -> None:
    d = Driver(make_config(init_strategy="eager", servers=("db",)))
    d.start()
    levels: list[str] = []
    reasons = ["command not found: srv"] * 9 + ["exited with code 1"]
    for reason in reasons:
        failed = d.server("db")
        [level] = [a.level for a in failed.exit(reason) if isinstance(a, Log) and a.message == "server unavailable"]
        levels.append(level)
        while d.server("db") is failed:  # until its backoff is over and it starts again
            d.advance(0.25)
    # Failures 1, 2, 4 and 8 are warnings, the rest debug; a new reason is a warning again.
    assert levels == ["warning", "warning", "debug", "warning", "debug", "debug", "debug", "warning", "debug", "warning"]
