"""``lockgate init [DIR]``: write a starter servers file and rules file.

The servers come from a client's configuration (``--from FILE``, else the
first one found in the usual places, see
:func:`lockgate.shells.clientfiles.client_candidates`), else one example
server. The rules give a ``default`` agent the read-only-looking tools of
every server and show a restricted agent. JSON has no comments, so the
explanation is printed instead. Exit status 0; 1 when a file exists (without
``--force``); 2 for a usage error or an unreadable ``--from`` file.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from collections.abc import Mapping
from typing import Any

from ..clientfiles import Imported, find_client_config, home_dir, read_client_config
from ..configfiles import RULES_DEFAULTS, SERVERS_DEFAULTS
from .common import EXIT_FAILED, EXIT_USAGE, Subcommands, count

__all__ = ["READ_ONLY_TOOLS", "add_parser", "run", "starter_rules"]

#: Tool-name globs that usually only read. Globs are matched case-sensitively
#: against the whole name (``fnmatch.fnmatchcase``); there is no regex.
READ_ONLY_TOOLS = ("get_*", "list_*", "read_*", "search_*", "find_*", "describe_*")

#: What the example restricted agent may not call on its one server.
_RESTRICTED_DENY = ("delete_*", "remove_*", "drop_*")

_SERVERS_NAME = os.path.basename(SERVERS_DEFAULTS[0])
_RULES_NAME = os.path.basename(RULES_DEFAULTS[0])


def add_parser(commands: Subcommands) -> None:
    init = commands.add_parser(
        "init",
        help="write a starter servers file and rules file, importing a client's servers",
        description=(
            f"Write DIR/{_SERVERS_NAME} (the servers Lockgate fronts) and DIR/{_RULES_NAME} "
            "(who may use what). The servers are imported from --from FILE, else from the first "
            "client configuration found: ./.mcp.json, ./.cursor/mcp.json, ./.vscode/mcp.json, "
            "Claude Desktop's claude_desktop_config.json, ~/.claude.json, ~/.cursor/mcp.json, "
            "VS Code's user mcp.json; an entry that starts Lockgate itself is skipped. With none, "
            "an example server is written. The rules give the agent 'default' the read-only-looking "
            f"tools ({', '.join(READ_ONLY_TOOLS)}) of every server, and show a restricted agent."
        ),
    )
    init.add_argument("dir", nargs="?", default=".", metavar="DIR", help="where to write the files (default: .)")
    init.add_argument(
        "--from",
        dest="source",
        metavar="FILE",
        help=(
            "import the servers of this client file: claude_desktop_config.json, .mcp.json, "
            "~/.claude.json (top-level and per-project), .cursor/mcp.json or .vscode/mcp.json"
        ),
    )
    init.add_argument("--no-import", action="store_true", help="write the example server; import nothing")
    init.add_argument("--home", metavar="DIR", help="home directory to look in for client files (default: $HOME)")
    init.add_argument("--force", action="store_true", help="overwrite existing files")


def run(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    folder = os.path.abspath(args.dir)
    servers_path, rules_path = os.path.join(folder, _SERVERS_NAME), os.path.join(folder, _RULES_NAME)
    home = home_dir(environ, args.home)
    if args.source and args.no_import:
        print("lockgate: error: --from and --no-import exclude each other", file=sys.stderr)
        return EXIT_USAGE
    if args.source and os.path.exists(args.source) and os.path.exists(servers_path) and os.path.samefile(args.source, servers_path):
        print(
            f"lockgate: error: {servers_path} is both the client file to import and the servers file to "
            "write; a client must not start Lockgate from the file that lists Lockgate's servers. "
            "Give another DIR (lockgate init lockgate --from .mcp.json)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    existing = [path for path in (servers_path, rules_path) if os.path.exists(path)]
    if existing and not args.force:
        for path in existing:
            print(f"lockgate: error: {path} exists; nothing was written (--force overwrites)", file=sys.stderr)
        if servers_path in existing:
            # A client's .mcp.json (Claude Code's project file) must stay the client's.
            print("lockgate: if it is a client's file (Claude Code reads ./.mcp.json), give another DIR: "
                  "lockgate init lockgate", file=sys.stderr)
        return EXIT_FAILED
    imported: Imported | None = None
    if args.source:
        imported = read_client_config(args.source, home)  # FileProblem: exit 2 in main
    elif not args.no_import:
        imported = find_client_config(home, os.getcwd(), environ, exclude=servers_path)
    servers = imported.servers if imported is not None and imported.servers else example_servers(folder)
    rules = starter_rules(list(servers))
    os.makedirs(folder, exist_ok=True)
    _write(servers_path, {"mcpServers": servers}, args.force)
    _write(rules_path, rules, args.force)
    _report(imported, servers, servers_path, rules_path, environ)
    return 0


def example_servers(folder: str) -> dict[str, dict[str, Any]]:
    """One server to start from: the reference filesystem server, limited to ``folder``."""
    return {
        "files": {
            "command": "npx",
            "args": ["-y", "@modelcontextprotocol/server-filesystem", folder],
            "description": f"Files under {folder}: read, list, search, write, edit, move. An example: replace it with your servers.",
        }
    }


def starter_rules(servers: list[str]) -> dict[str, Any]:
    """The starter rules for these servers (at least one).

    ``default`` names each server rather than ``"*"``: a server matched only
    by a wildcard and without an ``allow.tools`` list gets every tool, so a
    server added later would be fully open to it. Listed, a new server stays
    closed until it is added here. ``deny_on_missing_agent`` is false so that
    a client that sends no ``agent_id`` (most do not) acts as
    ``GATEWAY_DEFAULT_AGENT`` or ``default``.
    """
    first = servers[0]
    return {
        "agents": {
            "default": {
                "allow": {"servers": list(servers), "tools": {name: list(READ_ONLY_TOOLS) for name in servers}},
            },
            "restricted": {
                "allow": {"servers": [first]},
                "deny": {"tools": {first: list(_RESTRICTED_DENY)}},
            },
        },
        "defaults": {"deny_on_missing_agent": False},
    }


def _write(path: str, document: Any, force: bool) -> None:
    # "x" refuses a file that appeared since the check above; --force replaces it.
    with open(path, "w" if force else "x", encoding="utf-8") as file:
        file.write(json.dumps(document, indent=2, ensure_ascii=False) + "\n")


def _report(
    imported: Imported | None,
    servers: Mapping[str, Any],
    servers_path: str,
    rules_path: str,
    environ: Mapping[str, str],
) -> None:
    """Say what was imported and written, what the rules mean, whether the files validate, what next."""
    names = list(servers)
    if imported is not None and imported.servers:
        print(f"Imported {count(len(names), 'server')} from {imported.client}: {imported.path}")
    elif imported is not None:
        print(f"Nothing to import from {imported.path}; wrote an example server instead.")
    else:
        print("No client configuration found; wrote an example server (it needs npx, from Node.js).")
    for note in imported.notes if imported is not None else []:
        print(f"  {note}")
    print(f"\nWrote {servers_path}")
    print(f"  the servers Lockgate fronts: {', '.join(names)}.")
    print("  Each entry is the .mcp.json shape; \"description\" is what list_servers shows agents.")
    print(f"Wrote {rules_path}")
    print(f"  default     every server above, only tools named {', '.join(READ_ONLY_TOOLS)} (read-only by name).")
    print(f"  restricted  an example: {names[0]} only, every tool but {', '.join(_RESTRICTED_DENY)}; no other server.")
    print("  deny_on_missing_agent is false: a call without agent_id acts as GATEWAY_DEFAULT_AGENT, else default.")
    print("  A server you add later is closed to default until you add it to its lists.")
    print("  JSON has no comments: README \"Rules file\" explains each key (lockgate schema rules).")
    _check(servers_path, rules_path, environ)
    files = f"--config {shlex.quote(servers_path)} --rules {shlex.quote(rules_path)}"
    print("\nNext:")
    print(f"  lockgate validate {files}")
    print(f"  lockgate explain --agent default --offline {files}")
    print(f"  lockgate client-config claude-desktop {files}    # or claude-code, cursor, vscode; --write adds it")
    if imported is not None and imported.servers:
        print(f"  then remove the imported servers from {imported.path},")
        print("  so that the client reaches them only through Lockgate.")


def _check(servers_path: str, rules_path: str, environ: Mapping[str, str]) -> None:
    """Validate what was written, as ``lockgate validate`` would, and say so."""
    from lockgate.core import ConfigError

    from ..configfiles import ConfigFiles, load_files

    try:
        config = load_files(ConfigFiles(servers=servers_path, rules=rules_path), environ)
    except ConfigError as exc:
        print(f"Not valid yet ({count(len(exc.problems), 'error')}); fix these, then run lockgate validate:")
        for problem in exc.problems:
            print(f"  error: {problem}")
        return
    print(f"Valid: {count(len(config.servers), 'server')}, {count(len(config.policy.agents), 'agent')}.")
    for warning in config.warnings:
        print(f"  warning: {warning}")
