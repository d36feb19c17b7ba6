"""`lockgate validate`, `explain`, `check` and `schema` as real processes, against the examples and broken files."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from .test_cli import REPO, clean_env, run

EXAMPLE = ["--config", "examples/.mcp.json", "--rules", "examples/.mcp-gateway-rules.json"]


def env() -> dict[str, str]:
    return clean_env(PYTHON=sys.executable)


@pytest.fixture
def broken(tmp_path: Path) -> list[str]:
    servers, rules = tmp_path / "servers.json", tmp_path / "rules.json"
    servers.write_text(json.dumps({"mcpServers": {"a": {"command": 5}, "b": {"command": "x", "colour": "red", "headers": {}}}}))
    rules.write_text(json.dumps({"agents": {"bad id": {}, "ok": {"allow": {"servers": "a"}}}}))
    return ["--config", str(servers), "--rules", str(rules)]


@pytest.mark.parametrize("command", ["validate", "explain", "check"])
def test_help_documents_every_option(command: str) -> None:
    result = run(command, "--help")
    assert result.returncode == 0
    options = {"validate": ["--config FILE", "--rules FILE", "--strict", "--json", "--no-registry"],
               "explain": ["--agent ID", "--server NAME", "--offline", "--json", "--config FILE", "--no-registry"],
               "check": ["--config FILE", "--rules FILE", "--json", "--no-registry"]}[command]
    for option in options:
        assert option in result.stdout
    assert command in run("--help").stdout


def test_validate_the_examples() -> None:
    result = run("validate", *EXAMPLE, env=env())
    assert result.returncode == 0
    assert result.stdout == "valid: examples/.mcp.json (2 servers), examples/.mcp-gateway-rules.json (4 agents), 0 warnings\n"
    report = json.loads(run("validate", "--json", *EXAMPLE, env=env()).stdout)
    assert report == {
        "valid": True,
        "servers_file": "examples/.mcp.json",
        "rules_file": "examples/.mcp-gateway-rules.json",
        "servers": ["notes", "utils"],
        "agents": ["admin", "default", "researcher", "writer"],
        "registered": {},
        "errors": [],
        "warnings": [],
    }


def test_validate_broken_files_lists_every_error_with_file_and_path(broken: list[str]) -> None:
    result = run("validate", *broken)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    servers, rules = broken[1], broken[3]
    headers = "'headers' applies only to HTTP servers and is ignored"
    assert result.stdout.splitlines() == [
        f"error: {servers}: mcpServers.a.command: expected a string, got 5",
        f"error: {servers}: mcpServers.b.colour: unknown key 'colour'",
        f"error: {rules}: agents[\"bad id\"]: agent id 'bad id' is invalid: use 1 to 128 letters, digits, '-', '_' and '.'",
        f"error: {rules}: agents.ok.allow.servers: expected an array of strings, got a string",
        f"warning: {servers}: mcpServers.b.headers: {headers}",
        "invalid: 4 errors, 1 warning",
    ]
    report = json.loads(run("validate", "--json", *broken).stdout)
    assert report["valid"] is False
    assert [(e["file"], e["path"]) for e in report["errors"]] == [
        (servers, "mcpServers.a.command"), (servers, "mcpServers.b.colour"),
        (rules, 'agents["bad id"]'), (rules, "agents.ok.allow.servers"),
    ]
    assert report["warnings"] == [{"file": servers, "path": "mcpServers.b.headers", "message": headers}]


@pytest.fixture
def only_warnings(tmp_path: Path) -> list[str]:
    """Files that load, with one warning: a rule for a server that is not configured."""
    servers, rules = tmp_path / "servers.json", tmp_path / "rules.json"
    servers.write_text(json.dumps({"mcpServers": {"git": {"command": "x"}}}))
    rules.write_text(json.dumps({"agents": {"dev": {"allow": {"servers": ["git"]}, "deny": {"tools": {"gti": ["push"]}}}}}))
    return ["--config", str(servers), "--rules", str(rules)]


def test_validate_strict_makes_every_warning_an_error(only_warnings: list[str]) -> None:
    rules = only_warnings[3]
    warning = f"{rules}: agents.dev.deny.tools.gti: server 'gti' is not configured in {only_warnings[1]} (did you mean 'git'?)"
    result = run("validate", *only_warnings, env=env())
    assert (result.returncode, result.stdout.splitlines()[0]) == (0, f"warning: {warning}")
    result = run("validate", "--strict", *only_warnings, env=env())
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        f"error: {warning}; strict mode makes this warning an error",
        "invalid: 0 errors, 1 warning made an error by --strict",
    ]
    report = json.loads(run("validate", "--json", *only_warnings, env=clean_env(GATEWAY_STRICT="true")).stdout)
    assert (report["valid"], report["warnings"]) == (False, [])
    assert report["errors"] == [
        {"file": rules, "path": "agents.dev.deny.tools.gti", "message": f"{warning.split(': ', 2)[2]}; strict mode makes this warning an error", "strict": True}
    ]
    result = run("validate", *only_warnings, env=clean_env(GATEWAY_STRICT="on"))
    assert result.stdout.splitlines()[-1] == "invalid: 0 errors, 1 warning made an error by GATEWAY_STRICT"


def test_serve_with_gateway_strict_refuses_warnings(only_warnings: list[str]) -> None:
    result = run("serve", *only_warnings, env=clean_env(PYTHON=sys.executable, GATEWAY_STRICT="1"))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"lockgate: error: {only_warnings[3]}: agents.dev.deny.tools.gti: server 'gti' is not configured in "
        f"{only_warnings[1]} (did you mean 'git'?); strict mode makes this warning an error"
    ]


def test_validate_warns_about_unknown_gateway_variables() -> None:
    result = run("validate", *EXAMPLE, env=clean_env(PYTHON=sys.executable, GATEWAY_DEFUALT_AGENT="writer"))
    assert result.returncode == 0
    assert result.stdout.splitlines()[0] == (
        "warning: environment: GATEWAY_DEFUALT_AGENT: unknown variable, ignored (did you mean 'GATEWAY_DEFAULT_AGENT'?)"
    )


def test_validate_missing_and_unreadable_files(tmp_path: Path) -> None:
    result = run("validate", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stdout.splitlines()[0].startswith("error: no server configuration found")
    (tmp_path / "s.json").write_bytes(b"\xff")
    (tmp_path / "r.json").write_text("{}")
    result = run("validate", "--json", "--config", "s.json", "--rules", "r.json", cwd=tmp_path)
    assert result.returncode == 1
    assert json.loads(result.stdout)["errors"] == [{"file": "s.json", "path": "", "message": "s.json: not UTF-8 text"}]


def test_validate_reports_environment_problems(tmp_path: Path) -> None:
    result = run("validate", *EXAMPLE, env=clean_env(PYTHON=sys.executable, GATEWAY_LOG_FORMAT="xml"))
    assert result.returncode == 1
    assert "error: environment: GATEWAY_LOG_FORMAT: 'xml' is not a format: use 'text' or 'json'" in result.stdout


def test_explain_offline_shows_the_rules_for_each_server() -> None:
    result = run("explain", "--agent", "researcher", "--offline", *EXAMPLE, env=env())
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "agent researcher, from the rules alone (offline)",
        "",
        "server notes: allowed by agents.researcher.allow.servers[0]",
        "  tool rules, first match decides:",
        "    allow  list_notes  agents.researcher.allow.tools.notes[0]",
        "    allow  get_note    agents.researcher.allow.tools.notes[1]",
        "    allow  search_*    agents.researcher.allow.tools.notes[2]",
        "  any other tool: denied by agents.researcher: no rule allows it",
        "",
        "server utils: allowed by agents.researcher.allow.servers[1]",
        "  tool rules, first match decides:",
        "    allow  *  agents.researcher.allow.tools.utils[0]",
        "  any other tool: denied by agents.researcher: no rule allows it",
    ]
    report = json.loads(run("explain", "--agent", "writer", "--offline", "--server", "utils", "--json", *EXAMPLE, env=env()).stdout)
    assert report == {
        "agent": "writer",
        "offline": True,
        "servers": [{"server": "utils", "configured": True, "allowed": False, "rule": "agents.writer: no rule allows it"}],
    }


def test_explain_offline_shows_resource_and_prompt_rules_where_there_are_some(tmp_path: Path) -> None:
    rules = tmp_path / "rules.json"
    body = {
        "allow": {"servers": ["notes", "utils"], "resources": {"notes": ["note://public/*"]}},
        "deny": {"prompts": {"notes": ["admin_*"]}},
    }
    rules.write_text(json.dumps({"agents": {"docs": body}}))
    result = run("explain", "--agent", "docs", "--offline", "--config", "examples/.mcp.json", "--rules", str(rules), env=env())
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "agent docs, from the rules alone (offline)",
        "",
        "server notes: allowed by agents.docs.allow.servers[0]",
        "  any other tool: allowed by agents.docs.allow.servers[0]",
        "  resource rules, first match decides:",
        "    allow  note://public/*  agents.docs.allow.resources.notes[0]",
        "  any other resource: denied by agents.docs: no rule allows it",
        "  prompt rules, first match decides:",
        "    deny  admin_*  agents.docs.deny.prompts.notes[0]",
        "  any other prompt: allowed by agents.docs.allow.servers[0]",
        "",
        "server utils: allowed by agents.docs.allow.servers[1]",
        "  any other tool: allowed by agents.docs.allow.servers[1]",
    ]


def test_explain_lists_each_tool_with_its_rule() -> None:
    result = run("explain", "--agent", "writer", *EXAMPLE, env=env())
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "agent writer, with each server's listed tools",
        "",
        "server notes: allowed by agents.writer.allow.servers[0]",
        "  allow  list_notes    agents.writer.allow.servers[0]",
        "  allow  get_note      agents.writer.allow.servers[0]",
        "  allow  add_note      agents.writer.allow.servers[0]",
        "  deny   delete_note   agents.writer.deny.tools.notes[0]",
        "  allow  search_notes  agents.writer.allow.servers[0]",
        "",
        "server utils: denied by agents.writer: no rule allows it",
        "  every tool is denied with it",
    ]
    report = json.loads(run("explain", "--agent", "admin", "--server", "utils", "--json", *EXAMPLE, env=env()).stdout)
    [utils] = report["servers"]
    assert {t["name"]: t["allowed"] for t in utils["tools"]}["fail"] is False
    assert [t["rule"] for t in utils["tools"] if t["name"] == "fail"] == ["agents.admin.deny.tools.utils[0]"]


def test_explain_an_unknown_agent_or_a_failing_server(tmp_path: Path) -> None:
    result = run("explain", "--agent", "nobody", *EXAMPLE, env=env())
    assert result.returncode == 1
    assert result.stderr.strip() == "lockgate: error: agent 'nobody' is not defined in the rules (defined: admin, default, researcher, writer)"
    result = run("explain", "--agent", "admin", "--server", "ghost", *EXAMPLE, env=env())
    assert result.returncode == 0
    assert result.stdout.splitlines()[2:] == [
        "server ghost (not configured): allowed by agents.admin.allow.servers[0]",
        "  no such server in the configuration",
    ]
    (tmp_path / "s.json").write_text(json.dumps({"mcpServers": {"gone": {"command": "no-such-command-for-lockgate"}}}))
    (tmp_path / "r.json").write_text(json.dumps({"agents": {"a": {"allow": {"servers": ["*"]}}}}))
    result = run("explain", "--agent", "a", "--config", "s.json", "--rules", "r.json", cwd=tmp_path)
    assert result.returncode == 1
    assert "  tools not listed: command not found: no-such-command-for-lockgate" in result.stdout.splitlines()
    assert "Traceback" not in result.stderr


def test_explain_and_check_refuse_invalid_files(broken: list[str]) -> None:
    for command in (["explain", "--agent", "ok"], ["check"]):
        result = run(*command, *broken)
        assert result.returncode == 2
        assert result.stderr.splitlines()[0].startswith("lockgate: error: ")
        assert "Traceback" not in result.stderr and result.stdout == ""


def test_check_the_examples() -> None:
    result = run("check", *EXAMPLE, env=env())
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["server", "state", "protocol", "era", "tools", "bytes", "tokens"]
    assert lines[1].split()[:5] == ["notes", "ready", "2026-07-28", "stateless", "5"]  # SDK servers: both eras
    assert lines[2].split()[:5] == ["utils", "ready", "2026-07-28", "stateless", "6"]
    assert "gateway tools/list: 4 tools" in result.stdout
    report = json.loads(run("check", "--json", *EXAMPLE, env=env()).stdout)
    assert report["ok"] is True
    notes = report["servers"]["notes"]
    assert (notes["state"], notes["tools"], notes["error"]) == ("ready", 5, None)
    assert 0 < notes["tokens"] < notes["bytes"]  # cl100k_base tokens (tests/shells/test_tokenizer.py checks them exactly)
    context = report["context"]
    assert context["gateway"]["tools"] == 4
    assert context["all_servers"]["tools"] == 11
    assert context["all_servers"]["bytes"] == notes["bytes"] + report["servers"]["utils"]["bytes"]
    researcher = context["agents"]["researcher"]
    assert researcher["servers"] == ["notes", "utils"] and researcher["direct"]["tools"] == 9  # not delete_note, add_note
    assert researcher["saved_tokens"] == researcher["direct"]["tokens"] - context["gateway"]["tokens"]
    assert context["agents"]["writer"]["direct"]["tools"] == 4


def test_check_fails_when_a_server_fails(tmp_path: Path) -> None:
    servers = {
        "ok": {"command": sys.executable, "args": [str(REPO / "examples" / "servers" / "utils_server.py")]},
        "broken": {"command": sys.executable, "args": ["-c", "import sys; sys.exit(3)"]},
    }
    (tmp_path / "s.json").write_text(json.dumps({"mcpServers": servers}))
    (tmp_path / "r.json").write_text("{}")
    result = run("check", "--json", "--config", "s.json", "--rules", "r.json", cwd=tmp_path)
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["ok"] is False
    assert report["servers"]["ok"]["state"] == "ready"
    assert report["servers"]["broken"]["state"] == "failed"
    assert report["servers"]["broken"]["error"] == "exited with code 3"
    text = run("check", "--config", "s.json", "--rules", "r.json", cwd=tmp_path)
    assert text.returncode == 1
    assert "FAILED broken: exited with code 3" in text.stdout



@pytest.mark.parametrize("kind", ["servers", "rules"])
def test_schema_prints_the_shipped_schema(kind: str) -> None:
    result = run("schema", kind)
    assert result.returncode == 0
    assert result.stdout == (REPO / "core" / "schemas" / f"{kind}.schema.json").read_text(encoding="utf-8")
    assert json.loads(result.stdout)["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_schema_refuses_an_unknown_kind() -> None:
    result = run("schema", "policy")
    assert result.returncode == 2
    assert "invalid choice: 'policy'" in result.stderr
