"""The conformance scenarios: what each recorded session does, and against which servers.

Each scenario names its servers (entries of a ``.mcp.json``, with commands
relative to the recording folder, see ``record.py``), its rules and
``GATEWAY_*`` settings, and a client script: a raw JSON-lines client
(:class:`~conformance.clients.Raw`) or the MCP SDK ``Client``. Add one with
``@scenario(name, about, ...)`` (:mod:`.base`) in the module of its topic;
``make conformance-record`` records it. :data:`SCENARIOS` lists them in the
order of the modules imported below, then of their definitions.
"""

from __future__ import annotations

# Imported for the scenarios they register, in this order.
from conformance.scenarios import handshake, tools, refusals, lifecycle, inputs, http, aggregate  # noqa: F401  # isort: skip
from conformance.scenarios.base import HERE, RAW, ROOT, RULES, SCENARIOS, SDK, TRANSCRIPTS, Scenario

__all__ = ["HERE", "INSPECTOR", "RAW", "ROOT", "RULES", "SCENARIOS", "SDK", "SESSIONS", "TRANSCRIPTS", "Scenario"]


# -- the MCP Inspector CLI ---------------------------------------------------------------

INSPECTOR: list[tuple[str, str, list[str]]] = [
    ("inspector_tools_list", "the MCP Inspector CLI 2.12.0: initialize, logging/setLevel, tools/list", ["--method", "tools/list"]),
    ("inspector_execute_tool", "the MCP Inspector CLI 2.12.0 calls execute_tool (echo)",
     ["--method", "tools/call", "--tool-name", "execute_tool", "--tool-arg", "agent_id=dev", "server=raw", "tool=echo", 'args={"text":"hi"}']),
    ("inspector_denied", "the MCP Inspector CLI 2.12.0 calls a denied tool and gets DENIED_BY_POLICY",
     ["--method", "tools/call", "--tool-name", "execute_tool", "--tool-arg", "agent_id=dev", "server=raw", "tool=drop_table", 'args={"table":"t"}']),
    ("inspector_modern_execute_tool", "the MCP Inspector CLI 2.12.0 in the stateless era (--protocol-era modern): server/discover, then execute_tool (echo)",
     ["--protocol-era", "modern", "--method", "tools/call", "--tool-name", "execute_tool", "--tool-arg", "agent_id=dev", "server=raw", "tool=echo", 'args={"text":"hi"}']),
]
"""Scenarios driven by the real Inspector CLI (it needs Node 22: ``make conformance-record`` installs both)."""


# -- concurrent sessions (two clients of one gateway, in process) -----------------------

SESSIONS = "concurrent_sessions"
"""Two clients of one gateway, sharing the raw server: recorded in process (stdio has one client).

They give two transcripts: ``concurrent_sessions_1`` (the run until the first
client leaves) and ``concurrent_sessions_2`` (the whole run). Their wire
sides are each client's own traffic.
"""
