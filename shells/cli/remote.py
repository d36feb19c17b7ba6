"""``lockgate register``, ``deregister``, ``registry`` and ``stats``: a running gateway, through its REST API.

Each command reaches the gateway at ``--url`` (else ``$LOCKGATE_URL``, else
``http://127.0.0.1:8000``) with the credential of ``--api-key`` (else
``$LOCKGATE_API_KEY``) through :class:`lockgate.client.SyncGatewayClient`, and
prints a table, or the gateway's answer as JSON with ``--json``.

``register SERVER`` adds an instance to a server (``--endpoint URL`` of an MCP
server over Streamable HTTP, or ``--command`` with ``--arg``, ``--working-dir``
and ``--env``); ``deregister SERVER INSTANCE`` removes a registered one. Both
need an admin credential, or a gateway on loopback with authentication off.

Exit status 0; 1 when the gateway refused (the error's code and message on
stderr); 2 for a usage error or a gateway that cannot be reached.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .common import EXIT_FAILED, EXIT_USAGE, Subcommands, add_json_option, print_json, table

__all__ = ["DEFAULT_URL", "deregister", "register", "registry", "stats"]

DEFAULT_URL = "http://127.0.0.1:8000"

if TYPE_CHECKING:
    # Imported when a command runs, not when `lockgate --help` builds the parser.
    from lockgate.client import GatewayStats, Registry, SyncGatewayClient


def _add_connection_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", metavar="URL", help=f"the gateway's root URL; default: $LOCKGATE_URL, else {DEFAULT_URL}")
    parser.add_argument(
        "--api-key", metavar="KEY", help="a credential (API key or bearer token); default: $LOCKGATE_API_KEY"
    )
    add_json_option(parser)


@dataclass(frozen=True)
class _Remote:
    """One command against a running gateway: its options, and what it does with a client (an exit status)."""

    name: str
    help: str
    description: str
    options: Callable[[argparse.ArgumentParser], None]
    act: Callable[[SyncGatewayClient, argparse.Namespace], int]

    def add_parser(self, commands: Subcommands) -> None:
        parser = commands.add_parser(self.name, help=self.help, description=self.description)
        self.options(parser)
        _add_connection_options(parser)

    def run(self, args: argparse.Namespace, environ: Mapping[str, str]) -> int:
        from lockgate.client import GatewayError, GatewayUnreachable, SyncGatewayClient

        url = args.url or environ.get("LOCKGATE_URL") or DEFAULT_URL
        api_key = args.api_key or environ.get("LOCKGATE_API_KEY") or None
        try:
            # One retry: a command's user is waiting, and will run it again if the gateway is restarting.
            with SyncGatewayClient(url, api_key=api_key, retries=1) as client:
                return self.act(client, args)
        except GatewayUnreachable as exc:
            reason = exc.__cause__ if exc.__cause__ is not None else exc.message
            print(f"lockgate: error: cannot reach the gateway at {url} ({reason})", file=sys.stderr)
            return EXIT_USAGE
        except GatewayError as exc:
            print(f"lockgate: error: the gateway refused: {exc}", file=sys.stderr)
            return EXIT_FAILED
        except _UsageError as exc:
            print(f"lockgate: error: {exc}", file=sys.stderr)
            return EXIT_USAGE


class _UsageError(Exception):
    """An option's value the command cannot use; ``str()`` says which."""


# --- register ---


def _register_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("server", metavar="SERVER", help="the server's name (a new server when none has it)")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--endpoint", metavar="URL", help="an MCP server's Streamable HTTP URL")
    # Not dest="command": that is where `lockgate` keeps the name of the command being run.
    target.add_argument(
        "--command", dest="server_command", metavar="COMMAND", help='the command that starts a stdio MCP server, e.g. "python server.py"'
    )
    parser.add_argument("--arg", action="append", default=[], metavar="ARG", help="one more argument of --command (repeatable)")
    parser.add_argument("--working-dir", metavar="DIR", help="the folder --command runs in")
    parser.add_argument("--env", action="append", default=[], metavar="K=V", help="an environment variable of --command (repeatable)")
    parser.add_argument("--instance-id", metavar="ID", help="the instance's id ([A-Za-z0-9._-], at most 64); default: reg- and 8 hex digits")
    parser.add_argument("--weight", type=int, metavar="N", help="its share of the load against the server's other instances (>= 1)")
    parser.add_argument("--description", metavar="TEXT", help="what the server or instance is for")


def _register(client: SyncGatewayClient, args: argparse.Namespace) -> int:
    env: dict[str, str] = {}
    for item in args.env:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise _UsageError(f"--env {item!r} is not NAME=VALUE")
        env[name] = value
    command, command_args = None, list(args.arg)
    if args.server_command is not None:
        # "python server.py" in one option, as a shell would split it; --arg adds more.
        words = shlex.split(args.server_command)
        if not words:
            raise _UsageError("--command is empty")
        command, command_args = words[0], words[1:] + command_args
    elif args.arg or args.working_dir or env:
        raise _UsageError("--arg, --working-dir and --env go with --command, not --endpoint")
    registered = client.register(
        args.server,
        endpoint=args.endpoint,
        command=command,
        args=command_args,
        working_dir=args.working_dir,
        env=env or None,
        instance_id=args.instance_id,
        weight=args.weight,
        description=args.description,
    )
    if args.json:
        print_json(registered.model_dump(mode="json", by_alias=True))
    else:
        print(f"registered instance {registered.instance_id} of server {registered.server} ({registered.transport})")
    return 0


register = _Remote(
    "register",
    "add a server instance to a running gateway",
    "Add an instance to a server of a running gateway (a new server when none has the name): an MCP server's "
    "Streamable HTTP URL (--endpoint) or the command that starts a stdio one (--command). Needs an admin credential.",
    _register_options,
    _register,
)

# --- deregister ---


def _deregister_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("server", metavar="SERVER", help="the server's name")
    parser.add_argument("instance", metavar="INSTANCE", help="the registered instance's id (lockgate registry lists them)")


def _deregister(client: SyncGatewayClient, args: argparse.Namespace) -> int:
    removed = client.deregister(args.server, args.instance)
    if args.json:
        print_json(removed.model_dump(mode="json", by_alias=True))
    else:
        print(f"deregistered instance {removed.instance_id} of server {removed.server}")
    return 0


deregister = _Remote(
    "deregister",
    "remove a registered server instance from a running gateway",
    "Remove an instance that was registered at run time (one from the servers file stays). Needs an admin credential.",
    _deregister_options,
    _deregister,
)

# --- registry ---


def _no_options(parser: argparse.ArgumentParser) -> None:
    pass


def registry_lines(listing: Registry) -> list[str]:
    """The registry as a table: one row per instance."""
    if not listing.servers:
        return ["no servers"]
    rows = [["SERVER", "INSTANCE", "SOURCE", "TRANSPORT", "STATE", "HEALTHY", "WEIGHT", "TARGET"]]
    for name, server in listing.servers.items():
        for instance in server.instances:
            if instance.endpoint is not None:
                target = instance.endpoint
            else:
                target = shlex.join([instance.command or "", *instance.args]) if instance.command else "-"
            rows.append([
                name,
                instance.id,
                instance.source,
                instance.transport,
                instance.state or server.state or "-",
                "yes" if instance.healthy else "no",
                str(instance.weight),
                target,
            ])
        if not server.instances:
            rows.append([name, "-", server.source, "-", server.state or "-", "-", "-", "-"])
    return table(rows)


def _registry(client: SyncGatewayClient, args: argparse.Namespace) -> int:
    listing = client.registry()
    if args.json:
        print_json(listing.model_dump(mode="json", by_alias=True))
    else:
        print("\n".join(registry_lines(listing)))
    return 0


registry = _Remote(
    "registry",
    "list a running gateway's servers and instances",
    "List every server of a running gateway and its instances, from the servers file and registered at run time.",
    _no_options,
    _registry,
)

# --- stats ---


def _ms(value: float) -> str:
    return f"{value:.1f}"


def _percent(share: float) -> str:
    return f"{share * 100:.1f}%"


def stats_lines(figures: GatewayStats) -> list[str]:
    """The stats as a summary, a table of servers, of load by instance, and of health checks."""
    lines = [
        f"uptime {figures.uptime_seconds:.0f} s; {figures.requests.total} requests, {figures.requests.errors} errors "
        f"({_percent(figures.requests.error_rate)}); latency p50 {_ms(figures.latency_ms.p50)} ms, "
        f"p95 {_ms(figures.latency_ms.p95)} ms, p99 {_ms(figures.latency_ms.p99)} ms",
        f"sessions {figures.sessions.get('active', 0)}; calls in flight {figures.calls_in_flight}",
    ]
    if figures.servers:
        rows = [["SERVER", "REQUESTS", "ERRORS", "ERROR RATE", "P50 MS", "P95 MS", "P99 MS"]]
        load = [["SERVER", "INSTANCE", "CALLS", "IN FLIGHT", "SHARE"]]
        for name, server in figures.servers.items():
            latency = server.latency_ms
            rows.append([name, str(server.requests), str(server.errors), _percent(server.error_rate), _ms(latency.p50), _ms(latency.p95), _ms(latency.p99)])
            for instance, share in server.load_distribution.items():
                load.append([name, instance, str(share.calls), str(share.in_flight), _percent(share.share)])
        lines += ["", *table(rows)]
        if len(load) > 1:
            lines += ["", *table(load)]
    checker = figures.health_checker
    if checker.enabled:
        lines += ["", f"health checks every {checker.interval_seconds:g} s (timeout {checker.timeout_seconds:g} s)"]
        if checker.instances:
            rows = [["INSTANCE", "HEALTHY", "BREAKER", "FAILURES", "LAST ERROR"]]
            for key, checked in checker.instances.items():
                rows.append([key, "yes" if checked.healthy else "no", checked.breaker, str(checked.consecutive_failures), checked.last_error or "-"])
            lines += table(rows)
    else:
        lines += ["", "health checks off"]
    return lines


def _stats(client: SyncGatewayClient, args: argparse.Namespace) -> int:
    figures = client.stats()
    if args.json:
        print_json(figures.model_dump(mode="json", by_alias=True))
    else:
        print("\n".join(stats_lines(figures)))
    return 0


stats = _Remote(
    "stats",
    "show a running gateway's request counts, latency and load",
    "Show a running gateway's request counts, error rates, latency percentiles, sessions, load by instance "
    "and health checks.",
    _no_options,
    _stats,
)

