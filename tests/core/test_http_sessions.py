"""The gateway's side of Streamable HTTP: idle session expiry and readiness."""

from __future__ import annotations

import pytest

from lockgate.core._actions import CancelTimer, CloseClient, Log, SendToDownstream, SetTimer, StartDownstream
from lockgate.core._config import Settings
from lockgate.core._events import ClientOpened, ShutdownRequested
from lockgate.core._gateway import Gateway
from lockgate.core.http import ops_status

from .harness import ECHO_TOOL, Driver, audited, call, make_config, req, server


def opened(d: Driver, client: str) -> list[object]:
    return list(d.handle(ClientOpened(now=d.now, client=client, transport="http")))


def test_the_first_http_session_arms_one_expiry_timer() -> None:
    d = Driver(make_config(session_ttl=100.0))
    assert d.live_timers == {}  # a stdio client never expires
    d.now = 5.0
    assert opened(d, "a") == [SetTimer(timer=1, deadline=105.0)]
    d.now = 6.0
    assert opened(d, "b") == []  # the timer already covers it


def test_an_idle_session_expires_and_an_active_one_stays() -> None:
    d = Driver(make_config(session_ttl=100.0))
    opened(d, "a")
    opened(d, "b")
    d.advance(60.0)
    d.send(req(1, "ping"), client="b")
    assert d.advance(40.0) == [
        Log(level="info", message="session expired", fields={"session": "a", "idle_seconds": 100.0}),
        CloseClient(client="a"),
        SetTimer(timer=2, deadline=160.0),  # for b, the oldest left
    ]
    assert d.gw.status()["clients"] == 2  # the stdio client 0 and b
    assert d.advance(60.0) == [
        Log(level="info", message="session expired", fields={"session": "b", "idle_seconds": 100.0}),
        CloseClient(client="b"),
    ]
    assert d.gw.status()["clients"] == 1
    assert (d.clients["a"].closed, d.clients["b"].closed, d.clients[0].closed) == (True, True, False)


def test_expiry_abandons_the_sessions_calls() -> None:
    d = Driver(make_config(session_ttl=10.0))
    opened(d, "a")
    d.clients["a"].initialize()
    execute = call(1, "execute_tool", agent_id="dev", server="util", tool="echo", args={})
    d.send(execute, client="a")
    util = d.server("util")
    util.complete_handshake([ECHO_TOOL])
    forwarded = util.request("tools/call")
    assert d.advance(10.0) == [
        SendToDownstream(downstream=util.id, message={"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": forwarded["id"], "reason": "the session expired"}}),
        CancelTimer(timer=2),
        audited(execute, "ERROR", rule="agents.dev.allow.servers[0]", latency_ms=10000.0, error_code="CANCELLED"),
        Log(level="info", message="session expired", fields={"session": "a", "idle_seconds": 10.0}),
        CloseClient(client="a"),
    ]


def test_a_closed_session_is_forgotten_and_the_timer_not_rearmed() -> None:
    d = Driver(make_config(session_ttl=10.0))
    opened(d, "a")
    d.clients["a"].close()
    assert d.advance(10.0) == []
    assert d.live_timers == {}


def test_a_response_from_an_http_client_is_logged_without_its_session_id() -> None:
    d = Driver(make_config())
    session = "0123456789abcdef0123456789abcdef"
    opened(d, session)
    assert d.send({"jsonrpc": "2.0", "id": 1, "result": {}}, client=session) == [
        Log(level="debug", message="ignored a response from a client", fields={"client": "01234567", "id": 1})
    ]


def test_the_ttl_comes_from_settings_by_default() -> None:
    assert Settings().session_ttl == 3600.0
    gw = Gateway(make_config())
    assert gw.handle(ClientOpened(now=1.0, client="x", transport="http")) == [SetTimer(timer=1, deadline=3601.0)]


def test_readiness_waits_for_the_first_start_of_every_eager_server() -> None:
    d = Driver(make_config(init_strategy="eager"))
    assert d.gw.readiness() == {
        "status": "not_ready",
        "reason": "the gateway has not started its servers yet",
        "servers": {"db": "idle", "util": "idle"},
        "eras": {"db": None, "util": None},
    }
    d.start()
    assert d.gw.readiness()["reason"] == "waiting for the first start of: db, util"
    d.server("db").complete_handshake([])
    assert d.gw.readiness()["reason"] == "waiting for the first start of: util"
    d.server("util").exit()  # a failed first attempt counts as finished
    # Ready to serve db, and saying why util cannot be served (still a 200).
    assert d.gw.readiness() == {
        "status": "degraded",
        "reason": "unavailable: util (exited with code 1)",
        "servers": {"db": "ready", "util": "idle"},
        "eras": {"db": "handshake", "util": None},
    }
    assert ops_status(d.gw.readiness()) == 200


def test_readiness_names_each_unavailable_server_until_it_is_back() -> None:
    d = Driver(make_config(init_strategy="eager"))
    d.start()
    d.server("db").exit("command not found: db-server")
    d.server("util").exit("failed to start: working directory not found")
    assert d.gw.readiness()["reason"] == (
        "unavailable: db (command not found: db-server); util (failed to start: working directory not found)"
    )
    d.advance(1.0)  # the restart timers fire: util starts again and answers
    d.server("util").complete_handshake([])
    ready = d.gw.readiness()
    assert (ready["status"], ready["reason"]) == ("degraded", "unavailable: db (command not found: db-server)")
    assert ops_status({"status": "not_ready"}) == 503


def test_readiness_with_lazy_servers_needs_only_the_start() -> None:
    d = Driver(make_config(init_strategy="lazy"))
    assert d.gw.readiness()["status"] == "not_ready"
    d.start()
    assert d.gw.readiness() == {"status": "ready", "servers": {"db": "idle", "util": "idle"}, "eras": {"db": None, "util": None}}
    d.handle(ShutdownRequested(now=d.now))
    assert d.gw.readiness()["reason"] == "the gateway is shutting down"


def test_a_restart_after_a_failed_first_start_still_counts_as_finished() -> None:
    d = Driver(make_config(init_strategy="eager", servers=("db",)))
    d.start()
    d.server("db").exit()
    d.initialize()
    assert d.send(call(1, "execute_tool", agent_id="dev", server="db", tool="get_user", args={})) == [
        SetTimer(timer=3, deadline=60.0),
        CancelTimer(timer=2),  # the restart timer: the call restarts it now
        StartDownstream(downstream=2, server="db", spec=server("db")),
        SendToDownstream(downstream=2, message=d.downstreams[1].received[0]),  # initialize, as before
        SetTimer(timer=4, deadline=30.0),
    ]
    # Not "waiting for the first start": degraded, until the restart succeeds.
    assert d.gw.readiness()["status"] == "degraded"
    d.server("db").complete_handshake([])
    assert d.gw.readiness()["status"] == "ready"


def test_http_settings_from_the_environment() -> None:
    from lockgate.core._config import ConfigError, settings_from_env

    s = settings_from_env(
        {
            "GATEWAY_TRANSPORT": "HTTP",
            "GATEWAY_HTTP_HOST": "0.0.0.0",
            "GATEWAY_HTTP_PORT": "9000",
            "GATEWAY_CORS_ORIGINS": "https://a.example, https://b.example,",
            "GATEWAY_ALLOWED_HOSTS": "gw.example",
            "GATEWAY_SESSION_TTL": "1.5",
            "GATEWAY_SHUTDOWN_GRACE": "3",
        }
    )
    assert (s.transport, s.http_host, s.http_port) == ("http", "0.0.0.0", 9000)
    assert s.cors_origins == ("https://a.example", "https://b.example")
    assert s.allowed_hosts == ("gw.example",)
    assert (s.session_ttl, s.shutdown_grace) == (1.5, 3.0)
    d = settings_from_env({})
    assert (d.transport, d.http_host, d.http_port, d.cors_origins, d.session_ttl, d.shutdown_grace) == (
        "stdio", "127.0.0.1", 8000, (), 3600.0, 10.0,
    )
    with pytest.raises(ConfigError) as bad:
        settings_from_env(
            {
                "GATEWAY_TRANSPORT": "carrier-pigeon",
                "GATEWAY_HTTP_PORT": "70000",
                "GATEWAY_SESSION_TTL": "nan",
                "GATEWAY_SHUTDOWN_GRACE": "-1",
            }
        )
    assert [p.path for p in bad.value.problems] == [
        "GATEWAY_TRANSPORT", "GATEWAY_HTTP_PORT", "GATEWAY_SESSION_TTL", "GATEWAY_SHUTDOWN_GRACE",
    ]
