"""The runtime's downstream connections, by the core's downstream id: start, send, stop.

The runtime performs ``StartDownstream``, ``SendToDownstream`` and
``StopDownstream`` through :class:`Downstreams`:

- ``StartDownstream`` spawns the task of one instance's connection in the
  runtime's nursery: a stdio process (:mod:`.downstream_stdio`) or a
  Streamable HTTP session (:mod:`.downstream_http`). The core chose the
  instance and put how to start it in ``spec``; the shell only picks the
  transport it names. The largest message the connection takes from the
  server is the core's :func:`~lockgate.core.downstream_message_bytes`.
- ``SendToDownstream`` queues the encoded message on the connection's
  bounded writer queue and never waits; it says whether the message
  expects an answer (an HTTP downstream POSTs requests concurrently). A
  full queue means the server is not reading: that fact is reported as
  ``DownstreamNotReading``, once, and the core decides (it answers with
  ``StopDownstream``). A message that cannot be encoded is a gateway bug:
  logged, and the downstream is stopped and reported as exited.
- ``StopDownstream`` stops it in the background (bounded, shielded cleanup).

A stopped downstream, or one whose exit the core has heard of, is forgotten;
the runtime drops later events about it. Ids are the core's counters and are
never reused.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Mapping
from functools import partial
from typing import Protocol

import httpx
import trio

from lockgate.core import DownstreamExited, DownstreamNotReading, encode, Event, SendToDownstream, StartDownstream

from .downstream_http import HttpDownstream
from .downstream_stdio import StdioDownstream
from .logs import get_logger

__all__ = ["Downstream", "Downstreams"]

_log = get_logger("runtime")


class Downstream(Protocol):
    """A running downstream connection, as the runtime drives it."""

    downstream: int
    server: str

    def send_nowait(self, data: bytes, *, expects_answer: bool) -> None:
        """Queue one framed message; raises ``trio.WouldBlock`` when the queue is full."""
        ...

    def stop(self, kill: bool = False) -> None: ...

    async def run(self) -> None: ...


class Downstreams:
    """The live downstream connections; see the module docstring.

    ``emit`` is where a connection's own events go (the runtime's ``feed``);
    ``report`` takes the facts the shell learns while performing an action
    (``DownstreamNotReading``, or the ``DownstreamExited`` of a connection it
    gave up on), for the core to hear right after the current batch of actions.
    """

    def __init__(
        self,
        *,
        emit: Callable[[Event], Awaitable[None]],
        report: Callable[[Event], None],
        queue_size: int,
        environ: Mapping[str, str] | None,
        auth_for: Callable[[StartDownstream], httpx.Auth | None] | None = None,
    ) -> None:
        self._live: dict[int, Downstream] = {}
        #: The OAuth of an HTTP connection (:meth:`lockgate.shells.oauth.OAuthManager.auth_for`).
        self._auth_for = auth_for
        #: Live downstreams already reported as not reading: the core's
        #: StopDownstream is on its way, and every send until then finds the
        #: same full queue.
        self._not_reading: set[int] = set()
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
        self._not_reading.discard(downstream_id)

    def start(self, action: StartDownstream, nursery: trio.Nursery, *, max_message_bytes: int) -> None:
        """Perform ``StartDownstream``: run the connection in ``nursery``.

        ``max_message_bytes`` is the largest message it takes from the server
        (:func:`lockgate.core.downstream_message_bytes` of the settings).
        """
        previous = self._live.pop(action.downstream, None)
        if previous is not None:
            _log.error("downstream id started twice", extra={"fields": {"downstream": action.downstream}})
            previous.stop()
        if action.spec.transport == "stdio":
            connect: Callable[..., Downstream] = partial(StdioDownstream, environ=self._environ)
        else:
            auth = self._auth_for(action) if self._auth_for is not None else None
            connect = partial(HttpDownstream, auth=auth)
        downstream = connect(
            downstream=action.downstream,
            server=action.server,
            spec=action.spec,
            max_message_bytes=max_message_bytes,
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
            downstream.send_nowait(data, expects_answer=action.expects_answer)
        except trio.WouldBlock:
            self._report_not_reading(action.downstream, downstream)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # It has ended; its DownstreamExited is already on its way.

    def _report_not_reading(self, downstream_id: int, downstream: Downstream) -> None:
        """The server does not take its input: tell the core (once); what to do is its decision."""
        if downstream_id in self._not_reading:
            return
        self._not_reading.add(downstream_id)
        _log.warning("server is not reading its input", extra={"fields": {"server": downstream.server}})
        self._report(DownstreamNotReading(now=trio.current_time(), downstream=downstream_id))

    def stop(self, downstream_id: int, *, kill: bool = False) -> None:
        """Perform ``StopDownstream``: stop it in the background; nothing is reported."""
        self._not_reading.discard(downstream_id)
        stopped = self._live.pop(downstream_id, None)
        if stopped is not None:
            stopped.stop(kill=kill)

    def drop(self, downstream_id: int, reason: str) -> None:
        """Stop a downstream the shell cannot go on with (a gateway bug), and report that it exited for ``reason``."""
        self._not_reading.discard(downstream_id)
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
        self._not_reading.clear()
