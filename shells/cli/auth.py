"""``lockgate auth login|status|logout``: the OAuth tokens Lockgate holds for downstream servers.

Tokens are kept sealed in the identity database (see :mod:`.db` for which,
and :mod:`lockgate.shells.store.oauth`), one per server and Lockgate
principal, or one for the whole gateway. ``login`` gets one (see
:mod:`.oauth_login`). ``status`` lists them: server,
whose, scopes and expiry, never a token. ``logout SERVER`` forgets the
gateway's token for a server, ``--principal ID`` one principal's, ``--all``
every one. Neither needs the secret key that seals them: nothing is opened.
Each ``logout`` that forgets something is a record in the gateway's audit
log, as ``lockgate key revoke`` is (see :class:`.db.ChangeAudit`).

Exit status 0; 1 when ``logout`` finds no token to forget; 2 for a usage
error or a database that cannot be reached.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from .common import EXIT_USAGE, Subcommands, add_json_option, count, print_json, table
from .db import ChangeAudit, add_database_option, change_audit, moment, with_store
from .oauth_login import add_login_parser, run_login

if TYPE_CHECKING:
    from lockgate.shells.store import Store
    from lockgate.shells.store.oauth import TokenRecord

__all__ = ["add_parser", "run", "token_json"]

#: How a table and a message name the gateway-wide token's owner.
_GATEWAY = "gateway"


def add_parser(commands: Subcommands) -> None:
    auth = commands.add_parser(
        "auth",
        help="OAuth tokens held for downstream servers: login, status, logout",
        description=(
            "OAuth tokens Lockgate holds for downstream MCP servers, kept sealed in the identity database "
            "(see lockgate db --help for which database): one per server for the whole gateway, or one per "
            "server and Lockgate principal. 'login' gets one; 'status' lists them, never a token; 'logout' forgets them."
        ),
    )
    actions = auth.add_subparsers(dest="auth_command", metavar="COMMAND", required=True)

    status = actions.add_parser(
        "status",
        help="list the stored tokens: server, whose, scopes, expiry (never a token)",
        description=(
            "List the servers Lockgate holds OAuth tokens for: the server, whose token it is (the gateway's "
            "or a principal's, such as user:alice), its scopes and its expiry, marked expired when past. "
            "Tokens are never shown."
        ),
    )
    add_json_option(status)

    logout = actions.add_parser(
        "logout",
        help="forget the stored tokens of a server",
        description=(
            "Forget the OAuth tokens stored for SERVER: the gateway-wide token by default, one principal's "
            "with --principal, or every one with --all. Exit status 1 when there is none to forget."
        ),
    )
    logout.add_argument("server", metavar="SERVER", help="the downstream server's name, as auth status shows it")
    whose = logout.add_mutually_exclusive_group()
    whose.add_argument(
        "--principal", metavar="ID", help="forget this principal's token (a principal id, such as user:alice or key:3f9a1c2b)"
    )
    whose.add_argument("--all", action="store_true", help="forget every token for the server: the gateway's and every principal's")

    login = add_login_parser(actions)

    for parser in (status, logout, login):
        add_database_option(parser)


def run(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    if args.auth_command == "login":
        return run_login(args, environ)
    if args.auth_command == "status":
        return with_store(args, environ, lambda store: _status(store, args.json))
    audit = change_audit(environ)
    if audit is None:
        return EXIT_USAGE
    return with_store(args, environ, lambda store: _logout(store, args.server, args.principal, args.all, audit))


def _status(store: Store, as_json: bool) -> int:
    from lockgate.shells.store.oauth import OAuthStore

    now = datetime.now(UTC)
    tokens = OAuthStore(store).list_tokens()
    if as_json:
        print_json([token_json(token, now) for token in tokens])
        return 0
    if not tokens:
        print("no OAuth tokens stored")
        return 0
    rows = [["SERVER", "WHOSE", "SCOPES", "EXPIRES"]]
    for token in tokens:
        expires = moment(token.expires_at)
        rows.append([
            token.server,
            _whose(token),
            " ".join(token.scopes) or "-",
            f"{expires} (expired)" if token.expired(now) else expires,
        ])
    print("\n".join(table(rows)))
    return 0


def _logout(store: Store, server: str, principal: str | None, every: bool, audit: ChangeAudit) -> int:
    """Forget stored tokens; each forgetting is an audit record (``oauth_logout``, target ``oauth:SERVER:WHOSE``)."""
    from lockgate.shells.store import NotFound
    from lockgate.shells.store.oauth import GATEWAY, OAuthStore

    tokens = OAuthStore(store)
    if every:
        forgotten = tokens.delete_tokens(server)
        if forgotten == 0:
            raise NotFound(f"no OAuth tokens are stored for server {server!r}")
        audit.record("oauth_logout", f"oauth:{server}:*")
        print(f"forgot {count(forgotten, 'OAuth token')} for server {server}")
        return 0
    owner = GATEWAY if principal is None else principal
    whose = "the gateway's" if owner == GATEWAY else f"{owner}'s"
    if not tokens.delete_token(server, owner):
        raise NotFound(f"no OAuth token of {_GATEWAY if owner == GATEWAY else repr(owner)} is stored for server {server!r}")
    audit.record("oauth_logout", f"oauth:{server}:{_GATEWAY if owner == GATEWAY else owner}")
    print(f"forgot {whose} OAuth token for server {server}")
    return 0


def _whose(token: TokenRecord) -> str:
    return _GATEWAY if token.gateway_wide else token.principal


def token_json(token: TokenRecord, now: datetime) -> dict[str, Any]:
    """A stored token for ``--json`` output: metadata only (times in ISO 8601, UTC; ``principal`` null for the gateway's)."""
    return {
        "server": token.server,
        "whose": _whose(token),
        "principal": None if token.gateway_wide else token.principal,
        "scopes": list(token.scopes),
        "expires_at": None if token.expires_at is None else token.expires_at.isoformat(),
        "expired": token.expired(now),
        "updated_at": token.updated_at.isoformat(),
    }
