"""A stdio downstream's child process: what it inherits, how its command is found, how its end is told.

The inherited environment matches the Python SDK's ``get_default_environment``
on POSIX, plus locale and TMPDIR. Exit reasons may reach clients: they never
hold a host path, a secret or a traceback.
"""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Mapping

__all__ = ["INHERITED_ENVIRONMENT", "child_environment", "describe_exit", "open_pidfd", "resolve_command"]

INHERITED_ENVIRONMENT = ("HOME", "LOGNAME", "PATH", "SHELL", "TERM", "USER", "LANG", "LC_ALL", "TMPDIR")


def child_environment(environ: Mapping[str, str], overrides: Mapping[str, str]) -> dict[str, str]:
    """The safe subset of ``environ`` a child inherits, overlaid with the server's ``env``."""
    env: dict[str, str] = {}
    for key in INHERITED_ENVIRONMENT:
        value = environ.get(key)
        # A value starting with "()" is an exported shell function: never pass it on.
        if value is not None and not value.startswith("()"):
            env[key] = value
    env.update(overrides)
    return env


def resolve_command(command: str, *, path: str, cwd: str | None) -> str | None:
    """The absolute path that would run for ``command``, or ``None`` when there is none.

    A name with a slash is taken relative to ``cwd`` (as exec would after the
    child changes directory); a bare name is searched on ``path``.
    """
    if os.sep in command or (os.altsep is not None and os.altsep in command):
        candidate = os.path.abspath(os.path.join(cwd or os.curdir, command))
        return candidate if os.path.isfile(candidate) else None
    found = shutil.which(command, path=path)
    return os.path.abspath(found) if found is not None else None


def describe_exit(returncode: int | None) -> str:
    """``"exited with code 1"`` or ``"killed by signal SIGKILL"``."""
    if returncode is None:
        return "exited"
    if returncode >= 0:
        return f"exited with code {returncode}"
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        name = str(-returncode)
    return f"killed by signal {name}"


def open_pidfd(pid: int) -> int | None:
    """A pidfd for ``pid`` (readable once it exits, see ``StdioDownstream``), or ``None`` where there is none."""
    pidfd_open = getattr(os, "pidfd_open", None)
    if pidfd_open is None:
        return None
    try:
        fd: int = pidfd_open(pid)
    except OSError:
        return None
    return fd
