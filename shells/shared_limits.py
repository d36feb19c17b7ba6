"""Rate limits shared by every replica, in Redis (``GATEWAY_REDIS_URL``).

Theory of operation
-------------------
With ``GATEWAY_REDIS_URL`` set the core keeps no buckets of its own: a call
under a rate limit waits while the shell runs :data:`TAKE_SCRIPT` once, and
the core goes on with the answer (:class:`~lockgate.core.TakeTokens` in,
:class:`~lockgate.core.TokensTaken` out). The script is the in-memory
buckets' rule (:mod:`lockgate.core._ratelimit`) run inside Redis, where one
script runs at a time, so the check and the take are one step for all
replicas: it brings every bucket of the call up to Redis's own clock
(``TIME``: the replicas' clocks never enter into it), and takes a token
from each only when each has one. A bucket is a hash of ``tokens`` and
``updated`` that expires once it would be full again, so Redis holds only
the buckets in use, as the in-memory ones do. The first call of a key under
a changed rate refills under the new rate; the in-memory buckets refill
under the old one up to the change.

The client is redis-py's synchronous one, run in worker threads (trio is
not asyncio). :meth:`SharedLimits.submit` queues a take; each of
:data:`WORKERS` tasks takes everything queued (up to :data:`BATCH`) and
sends it as one pipeline of ``EVALSHA``, in one thread and one round trip,
so under load the thread hop and the round trip are shared by many calls,
and a lone call pays one of each. Every Redis operation has a timeout
(``timeout``, 100 ms by default; a batch waits at most twice that and 50
ms, a reconnect included): past it, or when Redis cannot be reached,
the core hears ``unavailable`` and ``GATEWAY_REDIS_FAILURE`` decides
(closed: refuse; open: go ahead). Nothing here retries in a loop or backs
off: each batch tries once (with one immediate reconnect, for a connection
a Redis restart broke), so a Redis that comes back serves the next call. A
restarted Redis has forgotten the script: on ``NOSCRIPT`` it is loaded
again and those takes sent again, once.

:meth:`SharedLimits.run` pings Redis every second, so ``/ready`` tells
whether it answers even when no call asks (:func:`readiness`).
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal

import redis
import trio
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError
from redis.retry import Retry

from lockgate.core import TakeTokens, TokensTaken

from .logs import get_logger

__all__ = ["BATCH", "DEFAULT_TIMEOUT", "KEY_PREFIX", "TAKE_SCRIPT", "WORKERS", "SharedLimits", "from_environment", "readiness"]

_log = get_logger("shared_limits")

#: Seconds a Redis call may take before the call it serves hears ``unavailable``.
DEFAULT_TIMEOUT = 0.1
#: Batches in flight at once (each a worker thread and a connection of its own).
WORKERS = 4
#: Takes in one batch at most.
BATCH = 128
#: What every bucket's key starts with: a Redis shared with other programs keeps them apart.
KEY_PREFIX = "lockgate:rl:"
# Seconds between the pings that keep /ready's answer current.
_PING_INTERVAL = 1.0

#: The all-or-nothing take. KEYS are the buckets; ARGV holds each one's count
#: and period (seconds), in pairs. Returns 0 when a token was taken from every
#: bucket, else {index of the first bucket without one (0-based), seconds
#: until it has one (as text: Redis turns Lua numbers into integers)}.
TAKE_SCRIPT = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local held = {}
for i, key in ipairs(KEYS) do
  local count = tonumber(ARGV[2 * i - 1])
  local period = tonumber(ARGV[2 * i])
  local state = redis.call('HMGET', key, 'tokens', 'updated')
  local tokens = tonumber(state[1])
  local updated = tonumber(state[2])
  if tokens == nil or updated == nil then
    tokens = count
  else
    local elapsed = math.max(0, now - updated)
    tokens = math.min(count, tokens + elapsed * count / period)
  end
  -- 0.9999999999 of a token is a whole one, as in the in-memory buckets.
  local missing = 1 - tokens
  if missing > 1e-9 then
    return {i - 1, tostring(missing * period / count)}
  end
  held[i] = tokens
end
for i, key in ipairs(KEYS) do
  local count = tonumber(ARGV[2 * i - 1])
  local period = tonumber(ARGV[2 * i])
  local tokens = math.max(0, held[i] - 1)
  redis.call('HSET', key, 'tokens', tostring(tokens), 'updated', tostring(now))
  -- Full again after this long: then the bucket is the same as no bucket.
  redis.call('EXPIRE', key, math.ceil((count - tokens) * period / count) + 1)
end
return 0
"""


class SharedLimits:
    """One Redis that holds the rate limit buckets of every replica (see the module docstring)."""

    def __init__(
        self,
        url: str,
        *,
        failure: Literal["closed", "open"] = "closed",
        timeout: float = DEFAULT_TIMEOUT,
        prefix: str = KEY_PREFIX,
        workers: int = WORKERS,
    ) -> None:
        self.failure = failure
        self.timeout = timeout
        self._prefix = prefix
        self._workers = workers
        pool = redis.BlockingConnectionPool.from_url(
            url,
            # One per worker, one for the pings, and for direct takes.
            max_connections=workers + 2,
            # Waiting for a free connection counts against the same deadline.
            timeout=timeout,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            # One immediate reconnect, for a pooled connection a Redis restart broke; never a wait.
            retry=Retry(NoBackoff(), 1),
            retry_on_timeout=False,
        )
        self._client = redis.Redis(connection_pool=pool)
        self._sha = self._client.register_script(TAKE_SCRIPT).sha
        self._threads = trio.CapacityLimiter(workers + 2)
        self._queue, self._queued = trio.open_memory_channel[TakeTokens](math.inf)
        #: Did Redis answer last time it was asked? ``None`` before it was.
        self.reachable: bool | None = None
        #: Why it did not, in words for the log and ``/ready``.
        self.error: str | None = None

    # -- the one thing a call asks -----------------------------------------------

    def submit(self, action: TakeTokens) -> None:
        """Queue a take; a worker of :meth:`run` feeds its :class:`~lockgate.core.TokensTaken` back. Never waits."""
        self._queue.send_nowait(action)

    async def take(self, action: TakeTokens) -> TokensTaken:
        """Run one take now, alone; the event the core hears back (``now`` stamped on return)."""
        [answer] = await self._take_batch([action])
        return answer

    async def _take_batch(self, actions: list[TakeTokens]) -> list[TokensTaken]:
        """Run ``actions``' takes as one pipeline; their events, in order."""
        commands = []
        for action in actions:
            args: list[Any] = [self._sha, len(action.limits), *(self._prefix + key for key, _, _ in action.limits)]
            for _, count, period in action.limits:
                args += [str(count), repr(float(period))]
            commands.append(args)
        try:
            answers = await self._in_thread(lambda: self._pipeline(commands))
        except _Unavailable as exc:
            now = trio.current_time()
            return [TokensTaken(now=now, ticket=action.ticket, unavailable=str(exc)) for action in actions]
        now = trio.current_time()
        events = []
        for action, answer in zip(actions, answers, strict=True):
            if isinstance(answer, Exception):
                # A script error (not one of the store being away): the take did not happen.
                events.append(TokensTaken(now=now, ticket=action.ticket, unavailable=_describe(answer)))
            else:
                events.append(TokensTaken(now=now, ticket=action.ticket, refused=_refusal(answer)))
        return events

    def _pipeline(self, commands: list[list[Any]]) -> list[Any]:
        """``EVALSHA`` each of ``commands`` in one round trip (in a worker thread); the script loaded again if Redis forgot it."""
        answers = self._send(commands)
        missing = [i for i, answer in enumerate(answers) if isinstance(answer, NoScriptError)]
        if missing:
            self._client.script_load(TAKE_SCRIPT)
            for i, answer in zip(missing, self._send([commands[i] for i in missing]), strict=True):
                answers[i] = answer
        return answers

    def _send(self, commands: list[list[Any]]) -> list[Any]:
        with self._client.pipeline(transaction=False) as pipe:
            for args in commands:
                pipe.evalsha(*args)
            return list(pipe.execute(raise_on_error=False))

    async def ping(self) -> bool:
        """Does Redis answer now? (Also what ``/ready`` says next.)"""
        try:
            await self._in_thread(self._client.ping)
        except _Unavailable:
            return False
        return True

    async def run(
        self, feed: Callable[[TokensTaken], Awaitable[None]], *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Serve the queued takes (:meth:`submit`), feeding each answer, and ping Redis every second, until cancelled.

        The pings let ``/ready`` know without a call asking.
        """
        async with trio.open_nursery() as nursery:
            for _ in range(self._workers):
                nursery.start_soon(self._worker, feed)
            task_status.started()
            while True:
                await self.ping()
                await trio.sleep(_PING_INTERVAL)

    async def _worker(self, feed: Callable[[TokensTaken], Awaitable[None]]) -> None:
        while True:
            batch = [await self._queued.receive()]
            while len(batch) < BATCH:
                try:
                    batch.append(self._queued.receive_nowait())
                except trio.WouldBlock:
                    break
            for answer in await self._take_batch(batch):
                await feed(answer)

    def close(self) -> None:
        self._client.close()

    def status(self) -> dict[str, Any]:
        """What ``/ready`` says of the store: is it answering, and what a call meets when it is not."""
        body: dict[str, Any] = {"store": "redis", "reachable": self.reachable, "on_failure": self.failure}
        if self.reachable is False and self.error is not None:
            body["error"] = self.error
        return body

    async def _in_thread(self, work: Any) -> Any:
        """Run one blocking Redis call in a worker thread within ``timeout``; raise :class:`_Unavailable` otherwise."""
        # The socket timeouts bound the thread; this bounds the wait for a thread too.
        with trio.move_on_after(self.timeout * 2 + 0.05) as deadline:
            try:
                answer = await trio.to_thread.run_sync(work, abandon_on_cancel=True, limiter=self._threads)
            except (redis.RedisError, OSError) as exc:
                self._failed(_describe(exc))
                raise _Unavailable(self.error) from None
            self._answered()
            return answer
        assert deadline.cancelled_caught
        self._failed(f"no answer within {round(self.timeout * 1000)} ms")
        raise _Unavailable(self.error)

    def _answered(self) -> None:
        if self.reachable is False:
            _log.info("Redis answers again")
        self.reachable, self.error = True, None

    def _failed(self, reason: str) -> None:
        if self.reachable is not False:
            _log.warning(f"Redis does not answer: {reason}")
        self.reachable, self.error = False, reason


class _Unavailable(Exception):
    """Redis gave no answer in time; ``str()`` says why."""


def _describe(exc: BaseException) -> str:
    """Why a Redis call failed, in a line (redis-py's messages name host and port, never a password)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    kind = type(exc).__name__
    return f"{kind}: {text[:200]}" if text else kind


def _refusal(answer: Any) -> tuple[int, float] | None:
    """The script's answer as :class:`~lockgate.core.TokensTaken` puts it."""
    if isinstance(answer, list) and len(answer) == 2:
        index, wait = answer
        seconds = float(wait.decode() if isinstance(wait, bytes) else wait)
        return int(index), seconds if math.isfinite(seconds) and seconds > 0 else 0.001
    return None


def from_environment(environ: Mapping[str, str], failure: Literal["closed", "open"]) -> SharedLimits | None:
    """The shared store ``GATEWAY_REDIS_URL`` names, or ``None`` when it is unset."""
    url = environ.get("GATEWAY_REDIS_URL", "").strip()
    if not url:
        return None
    return SharedLimits(url, failure=failure)


def readiness(body: dict[str, Any], limits: SharedLimits | None) -> dict[str, Any]:
    """``/ready``'s answer with the shared store's state: ``shared_limits``, and ``degraded`` while it does not answer.

    Degraded, not unavailable: every replica shares the one Redis, so taking
    this one out of a load balancer's rotation would help no call, and the
    calls no limit applies to are still served.
    """
    if limits is None:
        return body
    out = {**body, "shared_limits": limits.status()}
    if limits.reachable is False and body.get("status") in ("ready", "degraded"):
        outcome = "refused" if limits.failure == "closed" else "let through unchecked"
        note = f"the shared rate limit store (Redis) does not answer: calls under a rate limit are {outcome}"
        reason = body.get("reason")
        out.update(status="degraded", reason=note if not reason else f"{reason}; {note}")
    return out
