"""MCP clients' own configuration files: where they live, the servers they list, adding an entry.

``lockgate init`` reads them to import a client's servers (:func:`find_client_config`,
:func:`read_client_config`); ``lockgate client-config --write`` adds the
Lockgate entry to one (:func:`add_entry`). Four clients are known: Claude
Desktop (``claude_desktop_config.json``), Claude Code (a project's
``.mcp.json``, ``~/.claude.json``), Cursor (``.cursor/mcp.json``) and VS Code
(``.vscode/mcp.json``, whose top key is ``servers``). A file that cannot be
read or is not a JSON object is a :class:`~lockgate.shells.configfiles.FileProblem`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from .configfiles import FileProblem, read_text

__all__ = [
    "CLIENTS",
    "LOCKGATE_NAME",
    "Imported",
    "add_entry",
    "claude_desktop_file",
    "client_candidates",
    "find_client_config",
    "home_dir",
    "is_lockgate",
    "read_client_config",
]

#: The clients ``lockgate client-config`` knows, by the name on its command line.
CLIENTS = ("claude-desktop", "claude-code", "cursor", "vscode")

#: The server name ``client-config`` writes; an imported entry of that name is Lockgate itself.
LOCKGATE_NAME = "lockgate"

# The keys whose strings the gateway expands (`${VAR}`); the editors' variables are rewritten there only.
_EXPANDED_KEYS = ("command", "args", "env", "cwd", "url", "headers")
# VS Code and Cursor variables: `${env:NAME}`, `${workspaceFolder}`, `${userHome}`, `${input:id}`.
_EDITOR_VARIABLE = re.compile(r"\$\{(?P<kind>env|input|workspaceFolder|userHome)(?::(?P<arg>[^}]*))?\}")


def home_dir(environ: Mapping[str, str], override: str | None = None) -> str:
    """The home directory to look in: ``--home``, else ``$HOME``, else the account's."""
    return os.path.abspath(override or environ.get("HOME") or os.path.expanduser("~"))


def claude_desktop_file(home: str, environ: Mapping[str, str], platform: str = sys.platform) -> str:
    """Where Claude Desktop keeps ``claude_desktop_config.json`` on this platform."""
    if platform == "darwin":
        base = os.path.join(home, "Library", "Application Support")
    elif platform == "win32":
        base = environ.get("APPDATA") or os.path.join(home, "AppData", "Roaming")
    else:  # Linux builds follow the XDG layout.
        base = environ.get("XDG_CONFIG_HOME") or os.path.join(home, ".config")
    return os.path.join(base, "Claude", "claude_desktop_config.json")


def _vscode_user_file(home: str, environ: Mapping[str, str], platform: str = sys.platform) -> str:
    if platform == "darwin":
        return os.path.join(home, "Library", "Application Support", "Code", "User", "mcp.json")
    base = environ.get("XDG_CONFIG_HOME") or os.path.join(home, ".config")
    return os.path.join(base, "Code", "User", "mcp.json")


def client_candidates(home: str, cwd: str, environ: Mapping[str, str]) -> list[str]:
    """The client files ``lockgate init`` looks for, in order: the project's first, then the user's."""
    return [
        os.path.join(cwd, ".mcp.json"),
        os.path.join(cwd, ".cursor", "mcp.json"),
        os.path.join(cwd, ".vscode", "mcp.json"),
        claude_desktop_file(home, environ),
        os.path.join(home, ".claude.json"),
        os.path.join(home, ".cursor", "mcp.json"),
        _vscode_user_file(home, environ),
    ]


@dataclass(slots=True)
class Imported:
    """The servers read from one client file, in the servers file's shape, and what was left out."""

    path: str
    client: str
    servers: dict[str, dict[str, Any]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def find_client_config(home: str, cwd: str, environ: Mapping[str, str], exclude: str) -> Imported | None:
    """The first client file in :func:`client_candidates` that lists a server, read; ``None`` if none.

    ``exclude`` (the servers file ``init`` is about to write) is never read:
    importing it would import the previous run's output. Unreadable or
    invalid files are passed over, since the user did not name them.
    """
    for path in client_candidates(home, cwd, environ):
        if not os.path.isfile(path) or _same_file(path, exclude):
            continue
        try:
            imported = read_client_config(path, home)
        except FileProblem:
            continue
        if imported.servers:
            return imported
    return None


def read_client_config(path: str, home: str) -> Imported:
    """The servers ``path`` lists, converted for Lockgate; the file's shape decides its format.

    ``{"servers": ...}`` is VS Code's; ``{"mcpServers": ...}`` everyone
    else's, plus ``projects.<dir>.mcpServers`` in ``~/.claude.json``.

    Raises:
        FileProblem: unreadable, not JSON, or neither shape.
    """
    data = _read_object(path)
    imported = Imported(path=os.path.abspath(path), client=_client_label(path))
    folder = _project_folder(imported.path, home)
    sources: list[tuple[str, Any, str | None]] = []
    if "mcpServers" in data:
        sources.append(("", data["mcpServers"], folder))
    elif isinstance(data.get("servers"), dict):
        sources.append(("", data["servers"], folder))
    projects = data.get("projects")
    if isinstance(projects, dict):  # ~/.claude.json: Claude Code's local scope, one block per project
        for project, settings in projects.items():
            if isinstance(settings, dict) and "mcpServers" in settings:
                sources.append((f" (project {project})", settings["mcpServers"], str(project)))
    if not sources:
        raise FileProblem(f"{path}: no servers to import: expected an object with mcpServers or servers", path)
    for where, servers, project in sources:
        if not isinstance(servers, dict):
            imported.notes.append(f"skipped the servers{where}: not an object")
            continue
        for name, raw in servers.items():
            _import_entry(imported, str(name), raw, where, project, home)
    return imported


def _import_entry(imported: Imported, name: str, raw: Any, where: str, project: str | None, home: str) -> None:
    """Add one client entry to ``imported``, or a note saying why it was left out."""
    if not isinstance(raw, dict):
        imported.notes.append(f"skipped {name}{where}: not an object")
        return
    if is_lockgate(name, raw):
        imported.notes.append(f"skipped {name}{where}: it is Lockgate itself")
        return
    if raw.get("disabled") is True:
        imported.notes.append(f"skipped {name}{where}: disabled in the client")
        return
    if raw.get("type") == "sse":
        imported.notes.append(f"skipped {name}{where}: the SSE transport is not supported (only Streamable HTTP)")
        return
    known = _server_keys()
    entry = {
        key: _editor_variables(value, project, home) if key in _EXPANDED_KEYS else value
        for key, value in raw.items()
        if key in known
    }
    dropped = sorted(key for key in raw if key not in known and key != "disabled")
    if dropped:
        imported.notes.append(f"{name}{where}: left out {', '.join(dropped)} (not a Lockgate key)")
    if isinstance(entry.get("command"), str) and "cwd" not in entry and project is not None:
        # The client started it in the project's folder; keep that, since the
        # gateway's own working directory is whatever its client chooses.
        entry["cwd"] = project
    launch = json.dumps([entry.get(key) for key in _EXPANDED_KEYS])
    unknown = sorted({m[0] for m in _EDITOR_VARIABLE.finditer(launch)})
    if unknown:
        imported.notes.append(f"{name}{where}: replace {', '.join(unknown)}: Lockgate expands only ${{VAR}}")
    final = name
    suffix = 2
    while final in imported.servers and imported.servers[final] != entry:
        final, suffix = f"{name}-{suffix}", suffix + 1
    if final != name:
        imported.notes.append(f"{name}{where}: renamed {final}, another entry has that name")
    imported.servers[final] = entry


def is_lockgate(name: str, entry: Mapping[str, Any]) -> bool:
    """Whether a client entry starts Lockgate, which must not be a server of itself.

    Named ``lockgate`` (as ``client-config`` writes it), a ``lockgate``
    command, or arguments with ``serve`` that mention lockgate (``uvx
    lockgate serve``, ``python -m lockgate.shells serve``).
    """
    if name == LOCKGATE_NAME:
        return True
    command = entry.get("command")
    if isinstance(command, str) and os.path.basename(command).removesuffix(".exe") == LOCKGATE_NAME:
        return True
    args = entry.get("args")
    words = [w for w in [command, *(args if isinstance(args, list) else [])] if isinstance(w, str)]
    return "serve" in words and any(LOCKGATE_NAME in w.lower() for w in words)


def add_entry(path: str, top_key: str, name: str, entry: Mapping[str, Any]) -> tuple[str | None, bool]:
    """Put ``entry`` under ``top_key.name`` in the JSON file ``path``, keeping everything else.

    An existing file is copied to a free ``FILE.bak`` (``FILE.bak.1``, ...)
    first, then replaced in one rename so that a client never reads half a
    file. A missing file (and its folder) is created. Returns the backup
    path (``None`` for a new file) and whether an entry of that name was replaced.

    Raises:
        FileProblem: the file is not a JSON object, or its ``top_key`` is not
            one; nothing is written.
    """
    data: dict[str, Any] = _read_object(path) if os.path.exists(path) else {}
    servers = data.setdefault(top_key, {})
    if not isinstance(servers, dict):
        raise FileProblem(f"{path}: {top_key} is not an object; the file was left as it is", path)
    replaced = name in servers
    servers[name] = dict(entry)
    backup = None
    if os.path.exists(path):
        backup = _free_backup_name(path)
        shutil.copy2(path, backup)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=".lockgate-", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
        if backup is not None:
            shutil.copymode(backup, temporary)  # the client's file may be private (0600)
        else:
            os.chmod(temporary, 0o644 & ~_umask())
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise
    return backup, replaced


def _read_object(path: str) -> dict[str, Any]:
    text = read_text(path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise FileProblem(
            f"{path}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}); "
            "it was left as it is (comments are not JSON either)",
            path,
        ) from None
    if not isinstance(data, dict):
        raise FileProblem(f"{path}: expected a JSON object at the top; it was left as it is", path)
    return data


def _free_backup_name(path: str) -> str:
    candidate, number = f"{path}.bak", 0
    while os.path.lexists(candidate):
        number += 1
        candidate = f"{path}.bak.{number}"
    return candidate


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.abspath(a) == os.path.abspath(b)


def _client_label(path: str) -> str:
    base = os.path.basename(path)
    parent = os.path.basename(os.path.dirname(os.path.abspath(path)))
    if base == "claude_desktop_config.json":
        return "Claude Desktop"
    if base == ".claude.json":
        return "Claude Code (user settings)"
    if parent == ".cursor":
        return "Cursor"
    if parent in (".vscode", "User"):
        return "VS Code"
    return "Claude Code" if base == ".mcp.json" else "client"


def _project_folder(path: str, home: str) -> str | None:
    """The project a file belongs to (its servers ran there), or ``None`` for a user-wide file."""
    parent = os.path.dirname(path)
    if os.path.basename(path) == ".mcp.json":
        return parent
    if os.path.basename(parent) in (".cursor", ".vscode") and os.path.dirname(parent) != home:
        return os.path.dirname(parent)
    return None


def _editor_variables(value: Any, project: str | None, home: str) -> Any:
    """``value`` with the VS Code and Cursor variables Lockgate can express rewritten.

    ``${env:NAME}`` becomes ``${NAME}``; ``${workspaceFolder}`` and
    ``${userHome}`` become paths. Others (``${input:id}``) stay and are
    reported. Claude's files already use ``${VAR}``, which is left alone.
    """
    if isinstance(value, str):

        def rewrite(match: re.Match[str]) -> str:
            kind = match["kind"]
            if kind == "env" and match["arg"]:
                return "${" + match["arg"] + "}"
            if kind == "workspaceFolder" and match["arg"] is None and project is not None:
                return project
            if kind == "userHome" and match["arg"] is None:
                return home
            return match[0]

        return _EDITOR_VARIABLE.sub(rewrite, value)
    if isinstance(value, list):
        return [_editor_variables(item, project, home) for item in value]
    if isinstance(value, dict):
        return {key: _editor_variables(item, project, home) for key, item in value.items()}
    return value


@cache
def _server_keys() -> frozenset[str]:
    """Every key a server entry may have, from the servers file's schema (so it cannot drift)."""
    from lockgate.core import config_schema

    definitions = config_schema("servers")["$defs"]
    return frozenset(
        key for kind in ("StdioServer", "HttpServer", "PooledServer") for key in definitions[kind]["properties"]
    )
