"""The conformance corpus, replayed: through the core exactly, and through a real `lockgate serve` (stdio or HTTP).

Each transcript in conformance/transcripts/ was recorded by
conformance/record.py (`make conformance-record`). A failure here means
Lockgate now behaves differently from when the transcript was recorded: if
the change is intended, record again and review the transcript diff.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from conformance.replay import SHELL_SKIP, TRANSCRIPTS, corpus, core_replay, shell_replay, transport
from tests.e2e.conftest import processes_mentioning

NAMES = corpus()


def test_the_corpus_has_at_least_40_transcripts_each_with_its_wire_side() -> None:
    assert len(NAMES) >= 40
    assert [n for n in NAMES if not (TRANSCRIPTS / f"{n}.wire.jsonl").exists()] == []
    assert set(SHELL_SKIP) <= set(NAMES)
    # Shell replay runs over both fronts: stdio, and Streamable HTTP for the rest.
    assert {transport(n) for n in NAMES} >= {"stdio", "http"}


@pytest.mark.parametrize("name", NAMES)
def test_core_replay(name: str) -> None:
    report = core_replay(TRANSCRIPTS / f"{name}.core.jsonl")
    assert report is None, report


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.skip(reason=SHELL_SKIP[n])) if n in SHELL_SKIP else n for n in NAMES]
)
async def test_shell_replay(name: str, tmp_path: Path) -> None:
    report = await shell_replay(name, directory=tmp_path)
    assert report is None, report
    # The fake servers name tmp_path in their arguments: none may outlive the gateway.
    deadline = time.monotonic() + 10
    while processes_mentioning(str(tmp_path)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert processes_mentioning(str(tmp_path)) == []
