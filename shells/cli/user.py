"""``lockgate user create|list|disable|enable|passwd|role``: the users in the identity database.

A user logs in with a name and a password (argon2id-hashed, see
:mod:`lockgate.shells.store.passwords`) and has a role: ``admin`` manages
users and keys, ``user`` only calls tools. Passwords come from a prompt on
the terminal, asked twice, or from the first line of standard input with
``--password-stdin``; never from an argument, which other local users could
read in the process list. Each change (``create``; ``disable``, ``enable``,
``passwd`` and ``role``, which the ``/auth/`` endpoints call ``update_user``)
is an audit record, as when made through the gateway (see :class:`.db.ChangeAudit`);
a refused change or one that changes nothing writes none.

Exit status 0; 1 for a refusal (the user exists, no such user); 2 for a
usage error, a refused value, a wrong ``GATEWAY_*`` variable or a database
that cannot be reached. The database options are :mod:`.db`'s.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .common import EXIT_USAGE, Subcommands, add_json_option, print_json, table
from .db import NO_ADMIN, NO_ADMIN_LEFT, ChangeAudit, add_database_option, change_audit, moment, with_store

if TYPE_CHECKING:
    from lockgate.shells.store import Store, UserRecord

__all__ = ["add_parser", "run", "user_json"]

_ROLES = ("admin", "user")
_ROLE_HELP = "admin manages users and keys; user only calls tools"


def add_parser(commands: Subcommands) -> None:
    user = commands.add_parser(
        "user",
        help="manage users: create, list, disable, enable, passwd, role",
        description=(
            "Users of the identity database (see lockgate db --help for which database). An admin "
            "manages users and keys; a user only calls tools. The first admin: "
            "lockgate user create NAME --role admin."
        ),
    )
    actions = user.add_subparsers(dest="user_command", metavar="COMMAND", required=True)

    create = _action(actions, "create", "add a user", "Add a user; the password is asked twice on the terminal, or read from stdin.")
    create.add_argument("name", metavar="NAME", help="1 to 64 letters, digits and . _ @ -")
    create.add_argument("--role", choices=_ROLES, default="user", help=f"{_ROLE_HELP} (default: user)")
    _add_password_stdin(create)
    listing = _action(actions, "list", "list the users", "List the users: role, state, created, last login.")
    add_json_option(listing)
    disable = _action(
        actions, "disable", "stop a user's password and keys from working",
        "Disable a user: their password and their keys stop working until enabled again.",
    )
    disable.add_argument("name", metavar="NAME")
    enable = _action(actions, "enable", "let a disabled user in again", "Enable a disabled user again.")
    enable.add_argument("name", metavar="NAME")
    passwd = _action(
        actions, "passwd", "set a user's password", "Set a user's password (asked twice on the terminal, or --password-stdin)."
    )
    passwd.add_argument("name", metavar="NAME")
    _add_password_stdin(passwd)
    role = _action(actions, "role", "change a user's role", "Change a user's role; their keys never have more than it.")
    role.add_argument("name", metavar="NAME")
    role.add_argument("role", choices=_ROLES, metavar="ROLE", help=_ROLE_HELP)
    for parser in (create, listing, disable, enable, passwd, role):
        add_database_option(parser)


def _action(actions: Subcommands, name: str, summary: str, description: str) -> argparse.ArgumentParser:
    return actions.add_parser(name, help=summary, description=description)


def _add_password_stdin(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--password-stdin", action="store_true", help="read the password from the first line of standard input"
    )


def run(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    command = args.user_command
    if command == "list":
        return with_store(args, environ, lambda store: _list(store, args.json))
    # Before the password prompt: a wrong variable refuses the change before it is typed.
    audit = change_audit(environ)
    if audit is None:
        return EXIT_USAGE
    password: str | None = None
    if command in ("create", "passwd"):
        password = _read_password(args.name, args.password_stdin)
        if password is None:
            return EXIT_USAGE
        from lockgate.shells.store import InvalidInput
        from lockgate.shells.store.passwords import check_password

        try:
            check_password(password)
        except InvalidInput as exc:
            print(f"lockgate: error: {exc}", file=sys.stderr)
            return EXIT_USAGE
    return with_store(args, environ, lambda store: _CHANGES[command](store, args, password, audit))


def _read_password(name: str, from_stdin: bool) -> str | None:
    """The new password, or ``None`` after saying why there is none."""
    if from_stdin:
        password = sys.stdin.readline().removesuffix("\n").removesuffix("\r")
        if not password:
            print("lockgate: error: no password on standard input", file=sys.stderr)
            return None
        return password
    if not sys.stdin.isatty():
        print(
            "lockgate: error: no terminal to ask for the password: give it on standard input with --password-stdin",
            file=sys.stderr,
        )
        return None
    first = getpass.getpass(f"Password for {name}: ")
    if getpass.getpass("Again: ") != first:
        print("lockgate: error: the two passwords differ; nothing was changed", file=sys.stderr)
        return None
    return first


def _create(store: Store, args: argparse.Namespace, password: str | None, audit: ChangeAudit) -> int:
    assert password is not None
    user = store.create_user(args.name, args.role, password)
    audit.record("create_user", user.principal_id)
    print(f"created user {user.name} (role {user.role})")
    if not store.has_admin():
        print(NO_ADMIN)
    return 0


def _list(store: Store, as_json: bool) -> int:
    users = store.list_users()
    if as_json:
        print_json([user_json(user) for user in users])
        return 0
    if not users:
        print("no users yet")
    else:
        rows = [["NAME", "ROLE", "STATE", "CREATED", "LAST LOGIN"]]
        for u in users:
            rows.append([u.name, u.role, "disabled" if u.disabled else "enabled", moment(u.created_at), moment(u.last_login_at)])
        print("\n".join(table(rows)))
    if not any(user.role == "admin" and not user.disabled for user in users):
        print(NO_ADMIN)
    return 0


def _disable(store: Store, args: argparse.Namespace, password: str | None, audit: ChangeAudit) -> int:
    user = store.get_user(args.name)
    if user.disabled:
        print(f"user {args.name} was disabled already")
        return 0
    store.set_disabled(args.name, True)
    audit.record("update_user", user.principal_id)
    print(f"disabled user {args.name}: their password and keys no longer work")
    if not store.has_admin():
        print(NO_ADMIN_LEFT)
    return 0


def _enable(store: Store, args: argparse.Namespace, password: str | None, audit: ChangeAudit) -> int:
    user = store.get_user(args.name)
    if not user.disabled:
        print(f"user {args.name} was enabled already")
        return 0
    store.set_disabled(args.name, False)
    audit.record("update_user", user.principal_id)
    print(f"enabled user {args.name}")
    return 0


def _passwd(store: Store, args: argparse.Namespace, password: str | None, audit: ChangeAudit) -> int:
    assert password is not None
    user = store.get_user(args.name)
    store.set_password(args.name, password)
    audit.record("update_user", user.principal_id)
    print(f"changed the password of {args.name}")
    return 0


def _role(store: Store, args: argparse.Namespace, password: str | None, audit: ChangeAudit) -> int:
    before = store.get_user(args.name)
    if before.role == args.role:
        print(f"user {args.name} has role {args.role} already")
        return 0
    store.set_role(args.name, args.role)
    audit.record("update_user", before.principal_id)
    print(f"user {args.name} now has role {args.role} (was {before.role})")
    if not store.has_admin():
        print(NO_ADMIN_LEFT)
    return 0


#: The commands that change a user, each auditing the change it makes.
_CHANGES = {"create": _create, "disable": _disable, "enable": _enable, "passwd": _passwd, "role": _role}


def user_json(user: UserRecord) -> dict[str, Any]:
    """A user for ``--json`` output (times in ISO 8601, UTC)."""
    return {
        "name": user.name,
        "role": user.role,
        "disabled": user.disabled,
        "created_at": user.created_at.isoformat(),
        "last_login_at": None if user.last_login_at is None else user.last_login_at.isoformat(),
    }
