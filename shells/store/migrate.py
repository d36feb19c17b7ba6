"""The schema's version and its upgrade, through the Alembic migrations shipped in this package.

Alembic is driven from code: the ``Config`` is built here, pointing at
``migrations/`` beside this file, and the migrations run on a connection the
store opened, so no ``alembic.ini`` (a user's or ours) and no second URL are
ever read. The revision a database is at lives in Alembic's own
``alembic_version`` table.

Alembic is imported only to upgrade, or to judge a revision other than
:data:`HEAD`: every ``lockgate user`` or ``key`` command checks the schema
first, and for a current one a query of ``alembic_version`` is enough.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection, Engine

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

__all__ = ["HEAD", "MIGRATIONS", "SchemaState", "SchemaStatus", "head_revision", "read_status", "upgrade"]

#: The latest revision under ``migrations/versions/``; a test checks it
#: against Alembic's own reading, so a new revision must move it.
HEAD = "0004"

MIGRATIONS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "migrations")

#: The PostgreSQL advisory lock that one upgrade holds, so that gateways
#: starting together do not race to create the same tables ("LG" "up").
_UPGRADE_LOCK = 0x4C47_7570
#: Alembic keeps the migration it is running in module globals: one at a time per process.
_ALEMBIC = threading.Lock()

SchemaState = Literal["empty", "behind", "current", "unknown"]


@dataclass(frozen=True, slots=True)
class SchemaStatus:
    """Where a database's schema stands: its revision (``None``: no Lockgate schema yet) and the latest one."""

    current: str | None
    head: str
    known: bool = True

    @property
    def state(self) -> SchemaState:
        """``empty`` (nothing yet), ``behind`` (an upgrade is due), ``current``, or ``unknown``
        (a revision this Lockgate does not ship, made by a newer one)."""
        if self.current is None:
            return "empty"
        if not self.known:
            return "unknown"
        return "current" if self.current == self.head else "behind"

    def __str__(self) -> str:
        match self.state:
            case "empty":
                return f"no Lockgate schema yet (latest revision {self.head})"
            case "behind":
                return f"revision {self.current}, behind the latest ({self.head})"
            case "current":
                return f"revision {self.current} (the latest)"
            case "unknown":
                return f"revision {self.current}, which this Lockgate does not know: a newer Lockgate migrated it"


def _scripts() -> ScriptDirectory:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_config())


def _config(connection: Connection | None = None) -> Config:
    from alembic.config import Config

    config = Config()
    # configparser would read a "%" in the path as interpolation.
    config.set_main_option("script_location", MIGRATIONS.replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The latest revision this Lockgate ships, as Alembic reads the scripts (:data:`HEAD` is the quick answer)."""
    head = _scripts().get_current_head()
    assert head is not None  # the package ships at least one revision
    return head


def read_status(connection: Connection) -> SchemaStatus:
    """The schema status of the database behind ``connection``; changes nothing."""
    revisions: list[str] = []
    if inspect(connection).has_table("alembic_version"):
        revisions = [str(row) for row in connection.execute(text("SELECT version_num FROM alembic_version")).scalars()]
    if not revisions:
        return SchemaStatus(current=None, head=HEAD)
    if revisions == [HEAD]:
        return SchemaStatus(current=HEAD, head=HEAD)
    from alembic.runtime.migration import MigrationContext

    scripts = _scripts()
    current = MigrationContext.configure(connection).get_current_revision()
    known = current is None or current in {script.revision for script in scripts.walk_revisions()}
    return SchemaStatus(current=current, head=HEAD, known=known)


def upgrade(engine: Engine) -> tuple[SchemaStatus, SchemaStatus]:
    """Upgrade the schema to the latest revision in one transaction; the status before and after.

    A database at an unknown revision is left alone (the caller checks the
    status first). One process upgrades at a time, holding a lock for the
    whole transaction, so that the others wait and then find nothing to do:
    an advisory lock on PostgreSQL, the write lock on SQLite (``BEGIN
    IMMEDIATE``, taken before the revision is read). Both run DDL inside the
    transaction, so a failed upgrade leaves the schema as it was.
    """
    with _ALEMBIC, engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _UPGRADE_LOCK})
        else:
            # The sqlite3 module would begin only at the first INSERT, after
            # the CREATE TABLEs; an explicit BEGIN covers them too.
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        before = read_status(connection)
        if before.state in ("empty", "behind"):
            from alembic import command

            command.upgrade(_config(connection), "head")
        after = read_status(connection)
    return before, after
