"""Recording: per-session core transcripts that replay exactly, wire transcripts, `serve --record`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from lockgate.core import (
    ClientClosed,
    ClientMessageReceived,
    ClientOpened,
    DownstreamMessageReceived,
    Gateway,
    GatewayStarted,
    SetTimer,
    ShutdownRequested,
)
from lockgate.core.transcript import replay
from lockgate.shells.record import Recorder

from conformance.replay import read_jsonl
from tests.core.harness import RULES, call, make_config, req

CONFIG = make_config()


def message(now: float, client: Any, msg: dict[str, Any]) -> ClientMessageReceived:
    return ClientMessageReceived(now=now, client=client, data=json.dumps(msg).encode())


def test_each_session_gets_the_run_up_to_its_end_and_replays_exactly(tmp_path: Path) -> None:
    recorder = Recorder(tmp_path, CONFIG, RULES, transport="http", prefix="run")
    core = recorder.wrap(Gateway(CONFIG))
    base = 1000.0  # the shell's clock; the core sees seconds since the first event
    core.handle(GatewayStarted(now=base))
    for client in ("a", "b"):
        core.handle(ClientOpened(now=base, client=client, transport="http"))
        core.handle(message(base + 0.1, client, req(1, "initialize", {"protocolVersion": "2025-11-25"})))
    actions = core.handle(message(base + 0.2, "a", call(2, "execute_tool", agent_id="dev", server="db", tool="get_user")))
    # Deadlines go back to the shell in its own clock.
    assert [a.deadline for a in actions if isinstance(a, SetTimer)] == [base + 60.2, base + 30.2]
    core.handle(DownstreamMessageReceived(now=base + 0.3, downstream=1, data=b'{"jsonrpc":"2.0","id":1,"result":{}}'))
    core.handle(DownstreamMessageReceived(now=base + 0.4, downstream=1, data=b'{"jsonrpc":"2.0","id":2,"result":{"tools":[{"name":"get_user"}]}}'))
    core.handle(DownstreamMessageReceived(now=base + 0.5, downstream=1, data=b'{"jsonrpc":"2.0","id":3,"result":{"content":[]}}'))
    core.handle(ClientClosed(now=base + 0.6, client="a"))
    core.handle(message(base + 0.7, "b", req(3, "ping")))
    core.handle(ClientClosed(now=base + 0.8, client="b"))
    core.handle(ShutdownRequested(now=base + 0.9))
    recorder.close()

    first = read_jsonl(tmp_path / "run-s1.core.jsonl")
    second = read_jsonl(tmp_path / "run-s2.core.jsonl")
    run = read_jsonl(tmp_path / "run.all.core.jsonl")
    assert (first[0]["session"], first[0]["client"], second[0]["client"]) == (1, "a", "b")
    assert first[1] == {"event": "GatewayStarted", "now": 0.0}
    # Session a ends at its ClientClosed; b goes on to the shutdown, which follows its end.
    assert first[-1]["event"] == "ClientClosed" and first[-1]["client"] == "a"
    assert [line.get("event") for line in second[-3:]] == ["ClientClosed", "ShutdownRequested", None]
    assert second[1:len(first)] == first[1:]
    assert second[1:] == run[1:]
    for lines in (first, second, run):
        assert replay(lines) is None


def test_a_client_that_opens_again_starts_a_new_session(tmp_path: Path) -> None:
    recorder = Recorder(tmp_path, CONFIG, RULES, prefix="p")
    core = recorder.wrap(Gateway(CONFIG))
    tap = recorder.wire(0)
    core.handle(ClientOpened(now=5.0, client=0))
    tap("c2s", b'{"jsonrpc":"2.0","id":1,"method":"ping"}')
    tap("s2c", b'{"jsonrpc": "2.0", "id": 1, "result": {}}')
    tap("c2s", b"\xff")
    tap("c2s", b"not json")
    tap("c2s", None)
    core.handle(ClientClosed(now=6.0, client=0))
    core.handle(ClientOpened(now=7.0, client=0))
    recorder.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p-s1.core.jsonl", "p-s1.wire.jsonl", "p-s2.core.jsonl", "p.all.core.jsonl"]
    assert read_jsonl(tmp_path / "p-s1.wire.jsonl") == [
        {"dir": "c2s", "msg": {"jsonrpc": "2.0", "id": 1, "method": "ping"}},
        {"dir": "s2c", "msg": {"jsonrpc": "2.0", "id": 1, "result": {}}, "raw": '{"jsonrpc": "2.0", "id": 1, "result": {}}'},
        {"dir": "c2s", "raw_base64": "/w=="},
        {"dir": "c2s", "raw": "not json"},
        {"dir": "c2s", "too_large": True},
    ]
    assert [line["now"] for line in read_jsonl(tmp_path / "p-s2.core.jsonl")[1:]] == [0.0, 1.0, 2.0]


def test_serve_record_writes_a_core_and_a_wire_transcript(tmp_path: Path) -> None:
    (tmp_path / "servers.json").write_text(json.dumps({"mcpServers": {}}))
    (tmp_path / "rules.json").write_text(json.dumps(RULES))
    lines = [
        req(1, "initialize", {"protocolVersion": "2025-11-25"}),
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        call(2, "list_servers", agent_id="dev"),
    ]
    done = subprocess.run(
        [sys.executable, "-m", "lockgate.shells", "serve", "--config", "servers.json", "--rules", "rules.json", "--record", "rec"],
        input=b"".join(json.dumps(m).encode() + b"\n" for m in lines) + b"{oops\n",
        capture_output=True, cwd=tmp_path, timeout=60,
        env={"PATH": "/usr/bin:/bin", "GATEWAY_AUDIT_LOG": "/dev/null"},
    )
    assert done.returncode == 0, done.stderr.decode()
    [core] = (tmp_path / "rec").glob("*-s1.core.jsonl")
    [wire] = (tmp_path / "rec").glob("*-s1.wire.jsonl")
    assert replay(read_jsonl(core)) is None
    sent = [json.loads(line) for line in done.stdout.splitlines()]
    recorded = read_jsonl(wire)
    assert [line["msg"] for line in recorded if line["dir"] == "s2c"] == sent
    assert [line.get("msg", line.get("raw")) for line in recorded if line["dir"] == "c2s"] == [*lines, "{oops"]
    assert sent[-1]["error"]["code"] == -32700


def test_serve_record_into_a_folder_it_cannot_create_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "servers.json").write_text(json.dumps({"mcpServers": {}}))
    (tmp_path / "rules.json").write_text(json.dumps(RULES))
    (tmp_path / "file").write_text("")
    done = subprocess.run(
        [sys.executable, "-m", "lockgate.shells", "serve", "--config", "servers.json", "--rules", "rules.json", "--record", "file/rec"],
        capture_output=True, cwd=tmp_path, timeout=60, env={"PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 2
    assert b"cannot record into file/rec" in done.stderr
