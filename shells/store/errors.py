"""What the store raises: one line each for the operator, never a secret or a traceback."""

from __future__ import annotations

__all__ = ["Conflict", "DatabaseUnavailable", "InvalidInput", "NotFound", "SchemaProblem", "StoreError"]


class StoreError(Exception):
    """Something the store refused or could not do; ``str()`` is one line for the operator."""


class DatabaseUnavailable(StoreError):
    """The database cannot be opened or reached (it names which, never with a password).

    Raised at :meth:`~lockgate.shells.store.Store.open` and by any call that
    loses the database later: a caller that authenticates fails closed on it.
    """


class SchemaProblem(StoreError):
    """The database's schema is not one this Lockgate can use (behind, or from a newer Lockgate)."""


class InvalidInput(StoreError):
    """A value the store refuses: a bad name, role, grant, rate, expiry or password."""


class NotFound(StoreError):
    """No user or key by that name or id."""


class Conflict(StoreError):
    """The name is taken (a user that exists already)."""
