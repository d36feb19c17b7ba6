"""The stdio front: one MCP client (id 0) on the gateway's own stdin and stdout.

MCP over stdio (spec 2025-11-25, basic/transports, "stdio"): one JSON-RPC
message per line, stdout carries nothing but MCP, stderr is for logs. The
client ends the session by closing our stdin; SIGTERM and SIGINT end it too.

Theory of operation. :func:`serve_stdio` starts a :class:`~.runtime.Runtime`,
registers client 0 with a writer that writes one encoded line per message,
feeds ``GatewayStarted`` and ``ClientOpened`` (under the client's
credential when authentication is on, kept checked), starts the configuration
watcher (:mod:`.reload`) when asked to, and reads stdin into
``ClientMessageReceived`` events. On EOF, a signal, a ``CloseClient`` from
the core or a broken stdout it feeds ``ClientClosed`` and
``ShutdownRequested``, lets the runtime perform what follows, stop every
downstream (bounded, shielded) and flush the audit log, then returns.

:func:`serve_process_stdio` wires that to file descriptors 0 and 1, and first
points fd 1 at stderr, so that nothing else in the process (a stray print, a
C library) can ever write into the MCP stream.
"""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import Callable, Mapping
from functools import partial
from typing import TYPE_CHECKING, Final

import trio

from lockgate.core import (
    AuthenticationFailed,
    AuthenticationSucceeded,
    ClientClosed,
    ClientMessageReceived,
    ClientOpened,
    GatewayStarted,
    Principal,
    SendToClient,
    Settings,
    ShutdownRequested,
)

from .framing import LineSplitter
from .logs import get_logger
from .pipes import PipeReader
from .record import WireTap
from .reload import ReloadSource, watch_config
from .runtime import Core, Runtime
from .oauth import for_front
from .signals import STOP_SIGNALS, receive_signals, stop_on_signals

if TYPE_CHECKING:
    # Only named here: the store behind it is imported when authentication is on.
    from .identity import HeldCredential

__all__ = ["STDIO_CLIENT", "serve_process_stdio", "serve_stdio"]

STDIO_CLIENT: Final = 0
_READ_CHUNK = 65536

_log = get_logger("stdio")


async def serve_stdio(
    core: Core,
    settings: Settings,
    *,
    stdin: trio.abc.ReceiveStream,
    stdout: trio.abc.SendStream,
    handle_signals: bool = True,
    environ: Mapping[str, str] | None = None,
    reload: ReloadSource | None = None,
    tap: WireTap | None = None,
    credential: HeldCredential | None = None,
) -> None:
    """Serve one stdio client until EOF, a signal or the core closes it.

    ``credential``, with authentication on, is the client's
    (``GATEWAY_API_KEY``): the session acts as what it proves, and a revoke
    or expiry reaches the session within about a second.

    With ``reload``, the configuration files are watched and SIGHUP reloads
    them (see :mod:`.reload`); SIGHUP is left alone when ``handle_signals``
    is false. ``tap``, when given (``--record``), sees every message read
    and written.
    """
    oauth = for_front(os.environ if environ is None else environ, stdio=True)
    runtime = Runtime(core, settings=settings, environ=environ, oauth=oauth, pins=None if reload is None else reload.pins)
    done = trio.Event()

    out_fd = stdout.fileno() if isinstance(stdout, trio.lowlevel.FdStream) else None

    # A message send_nowait framed but could not write (all or part of it): the
    # runtime hands that same action to `send` next, which writes what is left.
    held: list[tuple[SendToClient, bytes]] = []

    def frame(action: SendToClient) -> bytes:
        data = action.encoded()
        if tap is not None:
            tap("s2c", data)
        return data + b"\n"

    def send_nowait(action: SendToClient) -> bool:
        # Only one task performs actions at a time (the runtime's guarantee),
        # so a direct non-blocking write keeps order and spares the scheduler
        # a round trip; a full pipe leaves the rest to `send`.
        if out_fd is None or held:
            return False
        data = frame(action)
        try:
            written = os.write(out_fd, data)
        except BlockingIOError:
            written = 0
        if written == len(data):
            return True
        held.append((action, data[written:]))
        return False

    async def send(action: SendToClient) -> None:
        if held and held[0][0] is action:
            data = held.pop()[1]
        else:
            held.clear()
            if send_nowait(action):
                return
            data = held.pop()[1] if held else frame(action)
        await stdout.send_all(data)

    with receive_signals(handle_signals, *STOP_SIGNALS) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(runtime.run)
            runtime.register_client(STDIO_CLIENT, send, done.set, send_nowait)
            now = trio.current_time()
            # The seed of the core's `random` balancing strategy (the core may not draw its own).
            await runtime.feed(GatewayStarted(now=now, seed=secrets.randbits(64)))
            if credential is None:
                await runtime.feed(ClientOpened(now=now, client=STDIO_CLIENT, transport="stdio"))
            else:
                await _open_with(credential, runtime, nursery, now)
            if reload is not None:
                # After GatewayStarted (a reload must not race the eager start),
                # before the first client message (SIGHUP is handled by then).
                await nursery.start(partial(watch_config, handle_sighup=handle_signals), runtime, reload)
            nursery.start_soon(_read_client, runtime, stdin, settings.max_message_bytes, done, tap)
            if signals is not None:
                nursery.start_soon(stop_on_signals, signals, done, _log, "stopping the servers")
            await done.wait()
            now = trio.current_time()
            await runtime.feed(ClientClosed(now=now, client=STDIO_CLIENT))
            await runtime.feed(ShutdownRequested(now=now))
            await runtime.aclose()
            nursery.cancel_scope.cancel()
    oauth.close()


async def serve_process_stdio(
    core: Core,
    settings: Settings,
    reload: ReloadSource | None = None,
    tap: WireTap | None = None,
    credential: HeldCredential | None = None,
) -> None:
    """:func:`serve_stdio` on this process's stdin and stdout, reloading from ``reload``."""
    sys.stdout.flush()
    stdin_fd = os.dup(0)
    stdout_fd = os.dup(1)
    try:
        os.dup2(2, 1)
    except OSError:  # no stderr at all: stray writes go nowhere rather than into MCP
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.close(devnull)
    async with trio.lowlevel.FdStream(stdin_fd) as stdin, trio.lowlevel.FdStream(stdout_fd) as stdout:
        await serve_stdio(core, settings, stdin=stdin, stdout=stdout, reload=reload, tap=tap, credential=credential)


async def _open_with(credential: HeldCredential, runtime: Runtime, nursery: trio.Nursery, now: float) -> None:
    """Open the session under the credential's principal, audited, and keep checking it."""
    first = credential.check(now)
    if isinstance(first, Principal):
        await runtime.feed(ClientOpened(now=now, client=STDIO_CLIENT, transport="stdio", principal=first))
        await runtime.feed(AuthenticationSucceeded(now=now, principal=first, address="stdio"))
    else:
        # Checked at start, refused since: a session bound to the credential, refused until it counts again.
        who = Principal(id=first.credential or "stdio")
        await runtime.feed(ClientOpened(now=now, client=STDIO_CLIENT, transport="stdio", principal=who))
        await runtime.feed(
            AuthenticationFailed(now=now, reason=first.reason, credential=first.credential, address="stdio", client=STDIO_CLIENT)
        )
    await nursery.start(credential.watch, runtime.feed, STDIO_CLIENT, first)


async def _read_client(
    runtime: Runtime, stdin: trio.abc.ReceiveStream, max_bytes: int, done: trio.Event, tap: WireTap | None
) -> None:
    splitter = LineSplitter(max_bytes)
    reader = PipeReader(stdin, _READ_CHUNK)
    try:
        while chunk := await reader.receive_some():
            now = trio.current_time()
            for line in splitter.feed(chunk):
                if tap is not None:
                    tap("c2s", line if isinstance(line, bytes) else None)
                if isinstance(line, bytes):
                    await runtime.feed(ClientMessageReceived(now=now, client=STDIO_CLIENT, data=line))
                else:
                    await runtime.feed(ClientMessageReceived(now=now, client=STDIO_CLIENT, data=b"", too_large=True))
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
        _log.info(f"stdin: {type(exc).__name__}")
    done.set()

