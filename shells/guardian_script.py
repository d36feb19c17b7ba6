"""The guardian process, and the ``/proc`` reading it shares with the gateway.

Run as ``python -I -S guardian_script.py MARKER`` by :mod:`.guardian`; the
standard library alone, so it starts in a few milliseconds without
site-packages. Its stdin is a pipe whose write end only the gateway holds.
Each line on it is ``+PGID`` (a downstream's process group started) or
``-PGID`` (it was killed and is being reaped). End of input means the gateway
is gone, cleanly or not: every group still registered gets SIGKILL, then (on
Linux) so does the group of every process whose environment carries
``LOCKGATE_GATEWAY=MARKER``, which catches what left its group with
``setsid`` and what started between the gateway's spawn and its ``+PGID``.
Then it exits. SIGINT, SIGTERM, SIGHUP and SIGPIPE are ignored (see
:data:`IGNORED_SIGNALS`).

The gateway imports this module for :func:`marked_processes`,
:func:`own_marker` and :func:`kill_group_of`; nothing here imports lockgate.
"""

from __future__ import annotations

import os
import signal
import sys

# Neither typing nor collections.abc is imported at run time: together they
# would double the guardian's start-up. Type checkers take this name as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator

MARKER_VARIABLE = "LOCKGATE_GATEWAY"
"""Set in every stdio downstream's environment to :func:`own_marker` of its gateway."""

_PREFIX = MARKER_VARIABLE.encode() + b"="
_PROC = "/proc"


def start_time(pid: int | str) -> int | None:
    """Field 22 of ``/proc/PID/stat`` (clock ticks after boot), or ``None`` when unreadable."""
    try:
        with open(f"{_PROC}/{pid}/stat", "rb") as f:
            stat = f.read()
        # The command name (field 2) may hold spaces and parentheses: split after its last ")".
        return int(stat.rsplit(b")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def pid_namespace() -> int | None:
    """The inode of this process's pid namespace, or ``None`` without ``/proc``."""
    try:
        return os.stat(f"{_PROC}/self/ns/pid").st_ino
    except OSError:
        return None


def own_marker() -> str:
    """``PID:START:PIDNS`` for this process: names it uniquely while it lives.

    The start time tells this process from a later one with the same pid; the
    pid namespace keeps a gateway from judging markers written in another
    container, where the same numbers mean other processes. Without ``/proc``
    the last two are ``?`` (nothing reads markers there).
    """
    start = start_time("self")
    namespace = pid_namespace()
    return f"{os.getpid()}:{'?' if start is None else start}:{'?' if namespace is None else namespace}"


def marker_owner_alive(marker: str) -> bool | None:
    """Whether the gateway that wrote ``marker`` still runs; ``None`` when it cannot be judged here.

    A marker from another pid namespace, or one that does not parse, cannot
    be judged: its numbers mean nothing in this namespace.
    """
    try:
        pid_text, start_text, namespace_text = marker.split(":")
        pid, start, namespace = int(pid_text), int(start_text), int(namespace_text)
    except ValueError:
        return None
    if namespace != pid_namespace():
        return None
    return pid > 0 and start_time(pid) == start


def marked_processes() -> Iterator[tuple[int, str]]:
    """``(pid, marker)`` for every process of this user whose environment carries a marker.

    Reads ``/proc/PID/environ`` (the environment the process started with);
    yields nothing where ``/proc`` is missing. Processes of other users,
    kernel threads and zombies have no readable environment and are skipped.
    """
    try:
        entries = os.listdir(_PROC)
    except OSError:
        return
    uid = os.getuid()
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            if os.stat(f"{_PROC}/{entry}").st_uid != uid:
                continue
            with open(f"{_PROC}/{entry}/environ", "rb") as f:
                environ = f.read()
        except OSError:
            continue
        if _PREFIX not in environ:
            continue
        for item in environ.split(b"\0"):
            if item.startswith(_PREFIX):
                yield int(entry), item[len(_PREFIX) :].decode("ascii", "replace")
                break


def kill_group_of(pid: int) -> int | None:
    """SIGKILL the process group of ``pid``; the group id, or ``None`` when nothing was signalled.

    Never this process's own group, nor that of init.
    """
    try:
        pgid = os.getpgid(pid)
    except OSError:
        return None
    if pgid <= 1 or pgid == os.getpgrp():
        return None
    try:
        os.killpg(pgid, signal.SIGKILL)
    except OSError:
        return None
    return pgid


def watch(stdin_fd: int, marker: str) -> None:
    """Read registrations from ``stdin_fd`` until end of input, then kill what they name."""
    groups: set[int] = set()
    pending = b""
    while True:
        try:
            chunk = os.read(stdin_fd, 4096)
        except InterruptedError:
            continue
        except OSError:
            break
        if not chunk:
            break
        *lines, pending = (pending + chunk).split(b"\n")
        for line in lines:
            try:
                pgid = int(line[1:])
            except ValueError:
                continue
            if line[:1] == b"+":
                groups.add(pgid)
            elif line[:1] == b"-":
                groups.discard(pgid)
    for pgid in groups:
        if pgid > 1:
            try:
                os.killpg(pgid, signal.SIGKILL)
            except OSError:
                pass  # already gone
    if marker:
        for pid, found in marked_processes():
            if found == marker:
                kill_group_of(pid)


IGNORED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE)
"""Ignored: only end of input decides when the guardian acts. The gateway spawns
it with them blocked, so one that arrives while Python starts waits, and is
discarded once ignored."""


def main(argv: list[str]) -> int:
    for sig in IGNORED_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, IGNORED_SIGNALS)
    watch(0, argv[1] if len(argv) > 1 else "")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
