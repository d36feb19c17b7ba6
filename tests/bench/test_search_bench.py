"""The tool-search benchmarks: their data holds together, and both scripts run and report.

Smoke tests only: the figures are whatever the search gives today, so
nothing here holds them to a goal; it checks that the held-out recall@3 of
the expanding variant is reported, that the tables parse, and that every
query's tool is in the recorded catalogue.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "bench"
CATALOG = BENCH / "data" / "search_catalog.json"
QUERIES = BENCH / "data" / "search_queries.json"


def run(script: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    return subprocess.run(
        [sys.executable, str(BENCH / script), *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def catalog() -> dict[str, Any]:
    servers: dict[str, Any] = json.loads(CATALOG.read_text())["servers"]
    return servers


def test_every_query_names_a_tool_of_the_catalogue() -> None:
    servers = catalog()
    tools = {(name, tool["name"]) for name, server in servers.items() for tool in server["tools"]}
    data = json.loads(QUERIES.read_text())
    assert data["_about"]
    texts: list[str] = []
    covered: set[str] = set()
    for split in ("heldout", "dev"):
        assert len(data[split]) >= 80, split
        for item in data[split]:
            assert set(item) <= {"query", "server", "tool", "alternates"}, item
            for answer in [item, *item.get("alternates", [])]:
                assert (answer["server"], answer["tool"]) in tools, (split, item["query"], answer)
            texts.append(item["query"].lower())
            covered.add(item["server"])
    assert len(texts) >= 160
    assert len(set(texts)) == len(texts), "a query is in the file twice"
    assert covered == set(servers), "every server has a query"


def test_the_catalogue_is_the_pinned_servers_as_recorded() -> None:
    spec = importlib.util.spec_from_file_location("search_catalog", BENCH / "search_catalog.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("search_catalog", module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    pinned = {s.name: f"{s.package}@{s.version}" for s in module.SERVERS}
    servers = catalog()
    assert {name: server["package"] for name, server in servers.items()} == pinned
    assert len(servers) >= 6
    for name, server in servers.items():
        assert server["tools"], name
        for tool in server["tools"]:
            assert isinstance(tool["name"], str) and isinstance(tool["inputSchema"], dict), (name, tool)


def test_quality_prints_its_table_and_the_held_out_misses() -> None:
    done = run("search_quality.py", "--misses")
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert re.search(r"^\| variant \| split \| recall@1 \| recall@3 \| recall@5 \| MRR \| n \|$", out, re.MULTILINE), out
    for variant in (r"bm25 \(expand=False\)", r"expanded \(expand=True\)"):
        for split in ("heldout", "dev"):
            assert re.search(rf"^\| {variant} \| {split} \|( [01]\.\d{{3}} \|){{4}} \d+ \|$", out, re.MULTILINE), (variant, split, out)
    assert re.search(r"^heldout misses at 3, expanded \(expand=True\): \d+$", out, re.MULTILINE), out


def test_quality_reports_held_out_recall_at_3_of_the_expanding_search() -> None:
    done = run("search_quality.py", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    heldout = report["results"]["expanded"]["heldout"]
    assert heldout["n"] == len(json.loads(QUERIES.read_text())["heldout"])
    assert 0.0 <= heldout["recall@1"] <= heldout["recall@3"] <= heldout["recall@5"] <= 1.0
    assert 0.0 <= heldout["mrr"] <= 1.0
    assert 0.0 <= report["results"]["bm25"]["heldout"]["recall@3"] <= 1.0
    # The gate: exit 0 at or above the floor, 1 below it.
    assert run("search_quality.py", "--split", "heldout", "--min-recall3", "0").returncode == 0
    failed = run("search_quality.py", "--split", "heldout", "--min-recall3", "1.01")
    assert failed.returncode == 1 and "heldout recall@3 (expand=True)" in failed.stderr


def test_latency_runs_small_and_reports_every_row() -> None:
    small = ("--tools", "300", "--rounds", "1", "--builds", "1", "--updates", "3", "--seconds", "2")
    done = run("search_latency.py", *small, "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["tools"] == 300 and report["servers"] > 15
    assert 0.2 < report["denied"] / report["tools"] < 0.4
    assert set(report["search"]) == {
        "expand=True", "expand=False", "expand=True, no filter", "expand=True, new filter per query",
        "expand=True, cold (no word seen before)", "view build (an agent's statistics)",
    }
    for row in [report["build"], report["first_search"], *report["search"].values(), report["update"]["set_server"]]:
        assert row["n"] >= 1 and row["p50_us"] > 0 and row["p99_us"] >= row["p50_us"], row
    table = run("search_latency.py", *small)
    assert table.returncode == 0, table.stdout + table.stderr
    assert re.search(r"^300 tools on \d+ servers \(copies of \d+ real servers, seed 17\)", table.stdout, re.MULTILINE), table.stdout
    for label in ("index build", "search, expand=True", "search, expand=False", "update: set_server"):
        assert re.search(rf"^\| {re.escape(label)}.* \| \d+ \| \d+ \| \d+ \| \d+ \| \d+ \|$", table.stdout, re.MULTILINE), (label, table.stdout)
