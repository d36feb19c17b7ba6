"""Facts the shells report and the decisions the core takes on them, which the shells used to take.

A downstream line over the limit, a downstream that stops reading its input,
and a client that falls behind on a stream are reported as events; what
becomes of the connection or the stream is the core's decision.
"""

from __future__ import annotations

from lockgate.core import (
    ClientFellBehind,
    DownstreamMessageReceived,
    DownstreamNotReading,
    DropStream,
    Log,
    SendToClient,
    SendToDownstream,
    StopDownstream,
    downstream_message_bytes,
)
from lockgate.core.transcript import action_to_json, event_from_json, event_to_json

from .harness import Driver, call, make_config, req

BUSY = {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "execute_tool", "arguments": {"agent_id": "dev", "server": "db", "tool": "echo", "args": {}}}}


def ready_with_a_call(d: Driver) -> None:
    d.initialize()
    d.send(call(900, "get_server_tools", agent_id="dev", server="db"))
    d.handshake("db", [{"name": "echo", "inputSchema": {"type": "object"}}])
    d.send(BUSY)


def test_a_downstream_message_over_the_limit_fails_the_connection_and_its_calls() -> None:
    d = Driver(make_config(max_message_bytes=1000))
    ready_with_a_call(d)
    limit = downstream_message_bytes(d.gw.config.settings)
    assert limit == 4000  # SDK servers send a result twice: text and structured
    actions = d.handle(DownstreamMessageReceived(now=d.now, downstream=1, data=b"", too_large=True))
    reason = f"sent a message over {limit} bytes"
    assert actions[0] == StopDownstream(downstream=1)
    answers = [a for a in actions if isinstance(a, SendToClient)]
    assert answers == [
        SendToClient(
            client=0,
            request=7,
            message={
                "jsonrpc": "2.0", "id": 7,
                "error": {
                    "code": -32001, "message": f"Server 'db' is unavailable: {reason}",
                    "data": {"code": "SERVER_UNAVAILABLE", "server": "db", "reason": reason},
                },
            },
        )
    ]


def test_a_downstream_that_stops_reading_its_input_is_stopped() -> None:
    d = Driver()
    ready_with_a_call(d)
    actions = d.handle(DownstreamNotReading(now=d.now, downstream=1))
    assert actions[0] == StopDownstream(downstream=1)
    [answer] = [a for a in actions if isinstance(a, SendToClient)]
    assert answer.message["error"]["data"]["reason"] == "stopped reading its input"
    # A report about a connection the core already let go of changes nothing.
    assert d.handle(DownstreamNotReading(now=d.now, downstream=1)) == []


def test_a_client_that_falls_behind_on_a_stream_loses_that_stream_only() -> None:
    d = Driver(client="session-abc")
    d.initialize()
    actions = d.handle(ClientFellBehind(now=d.now, client="session-abc", request=5))
    assert actions == [
        Log(level="info", message="a client fell behind on a stream; dropping it", fields={"client": "session-"}),
        DropStream(client="session-abc", request=5),
    ]
    assert [a.message["id"] for a in d.send(req(6, "ping")) if isinstance(a, SendToClient)] == [6]
    assert d.handle(ClientFellBehind(now=d.now, client="gone", request=None)) == []
    assert d.gw.metrics_json(d.now)["streams_dropped"] == 1
    assert "lockgate_streams_dropped_total 1\n" in d.gw.metrics_prometheus(d.now)


def test_a_request_to_a_server_says_it_expects_an_answer() -> None:
    request = SendToDownstream(downstream=1, message={"jsonrpc": "2.0", "id": 3, "method": "ping"})
    note = SendToDownstream(downstream=1, message={"jsonrpc": "2.0", "method": "notifications/initialized"})
    answer = SendToDownstream(downstream=1, message={"jsonrpc": "2.0", "id": "s1", "result": {}})
    assert (request.expects_answer, note.expects_answer, answer.expects_answer) == (True, False, False)


def test_the_new_facts_and_a_kill_round_trip_through_transcripts() -> None:
    for event in (
        DownstreamMessageReceived(now=1.0, downstream=2, data=b"", too_large=True),
        DownstreamNotReading(now=1.0, downstream=2),
        ClientFellBehind(now=1.0, client="s", request=None),
        ClientFellBehind(now=1.0, client="s", request="r"),
    ):
        assert event_from_json(event_to_json(event)) == event
    assert action_to_json(StopDownstream(downstream=3, kill=True)) == {"action": "StopDownstream", "downstream": 3, "kill": True}
    # A plain stop keeps the line it always had, so older transcripts still replay.
    assert action_to_json(StopDownstream(downstream=3)) == {"action": "StopDownstream", "downstream": 3}
    assert action_to_json(DropStream(client="s", request=None)) == {"action": "DropStream", "client": "s", "request": None}
