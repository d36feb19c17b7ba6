"""The core's timers: what each kind is for, and the lifecycle every timer follows.

Theory of operation
-------------------
The core has no clock. It asks for a timer with :class:`SetTimer` and hears
:class:`TimerFired` when the shell's clock reaches the deadline; ids are the
core's counter and never reused. Each armed timer is a :class:`Timer` in
:class:`Timers`, which knows what it is about:

=================  ===========================================================
``CALL``           a call's timeout. Progress moves the call's deadline, not
                   the timer (that would cost two actions per notification):
                   a timer that fires early is set again for the deadline.
``SESSION_EXPIRY`` the one timer that ends idle Streamable HTTP sessions; set
                   for the oldest session, again when it fires.
``START``          a link's handshake timeout (``initialize`` plus listing).
``HEALTH``         when a ready link gets its next health-check ping.
``PING``           that ping's timeout (also sent at once after a call timed
                   out); it firing means the instance hung.
``IDLE``           when an idle link (``idle_timeout``) is stopped.
``RESTART``        when a shared link that failed starts again (its backoff).
=================  ===========================================================

A link's timers remember the connection (``downstream`` id) they were set
for: one that fires after the link reconnected is stale and does nothing.

    ARMED ──fire──► FIRED
      └───cancel──► CANCELLED

Only an armed timer fires or is cancelled; a :class:`TimerFired` for a timer
that is not armed (cancelled after it fell due, before the shell saw the
cancellation) is ignored.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ._actions import CancelTimer, SetTimer
from ._errors import LocalProtocolError

if TYPE_CHECKING:
    from ._call import Call
    from ._link import Link

__all__ = ["Timer", "TimerKind", "TimerState", "Timers"]


class TimerKind(enum.Enum):
    CALL = "call"
    SESSION_EXPIRY = "session_expiry"
    START = "start"
    HEALTH = "health"
    PING = "ping"
    IDLE = "idle"
    RESTART = "restart"


class TimerState(enum.Enum):
    ARMED = "armed"
    FIRED = "fired"
    CANCELLED = "cancelled"


_TRANSITIONS: dict[tuple[TimerState, str], TimerState] = {
    (TimerState.ARMED, "fire"): TimerState.FIRED,
    (TimerState.ARMED, "cancel"): TimerState.CANCELLED,
}


@dataclass(slots=True, kw_only=True, eq=False)
class Timer:
    """One armed timer and what it is about (see the module docstring)."""

    id: int
    kind: TimerKind
    deadline: float
    call: Call | None = None
    link: Link | None = None
    #: The link's connection when the timer was set.
    downstream: int | None = None
    state: TimerState = TimerState.ARMED

    def move(self, trigger: str) -> None:
        new = _TRANSITIONS.get((self.state, trigger))
        if new is None:
            raise LocalProtocolError(f"timer {self.id} ({self.kind.value}): can't {trigger} when {self.state.value}")
        self.state = new


class Timers:
    """The armed timers by id; arming and cancelling return the action to emit."""

    def __init__(self) -> None:
        self._armed: dict[int, Timer] = {}
        self._next = 1

    def arm(
        self, kind: TimerKind, deadline: float, *, call: Call | None = None, link: Link | None = None
    ) -> tuple[Timer, SetTimer]:
        timer = Timer(
            id=self._next, kind=kind, deadline=deadline, call=call, link=link,
            downstream=link.downstream if link is not None else None,
        )
        self._next += 1
        self._armed[timer.id] = timer
        return timer, SetTimer(timer=timer.id, deadline=deadline)

    def cancel(self, timer_id: int) -> CancelTimer | None:
        """Forget an armed timer: the :class:`CancelTimer` to emit, or ``None`` when it was not armed."""
        timer = self._armed.pop(timer_id, None)
        if timer is None:
            return None
        timer.move("cancel")
        return CancelTimer(timer=timer_id)

    def fire(self, timer_id: int) -> Timer | None:
        """The armed timer that fell due, now fired; ``None`` for one that is not armed."""
        timer = self._armed.pop(timer_id, None)
        if timer is not None:
            timer.move("fire")
        return timer

    def __len__(self) -> int:
        return len(self._armed)

    def __bool__(self) -> bool:
        return bool(self._armed)
