"""``lockgate validate``: check both configuration files and report every problem.

Exit status 0 when both files are valid, 1 when not (or missing).
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..configfiles import FileProblem, locate_files, read_text
from .common import EXIT_FAILED, Subcommands, add_file_options, add_json_option, count, print_json

if TYPE_CHECKING:
    from lockgate.core import Config, Problem

__all__ = ["add_parser", "run"]


def add_parser(commands: Subcommands) -> None:
    validate = commands.add_parser(
        "validate",
        help="check both configuration files and report every problem",
        description=(
            "Validate the server configuration, the rules file and the GATEWAY_* "
            "variables without starting anything. Every error is reported with "
            "its file and JSON path, followed by the warnings. Exit status 0 "
            "when valid, 1 when not."
        ),
    )
    add_file_options(validate)
    add_json_option(validate)


def run(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    from lockgate.core import ConfigError, load_config, Problem, problem_json

    report: dict[str, Any] = {"valid": False, "servers_file": None, "rules_file": None}
    errors: list[Problem] = []
    warnings: tuple[Problem, ...] = ()
    config: Config | None = None
    missing = False
    try:
        files = locate_files(args.config, args.rules, environ)
        report["servers_file"], report["rules_file"] = files.servers, files.rules
        texts = (read_text(files.servers), read_text(files.rules))
    except FileProblem as exc:
        # Its message names the file already, so text output shows it alone.
        errors.append(Problem(file=exc.path or "", path="", message=str(exc)))
        missing = True
    else:
        try:
            config = load_config(
                servers=texts[0], servers_file=files.servers, rules=texts[1], rules_file=files.rules,
                environ=environ,
            )
        except ConfigError as exc:
            errors, warnings = exc.problems, exc.warnings
        else:
            warnings = config.warnings
            report["valid"] = True
            report["servers"] = list(config.servers)
            report["agents"] = sorted(config.policy.agents)
    report["errors"] = [problem_json(p) for p in errors]
    report["warnings"] = [problem_json(p) for p in warnings]
    if args.json:
        print_json(report)
    else:
        for problem in errors:
            print(f"error: {problem.message if missing else problem}")
        for warning in warnings:
            print(f"warning: {warning}")
        if config is not None:
            print(
                f"valid: {report['servers_file']} ({count(len(config.servers), 'server')}), "
                f"{report['rules_file']} ({count(len(config.policy.agents), 'agent')}), "
                f"{count(len(warnings), 'warning')}"
            )
        else:
            print(f"invalid: {count(len(errors), 'error')}, {count(len(warnings), 'warning')}")
    return 0 if report["valid"] else EXIT_FAILED
