"""Stdio downstreams: one child process per ``StartDownstream``, in its own session.

Theory of operation. :meth:`StdioDownstream.run` is one task in the runtime's
nursery. It resolves the command on the child's ``PATH``, spawns it with
``start_new_session=True`` (so ``sh -c``, ``npx`` or ``uvx`` wrappers and all
their children share one process group that can be signalled at once), then
runs three helpers: a writer that drains the bounded message queue into the
child's stdin in order, a stdout reader that frames lines into
``DownstreamMessageReceived``, and a stderr relay that logs lines with the
server name (:mod:`.stderr_relay`). Messages queued before the process is up
simply wait in the queue.

It then waits for one of three things:

- the process exits by itself: every member of its group is killed, it is
  reaped, the stdout it already wrote is delivered, and
  ``DownstreamExited("exited with code N")`` is reported;
- :meth:`stop` (the core's ``StopDownstream``, or shutdown): stdin is closed,
  then after 2 s the group gets SIGTERM, then after 2 s SIGKILL, and the
  process is reaped. The core has forgotten the id, so nothing is reported.
  ``stop(kill=True)`` (a server the core declared hung) skips the grace: a
  hung or stopped process would not react to end of input or SIGTERM, while
  SIGKILL ends even a SIGSTOPped one. It also cuts short a grace already
  running;
- writing to stdin fails: the same sequence, reported as the exit reason if
  the process exits on its own within the grace period, else as
  ``"closed its input"``.

A line on stdout over the limit is a fact for the core, not a reason for the
shell to end anything: it is reported as ``DownstreamMessageReceived`` with
``too_large`` set, and stdout is read no further (whatever follows can no
longer be matched to calls). The core answers with ``StopDownstream``.

Cleanup is shielded from cancellation and bounded in time, so a cancelled
runtime still leaves no process behind. A gateway that is killed cannot clean
up: for that case each child carries this gateway's marker in its environment
(``LOCKGATE_GATEWAY``), and its process group is registered with the guardian
process from spawn until it is killed (see :mod:`.guardian`, which also says
why ``PR_SET_PDEATHSIG`` is no option). Exit reasons may reach clients: they
never hold a host path, a secret or a traceback.

The MCP stdio shutdown sequence (close stdin, SIGTERM, SIGKILL) is from spec
2025-11-25, basic/lifecycle, "Shutdown". What the child inherits, how its
command is found and how its exit is described are :mod:`.child_process`'s.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Awaitable, Callable, Mapping
from contextlib import suppress

import trio

from lockgate.core import DownstreamExited, DownstreamMessageReceived, Event, ServerSpec

from .child_process import INHERITED_ENVIRONMENT, child_environment, describe_exit, open_pidfd, resolve_command
from .framing import LineSplitter
from .guardian import MARKER_VARIABLE, Guardian, current_guardian, gateway_marker
from .logs import get_logger
from .pipes import PipeReader
from .stderr_relay import StderrRelay

__all__ = [
    "INHERITED_ENVIRONMENT",
    "StdioDownstream",
    "child_environment",
    "describe_exit",
    "resolve_command",
]

Emit = Callable[[Event], Awaitable[None]]

GRACE_S = 2.0
"""Wait after closing stdin, and again after SIGTERM."""
_REAP_S = 2.0
_DRAIN_S = 2.0
_READ_CHUNK = 65536
_WRITE_BATCH = 65536

_log = get_logger("downstream")


class StdioDownstream:
    """One downstream server over stdio; see the module docstring."""

    def __init__(
        self,
        *,
        downstream: int,
        server: str,
        spec: ServerSpec,
        max_message_bytes: int,
        emit: Emit,
        queue_size: int = 1024,
        environ: Mapping[str, str] | None = None,
        guardian: Guardian | None = None,
    ) -> None:
        """``guardian``: where to register the process group; by default :func:`.guardian.current_guardian`."""
        self.downstream = downstream
        self.server = server
        self._spec = spec
        self._max_message_bytes = max_message_bytes
        self._emit_event = emit
        self._environ: Mapping[str, str] = os.environ if environ is None else environ
        self._guardian = guardian if guardian is not None else current_guardian()
        self._queue_in, self._queue_out = trio.open_memory_channel[bytes](queue_size)
        self._waiting = trio.CancelScope()
        self._stopped = False
        self._closing_input = False
        self._leader_gone = False
        self._terminated: bool | None = None
        self._kill = False
        #: The grace periods of `_terminate`, cancelled by `stop(kill=True)`.
        self._grace: trio.CancelScope | None = None
        self._stdout_done = trio.Event()
        self._stderr_done = trio.Event()
        self._stderr = StderrRelay(server)
        self._pidfd: int | None = None
        #: The child's stdin while it can be written to directly, and how many
        #: messages wait for (or are being written by) the writer task.
        self._stdin_fd: int | None = None
        self._queued = 0
        self.pid: int | None = None
        self.finished = trio.Event()
        """Set when :meth:`run` is over: the process (if any) is reaped."""

    def send_nowait(self, data: bytes, *, expects_answer: bool = False) -> None:
        """Queue one framed message for stdin.

        ``expects_answer`` changes nothing here: a pipe carries every message
        in order.

        Raises:
            trio.WouldBlock: the queue is full (the server is not reading).
            trio.BrokenResourceError: the downstream is gone.
        """
        if self._stdin_fd is not None and self._queued == 0:
            # Fast path: the writer task is idle and holds nothing, so writing
            # here keeps the order and spares a task switch per message.
            try:
                written = os.write(self._stdin_fd, data)
            except BlockingIOError:
                written = 0
            except OSError:
                written = 0  # the writer task will meet the same error and report it
            if written == len(data):
                return
            data = data[written:]
        self._queue_in.send_nowait(data)
        self._queued += 1

    def stop(self, kill: bool = False) -> None:
        """Stop the process in the background; report nothing from now on.

        With ``kill``, the whole process group gets SIGKILL at once, without
        closing stdin or sending SIGTERM first, even if a gentler stop is
        already waiting out its grace period.
        """
        self._stopped = True
        self._stdin_fd = None
        if kill:
            self._kill = True
            if self._grace is not None:
                self._grace.cancel()
        self._waiting.cancel()

    async def run(self) -> None:
        """Spawn, serve and reap the process; report how it ended unless stopped."""
        try:
            reason = await self._run()
        finally:
            self._queue_out.close()
            self.finished.set()
        if not self._stopped:
            self._stderr.log_tail(reason)
        await self._emit(DownstreamExited(now=trio.current_time(), downstream=self.downstream, reason=reason))

    async def _emit(self, event: Event) -> None:
        if not self._stopped:
            await self._emit_event(event)

    async def _run(self) -> str:
        spec = self._spec
        if spec.transport != "stdio" or not spec.command:
            return "no command configured"
        env = child_environment(self._environ, spec.env)
        # Set last, so a server's `env` can neither forge nor drop it.
        env[MARKER_VARIABLE] = gateway_marker()
        if spec.cwd is not None and not os.path.isdir(spec.cwd):
            return "failed to start: working directory not found"
        executable = resolve_command(spec.command, path=env.get("PATH", os.defpath), cwd=spec.cwd)
        if executable is None:
            return f"command not found: {os.path.basename(spec.command)}"
        if self._stopped:
            return "stopped"
        try:
            proc = await trio.lowlevel.open_process(
                [spec.command, *spec.args],
                executable=executable,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
                cwd=spec.cwd,
                env=env,
            )
        except OSError as exc:
            return f"failed to start: {exc.strerror or type(exc).__name__}"
        self.pid = proc.pid
        # start_new_session: the child leads its own group, whose id is its pid.
        if self._guardian is not None:
            self._guardian.register(proc.pid)
        self._pidfd = open_pidfd(proc.pid)
        # On POSIX the pipes are FdStreams: send_nowait may write to stdin directly.
        if isinstance(proc.stdin, trio.lowlevel.FdStream):
            self._stdin_fd = proc.stdin.fileno()
        _log.debug("server process started", extra={"fields": {"server": self.server, "downstream": self.downstream, "pid": proc.pid}})
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._write_stdin, proc)
                nursery.start_soon(self._read_stdout, proc)
                nursery.start_soon(self._read_stderr, proc)
                with self._waiting:
                    await self._wait_exit(proc)
                exited_by_itself = await self._terminate(proc)
                if not self._stopped:
                    with trio.move_on_after(_DRAIN_S):
                        await self._stdout_done.wait()
                        await self._stderr_done.wait()
                nursery.cancel_scope.cancel()
        finally:
            self._stdin_fd = None
            with trio.CancelScope(shield=True):
                await self._terminate(proc)
                for stream in (proc.stdin, proc.stdout, proc.stderr):
                    if stream is not None:
                        await stream.aclose()
                self._close_pidfd()
        return describe_exit(proc.returncode) if exited_by_itself else "closed its input"

    # -- ending the process -------------------------------------------------

    async def _wait_exit(self, proc: trio.Process) -> None:
        # A pidfd turns readable when the process exits but leaves it unreaped,
        # so its pid (and process group id) cannot be reused before we signal
        # the group for the last time.
        if self._pidfd is not None:
            await trio.lowlevel.wait_readable(self._pidfd)
        else:
            await proc.wait()
        self._leader_gone = True

    async def _exits_within(self, proc: trio.Process, seconds: float) -> bool:
        with trio.move_on_after(seconds):
            await self._wait_exit(proc)
            return True
        return False

    async def _terminate(self, proc: trio.Process) -> bool:
        """Close stdin, SIGTERM, SIGKILL as needed; kill the group; reap. True if it exited by itself."""
        if self._terminated is not None:
            return self._terminated
        # Once stdin may close, its fd number may be reused: no direct writes.
        self._stdin_fd = None
        with trio.CancelScope(shield=True):
            by_itself = self._leader_gone
            if not by_itself:
                self._closing_input = True
                # A scope inside the shield: stop(kill=True) can still end the grace.
                self._grace = grace = trio.CancelScope()
                with grace:
                    if not self._kill:
                        if proc.stdin is not None:
                            with suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                                await proc.stdin.aclose()
                        by_itself = await self._exits_within(proc, GRACE_S)
                        if not by_itself:
                            self._signal(proc, signal.SIGTERM)
                            await self._exits_within(proc, GRACE_S)
                if not self._leader_gone:
                    self._signal(proc, signal.SIGKILL)
                    await self._exits_within(proc, _REAP_S)
            # Whatever the leader left behind in its group dies with it.
            self._signal(proc, signal.SIGKILL, leader=False)
            if self._guardian is not None:
                # Every member has SIGKILL now, and the leader is not reaped
                # yet (see _wait_exit): the group id cannot be reused before
                # the guardian reads this line.
                self._guardian.unregister(proc.pid)
            with trio.move_on_after(_REAP_S):
                await proc.wait()
        self._terminated = by_itself
        return by_itself

    def _signal(self, proc: trio.Process, sig: signal.Signals, *, leader: bool = True) -> None:
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        if leader and not self._leader_gone:
            # In case the leader moved itself to another group; send_signal
            # checks it is not reaped yet, so the pid is still ours.
            with suppress(ProcessLookupError, PermissionError):
                proc.send_signal(sig)

    def _close_pidfd(self) -> None:
        if self._pidfd is not None:
            trio.lowlevel.notify_closing(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None

    # -- the pipes -----------------------------------------------------------

    async def _write_stdin(self, proc: trio.Process) -> None:
        assert proc.stdin is not None
        try:
            async for data in self._queue_out:
                batch = [data]
                size = len(data)
                while size < _WRITE_BATCH:
                    try:
                        more = self._queue_out.receive_nowait()
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break
                    batch.append(more)
                    size += len(more)
                await proc.stdin.send_all(b"".join(batch))
                self._queued -= len(batch)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            if not self._closing_input and not self._stopped:
                _log.warning("cannot write to the server", extra={"fields": {"server": self.server}})
                self._waiting.cancel()

    async def _read_stdout(self, proc: trio.Process) -> None:
        assert proc.stdout is not None
        splitter = LineSplitter(self._max_message_bytes)
        reader = PipeReader(proc.stdout, _READ_CHUNK)
        try:
            while chunk := await reader.receive_some():
                now = trio.current_time()
                for line in splitter.feed(chunk):
                    if isinstance(line, bytes):
                        await self._emit(DownstreamMessageReceived(now=now, downstream=self.downstream, data=line))
                    else:
                        # The message answered some call we can no longer name, so
                        # nothing after it can be trusted to line up: read no more,
                        # and let the core decide (it stops the server and fails
                        # its calls now rather than at their timeouts).
                        _log.warning(f"sent a message over {self._max_message_bytes} bytes", extra={"fields": {"server": self.server}})
                        await self._emit(DownstreamMessageReceived(now=now, downstream=self.downstream, data=b"", too_large=True))
                        return
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        finally:
            self._stdout_done.set()

    async def _read_stderr(self, proc: trio.Process) -> None:
        assert proc.stderr is not None
        try:
            await self._stderr.relay(proc.stderr)
        finally:
            self._stderr_done.set()
