"""docs/embedding.md's example runs as written and prints what the page says."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

PAGE = Path(__file__).resolve().parents[2] / "docs" / "embedding.md"


def blocks(info: str) -> list[str]:
    """The fenced code blocks of the page whose info string is ``info``."""
    found: list[str] = []
    current: list[str] | None = None
    kind = ""
    for line in PAGE.read_text(encoding="utf-8").splitlines():
        if current is None:
            if line.startswith("```"):
                current, kind = [], line[3:]
        elif line == "```":
            if kind == info:
                found.append("\n".join(current) + "\n")
            current = None
        else:
            current.append(line)
    return found


def test_the_example_runs_and_prints_what_the_page_shows() -> None:
    [example] = blocks("python")
    assert len(example.splitlines()) <= 45
    # A fresh interpreter: the example must need nothing but its own imports.
    result = subprocess.run([sys.executable, "-c", example], capture_output=True, text=True, timeout=60, check=True)
    printed = result.stdout.splitlines()
    [shown] = [block for block in blocks("") if block.startswith("StartDownstream")]
    expected = shown.splitlines()
    assert len(printed) == len(expected)
    for line, pattern in zip(printed, expected):
        # The page elides with "...": each elided part matches anything.
        regex = ".*".join(re.escape(part) for part in pattern.split("..."))
        assert re.fullmatch(regex, line), (line, pattern)
