"""``lockgate schema``: print the JSON Schema of the servers file or of the rules file.

The schema is :func:`lockgate.core.config_schema`'s, generated from the types
that validate the files; point an editor at it for completion and typo
marks. Exit status 0; 2 for a usage error.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping

from .common import Subcommands

__all__ = ["add_parser", "run"]


def add_parser(commands: Subcommands) -> None:
    schema = commands.add_parser(
        "schema",
        help="print the JSON Schema of the servers file or the rules file",
        description=(
            "Print the JSON Schema (draft 2020-12) of the servers file (.mcp.json "
            "shape) or of the rules file, for an editor's completion and checks. "
            "The same documents ship in the package under lockgate/core/schemas/."
        ),
    )
    schema.add_argument("kind", choices=["servers", "rules"], help="which file's schema")


def run(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    from lockgate.core import config_schema

    sys.stdout.write(json.dumps(config_schema(args.kind), indent=2) + "\n")
    return 0
