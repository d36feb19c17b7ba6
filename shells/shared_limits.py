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

The shells are trio and redis-py's clients are blocking or asyncio, so the
few commands a take needs (``EVALSHA``, ``EVAL``, ``AUTH``, ``SELECT``,
``PING``) go as RESP over trio streams (TCP, TLS for ``rediss://``, or a
unix socket), the URL read by redis-py's own ``parse_url``. Measured, that
costs a third of the CPU a worker-thread hop and redis-py's client did
(``bench/shared_limits.py``). :meth:`SharedLimits.submit` queues a take;
each of :data:`WORKERS` tasks takes everything queued (up to
:data:`BATCH`) and writes it as one pipeline on a connection of its own, so
under load one round trip serves many calls, and a lone call pays one.

Every batch has a deadline (``timeout``, 100 ms by default), connecting
included: past it, or when Redis cannot be reached, the core hears
``unavailable`` and ``GATEWAY_REDIS_FAILURE`` decides (closed: refuse;
open: go ahead). A connection cut off by the deadline is closed, never
reused. Nothing here retries in a loop or backs off: each batch tries once
(on a new connection when a pooled one turns out broken, as after a Redis
restart), so a Redis that comes back serves the next call. A restarted
Redis has forgotten the script: on ``NOSCRIPT`` those takes are sent again
as ``EVAL``, which keeps it.

:meth:`SharedLimits.run` pings Redis every second, so ``/ready`` tells
whether it answers even when no call asks (:func:`readiness`).
"""

from __future__ import annotations

import hashlib
import math
import ssl
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal, TypeVar

import trio
from redis.connection import SSLConnection, parse_url

from lockgate.core import TakeTokens, TokensTaken

from .logs import get_logger

__all__ = [
    "BATCH",
    "CREDENTIALS_CHANGED",
    "DEFAULT_TIMEOUT",
    "KEY_PREFIX",
    "TAKE_SCRIPT",
    "WORKERS",
    "SharedLimits",
    "announce_change",
    "from_environment",
    "readiness",
]

_log = get_logger("shared_limits")

#: Seconds a Redis call may take before the call it serves hears ``unavailable``.
DEFAULT_TIMEOUT = 0.1
#: Batches in flight at once (each a worker thread and a connection of its own).
WORKERS = 4
#: Takes in one batch at most.
BATCH = 128
#: What every bucket's key starts with: a Redis shared with other programs keeps them apart.
KEY_PREFIX = "lockgate:rl:"
#: The channel a replica that changed users or keys announces it on, so the others read the store now.
CREDENTIALS_CHANGED = "lockgate:credentials-changed"
# Seconds between the pings that keep /ready's answer current.
_PING_INTERVAL = 1.0
# Bytes a batch's replies may take: a take's is a few dozen.
_MAX_REPLY = 1 << 20
_T = TypeVar("_T")

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
        # redis-py reads the URL as every Redis client does (password, database, TLS, unix socket).
        self._address: dict[str, Any] = parse_url(url)  # type: ignore[no-untyped-call]  # redis-py leaves it untyped
        self._sha = hashlib.sha1(TAKE_SCRIPT.encode()).hexdigest()
        #: Connections no task is using, the latest first.
        self._idle: list[_Connection] = []
        self._open: set[_Connection] = set()
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
            args: list[str | int] = [len(action.limits), *(self._prefix + key for key, _, _ in action.limits)]
            for _, count, period in action.limits:
                args += [count, repr(float(period))]
            commands.append(args)
        try:
            answers = await self._run(self._evalsha, commands)
        except _Unavailable as exc:
            now = trio.current_time()
            return [TokensTaken(now=now, ticket=action.ticket, unavailable=str(exc)) for action in actions]
        now = trio.current_time()
        events = []
        for action, answer in zip(actions, answers, strict=True):
            if isinstance(answer, _ReplyError):
                # A script error (not the store being away): the take did not happen.
                events.append(TokensTaken(now=now, ticket=action.ticket, unavailable=f"Redis refused the take: {answer}"))
            else:
                events.append(TokensTaken(now=now, ticket=action.ticket, refused=_refusal(answer)))
        return events

    async def _evalsha(self, connection: _Connection, commands: list[list[str | int]]) -> list[Any]:
        """``EVALSHA`` each of ``commands`` in one round trip; sent again as ``EVAL`` (which keeps the script) where Redis forgot it."""
        answers = await connection.pipeline([["EVALSHA", self._sha, *args] for args in commands])
        missing = [i for i, answer in enumerate(answers) if isinstance(answer, _ReplyError) and str(answer).startswith("NOSCRIPT")]
        if missing:
            again = await connection.pipeline([["EVAL", TAKE_SCRIPT, *commands[i]] for i in missing])
            for i, answer in zip(missing, again, strict=True):
                answers[i] = answer
        return answers

    async def ping(self) -> bool:
        """Does Redis answer now? (Also what ``/ready`` says next.)"""

        async def ping(connection: _Connection, _: None) -> list[Any]:
            return await connection.pipeline([["PING"]])

        try:
            await self._run(ping, None)
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

    async def announce(self, channel: str) -> None:
        """Tell every replica following ``channel`` that something changed; best effort (they poll the store anyway)."""

        async def publish(connection: _Connection, _: None) -> list[Any]:
            return await connection.pipeline([["PUBLISH", channel, "1"]])

        try:
            await self._run(publish, None)
        except _Unavailable:
            pass  # the others find the change at their next poll of the database

    async def follow(self, channel: str, heard: Callable[[], None], *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Call ``heard`` for each message on ``channel``, until cancelled; a lost connection is made again a second later.

        A subscription is a connection of its own that only listens, so it
        is never pooled and has no deadline once subscribed.
        """
        task_status.started()
        while True:
            connection: _Connection | None = None
            try:
                with trio.fail_after(max(self.timeout, 1.0)):
                    connection = await self._connect()
                    await connection.pipeline([["SUBSCRIBE", channel]])
                heard()  # whatever changed while this replica was not subscribed
                while True:
                    message = await connection.next_reply()
                    if isinstance(message, list) and message[:1] == [b"message"]:
                        heard()
            except (OSError, trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError, _ProtocolError, _ReplyError):
                pass  # Redis away or restarted: the database poll covers the gap
            finally:
                if connection is not None:
                    connection.close()
            await trio.sleep(1.0)

    def close(self) -> None:
        """Close every connection (no goodbye to Redis: none is owed)."""
        for connection in self._open:
            connection.close()
        self._open.clear()
        self._idle.clear()

    def status(self) -> dict[str, Any]:
        """What ``/ready`` says of the store: is it answering, and what a call meets when it is not."""
        body: dict[str, Any] = {"store": "redis", "reachable": self.reachable, "on_failure": self.failure}
        if self.reachable is False and self.error is not None:
            body["error"] = self.error
        return body

    # -- connections ----------------------------------------------------------------

    async def _run(self, work: Callable[[_Connection, _T], Awaitable[list[Any]]], arg: _T) -> list[Any]:
        """``work`` on a connection within ``timeout``, a pooled one first; raise :class:`_Unavailable` otherwise.

        A pooled connection that fails (Redis restarted since it was used)
        is closed, and ``work`` runs once more on a new one, within the same
        deadline; a new one that fails is the store being away.
        """
        with trio.move_on_after(self.timeout):
            try:
                if self._idle:
                    connection = self._idle.pop()
                    try:
                        answer = await work(connection, arg)
                    except (OSError, trio.BrokenResourceError, trio.ClosedResourceError, _ProtocolError):
                        self._discard(connection)  # stale: one try on a new connection, below
                    except BaseException:
                        self._discard(connection)  # cut off mid-reply (the deadline): never reused
                        raise
                    else:
                        return self._done(connection, answer)
                connection = await self._connect()
                try:
                    answer = await work(connection, arg)
                except BaseException:
                    self._discard(connection)
                    raise
                return self._done(connection, answer)
            except (OSError, trio.BrokenResourceError, trio.ClosedResourceError, _ProtocolError) as exc:
                self._failed(_describe(exc))
                raise _Unavailable(self.error) from None
            except _ReplyError as exc:  # AUTH or SELECT refused: as unusable as an unreachable Redis
                self._failed(f"Redis refused the connection: {exc}")
                raise _Unavailable(self.error) from None
            except Exception as exc:  # a bug here must not leave a call waiting, nor stop the gateway
                _log.exception("internal error while asking Redis; the call hears that Redis does not answer")
                self._failed(_describe(exc))
                raise _Unavailable(self.error) from None
        self._failed(f"no answer within {round(self.timeout * 1000)} ms")
        raise _Unavailable(self.error)

    def _done(self, connection: _Connection, answer: list[Any]) -> list[Any]:
        self._idle.append(connection)
        if self.reachable is False:
            _log.info("Redis answers again")
        self.reachable, self.error = True, None
        return answer

    def _discard(self, connection: _Connection) -> None:
        connection.close()
        self._open.discard(connection)

    async def _connect(self) -> _Connection:
        """A new connection, authenticated and on the URL's database."""
        address = self._address
        if "path" in address:
            stream: trio.abc.Stream = await trio.open_unix_socket(address["path"])
        else:
            stream = await trio.open_tcp_stream(address.get("host", "localhost"), int(address.get("port", 6379)))
            if address.get("connection_class") is SSLConnection:
                tls = trio.SSLStream(stream, ssl.create_default_context(), server_hostname=address.get("host"))
                try:
                    await tls.do_handshake()
                except BaseException:
                    _Connection(stream).close()
                    raise
                stream = tls
        connection = _Connection(stream)
        self._open.add(connection)
        try:
            setup: list[list[str | int]] = []
            if address.get("password") is not None:
                user = address.get("username")
                setup.append(["AUTH", address["password"]] if user is None else ["AUTH", user, address["password"]])
            if address.get("db"):
                setup.append(["SELECT", int(address["db"])])
            for answer in await connection.pipeline(setup) if setup else []:
                if isinstance(answer, _ReplyError):
                    raise answer
        except BaseException:
            self._discard(connection)
            raise
        return connection

    def _failed(self, reason: str) -> None:
        if self.reachable is not False:
            _log.warning(f"Redis does not answer: {reason}")
        self.reachable, self.error = False, reason


class _Connection:
    """One connection to Redis speaking RESP2: commands out in one write, their replies in order."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self._stream = stream
        self._buffer = bytearray()

    async def pipeline(self, commands: list[list[str | int]]) -> list[Any]:
        """Send ``commands`` at once and read a reply for each (a ``-`` reply is a :class:`_ReplyError`, returned)."""
        await self._stream.send_all(b"".join(_encode(command) for command in commands))
        return [await self._reply() for _ in commands]

    async def next_reply(self) -> Any:
        """The next reply the server pushes (a subscription's messages)."""
        return await self._reply()

    def close(self) -> None:
        stream = self._stream
        while isinstance(stream, trio.SSLStream):
            stream = stream.transport_stream
        if isinstance(stream, trio.SocketStream):
            stream.socket.close()

    async def _reply(self) -> Any:
        line = await self._line()
        kind, rest = line[:1], line[1:]
        if kind in (b":", b"$", b"*") and not rest.lstrip(b"-").isdigit():
            raise _ProtocolError(f"not a RESP reply: {line[:40]!r}")
        if kind == b":":
            return int(rest)
        if kind == b"$":
            size = int(rest)
            return None if size < 0 else await self._exactly(size)
        if kind == b"*":
            size = int(rest)
            return None if size < 0 else [await self._reply() for _ in range(size)]
        if kind == b"+":
            return rest.decode("utf-8", "replace")
        if kind == b"-":
            return _ReplyError(rest.decode("utf-8", "replace")[:300])
        raise _ProtocolError(f"not a RESP reply: {bytes(line[:40])!r}")

    async def _line(self) -> bytes:
        while True:
            end = self._buffer.find(b"\r\n")
            if end >= 0:
                line = bytes(self._buffer[:end])
                del self._buffer[: end + 2]
                return line
            await self._fill()

    async def _exactly(self, size: int) -> bytes:
        while len(self._buffer) < size + 2:
            await self._fill()
        data = bytes(self._buffer[:size])
        del self._buffer[: size + 2]
        return data

    async def _fill(self) -> None:
        chunk = await self._stream.receive_some(65536)
        if not chunk:
            raise _ProtocolError("Redis closed the connection")
        if len(self._buffer) + len(chunk) > _MAX_REPLY:
            raise _ProtocolError("a reply too large for a take")
        self._buffer += chunk


def _encode(command: list[str | int]) -> bytes:
    """One command in RESP: an array of bulk strings."""
    parts = [b"*%d\r\n" % len(command)]
    for arg in command:
        data = arg.encode() if isinstance(arg, str) else b"%d" % arg
        parts += [b"$%d\r\n" % len(data), data, b"\r\n"]
    return b"".join(parts)


class _Unavailable(Exception):
    """Redis gave no answer in time; ``str()`` says why."""


class _ReplyError(Exception):
    """Redis answered with an error (``-ERR ...``, ``-NOSCRIPT ...``)."""


class _ProtocolError(Exception):
    """What came back is not RESP, or the connection ended mid-reply."""


def _describe(exc: BaseException) -> str:
    """Why a Redis call failed, in a line (host and port at most, never a password)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    cause = exc.__cause__ or exc.__context__
    if isinstance(cause, OSError) and cause.strerror:
        text += f" ({cause.strerror})"  # trio's "all attempts to connect ... failed" says no more
    kind = "ConnectionError" if isinstance(exc, (OSError, trio.BrokenResourceError, trio.ClosedResourceError)) else type(exc).__name__.lstrip("_")
    return f"{kind}: {text[:200]}" if text else kind


def _refusal(answer: Any) -> tuple[int, float] | None:
    """The script's answer as :class:`~lockgate.core.TokensTaken` puts it."""
    if isinstance(answer, list) and len(answer) == 2:
        index, wait = answer
        seconds = float(wait.decode() if isinstance(wait, bytes) else wait)
        return int(index), seconds if math.isfinite(seconds) and seconds > 0 else 0.001
    return None


def from_environment(
    environ: Mapping[str, str], failure: Literal["closed", "open"], timeout: float = DEFAULT_TIMEOUT
) -> SharedLimits | None:
    """The shared store ``GATEWAY_REDIS_URL`` names, or ``None`` when it is unset."""
    url = environ.get("GATEWAY_REDIS_URL", "").strip()
    if not url:
        return None
    return SharedLimits(url, failure=failure, timeout=timeout)


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


def announce_change(environ: Mapping[str, str]) -> None:
    """Tell the running replicas that users or keys changed (for commands, which are not trio programs).

    Sent with redis-py's blocking client when ``GATEWAY_REDIS_URL`` is set;
    never raises: a replica that does not hear it finds the change at its
    next poll of the database, within about a second.
    """
    url = environ.get("GATEWAY_REDIS_URL", "").strip()
    if not url:
        return
    import redis

    try:
        client = redis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
        try:
            client.publish(CREDENTIALS_CHANGED, "1")
        finally:
            client.close()
    except Exception:  # noqa: BLE001 - best effort, as above
        pass
