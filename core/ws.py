"""The WebSocket front's rules, sans-IO: the public face of :mod:`._ws` (see its docstring).

RFC 6455; MCP JSON-RPC messages, one per text message, subprotocol ``mcp``,
at ``/ws`` on the HTTP front's port.
"""

from __future__ import annotations

from ._config import DEFAULT_WS_PING_INTERVAL, DEFAULT_WS_PING_TIMEOUT
from ._ws import (
    MAX_FRAGMENTS,
    SUBPROTOCOL,
    WS_PATH,
    CloseCode,
    Inbound,
    KeepAlive,
    SendPing,
    Upgrade,
    WaitUntil,
    WsClose,
    accept_token,
    answer_close,
    check_upgrade,
    credential_refused,
    fell_behind,
    going_away,
    internal_failure,
    is_ws_target,
    keepalive_timeout,
    opened_request,
    protocol_failure,
    session_ended,
    shutting_down,
    streamable_off,
)

__all__ = [
    "DEFAULT_WS_PING_INTERVAL",
    "DEFAULT_WS_PING_TIMEOUT",
    "CloseCode",
    "Inbound",
    "KeepAlive",
    "MAX_FRAGMENTS",
    "SUBPROTOCOL",
    "SendPing",
    "Upgrade",
    "WS_PATH",
    "WaitUntil",
    "WsClose",
    "accept_token",
    "answer_close",
    "check_upgrade",
    "credential_refused",
    "fell_behind",
    "going_away",
    "internal_failure",
    "is_ws_target",
    "keepalive_timeout",
    "opened_request",
    "protocol_failure",
    "session_ended",
    "shutting_down",
    "streamable_off",
]
