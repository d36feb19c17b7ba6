"""Rate limits: token buckets on the event clock.

Theory of operation
-------------------
A :class:`~lockgate.core.Rate` of ``count/period`` is a bucket that holds up
to ``count`` tokens and refills at ``count / period`` tokens a second; a call
takes one token, and a call that finds less than one is refused with the
time until there will be one. So a client may burst ``count`` calls at once,
then goes on at the steady rate. A new bucket starts full.

:class:`Buckets` keeps one bucket per key (a credential, an agent) and
nothing else: time comes in as ``now``, the same clock as every event's, so
the same calls at the same times are refused the same way on every replay.
Which limits apply to a call is :func:`limits_for`'s answer: the
credential's own ``rate``, then the agent's (its ``rate`` in the rules, else
``GATEWAY_RATE_LIMIT``). :meth:`Buckets.first_refusal` checks them all
before :meth:`Buckets.take` takes a token from each, so a refused call
takes no token from any of them.

Memory stays bounded by the keys in use: a bucket that has refilled is the
same as no bucket, so each :meth:`Buckets.take` looks at the two buckets
that have waited longest for a look and drops those that are full again.
A bucket that is still refilling goes to the back of that queue.

A bucket whose key comes back under another rate (a reload changed an
agent's ``rate``) refills under the old rate up to ``now``, then keeps its
tokens, up to the new ``count``: a reload neither refills nor empties it.

Shared limits. With ``GATEWAY_REDIS_URL`` set, replicas share the buckets,
so none can decide alone: the core emits
:class:`~lockgate.core.TakeTokens` (each limit as :func:`shared_key`, count
and period) and the request waits in :class:`Parked` until the shell's
:class:`~lockgate.core.TokensTaken` says it may go on, must be refused, or
that the store did not answer. The store runs the same all-or-nothing take
on its own clock (see :mod:`lockgate.shells.shared_limits`). A parked
request ends when its client goes away or cancels it, like any call.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from ._identity import Principal, Rate
from ._policy import json_path

if TYPE_CHECKING:
    from ._audit import AuditEntry
    from ._config import Config
    from ._events import ClientId

__all__ = [
    "LOGIN_ADDRESS_RATE", "LOGIN_NAME_RATE", "Buckets", "Limit", "Parked", "ParkedRequest", "limits_for", "login_limits",
    "retry_after_ms", "shared_key",
]

#: Failed logins allowed per user name before the next is refused: a guess every 12 s.
LOGIN_NAME_RATE = Rate(5, 60.0)
#: Failed logins allowed per client address, whatever names it tries.
LOGIN_ADDRESS_RATE = Rate(20, 60.0)

# Tokens are floats; a refill computed as 0.9999999999 of a token is a whole one.
_EPSILON = 1e-9
# Buckets looked at for dropping per take: more than the one a take may add.
_SWEEP = 2


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float
    rate: Rate

    def refill(self, now: float, rate: Rate) -> None:
        """Bring the bucket to ``now`` under its rate, then take on ``rate``."""
        elapsed = max(0.0, now - self.updated)
        self.tokens = min(float(self.rate.count), self.tokens + elapsed * self.rate.count / self.rate.period)
        self.updated = max(self.updated, now)
        if rate != self.rate:
            self.tokens = min(self.tokens, float(rate.count))
            self.rate = rate

    def wait(self) -> float:
        """Seconds until the bucket holds a whole token (0 when it does)."""
        missing = 1.0 - self.tokens
        return 0.0 if missing <= _EPSILON else missing * self.rate.period / self.rate.count

    def full(self, now: float) -> bool:
        elapsed = max(0.0, now - self.updated)
        return self.tokens + elapsed * self.rate.count / self.rate.period >= self.rate.count - _EPSILON


class Buckets:
    """Token buckets by key; see the module docstring."""

    def __init__(self) -> None:
        # In the order they are due for a look (see the module docstring).
        self._buckets: dict[Hashable, _Bucket] = {}

    def __len__(self) -> int:
        return len(self._buckets)

    def wait(self, key: Hashable, rate: Rate, now: float) -> float | None:
        """Seconds until ``key`` may make a call under ``rate``; ``None`` when it may now. Takes nothing."""
        bucket = self._buckets.get(key)
        if bucket is None:
            return None
        bucket.refill(now, rate)
        waiting = bucket.wait()
        return waiting if waiting > 0 else None

    def first_refusal(self, limits: Iterable[tuple[Hashable, Rate]], now: float) -> tuple[int, float] | None:
        """The first of ``limits`` that refuses a call now, as (its index, seconds to wait); ``None`` if none does."""
        for index, (key, rate) in enumerate(limits):
            waiting = self.wait(key, rate, now)
            if waiting is not None:
                return index, waiting
        return None

    def take(self, key: Hashable, rate: Rate, now: float) -> float | None:
        """Take a token for one call of ``key`` under ``rate``.

        Returns:
            ``None`` when the call may go ahead (a token was taken), else the
            seconds until it may (and nothing was taken).
        """
        bucket = self._buckets.pop(key, None)
        if bucket is None:
            bucket = _Bucket(tokens=float(rate.count), updated=now, rate=rate)
        else:
            bucket.refill(now, rate)
        waiting = bucket.wait()
        if waiting <= 0:
            bucket.tokens = max(0.0, bucket.tokens - 1.0)
        self._sweep(now)
        # Used just now: to the back of the queue.
        self._buckets[key] = bucket
        return waiting if waiting > 0 else None

    def _sweep(self, now: float) -> None:
        for _ in range(min(_SWEEP, len(self._buckets))):
            key = next(iter(self._buckets))
            bucket = self._buckets.pop(key)
            if not bucket.full(now):
                self._buckets[key] = bucket


def retry_after_ms(seconds: float) -> int:
    """Whole milliseconds to wait, rounded up (never 0 for a real wait)."""
    # Rounded to the nanosecond first: 0.5 s computed as 0.5000000000001 is 500 ms.
    return max(1, math.ceil(round(seconds * 1000, 6)))


@dataclass(frozen=True, slots=True)
class Limit:
    """One rate limit that applies to a call: whose (``scope``), its bucket's key, the rate, and where it is set."""

    scope: Literal["credential", "agent"]
    key: tuple[str, str]
    rate: Rate
    #: Where the limit comes from, for the audit record: ``credential.rate``,
    #: ``agents.<id>.rate`` or ``GATEWAY_RATE_LIMIT``.
    rule: str
    #: Who it limits, as a refusal names it.
    subject: str


def limits_for(principal: Principal | None, agent: str, config: Config) -> tuple[Limit, ...]:
    """The rate limits a call of ``agent`` (under ``principal``, if any) must pass: the credential's, its ancestors', then the agent's.

    The agent's own ``rate`` wins over ``GATEWAY_RATE_LIMIT``; either is
    one bucket per agent, shared by every caller that acts as it.
    """
    limits: list[Limit] = []
    if principal is not None:
        if principal.rate is not None:
            limits.append(
                Limit("credential", ("credential", principal.id), principal.rate, "credential.rate", f"credential {principal.id}")
            )
        # A delegated token's calls also spend its ancestors' tokens (same keys as their own calls).
        for ancestor, shared in principal.shared_rates:
            limits.append(
                Limit("credential", ("credential", ancestor), shared, "credential.shared_rates", f"credential {ancestor}")
            )
    own = config.policy.rate(agent)
    rate = own or config.settings.rate_limit
    if rate is not None:
        rule = json_path("agents", agent, "rate") if own is not None else "GATEWAY_RATE_LIMIT"
        limits.append(Limit("agent", ("agent", agent), rate, rule, f"agent {agent!r}"))
    return tuple(limits)


def login_limits(name: str, address: str | None) -> tuple[tuple[Hashable, Rate], ...]:
    """The buckets a failed login spends, and a login attempt must find a token in: its user name's and its address's.

    Against guessing passwords: one name from many addresses, and many names
    from one. A refused login takes nothing; only a failed one takes a token.
    """
    limits: list[tuple[Hashable, Rate]] = [(("login-name", name[:128]), LOGIN_NAME_RATE)]
    if address is not None:
        limits.append((("login-address", address), LOGIN_ADDRESS_RATE))
    return tuple(limits)


def shared_key(limit: Limit) -> str:
    """The stable name of a limit's bucket in the shared store: ``agent:<name>``, ``credential:<id>``.

    The scope comes first, so an agent and a credential of the same name
    never share a bucket, whatever characters the name holds.
    """
    scope, name = limit.key
    return f"{scope}:{name}"


@dataclass(slots=True)
class ParkedRequest:
    """A request waiting for the shared store's answer before it goes on (see the module docstring).

    ``proceed`` serves it once it passed every limit: the rest of its
    handling, exactly as it would have gone on had the limits been local.
    """

    ticket: int
    client: ClientId
    request_id: Any
    entry: AuditEntry
    limits: tuple[Limit, ...]
    proceed: Callable[[], None]


class Parked:
    """The requests waiting for a :class:`~lockgate.core.TokensTaken`, by ticket and by client."""

    def __init__(self) -> None:
        self._tickets: dict[int, ParkedRequest] = {}
        self._clients: dict[ClientId, dict[Any, ParkedRequest]] = {}
        self._next = 1
        #: The last answer said the store could not be reached: the next good one is news.
        self.store_down = False

    def __len__(self) -> int:
        return len(self._tickets)

    def park(self, client: ClientId, request_id: Any, entry: AuditEntry, limits: tuple[Limit, ...], proceed: Callable[[], None]) -> ParkedRequest:
        """Hold a request under a fresh ticket (never reused)."""
        parked = ParkedRequest(self._next, client, request_id, entry, limits, proceed)
        self._next += 1
        self._tickets[parked.ticket] = parked
        self._clients.setdefault(client, {})[request_id] = parked
        return parked

    def holds(self, client: ClientId, request_id: Any) -> bool:
        """Is this request of ``client`` waiting (its id is in use)?"""
        held = self._clients.get(client)
        return held is not None and request_id in held

    def answered(self, ticket: int) -> ParkedRequest | None:
        """Release the request ``ticket`` holds; ``None`` when it ended while it waited."""
        parked = self._tickets.pop(ticket, None)
        if parked is not None:
            self._forget(parked)
        return parked

    def cancel(self, client: ClientId, request_id: Any) -> ParkedRequest | None:
        """Release one request of ``client`` that nobody waits for any more."""
        held = self._clients.get(client)
        parked = None if held is None else held.get(request_id)
        if parked is not None:
            del self._tickets[parked.ticket]
            self._forget(parked)
        return parked

    def release_client(self, client: ClientId) -> list[ParkedRequest]:
        """Release every request of a client that went away, in the order they came."""
        held = self._clients.pop(client, None)
        if held is None:
            return []
        for parked in held.values():
            del self._tickets[parked.ticket]
        return sorted(held.values(), key=lambda parked: parked.ticket)

    def _forget(self, parked: ParkedRequest) -> None:
        held = self._clients[parked.client]
        del held[parked.request_id]
        if not held:
            del self._clients[parked.client]
