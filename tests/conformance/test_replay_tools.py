"""The replay tools themselves: a difference is reported, the fixture server answers like its recording."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conformance.replay import FAKE_SERVER, HERE, TRANSCRIPTS, core_replay, read_jsonl, sessions_of, shell_replay, transport


async def test_shell_replay_reports_a_message_that_differs_from_the_recording(tmp_path: Path) -> None:
    wire = read_jsonl(TRANSCRIPTS / "execute_results.wire.jsonl")
    last = max(i for i, line in enumerate(wire) if line["dir"] == "s2c")
    wire[last]["msg"]["result"]["content"][0]["text"] = "something else"
    report = await shell_replay("execute_results", directory=tmp_path, wire=wire)
    assert report is not None
    assert f"wire line {last + 1}: received a different message" in report
    assert "message.result.content[0].text" in report


async def test_shell_replay_reports_a_message_that_never_arrives(tmp_path: Path) -> None:
    wire = read_jsonl(TRANSCRIPTS / "handshake_version_2025_11_25.wire.jsonl")
    wire.append({"dir": "s2c", "msg": {"jsonrpc": "2.0", "id": 99, "result": {}}})
    report = await shell_replay("handshake_version_2025_11_25", directory=tmp_path, wire=wire, timeout=3)
    assert report is not None and f"wire line {len(wire)} never arrived" in report


def test_core_replay_shows_the_first_divergent_action(tmp_path: Path) -> None:
    lines = (TRANSCRIPTS / "error_tool_not_found.core.jsonl").read_text().splitlines()
    index = next(i for i, text in enumerate(lines) if '"TOOL_NOT_FOUND"' in text and '"SendToClient"' in text)
    lines[index] = lines[index].replace("TOOL_NOT_FOUND", "SOMETHING_ELSE")
    path = tmp_path / "t.core.jsonl"
    path.write_text("\n".join(lines) + "\n")
    report = core_replay(path)
    assert report is not None
    assert report.startswith(f"t.core.jsonl: line {index + 1}: action #")
    assert '- action.message.error.data.code: recorded "SOMETHING_ELSE" != replayed "TOOL_NOT_FOUND"' in report


def test_the_fixture_server_answers_requests_like_its_recording() -> None:
    requests = [
        {"jsonrpc": "2.0", "id": 10, "method": "initialize", "params": {"protocolVersion": "2025-11-25"}},
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 11, "method": "tools/call", "params": {"name": "slow", "arguments": {"steps": 2}, "_meta": {"progressToken": "t"}}},
        {"jsonrpc": "2.0", "id": 12, "method": "nope"},
    ]
    done = subprocess.run(
        [sys.executable, str(FAKE_SERVER), "--wire", str(HERE / "fixtures" / "stdio_legacy_basic.jsonl")],
        input="".join(json.dumps(r) + "\n" for r in requests), capture_output=True, text=True, timeout=30,
    )
    answers = [json.loads(line) for line in done.stdout.splitlines()]
    assert answers[0]["id"] == 10 and answers[0]["result"]["serverInfo"]["name"] == "spec-test-server"
    assert [a["params"]["progressToken"] for a in answers[1:3]] == ["t", "t"]
    assert answers[3]["id"] == 11 and answers[3]["result"]["structuredContent"] == {"result": "done 2"}
    assert answers[4] == {"jsonrpc": "2.0", "id": 12, "error": {"code": -32601, "message": "Method not found: nope"}}


async def test_http_shell_replay_reports_a_difference_in_an_sse_progress_notification(tmp_path: Path) -> None:
    wire = read_jsonl(TRANSCRIPTS / "http_progress.wire.jsonl")
    index = next(i for i, line in enumerate(wire) if line.get("msg", {}).get("method") == "notifications/progress")
    wire[index]["msg"]["params"]["message"] = "something else"
    report = await shell_replay("http_progress", directory=tmp_path, wire=wire)
    assert report is not None
    assert f"wire line {index + 1}: received a different message" in report
    assert "message.params.message" in report


def test_sessions_of_one_http_run_replay_together() -> None:
    assert sessions_of("http_sessions_2") == ["http_sessions_1", "http_sessions_2"]
    assert sessions_of("concurrent_sessions_1") == ["concurrent_sessions_1", "concurrent_sessions_2"]
    assert sessions_of("handshake_version_2025_11_25") == ["handshake_version_2025_11_25"]  # stdio: a name, not a run
    assert transport("http_progress") == "http"
