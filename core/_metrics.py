"""Call metrics: counts, errors and latency histograms, bounded in memory.

Theory of operation
-------------------
Every gateway tool call ends in exactly one audit record; the gateway feeds
the same facts to :meth:`Metrics.observe`. A call lands in one *series*,
named by its labels ``(operation, agent, server, outcome)``. Each series is a
fixed array of latency buckets, so memory grows with the number of distinct
label sets, never with the number of calls. Label values that come from a
client (a server name that is not configured, an unknown operation) are folded
into ``"other"`` before they become labels, and the number of series is
capped, so a client cannot grow the table either.

Bucket bounds follow a 1-1.5-2-3-4-5-6-8 pattern per decade, from 100 µs to
60 s. Percentiles are interpolated inside the bucket that holds them (at most
one bucket, under 50 %, off; in practice far less). The Prometheus rendering
exposes the 1-2-5 subset of the bounds, whose cumulative counts are exact.

Plain counters sit beside the series: calls refused by a rate limit, by
the limit's scope (``credential`` or ``agent``), authentications, by
outcome, and client streams dropped because their reader fell behind (a
flood of notifications is cut there, never buffered without bound). Their
keys are fixed, so they are bounded too.

Everything here is pure: time arrives as arguments.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["BOUNDS", "MAX_SERIES", "Extra", "Metrics", "Series", "Summary", "prometheus_text"]

JSONObject = dict[str, Any]

#: Upper bounds of the latency buckets, in seconds; one more bucket holds the rest.
BOUNDS: tuple[float, ...] = tuple(
    round(m * 10.0**e, 6) for e in range(-4, 2) for m in (1, 1.5, 2, 3, 4, 5, 6, 8)
) + (100.0,)

#: The bounds shown in the Prometheus histogram (1-2-5 per decade).
_EXPOSED = tuple(
    i for i, b in enumerate(BOUNDS) if round(b / 10.0 ** math.floor(math.log10(b) + 1e-9), 6) in (1.0, 2.0, 5.0)
)

#: Series beyond this many share one overflow series per operation.
MAX_SERIES = 4096

OTHER = "other"
NONE = "none"

Labels = tuple[str, str, str, str]  # operation, agent, server, outcome


@dataclass(slots=True)
class Series:
    """One label set: a count and a latency histogram."""

    buckets: list[int] = field(default_factory=lambda: [0] * (len(BOUNDS) + 1))
    count: int = 0
    total: float = 0.0

    def add(self, latency: float) -> None:
        self.buckets[bisect_left(BOUNDS, latency)] += 1
        self.count += 1
        self.total += latency

    def merge(self, other: Series) -> None:
        self.buckets = [a + b for a, b in zip(self.buckets, other.buckets)]
        self.count += other.count
        self.total += other.total


@dataclass(frozen=True, slots=True)
class Summary:
    """What the JSON view reports for a group of series."""

    count: int
    errors: int
    p50: float
    p95: float
    p99: float

    def as_json(self) -> JSONObject:
        return {
            "count": self.count,
            "errors": self.errors,
            "error_rate": round(self.errors / self.count, 4) if self.count else 0.0,
            "latency_ms": {"p50": _ms(self.p50), "p95": _ms(self.p95), "p99": _ms(self.p99)},
        }


class Metrics:
    """Aggregates finished calls; see the module docstring."""

    def __init__(self) -> None:
        self._series: dict[Labels, Series] = {}
        #: Calls a rate limit refused, by the limit's scope.
        self.rate_limited: dict[str, int] = {"credential": 0, "agent": 0}
        #: Authentications the shell reported, by outcome.
        self.authentications: dict[str, int] = {"success": 0, "failure": 0}
        #: Client streams dropped because their reader fell behind.
        self.streams_dropped = 0

    def observe(self, *, operation: str, agent: str, server: str, outcome: str, latency: float) -> None:
        """Count one finished call. Labels must already be bounded (see :meth:`Gateway`)."""
        key = (operation, agent, server, outcome)
        series = self._series.get(key)
        if series is None:
            if len(self._series) >= MAX_SERIES:
                key = (operation, OTHER, OTHER, outcome)
                series = self._series.get(key)
            if series is None:
                series = self._series[key] = Series()
        series.add(max(latency, 0.0))

    @property
    def series(self) -> Mapping[Labels, Series]:
        """Every label set seen so far and its histogram."""
        return self._series

    def summary(self, by: int) -> dict[str, Summary]:
        """Summaries grouped by one label: 0 operation, 1 agent, 2 server, 3 outcome."""
        groups: dict[str, list[tuple[Labels, Series]]] = {}
        for labels, series in self._series.items():
            groups.setdefault(labels[by], []).append((labels, series))
        return {name: _summarise(members) for name, members in sorted(groups.items())}

    def snapshot(self, *, uptime: float) -> JSONObject:
        """The JSON view: totals, per operation, per agent and per server."""
        return {
            "uptime_seconds": round(uptime, 3),
            "calls": _summarise(list(self._series.items())).as_json(),
            "operations": {k: v.as_json() for k, v in self.summary(0).items()},
            "agents": {k: v.as_json() for k, v in self.summary(1).items()},
            "servers": {k: v.as_json() for k, v in self.summary(2).items()},
        }


def _summarise(members: Iterable[tuple[Labels, Series]]) -> Summary:
    merged = Series()
    errors = 0
    for labels, series in members:
        merged.merge(series)
        if labels[3] != "ok":
            errors += series.count
    return Summary(
        count=merged.count,
        errors=errors,
        p50=_quantile(merged, 0.50),
        p95=_quantile(merged, 0.95),
        p99=_quantile(merged, 0.99),
    )


def _quantile(series: Series, q: float) -> float:
    """The ``q`` quantile in seconds, interpolated linearly inside its bucket."""
    if series.count == 0:
        return 0.0
    rank = q * series.count
    seen = 0
    for i, n in enumerate(series.buckets):
        if n and seen + n >= rank:
            low = BOUNDS[i - 1] if i > 0 else 0.0
            high = BOUNDS[i] if i < len(BOUNDS) else BOUNDS[-1]
            return low + (high - low) * max(rank - seen, 0.0) / n
        seen += n
    return BOUNDS[-1]


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(pairs: Iterable[tuple[str, str]]) -> str:
    inner = ",".join(f'{name}="{_escape(value)}"' for name, value in pairs)
    return "{" + inner + "}" if inner else ""


def _number(value: float) -> str:
    if value == math.inf:
        return "+Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


#: Extra metrics: name (without ``lockgate_``) -> (type, help text, samples by label pairs).
Extra = Mapping[str, tuple[str, str, Mapping[tuple[tuple[str, str], ...], float]]]


def prometheus_text(metrics: Metrics, *, uptime: float, extra: Extra | None = None) -> str:
    """Render the Prometheus text exposition format (version 0.0.4).

    ``extra`` carries metrics kept elsewhere, as ``counter`` or ``gauge``:
    the gateway passes its live state (clients, calls in flight, server
    states) and its reload counts this way.
    """
    out: list[str] = [
        "# HELP lockgate_uptime_seconds Seconds since the gateway started.",
        "# TYPE lockgate_uptime_seconds gauge",
        f"lockgate_uptime_seconds {_number(round(uptime, 3))}",
        "# HELP lockgate_calls_total Gateway tool calls that finished, by outcome.",
        "# TYPE lockgate_calls_total counter",
    ]
    names = ("operation", "agent", "server", "outcome")
    ordered = sorted(metrics.series.items())
    for labels, series in ordered:
        out.append(f"lockgate_calls_total{_labels(zip(names, labels))} {series.count}")
    out += [
        "# HELP lockgate_call_duration_seconds Latency of gateway tool calls, from request to answer.",
        "# TYPE lockgate_call_duration_seconds histogram",
    ]
    for labels, series in ordered:
        pairs = list(zip(names, labels))
        cumulative = 0
        start = 0
        for i in _EXPOSED:
            cumulative += sum(series.buckets[start : i + 1])
            start = i + 1
            out.append(
                f"lockgate_call_duration_seconds_bucket{_labels([*pairs, ('le', _number(BOUNDS[i]))])} {cumulative}"
            )
        out.append(f"lockgate_call_duration_seconds_bucket{_labels([*pairs, ('le', '+Inf')])} {series.count}")
        out.append(f"lockgate_call_duration_seconds_sum{_labels(pairs)} {_number(round(series.total, 6))}")
        out.append(f"lockgate_call_duration_seconds_count{_labels(pairs)} {series.count}")
    for name, (kind, help_text, samples) in sorted((extra or {}).items()):
        out.append(f"# HELP lockgate_{name} {help_text}")
        out.append(f"# TYPE lockgate_{name} {kind}")
        for pairs_key, value in sorted(samples.items()):
            out.append(f"lockgate_{name}{_labels(pairs_key)} {_number(value)}")
    return "\n".join(out) + "\n"
