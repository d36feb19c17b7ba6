"""Sealed Streamable HTTP session ids: what they carry, and every way one does not open."""

from __future__ import annotations

import base64
import logging
import re
import secrets
from pathlib import Path

import pytest

from lockgate.core import SessionRecord
from lockgate.shells.sealed import KeyRing, SecretBox, SecretKeyError, associated_data
from lockgate.shells.session_ids import MAX_ID_CHARACTERS, SessionClaims, SessionIds

RECORD = SessionRecord(
    protocol_version="2025-11-25", capabilities={"sampling": {}, "roots": {"listChanged": True}}, agent="dev", mode="aggregate",
)


def key() -> bytes:
    return secrets.token_bytes(32)


def text(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def ids(*keys: bytes, lifetime: float = 3600.0, clock: Clock | None = None) -> SessionIds:
    return SessionIds(KeyRing([SecretBox(k) for k in keys]), lifetime, clock or Clock())


def test_an_id_carries_the_sessions_record_principal_and_lifetime() -> None:
    clock = Clock()
    made = ids(key(), clock=clock)
    session_id, expires = made.mint(RECORD, "k1")
    assert expires == clock.now + 3600
    assert made.open(session_id) == SessionClaims(record=RECORD, principal_id="k1", created=clock.now, expires=expires)


def test_an_id_is_visible_ascii_short_and_never_the_same_twice() -> None:
    made = ids(key())
    minted = {made.mint(RECORD, None)[0] for _ in range(100)}
    assert len(minted) == 100
    for session_id in minted:
        # The spec: visible ASCII (0x21 to 0x7E) only; base64url without padding is a subset.
        assert re.fullmatch(r"[A-Za-z0-9_-]+", session_id)
        assert len(session_id) < 250
    small = SessionRecord(protocol_version="2025-11-25", capabilities={}, agent=None, mode="on_demand")
    assert len(made.mint(small, None)[0]) < 140


def test_another_gateway_with_the_same_key_opens_it() -> None:
    shared = key()
    session_id, _ = ids(shared).mint(RECORD, None)
    claims = ids(shared).open(session_id)
    assert claims is not None and claims.record == RECORD and claims.principal_id is None


@pytest.mark.parametrize("position", [0, 3, 10, 40, -1])
def test_a_changed_character_does_not_open(position: int) -> None:
    made = ids(key())
    session_id, _ = made.mint(RECORD, "k1")
    chars = list(session_id)
    chars[position] = "A" if chars[position] != "A" else "B"
    assert made.open("".join(chars)) is None


def test_another_spelling_of_the_same_bytes_does_not_open() -> None:
    # Base64 without padding leaves spare bits in the last character: only the id as minted opens,
    # or a deleted id would come back under another name.
    made = ids(key())
    for _ in range(20):
        session_id, _ = made.mint(RECORD, "k1")
        alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
        same_bytes = [
            session_id[:-1] + c for c in alphabet
            if c != session_id[-1] and base64.urlsafe_b64decode(session_id[:-1] + c + "=" * (-len(session_id) % 4))
            == base64.urlsafe_b64decode(session_id + "=" * (-len(session_id) % 4))
        ]
        assert same_bytes  # there are such spellings...
        assert all(made.open(other) is None for other in same_bytes)  # ...and none opens
        assert made.open(session_id) is not None


@pytest.mark.parametrize("forged", ["", "x", "not base64!", "a" * 10, "A" * 200, "a" * (MAX_ID_CHARACTERS + 1), "Zm9v", "é"])
def test_anything_else_does_not_open(forged: str) -> None:
    assert ids(key()).open(forged) is None


def test_an_id_of_another_key_does_not_open() -> None:
    session_id, _ = ids(key()).mint(RECORD, None)
    assert ids(key()).open(session_id) is None


def test_a_blob_sealed_under_the_key_for_another_place_does_not_open() -> None:
    # The secret key also seals OAuth tokens: none of those opens as a session id.
    shared = key()
    plain = [1, "2025-11-25", {}, None, None, "on_demand", 1, 2_000_000_000]
    blob = SecretBox(shared).seal(plain, associated_data("oauth-token", "server", ""))
    assert ids(shared).open(text(blob)) is None
    right = SecretBox(shared).seal(plain, associated_data("mcp-session"))
    assert ids(shared).open(text(right)) is not None


@pytest.mark.parametrize(
    "plain",
    [
        [2, "2025-11-25", {}, None, None, "on_demand", 1, 2_000_000_000],  # a later format
        [1, "1999-01-01", {}, None, None, "on_demand", 1, 2_000_000_000],  # a version this gateway does not speak
        [1, "2025-11-25", {}, None, None, "auto", 1, 2_000_000_000],  # never settled
        [1, "2025-11-25", [], None, None, "on_demand", 1, 2_000_000_000],
        [1, "2025-11-25", {}, 5, None, "on_demand", 1, 2_000_000_000],
        [1, "2025-11-25", {}, None, None, "on_demand", 1, "later"],
        {"v": 1},
    ],
)
def test_a_sealed_value_of_another_shape_does_not_open(plain: object) -> None:
    shared = key()
    blob = SecretBox(shared).seal(plain, associated_data("mcp-session"))
    assert ids(shared).open(text(blob)) is None


def test_an_expired_id_does_not_open() -> None:
    clock = Clock()
    made = ids(key(), lifetime=60, clock=clock)
    session_id, expires = made.mint(RECORD, None)
    clock.now = expires - 1
    assert made.open(session_id) is not None
    clock.now = expires
    assert made.open(session_id) is None


def test_rotation_opens_old_ids_under_the_old_key_and_seals_new_ones_under_the_new() -> None:
    old, new = key(), key()
    before, _ = ids(old).mint(RECORD, None)
    rotated = ids(new, old)
    assert rotated.open(before) is not None  # the overlap window
    after, _ = rotated.mint(RECORD, None)
    assert ids(new).open(after) is not None and ids(old).open(after) is None
    # The old key dropped: its ids no longer open.
    assert ids(new).open(before) is None


def test_an_id_ended_here_is_not_opened_again_here_before_it_expires() -> None:
    clock = Clock()
    shared = key()
    made = ids(shared, clock=clock)
    session_id, expires = made.mint(RECORD, None)
    made.ended(session_id, expires)
    assert made.open(session_id) is None
    assert ids(shared, clock=clock).open(session_id) is not None  # another gateway cannot know
    made.ended("garbage")  # not an id: nothing to remember
    assert "garbage" not in made._ended


def test_ended_ids_are_forgotten_once_expired() -> None:
    clock = Clock()
    made = ids(key(), lifetime=10, clock=clock)
    first, expires = made.mint(RECORD, None)
    made.ended(first, expires)
    clock.now = expires + 1
    for _ in range(1100):
        later, until = made.mint(RECORD, None)
        made.ended(later, until)
    assert first not in made._ended and len(made._ended) <= 1100


# -- the keys ------------------------------------------------------------------------


def test_the_session_key_variable_lists_the_current_key_then_older_ones(tmp_path: Path) -> None:
    new, old = key(), key()
    ring = KeyRing.for_sessions({"GATEWAY_SESSION_KEY": f"{text(new)}, {text(old)}=", "GATEWAY_STATE_DIR": str(tmp_path / "none")})
    assert ring is not None and ring.key_ids == [SecretBox(new).key_id, SecretBox(old).key_id]
    assert not (tmp_path / "none").exists()


def test_a_bad_session_key_names_its_position_and_never_the_key() -> None:
    good = text(key())
    with pytest.raises(SecretKeyError, match="key 2 is not") as caught:
        KeyRing.for_sessions({"GATEWAY_SESSION_KEY": f"{good},short"})
    assert good not in str(caught.value) and "short" not in str(caught.value)


def test_unset_it_is_the_secret_key(tmp_path: Path) -> None:
    secret = key()
    ring = KeyRing.for_sessions({"GATEWAY_SECRET_KEY": text(secret), "GATEWAY_STATE_DIR": str(tmp_path)})
    assert ring is not None and ring.key_ids == [SecretBox(secret).key_id]
    # A state folder that exists: its secret.key, made if missing.
    ring = KeyRing.for_sessions({"GATEWAY_STATE_DIR": str(tmp_path)})
    assert ring is not None and (tmp_path / "secret.key").exists()
    assert KeyRing.for_sessions({"GATEWAY_STATE_DIR": str(tmp_path)}).key_ids == ring.key_ids  # type: ignore[union-attr]


def test_with_no_key_anywhere_nothing_is_made_and_the_process_keeps_its_own(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    environ = {"GATEWAY_STATE_DIR": str(tmp_path / "absent")}
    assert KeyRing.for_sessions(environ) is None
    made = SessionIds.from_environ(environ, 60)
    with caplog.at_level(logging.INFO, logger="lockgate"):
        session_id, _ = made.mint(RECORD, None)
    assert made.open(session_id) is not None
    assert SessionIds.from_environ(environ, 60).open(session_id) is None
    assert "GATEWAY_SESSION_KEY" in caplog.text
    assert not (tmp_path / "absent").exists()


def test_a_key_ring_needs_a_key() -> None:
    with pytest.raises(ValueError):
        KeyRing([])
