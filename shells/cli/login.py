"""``lockgate login NAME``: a bearer token for a user, as ``POST /auth/login`` gives, without a running gateway.

The password is checked against the identity database (see :mod:`.db` for
which) and the token signed with the gateway's own secret
(``GATEWAY_JWT_SECRET``, else the one kept in the state folder), so any
gateway sharing both accepts it. The token goes to stdout alone, so
``TOKEN=$(lockgate login alice)`` works; ``--json`` prints the whole answer
(``access_token``, ``token_type``, ``expires_in``).

Exit status 0; 1 for a wrong name or password (one message for both, as
over HTTP); 2 for a usage error or a database that cannot be reached.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Mapping

from .common import EXIT_FAILED, EXIT_USAGE, Subcommands, add_json_option, print_json
from .db import add_database_option, with_store

__all__ = ["add_parser", "run"]


def add_parser(commands: Subcommands) -> None:
    login = commands.add_parser(
        "login",
        help="get a bearer token for a user (as POST /auth/login), from the identity database",
        description=(
            "Check a user's password against the identity database and print a bearer token for them, "
            "signed with the gateway's secret. The password is asked on the terminal, or read from the "
            "first line of standard input with --password-stdin."
        ),
    )
    login.add_argument("name", metavar="NAME")
    login.add_argument("--password-stdin", action="store_true", help="read the password from the first line of standard input")
    add_json_option(login)
    add_database_option(login)


def run(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    import getpass

    from ..auth import TokenIssuer, TokenSetupError
    from ..identity import login_principal
    from ..store import Store

    if args.password_stdin:
        password = sys.stdin.readline().removesuffix("\n").removesuffix("\r")
    elif sys.stdin.isatty():
        password = getpass.getpass(f"Password for {args.name}: ")
    else:
        print("lockgate: error: no terminal to ask for the password: use --password-stdin", file=sys.stderr)
        return EXIT_USAGE
    try:
        issuer = TokenIssuer.from_environ(environ)
    except TokenSetupError as exc:
        print(f"lockgate: error: {exc}", file=sys.stderr)
        return EXIT_USAGE

    def login(store: Store) -> int:
        result = store.verify_password(args.name, password)
        if not result.ok or result.user is None:
            print("lockgate: error: wrong name or password", file=sys.stderr)
            return EXIT_FAILED
        issued = issuer.issue(login_principal(result.user), now=time.time())
        if args.json:
            print_json({"access_token": issued.token, "token_type": "bearer", "expires_in": issued.expires_in})
        else:
            print(issued.token)
        return 0

    return with_store(args, environ, login)
