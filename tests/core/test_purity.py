"""core/ stays sans-IO: no I/O, clock, randomness, async or logging imports."""

from __future__ import annotations

import ast
from pathlib import Path

CORE = Path(__file__).resolve().parents[2] / "core"
FORBIDDEN = {
    "trio", "anyio", "asyncio", "socket", "subprocess", "httpx", "httpx2", "h11", "wsproto", "time",
    "random", "uuid", "secrets", "logging", "os", "threading", "signal", "select", "selectors",
}


def test_core_imports_nothing_that_does_io_or_reads_a_clock() -> None:
    offenders = []
    files = sorted(CORE.glob("**/*.py"))
    assert files
    for path in files:
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                roots = [alias.name.split(".")[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                roots = [node.module.split(".")[0]]
            else:
                roots = []
            offenders += [f"{path.name}:{node.lineno} imports {r}" for r in roots if r in FORBIDDEN]
            if isinstance(node, (ast.AsyncFunctionDef, ast.Await, ast.AsyncFor, ast.AsyncWith)):
                offenders.append(f"{path.name}:{node.lineno} is async")
    assert offenders == []
