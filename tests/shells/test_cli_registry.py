"""`lockgate validate`, `explain` and `check` see the live registry, as real processes over a SQLite database.

Instances registered at run time are stored in the database and merged into
the files' configuration as `lockgate serve` merges them; `--no-registry`
leaves them out. Looking never creates a database, and one that cannot be
read is a warning, not a failure.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest

from lockgate.core import parse_registration
from lockgate.shells.store import Store
from lockgate.shells.store.registry import Registrations

from .test_cli import REPO, clean_env, run

EXAMPLE = ["--config", "examples/.mcp.json", "--rules", "examples/.mcp-gateway-rules.json"]
UTILS = str(REPO / "examples" / "servers" / "utils_server.py")
NOTES = str(REPO / "examples" / "servers" / "notes_server.py")


def env(state: Path, **extra: str) -> dict[str, str]:
    """The examples' environment, with the default database in ``state`` (the state folder)."""
    return clean_env(PYTHON=sys.executable, GATEWAY_STATE_DIR=str(state), **extra)


def register(state: Path, *bodies: dict[str, object]) -> None:
    """Store registrations in the default database of ``state``, as ``POST /gateway/register`` does."""
    state.mkdir(exist_ok=True)
    with Store.open(f"sqlite:///{state / 'lockgate.db'}") as store:
        store.upgrade()
        table = Registrations(store)
        for number, body in enumerate(bodies):
            registration = parse_registration(body, default_id=f"reg-{number:08x}")
            assert not isinstance(registration, list), registration
            table.add(registration)


@pytest.fixture
def registered(tmp_path: Path) -> Path:
    """A state folder whose database has a second notes instance, a new HTTP server, and one that cannot be merged."""
    state = tmp_path / "state"
    register(
        state,
        {"server": "notes", "command": sys.executable, "args": [NOTES], "instance_id": "second"},
        {"server": "search", "endpoint": "http://127.0.0.1:9/mcp", "instance_id": "reg-1a2b3c4d"},
        {"server": "notes", "command": sys.executable, "instance_id": "0"},  # the file's own instance has that id
    )
    return state


SKIPPED = "registry: notes[\"0\"]: registration skipped: server 'notes' has an instance '0' already"


def test_validate_merges_the_registered_instances(registered: Path) -> None:
    result = run("validate", *EXAMPLE, env=env(registered))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"warning: {SKIPPED}",
        "registry: 2 instances (notes: second; search: reg-1a2b3c4d)",
        "valid: examples/.mcp.json (2 servers), examples/.mcp-gateway-rules.json (4 agents), 1 warning",
    ]
    report = json.loads(run("validate", "--json", *EXAMPLE, env=env(registered)).stdout)
    assert report["valid"] is True
    assert report["servers"] == ["notes", "utils", "search"]
    assert report["registered"] == {"notes": ["second"], "search": ["reg-1a2b3c4d"]}
    assert report["warnings"] == [
        {"file": "registry", "path": 'notes["0"]', "message": "registration skipped: server 'notes' has an instance '0' already"}
    ]
    # As lockgate serve with GATEWAY_STRICT: a registration it skips does not stop it, so it stays a warning.
    strict = run("validate", "--strict", *EXAMPLE, env=env(registered))
    assert strict.returncode == 0 and f"warning: {SKIPPED}" in strict.stdout.splitlines()


def test_no_registry_validates_the_files_alone(registered: Path) -> None:
    result = run("validate", "--no-registry", *EXAMPLE, env=env(registered))
    assert result.returncode == 0
    assert result.stdout == "valid: examples/.mcp.json (2 servers), examples/.mcp-gateway-rules.json (4 agents), 0 warnings\n"
    report = json.loads(run("validate", "--no-registry", "--json", *EXAMPLE, env=env(registered)).stdout)
    assert (report["servers"], report["registered"], report["warnings"]) == (["notes", "utils"], {}, [])
    offline = run("explain", "--agent", "admin", "--offline", "--no-registry", *EXAMPLE, env=env(registered))
    assert offline.returncode == 0 and offline.stderr == ""
    assert "registered" not in offline.stdout and "server search" not in offline.stdout


def test_explain_says_which_instances_are_registered(registered: Path) -> None:
    result = run("explain", "--agent", "admin", "--offline", *EXAMPLE, env=env(registered))
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [f"lockgate: warning: {SKIPPED}"]
    assert result.stdout.splitlines() == [
        "agent admin, from the rules alone (offline)",
        "",
        "server notes: allowed by agents.admin.allow.servers[0]",
        "  registered instances: second",
        "  any other tool: allowed by agents.admin.allow.servers[0]",
        "",
        "server utils: allowed by agents.admin.allow.servers[0]",
        "  tool rules, first match decides:",
        "    deny  fail  agents.admin.deny.tools.utils[0]",
        "  any other tool: allowed by agents.admin.allow.servers[0]",
        "",
        "server search: allowed by agents.admin.allow.servers[0]",
        "  registered instances: reg-1a2b3c4d",
        "  any other tool: allowed by agents.admin.allow.servers[0]",
    ]
    report = json.loads(run("explain", "--agent", "writer", "--offline", "--json", *EXAMPLE, env=env(registered)).stdout)
    assert {entry["server"]: entry.get("registered") for entry in report["servers"]} == {
        "notes": ["second"],
        "utils": None,
        "search": ["reg-1a2b3c4d"],
    }


def test_check_starts_a_registered_server(tmp_path: Path) -> None:
    state = tmp_path / "state"
    register(state, {"server": "extra", "command": sys.executable, "args": [UTILS], "instance_id": "e1"})
    report = json.loads(run("check", "--json", *EXAMPLE, env=env(state)).stdout)
    assert report["ok"] is True
    assert list(report["servers"]) == ["notes", "utils", "extra"]
    assert (report["servers"]["extra"]["state"], report["servers"]["extra"]["tools"]) == ("ready", 6)
    alone = json.loads(run("check", "--json", "--no-registry", *EXAMPLE, env=env(state)).stdout)
    assert list(alone["servers"]) == ["notes", "utils"]


def test_a_missing_database_is_not_created(tmp_path: Path) -> None:
    state = tmp_path / "state"
    result = run("validate", *EXAMPLE, env=env(state))
    assert result.returncode == 0
    assert result.stdout == "valid: examples/.mcp.json (2 servers), examples/.mcp-gateway-rules.json (4 agents), 0 warnings\n"
    assert run("explain", "--agent", "admin", "--offline", *EXAMPLE, env=env(state)).returncode == 0
    assert not state.exists()
    # Nor one named by GATEWAY_DATABASE_URL.
    named = tmp_path / "elsewhere" / "registry.db"
    result = run("validate", *EXAMPLE, env=env(state, GATEWAY_DATABASE_URL=f"sqlite:///{named}"))
    assert result.returncode == 0 and "warning:" not in result.stdout
    assert not named.parent.exists() and not state.exists()


def test_a_database_that_cannot_be_read_is_a_warning_and_the_files_are_validated(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    corrupt = state / "lockgate.db"
    corrupt.write_bytes(b"this is not a SQLite database\n" * 100)
    result = run("validate", *EXAMPLE, env=env(state))
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    [warning, verdict] = result.stdout.splitlines()
    assert warning.startswith(f"warning: registry: cannot read the registered instances: cannot reach the database (SQLite file {corrupt})")
    assert warning.endswith("; the files alone are used")
    assert verdict == "valid: examples/.mcp.json (2 servers), examples/.mcp-gateway-rules.json (4 agents), 1 warning"
    report = json.loads(run("validate", "--json", *EXAMPLE, env=env(state)).stdout)
    assert report["valid"] is True and report["servers"] == ["notes", "utils"] and report["registered"] == {}
    [problem] = report["warnings"]
    assert (problem["file"], problem["path"]) == ("registry", "")
    assert problem["message"].startswith("cannot read the registered instances: ")
    explained = run("explain", "--agent", "writer", "--offline", *EXAMPLE, env=env(state))
    assert explained.returncode == 0 and "Traceback" not in explained.stderr
    assert explained.stderr.startswith("lockgate: warning: registry: cannot read the registered instances: ")
    # Files with errors are reported as before: the registry is not looked at.
    broken = tmp_path / "broken.json"
    broken.write_text('{"mcpServers": {"a": {"command": 5}}}')
    invalid = run("validate", "--config", str(broken), "--rules", "examples/.mcp-gateway-rules.json", env=env(state))
    assert invalid.returncode == 1 and "registry" not in invalid.stdout
    assert corrupt.read_bytes() == b"this is not a SQLite database\n" * 100
    assert sorted(p.name for p in state.iterdir()) == ["lockgate.db"]


def test_reading_registrations_upgrades_no_schema(tmp_path: Path) -> None:
    """A database older than the registrations table has none; a newer Lockgate's is refused; neither is changed."""
    from lockgate.shells.registry import read_registrations
    from lockgate.shells.store import SchemaProblem

    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()
    assert read_registrations(f"sqlite:///{empty}") == []
    for revision in ("0001", "9999"):
        old = tmp_path / f"{revision}.db"
        with closing(sqlite3.connect(old)) as connection, connection:
            connection.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL PRIMARY KEY)")
            connection.execute("INSERT INTO alembic_version VALUES (?)", (revision,))
        if revision == "0001":
            assert read_registrations(f"sqlite:///{old}") == []
        else:
            with pytest.raises(SchemaProblem, match="upgrade Lockgate"):
                read_registrations(f"sqlite:///{old}")
        with closing(sqlite3.connect(old)) as connection:
            tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            assert tables == {"alembic_version"}
            assert connection.execute("SELECT version_num FROM alembic_version").fetchall() == [(revision,)]


def test_checking_without_a_database_loads_no_database_library(tmp_path: Path) -> None:
    """A missing database is found out by its file alone: SQLAlchemy takes longer to load than the check."""
    examples = Path(__file__).resolve().parents[2] / "examples"
    program = (
        "import sys\n"
        "from lockgate.shells.cli import main\n"
        f"status = main(['validate', '--config', {str(examples / '.mcp.json')!r}, '--rules', {str(examples / '.mcp-gateway-rules.json')!r}])\n"
        "assert status == 0, status\n"
        "assert not [m for m in sys.modules if m.startswith('sqlalchemy')], 'sqlalchemy was imported'\n"
    )
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "GATEWAY_STATE_DIR": str(tmp_path / "state"), "PYTHON": sys.executable}
    result = subprocess.run([sys.executable, "-c", program], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "state").exists()
