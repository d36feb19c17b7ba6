"""The official-suite runner's reading and judging (conformance/official/run.py), without Node.

`make conformance-official` runs the suite itself; these tests pin what the
runner makes of the suite's files and of ours, in milliseconds.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conformance.official.run import (
    REQUIREMENTS,
    expected_failures,
    MISSING,
    Outcome,
    Report,
    RunError,
    Scenario,
    read_expected_failures,
    read_requirements,
    read_results,
)

PASS = Outcome(succeeded=2, failed=0, warnings=0)
FAIL = Outcome(succeeded=1, failed=1, warnings=0, failures=("x: Failed",))

#: The suite's requirements/<revision>.yaml, cut down, in its own shape.
REQUIREMENTS_YAML = """\
# Conformance requirements for the 2025-11-25 specification revision.
server:
  - server-initialize
  - tools-call-simple-text

client:
  - initialize

not_scored:
  - scenario: auth/dpop
    leg: client
    reason: extension
  - scenario: json-schema-2020-12
    leg: server
    reason: pending
    note: >-
      the reference fixture cannot pass it yet; the implementation under test might
  - scenario: server-sse-polling
    leg: server
    reason: pending
"""


def test_the_requirement_set_gives_the_scored_server_scenarios_then_the_unscored(tmp_path: Path) -> None:
    path = tmp_path / "2025-11-25.yaml"
    path.write_text(REQUIREMENTS_YAML)
    assert read_requirements(path) == [
        Scenario(name="server-initialize"),
        Scenario(name="tools-call-simple-text"),
        Scenario(name="json-schema-2020-12", not_scored="pending"),
        Scenario(name="server-sse-polling", not_scored="pending"),
    ]


def test_a_requirement_set_without_server_scenarios_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("client:\n  - initialize\n")
    with pytest.raises(RunError, match="no server scenarios"):
        read_requirements(path)


@pytest.mark.parametrize("revision", REQUIREMENTS)
def test_each_revisions_expected_failures_file_reads_and_gives_each_entry_a_reason(revision: str) -> None:
    # A new line needs its reason.
    expected = read_expected_failures(expected_failures(revision))
    assert all(reason for reason in expected.values())
    assert expected_failures("2025-11-25").name == "expected-failures.txt"


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("tools-list\n", "expected 'scenario-id  # reason'"),
        ("tools-list  #\n", "expected 'scenario-id  # reason'"),
        ("tools list  # two words\n", "expected 'scenario-id  # reason'"),
        ("ping  # a\nping  # b\n", "listed twice"),
    ],
)
def test_an_expected_failure_without_a_reason_or_listed_twice_is_refused(
    tmp_path: Path, text: str, complaint: str
) -> None:
    path = tmp_path / "expected-failures.txt"
    path.write_text("# comment\n\n" + text)
    with pytest.raises(RunError, match=complaint):
        read_expected_failures(path)


def test_results_are_read_per_scenario_folder_and_counted_as_the_suite_counts(tmp_path: Path) -> None:
    def write(folder: str, statuses: list[str]) -> None:
        (tmp_path / folder).mkdir()
        checks = [{"id": f"c{i}", "status": s, "errorMessage": f"m{i}"} for i, s in enumerate(statuses)]
        (tmp_path / folder / "checks.json").write_text(json.dumps(checks))

    write("server-tools-call-simple-text-2026-12-01T05-59-57-554Z", ["SUCCESS", "FAILURE", "WARNING", "INFO"])
    write("server-server-sse-polling-2026-12-01T05-59-58-793Z", ["INFO", "WARNING"])
    write("not-a-result", ["FAILURE"])
    assert read_results(tmp_path) == {
        "tools-call-simple-text": Outcome(succeeded=1, failed=1, warnings=1, failures=("c1: m1",)),
        "server-sse-polling": Outcome(succeeded=0, failed=0, warnings=1),
    }
    assert read_results(tmp_path / "absent") == {}


def report(**runs: tuple[Outcome, Outcome]) -> Report:
    names = [name.replace("_", "-") for name in runs]
    r = Report(requirements="2025-11-25", scenarios=[Scenario(name=n, not_scored="pending" if n.startswith("pending") else None) for n in names])
    for name, (direct, through) in zip(names, runs.values(), strict=True):
        r.direct[name], r.lockgate[name] = direct, through
    return r


def test_a_run_that_matches_the_list_has_no_problem() -> None:
    r = report(ping=(PASS, PASS), tools_list=(PASS, FAIL))
    r.expected = {"tools-list": "not served yet"}
    r.judge()
    assert r.problems == []
    assert "ok" in r.table().splitlines()[-1]


def test_a_scored_scenario_failing_directly_is_a_problem_an_unscored_one_a_note() -> None:
    r = report(ping=(FAIL, FAIL), pending_polling=(FAIL, FAIL))
    r.expected = {"ping": "a"}
    r.judge()
    assert r.problems == ["ping fails directly (the fixture or the suite is wrong)"]
    assert r.notes == ["pending-polling fails directly; not scored (pending)"]


def test_an_unscored_scenario_the_fixture_fails_asks_nothing_of_lockgate() -> None:
    r = report(pending_polling=(FAIL, FAIL), pending_other=(PASS, FAIL))
    r.judge()
    # Failing directly, it need not pass through Lockgate; passing directly, it must.
    assert r.problems == ["pending-other fails through Lockgate and is not in expected-failures.txt"]


def test_an_unlisted_failure_a_listed_pass_and_an_unknown_entry_are_problems() -> None:
    r = report(ping=(PASS, FAIL), tools_list=(PASS, PASS))
    r.expected = {"tools-list": "a", "no-such-scenario": "b"}
    r.judge()
    assert r.problems == [
        "ping fails through Lockgate and is not in expected-failures.txt",
        "tools-list passes through Lockgate now: remove it from expected-failures.txt",
        "expected-failures.txt lists no-such-scenario, which is not a scenario of this run",
    ]


def test_a_scenario_without_results_counts_as_failed() -> None:
    r = report(ping=(PASS, PASS))
    del r.lockgate["ping"]
    r.judge()
    assert r.problems == ["ping fails through Lockgate and is not in expected-failures.txt"]
    assert not MISSING.passed


def test_a_pass_with_nothing_checked_through_lockgate_is_noted_and_json_says_all() -> None:
    r = report(pending_polling=(PASS, Outcome(succeeded=0, failed=0, warnings=0)))
    r.judge()
    assert r.problems == []
    assert r.notes == ["pending-polling passes through Lockgate with no check made (directly: 2)"]
    [scenario] = r.as_json()["scenarios"]
    assert scenario["scored"] is False and scenario["lockgate"] == {
        "passed": True, "succeeded": 0, "failed": 0, "warnings": 0, "failures": []
    }  # fmt: skip
