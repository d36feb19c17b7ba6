"""Timers: one task, a heap and a dict; order, cancellation, scale."""

from __future__ import annotations

import random

import trio

from lockgate.shells.timers import Timers


class Recorder:
    """The ``due`` callback: claims every timer at once, like the runtime's loop."""

    def __init__(self) -> None:
        self.timers: Timers | None = None
        self.fired: list[tuple[int, float]] = []
        self.claim = True

    async def __call__(self, timer: int, generation: int, now: float) -> None:
        assert self.timers is not None
        if not self.claim or self.timers.claim(timer, generation):
            self.fired.append((timer, now))


def make() -> tuple[Timers, Recorder]:
    recorder = Recorder()
    timers = Timers(recorder)
    recorder.timers = timers
    return timers, recorder


async def test_fire_in_deadline_order_never_early() -> None:
    timers, recorder = make()
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(timers.run)
            start = trio.current_time()
            deadlines = {i: start + random.uniform(0.01, 0.3) for i in range(500)}
            for timer, deadline in deadlines.items():
                timers.set(timer, deadline)
            await trio.sleep(0.4)
            nursery.cancel_scope.cancel()
    assert [t for t, _ in recorder.fired] == sorted(deadlines, key=deadlines.__getitem__)
    assert all(now >= deadlines[t] for t, now in recorder.fired)
    assert timers.statistics().live == 0


async def test_a_later_earlier_timer_wakes_the_sleeping_task() -> None:
    timers, recorder = make()
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(timers.run)
            now = trio.current_time()
            timers.set(1, now + 10)
            await trio.sleep(0.01)  # the task now sleeps until +10
            timers.set(2, now + 0.05)
            await trio.sleep(0.2)
            nursery.cancel_scope.cancel()
    assert [t for t, _ in recorder.fired] == [2]


async def test_cancelled_and_rearmed_timers() -> None:
    timers, recorder = make()
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(timers.run)
            now = trio.current_time()
            for i in range(5000):
                timers.set(i, now + 0.05 + i * 1e-5)
            for i in range(0, 5000, 2):
                timers.cancel(i)
            timers.cancel(99999)  # unknown: ignored
            timers.set(1, now + 0.2)  # re-armed: fires once, late
            await trio.sleep(0.4)
            nursery.cancel_scope.cancel()
    fired = [t for t, _ in recorder.fired]
    assert sorted(fired) == list(range(1, 5000, 2))
    assert fired[-1] == 1 and fired.count(1) == 1
    assert timers.statistics().heap == 0


async def test_cancel_after_due_but_before_claim_never_fires() -> None:
    timers, recorder = make()
    recorder.claim = False  # queue it, as the loop would, without telling the core yet
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(timers.run)
            timers.set(7, trio.current_time())
            await trio.sleep(0.05)
            nursery.cancel_scope.cancel()
    assert [t for t, _ in recorder.fired] == [7]
    timers.cancel(7)
    assert not timers.claim(7, 0)


async def test_heap_garbage_is_swept() -> None:
    timers, _ = make()
    now = trio.current_time()
    for i in range(100_000):
        timers.set(i, now + 60)
        timers.cancel(i)
    stats = timers.statistics()
    assert stats.live == 0
    assert stats.heap <= 2100


async def test_thousands_of_timers_per_second() -> None:
    timers, recorder = make()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(timers.run)
            start = trio.current_time()
            # 20,000 timers armed over ~1 s, each cancelled or firing 10 ms later.
            for batch in range(100):
                now = trio.current_time()
                for j in range(200):
                    timer = batch * 200 + j
                    timers.set(timer, now + 0.01)
                    if j % 4:
                        timers.cancel(timer)
                await trio.sleep(0.01)
            await trio.sleep(0.1)
            nursery.cancel_scope.cancel()
    assert len(recorder.fired) == 100 * 50
    assert trio.current_time() - start < 5
