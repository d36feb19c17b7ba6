"""The live registry in the core: registrations checked and merged into a configuration, and reloads that keep what stays."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from lockgate.core import (
    REGISTRY,
    CancelTimer,
    Config,
    ConfigReloaded,
    InstanceSpec,
    Log,
    Problem,
    Registration,
    SendToClient,
    SendToDownstream,
    ServerSpec,
    SetTimer,
    StartDownstream,
    StopDownstream,
    load_config,
    merge_registrations,
    parse_registration,
)

from .harness import ECHO_TOOL, RULES, Driver, audited, call, make_config, sent_to_client, server

JSON = dict[str, Any]


def stdio(server: str, instance_id: str, *args: str, **kw: Any) -> Registration:
    return Registration(server=server, instance_id=instance_id, transport="stdio", command="srv", args=args, **kw)


def merged(config: Config, *registrations: Registration) -> Config:
    return merge_registrations(config, registrations)[0]


def execute(id: Any, srv: str = "db") -> JSON:
    return call(id, "execute_tool", agent_id="dev", server=srv, tool="echo", args={})


def forwarded_to(actions: list[Any]) -> list[int]:
    return [a.downstream for a in actions if isinstance(a, SendToDownstream) and a.message.get("method") == "tools/call"]


# -- checking a request ------------------------------------------------------------


def test_a_stdio_registration_is_parsed_with_its_defaults() -> None:
    body = {"server": "db", "command": "srv", "args": ["a"], "env": {"TOKEN": "${SECRET}"}, "working_dir": "/srv"}
    assert parse_registration(body, default_id="reg-0000abcd") == Registration(
        server="db", instance_id="reg-0000abcd", transport="stdio", command="srv", args=("a",),
        env={"TOKEN": "${SECRET}"}, working_dir="/srv",  # nothing is expanded
    )


def test_an_http_registration_takes_its_id_weight_and_description() -> None:
    body = {"server": "web", "endpoint": "https://h:8443/mcp", "instance_id": "eu-1", "weight": 3, "description": "EU"}
    assert parse_registration(body, default_id="unused") == Registration(
        server="web", instance_id="eu-1", transport="http", endpoint="https://h:8443/mcp", weight=3, description="EU"
    )


def problems(body: object) -> list[tuple[str, str]]:
    found = parse_registration(body, default_id="reg-1")
    assert isinstance(found, list)
    return [(p.path, p.message) for p in found]


def test_both_or_neither_of_endpoint_and_command_is_an_error() -> None:
    assert problems({"server": "x"}) == [("", "needs 'endpoint' (HTTP) or 'command' (stdio)")]
    assert problems({"server": "x", "endpoint": "http://h/mcp", "command": "c"}) == [
        ("", "give either 'endpoint' (HTTP) or 'command' (stdio), not both")
    ]


def test_each_problem_names_its_field() -> None:
    body = {"server": "a/b", "endpoint": "ftp://h", "env": {"A": "1"}, "weight": 0, "instance_id": "no spaces", "colour": 1}
    assert problems(body) == [
        ("env", "'env' applies only to stdio instances (with 'command')"),
        ("server", "expected a server name: 1 to 128 characters, no '/', got a string"),
        ("endpoint", "expected an http:// or https:// URL with a host"),
        ("instance_id", "expected 1 to 64 letters, digits, '.', '_' or '-', got a string"),
        ("weight", "expected a positive integer, got 0"),
        ("colour", "unknown key 'colour'"),
    ]
    assert problems([]) == [("", "expected an object, got an array")]
    assert problems({"server": "x", "command": "c", "args": "a"}) == [("args", "expected an array of strings, got a string")]


# -- merging -------------------------------------------------------------------------


def test_a_registered_instance_joins_a_plain_server_which_becomes_a_pool() -> None:
    config = make_config()
    db = config.servers["db"]
    out, found = merge_registrations(config, [stdio("db", "r1", "x", weight=2, description="extra")])
    assert found == ()
    spec = out.servers["db"]
    assert spec.launch_specs() == (
        InstanceSpec(spec=ServerSpec(name="db", transport="stdio", command="srv", args=("db",)), id="0"),
        InstanceSpec(
            spec=ServerSpec(name="db", transport="stdio", command="srv", args=("x",)),
            id="r1", weight=2, source="registry", description="extra",
        ),
    )
    # The server's own settings stay: description, strategy, timeouts.
    assert replace(spec, instances=()) == db
    assert out.servers["util"] is config.servers["util"]


def test_a_registered_instance_joins_a_pool_after_its_file_instances() -> None:
    pool = ServerSpec(
        name="db", transport="stdio", command="srv",
        instances=(InstanceSpec(spec=ServerSpec(name="db", transport="stdio", command="srv"), id="main"),),
        strategy="weighted",
    )
    config = replace(make_config(), servers={"db": pool})
    spec = merged(config, stdio("db", "r1")).servers["db"]
    assert [(i.id, i.source) for i in spec.launch_specs()] == [("main", "file"), ("r1", "registry")]
    assert spec.strategy == "weighted"


def test_a_registration_for_a_new_name_makes_a_server_of_its_own() -> None:
    web = Registration(server="web", instance_id="a", transport="http", endpoint="http://h/mcp", description="Web")
    out = merged(make_config(), web, replace(web, instance_id="b", endpoint="http://k/mcp"))
    spec = out.servers["web"]
    assert (spec.transport, spec.url, spec.description, spec.strategy, spec.isolation) == (
        "http", "http://h/mcp", "Web", "round_robin", "shared"
    )
    assert [(i.id, i.spec.url) for i in spec.launch_specs()] == [("a", "http://h/mcp"), ("b", "http://k/mcp")]
    assert list(out.servers) == ["db", "util", "web"]


def test_a_colliding_or_invalid_registration_is_skipped_with_a_warning() -> None:
    config = make_config()
    out, found = merge_registrations(config, [
        stdio("db", "0"),  # the file server's own instance
        stdio("util", "r1"),
        stdio("util", "r1", "again"),
        Registration(server="web", instance_id="a", transport="http", endpoint="not a url"),
        Registration(server="x", instance_id="bad id", transport="stdio", command="srv"),
    ])
    assert found == (
        Problem(file=REGISTRY, path='db["0"]', message="registration skipped: server 'db' has an instance '0' already"),
        Problem(file=REGISTRY, path="util.r1", message="registration skipped: server 'util' has an instance 'r1' already"),
        Problem(file=REGISTRY, path="web.a", message="registration skipped: an HTTP instance needs an http:// or https:// endpoint with a host"),
        Problem(file=REGISTRY, path='x["bad id"]', message="registration skipped: instance id 'bad id' is not 1 to 64 letters, digits, '.', '_' or '-'"),
    )
    assert out.warnings == found
    assert out.servers["db"] is config.servers["db"] and sorted(out.servers) == ["db", "util"]
    assert [i.id for i in out.servers["util"].launch_specs()] == ["0", "r1"]


def test_a_file_instance_id_collides_too() -> None:
    text = json.dumps({"mcpServers": {"db": {"instances": [{"command": "a", "id": "one"}, {"command": "b"}]}}})
    config = load_config(servers=text, rules=json.dumps(RULES), environ={})
    out, found = merge_registrations(config, [stdio("db", "one"), stdio("db", "1"), stdio("db", "two")])
    assert [p.path for p in found] == ["db.one", 'db["1"]']
    assert [i.id for i in out.servers["db"].launch_specs()] == ["one", "1", "two"]


def test_rules_warnings_about_a_server_the_registry_adds_are_dropped() -> None:
    rules = {"agents": {"dev": {"allow": {"servers": ["web"]}}}}
    text = json.dumps({"mcpServers": {"db": {"command": "srv"}}})
    config = load_config(servers=text, servers_file="s.json", rules=json.dumps(rules), environ={})
    assert [w.message for w in config.warnings] == ["server 'web' is not configured in s.json"]
    out = merged(config, Registration(server="web", instance_id="a", transport="http", endpoint="http://h/mcp"))
    assert out.warnings == ()


def test_prefix_never_refuses_a_second_server() -> None:
    config = make_config(servers=("db",), prefix="never")
    out, found = merge_registrations(config, [stdio("web", "a"), stdio("db", "r1")])
    assert [p.path for p in found] == ["web.a"]
    assert list(out.servers) == ["db"]


def test_registered_servers_get_no_access_of_their_own() -> None:
    d = Driver(merged(make_config(), stdio("web", "a")))
    d.initialize()
    [reader] = sent_to_client(d.send(call(1, "execute_tool", agent_id="reader", server="web", tool="echo", args={})))
    assert reader["error"]["data"]["code"] == "DENIED_BY_POLICY"


# -- reloads that keep what stays --------------------------------------------------------


def ready_eager(config: Config) -> Driver:
    d = Driver(replace(config, settings=replace(config.settings, init_strategy="eager")))
    d.start()
    d.initialize()
    for ds in list(d.downstreams.values()):
        ds.complete_handshake([ECHO_TOOL])
    return d


def eager(config: Config) -> Config:
    return replace(config, settings=replace(config.settings, init_strategy="eager"))


def instances_changed(server: str, added: list[str], removed: list[str]) -> Log:
    return Log(level="info", message="instances changed", fields={"server": server, "added": added, "removed": removed})


def reloaded(changed: list[str]) -> Log:
    return Log(level="notice", message="configuration reloaded", fields={"files": [], "added": [], "removed": [], "changed": changed, "agents": 3})


def test_registering_keeps_the_running_instance_and_starts_the_new_one_at_once() -> None:
    base = make_config(servers=("db",))
    d = ready_eager(base)
    assert [ds.id for ds in d.live_downstreams] == [1]
    first = execute(1)
    d.send(first)  # in flight on connection 1 while the registration lands
    new = eager(merged(base, stdio("db", "r1", "x")))
    actions = d.handle(ConfigReloaded(now=0, config=new))
    assert actions == [
        StartDownstream(downstream=2, server="db", spec=ServerSpec(name="db", transport="stdio", command="srv", args=("x",)), instance=1),
        SendToDownstream(downstream=2, message=d.downstreams[1].received[0]),  # initialize
        SetTimer(timer=3, deadline=30.0),
        instances_changed("db", ["r1"], []),
        reloaded(["db"]),
    ]
    # The call in flight is answered by the instance that stayed, which does not stop.
    assert d.downstreams[1].answer("tools/call", result={}) == [
        CancelTimer(timer=2),
        SendToClient(client=0, request=1, message={"jsonrpc": "2.0", "id": 1, "result": {}}),
        audited(first, rule="agents.dev.allow.servers[0]"),
    ]
    d.downstreams[2].complete_handshake([ECHO_TOOL])
    # Both take calls now, round robin.
    assert forwarded_to(d.send(execute(2))) + forwarded_to(d.send(execute(3))) == [2, 1]
    status = d.gw.registry_view()["servers"]["db"]
    assert status["source"] == "both"
    assert [(i["id"], i["source"], i["state"], i["healthy"]) for i in status["instances"]] == [
        ("0", "file", "ready", True), ("r1", "registry", "ready", True)
    ]


def test_deregistering_retires_the_instance_once_its_call_is_answered() -> None:
    base = make_config(servers=("db",))
    d = ready_eager(merged(base, stdio("db", "r1", "x"), stdio("db", "r2", "y")))
    assert [(ds.id, ds.instance) for ds in d.live_downstreams] == [(1, 0), (2, 1), (3, 2)]
    d.send(execute(1))
    [on] = forwarded_to(d.send(execute(2)))
    assert on == 2  # r1 (round robin: 1, then 2)
    # r1 goes; r2 moves from index 2 to 1.
    actions = d.handle(ConfigReloaded(now=0, config=eager(merged(base, stdio("db", "r2", "y")))))
    assert actions == [instances_changed("db", [], ["r1"]), reloaded(["db"])]  # nothing stops: a call is in flight
    # Never chosen again: new calls go to the instances that stay.
    chosen = forwarded_to(d.send(execute(3))) + forwarded_to(d.send(execute(4))) + forwarded_to(d.send(execute(5)))
    assert sorted(set(chosen)) == [1, 3]
    # Its call is answered, then it stops.
    actions = d.downstreams[2].answer("tools/call", result={})
    assert [m["id"] for m in sent_to_client(actions)] == [2]
    assert [a for a in actions if isinstance(a, StopDownstream)] == [StopDownstream(downstream=2)]
    assert [i["id"] for i in d.gw.registry_view()["servers"]["db"]["instances"]] == ["0", "r2"]
    assert [i.index for i in d.gw._ctx.pools["db"].instances] == [0, 1]
    assert d.gw._ctx.pools["db"].shared[1].downstream == 3


def test_an_idle_deregistered_instance_stops_at_once_and_a_plain_server_stays_running() -> None:
    base = make_config(servers=("db",))
    d = ready_eager(merged(base, stdio("db", "r1", "x")))
    actions = d.handle(ConfigReloaded(now=0, config=eager(base)))
    assert [a for a in actions if isinstance(a, (StopDownstream, StartDownstream))] == [StopDownstream(downstream=2)]
    assert [ds.id for ds in d.live_downstreams] == [1]
    assert forwarded_to(d.send(execute(1))) == [1]


def test_a_call_that_fails_over_after_a_reload_skips_what_it_tried_by_its_new_index() -> None:
    base = make_config(servers=("db",))
    base = replace(base, servers={"db": replace(base.servers["db"], retry_calls=True)})
    d = ready_eager(merged(base, stdio("db", "r1", "x"), stdio("db", "r2", "y")))
    d.send(execute(1))
    [on] = forwarded_to(d.send(execute(2)))
    assert on == 2  # r1, index 1
    # Instance "0" goes: r1 is index 0 now, r2 index 1.
    full = merged(base, stdio("db", "r1", "x"), stdio("db", "r2", "y"))
    pool = full.servers["db"]
    d.handle(ConfigReloaded(now=0, config=eager(replace(full, servers={"db": replace(pool, instances=pool.instances[1:])}))))
    # r1 dies with call 2 forwarded: retry_calls moves it to r2, not back to r1's new index.
    actions = d.downstreams[2].exit()
    assert forwarded_to(actions) == [3]


def test_a_change_to_the_servers_own_settings_still_replaces_the_pool() -> None:
    base = make_config(servers=("db",))
    d = ready_eager(merged(base, stdio("db", "r1", "x")))
    slower = replace(base, servers={"db": server("db", timeout_ms=5)})
    actions = d.handle(ConfigReloaded(now=0, config=eager(merged(slower, stdio("db", "r1", "x")))))
    assert [a.downstream for a in actions if isinstance(a, StopDownstream)] == [1, 2]
    assert [a.instance for a in actions if isinstance(a, StartDownstream)] == [0, 1]


def test_the_registry_view_shows_no_secret_of_a_url() -> None:
    from lockgate.core._registry import _public_url

    assert _public_url("https://user:pw@example.com:8443/mcp?token=abc#x") == "https://example.com:8443/mcp"
    assert _public_url("http://127.0.0.1:9000/mcp") == "http://127.0.0.1:9000/mcp"
