"""What the ``lockgate`` commands share: the file options, loading the configuration, printing."""

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
    "count",
    "load",
    "package_version",
    "print_config_error",
    "print_json",
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


def setup_command_logging(settings: Settings) -> logging.Logger:
    return setup_logging(debug=settings.debug, level=settings.log_level, log_format=settings.log_format)


def print_config_error(exc: ConfigError) -> None:
    for problem in exc.problems:
        print(f"lockgate: error: {problem}", file=sys.stderr)
    for warning in exc.warnings:
        print(f"lockgate: warning: {warning}", file=sys.stderr)


def load(args: argparse.Namespace, environ: Mapping[str, str]) -> Config | None:
    """Locate, read and validate both files for explain and check; ``None`` after printing errors."""
    from lockgate.core import ConfigError

    try:
        config = load_files(locate_files(args.config, args.rules, environ), environ)
    except ConfigError as exc:
        print_config_error(exc)
        return None
    setup_command_logging(config.settings)
    return config


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False))


def table(rows: list[list[str]]) -> list[str]:
    """Left-aligned columns, two spaces apart."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]


def count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"
