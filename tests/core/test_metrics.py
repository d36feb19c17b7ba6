"""Metrics: exact counts, bounded labels and a Prometheus exposition that parses."""

from __future__ import annotations

import re

import pytest

from lockgate.core._metrics import BOUNDS, MAX_SERIES, Metrics, prometheus_text
from lockgate.core.http import wants_prometheus

from .harness import ECHO_TOOL, Driver, call, make_config, sent_to_client, structured

_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_prometheus(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """A strict parser of the text format 0.0.4: every line is a comment or a well-formed sample."""
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    types: dict[str, str] = {}
    assert text.endswith("\n")
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in ("counter", "gauge", "histogram")
            types[name] = kind
            continue
        if line.startswith("# HELP "):
            continue
        match = _SAMPLE.match(line)
        assert match, f"not a sample: {line!r}"
        name, _, inner, value = match.groups()
        labels = dict(_LABEL.findall(inner or ""))
        assert ",".join(f'{k}="{v}"' for k, v in _LABEL.findall(inner or "")) == (inner or "")
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        assert name in types or base in types, f"sample without TYPE: {name}"
        samples.setdefault(name, []).append((labels, float(value)))
    return samples


def test_observe_counts_and_groups() -> None:
    m = Metrics()
    for i in range(100):
        m.observe(operation="execute_tool", agent="dev", server="db", outcome="ok", latency=0.001 * (i + 1))
    m.observe(operation="execute_tool", agent="dev", server="db", outcome="timeout", latency=60.0)
    m.observe(operation="list_servers", agent="reader", server="none", outcome="ok", latency=0.0)
    snap = m.snapshot(uptime=12.5)
    assert snap["uptime_seconds"] == 12.5
    assert snap["calls"]["count"] == 102
    assert snap["calls"]["errors"] == 1
    op = snap["operations"]["execute_tool"]
    assert (op["count"], op["errors"], op["error_rate"]) == (101, 1, round(1 / 101, 4))
    assert set(snap["agents"]) == {"dev", "reader"}
    assert set(snap["servers"]) == {"db", "none"}


def test_quantiles_land_within_their_bucket() -> None:
    m = Metrics()
    for i in range(1000):
        m.observe(operation="execute_tool", agent="a", server="s", outcome="ok", latency=(i + 1) / 1000)
    lat = m.snapshot(uptime=0)["operations"]["execute_tool"]["latency_ms"]
    # Exact values are 500, 950 and 990 ms; buckets around them are 400-500, 800-1000 ms.
    assert 400 <= lat["p50"] <= 600
    assert 800 <= lat["p95"] <= 1000
    assert 800 <= lat["p99"] <= 1000
    assert lat["p50"] < lat["p95"] <= lat["p99"]


def test_memory_is_bounded_by_series_not_calls() -> None:
    m = Metrics()
    for i in range(MAX_SERIES + 500):
        m.observe(operation="execute_tool", agent=f"a{i}", server="s", outcome="ok", latency=0.01)
    assert len(m.series) == MAX_SERIES + 1
    assert m.series[("execute_tool", "other", "other", "ok")].count == 500
    before = len(m.series)
    for _ in range(10_000):
        m.observe(operation="execute_tool", agent="a1", server="s", outcome="ok", latency=0.01)
    assert len(m.series) == before
    assert all(len(s.buckets) == len(BOUNDS) + 1 for s in m.series.values())


def test_prometheus_text_parses_and_histograms_are_cumulative() -> None:
    m = Metrics()
    for latency in (0.0001, 0.0004, 0.003, 0.003, 0.7, 250.0):
        m.observe(operation="execute_tool", agent='we"ird\\agent', server="db", outcome="ok", latency=latency)
    text = prometheus_text(m, uptime=3.0, extra={"clients": ("gauge", "Clients.", {(): 2})})
    samples = parse_prometheus(text)
    [(labels, total)] = samples["lockgate_calls_total"]
    assert labels == {"operation": "execute_tool", "agent": 'we\\"ird\\\\agent', "server": "db", "outcome": "ok"}
    assert total == 6
    buckets = samples["lockgate_call_duration_seconds_bucket"]
    counts = [v for _, v in buckets]
    assert counts == sorted(counts)
    assert buckets[-1][0]["le"] == "+Inf" and buckets[-1][1] == 6
    les = {b[0]["le"]: b[1] for b in buckets}
    assert les["0.0001"] == 1 and les["0.0005"] == 2 and les["0.005"] == 4 and les["1"] == 5 and les["100"] == 5
    assert samples["lockgate_call_duration_seconds_count"][0][1] == 6
    assert samples["lockgate_clients"] == [({}, 2.0)]
    assert samples["lockgate_uptime_seconds"] == [({}, 3.0)]


@pytest.mark.parametrize(
    ("accept", "query", "expected"),
    [
        (None, "", False),
        ("application/json", "", False),
        ("text/plain; version=0.0.4", "", True),
        ("application/openmetrics-text; version=1.0.0,text/plain;q=0.5", "", True),
        ("*/*", "", False),
        ("application/json", "format=prometheus", True),
        ("text/plain", "format=json", False),
        (None, "x=1&format=text", True),
    ],
)
def test_wants_prometheus(accept: str | None, query: str, expected: bool) -> None:
    assert wants_prometheus(accept, query) is expected


def test_gateway_records_every_call_with_bounded_labels() -> None:
    d = Driver()
    d.initialize()
    d.send(call(1, "list_servers", agent_id="dev"))
    d.send(call(2, "execute_tool", agent_id="dev", server="db", tool="echo", args={"text": "x"}))
    d.now = 0.25
    d.handshake("db", [ECHO_TOOL])
    d.server("db").answer("tools/call", result={"content": []})
    d.send(call(4, "execute_tool", agent_id="dev", server="no-such-server-" * 5, tool="t", args={}))
    d.send(call(5, "execute_tool", agent_id="reader", server="db", tool="drop_table", args={}))
    d.send(call(6, "invented_tool"))
    series = dict(d.gw._ctx.metrics.series)
    assert series[("list_servers", "dev", "none", "ok")].count == 1
    executed = series[("execute_tool", "dev", "db", "ok")]
    assert executed.count == 1 and executed.total == pytest.approx(0.25)
    assert series[("execute_tool", "dev", "other", "server_unavailable")].count == 1
    assert series[("execute_tool", "reader", "db", "denied_by_policy")].count == 1
    assert series[("other", "none", "none", "invalid_params")].count == 1

    view = d.gw.metrics_json(now=10.0)
    assert view["uptime_seconds"] == 10.0
    assert view["calls"] == {**view["calls"], "count": 5, "errors": 3}
    assert view["clients"] == 1 and view["calls_in_flight"] == 0
    samples = parse_prometheus(d.gw.metrics_prometheus(now=10.0))
    assert ({"server": "db", "state": "ready"}, 1.0) in samples["lockgate_server_state"]
    assert sum(v for _, v in samples["lockgate_calls_total"]) == 5
    assert ({"result": "ok"}, 0.0) in samples["lockgate_config_reloads_total"]
    assert view["reload"]["attempts"] == 0


def test_status_carries_uptime_and_metrics() -> None:
    d = Driver(make_config(debug=True))
    d.initialize()
    d.now = 7.0
    d.send(call(1, "list_servers"))
    d.send(call(2, "get_gateway_status"))
    value = structured(sent_to_client(d.send(call(3, "get_gateway_status")))[0])
    assert value["uptime_seconds"] == 7.0
    assert value["metrics"]["operations"]["get_gateway_status"]["count"] == 1
    assert value["metrics"]["operations"]["list_servers"]["count"] == 1
