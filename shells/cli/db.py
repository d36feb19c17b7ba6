"""``lockgate db upgrade|status``: the identity database's schema; and what ``user`` and ``key`` share with it.

The database is ``--database URL``, else ``GATEWAY_DATABASE_URL``, else the
SQLite file ``lockgate.db`` in the state folder (``GATEWAY_STATE_DIR``, else
``$XDG_STATE_HOME/lockgate``, else ``~/.local/state/lockgate``), made on first
use. These commands work on it directly; no gateway needs to run. ``user``
and ``key`` upgrade a schema that is behind first, and say so, and write each
change they make to the gateway's audit log (:class:`ChangeAudit`).

Exit status 0; 1 when ``db status`` finds the schema not current, or for a
refusal (a user that exists, no such key); 2 for a usage error or a database
that cannot be reached (the message names it, never with its password).
"""

from __future__ import annotations

import argparse
import getpass
import sys
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING

from ..audit import AuditLog
from .common import EXIT_FAILED, EXIT_USAGE, Subcommands, add_json_option, print_config_error, print_json

if TYPE_CHECKING:
    from lockgate.core import Principal
    from lockgate.shells.store import Store

__all__ = [
    "NO_ADMIN",
    "NO_ADMIN_LEFT",
    "ChangeAudit",
    "add_database_option",
    "add_parser",
    "change_audit",
    "moment",
    "run",
    "with_store",
]

#: What the first run says until there is an admin.
NO_ADMIN = "no admin user yet: create one with lockgate user create NAME --role admin"
#: What is said when a change leaves no enabled admin.
NO_ADMIN_LEFT = "no enabled admin user left: create one with lockgate user create NAME --role admin"

_DATABASE_HELP = (
    "database URL: sqlite:///PATH or postgresql://USER:PASSWORD@HOST:PORT/DATABASE; default: "
    "$GATEWAY_DATABASE_URL, else lockgate.db in $GATEWAY_STATE_DIR (else $XDG_STATE_HOME/lockgate, "
    "else ~/.local/state/lockgate)"
)


def add_database_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--database", metavar="URL", help=_DATABASE_HELP)


def add_parser(commands: Subcommands) -> None:
    db = commands.add_parser(
        "db",
        help="the identity database (users and API keys): upgrade its schema, show its status",
        description=(
            "Lockgate keeps users and API keys in SQL: a SQLite file by default, PostgreSQL with "
            "--database postgresql://… or GATEWAY_DATABASE_URL. 'upgrade' brings the schema to this "
            "version's (lockgate serve, user and key also do when it is behind); 'status' shows it."
        ),
    )
    actions = db.add_subparsers(dest="db_command", metavar="COMMAND", required=True)
    upgrade = actions.add_parser(
        "upgrade", help="create or upgrade the schema", description="Create the tables, or upgrade them to this version's schema."
    )
    add_database_option(upgrade)
    status = actions.add_parser(
        "status",
        help="the schema's revision, and whether there is an admin",
        description=(
            "Show the database, its schema revision, and how many users and keys it holds. "
            "Exit status 1 when the schema is not current."
        ),
    )
    add_database_option(status)
    add_json_option(status)


def run(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    if args.db_command == "upgrade":
        return with_store(args, environ, _upgrade, prepare=False)
    return with_store(args, environ, lambda store: _status(store, args.json), prepare=False)


def with_store(
    args: argparse.Namespace,
    environ: Mapping[str, str],
    action: Callable[[Store], int],
    *,
    prepare: bool = True,
) -> int:
    """Open the database named by ``--database`` or the environment, run ``action`` on it, close it.

    With ``prepare``, a schema that is behind is upgraded first (said on
    stderr). Every error is one line on stderr: exit 2 for a database that
    cannot be reached or a value refused, 1 for other refusals.
    """
    from sqlalchemy.exc import SQLAlchemyError

    from lockgate.shells.store import DatabaseUnavailable, InvalidInput, SchemaProblem, Store, StoreError, database_url

    try:
        with Store.open(database_url(args.database, environ)) as store:
            if prepare:
                upgraded = store.ensure_schema()
                if upgraded is not None:
                    print(f"lockgate: {upgraded}", file=sys.stderr)
            return action(store)
    except StoreError as exc:
        print(f"lockgate: error: {exc}", file=sys.stderr)
        return EXIT_USAGE if isinstance(exc, (DatabaseUnavailable, InvalidInput, SchemaProblem)) else EXIT_FAILED
    except SQLAlchemyError as exc:
        # Not one the store expects; still one line, and never the URL.
        reason = str(getattr(exc, "orig", None) or type(exc).__name__).strip().splitlines()
        print(f"lockgate: error: the database refused: {reason[0] if reason else type(exc).__name__}", file=sys.stderr)
        return EXIT_FAILED


class ChangeAudit:
    """The gateway's audit log, for the changes ``user`` and ``key`` make to the identity database.

    Each change is one record in the shape the gateway writes for the same
    change made through ``/auth/`` (:func:`lockgate.core.authentication_record`
    of an :class:`~lockgate.core.AuthenticationSucceeded`), made by
    ``operator`` from the address ``cli``. A record names what changed by its
    principal id (``user:alice``, ``key:3f9a1c2b``), never a password or a secret.
    """

    def __init__(self, path: str, operator: Principal, environ: Mapping[str, str] | None = None) -> None:
        self.path = path
        self.operator = operator
        self.environ = environ

    def record(self, operation: str, target: str) -> None:
        """Append the record of one change already made; never raises.

        ``operation`` is the ``/auth/`` endpoints' name for it (``create_user``,
        ``update_user``, ``create_key``, ``revoke_key``). When the record cannot
        be written, :class:`~lockgate.shells.audit.AuditLog` logs why and a
        warning says the change stands unaudited: undoing it is not an option.
        """
        from lockgate.core import AuthenticationSucceeded, authentication_record

        event = AuthenticationSucceeded(
            now=time.monotonic(), principal=self.operator, address="cli", operation=operation, target=target
        )
        # One change per command: open, append and close, so nothing stays open.
        log = AuditLog(self.path)
        log.write(authentication_record(event))
        log.close()
        if log.records == 0:
            print(f"lockgate: warning: the change was made, but its audit record is not in {self.path}", file=sys.stderr)
        if self.environ is not None:
            from lockgate.shells.shared_limits import announce_change

            announce_change(self.environ)  # running replicas read the store now, not at their next poll


def change_audit(environ: Mapping[str, str]) -> ChangeAudit | None:
    """Where ``user`` and ``key`` audit their changes: ``GATEWAY_AUDIT_LOG``, or the gateway's default.

    The variables are read as ``lockgate serve`` reads them, so the records
    land where the gateway's do. ``None`` after printing what is wrong with
    them: a change is refused before anything is changed.
    """
    from lockgate.core import ConfigError, Principal, settings_from_env

    try:
        settings = settings_from_env(environ)
    except ConfigError as exc:
        print_config_error(exc)
        return None
    return ChangeAudit(settings.audit_log, Principal(id=f"local:{_login_name()}", role="admin", agents=()), environ)


def _login_name() -> str:
    """Who runs the command, as the system names them; ``unknown`` when it cannot tell."""
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no login variable and no passwd entry (3.13 raises OSError, earlier KeyError)
        return "unknown"


def moment(value: datetime | None, *, none: str = "never") -> str:
    """A time for a table: ``2026-05-01 14:03 UTC``."""
    return none if value is None else value.strftime("%Y-%m-%d %H:%M UTC")


def _upgrade(store: Store) -> int:
    upgraded = store.ensure_schema()
    if upgraded is None:
        print(f"the database schema ({store.description}) is current: {store.schema_status()}")
    else:
        print(upgraded)
    if not store.has_admin():
        print(NO_ADMIN)
    return 0


def _status(store: Store, as_json: bool) -> int:
    status = store.schema_status()
    current = status.state == "current"
    users = store.list_users() if current else []
    keys = store.list_keys() if current else []
    has_admin = any(user.role == "admin" and not user.disabled for user in users)
    if as_json:
        print_json({
            "database": store.description,
            "revision": status.current,
            "latest": status.head,
            "state": status.state,
            "users": len(users) if current else None,
            "keys": len(keys) if current else None,
            "has_admin": has_admin if current else None,
        })
        return 0 if current else EXIT_FAILED
    print(f"database: {store.description}")
    print(f"schema: {status}")
    if not current:
        if status.state != "unknown":
            print("run lockgate db upgrade to bring it up to date")
        return EXIT_FAILED
    revoked = sum(1 for key in keys if key.revoked)
    print(f"users: {len(users)} ({sum(1 for user in users if user.role == 'admin')} admin)")
    print(f"keys: {len(keys)} ({revoked} revoked)")
    if not has_admin:
        print(NO_ADMIN)
    return 0
