"""``search_tools`` end to end: the SDK Client -> ``lockgate serve`` (stdio) -> real servers from PyPI and npm.

The reference time and git servers (PyPI) and server-everything (npm, in
``build/node``) start lazily on the first search; an agent's need, phrased in
its own words, finds the tool across them, a denied tool never shows, and
what a search returns ``execute_tool`` then calls.
"""

from __future__ import annotations

import shutil
import subprocess
from typing import Any

from .conftest import Setup, structured
from .test_server_everything import everything, node_path  # noqa: F401  (a fixture)

RULES: dict[str, Any] = {
    "agents": {
        "dev": {"allow": {"servers": ["*"]}, "deny": {"tools": {"git": ["git_reset"], "everything": ["get-env"]}}},
        "clock": {"allow": {"servers": ["time"]}},
    },
    "defaults": {"deny_on_missing_agent": True},
}


def search_setup(setup: Setup, everything_bin: str, repo: str) -> Setup:
    setup.servers.clear()
    setup.add("time", "-m", "mcp_server_time", "--local-timezone", "UTC")
    setup.add("git", "-m", "mcp_server_git", "--repository", repo)
    setup.add("everything", command=everything_bin)
    setup.env["PATH"] = node_path()
    setup.write(RULES)
    return setup


async def test_an_agents_need_finds_the_tool_across_real_servers_and_execute_tool_calls_it(
    setup: Setup, everything: Any, tmp_path: Any
) -> None:
    assert shutil.which("git"), "git is needed by mcp-server-git"
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    search_setup(setup, str(everything), str(repo))
    async with setup.client() as client:
        found = structured(await client.call_tool("search_tools", {"agent_id": "dev", "query": "what time is it in Tokyo", "limit": 3}))
        assert found["servers_searched"] == ["everything", "git", "time"] and found["unavailable"] == []
        top3 = [(t["server"], t["name"]) for t in found["tools"]]
        assert top3[0][0] == "time" and ("time", "get_current_time") in top3
        assert "inputSchema" in found["tools"][0] and found["tokens_used"] > 0

        staged = structured(await client.call_tool("search_tools", {"agent_id": "dev", "query": "which files did I change in the repo", "limit": 3}))
        assert staged["tools"][0]["server"] == "git"

        # Denied tools are not found, however well they match.
        for query, denied in (("undo staging, unstage all files", "git_reset"), ("environment variables", "get-env")):
            hits = structured(await client.call_tool("search_tools", {"agent_id": "dev", "query": query, "limit": 50}))
            assert denied not in [t["name"] for t in hits["tools"]]

        adding = structured(await client.call_tool("search_tools", {"agent_id": "dev", "query": "add two numbers", "limit": 1}))
        [best] = adding["tools"]
        assert (best["server"], best["name"]) == ("everything", "get-sum")
        result = await client.call_tool("execute_tool", {"agent_id": "dev", "server": best["server"], "tool": best["name"], "args": {"a": 2, "b": 3}})
        assert result.is_error is False and "5" in str(result.content[0])

        # An agent limited to one server searches that server only.
        clock = structured(await client.call_tool("search_tools", {"agent_id": "clock", "query": "add two numbers"}))
        assert clock["servers_searched"] == ["time"]
        assert {t["server"] for t in clock["tools"]} <= {"time"}

    records = [r for r in setup.audit_records() if r["operation"] == "search_tools"]
    assert len(records) == 6 and all(r["decision"] == "ALLOW" for r in records)
