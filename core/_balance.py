"""Choosing an instance: the load-balancing strategies as one pure function.

Theory of operation
-------------------
A server with several instances hands :func:`choose` the instances that may
take a request right now (healthy, breaker not open, under the process cap)
as :class:`Candidate` values, plus two numbers it keeps itself: ``turn``, a
counter that makes the rotating strategies rotate, and ``draw``, a random
64-bit number for ``random``. :func:`choose` returns the chosen instance and
the next ``turn``; nothing else changes, so the same inputs always give the
same answer.

- ``round_robin`` (default): the first candidate at or after ``turn`` in
  instance order, wrapping around; the next turn starts after it.
- ``least_connections``: fewest calls in flight (or client sessions, under
  ``per_client`` isolation); ties go round robin.
- ``weighted``: a fixed schedule in which instance *i* holds ``weight[i]``
  consecutive slots of every ``sum(weights)``; ``turn`` walks the schedule,
  skipping slots of instances that are not candidates.
- ``health_based``: fewest recent failures, then an instance already
  running, then fewest in flight; ties go round robin.
- ``random``: a weighted draw from ``draw``.

The core may not import :mod:`random`, so randomness is a seed the shell
supplies once (``GatewayStarted.seed``) and :func:`xorshift64` stretches it
into a reproducible sequence (Marsaglia, "Xorshift RNGs", 2003, the 13/7/17
triple). It decides nothing about security; it only spreads load.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import assert_never

from ._config import Strategy

__all__ = ["Candidate", "DEFAULT_SEED", "choose", "xorshift64"]

_MASK = (1 << 64) - 1

#: The generator's state when the shell supplies no seed (it must never be 0).
DEFAULT_SEED = 0x9E3779B97F4A7C15


def xorshift64(state: int) -> int:
    """The next state (and output) of a 64-bit xorshift generator; ``state`` must not be 0."""
    state ^= (state << 13) & _MASK
    state ^= state >> 7
    state ^= (state << 17) & _MASK
    return state


@dataclass(frozen=True, slots=True, kw_only=True)
class Candidate:
    """One instance that may take the request, and what the strategies weigh."""

    index: int
    weight: int = 1
    #: Calls in flight on it (shared isolation) or client sessions on it (per_client).
    load: int = 0
    #: Consecutive failures: 0 for a healthy instance.
    failures: int = 0
    #: It has a live, ready connection (choosing it costs no start).
    running: bool = False


def choose(
    strategy: Strategy, candidates: Sequence[Candidate], *, size: int, turn: int, draw: int = 0, weights: Sequence[int] = ()
) -> tuple[int, int]:
    """Pick one of ``candidates``; return its index and the next ``turn``.

    Args:
        strategy: one of :data:`~lockgate.core._config.STRATEGIES`.
        candidates: the instances that may take the request; not empty.
        size: how many instances the server has (candidates or not).
        turn: the counter the server keeps between calls.
        draw: a random non-negative integer, used only by ``random``.
        weights: every instance's weight, by index (``weighted``; default 1).

    Raises:
        ValueError: ``candidates`` is empty.
    """
    if not candidates:
        raise ValueError("no candidates to choose from")

    def rotation(c: Candidate) -> int:
        return (c.index - turn) % size

    match strategy:
        case "round_robin":
            chosen = min(candidates, key=rotation)
        case "least_connections":
            chosen = min(candidates, key=lambda c: (c.load, rotation(c)))
        case "health_based":
            chosen = min(candidates, key=lambda c: (c.failures, not c.running, c.load, rotation(c)))
        case "random":
            total = sum(c.weight for c in candidates)
            point = draw % total
            for chosen in candidates:
                point -= chosen.weight
                if point < 0:
                    break
            return chosen.index, turn
        case "weighted":
            return _weighted(candidates, size=size, turn=turn, weights=weights)
        case _:
            assert_never(strategy)
    return chosen.index, chosen.index + 1


def _weighted(candidates: Sequence[Candidate], *, size: int, turn: int, weights: Sequence[int]) -> tuple[int, int]:
    all_weights = [weights[i] if i < len(weights) else 1 for i in range(size)]
    total = sum(all_weights)
    allowed = {c.index for c in candidates}
    slot = turn % total
    for _ in range(size):
        start = 0
        for owner, weight in enumerate(all_weights):
            if slot < start + weight:
                break
            start += weight
        if owner in allowed:
            return owner, slot + 1
        slot = (start + weight) % total  # the first slot of the next instance
    raise ValueError("no candidate is an instance of this server")  # pragma: no cover
