"""The shared rate limit store against a real redis-server: the Lua take is atomic, all-or-nothing, refills, expires, and survives Redis going away."""

from __future__ import annotations

import itertools
import socket
from functools import partial
from typing import Any

import pytest
import trio

from lockgate.core import TakeTokens, TokensTaken
from lockgate.shells.shared_limits import SharedLimits, readiness
from tests.redis_server import RedisServer

_tickets = itertools.count(1)
_prefixes = itertools.count(1)


def store(server: RedisServer, **kw: Any) -> SharedLimits:
    # A prefix of its own per store: the tests share one Redis and never see each other's buckets.
    kw.setdefault("prefix", f"test{next(_prefixes)}:")
    return SharedLimits(server.url, **kw)


async def take(limits: SharedLimits, *buckets: tuple[str, int, float]) -> TokensTaken:
    return await limits.take(TakeTokens(ticket=next(_tickets), limits=buckets))


def field(server: RedisServer, key: str, name: str) -> float:
    reply = server.command("HGET", key, name)
    assert reply.startswith(b"$"), reply
    return float(reply.split(b"\r\n")[1])


async def test_a_bucket_allows_a_burst_of_count_then_refuses_with_the_wait_for_one_token(redis_server: RedisServer) -> None:
    limits = store(redis_server)
    outcomes = [(await take(limits, ("agent:dev", 3, 60.0))).refused for _ in range(4)]
    assert outcomes[:3] == [None, None, None]
    refused = outcomes[3]
    assert refused is not None and refused[0] == 0
    assert 19.0 < refused[1] <= 20.0  # a token every 20 s, and the first was taken a moment ago
    assert limits.status() == {"store": "redis", "reachable": True, "on_failure": "closed"}
    limits.close()


async def test_many_concurrent_takes_from_two_replicas_never_exceed_the_bucket(redis_server: RedisServer) -> None:
    # Two stores, as two replicas would hold, with 16 connections each, all at once.
    replicas = [store(redis_server), store(redis_server)]
    prefix = "shared:"
    for limits in replicas:
        limits._prefix = prefix
    allowed = 0

    async def caller(limits: SharedLimits) -> None:
        nonlocal allowed
        for _ in range(10):
            answer = await take(limits, ("agent:busy", 50, 3600.0))
            assert answer.unavailable is None, answer.unavailable
            if answer.refused is None:
                allowed += 1

    async with trio.open_nursery() as nursery:
        for i in range(40):
            nursery.start_soon(caller, replicas[i % 2])
    assert allowed == 50  # 400 calls, a bucket of 50 refilling one every 72 s
    for limits in replicas:
        limits.close()


async def test_a_call_under_several_limits_takes_from_all_or_from_none(redis_server: RedisServer) -> None:
    limits = store(redis_server)
    both = (("credential:k", 5, 3600.0), ("agent:dev", 1, 3600.0))
    assert (await take(limits, *both)).refused is None
    refused = (await take(limits, *both)).refused
    assert refused is not None and refused[0] == 1 and 3599.0 < refused[1] <= 3600.0
    # The refusal took nothing from the credential: four tokens are left, not three.
    key = limits._prefix + "credential:k"
    assert field(redis_server, key, "tokens") == pytest.approx(4.0, abs=0.01)
    outcomes = [(await take(limits, ("credential:k", 5, 3600.0))).refused for _ in range(5)]
    assert [o is None for o in outcomes] == [True, True, True, True, False]
    limits.close()


async def test_a_bucket_refills_on_the_redis_clock_up_to_its_count(redis_server: RedisServer) -> None:
    limits = store(redis_server)
    key = limits._prefix + "agent:dev"
    for _ in range(2):
        assert (await take(limits, ("agent:dev", 2, 60.0))).refused is None
    assert (await take(limits, ("agent:dev", 2, 60.0))).refused is not None
    # Set the bucket 30 s in the past on Redis's clock: one token back (one each 30 s), not two.
    updated = field(redis_server, key, "updated")
    redis_server.command("HSET", key, "updated", repr(updated - 30.0))
    assert (await take(limits, ("agent:dev", 2, 60.0))).refused is None
    assert (await take(limits, ("agent:dev", 2, 60.0))).refused is not None
    # An hour idle: full again, never fuller than its count.
    redis_server.command("HSET", key, "updated", repr(field(redis_server, key, "updated") - 3600.0))
    outcomes = [(await take(limits, ("agent:dev", 2, 60.0))).refused is None for _ in range(3)]
    assert outcomes == [True, True, False]
    limits.close()


async def test_a_bucket_expires_once_it_would_be_full_again_so_redis_holds_only_buckets_in_use(redis_server: RedisServer) -> None:
    limits = store(redis_server)
    await take(limits, ("agent:slow", 2, 60.0))
    ttl = int(redis_server.command("TTL", limits._prefix + "agent:slow")[1:].split(b"\r\n")[0])
    assert 30 <= ttl <= 31  # one token spent: full again in 30 s
    await take(limits, ("agent:fast", 1000, 1.0))
    ttl = int(redis_server.command("TTL", limits._prefix + "agent:fast")[1:].split(b"\r\n")[0])
    assert 1 <= ttl <= 2
    limits.close()


async def test_a_redis_that_is_not_there_is_unavailable_within_the_timeout_and_ready_says_so() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens there once closed
    limits = SharedLimits(f"redis://127.0.0.1:{port}/0", failure="closed")
    answer = await take(limits, ("agent:dev", 2, 60.0))
    assert answer.refused is None and answer.unavailable is not None and "ConnectionError" in answer.unavailable
    assert await limits.ping() is False
    status = limits.status()
    assert status["reachable"] is False and status["on_failure"] == "closed" and "error" in status
    body = readiness({"status": "ready", "servers": {}}, limits)
    assert body["status"] == "degraded" and body["shared_limits"]["reachable"] is False
    assert body["reason"] == "the shared rate limit store (Redis) does not answer: calls under a rate limit are refused"
    # Degraded beside a server that is down says both.
    body = readiness({"status": "degraded", "reason": "unavailable: db", "servers": {}}, limits)
    assert body["reason"].startswith("unavailable: db; the shared rate limit store")
    assert readiness({"status": "not_ready", "reason": "starting"}, limits)["status"] == "not_ready"
    assert readiness({"status": "ready"}, None) == {"status": "ready"}
    limits.close()


async def test_redis_killed_and_restarted_the_store_fails_then_recovers_by_itself() -> None:
    server = await trio.to_thread.run_sync(RedisServer.start)
    try:
        limits = SharedLimits(server.url, failure="closed")
        assert (await take(limits, ("agent:dev", 100, 60.0))).refused is None
        await trio.to_thread.run_sync(server.kill)
        answer = await take(limits, ("agent:dev", 100, 60.0))
        assert answer.unavailable is not None
        assert limits.reachable is False
        await trio.to_thread.run_sync(server.restart)
        # A new connection, and the script sent again (a restarted Redis has forgotten it): no retry loop needed.
        answer = await take(limits, ("agent:dev", 100, 60.0))
        assert answer.unavailable is None and answer.refused is None
        assert limits.reachable is True
        limits.close()
    finally:
        server.stop()


async def test_a_redis_that_hangs_is_unavailable_after_the_timeout_not_later() -> None:
    server = await trio.to_thread.run_sync(RedisServer.start)
    try:
        limits = SharedLimits(server.url, failure="open", timeout=0.1)
        assert (await take(limits, ("agent:dev", 100, 60.0))).refused is None
        assert server.pid is not None
        import os
        import signal

        os.kill(server.pid, signal.SIGSTOP)  # accepts nothing, answers nothing
        try:
            with trio.fail_after(5):  # a bound on the test, not a timing assertion: 0.25 s is expected
                answer = await take(limits, ("agent:dev", 100, 60.0))
            assert answer.unavailable is not None
        finally:
            os.kill(server.pid, signal.SIGCONT)
        answer = await take(limits, ("agent:dev", 100, 60.0))
        assert answer.unavailable is None
        limits.close()
    finally:
        server.stop()


async def test_queued_takes_are_batched_and_each_is_answered_exactly_once(redis_server: RedisServer) -> None:
    limits = store(redis_server)
    answers: list[TokensTaken] = []

    async def feed(event: TokensTaken) -> None:
        answers.append(event)

    async with trio.open_nursery() as nursery:
        await nursery.start(limits.run, feed)
        tickets = [next(_tickets) for _ in range(300)]
        for ticket in tickets:  # all queued at once, as one event's actions would be
            limits.submit(TakeTokens(ticket=ticket, limits=(("agent:batched", 100, 3600.0),)))
        with trio.fail_after(30):
            while len(answers) < len(tickets):
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    assert sorted(a.ticket for a in answers) == tickets
    assert [a.unavailable for a in answers] == [None] * 300
    assert sum(a.refused is None for a in answers) == 100
    limits.close()


async def test_a_password_and_a_database_in_the_url_are_used_and_a_wrong_password_is_unavailable() -> None:
    server = await trio.to_thread.run_sync(RedisServer.start)
    try:
        assert server.command("CONFIG", "SET", "requirepass", "s3cret") == b"+OK\r\n"
        limits = SharedLimits(f"redis://:s3cret@127.0.0.1:{server.port}/3", prefix="auth:")
        assert (await take(limits, ("agent:dev", 2, 60.0))).refused is None
        assert await limits.ping() is True
        limits.close()
        wrong = SharedLimits(f"redis://:wrong@127.0.0.1:{server.port}/3")
        answer = await take(wrong, ("agent:dev", 2, 60.0))
        assert answer.unavailable is not None and answer.unavailable.startswith("Redis refused the connection: WRONGPASS")
        assert "wrong" not in (wrong.error or "").replace("WRONGPASS", "")  # never the password itself
        wrong.close()
        # The bucket went to database 3, not 0 (one connection: AUTH, then EXISTS in 0 and in 3).
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as conn:
            conn.sendall(b"AUTH s3cret\r\nEXISTS auth:agent:dev\r\nSELECT 3\r\nEXISTS auth:agent:dev\r\n")
            replies = b""
            while replies.count(b"\r\n") < 4:
                replies += conn.recv(1024)
        assert replies == b"+OK\r\n:0\r\n+OK\r\n:1\r\n"
    finally:
        server.stop()


async def test_something_that_is_not_redis_at_the_url_is_unavailable_and_nothing_breaks() -> None:
    async def not_redis(stream: trio.SocketStream) -> None:
        await stream.receive_some(65536)
        await stream.send_all(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        await stream.aclose()

    async with trio.open_nursery() as nursery:
        [listener] = await nursery.start(partial(trio.serve_tcp, not_redis, 0, host="127.0.0.1"))
        port = listener.socket.getsockname()[1]
        limits = SharedLimits(f"redis://127.0.0.1:{port}/0")
        answer = await take(limits, ("agent:dev", 2, 60.0))
        assert answer.unavailable == "ProtocolError: not a RESP reply: b'HTTP/1.1 400 Bad Request'"
        assert await limits.ping() is False
        limits.close()
        nursery.cancel_scope.cancel()


async def test_a_credentials_change_announced_by_one_replica_is_heard_by_the_others_and_after_a_restart(
    redis_server: RedisServer,
) -> None:
    from lockgate.shells.shared_limits import CREDENTIALS_CHANGED, announce_change

    channel = f"{CREDENTIALS_CHANGED}:test{next(_prefixes)}"
    speaker, listener = store(redis_server), store(redis_server)
    heard = 0
    arrived = trio.Event()

    def note() -> None:
        nonlocal heard, arrived
        heard += 1
        arrived.set()

    async def heard_next() -> None:
        nonlocal arrived
        with trio.fail_after(10):
            await arrived.wait()
        arrived = trio.Event()

    async with trio.open_nursery() as nursery:
        await nursery.start(listener.follow, channel, note)
        await heard_next()  # subscribing counts as a change: what happened before it is looked at too
        await speaker.announce(channel)
        await heard_next()
        # Redis restarted: the listener subscribes again by itself, and hears the next announcement.
        redis_server.kill()
        redis_server.restart()
        await heard_next()
        with trio.fail_after(10):
            while heard < 4:
                await speaker.announce(channel)
                await trio.sleep(0.1)
        nursery.cancel_scope.cancel()
    speaker.close()
    listener.close()
    # A command (not a trio program) announces with redis-py; without GATEWAY_REDIS_URL it does nothing.
    announce_change({})
    announce_change({"GATEWAY_REDIS_URL": redis_server.url})


async def test_an_announcement_to_a_redis_that_is_away_is_dropped_quietly() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    limits = SharedLimits(f"redis://127.0.0.1:{port}/0", timeout=0.2)
    await limits.announce("lockgate:credentials-changed")  # no exception: the others poll the database anyway
    assert limits.reachable is False
    limits.close()
    from lockgate.shells.shared_limits import announce_change

    announce_change({"GATEWAY_REDIS_URL": f"redis://127.0.0.1:{port}/0"})
