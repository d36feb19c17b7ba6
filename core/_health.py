"""Links over time: health-check pings, hangs, idle stops, restarts and start timeouts.

Theory of operation
-------------------
Every ready link is pinged every ``health_interval`` seconds (MCP
2025-11-25, basic/utilities/ping; a stateless-era server, which has no
``ping``, gets a ``server/discover`` instead); an answer, even an error, shows the
instance is alive. A call that times out is no failure by itself (a slow
tool is not a broken server): it makes the link *suspect* (:meth:`suspect`),
which sends a ping at once and holds new calls back. An answer clears the
suspicion and the waiting calls go out. A ping that times out, suspect or
not, means the instance *hung* (:meth:`hung`): its process group is killed
at once (a hung or stopped process reacts to neither a closed stdin nor
SIGTERM), its forwarded calls fail, and the calls that were waiting are
routed again, which starts it again with no backoff. However many calls
time out together, that is one suspicion and one ping: counting them one by
one once pushed a briefly stuck server's restart backoff to its 30 s cap.

A link with ``idle_timeout`` stops once it has had nothing to do that long;
a shared link that failed starts again when its backoff is over; a start
that has not finished its handshake within ``start_timeout_ms`` fails.

Each of these is a timer of the link (:mod:`~lockgate.core._timers`), which
remembers the connection it was set for: one that fires after the link
reconnected does nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, assert_never

from ._actions import SendToDownstream
from ._context import Context
from ._jsonrpc import request
from ._link import Internal, Link, State
from ._pool import Unavailable
from ._timers import Timer, TimerKind

if TYPE_CHECKING:
    from ._calls import Calls
    from ._links import Links

__all__ = ["Health"]


class Health:
    """The timers of links, and what their firing means (see the module docstring)."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self.links: Links
        self.calls: Calls

    # -- a link's timers ----------------------------------------------------------

    def set_timer(self, link: Link, kind: TimerKind, deadline: float) -> None:
        self.cancel_timer(link, kind)
        link.timers[kind] = self._ctx.set_timer(kind, deadline, link=link)

    def cancel_timer(self, link: Link, kind: TimerKind) -> None:
        timer = link.timers.pop(kind, None)
        if timer is not None:
            self._ctx.cancel_timer(timer)

    def cancel_timers(self, link: Link) -> None:
        for kind in list(link.timers):
            self.cancel_timer(link, kind)

    def timer_fired(self, timer: Timer) -> None:
        """One of a link's timers fell due (see :mod:`~lockgate.core._timers` for the kinds)."""
        ctx = self._ctx
        link = timer.link
        assert link is not None
        link.timers.pop(timer.kind, None)
        if link.downstream != timer.downstream:
            return  # about an earlier connection
        match timer.kind:
            case TimerKind.START:
                if link.state in (State.STARTING, State.LISTING):
                    seconds = ctx.config.settings.start_timeout_ms / 1000
                    if Internal.DISCOVER in link.internal.values():
                        # The era probe went unanswered: start it with initialize from now on.
                        link.instance.skip_discover = True
                    self.links.fail(link, f"did not finish its MCP handshake within {seconds:g} s")
            case TimerKind.HEALTH:
                if link.state is State.READY and TimerKind.PING not in link.timers:
                    self._ping(link)
            case TimerKind.PING:
                reason = f"did not answer a health check within {self._health_timeout(link):g} s"
                if link.suspect is not None:
                    reason = f"stopped answering ({link.suspect}, and it {reason})"
                self.hung(link, reason)
            case TimerKind.IDLE:
                idle = link.entry.idle_timeout
                if link.state is not State.READY or link.in_flight or idle is None:
                    return  # busy: the call that ends last arms it again
                if ctx.now < link.last_active + idle:
                    self.set_timer(link, TimerKind.IDLE, link.last_active + idle)
                    return
                ctx.log("info", "stopped an idle server", server=link.name, instance=link.instance.index)
                self.links.stop(link)
            case TimerKind.RESTART:
                if link.state is State.BACKOFF and not link.retiring and not ctx.closing and link.instance.accepts(ctx.now):
                    self.links.start(link)
            case TimerKind.CALL | TimerKind.SESSION_EXPIRY:
                raise AssertionError(f"a {timer.kind.value} timer is not a link's")
            case _:
                assert_never(timer.kind)

    # -- health checks ------------------------------------------------------------

    def _health_interval(self, link: Link) -> float:
        interval = link.entry.health_interval
        return self._ctx.config.settings.health_interval if interval is None else interval

    def _health_timeout(self, link: Link) -> float:
        timeout = link.entry.health_timeout
        return self._ctx.config.settings.health_timeout if timeout is None else timeout

    def schedule(self, link: Link) -> None:
        """Set the next health-check ping of a ready link (none when checks are off)."""
        interval = self._health_interval(link)
        if interval > 0 and link.state is State.READY:
            self.set_timer(link, TimerKind.HEALTH, self._ctx.now + interval)

    def _ping(self, link: Link) -> None:
        """Send a health-check ping (MCP 2025-11-25, basic/utilities/ping) with its own timeout.

        The stateless era removed ``ping``: its servers get ``server/discover``,
        which they must answer (in the era's envelope, like every request to them).
        """
        assert link.downstream is not None
        wire_id = link.take_wire_id()
        link.internal[wire_id] = Internal.PING
        method = "server/discover" if link.stateless else "ping"
        self._ctx.emit(SendToDownstream(downstream=link.downstream, message=request(wire_id, method)))
        self.set_timer(link, TimerKind.PING, self._ctx.now + self._health_timeout(link))

    def pong(self, link: Link) -> None:
        """The link answered a ping: alive (any answer, even an error, shows it)."""
        self.cancel_timer(link, TimerKind.PING)
        link.instance.answered()
        self.schedule(link)
        if link.suspect is not None:
            link.suspect = None
            self._ctx.log("info", "server answered a health check after a call timed out", server=link.name)
            self.links.drain_waiters(link)

    def arm_idle(self, link: Link) -> None:
        idle = link.entry.idle_timeout
        if idle is not None and link.state is State.READY and TimerKind.IDLE not in link.timers and not link.in_flight:
            self.set_timer(link, TimerKind.IDLE, link.last_active + idle)

    # -- hangs ----------------------------------------------------------------------

    def suspect(self, link: Link, why: str) -> None:
        """A forwarded call got no answer in time: is the instance alive, or only that call slow?

        A ping goes out at once (unless one is under way), and new calls for
        this link wait for its verdict; they have reached nothing, so whatever
        the ping shows costs them no more than their own timeout.
        """
        if link.state is not State.READY or link.suspect is not None:
            return
        link.suspect = why
        self._ctx.log("warning", "a call timed out; checking that the server is alive", server=link.name, reason=why)
        self.cancel_timer(link, TimerKind.HEALTH)
        if TimerKind.PING not in link.timers:
            self._ping(link)

    def hung(self, link: Link, reason: str) -> None:
        """A live link stopped answering (a ping timed out): kill it and serve its waiting calls anew.

        Forwarded calls fail, as for a crash; calls that were waiting never
        reached it, so they are routed again, which starts the instance again
        at once. A server that hung once gets no backoff: only starts that
        fail in a row (a server that crashes on start) wait longer each time.
        """
        ctx = self._ctx
        waiting, link.waiters = link.waiters, []
        self.links.fail(link, reason, kill=True)
        pool = ctx.pools.get(link.name)
        for call in waiting:
            target = self.links.choose(pool, call.client) if pool is not None and call.client in ctx.clients else None
            if target is None or isinstance(target, Unavailable):
                self.calls.fail(call, reason if target is None else target.reason)
            else:
                self.links.reroute(target, call)
