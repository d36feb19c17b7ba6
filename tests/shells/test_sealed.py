"""Sealed values: they open only under their key, unchanged, for their place; the key from the variable or a private file."""

from __future__ import annotations

import base64
import os
import secrets
import stat
from pathlib import Path

import pytest

from lockgate.shells.sealed import (
    KEY_FILE,
    KEY_VARIABLE,
    MAX_VALUE_BYTES,
    SecretBox,
    SecretKeyError,
    UnsealError,
    associated_data,
    key_from_environ,
)

TOKEN = {"access_token": "at-9f8e7d6c5b4a", "refresh_token": "rt-0a1b2c3d4e5f", "token_type": "Bearer", "expires_in": 3600}
SECRET_TEXTS = ("at-9f8e7d6c5b4a", "rt-0a1b2c3d4e5f")
HERE = associated_data("oauth-token", "github", "user:alice")


def new_box() -> SecretBox:
    return SecretBox(secrets.token_bytes(32))


def encoded(key: bytes) -> str:
    return base64.urlsafe_b64encode(key).decode().rstrip("=")


def assert_says_nothing_secret(message: str, *more: str) -> None:
    for text in (*SECRET_TEXTS, *more):
        assert text not in message


def test_a_value_opens_as_it_was_sealed_and_each_seal_differs() -> None:
    box = new_box()
    blob = box.seal(TOKEN, HERE)
    assert box.open(blob, HERE) == TOKEN
    assert box.seal(TOKEN, HERE) != blob  # a fresh nonce each time
    assert all(text.encode() not in blob for text in SECRET_TEXTS)
    for value in ([1, "two", None], "text", 3, {"nested": {"ü": [True]}}):
        assert box.open(box.seal(value, HERE), HERE) == value
    # The version byte and the key id lead the blob.
    assert blob[0] == 1 and blob[1:5].hex() == box.key_id


def test_another_key_does_not_open_it() -> None:
    blob = new_box().seal(TOKEN, HERE)
    with pytest.raises(UnsealError, match="sealed under another secret key") as raised:
        new_box().open(blob, HERE)
    assert_says_nothing_secret(str(raised.value))


def test_another_key_with_the_same_id_still_does_not_open_it() -> None:
    # Were the key ids to collide, authentication still fails: the id is a hint, not a check.
    sealer, other = new_box(), new_box()
    blob = sealer.seal(TOKEN, HERE)
    forged = blob[:1] + bytes.fromhex(other.key_id) + blob[5:]
    with pytest.raises(UnsealError, match="does not open"):
        other.open(forged, HERE)


def test_every_changed_byte_is_refused() -> None:
    box = new_box()
    blob = box.seal(TOKEN, HERE)
    for position in range(len(blob)):
        tampered = bytearray(blob)
        tampered[position] ^= 0x01
        with pytest.raises(UnsealError) as raised:
            box.open(bytes(tampered), HERE)
        assert_says_nothing_secret(str(raised.value))
    for cut in (blob[:-1], blob[:20], b"", blob + b"\0"):
        with pytest.raises(UnsealError):
            box.open(cut, HERE)


def test_another_place_does_not_open_it() -> None:
    box = new_box()
    blob = box.seal(TOKEN, HERE)
    for elsewhere in (
        associated_data("oauth-token", "github", "user:bob"),
        associated_data("oauth-token", "gitlab", "user:alice"),
        associated_data("oauth-token", "github", ""),
        associated_data("oauth-client", "github", "user:alice"),
        # The same characters, split differently between the parts.
        associated_data("oauth-token", "githu", "buser:alice"),
    ):
        with pytest.raises(UnsealError, match="altered, or sealed for another place"):
            box.open(blob, elsewhere)


def test_an_unknown_version_is_refused_by_name() -> None:
    box = new_box()
    blob = box.seal(TOKEN, HERE)
    with pytest.raises(UnsealError, match="format version 2, which this Lockgate does not know"):
        box.open(b"\x02" + blob[1:], HERE)


def test_the_place_is_nul_separated_and_refuses_a_nul() -> None:
    assert associated_data("oauth-token", "srv", "") == b"oauth-token\0srv\0"
    assert associated_data("oauth-token", "srv", "user:alice") == b"oauth-token\0srv\0user:alice"
    with pytest.raises(ValueError, match="NUL"):
        associated_data("oauth-token", "a\0b", "")
    with pytest.raises(ValueError, match="must not be empty"):
        associated_data("")


def test_only_small_json_values_are_sealed_and_the_error_does_not_quote_them() -> None:
    box = new_box()
    with pytest.raises(ValueError, match="only JSON values can be sealed: this set is not one") as raised:
        box.seal({"at-9f8e7d6c5b4a"}, HERE)
    assert_says_nothing_secret(str(raised.value))
    with pytest.raises(ValueError, match="only JSON values"):
        box.seal({"x": float("nan")}, HERE)
    with pytest.raises(ValueError, match=f"at most {MAX_VALUE_BYTES} bytes"):
        box.seal("x" * MAX_VALUE_BYTES, HERE)


def test_a_key_of_the_wrong_length_is_refused() -> None:
    with pytest.raises(ValueError, match="a secret key is 32 bytes, not 16"):
        SecretBox(b"k" * 16)


def test_the_box_does_not_show_its_key() -> None:
    key = secrets.token_bytes(32)
    box = SecretBox(key)
    assert repr(box) == f"SecretBox(key id {box.key_id})"
    for form in (key.hex(), encoded(key)):
        assert form not in repr(box)


def test_the_variable_gives_the_key(tmp_path: Path) -> None:
    key = secrets.token_bytes(32)
    environ = {KEY_VARIABLE: f"  {encoded(key)}\n", "GATEWAY_STATE_DIR": str(tmp_path / "state")}
    assert key_from_environ(environ) == key
    assert key_from_environ({**environ, KEY_VARIABLE: encoded(key) + "="}) == key
    blob = SecretBox.from_environ(environ).seal(TOKEN, HERE)
    assert SecretBox(key).open(blob, HERE) == TOKEN
    # With the variable set, no key file is made.
    assert not (tmp_path / "state").exists()


@pytest.mark.parametrize(
    "given",
    [
        "c2hvcnQ",  # base64url, but of 5 bytes
        encoded(b"k" * 31),
        encoded(b"k" * 33),
        "+" * 43,  # base64, not base64url
        "not a key at all, just a sentence of words",
        "é" * 43,
    ],
)
def test_a_bad_variable_is_refused_naming_it_and_not_quoting_it(given: str, tmp_path: Path) -> None:
    with pytest.raises(SecretKeyError) as raised:
        key_from_environ({KEY_VARIABLE: given, "GATEWAY_STATE_DIR": str(tmp_path)})
    message = str(raised.value)
    assert message.startswith(f"{KEY_VARIABLE} must be 32 bytes in base64url, 43 characters, and it is not")
    assert "make one with: python3 -c" in message
    assert given not in message
    assert list(tmp_path.iterdir()) == []


def test_the_key_file_is_made_private_on_first_use_and_kept(tmp_path: Path) -> None:
    state = tmp_path / "deep" / "state"
    environ = {"GATEWAY_STATE_DIR": str(state)}
    first = key_from_environ(environ)
    path = state / KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert len(first) == 32
    assert path.read_text().strip() == encoded(first)
    assert sorted(p.name for p in state.iterdir()) == [KEY_FILE]  # nothing left aside
    assert key_from_environ(environ) == first
    blob = SecretBox.from_environ(environ).seal(TOKEN, HERE)
    assert SecretBox.from_environ(environ).open(blob, HERE) == TOKEN


def test_an_existing_state_folder_keeps_its_mode(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o750)
    os.chmod(state, 0o750)
    key_from_environ({"GATEWAY_STATE_DIR": str(state)})
    assert stat.S_IMODE(state.stat().st_mode) == 0o750
    assert stat.S_IMODE((state / KEY_FILE).stat().st_mode) == 0o600


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o644, 0o610])
def test_a_key_file_others_may_use_is_refused_with_the_fix(mode: int, tmp_path: Path) -> None:
    environ = {"GATEWAY_STATE_DIR": str(tmp_path)}
    key = key_from_environ(environ)
    path = tmp_path / KEY_FILE
    os.chmod(path, mode)
    with pytest.raises(SecretKeyError) as raised:
        key_from_environ(environ)
    message = str(raised.value)
    assert message == (
        f"{path} holds the secret key that seals OAuth tokens, but users other than its owner may use it "
        f"(mode {mode:04o}); run: chmod 600 {path}"
    )
    assert encoded(key) not in message
    os.chmod(path, 0o600)
    assert key_from_environ(environ) == key


def test_a_key_file_without_a_key_is_refused_without_quoting_it(tmp_path: Path) -> None:
    path = tmp_path / KEY_FILE
    path.write_text("hunter2-is-not-a-key\n")
    os.chmod(path, 0o600)
    with pytest.raises(SecretKeyError, match="does not hold a secret key") as raised:
        key_from_environ({"GATEWAY_STATE_DIR": str(tmp_path)})
    assert "hunter2" not in str(raised.value)
    assert str(path) in str(raised.value)


def test_a_state_folder_that_cannot_be_made_is_one_clear_error(tmp_path: Path) -> None:
    # A file where the folder should be: refused as well when running as root.
    in_the_way = tmp_path / "state"
    in_the_way.write_text("")
    with pytest.raises(SecretKeyError, match=f"^cannot keep the secret key that seals OAuth tokens in {in_the_way / KEY_FILE}: "):
        key_from_environ({"GATEWAY_STATE_DIR": str(in_the_way)})
