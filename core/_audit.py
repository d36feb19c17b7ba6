"""The audit record of a gateway tool call, and the decision it records.

Every call of a gateway tool ends in exactly one :class:`~lockgate.core.Audit`
action, refused and malformed calls included. The record names who asked
(``agent``, and ``principal`` for a verified caller), what (``operation``, ``server``, ``tool``), what was decided and
by which rule, how long it took, and the argument keys and size, never
their values. The metrics see the same observation, with label values
bounded to names the configuration defines.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Literal, Union

from ._errors import ErrorCode

__all__ = ["OPERATIONS", "AuditEntry", "AuditError", "Decision"]

JSONObject = dict[str, Any]

#: Why a call failed, as its ``error_code`` says: one of the gateway's error
#: codes, or ``DOWNSTREAM_ERROR`` (the server itself answered with an error).
AuditError = Union[ErrorCode, Literal["DOWNSTREAM_ERROR"]]

#: The gateway tools and the forwarded methods, the only ``operation`` values that become metric labels.
OPERATIONS = frozenset(
    {
        "list_servers", "get_server_tools", "execute_tool", "get_gateway_status",
        # Aggregate mode: the servers' own surface.
        "tools/call", "resources/read", "prompts/get", "completion/complete",
        "resources/subscribe", "resources/unsubscribe",
    }
)


class Decision(enum.StrEnum):
    """What the gateway decided about a call."""

    #: Policy allowed it (a downstream's answer counts as allowed, even an error).
    ALLOW = "ALLOW"
    #: Policy refused it (``DENIED_BY_POLICY``).
    DENY = "DENY"
    #: It could not be served: bad arguments, unknown agent, server unavailable, timeout, ...
    ERROR = "ERROR"


@dataclass(slots=True, kw_only=True)
class AuditEntry:
    """What the audit record says about a call, besides its decision and timing.

    It grows as the call gets further (the agent, then the server and tool,
    then the rule), so it is filled in place: one per call, never shared.

    ``invalid`` is set for a call refused at the strict JSON boundary: what
    could not be recorded, and where (the keys are then what was salvaged).
    ``principal`` is the id of the verified caller, for a session opened
    with one; the record has a ``principal`` field only then.
    """

    agent: str | None = None
    principal: str | None = None
    operation: str | None = None
    server: str | None = None
    tool: str | None = None
    rule: str | None = None
    request_bytes: int = 0
    arg_keys: tuple[str, ...] = ()
    invalid: str | None = None
    #: The door the request came through when it was not MCP (``"rest"``); the record says so only then.
    transport: str | None = None

    def record(self, decision: Decision, latency: float, error: AuditError | None) -> JSONObject:
        """The JSON record of the :class:`~lockgate.core.Audit` action."""
        args: JSONObject = {"keys": list(self.arg_keys), "request_bytes": self.request_bytes}
        if self.invalid is not None:
            args["invalid"] = self.invalid
        record: JSONObject = {"agent": self.agent}
        if self.principal is not None:
            record["principal"] = self.principal
        if self.transport is not None:
            record["transport"] = self.transport
        record.update({
            "operation": self.operation,
            "server": self.server,
            "tool": self.tool,
            "decision": decision.value,
            "rule": self.rule,
            "latency_ms": round(latency * 1000, 3),
            "error_code": error_name(error),
            "args": args,
        })
        return record


def error_name(error: AuditError | None) -> str | None:
    """The ``error_code`` field of a record (and the metrics' outcome, lower-cased)."""
    return error.name if isinstance(error, ErrorCode) else error
