"""``lockgate key create|list|revoke``: API keys in the identity database.

A key's secret (``lg_<key id>_<43 characters>``) is printed once, by
``create``, and never kept: the database holds its SHA-256 only (see
:mod:`lockgate.shells.store.apikeys`). ``create`` writes the secret alone on
standard output, so ``KEY=$(lockgate key create …)`` captures it, and what the
key is, with the note that the secret is shown only now, on standard error.
``list`` never shows secrets. ``create`` and ``revoke`` are audit records
(``create_key``, ``revoke_key``), as when made through the gateway (see
:class:`.db.ChangeAudit`); a refused change, or revoking a key revoked
already, writes none.

Exit status 0; 1 for a refusal (no such key or owner); 2 for a usage error,
a refused value (grant, rate, expiry, role), a wrong ``GATEWAY_*`` variable
or a database that cannot be reached. The database options are :mod:`.db`'s.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from .common import EXIT_USAGE, Subcommands, add_json_option, print_json, table
from .db import ChangeAudit, add_database_option, change_audit, moment, with_store

if TYPE_CHECKING:
    from lockgate.shells.store import KeyRecord, Store

__all__ = ["ExpiryError", "add_parser", "key_json", "parse_expiry", "run"]

_SPAN = re.compile(r"([1-9][0-9]{0,5})(h|d|w)")
_UNITS = {"h": timedelta(hours=1), "d": timedelta(days=1), "w": timedelta(weeks=1)}
_EXPIRES_HELP = "a span from now (12h, 30d, 8w) or a date or time (2027-01-31, 2027-01-31T18:00+01:00; UTC unless it says)"


class ExpiryError(ValueError):
    """``--expires`` is neither a span nor a date; ``str()`` says what is accepted."""


def parse_expiry(text: str, now: datetime) -> datetime:
    """``--expires`` as an aware UTC datetime: ``30d`` from ``now``, or a date (its midnight, UTC) or a time.

    Raises:
        ExpiryError: neither a span nor a date or time.
    """
    text = text.strip()
    span = _SPAN.fullmatch(text)
    if span is not None:
        return now + int(span.group(1)) * _UNITS[span.group(2)]
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ExpiryError(f"--expires {text!r} is not a span or a date: use {_EXPIRES_HELP}") from None
    return (when.replace(tzinfo=UTC) if when.tzinfo is None else when).astimezone(UTC)


def add_parser(commands: Subcommands) -> None:
    key = commands.add_parser(
        "key",
        help="manage API keys: create, list, revoke",
        description=(
            "API keys of the identity database (see lockgate db --help for which database). A key "
            "acts as the agents it is granted, with its role and optional expiry and rate limit."
        ),
    )
    actions = key.add_subparsers(dest="key_command", metavar="COMMAND", required=True)

    create = actions.add_parser(
        "create",
        help="make a key and print its secret, once",
        description=(
            "Make an API key. Its secret goes alone to standard output (KEY=$(lockgate key create ...)) "
            "and is shown only now: Lockgate keeps only a hash of it. What the key is goes to standard error."
        ),
    )
    create.add_argument("name", metavar="NAME", help="what the key is for (a label; need not be unique)")
    create.add_argument(
        "--agents",
        required=True,
        metavar="LIST",
        help="comma-separated agents it may act as: an agent id (backend), a subtree (backend.*) or * for every agent",
    )
    create.add_argument(
        "--role", choices=("admin", "user"), default="user",
        help="admin manages users and keys; user only calls tools (default: user)",
    )
    create.add_argument("--expires", metavar="WHEN", help=f"when it stops working: {_EXPIRES_HELP}; default: never")
    create.add_argument("--rate", metavar="RATE", help="its own rate limit: COUNT/UNIT, such as 120/min (units s, min, h)")
    create.add_argument(
        "--user", metavar="NAME", help="the user who owns it (its role is at most theirs; disabling them stops it)"
    )
    add_json_option(create)

    listing = actions.add_parser(
        "list",
        help="list the keys (never their secrets)",
        description="List the keys: id, name, role, agents, owner, expiry, state, last use. Secrets are not kept, so never shown.",
    )
    add_json_option(listing)

    revoke = actions.add_parser("revoke", help="revoke a key for good", description="Revoke a key: it stops working for good.")
    revoke.add_argument("key_id", metavar="KEY_ID", help="the key's id, as key list shows it (the 8 characters after lg_)")

    for parser in (create, listing, revoke):
        add_database_option(parser)


def run(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    if args.key_command == "list":
        return with_store(args, environ, lambda store: _list(store, args.json))
    audit = change_audit(environ)
    if audit is None:
        return EXIT_USAGE
    if args.key_command == "revoke":
        return with_store(args, environ, lambda store: _revoke(store, args.key_id, audit))
    now = datetime.now(UTC)
    try:
        expires = None if args.expires is None else parse_expiry(args.expires, now)
    except ExpiryError as exc:
        print(f"lockgate: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return with_store(args, environ, lambda store: _create(store, args, expires, now, audit))


def _create(store: Store, args: argparse.Namespace, expires: datetime | None, now: datetime, audit: ChangeAudit) -> int:
    record, secret = store.create_key(
        args.name,
        role=args.role,
        agents=args.agents.split(","),
        expires_at=expires,
        rate=args.rate,
        user=args.user,
        now=now,
    )
    audit.record("create_key", record.principal_id)
    if args.json:
        print_json({**key_json(record, now), "secret": secret})
        return 0
    details = [f"role {record.role}", f"agents {', '.join(record.agents)}"]
    details.append("no expiry" if record.expires_at is None else f"expires {moment(record.expires_at)}")
    if record.rate is not None:
        details.append(f"rate {record.rate}")
    if record.user is not None:
        details.append(f"owner {record.user}")
    print(f"created key {record.key_id} ({record.name}): {'; '.join(details)}", file=sys.stderr)
    print("its secret follows, shown only now: Lockgate keeps only a hash of it, so store it safely", file=sys.stderr)
    print(secret)
    return 0


def _list(store: Store, as_json: bool) -> int:
    now = datetime.now(UTC)
    keys = store.list_keys()
    if as_json:
        print_json([key_json(key, now) for key in keys])
        return 0
    if not keys:
        print("no keys yet: lockgate key create NAME --agents LIST")
        return 0
    rows = [["KEY ID", "NAME", "ROLE", "AGENTS", "OWNER", "EXPIRES", "STATE", "LAST USED"]]
    for key in keys:
        rows.append([
            key.key_id,
            key.name,
            key.role,
            ",".join(key.agents),
            key.user or "-",
            moment(key.expires_at),
            key.state(now),
            moment(key.last_used_at),
        ])
    print("\n".join(table(rows)))
    return 0


def _revoke(store: Store, key_id: str, audit: ChangeAudit) -> int:
    record = store.get_key(key_id)
    if store.revoke_key(key_id):
        audit.record("revoke_key", record.principal_id)
        print(f"revoked key {key_id} ({record.name})")
    else:
        print(f"key {key_id} ({record.name}) was revoked already")
    return 0


def key_json(key: KeyRecord, now: datetime) -> dict[str, Any]:
    """A key for ``--json`` output: everything but its hash (times in ISO 8601, UTC)."""

    def iso(value: datetime | None) -> str | None:
        return None if value is None else value.isoformat()

    return {
        "key_id": key.key_id,
        "name": key.name,
        "role": key.role,
        "agents": list(key.agents),
        "user": key.user,
        "expires_at": iso(key.expires_at),
        "rate": key.rate,
        "state": key.state(now),
        "revoked": key.revoked,
        "revoked_at": iso(key.revoked_at),
        "created_at": iso(key.created_at),
        "last_used_at": iso(key.last_used_at),
    }
