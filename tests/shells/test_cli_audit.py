"""``lockgate user``, ``lockgate key`` and ``lockgate auth logout`` write each change they make to the gateway's audit log.

The changes run as real processes on a SQLite file, with ``LOGNAME`` set so
the operator is known (``local:auditor``); the refusals and the changes that
change nothing run the same command line in this process
(:func:`lockgate.shells.cli.main`), which spares a second of start-up each.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from lockgate.shells.cli import main

from .test_cli import COMMAND, REPO, clean_env

PASSWORD = "correct horse battery"
NEW_PASSWORD = "a new passphrase"
TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


class Ran(NamedTuple):
    returncode: int
    stdout: str
    stderr: str


def change(operation: str, target: str, operator: str = "local:auditor") -> dict[str, Any]:
    """The audit record of one change made from the command line, without its time."""
    return {
        "operation": operation,
        "decision": "ALLOW",
        "principal": operator,
        "role": "admin",
        "address": "cli",
        "target": target,
    }


def records(audit: Path) -> list[dict[str, Any]]:
    """Every record of the audit log, each checked to start with its time, then without it."""
    if not audit.exists():
        return []
    found = []
    for line in audit.read_text().splitlines():
        record = json.loads(line)
        assert list(record)[0] == "time" and TIME.fullmatch(record.pop("time")), line
        found.append(record)
    return found


class Files(NamedTuple):
    database: str
    audit: Path


@pytest.fixture
def files(tmp_path: Path) -> Files:
    return Files(f"sqlite:///{tmp_path / 'state' / 'lockgate.db'}", tmp_path / "audit" / "gateway.jsonl")


def lockgate(*args: str, files: Files, stdin: str | None = None, **extra: str) -> Ran:
    """``lockgate ARGS`` as a process on ``files``, run by ``auditor``; ``extra`` adds to its environment."""
    env = clean_env(GATEWAY_DATABASE_URL=files.database, GATEWAY_AUDIT_LOG=str(files.audit), LOGNAME="auditor")
    env.update(extra)
    result = subprocess.run(
        [*COMMAND, *args],
        cwd=REPO,
        env=env,
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return Ran(result.returncode, result.stdout, result.stderr)


@pytest.fixture
def in_process(files: Files, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Callable[..., Ran]:
    """``lockgate ARGS`` through :func:`lockgate.shells.cli.main` in this process, on ``files``, run by ``auditor``."""
    for name in [name for name in os.environ if name.startswith("GATEWAY_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("GATEWAY_DATABASE_URL", files.database)
    monkeypatch.setenv("GATEWAY_AUDIT_LOG", str(files.audit))
    monkeypatch.setenv("LOGNAME", "auditor")

    def run(*args: str, stdin: str = "") -> Ran:
        capsys.readouterr()
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        status = main(list(args))
        out, err = capsys.readouterr()
        return Ran(status, out, err)

    return run


def test_each_change_is_one_audit_record_and_no_secret_is_in_the_log(files: Files) -> None:
    def changed(*args: str, stdin: str | None = None) -> list[dict[str, Any]]:
        """The records ``lockgate ARGS`` added to the audit log; it must succeed."""
        before = len(records(files.audit))
        result = lockgate(*args, files=files, stdin=stdin)
        assert result.returncode == 0, result.stderr
        return records(files.audit)[before:]

    assert changed("user", "create", "alice", "--role", "admin", "--password-stdin", stdin=PASSWORD) == [
        change("create_user", "user:alice")
    ]
    assert changed("user", "create", "bob", "--password-stdin", stdin=PASSWORD) == [change("create_user", "user:bob")]
    assert changed("user", "disable", "bob") == [change("update_user", "user:bob")]
    assert changed("user", "enable", "bob") == [change("update_user", "user:bob")]
    assert changed("user", "passwd", "bob", "--password-stdin", stdin=NEW_PASSWORD) == [change("update_user", "user:bob")]
    assert changed("user", "role", "bob", "admin") == [change("update_user", "user:bob")]

    created = lockgate("key", "create", "ci", "--agents", "backend", "--user", "alice", files=files)
    secret = created.stdout.strip()
    assert created.returncode == 0 and secret.startswith("lg_"), created.stderr
    key_id = secret[3:11]
    assert records(files.audit)[-1] == change("create_key", f"key:{key_id}")
    as_json = json.loads(lockgate("key", "create", "lone", "--agents", "*", "--json", files=files).stdout)
    assert records(files.audit)[-1] == change("create_key", f"key:{as_json['key_id']}")
    assert changed("key", "revoke", key_id) == [change("revoke_key", f"key:{key_id}")]

    assert len(records(files.audit)) == 9
    logged = files.audit.read_text()
    for secret_text in (PASSWORD, NEW_PASSWORD, secret, secret[len("lg_12345678_"):], as_json["secret"]):
        assert secret_text not in logged


def test_a_refused_change_or_one_that_changes_nothing_writes_no_record(in_process: Callable[..., Ran], files: Files) -> None:
    assert in_process("user", "create", "alice", "--password-stdin", stdin=PASSWORD).returncode == 0
    assert in_process("user", "disable", "alice").returncode == 0
    key = in_process("key", "create", "ci", "--agents", "x").stdout.strip()
    assert in_process("key", "revoke", key[3:11]).returncode == 0
    assert [record["operation"] for record in records(files.audit)] == [
        "create_user", "update_user", "create_key", "revoke_key"
    ]
    files.audit.unlink()

    refused = [
        (["user", "create", "alice", "--password-stdin"], PASSWORD, 1),  # exists already
        (["user", "create", "carol", "--password-stdin"], "short", 2),  # the password is too short
        (["user", "create", "carol smith", "--password-stdin"], PASSWORD, 2),  # not a user name
        (["user", "disable", "nobody"], "", 1),
        (["user", "enable", "nobody"], "", 1),
        (["user", "passwd", "nobody", "--password-stdin"], PASSWORD, 1),
        (["user", "role", "nobody", "admin"], "", 1),
        (["key", "create", "ci", "--agents", "back*"], "", 2),  # not an agent grant
        (["key", "create", "ci", "--agents", "x", "--user", "nobody"], "", 1),
        (["key", "create", "ci", "--agents", "x", "--expires", "soon"], "", 2),
        (["key", "revoke", "ffffffff"], "", 1),
    ]
    for args, stdin, status in refused:
        result = in_process(*args, stdin=stdin)
        assert result.returncode == status and result.stderr.startswith("lockgate: error: "), (args, result)
    unchanged = [
        (["user", "disable", "alice"], "user alice was disabled already\n"),
        (["user", "role", "alice", "user"], "user alice has role user already\n"),
        (["key", "revoke", key[3:11]], f"key {key[3:11]} (ci) was revoked already\n"),
    ]
    for args, said in unchanged:
        assert in_process(*args).stdout == said
    assert in_process("user", "list", "--json").returncode == in_process("key", "list").returncode == 0
    assert not files.audit.exists()


def test_the_operator_is_unknown_when_the_system_cannot_name_them(
    in_process: Callable[..., Ran], files: Files, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_name() -> str:
        raise OSError("No username set in the environment")

    monkeypatch.setattr("getpass.getuser", no_name)
    assert in_process("user", "create", "alice", "--password-stdin", stdin=PASSWORD).returncode == 0
    assert records(files.audit) == [change("create_user", "user:alice", operator="local:unknown")]


def test_a_wrong_gateway_variable_refuses_the_change_before_it_is_made(files: Files) -> None:
    result = lockgate("user", "create", "alice", "--password-stdin", files=files, stdin=PASSWORD, GATEWAY_LOG_LEVEL="loud")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.splitlines() == [
        "lockgate: error: environment: GATEWAY_LOG_LEVEL: 'loud' is not a level: use debug, info, warning or error"
    ]
    assert lockgate("user", "list", "--json", files=files).stdout == "[]\n"
    assert not files.audit.exists()


def test_the_audit_log_is_where_the_gateway_writes_it_by_default(files: Files, tmp_path: Path) -> None:
    env = clean_env(GATEWAY_DATABASE_URL=files.database, LOGNAME="auditor")  # no GATEWAY_AUDIT_LOG
    result = subprocess.run(
        [*COMMAND, "user", "create", "alice", "--password-stdin"],
        cwd=tmp_path, env=env, input=PASSWORD, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert records(tmp_path / "logs" / "audit.jsonl") == [change("create_user", "user:alice")]
    assert not files.audit.exists()


def test_a_change_stands_when_its_audit_record_cannot_be_written(files: Files, tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    audit = tmp_path / "a-file" / "audit.jsonl"
    result = lockgate("user", "create", "alice", "--password-stdin", files=files, stdin=PASSWORD, GATEWAY_AUDIT_LOG=str(audit))
    assert result.returncode == 0
    assert result.stdout.splitlines()[0] == "created user alice (role user)"
    assert result.stderr.splitlines()[-2:] == [
        f"cannot open the audit log {audit}: File exists; serving without it",
        f"lockgate: warning: the change was made, but its audit record is not in {audit}",
    ]
    assert '"name": "alice"' in lockgate("user", "list", "--json", files=files).stdout


def test_auth_logout_is_one_audit_record_per_forgetting_and_none_when_nothing_was_stored(in_process: Callable[..., Ran], files: Files) -> None:
    import secrets

    from lockgate.shells.sealed import SecretBox
    from lockgate.shells.store import Store
    from lockgate.shells.store.oauth import GATEWAY, OAuthStore

    token = {"access_token": "an-access-token", "token_type": "Bearer"}
    with Store.open(files.database) as store:
        store.ensure_schema()
        oauth = OAuthStore(store, SecretBox(secrets.token_bytes(32)))
        for owner in (GATEWAY, "user:alice", "user:bob"):
            oauth.put_token("github", owner, token, scopes=[])
    assert in_process("auth", "logout", "github").returncode == 0
    assert in_process("auth", "logout", "github", "--principal", "user:alice").returncode == 0
    assert in_process("auth", "logout", "github").returncode == 1  # nothing left to forget: no record
    assert in_process("auth", "logout", "github", "--all").returncode == 0
    assert records(files.audit) == [
        change("oauth_logout", "oauth:github:gateway"),
        change("oauth_logout", "oauth:github:user:alice"),
        change("oauth_logout", "oauth:github:*"),
    ]
    assert "an-access-token" not in files.audit.read_text()
