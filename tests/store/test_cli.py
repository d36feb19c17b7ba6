"""``lockgate db``, ``user`` and ``key`` on SQLite and on PostgreSQL.

The flows a person goes through run as real processes (``.venv/bin/lockgate``,
a terminal for the password prompt); the many small refusals run the same
command line in this process (:func:`in_process`), which spares a second of
start-up each.
"""

from __future__ import annotations

import io
import json
import os
import pty
import select
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import pytest

from lockgate.shells.cli import main
from lockgate.shells.store import Store

from .helpers import everything_stored, open_upgraded
from .test_database import closed_port

LOCKGATE = str(Path(sys.executable).with_name("lockgate"))
PASSWORD = "correct horse battery"
NO_ADMIN = "no admin user yet: create one with lockgate user create NAME --role admin\n"


@pytest.fixture(autouse=True)
def _in_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test in a folder of its own: the changes' audit log (``./logs/audit.jsonl``) lands there."""
    monkeypatch.chdir(tmp_path)


def environ(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env.update(extra)
    return env


class Ran(NamedTuple):
    returncode: int
    stdout: str
    stderr: str


def lockgate(*args: str, database: str | None, stdin: str | None = None, env: dict[str, str] | None = None) -> Ran:
    """Run ``lockgate ARGS`` as a process on ``database`` (through GATEWAY_DATABASE_URL)."""
    extra = {} if database is None else {"GATEWAY_DATABASE_URL": database}
    result = subprocess.run(
        [LOCKGATE, *args],
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=env if env is not None else environ(**extra),
        timeout=60,
    )
    return Ran(result.returncode, result.stdout, result.stderr)


@pytest.fixture
def in_process(database_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Callable[..., Ran]:
    """``lockgate ARGS`` through :func:`lockgate.shells.cli.main` in this process, on ``database_url``."""
    for name in [name for name in os.environ if name.startswith("GATEWAY_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("GATEWAY_DATABASE_URL", database_url)

    def run(*args: str, stdin: str = "") -> Ran:
        capsys.readouterr()
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        status = main(list(args))
        out, err = capsys.readouterr()
        return Ran(status, out, err)

    return run


def one_error(result: Ran, status: int) -> str:
    """The one error line of a failed command (no traceback, nothing on stdout)."""
    assert result.returncode == status, result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("lockgate: error: "), result.stderr
    return lines[0].removeprefix("lockgate: error: ")


def test_the_first_run_leads_to_the_first_admin(database_url: str) -> None:
    status = lockgate("db", "status", database=database_url)
    assert status.returncode == 1
    assert "schema: no Lockgate schema yet (latest revision 0004)\nrun lockgate db upgrade" in status.stdout
    upgrade = lockgate("db", "upgrade", database=database_url)
    assert upgrade.returncode == 0, upgrade.stderr
    assert upgrade.stdout.startswith("upgraded the database schema (")
    assert upgrade.stdout.endswith(f"from an empty database to revision 0004\n{NO_ADMIN}")
    again = lockgate("db", "upgrade", database=database_url)
    assert again.returncode == 0 and "is current: revision 0004 (the latest)" in again.stdout
    status = lockgate("db", "status", database=database_url)
    assert status.returncode == 0
    assert status.stdout.endswith(f"schema: revision 0004 (the latest)\nusers: 0 (0 admin)\nkeys: 0 (0 revoked)\n{NO_ADMIN}")
    created = lockgate("user", "create", "alice", "--role", "admin", "--password-stdin", database=database_url, stdin=PASSWORD + "\n")
    assert (created.returncode, created.stdout, created.stderr) == (0, "created user alice (role admin)\n", "")
    status = lockgate("db", "status", "--json", database=database_url)
    report = json.loads(status.stdout)
    assert report["state"] == "current" and report["revision"] == report["latest"] == "0004"
    assert (report["users"], report["keys"], report["has_admin"]) == (1, 0, True)
    assert "password" not in status.stdout
    with open_upgraded(database_url) as store:
        assert store.verify_password("alice", PASSWORD).ok


def test_a_user_command_on_a_new_database_makes_the_schema_and_says_so(database_url: str) -> None:
    listed = lockgate("user", "list", database=database_url)
    assert listed.returncode == 0
    assert listed.stderr.startswith("lockgate: upgraded the database schema (") and "to revision 0004" in listed.stderr
    assert listed.stdout == "no users yet\n" + NO_ADMIN


def test_managing_users(database_url: str, in_process: Callable[..., Ran]) -> None:
    def run(*args: str, stdin: str = "") -> Ran:
        return in_process("user", *args, stdin=stdin)

    run("list")  # makes the schema, and says so once

    assert run("create", "alice", "--role", "admin", "--password-stdin", stdin=PASSWORD).returncode == 0
    bob = run("create", "bob", "--password-stdin", stdin=PASSWORD + "\nsecond line ignored\n")
    assert bob.stdout == "created user bob (role user)\n"
    assert one_error(run("create", "alice", "--password-stdin", stdin=PASSWORD), 1) == "user 'alice' exists already"
    assert one_error(run("create", "carol", "--password-stdin", stdin="short\n"), 2) == (
        "the password is too short: use at least 8 characters"
    )
    assert one_error(run("create", "carol", "--password-stdin", stdin=""), 2) == "no password on standard input"
    assert one_error(run("create", "carol"), 2) == (
        "no terminal to ask for the password: give it on standard input with --password-stdin"
    )
    assert "is not a user name" in one_error(run("create", "carol smith", "--password-stdin", stdin=PASSWORD), 2)
    assert run("create", "carol", "--role", "root", "--password-stdin", stdin=PASSWORD).returncode == 2

    lines = run("list").stdout.splitlines()
    assert lines[0].split() == ["NAME", "ROLE", "STATE", "CREATED", "LAST", "LOGIN"]
    assert [line.split()[:3] for line in lines[1:]] == [["alice", "admin", "enabled"], ["bob", "user", "enabled"]]

    assert run("disable", "bob").stdout == "disabled user bob: their password and keys no longer work\n"
    assert run("disable", "bob").stdout == "user bob was disabled already\n"
    assert run("role", "bob", "admin").stdout == "user bob now has role admin (was user)\n"
    assert run("role", "bob", "admin").stdout == "user bob has role admin already\n"
    assert run("passwd", "bob", "--password-stdin", stdin="a new passphrase\n").stdout == "changed the password of bob\n"
    with open_upgraded(database_url) as store:
        assert store.verify_password("bob", "a new passphrase").refusal == "user disabled"
    assert run("enable", "bob").stdout == "enabled user bob\n"
    assert run("enable", "bob").stdout == "user bob was enabled already\n"
    with open_upgraded(database_url) as store:
        assert store.verify_password("bob", "a new passphrase").ok
        assert store.verify_password("bob", PASSWORD).refusal == "wrong password"

    demoted = run("role", "alice", "user")
    assert demoted.stdout == "user alice now has role user (was admin)\n"  # bob is an admin now
    run("role", "bob", "user")
    listed = json.loads(run("list", "--json").stdout)
    assert [(u["name"], u["role"], u["disabled"]) for u in listed] == [("alice", "user", False), ("bob", "user", False)]
    assert listed[1]["last_login_at"] is not None and listed[0]["last_login_at"] is None
    assert datetime.fromisoformat(listed[0]["created_at"]).tzinfo is not None
    assert run("list").stdout.endswith(NO_ADMIN)

    for args in (("disable", "nobody"), ("enable", "nobody"), ("role", "nobody", "admin")):
        assert one_error(run(*args), 1) == "no user named 'nobody'"
    assert one_error(run("passwd", "nobody", "--password-stdin", stdin=PASSWORD), 1) == "no user named 'nobody'"


def test_the_password_prompt_asks_twice_on_the_terminal(database_url: str) -> None:
    def converse(*answers: str) -> tuple[int, str]:
        """Run ``user create alice`` on a terminal of its own, answering each prompt in turn."""
        pid, terminal = pty.fork()
        if pid == 0:  # the child: on the terminal, as a person would run it
            os.execve(LOCKGATE, [LOCKGATE, "user", "create", "alice", "--role", "admin"], environ(GATEWAY_DATABASE_URL=database_url))
        seen, pending, answered = b"", list(answers), 0
        try:
            while True:
                ready, _, _ = select.select([terminal], [], [], 60)
                assert ready, f"no answer from lockgate; it said: {seen!r}"
                try:
                    chunk = os.read(terminal, 4096)
                except OSError:  # the child left and closed the terminal
                    break
                if not chunk:
                    break
                seen += chunk
                # Answer each prompt once it is shown, not before: getpass
                # flushes what was typed ahead when it turns echo off.
                if pending and seen.count(b"Password for alice: ") + seen.count(b"Again: ") > answered:
                    os.write(terminal, pending.pop(0).encode() + b"\n")
                    answered += 1
        finally:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done == 0:  # still waiting for input: the test failed above
                os.kill(pid, signal.SIGKILL)
                _, status = os.waitpid(pid, 0)
            os.close(terminal)
        return os.waitstatus_to_exitcode(status), seen.decode(errors="replace").replace("\r\n", "\n")

    status, said = converse(PASSWORD, PASSWORD + "x")
    assert status == 2 and "Password for alice:" in said and "Again:" in said
    assert "lockgate: error: the two passwords differ; nothing was changed" in said
    status, said = converse(PASSWORD, PASSWORD)
    assert status == 0 and "created user alice (role admin)" in said
    assert PASSWORD not in said  # not echoed
    with open_upgraded(database_url) as store:
        assert store.verify_password("alice", PASSWORD).ok


def test_a_key_is_created_shown_once_listed_and_revoked(database_url: str) -> None:
    def run(*args: str) -> Ran:
        return lockgate("key", *args, database=database_url)

    lockgate("user", "create", "alice", "--role", "admin", "--password-stdin", database=database_url, stdin=PASSWORD)
    created = run("create", "ci", "--role", "user", "--agents", "backend, backend.*", "--expires", "30d", "--rate", "120/min", "--user", "alice")
    assert created.returncode == 0, created.stderr
    secret = created.stdout.strip()
    assert created.stdout == secret + "\n" and secret.startswith("lg_")  # the secret alone: KEY=$(lockgate key create ...)
    key_id = secret[3:11]
    first, second = created.stderr.splitlines()
    assert first.startswith(f"created key {key_id} (ci): role user; agents backend, backend.*; expires ")
    assert first.endswith(" UTC; rate 120/min; owner alice")
    assert second == "its secret follows, shown only now: Lockgate keeps only a hash of it, so store it safely"

    as_json = run("create", "lone", "--agents", "*", "--json")
    document = json.loads(as_json.stdout)
    lone_secret = document.pop("secret")
    assert document["key_id"] == lone_secret[3:11] and document["agents"] == ["*"] and document["user"] is None
    assert document["role"] == "user" and document["expires_at"] is None and document["state"] == "active"

    with open_upgraded(database_url) as store:
        found = store.lookup(secret)
        assert found is not None and found.key_id == key_id and found.agents == ("backend", "backend.*")
        assert found.expires_at is not None
        expected = datetime.now(UTC) + timedelta(days=30)
        assert abs(found.expires_at - expected) < timedelta(minutes=5)
        assert store.lookup(lone_secret) is not None

    listed = run("list")
    assert secret not in listed.stdout and lone_secret not in listed.stdout
    lines = listed.stdout.splitlines()
    assert lines[0].split()[:6] == ["KEY", "ID", "NAME", "ROLE", "AGENTS", "OWNER"]
    assert lines[1].split()[:5] == [key_id, "ci", "user", "backend,backend.*", "alice"]
    assert lines[2].split()[:6] == [document["key_id"], "lone", "user", "*", "-", "never"]
    assert all(" active  never" in line for line in lines[1:])  # STATE, then LAST USED

    assert run("revoke", key_id).stdout == f"revoked key {key_id} (ci)\n"
    assert run("revoke", key_id).stdout == f"key {key_id} (ci) was revoked already\n"
    assert one_error(run("revoke", "ffffffff"), 1) == "no key with id 'ffffffff'"
    keys = json.loads(run("list", "--json").stdout)
    assert [(k["key_id"], k["state"], k["revoked"]) for k in keys] == [(key_id, "revoked", True), (document["key_id"], "active", False)]
    assert all("secret" not in k and "secret_hash" not in k for k in keys)
    assert secret not in json.dumps(keys)

    # Disabling the owner stops the key; the list says so.
    lockgate("user", "disable", "alice", database=database_url)
    run("create", "again", "--agents", "x", "--user", "alice")
    assert "owner disabled" in run("list").stdout


BAD_KEYS = [
    (["--agents", "back*"], "'back*' is not an agent grant: use an agent id (backend), a subtree (backend.*) or * for every agent"),
    (["--agents", " , "], "a key needs at least one agent grant"),
    (["--agents", "x", "--expires", "soon"], "--expires 'soon' is not a span or a date: use a span from now (12h, 30d, 8w)"),
    (["--agents", "x", "--expires", "2001-01-01"], "the expiry 2001-01-01T00:00:00+00:00 is not in the future"),
    (["--agents", "x", "--rate", "fast"], "'fast' is not a rate: use COUNT/UNIT, such as 120/min"),
    (["--agents", "x", "--role", "admin", "--user", "bob"], "user 'bob' has role user: a key of theirs cannot have role admin"),
]


def test_bad_keys_are_refused_in_one_line(in_process: Callable[..., Ran]) -> None:
    in_process("user", "create", "bob", "--password-stdin", stdin=PASSWORD)
    for args, message in BAD_KEYS:
        assert one_error(in_process("key", "create", "ci", *args), 2).startswith(message), args
    assert one_error(in_process("key", "create", "ci", "--agents", "x", "--user", "nobody"), 1) == "no user named 'nobody'"
    assert in_process("key", "list", "--json").stdout == "[]\n"


def test_no_secret_or_password_from_the_cli_lands_in_the_database(database_url: str) -> None:
    lockgate("user", "create", "alice", "--role", "admin", "--password-stdin", database=database_url, stdin=PASSWORD)
    secrets = [lockgate("key", "create", f"k{i}", "--agents", "*", "--user", "alice", database=database_url).stdout.strip() for i in range(3)]
    assert all(secret.startswith("lg_") for secret in secrets)
    stored = "\n".join(everything_stored(database_url))
    assert "alice" in stored and "k2" in stored
    for secret in secrets:
        assert secret not in stored and secret[len("lg_12345678_"):] not in stored
    assert PASSWORD not in stored


def test_the_database_flag_wins_over_the_variable(database_url: str, tmp_path: Path) -> None:
    elsewhere = f"sqlite:///{tmp_path / 'other.db'}"
    lockgate("user", "create", "alice", "--password-stdin", "--database", elsewhere, database=database_url, stdin=PASSWORD)
    assert "alice" in lockgate("user", "list", "--database", elsewhere, database=database_url).stdout
    assert "alice" not in lockgate("user", "list", database=database_url).stdout


def test_the_default_database_is_a_file_in_the_state_folder(tmp_path: Path) -> None:
    env = environ(HOME=str(tmp_path / "home"))
    env.pop("XDG_STATE_HOME", None)
    result = lockgate("user", "create", "alice", "--role", "admin", "--password-stdin", database=None, stdin=PASSWORD, env=env)
    assert result.returncode == 0, result.stderr
    path = tmp_path / "home" / ".local" / "state" / "lockgate" / "lockgate.db"
    assert f"(SQLite file {path})" in result.stderr and path.is_file()
    env["GATEWAY_STATE_DIR"] = str(tmp_path / "state")
    lockgate("db", "upgrade", database=None, env=env)
    assert (tmp_path / "state" / "lockgate.db").is_file()


@pytest.mark.parametrize("command", [["db", "status"], ["user", "list"], ["key", "revoke", "ffffffff"]])
def test_an_unreachable_database_is_one_line_and_exit_2_without_the_password(command: list[str]) -> None:
    port = closed_port()
    url = f"postgresql://lockgate:hunter2secret@127.0.0.1:{port}/identity"
    for result in (lockgate(*command, "--database", url, database=None), lockgate(*command, database=url)):
        message = one_error(result, 2)
        assert message.startswith(f"cannot reach the database (PostgreSQL database 'identity' at 127.0.0.1:{port} as user 'lockgate'): ")
        assert "hunter2secret" not in result.stderr


def test_a_bad_url_is_one_line_and_exit_2() -> None:
    message = one_error(lockgate("user", "list", database="mysql://root:hunter2secret@db/lg"), 2)
    assert message == "database 'mysql' is not supported: use sqlite:///PATH or postgresql://…"


def test_help_lists_the_commands_and_does_not_load_the_database_code() -> None:
    top = lockgate("--help", database=None)
    for line in ("user ", "key ", "db "):
        assert f"\n    {line}" in top.stdout
    for command in (["user", "create"], ["key", "create"], ["db", "status"]):
        text = lockgate(*command, "--help", database=None).stdout
        assert "--database URL" in text and "GATEWAY_DATABASE_URL" in text
    probe = "import sys; from lockgate.shells.cli import build_parser; build_parser(); print('sqlalchemy' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=30, check=True)
    assert result.stdout.strip() == "False"


def test_a_command_is_required() -> None:
    for group in ("user", "key", "db"):
        result = lockgate(group, database=None)
        assert result.returncode == 2 and "required: COMMAND" in result.stderr


def test_the_store_sees_what_the_cli_did_without_reopening(database_url: str) -> None:
    with open_upgraded(database_url) as store:
        marker = store.change_marker()
        created = lockgate("key", "create", "ci", "--agents", "*", database=database_url)
        assert store.change_marker() != marker
        assert store.snapshot().lookup(created.stdout.strip()) is not None
        assert isinstance(store, Store)
