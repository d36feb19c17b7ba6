"""The audit file and the stderr log format."""

from __future__ import annotations

import io
import json
import logging
from datetime import datetime, timezone
from pathlib import Path

import pytest

from lockgate.shells.audit import AuditLog, utc_timestamp
from lockgate.shells.logs import NOTICE, get_logger, setup_logging


def test_audit_creates_its_directory_lazily_and_appends(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "dir" / "audit.jsonl"
    audit = AuditLog(str(path))
    assert not path.parent.exists()
    audit.write({"decision": "ALLOW", "tool": "é"})
    assert path.read_text(encoding="utf-8").count("\n") == 1  # flushed at once
    audit.write({"decision": "DENY", "time": "overridden"})
    audit.close()
    first, second = (json.loads(line) for line in path.read_text(encoding="utf-8").splitlines())
    assert list(first) == ["time", "decision", "tool"] and first["tool"] == "é"
    assert second["time"] == "overridden"
    assert AuditLog(str(path)).records == 0


def test_unopenable_audit_log_logs_one_error_and_goes_on(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    audit = AuditLog(str(blocker / "audit.jsonl"))
    for _ in range(3):
        audit.write({"n": 1})
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "cannot open the audit log" in errors[0].getMessage()
    assert audit.records == 0


def test_a_record_that_cannot_be_encoded_is_written_escaped_and_auditing_goes_on(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # Regression: a lone surrogate in one record once switched the audit log off for good.
    path = tmp_path / "audit.jsonl"
    audit = AuditLog(str(path))
    audit.write({"decision": "DENY", "args": {"keys": ["\ud800"]}})
    audit.write({"decision": "ERROR", "latency_ms": float("nan")})
    audit.write({"decision": "ALLOW"})
    audit.close()
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert [(r["decision"], r.get("audit_error")) for r in lines] == [
        ("DENY", "UnicodeEncodeError"), ("ERROR", "ValueError"), ("ALLOW", None),
    ]
    assert lines[0]["args"] == {"keys": ["\ud800"]}  # escaped in the file, read back as it was
    assert audit.records == 3
    assert len([r for r in caplog.records if r.levelno == logging.ERROR]) == 2


def test_disabled_audit_log_writes_nothing() -> None:
    audit = AuditLog("")
    audit.write({"n": 1})
    assert audit.records == 0


def test_utc_timestamp() -> None:
    moment = datetime(2026, 5, 9, 12, 0, 0, 123456, tzinfo=timezone.utc)
    assert utc_timestamp(moment) == "2026-05-09T12:00:00.123Z"


def test_log_lines_are_single_lines_with_fields() -> None:
    stream = io.StringIO()
    try:
        setup_logging(debug=False, stream=stream)
        log = get_logger("test")
        log.info("hidden when quiet")
        log.log(NOTICE, "summary")
        log.warning("two\nlines", extra={"fields": {"server": "notes", "note": "a b", "n": 3}})
        lines = stream.getvalue().splitlines()
        assert len(lines) == 2
        assert lines[0].endswith(" NOTICE summary")
        assert lines[1].endswith(' WARNING two\\nlines server=notes note="a b" n=3')
        setup_logging(debug=True, stream=stream)
        log.debug("now shown")
        assert stream.getvalue().splitlines()[-1].endswith(" DEBUG now shown")
        assert len(get_logger().handlers) == 1
    finally:
        logger = get_logger()
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        logger.propagate = True
        logger.setLevel(logging.NOTSET)


@pytest.fixture
def reset_logger() -> object:
    yield
    logger = get_logger()
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    logger.propagate = True
    logger.setLevel(logging.NOTSET)


def test_json_log_lines_are_one_object_each_with_fields(reset_logger: object) -> None:
    stream = io.StringIO()
    setup_logging(log_format="json", stream=stream)
    get_logger("core").warning(
        "two\nlines", extra={"fields": {"server": "notes", "agent": "a", "request": 7, "message": "clash"}}
    )
    get_logger("core").info("hidden when quiet")
    try:
        raise ValueError("boom")
    except ValueError:
        get_logger("x").exception("failed")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert list(first) == ["time", "level", "logger", "message", "server", "agent", "request", "fields"]
    assert first["level"] == "WARNING" and first["logger"] == "lockgate.core" and first["message"] == "two\nlines"
    assert (first["server"], first["agent"], first["request"], first["fields"]) == ("notes", "a", 7, {"message": "clash"})
    assert datetime.strptime(first["time"], "%Y-%m-%dT%H:%M:%S.%fZ")
    assert second["level"] == "ERROR" and "ValueError: boom" in second["exception"]


@pytest.mark.parametrize(
    ("level", "debug", "shown"),
    [
        (None, False, ["NOTICE", "WARNING", "ERROR"]),
        (None, True, ["DEBUG", "INFO", "NOTICE", "WARNING", "ERROR"]),
        ("info", False, ["INFO", "NOTICE", "WARNING", "ERROR"]),
        ("warning", True, ["WARNING", "ERROR"]),  # an explicit level wins over debug
        ("error", False, ["ERROR"]),
        ("debug", False, ["DEBUG", "INFO", "NOTICE", "WARNING", "ERROR"]),
    ],
)
def test_log_level_threshold(reset_logger: object, level: str | None, debug: bool, shown: list[str]) -> None:
    stream = io.StringIO()
    setup_logging(level=level, debug=debug, log_format="json", stream=stream)
    log = get_logger("t")
    for value in (logging.DEBUG, logging.INFO, NOTICE, logging.WARNING, logging.ERROR):
        log.log(value, "x")
    assert [json.loads(line)["level"] for line in stream.getvalue().splitlines()] == shown


def test_text_log_fields_show_lists_as_compact_json(reset_logger: object) -> None:
    stream = io.StringIO()
    setup_logging(stream=stream)
    get_logger("core").log(NOTICE, "configuration reloaded", extra={"fields": {"added": ["a", "b"], "removed": [], "x": {"k": "v w"}}})
    assert stream.getvalue().rstrip().endswith('configuration reloaded added=["a","b"] removed=[] x="{\\"k\\":\\"v w\\"}"')


_APPENDER = """
import sys
from lockgate.shells.audit import AuditLog
audit = AuditLog(sys.argv[1])
for n in range(int(sys.argv[3])):
    audit.write({"writer": sys.argv[2], "n": n, "pad": "x" * (n % 7) * 5000})
audit.close()
"""


def test_processes_appending_to_one_audit_file_lose_and_interleave_nothing(tmp_path: Path) -> None:
    # As N workers of one `lockgate serve --workers N` do: records up to 30 KB, over the pipe-sized 4 KB.
    import subprocess
    import sys

    path = tmp_path / "audit.jsonl"
    writers = [
        subprocess.Popen([sys.executable, "-c", _APPENDER, str(path), str(w), "300"]) for w in range(4)
    ]
    assert [w.wait(120) for w in writers] == [0, 0, 0, 0]
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert len(records) == 4 * 300
    for w in range(4):
        assert [r["n"] for r in records if r["writer"] == str(w)] == list(range(300))
