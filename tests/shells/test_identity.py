"""The credential cache: it follows the store's changes, and a store that stops answering fails closed."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timezone
from typing import Any, cast

import trio
import trio.testing

from lockgate.core import Principal, parse_rate
from lockgate.shells.identity import REFRESH, STALE, Identity, Refused, presented_credential
from lockgate.shells.store import KeyRecord, Snapshot, Store
from lockgate.shells.store.apikeys import new_key_id, new_secret, secret_hash

NOW = datetime(2026, 12, 1, tzinfo=timezone.utc)


class FakeStore:
    """A store that answers from a snapshot the test sets, or raises while it is ``down``."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot_now = snapshot
        self.down = False
        self.used: list[str] = []

    def change_marker(self) -> int:
        if self.down:
            raise OSError("connection refused")
        return self.snapshot_now.marker

    def snapshot(self) -> Snapshot:
        if self.down:
            raise OSError("connection refused")
        return self.snapshot_now

    def flush_last_used(self) -> int:
        return 0

    def touch_last_used(self, key_id: str, **_: Any) -> None:
        self.used.append(key_id)


def key(secret: str, key_id: str, **changes: Any) -> KeyRecord:
    record = KeyRecord(
        key_id=key_id, name="ci", role="user", agents=("backend", "backend.*"), user=None, owner_disabled=False,
        expires_at=None, rate="60/min", revoked=False, revoked_at=None, created_at=NOW, last_used_at=None,
        secret_hash=secret_hash(secret),
    )
    return replace(record, **changes)


def setup() -> tuple[FakeStore, Identity, str, KeyRecord, list[float]]:
    key_id = new_key_id()
    secret = new_secret(key_id)
    record = key(secret, key_id)
    store = FakeStore(Snapshot(marker=1, users={}, keys={key_id: record}, revoked_tokens=frozenset()))
    clock = [1000.0]
    identity = Identity(cast(Store, store), clock=lambda: NOW.timestamp(), monotonic=lambda: clock[0])
    return store, identity, secret, record, clock


def test_the_credential_of_a_request() -> None:
    assert presented_credential({"authorization": "Bearer abc"}) == "abc"
    assert presented_credential({"authorization": "bearer  abc "}) == "abc"
    assert presented_credential({"x-api-key": "lg_x"}) == "lg_x"
    assert presented_credential({"authorization": "Basic Zm9vOmJhcg==", "x-api-key": "k"}) == "k"
    assert presented_credential({"authorization": "Basic Zm9vOmJhcg=="}) is None
    assert presented_credential({}) is None


async def test_a_key_proves_its_principal_without_a_query() -> None:
    store, identity, secret, record, _ = setup()
    await identity.load()
    assert identity.authenticate(secret, 5.0) == Principal(
        id=record.principal_id, role="user", agents=("backend", "backend.*"), default_agent="backend",
        rate=parse_rate("60/min"),
    )
    assert store.used == [record.key_id]
    assert identity.authenticate(secret[:-2] + "zz", 5.0) == Refused(401, "unknown API key", record.principal_id)
    assert identity.authenticate("lg_nonsense", 5.0) == Refused(401, "malformed API key")
    assert identity.authenticate(None, 5.0) == Refused(401, "no credential")
    assert identity.authenticate("x" * 10_000, 5.0) == Refused(401, "credential too large")


async def test_expiry_moves_onto_the_core_clock() -> None:
    store, identity, secret, record, _ = setup()
    store.snapshot_now = replace(
        store.snapshot_now, keys={record.key_id: replace(record, expires_at=NOW.replace(hour=1))}
    )
    await identity.load()
    principal = identity.authenticate(secret, 100.0)
    assert isinstance(principal, Principal) and principal.expires == 100.0 + 3600


async def until(condition: Any) -> None:
    """Wait (real time: the refresh runs in a worker thread) until ``condition()`` holds, at most 10 s."""
    with trio.fail_after(10):
        while not condition():
            await trio.sleep(0.02)


async def test_a_revoke_is_seen_at_the_next_refresh() -> None:
    store, identity, secret, record, _ = setup()
    await identity.load()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(identity.keep_fresh)
        assert isinstance(identity.authenticate(secret, 0.0), Principal)
        store.snapshot_now = replace(
            store.snapshot_now, marker=2, keys={record.key_id: replace(record, revoked=True, revoked_at=NOW)}
        )
        await until(lambda: identity.authenticate(secret, 0.0) == Refused(401, "API key revoked", record.principal_id))
        nursery.cancel_scope.cancel()


async def test_a_store_that_stops_answering_fails_closed() -> None:
    store, identity, secret, _, clock = setup()
    await identity.load()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(identity.keep_fresh)
        store.down = True
        await trio.sleep(REFRESH * 3)  # failed reads: nothing fresh since
        # Still within STALE of the last good read: the snapshot is trusted.
        assert isinstance(identity.authenticate(secret, 0.0), Principal)
        clock[0] += STALE + 1
        assert identity.authenticate(secret, 0.0) == Refused(503, "credential store unavailable")
        assert not identity.available
        store.down = False
        # The next good read makes the snapshot fresh again.
        await until(lambda: isinstance(identity.authenticate(secret, 0.0), Principal))
        nursery.cancel_scope.cancel()


async def test_a_token_is_verified_once_and_still_expires_and_revokes() -> None:
    from lockgate.shells.auth import VerifiedCredential

    store, _, _, _, _ = setup()
    now = [NOW.timestamp()]
    calls: list[str] = []
    verified = VerifiedCredential(
        principal_id="delegated:t1", credential_id="jwt:t1", subject="key:parent", issuer="lockgate",
        role="user", agents=("backend",), expires_at=NOW.timestamp() + 60, chain=("key:parent",),
    )

    def verify(token: str, at: float) -> VerifiedCredential:
        calls.append(token)
        return verified

    identity = Identity(cast(Store, store), verify, clock=lambda: now[0], monotonic=lambda: 0.0)
    await identity.load()
    for _ in range(3):
        assert isinstance(identity.authenticate("a.b.c", 0.0), Principal)
    assert calls == ["a.b.c"]
    # Past its exp, the verifier is asked again (and here says the same: it has leeway, the cache has none).
    now[0] += 61
    assert isinstance(identity.authenticate("a.b.c", 0.0), Principal)
    assert calls == ["a.b.c", "a.b.c"]
    # Revoking an ancestor refuses it, cached or not.
    store.snapshot_now = replace(store.snapshot_now, marker=2, revoked_tokens=frozenset({"key:parent"}))
    await identity.load()
    assert identity.authenticate("a.b.c", 0.0) == Refused(401, "token revoked", "delegated:t1")


async def test_a_nudge_reads_the_store_at_once_not_at_the_next_poll(mock_clock: trio.testing.MockClock) -> None:
    import time

    store, identity, secret, record, _ = setup()
    await identity.load()
    reads: list[int] = []
    marker = store.change_marker

    def counted() -> int:
        reads.append(1)
        return marker()

    store.change_marker = counted  # type: ignore[method-assign]

    async def real_wait_until(condition: Any) -> None:
        # The trio clock stands still in this test, so wait on the wall clock, in a thread.
        for _ in range(500):
            if condition():
                return
            await trio.to_thread.run_sync(time.sleep, 0.02)
        raise AssertionError("not within 10 s")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(identity.keep_fresh)
        await trio.testing.wait_all_tasks_blocked()
        assert reads == []  # no poll is due: the clock has not moved
        store.snapshot_now = replace(
            store.snapshot_now, marker=2, keys={record.key_id: replace(record, revoked=True, revoked_at=NOW)}
        )
        identity.nudge()  # another replica announced a change
        await real_wait_until(lambda: identity.authenticate(secret, 0.0) == Refused(401, "API key revoked", record.principal_id))
        assert len(reads) == 1
        nursery.cancel_scope.cancel()
