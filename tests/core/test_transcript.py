"""Core transcripts: every event and action survives JSON, and replay finds the first difference."""

from __future__ import annotations

import json
from types import MappingProxyType
from typing import Any

import pytest

from lockgate.core._actions import Audit, CloseClient, Log, SendToClient, StartDownstream, StopDownstream
from lockgate.core._config import Config, Problem, Settings
from lockgate.core._events import (
    ClientClosed,
    ClientMessageReceived,
    ClientOpened,
    ConfigReloaded,
    DownstreamExited,
    DownstreamMessageReceived,
    Event,
    GatewayStarted,
    ShutdownRequested,
    TimerFired,
)
from lockgate.core._gateway import Gateway
from lockgate.core._policy import Policy
from lockgate.core.transcript import (
    REDACTED,
    TranscriptError,
    action_to_json,
    config_from_json,
    config_to_json,
    event_from_json,
    event_to_json,
    header,
    replay,
)

from .harness import RULES, call, make_config, req, server

CONFIG = make_config()


def lines_of(config: Config, events: list[Event]) -> list[dict[str, Any]]:
    """A transcript recorded by running ``events`` through a Gateway, parsed."""
    gateway = Gateway(config)
    out = [header(config, RULES)]
    for event in events:
        out.append(event_to_json(event))
        out.extend(action_to_json(a) for a in gateway.handle(event))
    return json.loads(json.dumps(out))  # type: ignore[no-any-return]


def session() -> list[Event]:
    def msg(now: float, message: dict[str, Any]) -> ClientMessageReceived:
        return ClientMessageReceived(now=now, client=0, data=json.dumps(message).encode())

    return [
        GatewayStarted(now=0.0),
        ClientOpened(now=0.0, client=0),
        msg(0.1, req(1, "initialize", {"protocolVersion": "2025-11-25"})),
        msg(0.2, call(2, "execute_tool", agent_id="dev", server="db", tool="get_user")),
        DownstreamMessageReceived(now=0.3, downstream=1, data=b'{"jsonrpc":"2.0","id":1,"result":{}}'),
        DownstreamMessageReceived(now=0.4, downstream=1, data=b'{"jsonrpc":"2.0","id":2,"result":{"tools":[{"name":"get_user"}]}}'),
        DownstreamMessageReceived(now=0.5, downstream=1, data=b'{"jsonrpc":"2.0","id":3,"result":{"content":[]}}'),
        ClientClosed(now=0.6, client=0),
        ShutdownRequested(now=0.7),
    ]


@pytest.mark.parametrize(
    "event",
    [
        GatewayStarted(now=1.5),
        ClientOpened(now=1.0, client="s-1", transport="http"),
        ClientMessageReceived(now=1.0, client=0, data=b'{"a": "\xc3\xa9"}'),
        ClientMessageReceived(now=1.0, client=0, data=b"\xff\xfe not utf-8"),
        ClientMessageReceived(now=1.0, client=0, data=b"", too_large=True),
        ClientClosed(now=2.0, client=0),
        DownstreamMessageReceived(now=1.0, downstream=3, data=b"garbage"),
        DownstreamExited(now=1.0, downstream=3, reason="exited with code 1"),
        TimerFired(now=9.25, timer=4),
        ShutdownRequested(now=3.0),
    ],
)
def test_every_event_survives_a_round_trip_through_json(event: Event) -> None:
    assert event_from_json(json.loads(json.dumps(event_to_json(event)))) == event


def test_bytes_are_text_when_utf8_and_base64_otherwise() -> None:
    assert event_to_json(DownstreamMessageReceived(now=0, downstream=1, data="é".encode()))["data"] == "é"
    line = event_to_json(DownstreamMessageReceived(now=0, downstream=1, data=b"\xff"))
    assert "data" not in line and line["data_base64"] == "/w=="


def test_a_reloaded_configuration_is_recorded_with_its_rules() -> None:
    event = ConfigReloaded(now=1.0, config=CONFIG)
    back = event_from_json(json.loads(json.dumps(event_to_json(event, RULES))))
    assert isinstance(back, ConfigReloaded) and back.config.servers == CONFIG.servers
    with pytest.raises(TranscriptError, match="without a recorded configuration"):
        event_from_json(event_to_json(event))


def test_configuration_round_trips_with_secrets_redacted() -> None:
    spec = server("db", env=MappingProxyType({"TOKEN": "s3cret"}), timeout_ms=5)
    config = Config(
        servers={"db": spec},
        policy=Policy.compile(RULES),
        settings=Settings(default_agent="dev", debug=True),
        warnings=(Problem(file="f", path="p", message="m"),),
    )
    text = json.dumps(config_to_json(config, RULES))
    assert "s3cret" not in text
    back = config_from_json(json.loads(text))
    assert back.settings == config.settings and back.warnings == config.warnings
    assert back.servers["db"].env == {"TOKEN": REDACTED} and back.servers["db"].timeout_ms == 5
    with pytest.raises(TranscriptError):
        config_from_json({"servers": []})


def test_actions_become_plain_json() -> None:
    assert action_to_json(StopDownstream(downstream=2)) == {"action": "StopDownstream", "downstream": 2}
    assert action_to_json(CloseClient(client=0)) == {"action": "CloseClient", "client": 0}
    assert action_to_json(Log(level="info", message="m", fields={"t": (1, 2)}))["fields"] == {"t": [1, 2]}
    assert action_to_json(SendToClient(client=0, message={"id": 1}))["request"] is None
    start = action_to_json(StartDownstream(downstream=1, server="db", spec=server("db", env={"K": "v"})))
    assert start["spec"]["env"] == {"K": REDACTED}
    assert action_to_json(Audit(record={"a": 1})) == {"action": "Audit", "record": {"a": 1}}


def test_a_recorded_session_replays_exactly() -> None:
    lines = lines_of(CONFIG, session())
    assert any(line.get("action") == "StartDownstream" for line in lines)
    assert replay(lines) is None


def test_replay_reports_the_first_divergent_action() -> None:
    lines = lines_of(CONFIG, session())
    index = next(i for i, line in enumerate(lines) if line.get("action") == "SendToClient" and line["message"]["id"] == 2)
    lines[index]["message"]["result"]["content"] = ["changed"]
    divergence = replay(lines)
    assert divergence is not None
    assert divergence.line == index + 1
    assert divergence.event["event"] == "DownstreamMessageReceived"
    assert divergence.expected == lines[index] and divergence.actual is not None
    assert divergence.actual["message"]["result"]["content"] == []


def test_replay_reports_missing_and_extra_actions() -> None:
    lines = lines_of(CONFIG, session())
    last = max(i for i, line in enumerate(lines) if "action" in line)
    extra = replay(lines[:last] + lines[last + 1 :])
    assert extra is not None and extra.expected is None and extra.actual == lines[last]
    lines.insert(last + 1, {"action": "Log", "level": "info", "message": "never", "fields": None})
    missing = replay(lines)
    assert missing is not None and missing.actual is None and missing.expected == lines[last + 1]


def test_malformed_transcripts_are_refused() -> None:
    with pytest.raises(TranscriptError, match="header"):
        replay([{"event": "GatewayStarted", "now": 0}])
    with pytest.raises(TranscriptError, match="format"):
        replay([{**header(CONFIG, RULES), "format": 99}])
    with pytest.raises(TranscriptError, match="before any event"):
        replay([header(CONFIG, RULES), {"action": "Log"}])
    with pytest.raises(TranscriptError, match="neither"):
        replay([header(CONFIG, RULES), {"what": 1}])
    with pytest.raises(TranscriptError, match="unknown event"):
        event_from_json({"event": "Nope", "now": 0})
    with pytest.raises(TranscriptError, match="without"):
        event_from_json({"event": "TimerFired", "now": 0})
    with pytest.raises(TranscriptError, match="numeric"):
        event_from_json({"event": "TimerFired"})
    with pytest.raises(TranscriptError, match="base64"):
        event_from_json({"event": "DownstreamMessageReceived", "now": 0, "downstream": 1, "data_base64": "!!"})
