"""``lockgate validate``: check both configuration files and report every problem.

Exit status 0 when both files are valid, 1 when not (or missing). With
``--strict`` (or ``GATEWAY_STRICT``), as ``lockgate serve`` with
``GATEWAY_STRICT``, a warning counts as an error, and the report says which
errors were warnings.

Valid files are then merged with the live registry (unless
``--no-registry``), as ``lockgate serve`` merges them: a registration that
cannot be merged, or a database that cannot be read, is a warning of file
``registry``, never an error, since the gateway serves the rest regardless.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..configfiles import FileProblem, locate_files, read_text
from .common import (
    EXIT_FAILED,
    Subcommands,
    add_file_options,
    add_json_option,
    add_registry_option,
    count,
    merge_registry,
    print_json,
    registered_instances,
)

if TYPE_CHECKING:
    from lockgate.core import Config, Problem, Settings

__all__ = ["add_parser", "run"]


def add_parser(commands: Subcommands) -> None:
    validate = commands.add_parser(
        "validate",
        help="check both configuration files and report every problem",
        description=(
            "Validate the server configuration, the rules file and the GATEWAY_* "
            "variables without starting anything. Every error is reported with "
            "its file and JSON path, followed by the warnings. With --strict "
            "(or GATEWAY_STRICT=true) every warning is an error. The instances "
            "registered at run time are merged in as lockgate serve does, unless "
            "--no-registry. Exit status 0 when valid, 1 when not."
        ),
    )
    add_file_options(validate)
    add_registry_option(validate)
    validate.add_argument(
        "--strict",
        action="store_true",
        help="count every warning as an error, as lockgate serve does with GATEWAY_STRICT=true",
    )
    add_json_option(validate)


def run(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    from lockgate.core import ConfigError, load_config, Problem, problem_json

    from ..selfref import self_reference_problems

    report: dict[str, Any] = {"valid": False, "servers_file": None, "rules_file": None}
    errors: list[Problem] = []
    warnings: tuple[Problem, ...] = ()
    promoted: tuple[Problem, ...] = ()
    config: Config | None = None
    in_files = 0  # servers the servers file configures, without those only the registry adds
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
                environ=environ, settings=_strict_settings(environ) if args.strict else None, base_dir=files.folder,
            )
        except ConfigError as exc:
            errors, warnings, promoted = exc.problems, exc.warnings, exc.promoted
        else:
            warnings = config.warnings
            # serve refuses such a file, so validate does not call it valid.
            errors = self_reference_problems(config, files.servers, environ)
            if errors:
                config = None
            else:
                in_files = len(config.servers)
                if not args.no_registry:
                    config = merge_registry(config, environ)
                warnings = config.warnings
                report["valid"] = True
                report["servers"] = list(config.servers)
                report["agents"] = sorted(config.policy.agents)
                report["registered"] = registered_instances(config)
    # Strict mode is on from the flag, or else from GATEWAY_STRICT.
    strictly = "--strict" if args.strict else "GATEWAY_STRICT"
    report["errors"] = [{**problem_json(p), **({"strict": True} if p in promoted else {})} for p in errors]
    report["warnings"] = [problem_json(p) for p in warnings]
    if args.json:
        print_json(report)
    else:
        for problem in errors:
            print(f"error: {problem.message if missing else problem}")
        for warning in warnings:
            print(f"warning: {warning}")
        if config is not None:
            registered = report["registered"]
            if registered:
                instances = "; ".join(f"{server}: {', '.join(ids)}" for server, ids in registered.items())
                print(f"registry: {count(sum(map(len, registered.values())), 'instance')} ({instances})")
            print(
                f"valid: {report['servers_file']} ({count(in_files, 'server')}), "
                f"{report['rules_file']} ({count(len(config.policy.agents), 'agent')}), "
                f"{count(len(warnings), 'warning')}"
            )
        elif promoted:
            print(
                f"invalid: {count(len(errors) - len(promoted), 'error')}, "
                f"{count(len(promoted), 'warning')} made {'an error' if len(promoted) == 1 else 'errors'} by {strictly}"
            )
        else:
            print(f"invalid: {count(len(errors), 'error')}, {count(len(warnings), 'warning')}")
    return 0 if report["valid"] else EXIT_FAILED


def _strict_settings(environ: Mapping[str, str]) -> Settings | None:
    """The settings from the variables, in strict mode; ``None`` when a variable is wrong.

    ``load_config`` then reads the variables itself and reports what is
    wrong with them: the configuration is invalid either way.
    """
    from lockgate.core import ConfigError, settings_from_env

    try:
        return dataclasses.replace(settings_from_env(environ), strict=True)
    except ConfigError:
        return None
