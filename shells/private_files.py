"""Secrets Lockgate makes once and keeps in a file only their owner may use (in the state folder).

The token signing secret (:mod:`.auth.tokens`) and the key that seals OAuth
tokens (:mod:`.sealed`) are kept this way. :func:`read_or_make` reads such a
file, refusing one that other users may use, and makes it when it is
missing: written aside (mode 0600, in a folder made 0700), then linked into
place, so gateways starting together agree. The file appears whole or not
at all, and the first one wins.
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Callable

__all__ = ["PrivateFileError", "read_or_make"]

#: The most a secret file holds; anything longer is not one of ours.
_MAX_BYTES = 1024


class PrivateFileError(Exception):
    """The file cannot be read or made, or users other than its owner may use it; the message says how to fix it."""


def read_or_make(path: str, what: str, make: Callable[[], bytes]) -> bytes:
    """The text kept in ``path``, stripped; made from ``make()`` first when the file does not exist.

    ``what`` names the secret in messages (``"the token signing secret"``).
    What the text must be is the caller's to check.

    Raises:
        PrivateFileError: see the class; never quotes the file's contents.
    """
    try:
        for _ in range(2):
            try:
                return _read(path, what)
            except FileNotFoundError:
                _make(path, make())
    except OSError as exc:
        raise PrivateFileError(f"cannot keep {what} in {path}: {exc.strerror or type(exc).__name__}") from None
    raise PrivateFileError(f"cannot keep {what} in {path}: it vanished as it was made")  # pragma: no cover


def _read(path: str, what: str) -> bytes:
    with open(path, "rb") as file:
        mode = os.fstat(file.fileno()).st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise PrivateFileError(
                f"{path} holds {what}, but users other than its owner may use it "
                f"(mode {stat.S_IMODE(mode):04o}); run: chmod 600 {path}"
            )
        return file.read(_MAX_BYTES).strip()


def _make(path: str, text: bytes) -> None:
    folder = os.path.dirname(path) or "."
    os.makedirs(folder, mode=0o700, exist_ok=True)
    descriptor, aside = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.")  # mode 0600
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        try:
            # A link never replaces an existing file: the first gateway's secret stays.
            os.link(aside, path)
        except FileExistsError:
            pass
    finally:
        os.unlink(aside)
