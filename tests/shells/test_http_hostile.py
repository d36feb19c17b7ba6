"""The HTTP front against hostile clients: slowloris, oversized heads, smuggling, and its own bugs.

Real sockets on 127.0.0.1 (port 0), a real gateway, as in ``test_http.py``.
On Linux any 127.0.0.x address can be bound as the source of a connection to
127.0.0.1, which is how one test plays many clients. No test asserts a
duration; each is bounded by ``trio.fail_after``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from lockgate.core.http import ConnectionLimits, health_body
from lockgate.shells import http as http_shell
from lockgate.shells import http_endpoint
from lockgate.shells.http_connections import ConnectionTable, Link

from .test_http import BOTH, execute, raw_post, running

PING = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
HEALTH = b"GET /health HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n"


async def connect(port: int, source: str = "127.0.0.1") -> trio.SocketStream:
    return await trio.open_tcp_stream("127.0.0.1", port, local_address=source)


async def read_until_closed(stream: trio.SocketStream, limit: float = 10) -> bytes:
    answer = b""
    with trio.fail_after(limit):
        try:
            while chunk := await stream.receive_some(65536):
                answer += chunk
        except trio.BrokenResourceError:
            pass  # reset after the answer: what arrived still counts
    return answer


async def closed_by_server(stream: trio.SocketStream, limit: float = 10) -> bool:
    """Whether the server closes ``stream`` within ``limit`` seconds (whatever it sent first)."""
    with trio.move_on_after(limit):
        await read_until_closed(stream, limit)
        return True
    return False


class Trickle:
    """Slowloris: connections that send half a request head, then one more byte now and then."""

    def __init__(self) -> None:
        self.streams: list[trio.SocketStream] = []
        self.closed = 0

    async def drip(self, interval: float) -> None:
        while True:
            await trio.sleep(interval)
            for stream in list(self.streams):
                try:
                    await stream.send_all(b"a")
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    self.streams.remove(stream)
                    self.closed += 1


@asynccontextmanager
async def trickling(port: int, count: int, sources: list[str], interval: float = 1.0) -> AsyncIterator[Trickle]:
    attack = Trickle()
    try:
        for n in range(count):
            stream = await connect(port, sources[n % len(sources)])
            await stream.send_all(b"POST /mcp HTTP/1.1\r\nhost: 127.0.0.1\r\nx-pad: ")
            attack.streams.append(stream)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(attack.drip, interval)
            yield attack
            nursery.cancel_scope.cancel()
    finally:
        for stream in attack.streams:
            await stream.aclose()


# -- the bookkeeping ---------------------------------------------------------------------


def bare_link(address: str) -> Link:
    return Link(None, address)  # type: ignore[arg-type]  # the table never touches the stream


def links(table: ConnectionTable, *addresses: str) -> list[Link]:
    admitted = []
    for address in addresses:
        new = bare_link(address)
        assert table.admit(new)
        admitted.append(new)
    return admitted


def test_the_table_evicts_the_idle_first_then_the_oldest_request_and_keeps_its_counts() -> None:
    table = ConnectionTable(ConnectionLimits(max_connections=3, max_per_address=0))
    first, second, third = links(table, "a", "b", "c")
    table.busy(first)
    table.idle(third)
    (fourth,) = links(table, "d")  # the idle one goes first, though it is the newest
    assert third.evicted and not second.evicted
    table.start(second, 1.0)
    (fifth,) = links(table, "e")  # then the request reading longest (second: since its accept)
    assert second.evicted and not fourth.evicted
    table.busy(fourth)
    table.busy(fifth)
    assert not table.admit(bare_link("f"))  # all busy: 503
    assert table.statistics() == {
        "admitted": 3, "idle": 0, "reading": 0, "addresses": 3, "evicted": 2, "refused": 1, "timed_out": 0,
    }
    for link in (first, second, third, fourth, fifth):
        table.remove(link)
    assert table.statistics()["admitted"] == table.statistics()["addresses"] == 0


def test_the_table_makes_room_for_an_address_among_its_own_connections_only() -> None:
    table = ConnectionTable(ConnectionLimits(max_connections=10, max_per_address=2))
    other, mine_old, mine_new = links(table, "b", "a", "a")
    table.idle(other)
    (newest,) = links(table, "a")
    assert mine_old.evicted and not other.evicted and not mine_new.evicted
    table.busy(mine_new)
    table.busy(newest)
    assert not table.admit(bare_link("a"))
    assert table.admit(bare_link("c"))


# -- slowloris -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sources",
    [["127.0.0.1"], [f"127.0.0.{n}" for n in range(2, 102)]],
    ids=["from-the-clients-own-address", "from-100-other-addresses"],
)
async def test_a_new_client_is_served_during_a_thousand_trickling_connections(
    tmp_path: Path, sources: list[str], servers: list[http_shell.HttpServer]
) -> None:
    """Regression: 1,100 trickling connections kept their slots; new clients got 503 for 20 s.

    From one address, past 256 each newcomer displaces that address's own
    oldest request; from 100 addresses (10 each) the global limit of 1,000
    is reached and the oldest request of any address goes.
    """
    with trio.fail_after(60):
        async with running(tmp_path) as gate, trickling(gate.port, 1000, sources) as attack:
            with trio.fail_after(20):
                while counts(servers)["reading"] < min(1000, 256 * len(sources)):
                    await trio.sleep(0.05)
            # The newcomer sends its request at once: it displaces the request trickling longest.
            client = await connect(gate.port)
            await client.send_all(HEALTH.replace(b"\r\n\r\n", b"\r\nconnection: close\r\n\r\n"))
            answer = await read_until_closed(client)
            assert answer.startswith(b"HTTP/1.1 200 ") and b'"healthy"' in answer
            session = await gate.initialize()
            assert (await gate.post(PING, session)).status_code == 200
            # Room was made by closing trickling connections.
            with trio.fail_after(10):
                while not attack.closed:
                    await trio.sleep(0.1)
            assert counts(servers)["refused"] == 0


async def trickle_until_closed(stream: trio.SocketStream, byte: bytes) -> None:
    """Send ``byte`` every 0.1 s until the gateway closes the connection, then close our side."""
    while True:
        try:
            await stream.send_all(byte)
        except trio.BrokenResourceError:
            break
        with trio.move_on_after(0.1):
            if await stream.receive_some(100) == b"":
                break
    await stream.aclose()


async def test_a_head_trickled_slowly_is_closed_at_its_deadline(tmp_path: Path) -> None:
    """Regression: a byte every few seconds, each inside the per-read timeout, kept a connection forever."""
    async with running(tmp_path, http_head_timeout=1.0, http_options={"read_timeout": 5.0}) as gate:
        stream = await connect(gate.port)
        await stream.send_all(b"GET /health HTTP/1.1\r\nhost: 127.0.0.1\r\nx-pad: ")
        with trio.fail_after(4):  # well before the per-read timeout could act
            await trickle_until_closed(stream, b"a")
        assert (await gate.http.get(f"{gate.base}/health")).status_code == 200


async def test_a_body_trickled_slowly_is_closed_at_its_deadline(tmp_path: Path) -> None:
    async with running(tmp_path, http_head_timeout=1.0, http_options={"read_timeout": 5.0}) as gate:
        session = await gate.initialize()
        stream = await connect(gate.port)
        head = raw_post(PING, session).partition(b"\r\n\r\n")[0]
        declared = re.sub(rb"content-length: \d+", b"content-length: 4000", head)
        await stream.send_all(declared + b"\r\n\r\n{")
        with trio.fail_after(4):
            await trickle_until_closed(stream, b" ")


async def test_an_idle_keep_alive_connection_keeps_its_own_timeout(tmp_path: Path) -> None:
    """The head deadline runs from a request's first byte, not from the end of the one before."""
    async with running(tmp_path, http_head_timeout=0.3, http_options={"read_timeout": 10.0}) as gate:
        stream = await connect(gate.port)
        for _ in range(2):
            await stream.send_all(HEALTH)
            with trio.fail_after(10):
                assert b'"healthy"' in await stream.receive_some(65536)
            await trio.sleep(1.0)  # idle for longer than the head timeout
        await stream.aclose()


async def test_past_its_limit_an_address_displaces_its_own_oldest_request(
    tmp_path: Path, servers: list[http_shell.HttpServer]
) -> None:
    async with running(tmp_path, max_connections_per_address=2) as gate:
        old, newer = await connect(gate.port, "127.0.0.2"), await connect(gate.port, "127.0.0.2")
        for stream in (old, newer):
            await stream.send_all(b"GET /health HTTP/1.1\r\nhost: 127.0.0.1\r\n")
        with trio.fail_after(10):
            while counts(servers)["reading"] < 2:
                await trio.sleep(0.02)
        third = await connect(gate.port, "127.0.0.2")
        await third.send_all(HEALTH)
        with trio.fail_after(10):
            assert b'"healthy"' in await third.receive_some(65536)
        assert await closed_by_server(old)
        await newer.send_all(b"\r\n")  # still open, and still served
        with trio.fail_after(10):
            assert b'"healthy"' in await newer.receive_some(65536)
        for stream in (old, newer, third):
            await stream.aclose()


async def test_past_its_limit_an_address_with_only_busy_connections_gets_503_and_others_are_served(
    tmp_path: Path, servers: list[http_shell.HttpServer]
) -> None:
    async with running(tmp_path, max_connections_per_address=2) as gate:
        session = await gate.initialize()
        calls = [await connect(gate.port, "127.0.0.2") for _ in range(2)]
        for n, stream in enumerate(calls):
            await stream.send_all(raw_post(execute(f"slow{n}", "sleep", seconds=3), session))
        with trio.fail_after(10):
            while (t := counts(servers))["admitted"] - t["idle"] - t["reading"] < 2:  # both busy
                await trio.sleep(0.02)
        third = await connect(gate.port, "127.0.0.2")
        await third.send_all(HEALTH)
        answer = await read_until_closed(third)
        assert answer.startswith(b"HTTP/1.1 503 ") and b"retry-after: 1" in answer.lower()
        assert (await gate.post(PING, session)).status_code == 200  # from 127.0.0.1
        with trio.fail_after(20):
            for stream in calls:
                assert b"slept" in await stream.receive_some(65536)
                await stream.aclose()
        await third.aclose()


@pytest.fixture
def servers(monkeypatch: pytest.MonkeyPatch) -> list[http_shell.HttpServer]:
    """Every HttpServer the test starts, so that it can wait on the server's own counts."""
    started: list[http_shell.HttpServer] = []
    original = http_shell.HttpServer.__init__

    def init(self: http_shell.HttpServer, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        started.append(self)

    monkeypatch.setattr(http_shell.HttpServer, "__init__", init)
    return started


def counts(servers: list[http_shell.HttpServer]) -> dict[str, int]:
    """The connection counts of the one server the test runs."""
    (server,) = servers
    return server.statistics()


# -- oversized heads -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "extra",
    [
        [b"x-h%d: v" % n for n in range(10_000)],  # 10,000 fields, about 120 KB, whole in a read or two
        [b"x-h%d: v" % n for n in range(100)],  # one field over the cap (host is the first)
        [b"x-big: " + b"v" * 70_000],  # few fields, but over 64 KiB
        [b"x-huge: " + b"v" * 1_000_000],  # so large the parser stops buffering it
    ],
    ids=["10000-fields", "101-fields", "70-KB-field", "1-MB-field"],
)
async def test_a_head_over_the_caps_gets_431_and_the_connection_closes(tmp_path: Path, extra: list[bytes]) -> None:
    """Regression: 10,000 header fields (119 KB) were accepted and answered 200."""
    async with running(tmp_path) as gate:
        stream = await connect(gate.port)
        head = b"\r\n".join([b"GET /health HTTP/1.1", b"host: 127.0.0.1", *extra]) + b"\r\n\r\n"
        async with trio.open_nursery() as nursery:
            # Sent alongside: the server may answer and close before it has read it all.
            nursery.start_soon(_send_ignoring_reset, stream, head)
            answer = await read_until_closed(stream)
        assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
        assert b'"code":-32600' in answer and b"connection: close" in answer.lower()
        await stream.aclose()
        assert (await gate.http.get(f"{gate.base}/health")).status_code == 200


async def _send_ignoring_reset(stream: trio.SocketStream, data: bytes) -> None:
    try:
        await stream.send_all(data)
    except trio.BrokenResourceError:
        pass


async def test_a_head_at_the_field_cap_is_served(tmp_path: Path) -> None:
    async with running(tmp_path) as gate:
        stream = await connect(gate.port)
        extra = [b"x-h%d: v" % n for n in range(99)]
        await stream.send_all(b"\r\n".join([b"GET /health HTTP/1.1", b"host: 127.0.0.1", b"connection: close", *extra[1:]]) + b"\r\n\r\n")
        answer = await read_until_closed(stream)
        assert answer.startswith(b"HTTP/1.1 200 ") and b'"healthy"' in answer
        await stream.aclose()


# -- smuggling -------------------------------------------------------------------------------


@pytest.mark.parametrize("first", [b"POST /mcp", b"GET /health"])
async def test_content_length_with_transfer_encoding_gets_400_and_the_smuggled_request_is_never_answered(
    tmp_path: Path, first: bytes
) -> None:
    """Regression: the bytes after such a request were served as a second request on the connection."""
    async with running(tmp_path) as gate:
        stream = await connect(gate.port)
        smuggled = b"GET /health HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n"
        await stream.send_all(
            first + b" HTTP/1.1\r\nhost: 127.0.0.1\r\naccept: " + BOTH.encode()
            + b"\r\ncontent-type: application/json\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n"
            + b"0\r\n\r\n" + smuggled
        )
        answer = await read_until_closed(stream)
        await stream.aclose()
        assert answer.startswith(b"HTTP/1.1 400 ")
        assert answer.count(b"HTTP/1.1 ") == 1 and b"healthy" not in answer
        assert b"connection: close" in answer.lower()
        assert b"Content-Length and Transfer-Encoding" in answer


# -- the shell's own failures ------------------------------------------------------------------


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


async def test_a_failure_while_serving_a_request_answers_500_closes_that_connection_and_no_other(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug met while handling one request must not stop the server's nursery (and every client with it)."""

    def broken(*args: object) -> bytes:
        raise RuntimeError("injected failure")

    records = _Records()
    logger = logging.getLogger("lockgate.http")
    logger.addHandler(records)
    try:
        async with running(tmp_path) as gate:
            session = await gate.initialize()
            monkeypatch.setattr(http_endpoint, "health_body", broken)
            for _ in range(3):
                stream = await connect(gate.port)
                await stream.send_all(HEALTH)
                answer = await read_until_closed(stream)  # the connection closes after the answer
                await stream.aclose()
                assert answer.startswith(b"HTTP/1.1 500 ")
                assert b'"code":-32603' in answer and b"injected" not in answer
            # The server goes on: the open session, new sessions, other endpoints.
            assert (await gate.post(PING, session)).status_code == 200
            assert (await gate.post(PING, await gate.initialize())).status_code == 200
            assert (await gate.http.get(f"{gate.base}/ready")).status_code in (200, 503)
            monkeypatch.setattr(http_endpoint, "health_body", health_body)
            assert (await gate.http.get(f"{gate.base}/health")).status_code == 200
    finally:
        logger.removeHandler(records)
    failures = [r for r in records.records if r.levelno == logging.ERROR]
    assert len(failures) == 3
    assert all(r.exc_info is not None and "injected failure" in str(r.exc_info[1]) for r in failures)
