"""Delegation: what a credential may hand a sub-agent, decided before any token is signed.

A holder of a token or an API key asks for a shorter-lived, narrower token
for a sub-agent (``backend`` hands ``backend.reviewer`` a token for itself).
:func:`plan_delegation` decides whether the request lies within the parent,
field by field, and what the child gets; :meth:`.tokens.TokenIssuer.delegate`
signs it. The child is a Lockgate token like any other, verified offline by
signature and claims; its ``chain`` names every ancestor, so revoking any of
them revokes it (:func:`.credentials.is_revoked`).

Each rule keeps the child within its parent:

- ``agents``: at least one grant, and every agent a child grant covers is
  one the parent may act as (:func:`lockgate.core.grants_within`);
- ``role``: at most the parent's (``user`` < ``admin``); ``user`` unless asked;
- lifetime: at most the parent's remaining lifetime, at most the issuer's
  ceiling, and the requested ``ttl`` or else a short default;
- ``tools`` (``server/tool`` glob patterns, as :mod:`fnmatch` reads them):
  when the parent has a list, every pattern of the child's matches only
  names one of the parent's patterns matches (:func:`tools_within`); unset,
  the child keeps the parent's list;
- ``rate``: at most the parent's, both in calls per second and in burst;
  unset, the child keeps the parent's; either way the child's calls also
  count against the parent's bucket and its ancestors' (``shared_rates``),
  so handing out tokens never multiplies a rate;
- depth: at most :data:`MAX_CHAIN` ancestors, which also bounds a token's size.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from fnmatch import fnmatchcase
from functools import cache, lru_cache

from lockgate.core import Rate, Role, grant_problem, grants_within

from .credentials import VerifiedCredential

__all__ = [
    "DEFAULT_DELEGATION_TTL",
    "MAX_CHAIN",
    "Delegation",
    "DelegationRefused",
    "DelegationRequest",
    "plan_delegation",
    "rate_within",
    "tool_pattern_problem",
    "tools_within",
]

#: Seconds a delegated token lives when the request names no ``ttl``.
DEFAULT_DELEGATION_TTL = 900
#: The most ancestors a delegated token may have.
MAX_CHAIN = 8
_RANK: dict[Role, int] = {"user": 0, "admin": 1}
_TOOL_PATTERN = re.compile(r"[^\s/]+/\S+")
_TOOL_PATTERN_AT_MOST = 200
_TOOLS_AT_MOST = 256


@dataclass(frozen=True, slots=True, kw_only=True)
class DelegationRequest:
    """What a parent asks for its sub-agent; ``None`` keeps the parent's value (``ttl``: the default)."""

    agents: tuple[str, ...]
    role: Role = "user"
    ttl: float | None = None
    tools: tuple[str, ...] | None = None
    rate: Rate | None = None


@dataclass(frozen=True, slots=True)
class DelegationRefused:
    """A request that asks for more than the parent has: which ``field``, and ``reason`` in words."""

    field: str
    reason: str

    def __str__(self) -> str:
        return f"delegation refused: {self.reason}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Delegation:
    """What the child gets: its claims, ``lifetime`` in seconds from now, its ``chain`` of ancestors and their rates."""

    role: Role
    agents: tuple[str, ...]
    tools: tuple[str, ...] | None
    rate: Rate | None
    lifetime: float
    chain: tuple[str, ...]
    shared_rates: tuple[tuple[str, Rate], ...] = ()


def plan_delegation(
    parent: VerifiedCredential,
    request: DelegationRequest,
    *,
    now: float,
    max_ttl: float,
    default_ttl: float = DEFAULT_DELEGATION_TTL,
) -> Delegation | DelegationRefused:
    """The child ``request`` may have from ``parent`` at wall-clock ``now``, or why not.

    ``max_ttl`` is the longest any delegated token may live (the issuer's
    token lifetime), which bounds the children of a key that never expires.
    """
    chain = (*parent.chain, parent.credential_id)
    if len(chain) > MAX_CHAIN:
        return DelegationRefused("parent", f"a delegated token may have at most {MAX_CHAIN} ancestors")
    lifetime = _lifetime(parent, request.ttl, now=now, max_ttl=max_ttl, default_ttl=default_ttl)
    if isinstance(lifetime, DelegationRefused):
        return lifetime

    if not request.agents:
        return DelegationRefused("agents", "name at least one agent the delegated token may act as")
    for grant in request.agents:
        problem = grant_problem(grant)
        if problem is not None:
            return DelegationRefused("agents", problem)
    outside = [grant for grant in request.agents if not grants_within((grant,), parent.agents)]
    if outside:
        return DelegationRefused(
            "agents", f"{', '.join(map(repr, outside))} reaches beyond the agents the parent may act as"
        )

    if request.role not in _RANK:
        return DelegationRefused("role", f"{request.role!r} is not a role: use user or admin")
    if _RANK[request.role] > _RANK[parent.role]:
        return DelegationRefused("role", f"role {request.role!r} is above the parent's role {parent.role!r}")

    tools = parent.tools
    if request.tools is not None:
        if len(request.tools) > _TOOLS_AT_MOST:
            return DelegationRefused("tools", f"at most {_TOOLS_AT_MOST} tool patterns")
        for pattern in request.tools:
            problem = tool_pattern_problem(pattern)
            if problem is not None:
                return DelegationRefused("tools", problem)
        if parent.tools is not None:
            wider = [pattern for pattern in request.tools if not tools_within((pattern,), parent.tools)]
            if wider:
                return DelegationRefused(
                    "tools", f"{', '.join(map(repr, wider))} reaches beyond the tools the parent may call"
                )
        tools = tuple(dict.fromkeys(request.tools))

    rate = parent.rate
    if request.rate is not None:
        if parent.rate is not None and not rate_within(request.rate, parent.rate):
            return DelegationRefused("rate", f"rate {request.rate} is above the parent's rate {parent.rate}")
        rate = request.rate

    return Delegation(
        role=request.role,
        agents=tuple(dict.fromkeys(request.agents)),
        tools=tools,
        rate=rate,
        lifetime=lifetime,
        chain=chain,
        shared_rates=parent.shared_rates if parent.rate is None else (*parent.shared_rates, (parent.principal_id, parent.rate)),
    )


def tool_pattern_problem(pattern: str) -> str | None:
    """Why ``pattern`` is not a ``server/tool`` pattern, in a user's words; ``None`` when it is one."""
    if len(pattern) <= _TOOL_PATTERN_AT_MOST and _TOOL_PATTERN.fullmatch(pattern):
        return None
    return f"{pattern[:60]!r} is not a tool pattern: write server/tool (globs allowed: github/get_*, */read_*)"


def tools_within(child: tuple[str, ...], parent: tuple[str, ...]) -> bool:
    """Does every name a ``child`` pattern matches also match one of ``parent``'s patterns?

    Decided pattern against pattern, never by trying names, and on the safe
    side: a ``True`` is always right, while a few contained pairs that need
    reasoning about character sets (``[ab]`` within ``[abc]``) are refused.
    """
    return all(any(_contained(_tokens(c), _tokens(p)) for p in parent) for c in child)


def rate_within(child: Rate, parent: Rate) -> bool:
    """Is ``child`` at most ``parent``, both in burst (``count``) and in calls per second?"""
    return child.count <= parent.count and child.count * parent.period <= parent.count * child.period


def _lifetime(
    parent: VerifiedCredential, ttl: float | None, *, now: float, max_ttl: float, default_ttl: float
) -> float | DelegationRefused:
    remaining = parent.remaining(now)
    if remaining is not None and remaining < 1:
        return DelegationRefused("ttl", "the parent credential has expired or is about to")
    if ttl is None:
        return min(default_ttl, max_ttl, math.inf if remaining is None else remaining)
    if not math.isfinite(ttl) or ttl < 1:
        return DelegationRefused("ttl", "ttl must be a number of seconds, 1 or more")
    if ttl > max_ttl:
        return DelegationRefused("ttl", f"ttl {ttl:g}s is above the longest a delegated token may live ({max_ttl:g}s)")
    if remaining is not None and ttl > remaining:
        return DelegationRefused("ttl", f"ttl {ttl:g}s outlives the parent credential ({math.floor(remaining)}s left)")
    return ttl


# A glob as tokens: "*" (any run), "?" (any one character), "[...]" (a class,
# kept as written) or a one-character literal, split as fnmatch.translate splits.
_STAR = "*"
_ANY = "?"


@lru_cache(maxsize=1024)
def _tokens(pattern: str) -> tuple[str, ...]:
    tokens: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        i += 1
        if c == "*":
            if not tokens or tokens[-1] != _STAR:
                tokens.append(_STAR)
        elif c == "[":
            j = i
            if j < n and pattern[j] == "!":
                j += 1
            if j < n and pattern[j] == "]":
                j += 1
            while j < n and pattern[j] != "]":
                j += 1
            if j >= n:
                tokens.append("\\[")  # an unclosed "[" is a literal, as in fnmatch
            else:
                tokens.append(pattern[i - 1 : j + 1])
                i = j + 1
        elif c == "?":
            tokens.append(_ANY)
        else:
            tokens.append("\\" + c)
    return tuple(tokens)


def _contained(child: tuple[str, ...], parent: tuple[str, ...]) -> bool:
    """Does every string ``child`` matches match ``parent``? (Sound; see :func:`tools_within`.)

    ``parent``'s tokens consume ``child``'s: a star any run of them, a
    ``?`` any one single-character token, a literal only the same literal,
    a class a literal in it or the very same class. A child star can thus
    only be covered by a parent star.
    """

    @cache
    def fits(i: int, j: int) -> bool:
        if j == len(parent):
            return i == len(child)
        token = parent[j]
        if token == _STAR:
            return fits(i, j + 1) or (i < len(child) and fits(i + 1, j))
        if i == len(child) or child[i] == _STAR:
            return False
        mine = child[i]
        if token == _ANY:
            matches = True
        elif token.startswith("\\"):
            matches = mine == token
        else:
            matches = mine == token or (mine.startswith("\\") and fnmatchcase(mine[1:], token))
        return matches and fits(i + 1, j + 1)

    return fits(0, 0)
