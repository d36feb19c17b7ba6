"""examples/client_example.py runs against the bundled example served over HTTP, and says what it shows."""

from __future__ import annotations

import os
import subprocess
import sys

from .conftest import REPO, Site


def test_the_client_example_runs_against_the_bundled_example(site: Site) -> None:
    examples = REPO / "examples"
    site.config, site.rules = examples / ".mcp.json", examples / ".mcp-gateway-rules.json"
    site.env["PYTHON"] = sys.executable  # the example servers' interpreter (${PYTHON:-python3})
    site.env.pop("GATEWAY_DEFAULT_AGENT", None)
    with site.serve() as gateway:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LOCKGATE_", "GATEWAY_"))}
        result = subprocess.run(
            [sys.executable, str(examples / "client_example.py"), "--url", gateway.url],
            env=env, capture_output=True, text=True, timeout=120,
        )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("utils offers the researcher 6 tools: echo, add")
    assert lines[1] == "word_count: {'result': 3}"
    assert lines[2].startswith("fail: is_error=True")
    assert lines[3].startswith("writer may not delete: DENIED_BY_POLICY (rule agents.writer.deny")
    assert lines[4:7] == ["batch: first", "batch: 5.0", "batch: NotFound SERVER_NOT_FOUND"]
    assert lines[7].startswith("gateway ")
    assert "requests so far" in lines[8]
