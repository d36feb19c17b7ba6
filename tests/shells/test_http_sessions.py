"""Where the HTTP shell routes what the core sends a session (shells/http_sessions.py)."""

from __future__ import annotations

import pytest
import trio

from lockgate.core.http import GET_STREAM, format_event
from lockgate.shells.clients import StreamFellBehind
from lockgate.shells.http_sessions import STREAM_BUFFER, HttpSession

NOTE = {"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": "info", "data": "x"}}


def response(request_id: object) -> dict[str, object]:
    return {"jsonrpc": "2.0", "id": request_id, "result": {}}


async def test_messages_of_no_request_go_to_the_get_stream_and_the_buffer() -> None:
    session = HttpSession(id="s")
    session.deliver(NOTE, None)  # nobody listens yet: buffered only
    send, receive = session.attach(GET_STREAM)
    session.deliver(NOTE, None)
    assert receive.receive_nowait() == format_event(2, b'{"jsonrpc":"2.0","method":"notifications/message","params":{"level":"info","data":"x"}}')
    replay = session.events.replay("1")
    assert replay is not None and replay.stream == GET_STREAM and len(replay.events) == 1
    session.detach(GET_STREAM, send)
    assert GET_STREAM not in session.streams


async def test_a_json_waiter_takes_only_the_response() -> None:
    session = HttpSession(id="s")
    waiter = session.wait_json(7)
    session.deliver({"jsonrpc": "2.0", "method": "notifications/progress", "params": {}}, 7)
    assert not waiter.done.is_set()
    session.deliver(response(7), 7)
    assert waiter.message == response(7) and not session.in_flight(7)
    session.deliver(response(7), 7)  # nobody waits any more: dropped
    assert len(session.events) == 0


async def test_an_sse_request_streams_until_its_response_and_ids_are_distinct_from_strings() -> None:
    session = HttpSession(id="s")
    session.sse_requests.add(1)
    send, receive = session.attach(("post", 1))
    session.deliver(response("1"), "1")  # a different request id: not this stream
    session.deliver(response(1), 1)
    frames = [frame async for frame in receive]  # the stream ends after the response
    assert frames == [format_event(1, b'{"jsonrpc":"2.0","id":1,"result":{}}')]
    assert not session.in_flight(1)


async def test_drop_stream_ends_that_stream_only_and_the_buffer_keeps_what_follows() -> None:
    session = HttpSession(id="s")
    session.sse_requests.add(1)
    get_send, get_receive = session.attach(GET_STREAM)
    post_send, post_receive = session.attach(("post", 1))
    session.drop_stream(1)  # the core's DropStream for request 1's stream
    session.drop_stream(2)  # no such stream: nothing happens
    assert [frame async for frame in post_receive] == []
    assert list(session.streams) == [GET_STREAM]
    session.deliver({"jsonrpc": "2.0", "method": "notifications/progress", "params": {}}, 1)
    session.deliver(response(1), 1)  # both buffered, for a client that resumes
    replay = session.events.replay("1")
    assert replay is not None and replay.stream == ("post", 1) and replay.finished and len(replay.events) == 1
    session.drop_stream(None)
    assert [frame async for frame in get_receive] == [] and not session.streams


async def test_a_slow_reader_is_reported_once_and_dropped_by_the_core_with_the_buffer_intact() -> None:
    session = HttpSession(id="s")
    _, receive = session.attach(GET_STREAM)
    for _ in range(STREAM_BUFFER):
        session.deliver(NOTE, None)
    with pytest.raises(StreamFellBehind) as behind:
        session.deliver(NOTE, None)
    assert behind.value.request is None
    session.deliver(NOTE, None)  # reported already: buffered, and not reported again
    assert GET_STREAM in session.streams  # the core decides
    session.drop_stream(None)  # its DropStream
    assert GET_STREAM not in session.streams
    assert len([frame async for frame in receive]) == STREAM_BUFFER
    # The buffer holds the last 256 events: the frames that did not fit are among them.
    replay = session.events.replay(str(STREAM_BUFFER))
    assert replay is not None and [frame.split(b"\n")[0] for frame in replay.events] == [
        b"id: %d" % (STREAM_BUFFER + 1), b"id: %d" % (STREAM_BUFFER + 2)
    ]


async def test_a_late_drop_leaves_a_reader_that_resumed_since() -> None:
    session = HttpSession(id="s")
    session.attach(GET_STREAM)
    for _ in range(STREAM_BUFFER):
        session.deliver(NOTE, None)
    with pytest.raises(StreamFellBehind):
        session.deliver(NOTE, None)
    session.streams.pop(GET_STREAM).close()  # the client resumed: its new GET takes over
    _, receive = session.attach(GET_STREAM)
    session.drop_stream(None)  # the core's answer to the report about the old reader
    session.deliver(NOTE, None)
    assert receive.receive_nowait().startswith(b"id: %d" % (STREAM_BUFFER + 2))


def test_the_requests_in_flight_are_what_check_post_needs() -> None:
    session = HttpSession(id="s")
    session.wait_json(7)
    session.sse_requests.add("x")
    assert 7 in session.requests_in_flight and "x" in session.requests_in_flight
    assert "7" not in session.requests_in_flight and 8 not in session.requests_in_flight


async def test_closing_wakes_waiters_and_ends_streams() -> None:
    session = HttpSession(id="s")
    waiter = session.wait_json("a")
    _, receive = session.attach(GET_STREAM)
    session.close()
    assert waiter.done.is_set() and waiter.message is None
    with trio.fail_after(1):
        assert [frame async for frame in receive] == []
    session.deliver(NOTE, None)  # after close: ignored
    assert len(session.events) == 0


async def test_cancel_answers_the_waiting_post() -> None:
    session = HttpSession(id="s")
    waiter = session.wait_json("a")
    session.cancel("a", {"jsonrpc": "2.0", "id": "a", "error": {"code": -32008, "message": "cancelled"}})
    assert waiter.message is not None and waiter.message["id"] == "a"
