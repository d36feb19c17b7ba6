"""Refuse a servers file that starts this same gateway with this same servers file.

A client's ``.mcp.json`` often lists Lockgate itself; pointed at that file,
Lockgate would start a copy of itself, which would start another, without end.
:func:`self_references` finds such entries before anything starts.

An entry starts this gateway when its command resolves to the ``lockgate``
script that is running, or to a Python running ``-m lockgate.shells``; it uses
this servers file when its ``--config`` (or ``GATEWAY_MCP_CONFIG``, or the
default ``./.mcp.json`` in its working directory) is the same file.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Mapping, Sequence

from lockgate.core import Config, Problem, ServerSpec

from .child_process import child_environment, resolve_command
from .configfiles import SERVERS_DEFAULTS, SERVERS_VARIABLE

__all__ = ["self_reference_problems", "self_references"]

_MODULES = ("lockgate.shells", "lockgate.shells.cli")


def self_references(config: Config, servers_file: str, environ: Mapping[str, str]) -> list[str]:
    """One message per entry of ``config`` that would start this gateway on ``servers_file``; empty when none."""
    return [str(problem) for problem in self_reference_problems(config, servers_file, environ)]


def self_reference_problems(config: Config, servers_file: str, environ: Mapping[str, str]) -> list[Problem]:
    """:func:`self_references` as located problems, for a reload to refuse the configuration with."""
    found = []
    for name, server in config.servers.items():
        for path, spec in _specs(name, server):
            if _starts_this_gateway(spec, environ) and _same_file(_servers_file_of(spec, environ), servers_file):
                found.append(
                    Problem(
                        file=servers_file,
                        path=path,
                        message=(
                            "this entry starts Lockgate itself with this same servers file, which would start "
                            "itself again without end; remove the entry, or give Lockgate a servers file of its "
                            "own (--config)"
                        ),
                    )
                )
    return found


def _specs(name: str, server: ServerSpec) -> Iterator[tuple[str, ServerSpec]]:
    if not server.instances:
        yield f"mcpServers.{name}", server
    for index, instance in enumerate(server.instances):
        yield f"mcpServers.{name}.instances[{index}]", instance.spec


def _starts_this_gateway(spec: ServerSpec, environ: Mapping[str, str]) -> bool:
    if spec.transport != "stdio" or not spec.command:
        return False
    path = child_environment(environ, spec.env).get("PATH", os.defpath)
    resolved = resolve_command(spec.command, path=path, cwd=spec.cwd)
    if resolved is None:
        return False
    if _same_file(resolved, sys.argv[0]) or os.path.basename(resolved) == "lockgate":
        return "serve" in spec.args
    # python -m lockgate.shells serve ...
    args = list(spec.args)
    return "-m" in args[:-1] and args[args.index("-m") + 1] in _MODULES and "serve" in args


def _servers_file_of(spec: ServerSpec, environ: Mapping[str, str]) -> str | None:
    """The servers file the entry's gateway would read, as a path from here; ``None`` if it names none that exists."""
    cwd = spec.cwd or os.getcwd()
    given = _option(spec.args, "--config") or spec.env.get(SERVERS_VARIABLE) or environ.get(SERVERS_VARIABLE)
    candidates: Sequence[str] = (given,) if given else SERVERS_DEFAULTS
    for candidate in candidates:
        path = os.path.join(cwd, candidate)
        if os.path.isfile(path):
            return path
    return None


def _option(args: Sequence[str], name: str) -> str | None:
    for index, arg in enumerate(args):
        if arg == name and index + 1 < len(args):
            return args[index + 1]
        if arg.startswith(name + "="):
            return arg[len(name) + 1 :]
    return None


def _same_file(a: str | None, b: str) -> bool:
    try:
        return a is not None and os.path.samefile(a, b)
    except OSError:
        return False
