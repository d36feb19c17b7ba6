"""``bench/oauth_overhead.py`` runs end to end with its smallest settings and prints its table.

A smoke test only: the figures depend on the machine, so nothing here looks
at them beyond their being there; every call must have succeeded and no
token may have been requested while timed (exit 0).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "bench" / "oauth_overhead.py"


def test_oauth_overhead_prints_its_table() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick"], cwd=REPO, env=env, capture_output=True, text=True, timeout=180, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    for side in ("plain", "notes"):
        assert re.search(rf"^{side}\s+\d+(\.\d+)?\s+\d", out, re.MULTILINE), out
    assert re.search(r"^notes/plain\s+\d", out, re.MULTILINE), out
    assert "token requests while timed: 0" in out
    assert re.search(r"with a cached token: -?\d+(\.\d+)? µs added", out), out
