"""All of the core's timers in one task: a heap of deadlines and a dict of live ones.

Theory of operation. :meth:`Timers.set` and :meth:`Timers.cancel` are called
by the runtime's loop and never block. ``set`` records ``timer -> generation``
in ``_live`` and pushes ``(deadline, generation, timer)`` on the heap;
``cancel`` only forgets the timer in ``_live``, leaving its heap entry as
garbage that is skipped when it surfaces (and swept when garbage outweighs
live entries), so both are O(log n) at worst. The single :meth:`run` task
sleeps until the earliest deadline; ``set`` moves that wake-up earlier by
changing the sleeping cancel scope's deadline.

A due timer is handed to ``due(timer, generation, now)``, which queues it to
the loop. The loop then calls :meth:`claim` before telling the core: a timer
cancelled (or set again) after it was queued but before the core heard of it
is not live under that generation any more, so it never fires late.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio

__all__ = ["Timers", "TimerStatistics"]

_SWEEP_MIN = 1024


@dataclass(frozen=True, slots=True)
class TimerStatistics:
    live: int
    heap: int
    fired: int


class Timers:
    """The heap and the dict; run :meth:`run` in exactly one task."""

    def __init__(self, due: Callable[[int, int, float], Awaitable[None]]) -> None:
        self._due = due
        self._heap: list[tuple[float, int, int]] = []
        self._live: dict[int, int] = {}
        self._generations = itertools.count()
        self._sleep: trio.CancelScope | None = None
        self._fired = 0

    def set(self, timer: int, deadline: float) -> None:
        """Arm ``timer`` for ``deadline`` (``trio.current_time()`` clock), replacing any earlier arming."""
        generation = next(self._generations)
        self._live[timer] = generation
        heapq.heappush(self._heap, (deadline, generation, timer))
        if self._sleep is not None and deadline < self._sleep.deadline:
            self._sleep.deadline = deadline

    def cancel(self, timer: int) -> None:
        """Forget ``timer``; unknown timers are ignored."""
        if self._live.pop(timer, None) is not None:
            if len(self._heap) > _SWEEP_MIN and len(self._heap) > 2 * len(self._live):
                self._sweep()

    def claim(self, timer: int, generation: int) -> bool:
        """True once if ``timer`` is still armed as ``generation``; it is then disarmed."""
        if self._live.get(timer) != generation:
            return False
        del self._live[timer]
        self._fired += 1
        return True

    def statistics(self) -> TimerStatistics:
        return TimerStatistics(live=len(self._live), heap=len(self._heap), fired=self._fired)

    async def run(self) -> None:
        """Hand each due timer to ``due``, in deadline order, forever."""
        while True:
            now = trio.current_time()
            while self._heap and self._heap[0][0] <= now:
                _, generation, timer = heapq.heappop(self._heap)
                if self._live.get(timer) == generation:
                    await self._due(timer, generation, now)
                    now = trio.current_time()
            heap = self._heap
            with trio.CancelScope(deadline=heap[0][0] if heap else math.inf) as sleep:
                self._sleep = sleep
                try:
                    await trio.sleep_forever()
                finally:
                    self._sleep = None

    def _sweep(self) -> None:
        live = self._live
        self._heap = [entry for entry in self._heap if live.get(entry[2]) == entry[1]]
        heapq.heapify(self._heap)
