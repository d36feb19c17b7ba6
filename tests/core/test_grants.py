"""Agent grants: what a credential may act as, and when one set lies within another."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lockgate.core._grants import grant_problem, grants_within, may_act_as


@pytest.mark.parametrize(
    ("grants", "agent", "expected"),
    [
        (["backend"], "backend", True),
        (["backend"], "backend.db", False),
        (["backend.*"], "backend", False),
        (["backend.*"], "backend.db", True),
        (["backend.*"], "backend.db.reader", True),
        (["backend.*"], "backendx", False),
        (["backend.*"], "backend.", False),
        (["*"], "anyone", True),
        ([], "backend", False),
        (["frontend", "backend.*"], "backend.db", True),
    ],
)
def test_may_act_as(grants: list[str], agent: str, expected: bool) -> None:
    assert may_act_as(grants, agent) is expected


@pytest.mark.parametrize(
    ("child", "parent", "expected"),
    [
        (["backend"], ["backend"], True),
        (["backend.db"], ["backend.*"], True),
        (["backend.db.*"], ["backend.*"], True),
        (["backend.*"], ["backend.*"], True),
        (["backend.*"], ["backend"], False),
        (["backend"], ["backend.*"], False),
        (["*"], ["backend.*"], False),
        (["*"], ["*"], True),
        (["backend.*", "frontend"], ["*"], True),
        (["backend.db", "frontend"], ["backend.*"], False),
        ([], [], True),
    ],
)
def test_grants_within(child: list[str], parent: list[str], expected: bool) -> None:
    assert grants_within(child, parent) is expected


def test_only_the_three_forms_are_grants() -> None:
    assert [grant_problem(g) for g in ("backend", "backend.*", "*", "a.b-c_d")] == [None] * 4
    for wrong in ("back*", "*.db", "backend.*.*", "", "bad id", "**"):
        assert grant_problem(wrong) is not None, wrong


names = st.lists(st.sampled_from(["a", "b", "x"]), min_size=1, max_size=3).map(".".join)
grants = st.one_of(names, names.map(lambda n: n + ".*"), st.just("*"))


@given(st.lists(grants, max_size=3), st.lists(grants, max_size=3), names)
def test_a_child_within_its_parent_never_reaches_an_agent_the_parent_cannot(
    child: list[str], parent: list[str], agent: str
) -> None:
    if grants_within(child, parent) and may_act_as(child, agent):
        assert may_act_as(parent, agent)
