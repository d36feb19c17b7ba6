"""Which agents a credential may act as: its *grants*.

A grant is one of three forms, the ones the rules file's hierarchical agent
names call for:

- an agent id, ``backend``: that agent only;
- a subtree, ``backend.*``: every agent below ``backend`` (``backend.db``,
  ``backend.db.reader``), not ``backend`` itself;
- ``*``: every agent.

Nothing else is a grant (``back*`` is refused where a grant is read), so
whether one set of grants lies within another is exact, which delegation
needs: a sub-agent's token may never reach an agent its parent could not.
"""

from __future__ import annotations

from collections.abc import Iterable

from ._policy import valid_agent_id

__all__ = ["ANY_AGENT", "grant_problem", "grants_within", "may_act_as"]

#: The grant of every agent.
ANY_AGENT = "*"
_SUBTREE = ".*"


def grant_problem(grant: str) -> str | None:
    """Why ``grant`` is not a grant, in a user's words; ``None`` when it is one."""
    if grant == ANY_AGENT:
        return None
    name = grant.removesuffix(_SUBTREE)
    if valid_agent_id(name) and "*" not in name:
        return None
    return f"{grant!r} is not an agent grant: use an agent id (backend), a subtree (backend.*) or * for every agent"


def may_act_as(grants: Iterable[str], agent: str) -> bool:
    """Does one of ``grants`` cover ``agent``?"""
    return any(_covers(grant, agent) for grant in grants)


def grants_within(child: Iterable[str], parent: Iterable[str]) -> bool:
    """Does every agent a ``child`` grant covers lie under one of ``parent``'s grants?

    A subtree lies within a grant that covers its root's subtree: ``backend.db.*``
    within ``backend.*``, never within ``backend`` or ``backend.db``.
    """
    parents = tuple(parent)
    for grant in child:
        if grant == ANY_AGENT:
            if ANY_AGENT not in parents:
                return False
        elif grant.endswith(_SUBTREE):
            root = grant.removesuffix(_SUBTREE)
            if not any(p == ANY_AGENT or p == grant or (p.endswith(_SUBTREE) and _below(root, p)) for p in parents):
                return False
        elif not may_act_as(parents, grant):
            return False
    return True


def _covers(grant: str, agent: str) -> bool:
    if grant == ANY_AGENT:
        return True
    if grant.endswith(_SUBTREE):
        return _below(agent, grant)
    return grant == agent


def _below(agent: str, subtree: str) -> bool:
    """Is ``agent`` strictly below the root of ``subtree`` (``backend.*``)?"""
    return agent.startswith(subtree[:-1]) and len(agent) > len(subtree) - 1
