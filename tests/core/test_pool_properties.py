"""Property tests of pools: random downstream weather never raises or loses a call."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lockgate.core._actions import SendToClient, SendToDownstream
from lockgate.core._events import ShutdownRequested

from .harness import ECHO_TOOL, Driver
from .test_instances import execute, pool_config

STEPS = st.tuples(
    st.sampled_from(
        ["call", "call", "answer", "stray", "handshake", "exit", "fire", "advance", "progress", "cancel", "tick", "client"]
    ),
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
        live = d.live_downstreams
        ds = live[n % len(live)] if live else None
        if step == "call" and clients:
            client = clients[n % len(clients)]
            asked.add((client, next_id))
            msg = execute(next_id, timeout_ms=1000)
            msg["params"]["_meta"] = {"progressToken": next_id}
            record(d.send(msg, client=client))
            next_id += 1
        elif step == "answer" and ds is not None and (pending := ds.requests("tools/call") + ds.requests("ping")):
            record(ds.answer(pending[n % len(pending)], result={"content": []}))
        elif step == "stray" and ds is not None:  # an answer to a request it may never have had, or had answered
            record(ds.send({"jsonrpc": "2.0", "id": 1 + n, "result": {}}))
        elif step == "handshake" and ds is not None and ds.requests("initialize"):
            record(ds.complete_handshake([ECHO_TOOL]))
        elif step == "exit" and ds is not None:
            record(ds.exit())
        elif step == "progress" and ds is not None and (calls := ds.requests("tools/call")):
            record(ds.progress(calls[n % len(calls)], progress=1))
        elif step == "fire" and d.live_timers:  # any armed timer, due or not: a shell may deliver them late and out of order
            timer, deadline = sorted(d.live_timers.items(), key=lambda t: (t[1], t[0]))[n % len(d.live_timers)]
            d.now = max(d.now, deadline)
            record(d.fire(timer))
        elif step == "advance":
            record(d.advance(n / 4))
        elif step == "tick":
            d.now += n / 4
        elif step == "cancel" and clients and next_id > 1:
            client = clients[n % len(clients)]
            asked.discard((client, next_id - 1))  # a cancelled request gets no answer
            record(d.send({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": next_id - 1}}, client=client))
        elif step == "client":
            if n % 2 and len(clients) > 1:
                gone = clients.pop(n % len(clients))
                record(d.clients[gone].close())
            else:
                opened += 1
                new = f"c{opened}"
                clients.append(new)
                d.open(new).initialize()
    record(d.handle(ShutdownRequested(now=d.now)))
    # No call is answered twice; calls of clients still open are all answered.
    assert len(answers) == len(set(answers))
    for client, request_id in asked:
        if client in clients:
            assert (client, request_id) in answers
    status = d.gw.status()
    assert status["calls_in_flight"] == 0
    assert all(not isinstance(a, SendToDownstream) for a in d.handle(ShutdownRequested(now=d.now)))
    # Nothing is left running or armed.
    assert d.live_downstreams == [] and d.live_timers == {}
