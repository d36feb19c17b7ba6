"""What a verified caller may do: which agent it acts as, which tools it may reach, and the audit of its sign-in.

Theory of operation
-------------------
A session opened with a :class:`~lockgate.core.Principal` (the shell
verified a credential) acts as the agents its grants cover and no other.
For each gateway tool call, :func:`act_as` decides the agent, in this order:

==============================================  ======================================
situation                                       outcome
==============================================  ======================================
``expires`` is past (event clock)               ``DENIED_BY_POLICY``, credential expired
``agent_id`` given, not a valid id              ``INVALID_AGENT_ID``, as without one
``agent_id`` given, not covered by a grant      ``DENIED_BY_POLICY``, rule ``credential.agents``
``agent_id`` given, not defined in the rules    ``DENIED_BY_POLICY``, as without one
``agent_id`` given                              that agent
no ``agent_id``, no ``default_agent``           ``DENIED_BY_POLICY``, rule ``credential.default_agent``
no ``agent_id``, default not covered            ``DENIED_BY_POLICY``, rule ``credential.agents``
no ``agent_id``, default not defined            ``DENIED_BY_POLICY``, as without one
no ``agent_id``                                 ``default_agent``
==============================================  ======================================

The grant is checked before the rules: a credential learns nothing about
which agents exist beyond those it may act as. ``GATEWAY_DEFAULT_AGENT`` and
``defaults.deny_on_missing_agent`` are for callers without a credential
(:meth:`~lockgate.core._policy.Policy.resolve_agent`); a credential names
its own default. After that the rules decide what the agent may see and
call, as for anyone, and a principal with ``tools`` (a delegated token)
reaches only the tools its ``server/tool`` patterns match
(:func:`tool_granted`), for calls and for the lists alike.

Authentication itself happens in the shell; :func:`authentication_record`
is the audit record of its outcome, which names the credential by its id
and never holds a secret. A session that outlives any one request (stdio)
has its credential checked again by the shell as the store changes; while
that check fails, every call of the session is refused
(:func:`credential_refused`), whatever agent it names.
"""

from __future__ import annotations

import fnmatch
from typing import Any

from ._audit import Decision
from ._errors import ErrorCode
from ._events import AuthenticationFailed, AuthenticationSucceeded
from ._grants import may_act_as
from ._identity import Principal
from ._policy import Policy, Refusal, valid_agent_id

__all__ = ["CREDENTIAL_TOOLS", "act_as", "admin_refusal", "authentication_record", "credential_refused", "tool_granted"]

JSONObject = dict[str, Any]

#: The rule a delegated token's narrower tool list denies with.
CREDENTIAL_TOOLS = "credential.tools"
_CREDENTIAL_AGENTS = "credential.agents"

# How much of a string from the shell an audit record keeps.
_MAX_FIELD = 300


def act_as(principal: Principal, agent_id: str | None, policy: Policy, now: float) -> str | Refusal:
    """The agent a call of ``principal`` that declares ``agent_id`` acts as, or why it may not act.

    Never fails open: every path that does not end in an agent both granted
    and defined refuses (see the module docstring).
    """
    if principal.expires is not None and now >= principal.expires:
        return Refusal(ErrorCode.DENIED_BY_POLICY, f"credential {principal.id} expired", "credential.expires")
    if agent_id is not None:
        if not valid_agent_id(agent_id):
            return policy.resolve_agent(agent_id, default_agent=None)  # the INVALID_AGENT_ID refusal
        agent = agent_id
    elif principal.default_agent is None:
        return Refusal(
            ErrorCode.DENIED_BY_POLICY,
            f"agent_id is required: credential {principal.id} has no default agent",
            "credential.default_agent",
        )
    else:
        agent = principal.default_agent
    if not may_act_as(principal.agents, agent):
        return Refusal(
            ErrorCode.DENIED_BY_POLICY, f"credential {principal.id} may not act as agent {agent!r}", _CREDENTIAL_AGENTS
        )
    # Granted; now the rules, as for a declared id without a credential.
    return policy.resolve_agent(agent, default_agent=None)


def admin_refusal(principal: Principal, now: float) -> Refusal | None:
    """Why ``principal`` may not manage users and keys (the ``/auth/`` admin endpoints); ``None`` for an admin.

    Only the ``admin`` role may, and only while its credential is valid.
    """
    if principal.expires is not None and now >= principal.expires:
        return Refusal(ErrorCode.DENIED_BY_POLICY, f"credential {principal.id} expired", "credential.expires")
    if principal.role != "admin":
        return Refusal(
            ErrorCode.DENIED_BY_POLICY,
            f"credential {principal.id} has role {principal.role}: only an admin may manage users and keys",
            "credential.role",
        )
    return None


def credential_refused(principal: Principal, reason: str) -> Refusal:
    """Why a session whose credential no longer proves anything (the shell said so) may not act at all."""
    return Refusal(ErrorCode.DENIED_BY_POLICY, f"credential {principal.id} refused: {reason[:_MAX_FIELD]}", "credential.refused")


def tool_granted(principal: Principal | None, server: str, tool: str) -> bool:
    """Whether ``principal``'s own tool list (if it has one) lets it reach ``tool`` on ``server``.

    The patterns are matched against ``server/tool`` like the rules' globs
    (:func:`fnmatch.fnmatchcase`): ``db/get_*``, ``notes/*``.
    """
    if principal is None or principal.tools is None:
        return True
    name = f"{server}/{tool}"
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in principal.tools)


def authentication_record(event: AuthenticationSucceeded | AuthenticationFailed) -> JSONObject:
    """The audit record of an authentication the shell decided: who, from where, and why it failed."""
    if isinstance(event, AuthenticationSucceeded):
        record: JSONObject = {
            "operation": _bounded(event.operation),
            "decision": Decision.ALLOW.value,
            "principal": event.principal.id,
            "role": event.principal.role,
            "address": _bounded(event.address),
        }
    else:
        record = {
            "operation": _bounded(event.operation),
            "decision": Decision.DENY.value,
            "credential": _bounded(event.credential),
            "address": _bounded(event.address),
            "reason": event.reason[:_MAX_FIELD],
        }
    if event.target is not None:
        record["target"] = _bounded(event.target)
    return record


def _bounded(text: str | None) -> str | None:
    return None if text is None else text[:_MAX_FIELD]
