"""``lockgate auth status`` and ``logout`` on SQLite and PostgreSQL: whose tokens for which server, never a token."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from lockgate.shells.sealed import KEY_FILE, SecretBox
from lockgate.shells.store.oauth import GATEWAY, OAuthStore

from .helpers import open_upgraded
from .test_cli import Ran, _in_tmp_path, environ, in_process, lockgate, one_error

__all__ = ["_in_tmp_path", "in_process"]  # fixtures, used by name

ACCESS, REFRESH = "at-5e4d3c2b1a09", "rt-9a8b7c6d5e4f"
SECRETS = (ACCESS, REFRESH)
NOW = datetime.now(UTC).replace(second=0, microsecond=0)
PAST, FUTURE = NOW - timedelta(hours=1), NOW + timedelta(days=30)


def when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def store_tokens(url: str) -> None:
    """Three tokens: github's gateway-wide one and alice's, and an expired one of a key's for atlassian."""
    with open_upgraded(url) as store:
        oauth = OAuthStore(store, SecretBox(secrets.token_bytes(32)))
        value = {"access_token": ACCESS, "refresh_token": REFRESH, "token_type": "Bearer"}
        oauth.put_token("github", GATEWAY, value, scopes=["repo", "read:org"], expires_at=FUTURE)
        oauth.put_token("github", "user:alice", value, scopes=[])
        oauth.put_token("atlassian", "key:3f9a1c2b", value, scopes=["read"], expires_at=PAST)


def no_secret(result: Ran) -> None:
    for text in SECRETS:
        assert text not in result.stdout and text not in result.stderr


def test_help_describes_the_three_commands() -> None:
    top = lockgate("--help", database=None)
    assert top.returncode == 0 and "OAuth tokens held for downstream servers: login, status, logout" in " ".join(top.stdout.split())
    auth = lockgate("auth", "--help", database=None)
    assert auth.returncode == 0
    for words in ("status", "list the stored tokens", "logout", "forget the stored tokens of a server", "never a token"):
        assert words in auth.stdout
    status = lockgate("auth", "status", "--help", database=None)
    assert "--json" in status.stdout and "--database URL" in status.stdout
    logout = lockgate("auth", "logout", "--help", database=None)
    for option in ("SERVER", "--principal ID", "--all", "--database URL", "gateway-wide token by default"):
        assert option in logout.stdout
    login = lockgate("auth", "login", "--help", database=None)
    for option in ("SERVER", "--principal ID", "--no-browser", "--timeout SECONDS", "--config FILE", "--database URL"):
        assert option in login.stdout
    bare = lockgate("auth", database=None)
    assert bare.returncode == 2 and "required: COMMAND" in bare.stderr


def test_status_lists_whose_tokens_for_which_server(database_url: str, in_process: Callable[..., Ran]) -> None:
    assert in_process("auth", "status").stdout == "no OAuth tokens stored\n"
    assert json.loads(in_process("auth", "status", "--json").stdout) == []
    store_tokens(database_url)
    result = in_process("auth", "status")
    assert result.returncode == 0 and result.stderr == ""
    assert result.stdout.splitlines() == [
        "SERVER     WHOSE         SCOPES         EXPIRES",
        f"atlassian  key:3f9a1c2b  read           {when(PAST)} (expired)",
        f"github     gateway       repo read:org  {when(FUTURE)}",
        "github     user:alice    -              never",
    ]
    no_secret(result)


def test_status_as_json_carries_metadata_only(database_url: str, in_process: Callable[..., Ran]) -> None:
    store_tokens(database_url)
    result = in_process("auth", "status", "--json")
    assert result.returncode == 0
    no_secret(result)
    listed = json.loads(result.stdout)
    for entry in listed:
        assert set(entry) == {"server", "whose", "principal", "scopes", "expires_at", "expired", "updated_at"}
        datetime.fromisoformat(entry.pop("updated_at"))
    assert listed == [
        {"server": "atlassian", "whose": "key:3f9a1c2b", "principal": "key:3f9a1c2b", "scopes": ["read"],
         "expires_at": PAST.isoformat(), "expired": True},
        {"server": "github", "whose": "gateway", "principal": None, "scopes": ["repo", "read:org"],
         "expires_at": FUTURE.isoformat(), "expired": False},
        {"server": "github", "whose": "user:alice", "principal": "user:alice", "scopes": [],
         "expires_at": None, "expired": False},
    ]


def test_logout_forgets_the_gateways_token_by_default_a_principals_or_all(database_url: str, in_process: Callable[..., Ran]) -> None:
    store_tokens(database_url)
    result = in_process("auth", "logout", "github")
    assert (result.returncode, result.stdout, result.stderr) == (0, "forgot the gateway's OAuth token for server github\n", "")
    assert one_error(in_process("auth", "logout", "github"), 1) == "no OAuth token of gateway is stored for server 'github'"

    store_tokens(database_url)
    result = in_process("auth", "logout", "github", "--principal", "user:alice")
    assert result.stdout == "forgot user:alice's OAuth token for server github\n"
    assert one_error(in_process("auth", "logout", "github", "--principal", "user:alice"), 1) == (
        "no OAuth token of 'user:alice' is stored for server 'github'"
    )
    assert [line.split()[:2] for line in in_process("auth", "status").stdout.splitlines()[1:]] == [
        ["atlassian", "key:3f9a1c2b"], ["github", "gateway"]
    ]

    store_tokens(database_url)
    result = in_process("auth", "logout", "github", "--all")
    assert result.stdout == "forgot 2 OAuth tokens for server github\n"
    assert one_error(in_process("auth", "logout", "github", "--all"), 1) == "no OAuth tokens are stored for server 'github'"
    assert in_process("auth", "logout", "atlassian", "--all").stdout == "forgot 1 OAuth token for server atlassian\n"
    assert in_process("auth", "status").stdout == "no OAuth tokens stored\n"


def test_logout_takes_a_principal_or_all_not_both(in_process: Callable[..., Ran]) -> None:
    result = in_process("auth", "logout", "github", "--principal", "user:alice", "--all")
    assert result.returncode == 2 and "not allowed with argument" in result.stderr and result.stdout == ""
    result = in_process("auth", "logout")
    assert result.returncode == 2 and "SERVER" in result.stderr


def test_an_unreachable_database_is_one_line_and_exit_2(in_process: Callable[..., Ran], tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("")
    for command in (("auth", "status"), ("auth", "logout", "github")):
        message = one_error(in_process(*command, "--database", f"sqlite:///{blocked}/lockgate.db"), 2)
        assert message.startswith("cannot open the database (SQLite file ")


def test_status_and_logout_as_processes_need_no_secret_key(database_url: str, tmp_path: Path) -> None:
    store_tokens(database_url)
    state = tmp_path / "state-of-its-own"
    env = environ(GATEWAY_DATABASE_URL=database_url, GATEWAY_STATE_DIR=str(state))
    status = lockgate("auth", "status", database=None, env=env)
    assert status.returncode == 0 and "github     gateway" in status.stdout
    no_secret(status)
    logout = lockgate("auth", "logout", "atlassian", "--principal", "key:3f9a1c2b", database=None, env=env)
    assert (logout.returncode, logout.stdout) == (0, "forgot key:3f9a1c2b's OAuth token for server atlassian\n")
    # Nothing was opened, so no key was looked for or made.
    assert not (state / KEY_FILE).exists()
