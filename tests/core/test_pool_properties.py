"""Property tests of pools: random downstream weather never raises or loses a call."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lockgate.core._actions import SendToClient, SendToDownstream
from lockgate.core._events import ClientClosed, ClientOpened, ShutdownRequested

from .harness import ECHO_TOOL, Driver, req
from .test_instances import execute, pool_config

STEPS = st.tuples(
    st.sampled_from(["call", "call", "answer", "handshake", "exit", "fire", "progress", "cancel", "tick", "client"]),
    st.integers(0, 7),
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    st.lists(STEPS, max_size=40),
    st.sampled_from(["round_robin", "least_connections", "weighted", "health_based", "random"]),
    st.sampled_from(["shared", "per_client"]),
    st.booleans(),
    st.sampled_from([None, 1, 2]),
)
def test_random_downstream_weather_never_raises_and_every_call_is_answered_once(
    steps: list[tuple[str, int]], strategy: str, isolation: str, retry: bool, cap: int | None
) -> None:
    d = Driver(pool_config((2, 1, 1), strategy=strategy, isolation=isolation, retry_calls=retry, max_processes=cap,
                           idle_timeout=3.0, health_interval=2.0, health_timeout=1.0, max_timeout_ms=5000))
    clients: list[Any] = [0]
    d.initialize()
    asked: set[tuple[Any, int]] = set()
    answers: list[tuple[Any, int]] = []
    next_id = 1
    opened = 0

    def record(actions: list[Any]) -> None:
        for a in actions:
            if isinstance(a, SendToClient) and "id" in a.message and a.message["id"] != 0:
                answers.append((a.client, a.message["id"]))

    for step, n in steps:
        live = [s.downstream for s in d.started if s.downstream in d.live_downstreams]
        if step == "call" and clients:
            client = clients[n % len(clients)]
            asked.add((client, next_id))
            msg = execute(next_id, timeout_ms=1000)
            msg["params"]["_meta"] = {"progressToken": next_id}
            record(d.send(msg, client=client))
            next_id += 1
        elif step == "answer" and live:
            record(d.to(live[n % len(live)], {"jsonrpc": "2.0", "id": 3 + n, "result": {}}))
        elif step == "handshake" and live:
            record(d.handshake_connection(live[n % len(live)], [ECHO_TOOL]))
        elif step == "exit" and live:
            record(d.exit_connection(live[n % len(live)]))
        elif step == "progress" and live:
            record(d.to(live[n % len(live)], {"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": 3 + n, "progress": 1}}))
        elif step == "fire":
            due = sorted((deadline, t) for t, deadline in d.timers.items() if t in d.live_timers)
            if due:
                deadline, timer = due[n % len(due)]
                d.now = max(d.now, deadline)
                record(d.fire(timer))
        elif step == "tick":
            d.now += n / 4
        elif step == "cancel" and clients and next_id > 1:
            client = clients[n % len(clients)]
            asked.discard((client, next_id - 1))  # a cancelled request gets no answer
            record(d.send({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": next_id - 1}}, client=client))
        elif step == "client":
            if n % 2 and len(clients) > 1:
                gone = clients.pop(n % len(clients))
                record(d.handle(ClientClosed(now=d.now, client=gone)))
            else:
                opened += 1
                new = f"c{opened}"
                clients.append(new)
                d.handle(ClientOpened(now=d.now, client=new))
                d.send(req(0, "initialize", {"protocolVersion": "2025-11-25"}), client=new)
    record(d.handle(ShutdownRequested(now=d.now)))
    # No call is answered twice; calls of clients still open are all answered.
    assert len(answers) == len(set(answers))
    for client, request_id in asked:
        if client in clients:
            assert (client, request_id) in answers
    status = d.gw.status()
    assert status["calls_in_flight"] == 0
    assert all(not isinstance(a, SendToDownstream) for a in d.handle(ShutdownRequested(now=d.now)))
