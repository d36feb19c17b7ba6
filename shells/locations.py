"""Where Lockgate keeps its state: the state folder, and the database users, keys and registrations live in.

Apart from :mod:`.store`, which brings the database libraries: a command
that only needs to know where the database would be (and whether there is
one) should not wait for them to load.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

__all__ = ["DATABASE_VARIABLE", "DEFAULT_FILE", "STATE_VARIABLE", "database_url", "state_dir"]

DATABASE_VARIABLE = "GATEWAY_DATABASE_URL"
STATE_VARIABLE = "GATEWAY_STATE_DIR"
DEFAULT_FILE = "lockgate.db"


def state_dir(environ: Mapping[str, str]) -> str:
    """The gateway's state folder: ``GATEWAY_STATE_DIR``, else ``$XDG_STATE_HOME/lockgate``, else ``~/.local/state/lockgate``.

    A relative ``XDG_STATE_HOME`` is ignored, as the XDG base directory
    specification says. Nothing is created here.
    """
    given = environ.get(STATE_VARIABLE, "").strip()
    if given:
        return os.path.abspath(os.path.expanduser(given))
    xdg = environ.get("XDG_STATE_HOME", "").strip()
    if xdg and os.path.isabs(xdg):
        return os.path.join(xdg, "lockgate")
    home = environ.get("HOME") or os.path.expanduser("~")
    return os.path.join(home, ".local", "state", "lockgate")


def database_url(flag: str | None, environ: Mapping[str, str]) -> str:
    """The database to use: the ``--database`` flag, else ``GATEWAY_DATABASE_URL``, else the default SQLite file."""
    for given in (flag, environ.get(DATABASE_VARIABLE)):
        if given and given.strip():
            return given.strip()
    return f"sqlite:///{os.path.join(state_dir(environ), DEFAULT_FILE)}"
