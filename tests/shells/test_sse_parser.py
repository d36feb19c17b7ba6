"""The SSE parser: events come out whole and in order, however the bytes are cut."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lockgate.shells.sse_parser import SseEvent, SseParser, SseTooLarge

MCP_STREAM = (
    b"id: 1_0\r\ndata: \r\n\r\n"  # a priming event: an id, no data
    b": keep-alive\r\n\r\n"
    b'event: message\r\nid: 1_1\r\ndata: {"jsonrpc":"2.0","method":"notifications/progress"}\r\n\r\n'
    b'event: message\r\nid: 1_2\r\ndata: {"jsonrpc":"2.0","id":3,"result":{}}\r\n\r\n'
)
MCP_EVENTS = [
    SseEvent(event="message", data=b"", id="1_0"),
    SseEvent(event="message", data=b'{"jsonrpc":"2.0","method":"notifications/progress"}', id="1_1"),
    SseEvent(event="message", data=b'{"jsonrpc":"2.0","id":3,"result":{}}', id="1_2"),
]


def parse(chunks: list[bytes], limit: int = 1 << 20) -> tuple[list[SseEvent], SseParser]:
    parser = SseParser(limit)
    events: list[SseEvent] = []
    for chunk in chunks:
        events += parser.feed(chunk)
    return events, parser


def test_an_mcp_response_stream_in_one_chunk() -> None:
    events, parser = parse([MCP_STREAM])
    assert events == MCP_EVENTS
    assert parser.last_event_id == "1_2"


@given(st.lists(st.integers(min_value=0, max_value=len(MCP_STREAM)), max_size=20))
def test_any_cut_of_the_stream_gives_the_same_events(cuts: list[int]) -> None:
    points = sorted(set(cuts))
    chunks = [MCP_STREAM[a:b] for a, b in zip([0, *points], [*points, len(MCP_STREAM)])]
    assert parse(chunks)[0] == MCP_EVENTS


@pytest.mark.parametrize("newline", [b"\n", b"\r", b"\r\n"])
def test_every_line_ending_and_multi_line_data(newline: bytes) -> None:
    stream = newline.join([b"data: a", b"data:b", b"data:  c", b"", b""])
    events, _ = parse([stream[i : i + 1] for i in range(len(stream))])
    assert events == [SseEvent(event="message", data=b"a\nb\n c", id=None)]


def test_an_event_without_data_lines_sets_the_id_and_retry_only() -> None:
    events, parser = parse([b"id: abc\nretry: 1500\n\n"])
    assert events == []
    assert parser.last_event_id == "abc" and parser.retry == 1500
    # An empty data line is an event with empty data (the consumer skips it).
    assert parse([b"data:\n\n"])[0] == [SseEvent(event="message", data=b"", id=None)]


def test_ids_persist_until_changed_and_an_empty_id_resets() -> None:
    events, parser = parse([b"id: 7\ndata: x\n\ndata: y\n\nid\ndata: z\n\n"])
    assert [e.id for e in events] == ["7", "7", None]
    assert parser.last_event_id is None


def test_comments_unknown_fields_bad_retry_and_a_bom_are_ignored() -> None:
    events, parser = parse([b"\xef\xbb", b"\xbf: hi\nfoo: bar\nretry: soon\nevent: custom\ndata: 1\n\n"])
    assert events == [SseEvent(event="custom", data=b"1", id=None)]
    assert parser.retry is None


def test_an_unfinished_event_is_not_dispatched() -> None:
    assert parse([b"data: half"])[0] == []
    assert parse([b"data: half\n"])[0] == []


def test_an_event_over_the_limit_raises() -> None:
    parser = SseParser(10)
    with pytest.raises(SseTooLarge):
        parser.feed(b"data: 0123456789abc\n")
    with pytest.raises(SseTooLarge):
        SseParser(10).feed(b"data: 01234567\ndata: 01234567\n")
    with pytest.raises(SseTooLarge):
        SseParser(10).feed(b"data: no line end yet, and long")


def test_a_long_line_in_many_chunks() -> None:
    body = b"x" * 300_000
    stream = b"data: " + body + b"\n\n"
    events, _ = parse([stream[i : i + 1000] for i in range(0, len(stream), 1000)])
    assert events == [SseEvent(event="message", data=body, id=None)]
