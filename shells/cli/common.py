"""What the ``lockgate`` commands share: the file options, loading the configuration, printing.

The configuration a command checks is the one ``lockgate serve`` would run:
the files', with the instances registered at run time (the live registry,
:mod:`..registry`) merged in, unless ``--no-registry`` leaves them out.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any, TypeAlias

from ..configfiles import RULES_DEFAULTS, RULES_VARIABLE, SERVERS_DEFAULTS, SERVERS_VARIABLE, load_files, locate_files
from ..logs import setup_logging

if TYPE_CHECKING:
    import logging

    from lockgate.core import Config, ConfigError, Settings

__all__ = [
    "EXIT_FAILED",
    "EXIT_USAGE",
    "Subcommands",
    "add_file_options",
    "add_json_option",
    "add_registry_option",
    "count",
    "load",
    "merge_registry",
    "package_version",
    "print_config_error",
    "print_json",
    "registered_instances",
    "setup_command_logging",
    "table",
]

EXIT_USAGE = 2
EXIT_FAILED = 1

Subcommands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
"""Where each command module adds its parser."""


def package_version() -> str:
    try:
        return version("lockgate")
    except PackageNotFoundError:
        return "unknown"


def add_file_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        metavar="FILE",
        help=(
            f"server configuration in the .mcp.json shape; default: ${SERVERS_VARIABLE}, "
            f"else {' then '.join(SERVERS_DEFAULTS)}"
        ),
    )
    parser.add_argument(
        "--rules",
        metavar="FILE",
        help=(
            f"access rules (.mcp-gateway-rules.json); default: ${RULES_VARIABLE}, "
            f"else {' then '.join(RULES_DEFAULTS)}"
        ),
    )


def add_json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON document on stdout instead of text")


def add_registry_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--no-registry",
        action="store_true",
        help=(
            "leave out the instances registered at run time (POST /gateway/register, lockgate register), "
            "which are otherwise read from the database (GATEWAY_DATABASE_URL, else the SQLite file in the "
            "state folder) and merged in, as lockgate serve does"
        ),
    )


def merge_registry(config: Config, environ: Mapping[str, str]) -> Config:
    """``config`` (the files') with the registered instances merged in, as ``lockgate serve`` would run it.

    Each registration that cannot be merged is a warning of file
    ``registry`` in the result's ``warnings``. So is a database that cannot
    be read, and then the files' configuration is returned as it is. No
    database is created or upgraded.
    """
    import dataclasses

    from lockgate.core import REGISTRY, Problem, merge_registrations

    from ..registry import read_registrations, registry_store_url

    try:
        registrations = read_registrations(registry_store_url(environ))
    except Exception as exc:
        # Imported only now: the database libraries take longer to load than a check without a database takes.
        from ..store import StoreError

        if not isinstance(exc, StoreError):
            raise
        unread = Problem(file=REGISTRY, path="", message=f"cannot read the registered instances: {exc}; the files alone are used")
        return dataclasses.replace(config, warnings=(*config.warnings, unread))
    merged, _ = merge_registrations(config, registrations)
    return merged


def registered_instances(config: Config) -> dict[str, list[str]]:
    """Each server that has registered instances, and their ids, in the configuration's order."""
    found: dict[str, list[str]] = {}
    for name, spec in config.servers.items():
        ids = [instance.id for instance in spec.launch_specs() if instance.source == "registry"]
        if ids:
            found[name] = ids
    return found


def setup_command_logging(settings: Settings) -> logging.Logger:
    return setup_logging(debug=settings.debug, level=settings.log_level, log_format=settings.log_format)


def print_config_error(exc: ConfigError) -> None:
    for problem in exc.problems:
        print(f"lockgate: error: {problem}", file=sys.stderr)
    for warning in exc.warnings:
        print(f"lockgate: warning: {warning}", file=sys.stderr)


def load(args: argparse.Namespace, environ: Mapping[str, str]) -> Config | None:
    """Locate, read and validate both files for explain and check, and merge the registry in unless
    ``--no-registry``; ``None`` after printing errors. The registry's warnings go to stderr."""
    from lockgate.core import REGISTRY, ConfigError

    try:
        config = load_files(locate_files(args.config, args.rules, environ), environ)
    except ConfigError as exc:
        print_config_error(exc)
        return None
    setup_command_logging(config.settings)
    if not args.no_registry:
        config = merge_registry(config, environ)
        for warning in config.warnings:
            if warning.file == REGISTRY:
                print(f"lockgate: warning: {warning}", file=sys.stderr)
    return config


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False))


def table(rows: list[list[str]]) -> list[str]:
    """Left-aligned columns, two spaces apart."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]


def count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"
