"""The load-balancing strategies: a pure function of candidates, turn and draw."""

from __future__ import annotations

from collections import Counter

import pytest

from lockgate.core._balance import DEFAULT_SEED, Candidate, choose, xorshift64


def run(strategy: str, candidates: list[Candidate], n: int, *, size: int = 3, weights: tuple[int, ...] = ()) -> list[int]:
    turn, rng, picks = 0, DEFAULT_SEED, []
    for _ in range(n):
        rng = xorshift64(rng)
        index, turn = choose(strategy, candidates, size=size, turn=turn, draw=rng, weights=weights)  # type: ignore[arg-type]
        picks.append(index)
    return picks


ALL = [Candidate(index=i) for i in range(3)]


def test_round_robin_rotates_and_skips_instances_that_are_not_candidates() -> None:
    assert run("round_robin", ALL, 6) == [0, 1, 2, 0, 1, 2]
    assert run("round_robin", [Candidate(index=0), Candidate(index=2)], 4) == [0, 2, 0, 2]


def test_least_connections_prefers_the_least_loaded_then_rotates() -> None:
    loads = [Candidate(index=0, load=3), Candidate(index=1, load=1), Candidate(index=2, load=1)]
    assert choose("least_connections", loads, size=3, turn=0) == (1, 2)
    assert choose("least_connections", loads, size=3, turn=2) == (2, 3)


def test_weighted_follows_the_weights_exactly_over_a_cycle() -> None:
    picks = run("weighted", ALL, 12, weights=(3, 1, 2))
    assert picks == [0, 0, 0, 1, 2, 2] * 2
    # An instance that is not a candidate gives its slots to the next one.
    assert run("weighted", [Candidate(index=0), Candidate(index=2)], 6, weights=(3, 1, 2)) == [0, 0, 0, 2, 2, 0]


def test_health_based_prefers_fewer_failures_then_a_running_instance() -> None:
    candidates = [Candidate(index=0, failures=1), Candidate(index=1), Candidate(index=2, running=True)]
    assert choose("health_based", candidates, size=3, turn=0) == (2, 3)
    candidates = [Candidate(index=0, failures=1, running=True), Candidate(index=1, load=5)]
    assert choose("health_based", candidates, size=2, turn=0) == (1, 2)


def test_random_is_reproducible_and_follows_the_weights() -> None:
    weighted = [Candidate(index=0, weight=1), Candidate(index=1, weight=3)]
    picks = run("random", weighted, 4000, size=2)
    assert picks == run("random", weighted, 4000, size=2)
    counts = Counter(picks)
    assert 800 < counts[0] < 1200 and 2800 < counts[1] < 3200
    # turn is left alone: random does not rotate.
    assert choose("random", ALL, size=3, turn=7, draw=4) == (1, 7)


def test_xorshift_never_reaches_zero_and_repeats_nothing_soon() -> None:
    state, seen = DEFAULT_SEED, set()
    for _ in range(10_000):
        state = xorshift64(state)
        assert 0 < state < 2**64 and state not in seen
        seen.add(state)


def test_no_candidates_is_misuse() -> None:
    with pytest.raises(ValueError):
        choose("round_robin", [], size=1, turn=0)
