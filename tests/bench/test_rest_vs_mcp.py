"""``bench/rest_vs_mcp.py`` runs end to end with its smallest settings and prints its table.

A smoke test only: the figures depend on the machine, so nothing here looks
at them beyond their being there; every call must have succeeded (exit 0).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "bench" / "rest_vs_mcp.py"


@pytest.mark.parametrize("client", ["httpx", "socket"])
def test_rest_vs_mcp_prints_its_table(client: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    command = [sys.executable, str(SCRIPT), "--rounds", "1", "--seconds", "0.2", "--warmup", "0.1", "--concurrency", "2", "--client", client]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert f"{client} client; 1 rounds of 0.2 s" in out
    assert re.search(r"^clients side\s+calls/s\s+p50 ms\s+p95 ms\s+p99 ms\s+calls\s+errors\s+CPU µs/call$", out, re.MULTILINE)
    for clients in ("1", "2"):
        for side in ("MCP", "REST", "REST/MCP"):
            assert re.search(rf"^\s+{clients} {re.escape(side)}\s+\d", out, re.MULTILINE), (clients, side, out)
        assert re.search(rf"^{clients} clients?: REST/MCP p50 \d", out, re.MULTILINE), out
