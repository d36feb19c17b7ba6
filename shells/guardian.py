"""Downstream processes die with the gateway, however it dies.

A gateway that exits normally stops and reaps every stdio downstream (see
:mod:`.downstream_stdio`). One that is killed (SIGKILL, the OOM killer, a
crash in C) cannot: its children see end of input on stdin, and a server that
ignores it, or the grandchild of an ``sh -c``, ``npx`` or ``uvx`` wrapper,
runs on. Two mechanisms close that gap.

**The guardian** (:class:`Guardian`). ``lockgate serve``, ``check`` and
``explain`` start one small helper process (:mod:`.guardian_script`, run with
``python -I -S``) in its own session before anything else, with stdin a pipe
whose write end only the gateway holds, stdout and stderr on ``/dev/null``
(it must never hold the gateway's own stdout or stderr open: an MCP client
waits for end of file on them). Each stdio downstream registers its process
group (``+PGID``) once spawned and unregisters it (``-PGID``) once the group
is killed. When the pipe reaches end of file, because the gateway exited
however it died (the kernel closes its descriptors in every case), the
guardian SIGKILLs every group still registered, and on Linux the group of any
process still carrying this gateway's marker (below), then exits. On a clean
exit every downstream is reaped first, so the registry is empty by then.

``prctl(PR_SET_PDEATHSIG)`` in each child would be simpler, and is wrong
here: Linux sends the parent-death signal when the *thread* that forked the
child exits, not the process. ``trio.lowlevel.open_process`` forks from a
worker thread, and trio ends idle worker threads after a while, so healthy
servers would be killed at random. It would not reach grandchildren either.

Writes to the guardian never block the trio loop and never raise into the
gateway: the pipe is non-blocking, a full pipe keeps the rest for the next
write, and a guardian that is gone is logged once at warning and then ignored.

Process group ids are pids, and pids are reused. A group is unregistered
only after every member got SIGKILL and while its zombie leader is not yet
reaped (the downstream watches it through a pidfd), so the number cannot
name another group before the guardian has read the ``-PGID`` line; lines
are read in order and end of file comes last.

**The marker and the sweep** (:func:`sweep_leftovers`). Every stdio
downstream gets ``LOCKGATE_GATEWAY=PID:START:PIDNS`` in its environment
(:func:`gateway_marker`), which wrapper children inherit. At start, before
spawning anything, the gateway reads ``/proc/*/environ`` of its user's
processes and SIGKILLs the group of each one whose marker names a gateway
that is no longer alive (no process with that pid, or one that started at
another time). A marker whose gateway is alive (another Lockgate running) is
left alone, and so is one from another pid namespace (a container), whose
numbers cannot be checked here. This catches what escaped the guardian: a
child spawned in the instant before its ``+PGID`` line, a guardian killed
along with the gateway. Without ``/proc`` (macOS) the sweep does nothing.

:func:`guarding` does all of it around a ``trio.run``: sweep, spawn, make the
guardian the one :class:`~.downstream_stdio.StdioDownstream` finds through
:func:`current_guardian`, and close it at the end.
"""

from __future__ import annotations

import contextvars
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress

from . import guardian_script
from .guardian_script import (
    IGNORED_SIGNALS,
    MARKER_VARIABLE,
    kill_group_of,
    marked_processes,
    marker_owner_alive,
    own_marker,
)
from .logs import NOTICE, get_logger

__all__ = ["MARKER_VARIABLE", "Guardian", "current_guardian", "gateway_marker", "guarding", "sweep_leftovers"]

SCRIPT = os.path.abspath(guardian_script.__file__)
"""The guardian's program, run by path: it needs nothing but the standard library."""

_MAX_BACKLOG = 1 << 20
"""Bytes kept for a guardian that stopped reading; past that it is given up on."""
_CLOSE_WAIT_S = 2.0

_log = get_logger("guardian")

_current: contextvars.ContextVar[Guardian | None] = contextvars.ContextVar("lockgate_guardian", default=None)


def gateway_marker() -> str:
    """The value of :data:`MARKER_VARIABLE` in this process's children."""
    return own_marker()


def current_guardian() -> Guardian | None:
    """The guardian :func:`guarding` installed for this context (trio tasks inherit it), if any."""
    return _current.get()


class Guardian:
    """This gateway's end of one guardian process; see the module docstring.

    :meth:`register` and :meth:`unregister` are one non-blocking write each
    (safe on the trio loop); :meth:`close` waits, bounded. None raises: when
    the guardian is gone, the first failed write logs a warning and later
    calls do nothing.
    """

    def __init__(self, process: subprocess.Popen[bytes], marker: str) -> None:
        assert process.stdin is not None
        self._process = process
        self._stdin = process.stdin
        self._fd = process.stdin.fileno()
        os.set_blocking(self._fd, False)
        self._backlog = bytearray()
        self._groups: set[int] = set()
        self._gone = False
        self.marker = marker
        """The marker whose processes the guardian also kills at the end."""
        self.pid = process.pid

    @classmethod
    def spawn(cls, *, marker: str | None = None) -> Guardian | None:
        """Start a guardian process; ``None`` (after a warning) when it cannot start.

        Args:
            marker: the marker it also sweeps for at the end; by default this
                process's :func:`gateway_marker`.
        """
        marker = gateway_marker() if marker is None else marker
        # Blocked signals stay blocked across fork and exec: a SIGTERM sent to
        # the new process before it has set its handlers waits, then is ignored.
        # Ours are only delayed, not lost.
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, IGNORED_SIGNALS)
        try:
            if not sys.executable:
                raise OSError(0, "no Python interpreter path")
            process = subprocess.Popen(
                [sys.executable, "-I", "-S", SCRIPT, marker],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                close_fds=True,
                # Its own session: a Ctrl-C or hang-up meant for the gateway's
                # group must not end it before it has done its job.
                start_new_session=True,
                # No marker of its own (nothing may sweep it early), no hold on
                # the gateway's working directory.
                env={},
                cwd="/",
            )
        except OSError as exc:
            _log.warning(
                f"cannot start the guardian process ({exc.strerror or type(exc).__name__}); "
                "servers may outlive the gateway if it is killed"
            )
            return None
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        return cls(process, marker)

    @property
    def registered(self) -> frozenset[int]:
        """The process groups registered and not yet unregistered."""
        return frozenset(self._groups)

    def register(self, pgid: int) -> None:
        """Have the group ``pgid`` killed if the gateway ends before :meth:`unregister`."""
        self._groups.add(pgid)
        self._write(b"+%d\n" % pgid)

    def unregister(self, pgid: int) -> None:
        """Forget ``pgid``: call it once every member got SIGKILL, before its leader is reaped."""
        self._groups.discard(pgid)
        self._write(b"-%d\n" % pgid)

    def close(self, timeout: float = _CLOSE_WAIT_S) -> None:
        """Write what a full pipe held back, close it, wait for the guardian to exit; ``timeout`` bounds it all.

        It then kills whatever is still registered (nothing, after a clean
        shutdown) and any process still carrying the marker.
        """
        deadline = time.monotonic() + timeout
        while self._backlog and not self._gone and (left := deadline - time.monotonic()) > 0:
            select.select([], [self._fd], [], left)
            self._write(b"")
        self._gone = True
        with suppress(OSError):
            self._stdin.close()
        with suppress(subprocess.TimeoutExpired):
            self._process.wait(max(0.0, deadline - time.monotonic()))

    def _write(self, line: bytes) -> None:
        if self._gone:
            return
        # Lines wait in order behind what a full pipe did not take.
        self._backlog += line
        try:
            written = os.write(self._fd, self._backlog)
        except BlockingIOError:
            written = 0
        except OSError as exc:  # BrokenPipeError: the guardian is gone
            self._give_up(f"the guardian process is gone ({exc.strerror or type(exc).__name__})")
            return
        del self._backlog[:written]
        if len(self._backlog) > _MAX_BACKLOG:
            self._give_up("the guardian process stopped reading")

    def _give_up(self, why: str) -> None:
        self._gone = True
        self._backlog.clear()
        _log.warning(f"{why}; servers may outlive the gateway if it is killed", extra={"fields": {"pid": self.pid}})


def sweep_leftovers() -> int:
    """SIGKILL the process groups that gateways no longer alive left behind; how many processes carried their marker.

    Only processes of this user whose marker names a gateway this process
    can prove is gone (same pid namespace, no process with its pid and start
    time) are touched; see the module docstring. Logs the count at notice.
    """
    me = os.getpid()
    found = 0
    groups: set[int] = set()
    for pid, marker in marked_processes():
        if pid == me or marker_owner_alive(marker) is not False:
            continue
        found += 1
        pgid = kill_group_of(pid)
        if pgid is not None:
            groups.add(pgid)
    if found:
        _log.log(
            NOTICE,
            f"killed {found} process{'es' if found != 1 else ''} left behind by a gateway that is gone",
            extra={"fields": {"processes": found, "groups": len(groups)}},
        )
    return found


@contextmanager
def guarding() -> Iterator[Guardian | None]:
    """Sweep leftovers, start a guardian and make it :func:`current_guardian` until the block ends.

    Enter it before ``trio.run`` (its tasks inherit the context) and before
    any downstream starts. At the end the guardian's pipe is closed, after
    ``trio.run`` returned and so after every downstream was reaped.
    """
    sweep_leftovers()
    guardian = Guardian.spawn()
    token = _current.set(guardian)
    try:
        yield guardian
    finally:
        _current.reset(token)
        if guardian is not None:
            guardian.close()
