"""``lockgate client-config CLIENT``: the entry that connects an MCP client to Lockgate.

Prints it in the client's own JSON format (Claude Desktop, Claude Code,
Cursor: ``mcpServers``; VS Code: ``servers``) on stdout, with absolute paths
to the ``lockgate`` executable, both configuration files and the audit log,
since the client decides the working directory. Notes go to stderr. With
``--write``, merges it into the client's file after a backup. Exit status 0;
2 for a usage error, a missing configuration file, or a client file that is
not a JSON object (left as it is).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from ..clientfiles import CLIENTS, LOCKGATE_NAME, add_entry, claude_desktop_file, home_dir, is_lockgate
from ..configfiles import FileProblem, load_files, locate_files, read_text
from .common import EXIT_USAGE, Subcommands, add_file_options

__all__ = ["add_parser", "lockgate_command", "run"]

_LABELS = {"claude-desktop": "Claude Desktop", "claude-code": "Claude Code", "cursor": "Cursor", "vscode": "VS Code"}


def add_parser(commands: Subcommands) -> None:
    parser = commands.add_parser(
        "client-config",
        help="print (or --write) the entry that connects an MCP client to Lockgate",
        description=(
            "Print the entry that starts Lockgate (stdio) or reaches it (--http URL) in the client's "
            "own JSON format, with absolute paths to lockgate, the configuration files (--config and "
            "--rules, else the ones 'lockgate serve' would find here) and the audit log. With --write, "
            "merge it into the client's file (Claude Desktop: its claude_desktop_config.json; "
            "Claude Code: ./.mcp.json; Cursor: ./.cursor/mcp.json; VS Code: ./.vscode/mcp.json) "
            "after copying that file to FILE.bak (FILE.bak.1, ...); every other entry and key stays."
        ),
    )
    parser.add_argument("client", choices=CLIENTS, help="the client whose format to print")
    parser.add_argument("--http", metavar="URL", help="a gateway served over Streamable HTTP at URL (http://host:port/mcp)")
    add_file_options(parser)
    parser.add_argument("--agent", metavar="ID", default="default", help="GATEWAY_DEFAULT_AGENT: who calls without agent_id act as (default: default)")
    parser.add_argument("--audit-log", metavar="FILE", help="GATEWAY_AUDIT_LOG (default: logs/audit.jsonl beside the servers file)")
    parser.add_argument("--write", action="store_true", help="merge the entry into the client's file, after a backup")
    parser.add_argument("--file", metavar="FILE", help="the client file --write changes, instead of the usual one")
    parser.add_argument("--home", metavar="DIR", help="home directory for Claude Desktop's file (default: $HOME)")


def run(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    from lockgate.core import ConfigError, settings_from_env

    try:
        settings_from_env({"GATEWAY_DEFAULT_AGENT": args.agent})
    except ConfigError as exc:
        print(f"lockgate: error: --agent: {exc.problems[0].message}", file=sys.stderr)
        return EXIT_USAGE
    target = os.path.abspath(args.file) if args.file else _client_file(args.client, home_dir(environ, args.home), environ)
    if args.http:
        entry = _http_entry(args, environ)
        if entry is None:
            return EXIT_USAGE
        servers_file = _servers_file_or_none(args, environ)
    else:
        files = locate_files(args.config, args.rules, environ)  # FileProblem: exit 2 in main
        servers_file = os.path.abspath(files.servers)
        if _lists_lockgate(servers_file):
            print(
                f"lockgate: error: {files.servers} lists Lockgate itself, so it is a client's file, not "
                "Lockgate's servers file (Lockgate would start itself): name Lockgate's with --config",
                file=sys.stderr,
            )
            return EXIT_USAGE
        entry = stdio_entry(args.client, servers_file, os.path.abspath(files.rules), args.agent, args.audit_log)
        _check(servers_file, os.path.abspath(files.rules), {**environ, **entry["env"]})
    top_key = "servers" if args.client == "vscode" else "mcpServers"
    clash = servers_file is not None and os.path.exists(target) and os.path.samefile(target, servers_file)
    if args.write:
        if clash:
            print(
                f"lockgate: error: {target} is Lockgate's own servers file; adding Lockgate to it would make "
                "Lockgate start itself. Keep the servers in another file (lockgate init DIR)",
                file=sys.stderr,
            )
            return EXIT_USAGE
        backup, replaced = add_entry(target, top_key, LOCKGATE_NAME, entry)
        print(f"{'Replaced' if replaced else 'Added'} {top_key}.{LOCKGATE_NAME} in {target}")
        print(f"  backup: {backup}" if backup else "  (a new file)")
        print(f"  restart {_LABELS[args.client]} (or reload its MCP servers) to connect.")
        return 0
    sys.stdout.write(json.dumps({top_key: {LOCKGATE_NAME: entry}}, indent=2) + "\n")
    _notes(args.client, target, entry, clash)
    return 0


def lockgate_command() -> tuple[str, list[str]]:
    """The running Lockgate as an absolute command and leading arguments.

    The script beside this interpreter (a virtual environment's ``bin``) is
    the one running; else ``lockgate`` on ``PATH``; else this interpreter
    with ``-m lockgate.shells``. Symlinks are kept: a venv's interpreter is a
    link whose target lacks the venv's packages.
    """
    beside = os.path.join(os.path.dirname(sys.executable), "lockgate")
    if os.path.isfile(beside) and os.access(beside, os.X_OK):
        return os.path.abspath(beside), []
    found = shutil.which("lockgate")
    if found:
        return os.path.abspath(found), []
    return os.path.abspath(sys.executable), ["-m", "lockgate.shells"]


def stdio_entry(client: str, servers: str, rules: str, agent: str, audit_log: str | None) -> dict[str, Any]:
    """The entry that starts ``lockgate serve`` over stdio, every path absolute."""
    command, leading = lockgate_command()
    audit = os.path.abspath(audit_log) if audit_log else os.path.join(os.path.dirname(servers), "logs", "audit.jsonl")
    entry: dict[str, Any] = {"type": "stdio"} if client == "vscode" else {}
    entry["command"] = command
    entry["args"] = [*leading, "serve", "--config", servers, "--rules", rules]
    entry["env"] = {"GATEWAY_DEFAULT_AGENT": agent, "GATEWAY_AUDIT_LOG": audit}
    return entry


def _http_entry(args: argparse.Namespace, environ: Mapping[str, str]) -> dict[str, Any] | None:
    """The remote entry for ``--http URL``, or ``None`` after an error."""
    url: str = args.http
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        print(f"lockgate: error: --http: {url!r} is not an http:// or https:// URL with a host", file=sys.stderr)
        return None
    if args.client == "claude-desktop":
        print(
            "lockgate: error: claude_desktop_config.json has no remote (URL) entries: Claude Desktop starts "
            "its servers as programs. Leave out --http for an entry that starts Lockgate over stdio, or add "
            "the URL under Settings > Connectors (reachable from the internet, over https)",
            file=sys.stderr,
        )
        return None
    print(
        f"# The gateway at {url} runs on its own, for example:\n"
        f"#   GATEWAY_DEFAULT_AGENT={args.agent} lockgate serve --transport http "
        f"--host {parts.hostname} --port {parts.port or (443 if parts.scheme == 'https' else 80)} "
        "--config /abs/path/.mcp.json --rules /abs/path/.mcp-gateway-rules.json",
        file=sys.stderr,
    )
    return {"url": url} if args.client == "cursor" else {"type": "http", "url": url}


def _client_file(client: str, home: str, environ: Mapping[str, str]) -> str:
    """The file ``--write`` changes by default: Claude Desktop's own, or the project's (the working directory)."""
    if client == "claude-desktop":
        return claude_desktop_file(home, environ)
    return os.path.abspath({"claude-code": ".mcp.json", "cursor": ".cursor/mcp.json", "vscode": ".vscode/mcp.json"}[client])


def _servers_file_or_none(args: argparse.Namespace, environ: Mapping[str, str]) -> str | None:
    """Lockgate's servers file when one is found here, so that ``--write`` never adds Lockgate to it."""
    try:
        return os.path.abspath(locate_files(args.config, args.rules, environ).servers)
    except FileProblem:
        return None


def _lists_lockgate(servers: str) -> bool:
    """Whether a would-be servers file has an entry that starts Lockgate (Claude Code's ./.mcp.json, found first)."""
    try:
        entries = json.loads(read_text(servers)).get("mcpServers")
    except (FileProblem, ValueError, AttributeError):
        return False  # not readable as such: _check reports it
    return isinstance(entries, dict) and any(
        isinstance(entry, dict) and is_lockgate(str(name), entry) for name, entry in entries.items()
    )


def _check(servers: str, rules: str, environ: Mapping[str, str]) -> None:
    """Warn on stderr when the configuration would not start, or names no such agent: the client only shows a failure."""
    from lockgate.core import ConfigError

    from ..configfiles import ConfigFiles

    files = f"--config {shlex.quote(servers)} --rules {shlex.quote(rules)}"
    try:
        config = load_files(ConfigFiles(servers=servers, rules=rules), environ)
    except ConfigError as exc:
        print(f"lockgate: warning: the configuration is not valid ({exc.problems[0]}); see lockgate validate {files}", file=sys.stderr)
        return
    for warning in config.warnings:
        print(f"lockgate: warning: {warning}", file=sys.stderr)


def _notes(client: str, target: str, entry: Mapping[str, Any], clash: bool) -> None:
    """Where the printed entry goes, on stderr, so that stdout stays one JSON document."""
    label = _LABELS[client]
    if clash:
        print(
            f"# Not into {target}: it is Lockgate's own servers file, so {label} would start those servers\n"
            "# directly, and Lockgate itself once this entry is in. Keep Lockgate's files in another folder\n"
            "# (lockgate init DIR), or use another client file.",
            file=sys.stderr,
        )
    else:
        print(f"# Merge it into {target} (or run this again with --write), then restart {label}.", file=sys.stderr)
    if client == "claude-code":
        line = json.dumps(entry, separators=(",", ":"))
        print(
            "# Or register it with the claude CLI (-s project: ./.mcp.json, shared; -s user: every project;\n"
            "# no -s: this project, only you):\n"
            # -s project writes ./.mcp.json, which must not be Lockgate's own servers file.
            f"claude mcp add-json -s {'user' if clash else 'project'} {LOCKGATE_NAME} {shlex.quote(line)}",
            file=sys.stderr,
        )
