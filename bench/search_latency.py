"""How fast the core's tool search is with 5,000 tools: build, query, update.

The catalogue is made from the real one (``bench/data/search_catalog.json``):
copies of the real servers under new names (``git-007``, ...) until there
are ``--tools`` tools (default 5,000), the last copy cut short. So that the
index is not the same few documents many times over, every copy's
descriptions are varied deterministically (a fixed ``--seed``): some words
dropped, a few words from a made-up vocabulary added, per server and per tool.

Measured, in one run, on one core, with ``time.perf_counter_ns``:

- index build: ``SearchIndex()`` and ``set_server`` for every server, a few
  times (the first search, which builds the statistics for a filter, is
  timed apart);
- per-query latency, p50/p99/mean over every query of
  ``bench/data/search_queries.json``, in rounds (bounded by ``--rounds`` and
  ``--seconds``), for ``expand=True`` (what ``search_tools`` does) and
  ``expand=False`` (plain BM25F, the baseline), each with an ``allowed``
  predicate that denies about 30% of the tools; the two variants alternate
  within each round so drift falls on both alike. Also ``expand=True`` with
  no predicate, and with a new predicate object on every query (a caller that
  builds its filter per call, so no statistics are reused);
- index update: ``set_server`` with a new tool list for one server (one
  description changed), alone, and with the first search after it (the
  statistics are rebuilt then).

    python bench/search_latency.py            # the table
    python bench/search_latency.py --json     # one JSON object
    python bench/search_latency.py --tools 500 --rounds 1 --seconds 2   # a quick look

Bounded: each phase stops at its share of ``--seconds`` (default 8; the
query phase gets twice that, warm-up and the per-call-filter phase half), so a
full run stays under a minute however slow the search. Wall-clock times are
reported with this thread's CPU time beside them: on a busy machine the wall
clock includes waiting for a core.
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lockgate.core._search import SearchIndex

ROOT = Path(__file__).resolve().parents[1]
CATALOG = ROOT / "bench" / "data" / "search_catalog.json"
QUERIES = ROOT / "bench" / "data" / "search_queries.json"

Catalog = dict[str, tuple[str | None, list[dict[str, Any]]]]


def made_up_words(rng: random.Random, count: int) -> list[str]:
    """Pronounceable nonsense words: new vocabulary that no query shares, so it only adds to the index."""
    consonants, vowels = "bcdfghklmnprstvz", "aeiou"
    found: set[str] = set()
    while len(found) < count:
        found.add("".join(rng.choice(consonants) + rng.choice(vowels) for _ in range(rng.randint(2, 4))))
    return sorted(found)


def vary(text: str, rng: random.Random, vocabulary: list[str]) -> str:
    """``text`` with about one word in ten dropped and one to three made-up words added."""
    words = [w for w in text.split() if rng.random() >= 0.1] or text.split()
    for _ in range(rng.randint(1, 3)):
        words.insert(rng.randint(0, len(words)), rng.choice(vocabulary))
    return " ".join(words)


def large_catalog(real: dict[str, Any], tools: int, seed: int) -> Catalog:
    """Copies of the real servers under new names, varied, until there are ``tools`` tools."""
    rng = random.Random(seed)
    vocabulary = made_up_words(rng, 2000)
    out: Catalog = {}
    total = 0
    copy_no = 0
    while total < tools:
        for name in sorted(real):
            if total >= tools:
                break
            server = real[name]
            listed = copy.deepcopy(server["tools"])[: tools - total]
            for tool in listed:
                if tool.get("description"):
                    tool["description"] = vary(tool["description"], rng, vocabulary)
            description = server.get("description")
            label = vary(f"{name} server {description or ''}", rng, vocabulary)
            out[f"{name}-{copy_no:03d}"] = (label, listed)
            total += len(listed)
        copy_no += 1
    return out


def deny_some(catalog: Catalog, share: float, seed: int) -> tuple[Callable[[str, str], bool], int]:
    """An ``allowed`` predicate that denies ``share`` of the tools (chosen with ``seed``), and how many it denies."""
    rng = random.Random(seed + 1)
    denied = {(s, t["name"]) for s, (_, listed) in catalog.items() for t in listed if rng.random() < share}

    def allowed(server: str, tool: str) -> bool:
        return (server, tool) not in denied

    return allowed, len(denied)


def build(catalog: Catalog) -> SearchIndex:
    index = SearchIndex()
    for name, (description, listed) in catalog.items():
        index.set_server(name, description, listed)
    return index


def summary(samples_ns: list[int]) -> dict[str, float]:
    """p50, p99 and mean in microseconds, and the count."""
    if not samples_ns:
        return {"n": 0, "p50_us": float("nan"), "p99_us": float("nan"), "mean_us": float("nan")}
    ordered = sorted(samples_ns)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return {"n": len(ordered), "p50_us": statistics.median(ordered) / 1e3, "p99_us": p99 / 1e3, "mean_us": statistics.fmean(ordered) / 1e3}


def timed(call: Callable[[], object]) -> tuple[int, int]:
    """Wall-clock and this thread's CPU nanoseconds for one call (CPU time shows the work on a busy machine)."""
    cpu = time.thread_time_ns()
    wall = time.perf_counter_ns()
    call()
    return time.perf_counter_ns() - wall, time.thread_time_ns() - cpu


class Samples:
    """Wall and CPU times of one kind of call."""

    def __init__(self) -> None:
        self.wall: list[int] = []
        self.cpu: list[int] = []

    def add(self, times: tuple[int, int]) -> None:
        self.wall.append(times[0])
        self.cpu.append(times[1])

    def summary(self) -> dict[str, float]:
        out = summary(self.wall)
        out["cpu_p50_us"] = statistics.median(self.cpu) / 1e3 if self.cpu else float("nan")
        return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    real = json.loads(args.catalog.read_text())["servers"]
    data = json.loads(args.queries.read_text())
    queries = [item["query"] for split in ("heldout", "dev") for item in data[split]]
    catalog = large_catalog(real, args.tools, args.seed)
    allowed, denied = deny_some(catalog, args.deny, args.seed)
    tools = sum(len(listed) for _, listed in catalog.values())
    seconds = args.seconds

    def phase_over(deadline: float) -> bool:
        return time.monotonic() > deadline

    # Build: the index alone, then the first search (its statistics for the filter are made then).
    builds = Samples()
    first = Samples()
    deadline = time.monotonic() + seconds
    index = SearchIndex()
    for _ in range(args.builds):
        gc.collect()
        holder: list[SearchIndex] = []
        builds.add(timed(lambda: holder.append(build(catalog))))
        index = holder[0]
        first.add(timed(lambda: index.search(queries[0], limit=args.limit, allowed=allowed)))
        if phase_over(deadline):
            break

    # Warm-up: every memo the index keeps for a query made once, as in a long-running gateway.
    deadline = time.monotonic() + seconds / 2
    for query in queries:
        for expand in (True, False):
            index.search(query, limit=args.limit, allowed=allowed, expand=expand)
        index.search(query, limit=args.limit, expand=True)
        if phase_over(deadline):
            break

    # Queries: expand=True and expand=False back to back on each query (in turn first), both filtered,
    # and expand=True with no filter.
    kinds = {"expand=True": Samples(), "expand=False": Samples(), "expand=True, no filter": Samples(), "expand=True, new filter per query": Samples()}
    rounds = 0
    deadline = time.monotonic() + 2 * seconds
    while rounds < args.rounds and not phase_over(deadline):
        for i, query in enumerate(queries):
            order = (True, False) if (i + rounds) % 2 == 0 else (False, True)
            for expand in order:
                kinds[f"expand={expand}"].add(timed(lambda: index.search(query, limit=args.limit, allowed=allowed, expand=expand)))
            kinds["expand=True, no filter"].add(timed(lambda: index.search(query, limit=args.limit, expand=True)))
            if phase_over(deadline):
                break
        rounds += 1
    # Cold: a new view for every query (made untimed), so no word of the query has been scored before.
    kinds["expand=True, cold (no word seen before)"] = Samples()
    kinds["view build (an agent's statistics)"] = Samples()
    deadline = time.monotonic() + seconds / 2
    for query in queries:
        views: list[Any] = []
        kinds["view build (an agent's statistics)"].add(timed(lambda: views.append(index.view(None, allowed))))
        kinds["expand=True, cold (no word seen before)"].add(timed(lambda: views[0].search(query, limit=args.limit, expand=True)))
        if phase_over(deadline):
            break
    # A new predicate object on every query (the same decisions): a caller that makes its filter per call.
    deadline = time.monotonic() + seconds / 2
    for query in queries:
        fresh = deny_some_again(allowed)
        kinds["expand=True, new filter per query"].add(timed(lambda: index.search(query, limit=args.limit, allowed=fresh, expand=True)))
        if phase_over(deadline):
            break

    # Update: one server's list replaced by a new one (one description changed), alone and with the next search.
    target = sorted(catalog)[len(catalog) // 2]
    description, listed = catalog[target]
    updates = Samples()
    with_search = Samples()
    deadline = time.monotonic() + seconds
    for i in range(args.updates):
        changed = copy.deepcopy(listed)
        if changed:
            changed[0]["description"] = f"{changed[0].get('description', '')} (revision {i})"
        times = timed(lambda: index.set_server(target, description, changed))
        updates.add(times)
        after = timed(lambda: index.search(queries[i % len(queries)], limit=args.limit, allowed=allowed))
        with_search.add((times[0] + after[0], times[1] + after[1]))
        if phase_over(deadline):
            break

    return {
        "tools": tools,
        "servers": len(catalog),
        "real_servers": len(real),
        "denied": denied,
        "seed": args.seed,
        "queries": len(queries),
        "rounds": rounds,
        "limit": args.limit,
        "build": builds.summary(),
        "first_search": first.summary(),
        "search": {label: samples.summary() for label, samples in kinds.items()},
        "update": {
            "server": target,
            "server_tools": len(listed),
            "set_server": updates.summary(),
            "set_server_and_next_search": with_search.summary(),
        },
    }


def deny_some_again(allowed: Callable[[str, str], bool]) -> Callable[[str, str], bool]:
    """The same decisions as ``allowed``, in a new function object."""
    return lambda server, tool: allowed(server, tool)


def table(r: dict[str, Any]) -> str:
    u = r["update"]
    lines = [
        f"{r['tools']} tools on {r['servers']} servers (copies of {r['real_servers']} real servers, seed {r['seed']}); "
        f"the filter denies {r['denied']} ({r['denied'] / r['tools']:.0%}); {r['queries']} queries, {r['rounds']} rounds begun; limit {r['limit']}",
        "",
        "| what | n | p50 µs | p99 µs | mean µs | CPU p50 µs |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]

    def row(label: str, s: dict[str, float]) -> None:
        lines.append(f"| {label} | {s['n']} | {s['p50_us']:.0f} | {s['p99_us']:.0f} | {s['mean_us']:.0f} | {s['cpu_p50_us']:.0f} |")

    row("index build (all servers)", r["build"])
    row("first search after a build", r["first_search"])
    for label, s in r["search"].items():
        row(f"search, {label}", s)
    row(f"update: set_server ({u['server']}, {u['server_tools']} tools)", u["set_server"])
    row("update: set_server + next search", u["set_server_and_next_search"])
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--catalog", type=Path, default=CATALOG)
    parser.add_argument("--queries", type=Path, default=QUERIES)
    parser.add_argument("--tools", type=int, default=5000, help="tools in the made catalogue (default 5000)")
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--deny", type=float, default=0.3, help="share of tools the allowed predicate denies (default 0.3)")
    parser.add_argument("--limit", type=int, default=5, help="hits per search (default 5, search_tools' default)")
    parser.add_argument("--rounds", type=int, default=10, help="rounds over the query set, at most (default 10)")
    parser.add_argument("--builds", type=int, default=5, help="index builds to time, at most (default 5)")
    parser.add_argument("--updates", type=int, default=50, help="index updates to time, at most (default 50)")
    parser.add_argument("--seconds", type=float, default=8.0, help="time limit of each phase (default 8)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = parser.parse_args(argv)
    report = run(args)
    print(json.dumps(report, indent=1) if args.json else table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
