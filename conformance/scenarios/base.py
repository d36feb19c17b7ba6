"""What a scenario is, the servers and rules scenarios share, and :func:`scenario`, which registers one."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conformance.clients import Raw

HERE = Path(__file__).resolve().parent.parent
"""The ``conformance`` folder."""
ROOT = HERE.parent
TRANSCRIPTS = HERE / "transcripts"

JSON = dict[str, Any]

RAW: JSON = {"command": "python", "args": ["servers/raw_server.py"], "description": "A plain JSON-lines server that misbehaves on request."}
SDK: JSON = {"command": "python", "args": ["servers/sdk_server.py"], "description": "An SDK MCPServer: echo, slow, big."}
TIME: JSON = {"command": "mcp-server-time", "args": ["--local-timezone", "UTC"], "description": "Time and time zones (PyPI mcp-server-time)."}
GIT: JSON = {"command": "mcp-server-git", "args": ["--repository", "repo"], "description": "A git repository (PyPI mcp-server-git)."}
NOTES: JSON = {"command": "python", "args": ["examples/notes_server.py"], "description": "An in-memory note store."}
UTILS: JSON = {"command": "python", "args": ["examples/utils_server.py"], "description": "Small utilities."}


def fixture(name: str) -> JSON:
    return {"command": "python", "args": ["fake_server.py", "--wire", f"fixtures/{name}"], "description": f"Answers from {name}."}


RULES: JSON = {
    "agents": {
        # allow everything but drop_* on raw: a wildcard tool deny
        "dev": {"allow": {"servers": ["*"]}, "deny": {"tools": {"raw": ["drop_*"]}}},
        # delete_user is both allowed and denied by name: the explicit deny wins
        "ops": {"allow": {"servers": ["raw"], "tools": {"raw": ["echo", "delete_user"]}}, "deny": {"tools": {"raw": ["delete_user"]}}},
        # only get_* and echo: anything else is denied by default
        "reader": {"allow": {"servers": ["raw"], "tools": {"raw": ["get_*", "echo"]}}},
        # every server but raw, by name
        "blocked": {"allow": {"servers": ["*"]}, "deny": {"servers": ["raw"]}},
        # sdk by name, any server starting with r denied by pattern
        "narrow": {"allow": {"servers": ["sdk"]}, "deny": {"servers": ["r*"]}},
        "default": {"allow": {"servers": ["raw"], "tools": {"raw": ["echo"]}}},
    },
    "defaults": {"deny_on_missing_agent": False},
}


RawScript = Callable[[Raw], Awaitable[None]]
SdkScript = Callable[[Any], Awaitable[None]]


@dataclass
class Scenario:
    name: str
    about: str
    raw: RawScript | None = None
    sdk: SdkScript | None = None
    sdk_mode: str = "legacy"
    servers: JSON = field(default_factory=lambda: {"raw": RAW})
    rules: JSON = field(default_factory=lambda: RULES)
    env: dict[str, str] = field(default_factory=dict)
    #: ``stdio``, or ``http``: ``lockgate serve --transport http`` and the SDK ``Client`` on its URL.
    transport: str = "stdio"
    #: Over HTTP, clients at once: more than one gives the script a list of
    #: clients and the corpus ``NAME_1`` … ``NAME_N``, one transcript per session.
    sessions: int = 1
    #: Keyword arguments for the SDK ``Client`` besides ``mode``: callbacks such as
    #: ``sampling_callback`` (which also declares the capability) or ``message_handler``.
    client_options: JSON = field(default_factory=dict)


SCENARIOS: list[Scenario] = []


def scenario(name: str, about: str, **options: Any) -> Callable[[Any], Any]:
    def register(script: Any) -> Any:
        kind = "sdk" if options.pop("sdk", False) else "raw"
        SCENARIOS.append(Scenario(name=name, about=about, **{kind: script}, **options))
        return script

    return register
