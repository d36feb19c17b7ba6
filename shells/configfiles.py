"""Finding and reading the two configuration files.

The core parses and validates (:func:`lockgate.core.load_config`);
this module does the file system part for every command and for the reload
watcher: which files to use (flag, variable, default locations) and reading
them as UTF-8 text. A file that cannot be found or read is a
:class:`FileProblem`, one line for the operator.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from lockgate.core import Config, Settings, load_config

__all__ = [
    "RULES_DEFAULTS",
    "RULES_VARIABLE",
    "SERVERS_DEFAULTS",
    "SERVERS_VARIABLE",
    "ConfigFiles",
    "FileProblem",
    "load_files",
    "locate",
    "locate_files",
    "read_text",
]

SERVERS_VARIABLE = "GATEWAY_MCP_CONFIG"
RULES_VARIABLE = "GATEWAY_RULES"
SERVERS_DEFAULTS = ("./.mcp.json", "./config/.mcp.json")
RULES_DEFAULTS = ("./.mcp-gateway-rules.json", "./config/.mcp-gateway-rules.json")


class FileProblem(Exception):
    """A configuration file is missing or unreadable; ``str()`` says which and why.

    ``path`` is the file concerned, or ``None`` when none was found at all.
    """

    def __init__(self, message: str, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


@dataclass(frozen=True, slots=True)
class ConfigFiles:
    """The servers file and the rules file in use, as the operator named them."""

    servers: str
    rules: str

    @property
    def folder(self) -> str:
        """The servers file's folder, absolute: what relative paths in it are resolved against."""
        return os.path.dirname(os.path.abspath(self.servers))


def locate(
    flag: str | None,
    flag_name: str,
    variable: str,
    defaults: Sequence[str],
    environ: Mapping[str, str],
    what: str,
) -> str:
    """The file to read: the flag, else the variable, else the first default that exists.

    Raises:
        FileProblem: naming what was looked for.
    """
    for given, source in ((flag, flag_name), (environ.get(variable), variable)):
        if given:
            if os.path.isdir(given):
                raise FileProblem(f"{what} is a directory, not a file: {given} (from {source})", given)
            if not os.path.isfile(given):
                raise FileProblem(f"{what} not found: {given} (from {source})", given)
            return given
    for candidate in defaults:
        if os.path.isfile(candidate):
            return candidate
    raise FileProblem(
        f"no {what} found: looked for {' and '.join(defaults)} (use {flag_name} FILE or set {variable})"
    )


def locate_files(config: str | None, rules: str | None, environ: Mapping[str, str]) -> ConfigFiles:
    """Both files, from ``--config`` and ``--rules`` (or ``None``), the variables and defaults.

    Raises:
        FileProblem: for the first file not found.
    """
    return ConfigFiles(
        servers=locate(config, "--config", SERVERS_VARIABLE, SERVERS_DEFAULTS, environ, "server configuration"),
        rules=locate(rules, "--rules", RULES_VARIABLE, RULES_DEFAULTS, environ, "rules file"),
    )


def read_text(path: str) -> str:
    """The whole file as UTF-8 text.

    Raises:
        FileProblem: it cannot be read, or is not UTF-8.
    """
    try:
        with open(path, encoding="utf-8") as file:
            return file.read()
    except UnicodeDecodeError:
        raise FileProblem(f"{path}: not UTF-8 text", path) from None
    except OSError as exc:
        raise FileProblem(f"cannot read {path}: {exc.strerror or type(exc).__name__}", path) from None


def load_files(files: ConfigFiles, environ: Mapping[str, str], settings: Settings | None = None) -> Config:
    """Read both files and validate them into a :class:`Config`.

    Raises:
        FileProblem: a file cannot be read.
        lockgate.core.ConfigError: the files are invalid (every problem).
    """
    return load_config(
        servers=read_text(files.servers),
        servers_file=files.servers,
        rules=read_text(files.rules),
        rules_file=files.rules,
        environ=environ,
        settings=settings,
        base_dir=files.folder,
    )
