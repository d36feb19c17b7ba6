"""``lockgate auth login SERVER``: get an OAuth token for a downstream server, now, from the terminal.

The server is one of the configured HTTP servers (the servers file, and the
live registry unless ``--no-registry``). Lockgate asks it for its challenge
(an ``initialize`` without a token), then runs the flow the server's
``oauth`` settings say: the authorization-code flow prints the URL to open,
opens the browser unless ``--no-browser`` (``BROWSER`` names which), and
waits for the browser to come back to a loopback port it serves for the
duration of the login; the client-credentials grant needs no person. The
token is stored sealed in the identity database, where the gateway reads it
on its next call to the server; the gateway need not be restarted.

``--principal ID`` logs in for one Lockgate user (``user:alice``), for a
server whose tokens are per user (``oauth.per_user``): that user's API keys,
login tokens and the tokens delegated from them all carry it. A login is a record in the
gateway's audit log (``oauth_login``), never with a token.

Exit status 0 when a token is stored; 1 when the login failed (the reason
says why); 2 for a usage or configuration error.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from datetime import UTC, datetime

from .common import EXIT_FAILED, EXIT_USAGE, add_file_options, add_registry_option, load

__all__ = ["add_login_parser", "run_login"]

#: How long a person has to finish logging in, by default.
DEFAULT_TIMEOUT_S = 300.0


def add_login_parser(actions: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    login = actions.add_parser(
        "login",
        help="get an OAuth token for a server now: opens the browser, or uses the client credentials",
        description=(
            "Get an OAuth token for the configured HTTP server SERVER and store it sealed in the identity "
            "database, where the gateway uses it on its next call (no restart). The authorization-code flow "
            "prints the URL to open and opens the browser (BROWSER names which; --no-browser only prints), then "
            "waits for the browser to come back to http://127.0.0.1:PORT/callback. A client_credentials server "
            "needs no browser. Exit status 1 when the login fails."
        ),
    )
    login.add_argument("server", metavar="SERVER", help="the server's name in the servers file")
    login.add_argument(
        "--principal", metavar="ID",
        help="log in for this Lockgate user (user:alice; a key without a user: key:3f9a1c2b); for a server with "
        "oauth.per_user",
    )
    login.add_argument("--no-browser", action="store_true", help="print the URL to open; do not open a browser")
    login.add_argument(
        "--timeout", metavar="SECONDS", type=float, default=DEFAULT_TIMEOUT_S,
        help=f"how long to wait for the browser to come back (default {DEFAULT_TIMEOUT_S:g})",
    )
    add_file_options(login)
    add_registry_option(login)
    return login


def run_login(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    import trio

    from lockgate.core import OAuthSpec

    from ..oauth import OAuthManager, OAuthProblem, uses_oauth
    from .db import change_audit, moment

    if args.timeout <= 0:
        print("lockgate: error: --timeout must be a positive number of seconds", file=sys.stderr)
        return EXIT_USAGE
    config = load(args, environ)
    if config is None:
        return EXIT_USAGE
    spec = config.servers.get(args.server)
    if spec is None:
        known = ", ".join(sorted(config.servers)) or "none"
        print(f"lockgate: error: no server {args.server!r} is configured (servers: {known})", file=sys.stderr)
        return EXIT_USAGE
    http = [instance.spec for instance in spec.launch_specs() if instance.spec.transport == "http"]
    if not http or http[0].url is None:
        print(f"lockgate: error: {args.server} is a stdio server; OAuth is for HTTP servers", file=sys.stderr)
        return EXIT_USAGE
    target = http[0]
    url = target.url
    assert url is not None  # checked above
    if not uses_oauth(url, target.headers, target.oauth):
        print(
            f"lockgate: error: OAuth is off for {args.server}: it says \"oauth\": false, or configures its own "
            "Authorization header",
            file=sys.stderr,
        )
        return EXIT_USAGE
    oauth = target.oauth or OAuthSpec()
    if oauth.per_user and not args.principal:
        print(f"lockgate: error: {args.server}'s tokens are per user (oauth.per_user): say whose with --principal ID",
              file=sys.stderr)
        return EXIT_USAGE
    if args.principal and not oauth.per_user:
        print(f"lockgate: error: {args.server}'s token serves the whole gateway (oauth.per_user is off): "
              "drop --principal", file=sys.stderr)
        return EXIT_USAGE
    audit = change_audit(environ)
    if audit is None:
        return EXIT_USAGE

    def announce(url: str) -> None:
        print(f"To log in to {args.server}, open this URL in a browser:\n\n  {url}\n", file=sys.stderr, flush=True)

    async def show(url: str) -> None:
        announce(url)

    # Here, not at the top: the OAuth client takes longer to load than a usage error takes to say.
    from ..oauth.session import browser_opener

    opener = show if args.no_browser else browser_opener(announce)
    stored_env = dict(environ)
    if args.database:
        stored_env["GATEWAY_DATABASE_URL"] = args.database
    manager = OAuthManager(stored_env, opener=opener, login_timeout=args.timeout)
    principal = args.principal or ""
    session = manager.session(args.server, url, oauth, principal)
    whose = f"{principal}'s" if principal else "the gateway's"
    try:
        trio.run(session.login)
    except OAuthProblem as exc:
        print(f"lockgate: cannot log in to {args.server}: {exc.reason}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print(f"lockgate: login to {args.server} abandoned", file=sys.stderr)
        return EXIT_FAILED
    finally:
        manager.close()
    audit.record("oauth_login", f"oauth:{args.server}:{principal or 'gateway'}")
    token = session.provider.context.current_tokens
    scopes = token.scope if token is not None and token.scope else "-"
    expires = session.storage.expires_at
    until = moment(datetime.fromtimestamp(expires, UTC)) if expires is not None else "never"
    print(f"logged in to {args.server}: {whose} token stored (scopes {scopes}; expires {until})")
    return 0
