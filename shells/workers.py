"""``lockgate serve --workers N``: several gateway processes on one listening socket.

One trio process uses one core. With ``--workers N`` (N > 1, HTTP or
WebSocket front), the process the operator started becomes a *supervisor*:
it binds the listening socket once, with the same checks as a single
gateway (:func:`bind_listeners`), and starts N *workers*, each a whole
``lockgate serve`` (its own core, its own downstream servers, its own
guardian) that accepts connections on the socket it inherited. The kernel
hands each new connection to one of the workers waiting in ``accept``.
Handing the socket down (``pass_fds``) rather than having each worker bind
with ``SO_REUSEPORT`` leaves no moment where the port is free for another
program, and the backlog keeps the connections that arrive while a worker
restarts.

A worker is the same program run again with a hidden ``--worker`` option
(:class:`WorkerRole`: its index, the supervisor's pid, the descriptor of a
watch pipe and those of the listening sockets); it is started in its own
process group, so a Ctrl-C in a terminal reaches the supervisor alone, which
then stops every worker in order.

The supervisor (:class:`Supervisor`):

- restarts a worker that exits while nothing asked it to, after a delay that
  doubles from :data:`FIRST_DELAY` up to :data:`MAX_DELAY` (reset once a
  worker has lived :data:`STEADY_AFTER`); more than :data:`MAX_RESTARTS`
  unexpected exits of one worker within :data:`RESTART_WINDOW` is a crash
  loop: it is logged and everything stops (exit status 1). A worker that
  exits with the usage status (2: its configuration is refused) stops
  everything at once, since a restart would be refused the same way;
- forwards SIGTERM and SIGINT to every worker as SIGTERM, waits for them for
  the shutdown grace period and a margin, then SIGKILLs what is left;
- forwards SIGHUP (reload) to every worker.

No worker outlives the supervisor: each asks the kernel for SIGTERM when its
parent dies (``prctl(PR_SET_PDEATHSIG)`` on Linux; the supervisor starts the
workers from its one thread, so that thread's end is the process's end), and
watches the read end of a pipe only the supervisor can write to: end of file
means the supervisor is gone, on any system. A stopping worker stops its
downstream servers as a single gateway does, and its guardian kills them if
the worker itself is killed (see :mod:`.guardian`).

Each worker's log lines carry ``worker=INDEX`` (:func:`tag_worker_logs`).
Each worker writes its index to a pipe once it accepts connections; the
supervisor gives the start-up summary and the connect hints at the first.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import trio

from .child_process import describe_exit, open_pidfd
from .logs import NOTICE, get_logger

__all__ = [
    "EXIT_CRASH_LOOP",
    "FIRST_DELAY",
    "MAX_DELAY",
    "MAX_RESTARTS",
    "RESTART_WINDOW",
    "STEADY_AFTER",
    "WORKER_OPTION",
    "Supervisor",
    "WorkerRole",
    "bind_listeners",
    "die_with_parent",
    "parse_workers",
    "resolve_workers",
    "run_worker",
    "tag_worker_logs",
    "watch_parent",
]

#: The hidden ``serve`` option that makes a process one supervisor's worker.
WORKER_OPTION = "--worker"
#: Seconds before the first restart of a worker that died; doubles at each further one.
FIRST_DELAY = 0.1
#: The longest wait before a restart.
MAX_DELAY = 5.0
#: A worker that lived this long is healthy again: the next restart waits :data:`FIRST_DELAY`.
STEADY_AFTER = 30.0
#: Unexpected exits of one worker, within :data:`RESTART_WINDOW`, that make a crash loop.
MAX_RESTARTS = 5
RESTART_WINDOW = 60.0
#: The supervisor's exit status after a crash loop.
EXIT_CRASH_LOOP = 1
#: Seconds the supervisor waits, past the shutdown grace, before it SIGKILLs a stopping worker.
KILL_MARGIN = 5.0

_EXIT_USAGE = 2
_PR_SET_PDEATHSIG = 1

_log = get_logger("workers")


def parse_workers(text: str) -> int | Literal["auto"]:
    """``--workers``: a whole number of 1 or more, or ``auto``; else a ``ValueError`` that says so."""
    if text.strip().lower() == "auto":
        return "auto"
    if text.isascii() and text.isdigit() and int(text) >= 1:
        return int(text)
    raise ValueError(f"{text!r} is not a number of workers: give a whole number of 1 or more, or auto (one per core)")


def resolve_workers(value: int | Literal["auto"]) -> int:
    """The number of workers ``value`` asks for: ``auto`` is the cores this process may run on."""
    if value != "auto":
        return value
    affinity = getattr(os, "sched_getaffinity", None)
    if affinity is not None:
        try:
            return max(1, len(affinity(0)))
        except OSError:
            pass
    return os.cpu_count() or 1


def bind_listeners(host: str, port: int) -> list[socket.socket]:
    """Bind and listen on ``host``:``port`` as a single gateway would; the sockets, to hand to the workers.

    Raises:
        CannotListen: as :func:`~.http.serve_http` does, for the same reasons.
    """
    from .http import CannotListen

    async def bind() -> list[socket.socket]:
        listeners = await trio.open_tcp_listeners(port, host=host)
        # Out of trio's hands: the descriptors outlive this run, in the workers.
        return [socket.socket(fileno=listener.socket.detach()) for listener in listeners]

    try:
        return trio.run(bind)
    except OSError as exc:
        raise CannotListen(host, port, exc) from exc


@dataclass(frozen=True)
class WorkerRole:
    """What a worker is told by its supervisor: the value of the hidden ``--worker`` option.

    Written ``INDEX:SUPERVISOR_PID:WATCH_FD:READY_FD:FD[,FD...]``: the worker
    watches ``WATCH_FD`` for the supervisor's end and writes its index and a
    newline to ``READY_FD`` once it accepts connections.
    """

    index: int
    supervisor: int
    watch_fd: int
    ready_fd: int
    listen_fds: tuple[int, ...]

    def option(self) -> str:
        fds = ",".join(map(str, self.listen_fds))
        return f"{self.index}:{self.supervisor}:{self.watch_fd}:{self.ready_fd}:{fds}"

    @classmethod
    def parse(cls, text: str) -> WorkerRole:
        """The role in ``text``; ``ValueError`` when it is not one."""
        index, supervisor, watch, ready, fds = text.split(":")
        listen = tuple(int(fd) for fd in fds.split(","))
        return cls(int(index), int(supervisor), int(watch), int(ready), listen)

    def report_ready(self) -> None:
        """Tell the supervisor this worker accepts connections (a line shorter than a pipe's atomic write)."""
        try:
            os.write(self.ready_fd, b"%d\n" % self.index)
        except OSError:
            pass  # the supervisor is gone: the watch pipe says so too

    def sockets(self) -> list[socket.socket]:
        """The listening sockets inherited from the supervisor."""
        return [socket.socket(fileno=fd) for fd in self.listen_fds]


def die_with_parent(supervisor: int) -> bool:
    """Have the kernel send this process SIGTERM when its parent dies; ``False`` if the parent is already gone.

    Linux only (``prctl(PR_SET_PDEATHSIG)``); elsewhere only the watch pipe
    (:func:`watch_parent`) does the job. The parent is checked after the
    request: it may have died before it.
    """
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        except (OSError, AttributeError):  # no libc to speak of: the watch pipe remains
            pass
    return os.getppid() == supervisor


async def watch_parent(fd: int, stop: trio.Event) -> None:
    """Set ``stop`` when the watch pipe ``fd`` reaches end of file: the supervisor is gone."""
    os.set_blocking(fd, False)
    while True:
        await trio.lowlevel.wait_readable(fd)
        try:
            data = os.read(fd, 512)
        except BlockingIOError:
            continue
        if not data:
            break
    os.close(fd)
    if not stop.is_set():
        _log.warning("the supervising process is gone; stopping")
        stop.set()


class _WorkerField(logging.Filter):
    """Adds ``worker=INDEX`` to every record's fields (a new mapping: the record's own may be shared)."""

    def __init__(self, index: int) -> None:
        super().__init__()
        self.index = index

    def filter(self, record: logging.LogRecord) -> bool:
        fields = getattr(record, "fields", None)
        record.fields = {**fields, "worker": self.index} if isinstance(fields, dict) else {"worker": self.index}
        return True


def tag_worker_logs(logger: logging.Logger, index: int) -> None:
    """Make every line ``logger``'s handlers write carry ``worker=INDEX``."""
    for handler in logger.handlers:
        handler.addFilter(_WorkerField(index))


class _Worker:
    """One slot of the supervisor: its index and the process now filling it."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.returncode is None

    def signal(self, signum: int) -> None:
        if self.process is not None and self.process.returncode is None:
            try:
                self.process.send_signal(signum)
            except ProcessLookupError:
                pass


class Supervisor:
    """Start ``count`` workers of ``command`` on ``sockets`` and keep them running; see the module docstring.

    Args:
        command: the worker's command line, without the ``--worker`` option.
        sockets: the listening sockets every worker accepts on.
        count: the number of workers.
        grace: the shutdown grace period a worker takes to stop
            (``GATEWAY_SHUTDOWN_GRACE``); SIGKILL comes :data:`KILL_MARGIN` later.
        environ: the workers' environment.
        handle_signals: answer SIGTERM, SIGINT and SIGHUP (off in tests that drive :meth:`stop`).
    """

    def __init__(
        self,
        command: Sequence[str],
        sockets: Sequence[socket.socket],
        count: int,
        *,
        grace: float,
        environ: dict[str, str] | None = None,
        handle_signals: bool = True,
        on_ready: Callable[[], None] | None = None,
    ) -> None:
        self._command = list(command)
        self._sockets = list(sockets)
        self._workers = [_Worker(index) for index in range(count)]
        self._grace = grace
        self._environ = environ
        self._handle_signals = handle_signals
        self._on_ready = on_ready
        self._stopping = trio.Event()
        self._status = 0
        # The write end stays here, in no worker: its end of file tells the workers the supervisor is gone.
        self._watch_read, self._watch_write = os.pipe()
        # Every worker writes to this one when it accepts connections.
        self._ready_read, self._ready_write = os.pipe()

    @property
    def pids(self) -> list[int]:
        """The pids of the workers alive now."""
        return [w.process.pid for w in self._workers if w.process is not None and w.alive]

    def stop(self, status: int = 0) -> None:
        """Stop every worker (the exit status :meth:`run` returns is ``status`` unless one was set before)."""
        if not self._stopping.is_set():
            self._status = status
            self._stopping.set()

    def run(self) -> int:
        """Supervise until stopped; the exit status: 0, :data:`EXIT_CRASH_LOOP`, or 2 for a refused configuration."""
        try:
            return trio.run(self._run)
        finally:
            for fd in (self._watch_write, self._watch_read, self._ready_read, self._ready_write):
                os.close(fd)
            for sock in self._sockets:
                sock.close()

    async def _run(self) -> int:
        async with trio.open_nursery() as nursery:
            if self._handle_signals:
                signals_ready = trio.Event()
                nursery.start_soon(self._signals, signals_ready)
                await signals_ready.wait()
            nursery.start_soon(self._readiness)
            async with trio.open_nursery() as slots:
                for worker in self._workers:
                    slots.start_soon(self._keep, worker)
                await self._stopping.wait()
                await self._stop_all()
            nursery.cancel_scope.cancel()
        return self._status

    async def _signals(self, ready: trio.Event) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            ready.set()
            async for signum in signals:
                name = signal.Signals(signum).name
                if signum == signal.SIGHUP:
                    _log.info(f"received {name}; reloading every worker")
                    for worker in self._workers:
                        worker.signal(signal.SIGHUP)
                elif self._stopping.is_set():
                    _log.warning(f"received {name} again; still stopping the workers")
                else:
                    _log.info(f"received {name}; stopping the workers")
                    self.stop(0)

    async def _readiness(self) -> None:
        """Log each worker that accepts connections; call ``on_ready`` at the first (the port serves from then)."""
        os.set_blocking(self._ready_read, False)
        pending = b""
        first = True
        while True:
            await trio.lowlevel.wait_readable(self._ready_read)
            try:
                pending += os.read(self._ready_read, 4096)
            except BlockingIOError:
                continue
            *lines, pending = pending.split(b"\n")
            for line in lines:
                _log.info(f"worker {line.decode(errors='replace')} accepts connections")
                if first and self._on_ready is not None:
                    self._on_ready()
                first = False

    def _spawn(self, worker: _Worker) -> subprocess.Popen[bytes]:
        role = WorkerRole(
            worker.index, os.getpid(), self._watch_read, self._ready_write, tuple(s.fileno() for s in self._sockets)
        )
        # From this, the one thread: PR_SET_PDEATHSIG fires when the thread that forked the worker ends.
        process = subprocess.Popen(
            [*self._command, WORKER_OPTION, role.option()],
            stdin=subprocess.DEVNULL,
            pass_fds=(self._watch_read, self._ready_write, *role.listen_fds),
            env=self._environ,
            # Its own group: a terminal's Ctrl-C reaches the supervisor, which stops the workers in order.
            process_group=0,
        )
        worker.process = process
        _log.info(f"worker {worker.index} started", extra={"fields": {"worker": worker.index, "pid": process.pid}})
        return process

    async def _keep(self, worker: _Worker) -> None:
        """Fill one slot until stopping: start a worker, wait for it, restart it when it dies."""
        exits: deque[float] = deque()
        delay = FIRST_DELAY
        while not self._stopping.is_set():
            started = trio.current_time()
            process = self._spawn(worker)
            await _wait(process)
            if self._stopping.is_set():
                return
            now = trio.current_time()
            how = describe_exit(process.returncode)
            fields = {"worker": worker.index, "pid": process.pid}
            if process.returncode == _EXIT_USAGE:
                _log.error(f"worker {worker.index} {how}: its configuration is refused; stopping", extra={"fields": fields})
                self.stop(_EXIT_USAGE)
                return
            if now - started >= STEADY_AFTER:
                delay = FIRST_DELAY
            exits.append(now)
            while exits and now - exits[0] > RESTART_WINDOW:
                exits.popleft()
            if len(exits) > MAX_RESTARTS:
                _log.error(
                    f"worker {worker.index} {how}, its {len(exits)}th unexpected exit in {RESTART_WINDOW:.0f} s: "
                    "a crash loop; stopping",
                    extra={"fields": fields},
                )
                self.stop(EXIT_CRASH_LOOP)
                return
            _log.warning(f"worker {worker.index} {how}; restarting it in {delay:g} s", extra={"fields": fields})
            with trio.move_on_after(delay):
                await self._stopping.wait()
            delay = min(delay * 2, MAX_DELAY)

    async def _stop_all(self) -> None:
        """SIGTERM every worker, wait for them, SIGKILL the ones still there after the grace period."""
        for worker in self._workers:
            worker.signal(signal.SIGTERM)
        with trio.move_on_after(self._grace + KILL_MARGIN):
            await self._wait_all()
        left = [w for w in self._workers if w.alive]
        for worker in left:
            assert worker.process is not None
            _log.warning(
                f"worker {worker.index} did not stop in time; killing it",
                extra={"fields": {"worker": worker.index, "pid": worker.process.pid}},
            )
            worker.signal(signal.SIGKILL)
        await self._wait_all()
        _log.log(NOTICE, f"stopped {len(self._workers)} workers")

    async def _wait_all(self) -> None:
        for worker in self._workers:
            if worker.process is not None:
                await _wait(worker.process)


async def _wait(process: subprocess.Popen[bytes]) -> None:
    """Wait for ``process`` to exit, without blocking the loop, and reap it."""
    if process.returncode is not None:
        return
    pidfd = open_pidfd(process.pid)
    try:
        if pidfd is not None:
            await trio.lowlevel.wait_readable(pidfd)
        else:
            while process.poll() is None:
                await trio.sleep(0.05)
    finally:
        if pidfd is not None:
            os.close(pidfd)
    process.wait()


async def run_worker(serve: Callable[..., Awaitable[None]], role: WorkerRole) -> None:
    """Run ``serve`` (a :func:`~.http.serve_http` with its arguments bound) as the worker ``role`` says.

    ``serve`` is given the inherited listening sockets, a stop event that
    SIGTERM, SIGINT and the end of the supervisor all set, and an
    ``on_listening`` that tells the supervisor this worker is ready.
    """
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch_parent, role.watch_fd, stop)
        await serve(stop=stop, sockets=role.sockets(), on_listening=lambda url: role.report_ready())
        nursery.cancel_scope.cancel()
