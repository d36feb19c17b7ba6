"""The Makefile's promises: `make run` installs no test tools, `make help` lists the targets."""

from __future__ import annotations

import re
import subprocess

from .test_cli import REPO


def make(*args: str) -> str:
    return subprocess.run(["make", "--no-print-directory", *args], cwd=REPO, capture_output=True, text=True, check=True, timeout=60).stdout


def test_make_run_installs_the_gateway_and_the_examples_sdk_only() -> None:
    # -B -n: what a fresh clone would run, without running it.
    planned = make("-B", "-n", "run")
    installs = [line for line in planned.splitlines() if "pip install" in line]
    assert installs == [".venv/bin/python -m pip install --quiet -e '.[examples]'".replace(".venv", str(REPO / ".venv"))]
    assert "[test]" not in planned and "mypy" not in planned


def test_make_help_lists_every_documented_target() -> None:
    listed = set(re.findall(r"^  make (\S+)", make("help"), flags=re.MULTILINE))
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    [phony] = re.findall(r"^\.PHONY: (.*)$", makefile, flags=re.MULTILINE)
    assert listed == set(phony.split())  # every target a user runs has its line
    assert make() == make("help")  # the default goal
