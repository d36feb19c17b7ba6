"""Which configuration files the commands read, and how a wrong path is reported."""

from __future__ import annotations

from pathlib import Path

import pytest

from lockgate.shells.configfiles import FileProblem, locate_files

from .test_cli import REPO, clean_env, run

EXAMPLES = REPO / "examples"


def test_a_directory_given_as_a_file_says_so(tmp_path: Path) -> None:
    rules = str(EXAMPLES / ".mcp-gateway-rules.json")
    with pytest.raises(FileProblem, match=rf"^server configuration is a directory, not a file: {tmp_path} \(from --config\)$"):
        locate_files(str(tmp_path), rules, {})
    with pytest.raises(FileProblem, match=rf"^rules file is a directory, not a file: {tmp_path} \(from GATEWAY_RULES\)$"):
        locate_files(str(EXAMPLES / ".mcp.json"), None, {"GATEWAY_RULES": str(tmp_path)})
    result = run("validate", "--config", str(tmp_path), "--rules", rules, env=clean_env())
    assert result.returncode == 1  # validate reports it as the file's problem
    assert f"server configuration is a directory, not a file: {tmp_path} (from --config)" in result.stdout


def test_a_missing_file_names_where_it_came_from(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.json")
    with pytest.raises(FileProblem, match=r"^rules file not found: .*nope\.json \(from --rules\)$"):
        locate_files(str(EXAMPLES / ".mcp.json"), missing, {})
