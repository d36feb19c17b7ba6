"""The signals a serving gateway answers: SIGTERM and SIGINT stop it, SIGHUP reloads.

trio delivers signals as an async iterator (:func:`trio.open_signal_receiver`);
:func:`receive_signals` opens one only when the shell is asked to handle
signals (tests run several gateways in one process and leave them alone), and
:func:`stop_on_signals` turns SIGTERM and SIGINT into the shell's stop event.
SIGHUP is read by the reload watcher (:mod:`.reload`).
"""

from __future__ import annotations

import logging
import signal
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager

import trio

__all__ = ["STOP_SIGNALS", "receive_signals", "stop_on_signals"]

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
"""The signals that end serving (Ctrl-C, and what a service manager sends)."""


@contextmanager
def receive_signals(enabled: bool, *signums: signal.Signals) -> Iterator[AsyncIterator[int] | None]:
    """Catch ``signums`` while the block runs and yield them as they come; ``None`` when not ``enabled``."""
    if not enabled:
        yield None
        return
    with trio.open_signal_receiver(*signums) as signals:
        yield signals


async def stop_on_signals(signals: AsyncIterator[int], stop: trio.Event, log: logging.Logger, stopping: str) -> None:
    """Set ``stop`` at the first of ``signals``; log each on ``log``, a repeated one with what is still ``stopping``."""
    async for signum in signals:
        name = signal.Signals(signum).name
        if stop.is_set():
            log.warning(f"received {name} again; still {stopping}")
        else:
            log.info(f"received {name}; shutting down")
            stop.set()
