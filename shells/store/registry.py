"""Registered instances in the store's database: add, remove, load, list.

A :class:`Registrations` works on an open :class:`~.store.Store` (same
database, same connections, same error mapping). Like the store, its
methods are synchronous and thread-safe: a gateway calls them from worker
threads. A registration's ``env`` values are stored, since the process
needs them to start, and are returned only by :meth:`Registrations.load`,
which the gateway merges into its configuration; :meth:`Registrations.list`
gives the names of the variables, never their values.

Registrations do not raise the change counter: it tells gateways to read
users and keys again, which a registration does not change.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType
from typing import Any

from sqlalchemy import Row, delete, insert, select
from sqlalchemy.exc import IntegrityError

from lockgate.core import Registration

from .errors import Conflict, InvalidInput, NotFound
from .schema import registrations
from .store import Store, _now

__all__ = ["RegistrationRecord", "Registrations", "record"]


@dataclass(frozen=True, slots=True, kw_only=True)
class RegistrationRecord:
    """A registration as it may be shown: everything but the values of its ``env``."""

    server: str
    instance_id: str
    transport: str
    endpoint: str | None
    command: str | None
    args: tuple[str, ...]
    working_dir: str | None
    env_keys: tuple[str, ...]
    weight: int
    description: str
    #: When it was stored; ``None`` where only the registration itself is at hand.
    created_at: datetime | None = None


class Registrations:
    """The ``registrations`` table of ``store``'s database (see the module docstring)."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def add(self, registration: Registration, *, now: datetime | None = None) -> None:
        """Store a registration.

        Raises:
            InvalidInput: it is not a valid registration.
            Conflict: one with the same server and instance id is stored
                (also when another process stored it a moment ago).
        """
        wrong = registration.problems()
        if wrong:
            raise InvalidInput("; ".join(wrong))
        values: dict[str, Any] = {
            "server": registration.server,
            "instance_id": registration.instance_id,
            "transport": registration.transport,
            "endpoint": registration.endpoint,
            "command": registration.command,
            "args": list(registration.args),
            "working_dir": registration.working_dir,
            "env": dict(registration.env),
            "weight": registration.weight,
            "description": registration.description,
            "created_at": _now(now),
        }
        try:
            with self._store._connect() as connection, connection.begin():
                connection.execute(insert(registrations).values(values))
        except IntegrityError:
            # The unique constraint decides between two processes registering at once.
            raise Conflict(
                f"server {registration.server!r} has a registered instance {registration.instance_id!r} already"
            ) from None

    def remove(self, server: str, instance_id: str) -> None:
        """Remove a registration.

        Raises:
            NotFound: there is none with that server and instance id.
        """
        where = (registrations.c.server == server) & (registrations.c.instance_id == instance_id)
        with self._store._connect() as connection, connection.begin():
            if connection.execute(delete(registrations).where(where)).rowcount == 0:
                raise NotFound(f"server {server!r} has no registered instance {instance_id!r}")

    def close(self) -> None:
        """Close the store's connections."""
        self._store.close()

    def load(self) -> list[Registration]:
        """Every registration, ``env`` values included, oldest first: what the gateway merges and starts."""
        with self._store._connect() as connection:
            rows = connection.execute(_ORDERED).all()
        return [_registration(row) for row in rows]

    def list(self) -> list[RegistrationRecord]:
        """Every registration, oldest first, without the values of its ``env``."""
        with self._store._connect() as connection:
            rows = connection.execute(_ORDERED).all()
        return [record(_registration(row), row.created_at) for row in rows]


_ORDERED = select(registrations).order_by(registrations.c.created_at, registrations.c.id)


def record(registration: Registration, created_at: datetime | None = None) -> RegistrationRecord:
    """What may be shown of ``registration``."""
    return RegistrationRecord(
        server=registration.server,
        instance_id=registration.instance_id,
        transport=registration.transport,
        endpoint=registration.endpoint,
        command=registration.command,
        args=registration.args,
        working_dir=registration.working_dir,
        env_keys=tuple(sorted(registration.env)),
        weight=registration.weight,
        description=registration.description,
        created_at=created_at,
    )


def _registration(row: Row[Any]) -> Registration:
    return Registration(
        server=row.server,
        instance_id=row.instance_id,
        transport="http" if row.transport == "http" else "stdio",
        endpoint=row.endpoint,
        command=row.command,
        args=tuple(row.args),
        working_dir=row.working_dir,
        env=MappingProxyType(dict(row.env)),
        weight=int(row.weight),
        description=row.description,
    )
