"""Who is calling: the principal a verified credential stands for.

The shell verifies credentials, since that is cryptography or slow by design
(an API key's hash, a JWT's signature, a password): what it hands the core is
a :class:`Principal`, the verified facts. The core decides everything that
follows from them: which agent a request acts as, whether it may, which rate
limit applies, and what the audit record says.

A principal never holds a secret: its ``id`` names it in audit records, logs
and metrics (``key:3f9a1c2b``, ``user:alice``, ``jwt:https://issuer#sub``,
``delegated:<token id>``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

__all__ = ["RATE_PATTERN", "Principal", "Rate", "Role", "parse_rate"]

Role = Literal["admin", "user"]

#: A rate as written (``120/min``), as a regular expression (for JSON Schemas).
RATE_PATTERN = r"([1-9][0-9]{0,8})/(s|sec|second|m|min|minute|h|hour)"
_RATE = re.compile(RATE_PATTERN)
_PERIODS = {"s": 1.0, "sec": 1.0, "second": 1.0, "m": 60.0, "min": 60.0, "minute": 60.0, "h": 3600.0, "hour": 3600.0}


@dataclass(frozen=True, slots=True)
class Rate:
    """A rate limit: at most ``count`` calls per ``period`` seconds, in bursts of up to ``count``."""

    count: int
    period: float

    def __str__(self) -> str:
        unit = {1.0: "s", 60.0: "min", 3600.0: "h"}.get(self.period)
        return f"{self.count}/{unit}" if unit else f"{self.count}/{self.period:g}s"


def parse_rate(text: str) -> Rate | None:
    """``120/min`` as a :class:`Rate` (units ``s``, ``min``, ``h`` and their long forms); ``None`` if it is not one."""
    match = _RATE.fullmatch(text.strip())
    if match is None:
        return None
    return Rate(int(match.group(1)), _PERIODS[match.group(2)])


@dataclass(frozen=True, slots=True, kw_only=True)
class Principal:
    """A verified caller, as the shell hands it to the core.

    ``agents`` are the grants it may act as (see :mod:`._grants`: ``backend``,
    ``backend.*``, ``*``); ``default_agent`` is the agent a request that
    declares none acts as (``None``: such a request is refused). ``tools``,
    when set, narrows what it may call below what its agent may: ``server/tool``
    patterns (a delegated token's narrower list). ``rate`` is its own limit;
    ``shared_rates`` are the limits of the credentials it was delegated from,
    by their principal ids, root first: its calls count against their buckets
    too, so a parent cannot multiply its rate by handing out tokens.
    ``expires`` is when the credential stops being valid, on the event clock
    of the core (``None``: never).
    """

    id: str
    role: Role = "user"
    agents: tuple[str, ...] = ()
    default_agent: str | None = None
    tools: tuple[str, ...] | None = None
    rate: Rate | None = None
    shared_rates: tuple[tuple[str, Rate], ...] = ()
    expires: float | None = None
    #: On whose behalf it calls, when not itself: the user an API key belongs
    #: to, a delegated token's root (``user:alice``). Per-user OAuth tokens
    #: for downstream servers are the subject's.
    subject: str | None = None

    @property
    def on_behalf_of(self) -> str:
        """The subject, else the principal itself: whose per-user OAuth tokens its calls carry."""
        return self.subject or self.id
