"""The official MCP conformance suite against our fixture server, directly and through Lockgate.

``make conformance-official`` installs Node 22 and
``@modelcontextprotocol/conformance`` into ``build/node`` and runs this
script, which:

1. starts ``fixture_server.py`` (the SDK's ``MCPServer`` with every fixture
   the suite's server scenarios call) on a free port of 127.0.0.1;
2. runs ``conformance server --url http://127.0.0.1:PORT/mcp --requirements
   REVISION`` against it, for 2025-11-25 (the handshake era) and 2026-07-28
   (the stateless era; ``--requirements`` picks one): every scenario that
   revision requires of a server (scored), and the few it runs without scoring;
3. starts ``lockgate serve --transport http`` in front of the fixture, in
   transparent mode (``GATEWAY_MODE=aggregate GATEWAY_PREFIX=never``, every
   server allowed to the default agent), and runs the suite again against
   Lockgate's URL;
4. prints one line per scenario (direct, through Lockgate) and exits 0 only if

   - every scored scenario passes directly (the fixture is right), and
   - the scenarios that fail through Lockgate are exactly those listed in
     ``expected-failures.txt`` (2025-11-25) or ``expected-failures-REVISION.txt``: a new failure is a regression, and a listed
     scenario that passes must leave the list, so the list only shrinks.

A scenario passes when none of its checks fails (the suite's own rule:
warnings and notes do not fail it). The table shows, for each run, the
checks that succeeded of those that succeeded or failed, so a scenario that
passes with nothing checked (``pass 0/0``) is visible as such.

``--json`` prints the same as one JSON object. ``--keep DIR`` keeps the
suite's results (a ``checks.json`` per scenario and run) and the logs of the
fixture and of Lockgate in ``DIR``.

Everything listens on 127.0.0.1 only and runs in a temporary folder. Each
child runs in its own process group, and each step has a wall-clock limit;
on any exit (failure, timeout, Ctrl-C, SIGTERM) every group is sent SIGTERM,
then SIGKILL. The suite's ``server`` command binds no port (checked with
strace at this version), so it needs no private network namespace;
``no_listen.cjs`` makes the run fail should a later version start to.

Exit status: 0 as above; 1 when the results disagree with the rules above;
2 when the run could not happen (suite missing, a process would not start, a
step ran out of time).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent

#: The suite, as the Makefile installs it (``CONFORMANCE_VERSION`` there).
SUITE = "@modelcontextprotocol/conformance"
SUITE_VERSION = "0.2.0-alpha.12"
#: The revisions whose requirements are run, each against the fixture and through Lockgate.
REQUIREMENTS = ("2025-11-25", "2026-07-28")
NODE_BIN = REPO / "build" / "node" / "node_modules" / ".bin"
SUITE_DIR = REPO / "build" / "node" / "node_modules" / "@modelcontextprotocol" / "conformance"

def expected_failures(requirements: str) -> Path:
    """The list of scenarios of ``requirements`` expected to fail through Lockgate."""
    return HERE / ("expected-failures.txt" if requirements == "2025-11-25" else f"expected-failures-{requirements}.txt")

#: Lockgate's settings for the run through it: one server, every item of it
#: served under its own name, allowed to the agent a call without agent_id gets.
AGENT = "conformance"
LOCKGATE_ENV = {
    "GATEWAY_MODE": "aggregate",
    "GATEWAY_PREFIX": "never",
    "GATEWAY_DEFAULT_AGENT": AGENT,
    "GATEWAY_SHUTDOWN_GRACE": "2",
}
#: The era Lockgate speaks to the fixture, per revision: each revision's
#: scenarios with a client and a server of that era, so what passes through
#: is what a user of that era gets. (Across the eras, the bridge, is tested
#: by tests/e2e/test_eras.py.)
DOWNSTREAM_ERA = {"2025-11-25": "handshake", "2026-07-28": "stateless"}
RULES = {"agents": {AGENT: {"allow": {"servers": ["*"]}}}, "defaults": {"deny_on_missing_agent": False}}

#: Wall-clock limits, in seconds.
START_LIMIT = 30  # a child until it serves
SCENARIO_LIMIT_MS = 15_000  # the suite's own limit per scenario
SUITE_LIMIT = 240  # one run of the whole suite
STOP_LIMIT = 10  # a child after SIGTERM, before SIGKILL
TOTAL_LIMIT = 600  # the whole script

#: ``server-<scenario>-<ISO time with : and . as ->``, the suite's folder per scenario run.
RESULT_DIR = re.compile(r"^server-(?P<name>.+)-\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d-\d{3}Z$")
SERVING = re.compile(r"serving Streamable HTTP at (http://127\.0\.0\.1:\d+/mcp)")


class RunError(Exception):
    """The run could not happen (exit status 2), as opposed to results that disagree (1)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Scenario:
    """One server scenario of the requirement set: scored, or run and reported only (``not_scored`` says why)."""

    name: str
    not_scored: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Outcome:
    """One scenario's checks in one run, as the suite counts them."""

    succeeded: int
    failed: int
    warnings: int
    failures: tuple[str, ...] = ()

    @property
    def passed(self) -> bool:
        return self.failed == 0

    def cell(self) -> str:
        word = "pass" if self.passed else "FAIL"
        warned = f", {self.warnings} warn" if self.warnings else ""
        return f"{word} {self.succeeded}/{self.succeeded + self.failed}{warned}"


#: What a scenario that left no results (the suite stopped or skipped it) counts as.
MISSING = Outcome(succeeded=0, failed=1, warnings=0, failures=("no results: the scenario did not run to its end",))


@dataclass(slots=True, kw_only=True)
class Report:
    """Both runs and the verdict."""

    requirements: str
    scenarios: list[Scenario]
    direct: dict[str, Outcome] = field(default_factory=dict)
    lockgate: dict[str, Outcome] = field(default_factory=dict)
    expected: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    def judge(self) -> None:
        """Fill :attr:`problems` (results that break the rules) and :attr:`notes`."""
        names = {s.name for s in self.scenarios}
        for s in self.scenarios:
            direct = self.direct.get(s.name, MISSING)
            if not direct.passed:
                if s.not_scored is None:
                    self.problems.append(f"{s.name} fails directly (the fixture or the suite is wrong)")
                else:
                    # What the fixture itself cannot pass says nothing about Lockgate.
                    self.notes.append(f"{s.name} fails directly; not scored ({s.not_scored})")
                    continue
            through = self.lockgate.get(s.name, MISSING)
            listed = s.name in self.expected
            if not through.passed and not listed:
                self.problems.append(f"{s.name} fails through Lockgate and is not in {expected_failures(self.requirements).name}")
            if through.passed and listed:
                self.problems.append(f"{s.name} passes through Lockgate now: remove it from {expected_failures(self.requirements).name}")
            if through.passed and through.succeeded == 0 < direct.succeeded:
                self.notes.append(f"{s.name} passes through Lockgate with no check made (directly: {direct.succeeded})")
        for name in sorted(set(self.expected) - names):
            self.problems.append(f"{expected_failures(self.requirements).name} lists {name}, which is not a scenario of this run")

    def table(self) -> str:
        width = max(len(s.name) for s in self.scenarios) + len(" (not scored)")
        lines = [f"{'scenario':<{width}}  {'direct':<16}  {'through Lockgate':<16}  expected failure", ""]
        for s in self.scenarios:
            label = s.name if s.not_scored is None else f"{s.name} (not scored)"
            direct = self.direct.get(s.name, MISSING).cell()
            through = self.lockgate.get(s.name, MISSING).cell()
            lines.append(f"{label:<{width}}  {direct:<16}  {through:<16}  {self.expected.get(s.name, '')}".rstrip())
        scored = [s.name for s in self.scenarios if s.not_scored is None]
        passing = [sum(runs.get(n, MISSING).passed for n in scored) for runs in (self.direct, self.lockgate)]
        lines.append(f"\n{len(scored)} scored ({self.requirements}): {passing[0]} pass directly, {passing[1]} through Lockgate")
        for name, outcomes in (("direct", self.direct), ("through Lockgate", self.lockgate)):
            for s in self.scenarios:
                for failure in outcomes.get(s.name, MISSING).failures if s.name not in self.expected else ():
                    lines.append(f"  {name}: {s.name}: {failure}")
        lines += [f"note: {n}" for n in self.notes]
        lines += [f"PROBLEM: {p}" for p in self.problems]
        lines.append(f"times (s): {', '.join(f'{k} {v:.1f}' for k, v in self.seconds.items())}")
        lines.append("ok" if not self.problems else f"{len(self.problems)} problem(s)")
        return "\n".join(lines)

    def as_json(self) -> dict[str, Any]:
        def outcome(o: Outcome) -> dict[str, Any]:
            return {"passed": o.passed, **asdict(o), "failures": list(o.failures)}

        return {
            "suite": f"{SUITE}@{SUITE_VERSION}",
            "requirements": self.requirements,
            "lockgate_env": {**LOCKGATE_ENV, "GATEWAY_DOWNSTREAM_ERA": DOWNSTREAM_ERA[self.requirements]},
            "scenarios": [
                {
                    "name": s.name,
                    "scored": s.not_scored is None,
                    "not_scored_reason": s.not_scored,
                    "direct": outcome(self.direct.get(s.name, MISSING)),
                    "lockgate": outcome(self.lockgate.get(s.name, MISSING)),
                    "expected_failure": self.expected.get(s.name),
                }
                for s in self.scenarios
            ],
            "notes": self.notes,
            "problems": self.problems,
            "seconds": {k: round(v, 2) for k, v in self.seconds.items()},
            "ok": not self.problems,
        }


# --- Reading the suite's files and ours ------------------------------------


def read_requirements(path: Path) -> list[Scenario]:
    """The server scenarios of ``requirements/<revision>.yaml``: the ``server:`` list, then ``not_scored``.

    The file's shape is fixed by the suite (lists of names, and ``- scenario:``
    entries with ``leg:`` and ``reason:``), so a few lines read it without a
    YAML parser; one that reads nothing raises.
    """
    scored: list[Scenario] = []
    extra: list[Scenario] = []
    section = ""
    entry: dict[str, str] = {}

    def close_entry() -> None:
        if entry.get("leg") == "server":
            extra.append(Scenario(name=entry["scenario"], not_scored=entry.get("reason", "?")))
        entry.clear()

    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.split(" #", 1)[0].rstrip() if not raw.lstrip().startswith("#") else ""
        if not line:
            continue
        if not line.startswith(" "):
            close_entry()
            section = line.rstrip(":")
        elif section == "server" and line.startswith("  - "):
            scored.append(Scenario(name=line[4:].strip()))
        elif section == "not_scored" and line.startswith("  - scenario:"):
            close_entry()
            entry["scenario"] = line.split(":", 1)[1].strip()
        elif section == "not_scored" and line.startswith("    ") and ":" in line:
            key, value = line.strip().split(":", 1)
            entry[key] = value.strip()
    close_entry()
    if not scored:
        raise RunError(f"no server scenarios found in {path}")
    return scored + extra


def read_expected_failures(path: Path) -> dict[str, str]:
    """``scenario  # reason`` per line; blank lines and ``#`` lines are comments. A line without a reason raises."""
    expected: dict[str, str] = {}
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, _, reason = (part.strip() for part in line.partition("#"))
        if not name or " " in name or not reason:
            raise RunError(f"{path.name}:{number}: expected 'scenario-id  # reason', got {raw!r}")
        if name in expected:
            raise RunError(f"{path.name}:{number}: {name} is listed twice")
        expected[name] = reason
    return expected


def read_results(folder: Path) -> dict[str, Outcome]:
    """Each scenario's outcome from the suite's ``-o`` folder (``server-<name>-<time>/checks.json``)."""
    outcomes: dict[str, Outcome] = {}
    for run in sorted(folder.iterdir()) if folder.is_dir() else []:
        found = RESULT_DIR.match(run.name)
        checks_file = run / "checks.json"
        if not found or not checks_file.is_file():
            continue
        checks: list[dict[str, Any]] = json.loads(checks_file.read_text(encoding="utf-8"))
        failed = [c for c in checks if c.get("status") == "FAILURE"]
        outcomes[found["name"]] = Outcome(
            succeeded=sum(c.get("status") == "SUCCESS" for c in checks),
            failed=len(failed),
            warnings=sum(c.get("status") == "WARNING" for c in checks),
            failures=tuple(f"{c.get('id')}: {str(c.get('errorMessage') or c.get('description'))[:300]}"
                           for c in failed),
        )
    return outcomes


# --- Processes -------------------------------------------------------------


def free_port() -> int:
    """A port of 127.0.0.1 free at the time of asking."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the process group, SIGKILL after :data:`STOP_LIMIT` seconds; waits for the process."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            pass
        try:
            process.wait(timeout=STOP_LIMIT)
        except subprocess.TimeoutExpired:
            continue
        if sig == signal.SIGTERM:  # children left in the group get no second chance
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return


@contextmanager
def child(argv: Sequence[str], *, env: Mapping[str, str], cwd: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``argv`` in a process group of its own, stdout and stderr to ``log``; stopped on leaving."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            list(argv), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=dict(env), cwd=cwd,
            start_new_session=True,
        )  # fmt: skip
    try:
        yield process
    finally:
        stop(process)


def tail(path: Path, lines: int = 25) -> str:
    text = path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""
    return "\n".join("    " + line for line in text.splitlines()[-lines:])


def wait_for_port(process: subprocess.Popen[bytes], port: int, log: Path) -> None:
    """Return once 127.0.0.1:``port`` accepts a connection; raise if the process exits or time runs out."""
    deadline = time.monotonic() + START_LIMIT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RunError(f"the fixture server exited with status {process.returncode}:\n{tail(log)}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RunError(f"the fixture server did not listen on 127.0.0.1:{port} within {START_LIMIT} s:\n{tail(log)}")


def wait_for_url(process: subprocess.Popen[bytes], log: Path) -> str:
    """Lockgate's ``/mcp`` URL, once its log says it serves; raise if it exits or time runs out."""
    deadline = time.monotonic() + START_LIMIT
    while time.monotonic() < deadline:
        found = SERVING.search(log.read_text(encoding="utf-8", errors="replace"))
        if found:
            return found.group(1)
        if process.poll() is not None:
            raise RunError(f"lockgate serve exited with status {process.returncode}:\n{tail(log)}")
        time.sleep(0.1)
    raise RunError(f"lockgate serve did not serve within {START_LIMIT} s:\n{tail(log)}")


def run_suite(
    url: str, results: Path, *, requirements: str, env: Mapping[str, str], cwd: Path, log: Path
) -> dict[str, Outcome]:
    """One run of ``conformance server --requirements REQUIREMENTS`` against ``url``; its outcomes (a timeout raises)."""
    argv = [
        str(NODE_BIN / "conformance"), "server", "--url", url, "--requirements", requirements,
        "--timeout", str(SCENARIO_LIMIT_MS), "-o", str(results),
    ]  # fmt: skip
    with child(argv, env=env, cwd=cwd, log=log) as process:
        try:
            process.wait(timeout=SUITE_LIMIT)
        except subprocess.TimeoutExpired:
            raise RunError(f"the suite did not finish within {SUITE_LIMIT} s against {url}:\n{tail(log)}") from None
    outcomes = read_results(results)
    if not outcomes:
        raise RunError(f"the suite exited with status {process.returncode} and wrote no results:\n{tail(log)}")
    return outcomes


def check_suite() -> None:
    """Raise unless the pinned suite and Node are installed where the Makefile puts them."""
    manifest = SUITE_DIR / "package.json"
    if not (NODE_BIN / "conformance").exists() or not (NODE_BIN / "node").exists() or not manifest.exists():
        raise RunError(f"{SUITE} is not installed in build/node: run `make conformance-official`")
    version = json.loads(manifest.read_text(encoding="utf-8")).get("version")
    if version != SUITE_VERSION:
        raise RunError(f"build/node has {SUITE}@{version}, this script expects {SUITE_VERSION} (see the Makefile)")


# --- The run ---------------------------------------------------------------


def run(reports: Sequence[Report], work: Path) -> None:
    """Both runs of the suite for each report's revision, in ``work``; fills ``reports``."""
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(work), "LANG": "C.UTF-8"}
    node_env = {
        **base,
        "PATH": f"{NODE_BIN}{os.pathsep}{base['PATH']}",
        "NODE_OPTIONS": f"--require {HERE / 'no_listen.cjs'}",
    }
    with ExitStack() as stack:
        started = time.monotonic()
        port = free_port()
        fixture_log = work / "fixture.log"
        fixture = stack.enter_context(
            child([sys.executable, str(HERE / "fixture_server.py"), "--port", str(port)], env=base, cwd=work,
                  log=fixture_log)
        )  # fmt: skip
        wait_for_port(fixture, port, fixture_log)
        for report in reports:
            report.seconds["fixture start"] = time.monotonic() - started

        direct_url = f"http://127.0.0.1:{port}/mcp"
        for report in reports:
            started = time.monotonic()
            rev = report.requirements
            report.direct = run_suite(
                direct_url, work / rev / "direct", requirements=rev, env=node_env, cwd=work, log=work / rev / "direct.log"
            )
            report.seconds["suite direct"] = time.monotonic() - started

        (work / "servers.json").write_text(json.dumps({"mcpServers": {"fixture": {"url": direct_url}}}))
        (work / "rules.json").write_text(json.dumps(RULES))
        for report in reports:
            rev = report.requirements
            started = time.monotonic()
            lockgate_env = {
                **base,
                **LOCKGATE_ENV,
                "GATEWAY_DOWNSTREAM_ERA": DOWNSTREAM_ERA[rev],
                "GATEWAY_AUDIT_LOG": str(work / rev / "audit.jsonl"),
                "GATEWAY_STATE_DIR": str(work / rev / "state"),
            }
            argv = [
                sys.executable, "-m", "lockgate.shells", "serve", "--config", str(work / "servers.json"),
                "--rules", str(work / "rules.json"), "--transport", "http", "--host", "127.0.0.1", "--port", "0",
            ]  # fmt: skip
            lockgate_log = work / rev / "lockgate.log"
            with child(argv, env=lockgate_env, cwd=work, log=lockgate_log) as lockgate:
                url = wait_for_url(lockgate, lockgate_log)
                report.seconds["lockgate start"] = time.monotonic() - started
                started = time.monotonic()
                report.lockgate = run_suite(
                    url, work / rev / "lockgate", requirements=rev, env=node_env, cwd=work, log=work / rev / "lockgate-suite.log"
                )
                report.seconds["suite through Lockgate"] = time.monotonic() - started

        started = time.monotonic()
    for report in reports:
        report.seconds["stop"] = time.monotonic() - started


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise RunError(f"stopped by {signal.Signals(signum).name}")


def _out_of_time(signum: int, frame: FrameType | None) -> None:
    raise RunError(f"the whole run took more than {TOTAL_LIMIT} s")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the results as one JSON object")
    parser.add_argument("--keep", type=Path, metavar="DIR", help="keep the suite's results and the logs in DIR")
    parser.add_argument(
        "--requirements", action="append", choices=REQUIREMENTS, metavar="REVISION",
        help=f"the revision whose requirements to run (repeatable; default: {', '.join(REQUIREMENTS)})",
    )
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGINT, _terminate)
    signal.signal(signal.SIGALRM, _out_of_time)
    signal.alarm(TOTAL_LIMIT)
    total = time.monotonic()
    try:
        check_suite()
        reports = [
            Report(
                requirements=rev,
                scenarios=read_requirements(SUITE_DIR / "requirements" / f"{rev}.yaml"),
                expected=read_expected_failures(expected_failures(rev)),
            )
            for rev in args.requirements or REQUIREMENTS
        ]
        with tempfile.TemporaryDirectory(prefix="lockgate-conformance-") as temporary:
            for rev in args.requirements or REQUIREMENTS:
                (Path(temporary) / rev).mkdir()
            try:
                run(reports, Path(temporary))
            finally:
                if args.keep:
                    shutil.copytree(temporary, args.keep, dirs_exist_ok=True)
    except RunError as error:
        print(f"conformance-official: {error}", file=sys.stderr)
        return 2
    finally:
        signal.alarm(0)
    for report in reports:
        report.seconds["total"] = time.monotonic() - total
        report.judge()
    if args.json:
        print(json.dumps([report.as_json() for report in reports], indent=2))
    else:
        print("\n\n".join(report.table() for report in reports))
    return 1 if any(report.problems for report in reports) else 0


if __name__ == "__main__":
    sys.exit(main())
