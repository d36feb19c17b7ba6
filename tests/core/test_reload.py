"""Configuration reload in the core: what changes at once, what drains, what is recorded."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from lockgate.core._actions import CancelTimer, Log, SendToClient, SendToDownstream, SetTimer, StartDownstream, StopDownstream
from lockgate.core._config import Config, Problem, load_config
from lockgate.core._events import ConfigRejected, ConfigReloaded, ShutdownRequested

from .harness import DROP_TOOL, ECHO_TOOL, GET_TOOL, RULES, Driver, audited, call, make_config, sent_downstream, sent_to_client, server

TOOLS = [ECHO_TOOL, DROP_TOOL, GET_TOOL]


def ready(d: Driver, srv: str = "db") -> None:
    d.send(call(900 + len(d.downstreams), "get_server_tools", agent_id="dev", server=srv))
    d.handshake(srv, TOOLS)


def answer(d: Driver, connection: int, text: str = "ok") -> list[Any]:
    """Connection ``connection`` answers the latest call it was sent."""
    return d.downstreams[connection].answer("tools/call", result={"content": [{"type": "text", "text": text}]})


def reloaded(**fields: Any) -> Log:
    return Log(level="notice", message="configuration reloaded", fields={"files": [], "added": [], "removed": [], "changed": [], **fields})


def with_servers(config: Config, **specs: Any) -> Config:
    return replace(config, servers=specs)


def stops(actions: list[Any]) -> list[int]:
    return [a.downstream for a in actions if isinstance(a, StopDownstream)]


def starts(actions: list[Any]) -> list[tuple[int, str]]:
    return [(a.downstream, a.server) for a in actions if isinstance(a, StartDownstream)]


def logs(actions: list[Any]) -> list[Log]:
    return [a for a in actions if isinstance(a, Log)]


def test_a_call_in_flight_finishes_under_the_rules_it_started_with() -> None:
    d = Driver()
    d.initialize()
    ready(d)
    execute = call(1, "execute_tool", agent_id="dev", server="db", tool="echo", args={})
    d.send(execute)
    # dev loses db; the call already forwarded still gets its answer.
    d.handle(ConfigReloaded(now=0, config=make_config({"agents": {"dev": {"allow": {"servers": ["util"]}}}})))
    assert answer(d, 1) == [
        CancelTimer(timer=3),
        SendToClient(client=0, request=1, message={"jsonrpc": "2.0", "id": 1, "result": {"content": [{"type": "text", "text": "ok"}]}}),
        audited(execute, rule="agents.dev.allow.servers[0]"),
    ]
    [msg] = sent_to_client(d.send(call(2, "execute_tool", agent_id="dev", server="db", tool="echo", args={})))
    assert msg["error"]["data"]["rule"] == "agents.dev: no rule allows it"


def test_a_rules_change_keeps_every_server_running() -> None:
    d = Driver()
    d.initialize()
    ready(d)
    assert d.handle(ConfigReloaded(now=0, config=make_config({"agents": {"x": {}}}))) == [reloaded(agents=1)]
    assert d.gw.status()["servers"]["db"]["state"] == "ready"


def test_servers_loaded_twice_from_the_same_text_are_equal() -> None:
    # A reload compares specs; a spurious difference would restart every server.
    text = json.dumps({"mcpServers": {"a": {"command": "x", "args": ["1"], "env": {"K": "${HOME:-h}"}, "headers": {"A": "b"}}}})
    rules = json.dumps(RULES)

    def load() -> Config:
        return load_config(servers=text, servers_file="s", rules=rules, rules_file="r", environ={})

    assert load().servers == load().servers


def test_an_added_server_starts_on_use_or_at_once_when_eager() -> None:
    d = Driver()
    d.initialize()
    actions = d.handle(ConfigReloaded(now=0, config=make_config(servers=("db", "util", "extra"))))
    assert actions == [reloaded(added=["extra"], agents=3)]
    [msg] = sent_to_client(d.send(call(1, "list_servers", agent_id="dev")))
    assert [s["name"] for s in msg["result"]["structuredContent"]["result"]] == ["db", "util", "extra"]
    assert starts(d.send(call(2, "get_server_tools", agent_id="dev", server="extra"))) == [(1, "extra")]

    eager = Driver(make_config(init_strategy="eager"))
    eager.start()
    actions = eager.handle(ConfigReloaded(now=0, config=make_config(servers=("db", "util", "extra"), init_strategy="eager")))
    assert actions == [
        StartDownstream(downstream=3, server="extra", spec=server("extra")),
        SendToDownstream(downstream=3, message=eager.downstreams[1].received[0]),  # initialize
        SetTimer(timer=3, deadline=30.0),
        reloaded(added=["extra"], agents=3),
    ]


def test_a_removed_server_stops_once_its_call_ends() -> None:
    d = Driver()
    d.initialize()
    ready(d)
    execute = call(1, "execute_tool", agent_id="dev", server="db", tool="echo", args={})
    d.send(execute)
    actions = d.handle(ConfigReloaded(now=0, config=make_config(servers=("util",))))
    assert actions == [reloaded(removed=["db"], agents=3)]  # nothing stops yet
    assert d.gw.reload_status()["draining"] == ["db"]
    [msg] = sent_to_client(d.send(call(2, "execute_tool", agent_id="dev", server="db", tool="echo", args={})))
    assert msg["error"]["data"] == {"code": "SERVER_UNAVAILABLE", "server": "db", "reason": "not configured"}
    assert answer(d, 1) == [
        CancelTimer(timer=3),
        SendToClient(client=0, request=1, message={"jsonrpc": "2.0", "id": 1, "result": {"content": [{"type": "text", "text": "ok"}]}}),
        audited(execute, rule="agents.dev.allow.servers[0]"),
        StopDownstream(downstream=1),
    ]
    assert d.gw.reload_status()["draining"] == []


def test_an_idle_removed_server_stops_at_once() -> None:
    d = Driver()
    d.initialize()
    ready(d)
    assert d.handle(ConfigReloaded(now=0, config=make_config(servers=("util",)))) == [
        StopDownstream(downstream=1),
        reloaded(removed=["db"], agents=3),
    ]


def test_a_changed_server_restarts_while_the_old_one_finishes_its_call() -> None:
    d = Driver()
    d.initialize()
    ready(d)
    d.send(call(1, "execute_tool", agent_id="dev", server="db", tool="echo", args={}))
    base = make_config()
    new_db = server("db", timeout_ms=5000)
    actions = d.handle(ConfigReloaded(now=0, config=with_servers(base, db=new_db, util=server("util"))))
    assert actions == [reloaded(changed=["db"], agents=3)]  # nothing stops or starts yet
    # The next call starts the new spec while connection 1 still serves call 1.
    actions = d.send(call(2, "execute_tool", agent_id="dev", server="db", tool="echo", args={}))
    assert actions == [
        SetTimer(timer=4, deadline=5.0),  # the new spec's timeout
        StartDownstream(downstream=2, server="db", spec=new_db),
        SendToDownstream(downstream=2, message=d.downstreams[1].received[0]),  # initialize
        SetTimer(timer=5, deadline=30.0),
    ]
    d.downstreams[2].complete_handshake(TOOLS)
    actions = answer(d, 1, "old")
    assert [m["id"] for m in sent_to_client(actions)] == [1]
    assert stops(actions) == [1]
    actions = answer(d, 2, "new")
    assert sent_to_client(actions)[0]["result"]["content"][0]["text"] == "new"
    assert stops(actions) == []


def test_calls_waiting_for_a_retired_server_are_all_served_before_it_stops() -> None:
    # Regression: the first waiter answered from the cache left the server
    # looking idle, so it was stopped before the next waiter was sent.
    d = Driver()
    d.initialize()
    d.send(call(1, "get_server_tools", agent_id="dev", server="db"))
    d.send(call(2, "execute_tool", agent_id="dev", server="db", tool="echo", args={}))
    d.send(call(3, "get_server_tools", agent_id="dev", server="db"))
    d.handle(ConfigReloaded(now=0, config=make_config(servers=("util",))))
    actions = d.handshake("db", TOOLS)
    assert [m["id"] for m in sent_to_client(actions)] == [1, 3]
    assert [m["params"]["name"] for m in sent_downstream(actions)] == ["echo"]  # call 2 is forwarded
    assert stops(actions) == []
    actions = answer(d, 1)
    assert [m["id"] for m in sent_to_client(actions)] == [2]
    assert stops(actions) == [1]


def test_a_reload_during_shutdown_starts_nothing() -> None:
    d = Driver(make_config(init_strategy="eager"))
    d.start()
    d.handle(ShutdownRequested(now=0))
    actions = d.handle(ConfigReloaded(now=0, config=make_config(servers=("db", "x"), init_strategy="eager")))
    assert actions == [reloaded(added=["x"], removed=["util"], agents=3)]


def test_rejected_reload_keeps_the_config_and_is_logged_and_recorded() -> None:
    d = Driver()
    d.initialize()
    before = d.gw.config
    problem = Problem(file="rules.json", path="agents.dev.allow.servers", message="expected an array of strings, got 3")
    warning = Problem(file="servers.json", path="mcpServers.a.x", message="unknown key 'x' is ignored")
    actions = d.handle(
        ConfigRejected(now=2.5, problems=(problem,), warnings=(warning,), files=("rules.json",), time="2026-01-01T00:00:00.000Z")
    )
    assert d.gw.config is before
    assert logs(actions) == [
        Log(
            level="error",
            message="configuration rejected, keeping the running one: expected an array of strings, got 3",
            fields={"file": "rules.json", "path": "agents.dev.allow.servers"},
        )
    ]
    status = d.gw.status()["reload"]
    assert status == {
        "attempts": 1,
        "successes": 0,
        "failures": 1,
        "last_result": "rejected",
        "last_attempt": "2026-01-01T00:00:00.000Z",
        "last_success": None,
        "last_failure": "2026-01-01T00:00:00.000Z",
        "last_error": {
            "time": "2026-01-01T00:00:00.000Z",
            "problems": [{"file": "rules.json", "path": "agents.dev.allow.servers", "message": "expected an array of strings, got 3"}],
        },
        "last_warnings": [{"file": "servers.json", "path": "mcpServers.a.x", "message": "unknown key 'x' is ignored"}],
        "files": {"rules.json": {"changed": "2026-01-01T00:00:00.000Z", "loaded": None, "rejected": "2026-01-01T00:00:00.000Z"}},
        "draining": [],
    }
    # Still serving under the old rules.
    [msg] = sent_to_client(d.send(call(1, "list_servers", agent_id="reader")))
    assert "result" in msg


def test_successful_reload_is_recorded_and_logged_with_what_changed() -> None:
    d = Driver()
    d.initialize()
    warning = Problem(file="r.json", path="agents.dev.allow.servers[0]", message="server 'gone' is not configured in s.json")
    new = replace(make_config(servers=("db", "new")), warnings=(warning,))
    actions = d.handle(ConfigReloaded(now=7.0, config=new, files=("s.json", "r.json")))
    assert logs(actions) == [
        Log(
            level="notice",
            message="configuration reloaded",
            fields={"files": ["s.json", "r.json"], "added": ["new"], "removed": ["util"], "changed": [], "agents": 3},
        ),
        Log(level="warning", message=warning.message, fields={"file": "r.json", "path": "agents.dev.allow.servers[0]"}),
    ]
    status = d.gw.reload_status()
    assert (status["attempts"], status["successes"], status["failures"], status["last_result"]) == (1, 1, 0, "ok")
    assert status["last_success"] == 7.0  # no wall-clock time given: the event's now
    assert status["files"]["s.json"] == {"changed": 7.0, "loaded": 7.0, "rejected": None}
    assert status["last_warnings"] == [{"file": "r.json", "path": "agents.dev.allow.servers[0]", "message": warning.message}]
    d.handle(ConfigRejected(now=8.0, problems=(warning,), files=("s.json",)))
    d.handle(ConfigReloaded(now=9.0, config=new))  # SIGHUP without a change: no files
    status = d.gw.reload_status()
    assert (status["attempts"], status["successes"], status["failures"], status["last_result"]) == (3, 2, 1, "ok")
    assert status["last_error"]["time"] == 8.0  # the last error stays on record
    assert status["files"]["s.json"] == {"changed": 8.0, "loaded": 7.0, "rejected": 8.0}


def test_server_tools_is_a_copy_of_the_listed_tools() -> None:
    d = Driver()
    d.initialize()
    assert d.gw.server_tools("db") is None and d.gw.server_tools("nope") is None
    ready(d)
    tools = d.gw.server_tools("db")
    assert tools == TOOLS
    assert tools is not None
    tools.clear()
    assert d.gw.server_tools("db") == TOOLS


def test_a_reload_before_the_gateway_started_does_not_start_a_server_twice() -> None:
    d = Driver(make_config(init_strategy="eager"))
    actions = d.handle(ConfigReloaded(now=0, config=make_config(servers=("db", "util", "x"), init_strategy="eager")))
    assert starts(actions) == [(1, "x")]
    assert starts(d.start()) == [(2, "db"), (3, "util")]
