"""LineSplitter: chunk boundaries, CRLF, blank lines, oversize lines."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from lockgate.shells.framing import TOO_LONG, LineSplitter


def feed_all(splitter: LineSplitter, chunks: list[bytes]) -> list[bytes | str]:
    out: list[bytes | str] = []
    for chunk in chunks:
        out.extend(splitter.feed(chunk))
    return out


def test_lines_split_across_chunks() -> None:
    splitter = LineSplitter(100)
    assert feed_all(splitter, [b'{"a"', b":1}\n{", b'"b":2}\n', b"{"]) == [b'{"a":1}', b'{"b":2}']
    assert splitter.pending == 1


def test_crlf_and_blank_lines() -> None:
    splitter = LineSplitter(100)
    assert splitter.feed(b"one\r\n\r\n\n  \ntwo\r") == [b"one"]
    assert splitter.feed(b"\n") == [b"two"]


def test_oversize_line_is_reported_once_then_framing_resumes() -> None:
    splitter = LineSplitter(10)
    out = feed_all(splitter, [b"0123456789ABC", b"DEFGH" * 1000, b"IJ\nok\n"])
    assert out == [TOO_LONG, b"ok"]
    assert splitter.pending == 0


def test_never_buffers_more_than_the_limit() -> None:
    splitter = LineSplitter(10)
    for _ in range(100):
        splitter.feed(b"x" * 7)
        assert splitter.pending <= 11


def test_oversize_line_inside_one_chunk() -> None:
    splitter = LineSplitter(4)
    assert splitter.feed(b"abcd\nabcde\nab\n") == [b"abcd", TOO_LONG, b"ab"]


def test_limit_counts_the_line_without_its_crlf() -> None:
    splitter = LineSplitter(4)
    assert splitter.feed(b"abcd\r\n") == [b"abcd"]
    assert splitter.feed(b"abcd") == []
    assert splitter.feed(b"e\r\nz\n") == [TOO_LONG, b"z"]


@given(
    lines=st.lists(st.binary(max_size=30).map(lambda b: b.replace(b"\n", b"")), max_size=20),
    cuts=st.lists(st.integers(min_value=0, max_value=800), max_size=10),
)
def test_any_chunking_gives_the_same_lines(lines: list[bytes], cuts: list[int]) -> None:
    data = b"".join(line + b"\n" for line in lines)
    whole = LineSplitter(20).feed(data)
    points = sorted({0, len(data), *(c for c in cuts if c < len(data))})
    chunks = [data[a:b] for a, b in zip(points, points[1:])]
    assert feed_all(LineSplitter(20), chunks) == whole
    expected: list[bytes | str] = []
    for line in lines:
        stripped = line[:-1] if line.endswith(b"\r") else line
        if len(stripped) > 20:
            expected.append(TOO_LONG)
        elif stripped.strip():
            expected.append(stripped)
    assert whole == expected
