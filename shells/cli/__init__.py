"""The ``lockgate`` command: serve (stdio or Streamable HTTP), validate, explain, check, schema, init,
client-config, user, key, login and db for the identity database, auth for the OAuth tokens held for
downstream servers, pin for the tool definitions pinned, and register, deregister, registry and stats for a running gateway.

Each command is a module of this package with ``add_parser`` (its options)
and ``run`` (what it does, returning the exit status): :mod:`.serve`,
:mod:`.validate`, :mod:`.explain`, :mod:`.check`, :mod:`.schema`, :mod:`.init`,
:mod:`.client_config`, :mod:`.user`, :mod:`.key`, :mod:`.login`, :mod:`.db`, :mod:`.auth` and :mod:`.pin`, and
:mod:`.remote` for the four commands against a running gateway (one object each); :mod:`.common`
holds what they share (and :mod:`.db` what the three database commands share). Each module's docstring gives its exit statuses; in short,
0 is success, 1 a failed check, 2 a usage or configuration error.

Errors are one line each on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Protocol

from ..configfiles import FileProblem
from . import auth, check, client_config, db, explain, init, key, login, pin, remote, schema, serve, user, validate
from .common import EXIT_USAGE, Subcommands, package_version

__all__ = ["build_parser", "main"]


class _Command(Protocol):
    """What each command module offers."""

    def add_parser(self, commands: Subcommands) -> None: ...

    def run(self, args: argparse.Namespace, environ: Mapping[str, str]) -> int: ...


#: Each command's module, in the order ``--help`` lists them.
_COMMANDS: dict[str, _Command] = {
    "serve": serve,
    "validate": validate,
    "explain": explain,
    "check": check,
    "schema": schema,
    "init": init,
    "client-config": client_config,
    "user": user,
    "key": key,
    "login": login,
    "db": db,
    "auth": auth,
    "pin": pin,
    "register": remote.register,
    "deregister": remote.deregister,
    "registry": remote.registry,
    "stats": remote.stats,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lockgate",
        description=(
            "An MCP gateway: one endpoint in front of many MCP servers, with "
            "on-demand tool discovery and per-agent access control."
        ),
    )
    parser.add_argument("--version", action="version", version=f"lockgate {package_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in _COMMANDS.values():
        module.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version and usage errors
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else EXIT_USAGE)
    command = _COMMANDS.get(args.command)
    if command is None:
        parser.print_usage(sys.stderr)
        print("lockgate: error: a command is required (try: lockgate --help)", file=sys.stderr)
        return EXIT_USAGE
    try:
        return command.run(args, os.environ)
    except FileProblem as exc:
        print(f"lockgate: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
