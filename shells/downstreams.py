"""The runtime's downstream connections, by the core's downstream id: start, send, stop.

The runtime performs ``StartDownstream``, ``SendToDownstream`` and
``StopDownstream`` through :class:`Downstreams`:

- ``StartDownstream`` spawns the task of one instance's connection in the
  runtime's nursery: a stdio process (:mod:`.downstream_stdio`) or a
  Streamable HTTP session (:mod:`.downstream_http`). The core chose the
  instance and put how to start it in ``spec``; the shell only picks the
  transport it names.
- ``SendToDownstream`` queues the encoded message on the connection's
  bounded writer queue and never waits. A full queue means the server is not
  reading: it is stopped and reported as exited, as is a downstream whose
  message cannot be encoded (a bug, logged).
- ``StopDownstream`` stops it in the background (bounded, shielded cleanup).

A stopped downstream, or one whose exit the core has heard of, is forgotten;
the runtime drops later events about it. Ids are the core's counters and are
never reused.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Mapping
from functools import partial
from typing import Protocol

import trio

from lockgate.core import DownstreamExited, encode, Event, SendToDownstream, StartDownstream

from .downstream_http import HttpDownstream
from .downstream_stdio import StdioDownstream
from .logs import get_logger

__all__ = ["DOWNSTREAM_MESSAGE_FACTOR", "Downstream", "Downstreams"]

#: How much larger than a client's message a downstream's may be: SDK servers
#: send a tool result twice (text and structured), so a result the size of the
#: client limit must still fit.
DOWNSTREAM_MESSAGE_FACTOR = 4

_log = get_logger("runtime")


class Downstream(Protocol):
    """A running downstream connection, as the runtime drives it."""

    downstream: int
    server: str

    def send_nowait(self, data: bytes) -> None: ...

    def stop(self, kill: bool = False) -> None: ...

    async def run(self) -> None: ...


class Downstreams:
    """The live downstream connections; see the module docstring.

    ``emit`` is where a connection's own events go (the runtime's ``feed``);
    ``report`` takes the ``DownstreamExited`` of a connection the shell gave
    up on, for the core to hear right after the current batch of actions.
    """

    def __init__(
        self,
        *,
        emit: Callable[[Event], Awaitable[None]],
        report: Callable[[Event], None],
        queue_size: int,
        environ: Mapping[str, str] | None,
    ) -> None:
        self._live: dict[int, Downstream] = {}
        self._emit = emit
        self._report = report
        self._queue_size = queue_size
        self._environ = environ

    def __contains__(self, downstream_id: int) -> bool:
        return downstream_id in self._live

    def __len__(self) -> int:
        return len(self._live)

    def __iter__(self) -> Iterator[Downstream]:
        return iter(self._live.values())

    def exited(self, downstream_id: int) -> None:
        """The core heard ``DownstreamExited``: forget the connection."""
        del self._live[downstream_id]

    def start(self, action: StartDownstream, nursery: trio.Nursery, *, client_message_bytes: int) -> None:
        """Perform ``StartDownstream``: run the connection in ``nursery``.

        Its messages may be :data:`DOWNSTREAM_MESSAGE_FACTOR` times
        ``client_message_bytes`` (the settings' limit for a client's).
        """
        previous = self._live.pop(action.downstream, None)
        if previous is not None:
            _log.error("downstream id started twice", extra={"fields": {"downstream": action.downstream}})
            previous.stop()
        connect = partial(StdioDownstream, environ=self._environ) if action.spec.transport == "stdio" else HttpDownstream
        downstream = connect(
            downstream=action.downstream,
            server=action.server,
            spec=action.spec,
            max_message_bytes=DOWNSTREAM_MESSAGE_FACTOR * client_message_bytes,
            emit=self._emit,
            queue_size=self._queue_size,
        )
        self._live[action.downstream] = downstream
        nursery.start_soon(downstream.run)

    def send(self, action: SendToDownstream) -> None:
        """Perform ``SendToDownstream``; never waits."""
        downstream = self._live.get(action.downstream)
        if downstream is None:
            _log.debug("message for a stopped downstream dropped", extra={"fields": {"downstream": action.downstream}})
            return
        try:
            data = encode(action.message) + b"\n"
        except Exception:
            _log.exception("internal error: a message for a server could not be encoded", extra={"fields": {"server": downstream.server}})
            self.drop(action.downstream, "internal error in the gateway (logged)")
            return
        try:
            downstream.send_nowait(data)
        except trio.WouldBlock:
            _log.warning("server is not reading its input; stopping it", extra={"fields": {"server": downstream.server}})
            self.drop(action.downstream, "stopped reading its input")
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # It has ended; its DownstreamExited is already on its way.

    def stop(self, downstream_id: int, *, kill: bool = False) -> None:
        """Perform ``StopDownstream``: stop it in the background; nothing is reported."""
        stopped = self._live.pop(downstream_id, None)
        if stopped is not None:
            stopped.stop(kill=kill)

    def drop(self, downstream_id: int, reason: str) -> None:
        """Stop a downstream the shell cannot go on with, and report that it exited for ``reason``."""
        downstream = self._live.pop(downstream_id, None)
        if downstream is None:
            return
        downstream.stop()
        self._report(DownstreamExited(now=trio.current_time(), downstream=downstream_id, reason=reason))

    def stop_all(self) -> None:
        """Stop every downstream (shutdown); nothing is reported."""
        for downstream in self._live.values():
            downstream.stop()
        self._live.clear()
