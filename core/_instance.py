"""An instance of a server: how to start it, and its health as a circuit breaker.

Theory of operation
-------------------
A configured server runs as one or more instances (its ``instances``, or
the server itself), each "a command or a url" with a weight. An instance
counts consecutive failures: a connection that dies or cannot start, a
handshake or health check that times out. Any answer from it (handshake
done, a call answered, even with an error, a ping answered) resets the count.
A call that times out is no failure by itself: it makes the link suspect
(see :mod:`~lockgate.core._health`).

The breaker decides whether the instance takes requests. Rule 1, after h11:
every change is in :data:`_TRANSITIONS`, made by :meth:`Instance._move`.

    CLOSED ──trip──► OPEN ──retry due──► HALF_OPEN ──probe──► PROBING
       ▲  ▲            ▲                     │                 │  │
       │  └── fail ────┘◄───────── trip ─────┴─────── trip ────┘  │
       └────────────────────── answer (from any state) ────────────┘
                                         PROBING ──probe stopped──► HALF_OPEN

- ``CLOSED``: below :data:`BREAKER_THRESHOLD` consecutive failures; a
  failure below it is ``fail`` (stays closed), reaching it is ``trip``.
- ``OPEN``: takes nothing until ``retry_at``, which grows with the failures
  (:func:`backoff_delay`). The time passing is applied when the breaker is
  next consulted (the core has no clock of its own).
- ``HALF_OPEN``: one probe may go: a start, never a call (a slow tool would
  hold every other call back).
- ``PROBING``: the probe is under way; nothing else may go. Its success
  closes the breaker, its failure trips it again, for longer; a probe
  stopped on purpose (idle, reload) proves nothing and half-opens it again.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from ._config import ServerSpec
from ._errors import LocalProtocolError

__all__ = ["BREAKER_THRESHOLD", "MAX_BACKOFF", "Breaker", "Instance", "backoff_delay"]

#: Longest wait between start attempts of a server that keeps failing.
MAX_BACKOFF = 30.0

#: Consecutive failures that open an instance's circuit breaker.
BREAKER_THRESHOLD = 2


def backoff_delay(failures: int) -> float:
    """Seconds to wait before start attempt number ``failures + 1``.

    The first failure restarts at once (a crash mid-call should cost the next
    call nothing); repeated failures without an answer in between wait 0.5,
    1, 2, ... seconds, up to :data:`MAX_BACKOFF`.
    """
    if failures < BREAKER_THRESHOLD:
        return 0.0
    return min(MAX_BACKOFF, 0.5 * 2.0 ** (failures - 2))


class Breaker(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"
    PROBING = "probing"


class _Trigger(enum.Enum):
    FAIL = "fail"
    TRIP = "trip"
    ANSWER = "answer"
    RETRY_DUE = "retry due"
    PROBE = "probe"
    PROBE_STOPPED = "probe stopped"


_TRANSITIONS: dict[tuple[Breaker, _Trigger], Breaker] = {
    (Breaker.CLOSED, _Trigger.FAIL): Breaker.CLOSED,
    (Breaker.OPEN, _Trigger.RETRY_DUE): Breaker.HALF_OPEN,
    (Breaker.HALF_OPEN, _Trigger.PROBE): Breaker.PROBING,
    (Breaker.PROBING, _Trigger.PROBE_STOPPED): Breaker.HALF_OPEN,
    **{(state, _Trigger.TRIP): Breaker.OPEN for state in Breaker},
    **{(state, _Trigger.ANSWER): Breaker.CLOSED for state in Breaker},
}


@dataclass(slots=True, kw_only=True, eq=False)
class Instance:
    """One instance of a server: how to start it, its weight, and its breaker."""

    #: Its position among the server's instances now: what links, balancing
    #: and a call's ``tried`` go by. A reload that keeps it may move it.
    index: int
    spec: ServerSpec
    #: Its name within the server (see :attr:`~._config.InstanceSpec.id`), which a reload keeps.
    id: str = "0"
    weight: int = 1
    #: Calls forwarded to it since it joined: the load distribution ``/gateway/stats`` shows.
    calls: int = 0
    failures: int = 0
    retry_at: float = 0.0
    last_error: str | None = None
    starts: int = 0
    #: A start of it timed out with the era probe (``server/discover``) unanswered: later starts go
    #: straight to ``initialize`` (see :mod:`~lockgate.core._downstream_era`).
    skip_discover: bool = False
    _breaker: Breaker = Breaker.CLOSED

    def breaker(self, now: float) -> Breaker:
        """The breaker's state at ``now`` (an open breaker half-opens once ``retry_at`` has come)."""
        if self._breaker is Breaker.OPEN and now >= self.retry_at:
            self._move(_Trigger.RETRY_DUE)
        return self._breaker

    def accepts(self, now: float) -> bool:
        """May a new request (or start) go to this instance now?"""
        return self.breaker(now) in (Breaker.CLOSED, Breaker.HALF_OPEN)

    @property
    def probing(self) -> bool:
        """The one probe of the half-open breaker (a start) is under way."""
        return self._breaker is Breaker.PROBING

    def failed(self, reason: str, now: float) -> None:
        self.failures += 1
        self.retry_at = now + backoff_delay(self.failures)
        self.last_error = reason
        self._move(_Trigger.TRIP if self.failures >= BREAKER_THRESHOLD else _Trigger.FAIL)

    def answered(self) -> None:
        self.failures = 0
        self._move(_Trigger.ANSWER)

    def starting(self, now: float) -> None:
        """A connection to this instance is starting: while half open, that start is the probe."""
        if self.breaker(now) is Breaker.HALF_OPEN:
            self._move(_Trigger.PROBE)

    def stopped_starting(self) -> None:
        """A start was stopped on purpose before it finished: a probe that was stopped proves nothing."""
        if self._breaker is Breaker.PROBING:
            self._move(_Trigger.PROBE_STOPPED)

    def _move(self, trigger: _Trigger) -> None:
        new = _TRANSITIONS.get((self._breaker, trigger))
        if new is None:
            raise LocalProtocolError(f"instance {self.index}: breaker can't take {trigger.value} when {self._breaker.value}")
        self._breaker = new
