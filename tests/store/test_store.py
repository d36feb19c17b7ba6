"""The store's API on SQLite and on PostgreSQL: users, passwords, keys, snapshots and the change marker."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from argon2 import PasswordHasher

from lockgate.shells.store import (
    Conflict,
    InvalidInput,
    NotFound,
    Store,
    parse_secret,
)
from lockgate.shells.store import passwords as password_module

from .helpers import everything_stored, open_upgraded

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
PASSWORD = "correct horse battery"


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    store = open_upgraded(database_url)
    yield store
    store.close()


# Users and passwords


def test_a_user_is_created_listed_and_read_back(store: Store) -> None:
    created = store.create_user("alice", "admin", PASSWORD, now=NOW)
    store.create_user("bob", "user", PASSWORD, now=NOW + timedelta(minutes=1))
    assert created.name == "alice" and created.role == "admin" and not created.disabled
    assert created.created_at == NOW and created.created_at.tzinfo is UTC
    assert created.last_login_at is None
    assert created.principal_id == "user:alice"
    assert [user.name for user in store.list_users()] == ["alice", "bob"]
    assert store.get_user("bob").role == "user"
    with pytest.raises(NotFound, match="no user named 'carol'"):
        store.get_user("carol")


def test_a_duplicate_user_is_refused_and_the_first_is_kept(store: Store) -> None:
    store.create_user("alice", "admin", PASSWORD)
    with pytest.raises(Conflict, match="user 'alice' exists already"):
        store.create_user("alice", "user", "another password")
    assert [(u.name, u.role) for u in store.list_users()] == [("alice", "admin")]
    assert store.verify_password("alice", PASSWORD).ok


@pytest.mark.parametrize(
    ("name", "role", "password", "message"),
    [
        ("bad name", "user", PASSWORD, "is not a user name"),
        ("", "user", PASSWORD, "is not a user name"),
        ("x" * 65, "user", PASSWORD, "is not a user name"),
        ("alice", "root", PASSWORD, "'root' is not a role: use admin or user"),
        ("alice", "user", "short", "too short: use at least 8"),
        ("alice", "user", "x" * 1025, "too long"),
    ],
)
def test_bad_users_are_refused(store: Store, name: str, role: str, password: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        store.create_user(name, role, password)
    assert store.list_users() == []


def test_the_right_password_logs_in_and_records_the_time(store: Store) -> None:
    store.create_user("alice", "user", PASSWORD, now=NOW)
    result = store.verify_password("alice", PASSWORD, now=NOW + timedelta(hours=1))
    assert result.ok and result.refusal is None and result.user is not None
    assert result.user.last_login_at == NOW + timedelta(hours=1)
    assert store.get_user("alice").last_login_at == NOW + timedelta(hours=1)


def test_a_wrong_password_or_an_unknown_user_fails_and_says_why(store: Store) -> None:
    store.create_user("alice", "user", PASSWORD)
    wrong = store.verify_password("alice", PASSWORD + "!")
    assert not wrong.ok and wrong.user is None and wrong.refusal == "wrong password"
    unknown = store.verify_password("nobody", PASSWORD)
    assert not unknown.ok and unknown.refusal == "unknown user"
    assert store.verify_password("alice", "x" * 5000).refusal == "wrong password"
    assert store.get_user("alice").last_login_at is None


def test_a_disabled_user_fails_even_with_the_right_password(store: Store) -> None:
    store.create_user("alice", "user", PASSWORD)
    assert store.set_disabled("alice", True).disabled
    result = store.verify_password("alice", PASSWORD)
    assert not result.ok and result.refusal == "user disabled"
    assert store.get_user("alice").last_login_at is None
    assert not store.set_disabled("alice", False).disabled
    assert store.verify_password("alice", PASSWORD).ok


def test_a_password_is_changed(store: Store) -> None:
    store.create_user("alice", "user", PASSWORD)
    store.set_password("alice", "a new passphrase")
    assert store.verify_password("alice", "a new passphrase").ok
    assert store.verify_password("alice", PASSWORD).refusal == "wrong password"
    with pytest.raises(InvalidInput, match="too short"):
        store.set_password("alice", "short")
    with pytest.raises(NotFound):
        store.set_password("nobody", "a new passphrase")


def test_a_hash_made_with_old_parameters_is_replaced_at_login(store: Store) -> None:
    store.create_user("alice", "user", PASSWORD)
    weak = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash(PASSWORD)
    from sqlalchemy import update

    from lockgate.shells.store.schema import users

    with store._engine.begin() as connection:  # what an older Lockgate would have stored
        connection.execute(update(users).values(password_hash=weak))
    assert store.verify_password("alice", PASSWORD).ok
    with store._engine.connect() as connection:
        rehashed = connection.execute(users.select()).one().password_hash
    assert rehashed != weak and not password_module.needs_rehash(rehashed)
    assert store.verify_password("alice", PASSWORD).ok


def test_roles_and_has_admin(store: Store) -> None:
    assert not store.has_admin()
    store.create_user("bob", "user", PASSWORD)
    assert not store.has_admin()
    store.create_user("alice", "admin", PASSWORD)
    assert store.has_admin()
    store.set_disabled("alice", True)
    assert not store.has_admin()  # a disabled admin manages nothing
    store.set_disabled("alice", False)
    assert store.set_role("alice", "user").role == "user"
    assert not store.has_admin()
    assert store.set_role("bob", "admin").role == "admin"
    assert store.has_admin()
    with pytest.raises(InvalidInput):
        store.set_role("bob", "superuser")
    with pytest.raises(NotFound):
        store.set_role("nobody", "admin")


# Keys


def test_a_key_is_created_and_found_by_its_secret(store: Store) -> None:
    record, secret = store.create_key(
        "ci", role="user", agents=["backend", "backend.*"], rate="120/minute", now=NOW
    )
    parsed = parse_secret(secret)
    assert parsed is not None and parsed.key_id == record.key_id
    assert secret.startswith(f"lg_{record.key_id}_") and len(secret) == 55
    assert record.name == "ci" and record.role == "user" and record.agents == ("backend", "backend.*")
    assert record.rate == "120/min"  # written the one way
    assert record.expires_at is None and record.user is None and not record.revoked
    assert record.created_at == NOW and record.principal_id == f"key:{record.key_id}"
    assert record.state(NOW) == "active"
    assert store.lookup(secret) == record
    assert store.get_key(record.key_id) == record
    assert [key.key_id for key in store.list_keys()] == [record.key_id]
    assert secret not in repr(record) and record.secret_hash not in repr(record)


def test_two_keys_never_share_an_id_or_a_secret(store: Store) -> None:
    made = [store.create_key(f"k{i}", role="user", agents=["*"]) for i in range(20)]
    assert len({record.key_id for record, _ in made}) == 20
    assert len({secret for _, secret in made}) == 20
    for record, secret in made:
        assert store.lookup(secret) == record


def test_a_wrong_or_malformed_secret_finds_nothing(store: Store) -> None:
    record, secret = store.create_key("ci", role="user", agents=["*"])
    last = "A" if secret[-1] != "A" else "B"
    other_id = "0" * 8 if record.key_id != "0" * 8 else "1" * 8
    for candidate in (
        secret[:-1] + last,  # one character off
        secret.replace(record.key_id, other_id),  # another key's id
        secret[:-1],  # truncated
        secret + "x",  # too long
        secret.upper(),
        "",
        "lg_",
        f"lg_{record.key_id}_" + "!" * 43,
        "Bearer " + secret,
        "x" * 100_000,
    ):
        assert store.lookup(candidate) is None


def test_an_expired_key_is_found_and_says_it_is_expired(store: Store) -> None:
    record, secret = store.create_key("ci", role="user", agents=["*"], expires_at=NOW + timedelta(days=1), now=NOW)
    found = store.lookup(secret)
    assert found is not None and found.expires_at == NOW + timedelta(days=1)
    assert found.state(NOW + timedelta(hours=23)) == "active"
    assert found.state(NOW + timedelta(days=1)) == "expired"


def test_a_revoked_key_is_found_and_says_it_is_revoked(store: Store) -> None:
    record, secret = store.create_key("ci", role="user", agents=["*"], now=NOW)
    assert store.revoke_key(record.key_id, now=NOW + timedelta(minutes=5))
    assert not store.revoke_key(record.key_id)  # once is enough
    found = store.lookup(secret)
    assert found is not None and found.revoked and found.revoked_at == NOW + timedelta(minutes=5)
    assert found.state(NOW) == "revoked"
    with pytest.raises(NotFound, match="no key with id 'ffffffff'"):
        store.revoke_key("ffffffff")


def test_a_key_follows_its_owner(store: Store) -> None:
    store.create_user("alice", "admin", PASSWORD)
    record, secret = store.create_key("ci", role="admin", agents=["*"], user="alice")
    assert record.user == "alice" and record.role == "admin"
    store.set_role("alice", "user")
    found = store.lookup(secret)
    assert found is not None and found.role == "user"  # never more than its owner
    store.set_disabled("alice", True)
    found = store.lookup(secret)
    assert found is not None and found.state(datetime.now(UTC)) == "owner disabled"
    with pytest.raises(InvalidInput, match="user 'alice' has role user: a key of theirs cannot have role admin"):
        store.create_key("more", role="admin", agents=["*"], user="alice")
    with pytest.raises(NotFound, match="no user named 'nobody'"):
        store.create_key("ci", role="user", agents=["*"], user="nobody")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"name": " "}, "a key name is 1 to 128 printable characters"),
        ({"name": "a\nb"}, "printable"),
        ({"role": "owner"}, "'owner' is not a role"),
        ({"agents": []}, "at least one agent grant"),
        ({"agents": [" ", ""]}, "at least one agent grant"),
        ({"agents": ["back*"]}, "'back\\*' is not an agent grant"),
        ({"agents": ["ok", "bad id"]}, "'bad id' is not an agent grant"),
        ({"rate": "lots"}, "'lots' is not a rate"),
        ({"rate": "0/min"}, "is not a rate"),
        ({"expires_at": NOW}, "is not in the future"),
        ({"expires_at": NOW - timedelta(days=1)}, "is not in the future"),
    ],
)
def test_bad_keys_are_refused(store: Store, change: dict[str, object], message: str) -> None:
    arguments: dict[str, object] = {"name": "ci", "role": "user", "agents": ["*"], "now": NOW, **change}
    with pytest.raises(InvalidInput, match=message):
        store.create_key(**arguments)  # type: ignore[arg-type]
    assert store.list_keys() == []


def test_last_use_is_written_in_batches(store: Store) -> None:
    first, _ = store.create_key("a", role="user", agents=["*"], now=NOW)
    second, _ = store.create_key("b", role="user", agents=["*"], now=NOW)
    marker = store.change_marker()
    store.touch_last_used(first.key_id, when=NOW + timedelta(seconds=2))
    store.touch_last_used(first.key_id, when=NOW + timedelta(seconds=1))  # an older one arriving late
    store.touch_last_used(second.key_id, when=NOW + timedelta(seconds=3))
    assert store.get_key(first.key_id).last_used_at is None  # not yet written
    assert store.flush_last_used() == 2
    assert store.flush_last_used() == 0
    assert store.get_key(first.key_id).last_used_at == NOW + timedelta(seconds=2)
    assert store.get_key(second.key_id).last_used_at == NOW + timedelta(seconds=3)
    assert store.change_marker() == marker  # use is not a change


# What gateways cache


def test_the_change_marker_moves_with_every_change_and_only_then(store: Store) -> None:
    seen = [store.change_marker()]

    def moved() -> bool:
        seen.append(store.change_marker())
        return seen[-1] != seen[-2]

    store.create_user("alice", "admin", PASSWORD)
    assert moved()
    record, _ = store.create_key("ci", role="user", agents=["*"], user="alice")
    assert moved()
    store.revoke_key(record.key_id)
    assert moved()
    store.revoke_key(record.key_id)
    assert not moved()
    store.set_disabled("alice", True)
    assert moved()
    store.set_role("alice", "user")
    assert moved()
    store.revoke_token("token-1")
    assert moved()
    store.revoke_token("token-1")
    assert not moved()
    store.verify_password("alice", PASSWORD)
    assert not moved()
    with pytest.raises(Conflict):
        store.create_user("alice", "admin", PASSWORD)
    assert not moved()  # a refused change changes nothing
    with pytest.raises(NotFound):
        store.set_role("nobody", "admin")
    assert not moved()


def test_a_snapshot_holds_every_user_key_and_revoked_token_and_no_secret(store: Store) -> None:
    store.create_user("alice", "admin", PASSWORD, now=NOW)
    store.create_user("bob", "user", PASSWORD, now=NOW)
    alice_key, alice_secret = store.create_key("ci", role="admin", agents=["*"], user="alice", now=NOW)
    lone_key, lone_secret = store.create_key("lone", role="user", agents=["backend"], now=NOW)
    store.revoke_key(lone_key.key_id, now=NOW)
    store.revoke_token("jti-1", now=NOW)
    snapshot = store.snapshot()
    assert snapshot.marker == store.change_marker()
    assert set(snapshot.users) == {"alice", "bob"} and snapshot.users["bob"] == store.get_user("bob")
    assert snapshot.keys == {alice_key.key_id: alice_key, lone_key.key_id: store.get_key(lone_key.key_id)}
    assert snapshot.revoked_tokens == frozenset({"jti-1"}) == store.revoked_tokens()
    # The cache answers as the database does, without it.
    assert snapshot.lookup(alice_secret) == store.lookup(alice_secret) == alice_key
    found = snapshot.lookup(lone_secret)
    assert found is not None and found.state(NOW) == "revoked"
    assert snapshot.lookup(alice_secret[:-1] + "?") is None and snapshot.lookup("nonsense") is None
    text = repr(snapshot)
    assert alice_secret not in text and lone_secret not in text and "argon2" not in text and "secret_hash" not in text
    assert alice_key.matches(alice_secret) and not alice_key.matches(lone_secret)


def test_no_secret_or_password_lands_in_the_database(store: Store, database_url: str) -> None:
    store.create_user("alice", "admin", PASSWORD)
    store.set_password("alice", "the second passphrase")
    secrets = [store.create_key(f"k{i}", role="user", agents=["*"])[1] for i in range(3)]
    store.verify_password("alice", "the second passphrase")
    store.close()
    stored = "\n".join(everything_stored(database_url))
    assert "alice" in stored  # the scan sees the rows
    for secret in secrets:
        assert secret not in stored
        assert secret[len("lg_12345678_"):] not in stored  # not even the random part
    assert PASSWORD not in stored and "the second passphrase" not in stored


def test_the_store_is_used_from_many_threads_at_once(store: Store) -> None:
    made = [store.create_key(f"k{i}", role="user", agents=["*"]) for i in range(4)]
    problems: list[BaseException] = []

    def work(index: int) -> None:
        try:
            for _ in range(10):
                record, secret = made[index % len(made)]
                assert store.lookup(secret) == record
                store.touch_last_used(record.key_id)
                store.snapshot()
            store.revoke_token(f"t{index}")
        except BaseException as exc:  # reported below, with the thread's failure
            problems.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert problems == []
    assert store.flush_last_used() == 4
    assert store.revoked_tokens() == frozenset(f"t{i}" for i in range(8))


def test_two_stores_on_one_database_see_each_others_changes(store: Store, database_url: str) -> None:
    other = Store.open(database_url)
    try:
        marker = other.change_marker()
        record, secret = store.create_key("ci", role="user", agents=["*"])
        assert other.change_marker() != marker
        assert other.lookup(secret) == record
        store.revoke_key(record.key_id)
        found = other.snapshot().lookup(secret)
        assert found is not None and found.revoked
    finally:
        other.close()
