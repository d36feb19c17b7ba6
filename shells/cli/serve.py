"""``lockgate serve``: serve MCP over stdio, Streamable HTTP or WebSocket until stopped.

Exit status 0 after a normal shutdown (stdin closed, SIGTERM, SIGINT); 2 for
a usage or configuration error (a missing file, an invalid one, a servers
file with an entry that starts this gateway on itself, an address or port it
cannot listen on). With ``GATEWAY_STRICT=true`` a warning is an error too, at start-up
and on every reload (``load_config`` does it, from :attr:`Settings.strict`).
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import errno
import ipaddress
import json
import logging
import secrets
import socket
import sys
import textwrap
from collections.abc import Awaitable, Callable, Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

from ..configfiles import FileProblem, locate_files, read_text
from ..logs import NOTICE, get_logger
from .common import EXIT_USAGE, Subcommands, add_file_options, count, package_version, print_config_error, setup_command_logging

if TYPE_CHECKING:
    from lockgate.core import Config, Settings

    from ..pins import PinKeeper
    from ..registry import Registry

    from ..identity import Authentication, HeldCredential

    from ..http import CannotListen
    from ..workers import WorkerRole

__all__ = ["add_parser", "run"]


_DESCRIPTION = (
    "Serve MCP over stdio until stdin closes, or over Streamable HTTP (--transport http), "
    "WebSocket (--transport ws) or both on one port (--transport http,ws), "
    "until SIGTERM/SIGINT arrives. "
    "Downstream servers come from the server configuration, access "
    "rules from the rules file. Both files are watched: a change is "
    "loaded without a restart (an invalid one is logged and ignored), "
    "and SIGHUP reloads at once. With GATEWAY_STRICT=true, warnings "
    "refuse a configuration as errors do."
)


def add_parser(commands: Subcommands) -> None:
    serve = commands.add_parser(
        "serve",
        help="serve MCP over stdio (default), Streamable HTTP or WebSocket, logging to stderr",
        # Raw, so the GATEWAY_* table of the epilog keeps its lines; the description is wrapped here instead.
        description=textwrap.fill(_DESCRIPTION, width=78),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        add_help=False,
    )
    serve.add_argument(
        "-h", "--help", action=_HelpWithVariables, help="show this help message, with the GATEWAY_* variables, and exit"
    )
    add_file_options(serve)
    serve.add_argument(
        "--debug",
        action="store_true",
        help="log everything, down to debug, on stderr, and offer get_gateway_status (also GATEWAY_DEBUG=1)",
    )
    serve.add_argument(
        "--transport",
        choices=("stdio", "http", "ws", "http,ws"),
        help="stdio (default), Streamable HTTP at /mcp, WebSocket at /ws, or http,ws: both on one port; also GATEWAY_TRANSPORT",
    )
    serve.add_argument("--host", help="HTTP address to bind; default: $GATEWAY_HTTP_HOST, else 127.0.0.1")
    serve.add_argument("--port", type=_port, help="HTTP port (0 picks a free one); default: $GATEWAY_HTTP_PORT, else 8000")
    serve.add_argument(
        "--auth",
        action="store_true",
        help="require a credential (API key or bearer token) for every request; also GATEWAY_AUTH=required",
    )
    serve.add_argument(
        "--record",
        metavar="DIR",
        help="write core and wire transcripts of every session into DIR (see conformance/README.md)",
    )
    serve.add_argument(
        "--workers",
        type=_workers,
        default=1,
        metavar="N",
        help=(
            "over HTTP or WebSocket, serve with N worker processes on one listening socket, each a whole gateway "
            "with its own downstream servers (auto: one per core); default 1"
        ),
    )
    # A supervisor's worker (see lockgate.shells.workers): set by the supervisor, never by hand.
    serve.add_argument("--worker", help=argparse.SUPPRESS)


def run(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    import trio

    from lockgate.core import ConfigError, Gateway, load_config, settings_from_env

    from ..guardian import guarding
    from ..record import Recorder
    from ..reload import ReloadSource
    from ..runtime import GatewayCore
    from ..selfref import self_references
    from ..stdio import STDIO_CLIENT, serve_process_stdio
    from ..tokenizer import counter_for

    files = locate_files(args.config, args.rules, environ)
    servers_text = read_text(files.servers)
    rules_text = read_text(files.rules)
    try:
        settings = _with_transport_flags(settings_from_env(environ, debug=args.debug), args)
        config = load_config(
            servers=servers_text,
            servers_file=files.servers,
            rules=rules_text,
            rules_file=files.rules,
            environ=environ,
            settings=settings,
            base_dir=files.folder,
        )
    except ConfigError as exc:
        print_config_error(exc)
        return EXIT_USAGE
    # Before anything starts: such an entry would start a copy of this gateway, which would start another, ...
    loops = self_references(config, files.servers, environ)
    if loops:
        for message in loops:
            print(f"lockgate: error: {message}", file=sys.stderr)
        return EXIT_USAGE

    exposed = _exposed_without_auth(config.settings)
    if exposed is not None:
        print(f"lockgate: error: {exposed}", file=sys.stderr)
        return EXIT_USAGE

    role: WorkerRole | None = None
    if getattr(args, "worker", None) is not None:
        from ..workers import WorkerRole, die_with_parent, tag_worker_logs

        role = WorkerRole.parse(args.worker)
        if not die_with_parent(role.supervisor):
            return 0  # the supervisor is gone already: nothing to serve for
    else:
        from ..workers import resolve_workers

        workers = resolve_workers(getattr(args, "workers", 1))
        if workers > 1:
            return _supervise(args, files.servers, files.rules, config, workers, environ)

    log = setup_command_logging(config.settings)
    if role is not None:
        tag_worker_logs(log, role.index)
    for warning in config.warnings:
        log.warning(warning.message, extra={"fields": {"file": warning.file, "path": warning.path}})
    registry = _open_registry(config, environ, log)
    config = registry.config
    authentication: Authentication | None = None
    stdio_credential: HeldCredential | None = None
    if config.settings.auth == "required":
        opened = _open_authentication(environ, config.settings, log)
        if isinstance(opened, int):
            return opened
        authentication, stdio_credential = opened
    servers = sorted(config.servers)
    summary = (
        f"lockgate {package_version()} serving {config.settings.transport}: "
        f"{count(len(servers), 'server')} ({', '.join(servers) or 'none'}), "
        f"{count(len(config.policy.agents), 'agent')}, "
        f"init strategy {config.settings.init_strategy}, "
        f"audit log {config.settings.audit_log}; "
        f"watching {files.servers} and {files.rules}"
    )
    if config.settings.transport == "stdio":
        # Over HTTP (and WebSocket) it waits for the port to be bound: see _listening.
        log.log(NOTICE, summary)
    elif role is not None:
        log.info(summary)  # a worker: its supervisor gave the summary and the connect hints
    source = ReloadSource(
        files=files, environ=dict(environ), settings=config.settings, loaded=(servers_text, rules_text),
        registry=registry, pins=_open_pins(files.rules, environ, log),
    )
    recorder: Recorder | None = None
    # The tokenizer loads in a thread from here, once, while the servers start: not on the event
    # loop at a first call, and not before the servers start either.
    core: GatewayCore = Gateway(config, count_tokens=counter_for(config.settings, preload=True), state_key=secrets.token_bytes(32))
    if args.record:
        try:
            recorder = Recorder(args.record, config, json.loads(rules_text), transport=config.settings.transport)
        except OSError as exc:
            raise FileProblem(f"cannot record into {args.record}: {exc.strerror or type(exc).__name__}") from None
        core = recorder.wrap(core)
        keep = recorder.remember_rules
        source = dataclasses.replace(source, on_config=lambda new, rules: keep(new, json.loads(rules)))
    try:
        # Servers die with the gateway however it ends; leftovers of a killed one are swept first.
        with guarding():
            if config.settings.transport != "stdio":
                # Imported here: a stdio gateway never loads the HTTP stack (and starts its servers sooner).
                from ..http import CannotListen, serve_http

                listening = partial(_listening, log, summary, config.settings.transport)
                try:
                    trio.run(
                        _as_worker(role, partial(
                            serve_http, core, config.settings, on_listening=listening, reload=source,
                            recorder=recorder, authentication=authentication,
                        ))
                    )
                except CannotListen as exc:  # only the bind: a later failure is not the operator's to fix
                    print(f"lockgate: error: {_cannot_listen(exc)}", file=sys.stderr)
                    return EXIT_USAGE
            else:
                tap = recorder.wire(STDIO_CLIENT) if recorder is not None else None
                trio.run(serve_process_stdio, core, config.settings, source, tap, stdio_credential)
    finally:
        registry.close()
        if source.pins is not None:
            source.pins.close()
        if recorder is not None:
            recorder.close()
    get_logger().info("stopped")
    return 0


def _as_worker(role: WorkerRole | None, serve: Callable[..., Awaitable[None]]) -> Callable[[], Awaitable[None]]:
    """``serve`` as it runs: alone, or as the worker ``role`` says (its sockets, its stop, its ready line)."""
    if role is None:
        return serve
    from ..workers import run_worker

    return partial(run_worker, serve, role)


def _supervise(
    args: argparse.Namespace, servers_file: str, rules_file: str, config: Config, workers: int, environ: Mapping[str, str]
) -> int:
    """``--workers N`` with N > 1: bind the port, then start and supervise N workers on it (see :mod:`..workers`)."""
    import os

    from ..http import CannotListen
    from ..workers import Supervisor, bind_listeners

    settings = config.settings
    if settings.transport == "stdio":
        print(
            f"lockgate: error: --workers {args.workers} needs the HTTP or WebSocket front (--transport http, ws or "
            "http,ws): over stdio one client talks to one process",
            file=sys.stderr,
        )
        return EXIT_USAGE
    if args.record:
        print("lockgate: error: --record writes one process's transcripts: record with one worker", file=sys.stderr)
        return EXIT_USAGE
    log = setup_command_logging(settings)
    for warning in config.warnings:
        log.warning(warning.message, extra={"fields": {"file": warning.file, "path": warning.path}})
    try:
        sockets = bind_listeners(settings.http_host, settings.http_port)
    except CannotListen as exc:
        print(f"lockgate: error: {_cannot_listen(exc)}", file=sys.stderr)
        return EXIT_USAGE
    bound = sockets[0].getsockname()[1]
    command = [
        sys.executable, "-m", "lockgate.shells", "serve", "--config", servers_file, "--rules", rules_file,
        "--transport", settings.transport, "--host", settings.http_host, "--port", str(bound),
    ]
    if args.debug:
        command.append("--debug")
    if args.auth:
        command.append("--auth")
    servers = sorted(config.servers)
    summary = (
        f"lockgate {package_version()} serving {settings.transport} with {count(workers, 'worker')}: "
        f"{count(len(servers), 'server')} ({', '.join(servers) or 'none'}) each, "
        f"{count(len(config.policy.agents), 'agent')}, audit log {settings.audit_log}; "
        f"watching {servers_file} and {rules_file}"
    )
    host = settings.http_host
    root = f"http://{'127.0.0.1' if host in ('', '0.0.0.0', '::') else f'[{host}]' if ':' in host else host}:{bound}"
    url = f"{root}/ws" if settings.transport == "ws" else f"{root}/mcp"
    if settings.transport == "ws":
        url = "ws://" + url.removeprefix("http://")
    worker_environ = dict(environ)
    if not worker_environ.get("GATEWAY_SESSION_KEY", "").strip() and not worker_environ.get("GATEWAY_SECRET_KEY", "").strip():
        # Workers must seal session ids under one key to be interchangeable; with none configured
        # (and no state folder to share one through) they share one drawn for this run.
        from lockgate.shells.sealed import KeyRing, SecretKeyError

        try:
            configured = KeyRing.for_sessions(worker_environ) is not None
        except SecretKeyError:
            configured = True  # each worker reports the key problem itself, and stops
        if not configured:
            worker_environ["GATEWAY_SESSION_KEY"] = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")
    supervisor = Supervisor(
        command, sockets, workers, grace=settings.shutdown_grace,
        environ=None if environ is os.environ and worker_environ == dict(environ) else worker_environ,
        on_ready=partial(_listening, log, summary, settings.transport, url),
    )
    status = supervisor.run()
    get_logger().info("stopped")
    return status


def _open_registry(config: Config, environ: Mapping[str, str], log: logging.Logger) -> Registry:
    """The live registry over ``config``, with the instances registered in the database merged in.

    A database that cannot be read is logged and the gateway serves the
    files' configuration: the registry tries it again at the first
    registration.
    """
    from ..registry import Registry, load_registrations, registry_store_url

    url = registry_store_url(environ)
    try:
        table, registered = load_registrations(url)
    except Exception as exc:
        # The store (and SQLAlchemy with it) is loaded only when there is a database to read:
        # importing it here first would cost every start without one a few hundred milliseconds.
        from ..store import StoreError

        if not isinstance(exc, StoreError):
            raise
        log.error(f"cannot load registered instances: {exc}")
        table, registered = None, []
    registry = Registry(config, registered, url=url, table=table, environ=environ)
    if registered:
        log.log(NOTICE, f"{count(len(registered), 'registered instance')} merged from the registry")
    return registry


def _open_pins(rules_file: str, environ: Mapping[str, str], log: logging.Logger) -> PinKeeper:
    """The tool pins' store (the database, else the lock file next to the rules).

    A database that cannot be opened is logged, and the gateway serves with
    every tool quarantined (pinning fails closed), saving nothing.
    """
    from ..pins import PinKeeper, PinStoreError, pin_store

    try:
        store = pin_store(environ, rules_file)
    except PinStoreError as exc:
        log.error(f"cannot open the tool pins: {exc}; every tool is quarantined")
        return PinKeeper(None, str(exc))
    log.info(f"tool pins kept in {store.description}")
    return PinKeeper(store)


def _workers(text: str) -> int | str:
    from ..workers import parse_workers

    try:
        return parse_workers(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _port(text: str) -> int:
    if text.isascii() and text.isdigit() and int(text) <= 65535:
        return int(text)
    raise argparse.ArgumentTypeError(f"{text!r} is not a port number (0 to 65535)")


def _with_transport_flags(settings: Settings, args: argparse.Namespace) -> Settings:
    """Command-line flags win over ``GATEWAY_TRANSPORT``, ``GATEWAY_HTTP_HOST`` and ``GATEWAY_HTTP_PORT``."""
    changes: dict[str, Any] = {}
    if args.transport is not None:
        changes["transport"] = args.transport
    if args.host is not None:
        changes["http_host"] = args.host
    if args.port is not None:
        changes["http_port"] = args.port
    if args.auth:
        changes["auth"] = "required"
    return dataclasses.replace(settings, **changes) if changes else settings


def _exposed_without_auth(settings: Settings) -> str | None:
    """Why serving would expose the gateway beyond this machine without authentication; ``None`` when it would not."""
    if settings.transport == "stdio" or settings.auth != "off" or _loopback(settings.http_host):
        return None
    return (
        f"serving HTTP on {settings.http_host or '*'} without authentication would let anyone who reaches it act "
        "as any agent; turn authentication on with --auth or GATEWAY_AUTH=required, or set GATEWAY_AUTH=none "
        "to serve without it on purpose"
    )


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name other than localhost may resolve anywhere


def _open_authentication(
    environ: Mapping[str, str], settings: Settings, log: logging.Logger
) -> tuple[Authentication, HeldCredential | None] | int:
    """Open the credential store and token verifiers, or say why not (the exit status).

    Over stdio the caller's credential is ``GATEWAY_API_KEY`` (or a bearer
    token in it), checked now so that a wrong one stops the start, and
    checked again while serving (:class:`~..identity.HeldCredential`).
    """
    import trio

    from ..auth import TokenSetupError
    from ..identity import HeldCredential, Refused, open_authentication
    from ..store import StoreError

    try:
        authentication, note = trio.run(open_authentication, environ)
    except (StoreError, TokenSetupError) as exc:
        print(f"lockgate: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if note is not None:
        log.log(NOTICE, note)
    identity = authentication.identity
    if not identity.has_admin:
        log.warning("no admin user yet: create one with lockgate user create NAME --role admin")
    if settings.transport != "stdio":
        return authentication, None
    key = environ.get("GATEWAY_API_KEY", "").strip()
    if not key:
        print(
            "lockgate: error: GATEWAY_AUTH=required over stdio needs the client's credential in GATEWAY_API_KEY",
            file=sys.stderr,
        )
        return EXIT_USAGE
    held = HeldCredential(authentication, key)
    checked = held.check(0.0)
    if isinstance(checked, Refused):
        print(f"lockgate: error: GATEWAY_API_KEY: {checked.reason}", file=sys.stderr)
        return EXIT_USAGE
    return authentication, held


def _listening(log: logging.Logger, summary: str, transport: str, url: str) -> None:
    """Once the HTTP port is bound (not before, so nothing claims to serve a port it failed to get)."""
    log.log(NOTICE, summary)
    _connect_hint(url)
    if transport == "http,ws":
        _connect_hint("ws://" + url.removeprefix("http://").removesuffix("/mcp") + "/ws")


def _cannot_listen(exc: CannotListen) -> str:
    """The one line for a listening socket that cannot be opened: where, why, and which option changes it."""
    host = exc.host or "*"
    where = f"[{host}]:{exc.port}" if ":" in host else f"{host}:{exc.port}"
    # The port is what to change when it is taken, the address when it is not this machine's.
    other_port = "choose another port with --port or GATEWAY_HTTP_PORT (or another address with --host / GATEWAY_HTTP_HOST)"
    other_address = "choose another address with --host or GATEWAY_HTTP_HOST"
    error = exc.error
    if isinstance(error, socket.gaierror):
        why, fix = f"cannot resolve {exc.host!r} ({error.strerror or error})", other_address
    elif error.errno == errno.EADDRINUSE:
        why, fix = "address already in use", other_port
    elif error.errno == errno.EACCES and 0 < exc.port < 1024:
        why = "permission denied (a port below 1024 needs privileges)"
        fix = "choose a port of 1024 or more with --port or GATEWAY_HTTP_PORT"
    elif error.errno == errno.EADDRNOTAVAIL:
        why, fix = "address not available (it is not an address of this machine)", other_address
    else:
        reason = error.strerror or str(error) or type(error).__name__
        why, fix = reason[:1].lower() + reason[1:], other_port
    return f"cannot listen on {where}: {why}; {fix}"


class _HelpWithVariables(argparse.Action):
    """``serve -h/--help``: the usual help, then the ``GATEWAY_*`` variables and their defaults.

    The table is built only when asked for: its source, the variables model
    in ``lockgate.core``, imports pydantic, which would slow every command.
    """

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS, help: str | None = None) -> None:
        super().__init__(option_strings=option_strings, dest=dest, default=argparse.SUPPRESS, nargs=0, help=help)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        parser.epilog = environment_help()
        parser.print_help()
        parser.exit()


def environment_help() -> str:
    """The epilog of ``serve --help``: every ``GATEWAY_*`` variable Lockgate reads, its default and use."""
    from lockgate.core import environment_variables

    lines = ["environment variables (a flag wins over its variable; empty counts as unset):"]
    for variable in environment_variables():
        lines.append(f"  {variable.name} (default: {variable.default})")
        if variable.description:
            lines.append(f"      {variable.description}")
    return "\n".join(lines)


def _connect_hint(url: str) -> None:
    """Tell the operator where the endpoint is and one way to reach it (stderr: stdout is not MCP here either)."""
    if url.startswith("ws://"):
        root = "http://" + url.removeprefix("ws://").removesuffix("/ws")
        print(
            f"Lockgate serves MCP over WebSocket at {url} (subprotocol mcp; one JSON-RPC message per text message)\n"
            f"  Python:         async with websockets.connect({url!r}, subprotocols=['mcp']) as ws: ...\n"
            f"  Health:         curl {root}/health",
            file=sys.stderr,
            flush=True,
        )
        return
    root = url.removesuffix("/mcp")
    print(
        f"Lockgate serves MCP over Streamable HTTP at {url}\n"
        f"  Python SDK:     async with mcp.Client({url!r}) as client: ...\n"
        f"  MCP Inspector:  npx @modelcontextprotocol/inspector --cli {url} --transport http --method tools/list\n"
        f"  Health:         curl {root}/health\n"
        f"  Status page:    {root}/   REST API: {root}/docs",
        file=sys.stderr,
        flush=True,
    )
