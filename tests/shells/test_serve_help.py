"""``lockgate serve --help`` lists every ``GATEWAY_*`` variable Lockgate reads, with its default."""

from __future__ import annotations

import subprocess
import sys

import pytest

from lockgate.core import Settings, environment_variables
from lockgate.shells.cli import main


VARIABLES = {variable.name for variable in environment_variables()}


def serve_help(capsys: pytest.CaptureFixture[str]) -> str:
    assert main(["serve", "--help"]) == 0
    return capsys.readouterr().out


def expected_default(variable: str) -> str:
    """The default as the help should show it, read from Settings (the two file variables are the shell's: unset)."""
    value = getattr(Settings(), variable.removeprefix("GATEWAY_").lower(), None)
    if value is None or value == ():
        return "unset"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def test_every_variable_is_listed_with_its_default(capsys: pytest.CaptureFixture[str]) -> None:
    lines = serve_help(capsys).splitlines()
    listed = {line.split()[0]: line for line in lines if line.startswith("  GATEWAY_")}
    assert set(listed) == VARIABLES
    for variable in sorted(VARIABLES):
        assert listed[variable] == f"  {variable} (default: {expected_default(variable)})"


def test_the_defaults_are_the_documented_ones(capsys: pytest.CaptureFixture[str]) -> None:
    # A few written out, so a wrong source of defaults cannot pass by agreeing with itself.
    text = serve_help(capsys)
    for line in (
        "GATEWAY_HTTP_PORT (default: 8000)",
        "GATEWAY_HTTP_HOST (default: 127.0.0.1)",
        "GATEWAY_TRANSPORT (default: stdio)",
        "GATEWAY_AUDIT_LOG (default: ./logs/audit.jsonl)",
        "GATEWAY_MAX_MESSAGE_BYTES (default: 16777216)",
        "GATEWAY_SESSION_TTL (default: 3600)",
        "GATEWAY_STRICT (default: false)",
        "GATEWAY_MCP_CONFIG (default: unset)",
    ):
        assert f"  {line}\n" in text
    # The options keep their own help above the table.
    assert "--port PORT" in text and "--config FILE" in text


def test_building_the_parser_leaves_the_table_for_help() -> None:
    # Every command builds the serve parser; the table's source imports pydantic, which only --help needs.
    probe = "import sys; from lockgate.shells.cli import build_parser; build_parser(); print('pydantic' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=30, check=True)
    assert result.stdout.strip() == "False"
