"""The ``lockgate`` command: find and validate the configuration, then serve stdio or HTTP.

Exit codes: 0 after a normal shutdown (stdin closed, SIGTERM, SIGINT), 2 for
a usage or configuration error (a missing file, an invalid one), with one
line per problem on stderr and no traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Mapping, Sequence
from functools import partial
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from .logs import NOTICE, get_logger, setup_logging

if TYPE_CHECKING:
    from lockgate.core.config import Settings

__all__ = ["build_parser", "main"]

SERVERS_VARIABLE = "GATEWAY_MCP_CONFIG"
RULES_VARIABLE = "GATEWAY_RULES"
SERVERS_DEFAULTS = ("./.mcp.json", "./config/.mcp.json")
RULES_DEFAULTS = ("./.mcp-gateway-rules.json", "./config/.mcp-gateway-rules.json")

_EXIT_USAGE = 2


class _Fatal(Exception):
    """One line for stderr, then exit 2."""


def package_version() -> str:
    try:
        return version("lockgate")
    except PackageNotFoundError:
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lockgate",
        description=(
            "An MCP gateway: one endpoint in front of many MCP servers, with "
            "on-demand tool discovery and per-agent access control."
        ),
    )
    parser.add_argument("--version", action="version", version=f"lockgate {package_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve = commands.add_parser(
        "serve",
        help="serve MCP over stdio (default) or Streamable HTTP, logging to stderr",
        description=(
            "Serve MCP over stdio until stdin closes, or over Streamable HTTP (--transport http), "
            "until SIGTERM/SIGINT arrives. "
            "Downstream servers come from the server configuration, access "
            "rules from the rules file."
        ),
    )
    serve.add_argument(
        "--config",
        metavar="FILE",
        help=(
            f"server configuration in the .mcp.json shape; default: ${SERVERS_VARIABLE}, "
            f"else {' then '.join(SERVERS_DEFAULTS)}"
        ),
    )
    serve.add_argument(
        "--rules",
        metavar="FILE",
        help=(
            f"access rules (.mcp-gateway-rules.json); default: ${RULES_VARIABLE}, "
            f"else {' then '.join(RULES_DEFAULTS)}"
        ),
    )
    serve.add_argument(
        "--debug",
        action="store_true",
        help="log everything, down to debug, on stderr (also GATEWAY_DEBUG=1)",
    )
    _add_transport_options(serve)
    return parser


def _add_transport_options(serve: argparse.ArgumentParser) -> None:
    serve.add_argument(
        "--transport",
        choices=("stdio", "http"),
        help="stdio (default) or Streamable HTTP at /mcp; also GATEWAY_TRANSPORT",
    )
    serve.add_argument("--host", help="HTTP address to bind; default: $GATEWAY_HTTP_HOST, else 127.0.0.1")
    serve.add_argument("--port", type=int, help="HTTP port (0 picks a free one); default: $GATEWAY_HTTP_PORT, else 8000")


def _with_transport_flags(settings: Settings, args: argparse.Namespace) -> Settings:
    """Command-line flags win over ``GATEWAY_TRANSPORT``, ``GATEWAY_HTTP_HOST`` and ``GATEWAY_HTTP_PORT``."""
    changes: dict[str, Any] = {}
    if args.transport is not None:
        changes["transport"] = args.transport
    if args.host is not None:
        changes["http_host"] = args.host
    if args.port is not None:
        if not 0 <= args.port <= 65535:
            raise _Fatal(f"--port {args.port} is not a port number (0 to 65535)")
        changes["http_port"] = args.port
    return dataclasses.replace(settings, **changes) if changes else settings


def _connect_hint(url: str) -> None:
    """Tell the operator where the endpoint is and one way to reach it (stderr: stdout is not MCP here either)."""
    print(
        f"Lockgate serves MCP over Streamable HTTP at {url}\n"
        f"  Python SDK:     async with mcp.Client({url!r}) as client: ...\n"
        f"  MCP Inspector:  npx @modelcontextprotocol/inspector --cli {url} --transport http --method tools/list\n"
        f"  Health:         curl {url.removesuffix('/mcp')}/health",
        file=sys.stderr,
        flush=True,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version and usage errors
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else _EXIT_USAGE)
    if args.command != "serve":
        parser.print_usage(sys.stderr)
        print("lockgate: error: a command is required (try: lockgate serve --help)", file=sys.stderr)
        return _EXIT_USAGE
    try:
        return _serve(args, os.environ)
    except _Fatal as exc:
        print(f"lockgate: error: {exc}", file=sys.stderr)
        return _EXIT_USAGE
    except KeyboardInterrupt:
        return 130


def _serve(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    import trio

    from lockgate.core.config import ConfigError, load_config, settings_from_env
    from lockgate.core.gateway import Gateway

    from .http import serve_http
    from .stdio import serve_process_stdio

    servers_file = locate(args.config, "--config", SERVERS_VARIABLE, SERVERS_DEFAULTS, environ, "server configuration")
    rules_file = locate(args.rules, "--rules", RULES_VARIABLE, RULES_DEFAULTS, environ, "rules file")
    servers_text = _read(servers_file)
    rules_text = _read(rules_file)
    try:
        settings = _with_transport_flags(settings_from_env(environ, debug=args.debug), args)
        config = load_config(
            servers_text=servers_text,
            servers_file=servers_file,
            rules_text=rules_text,
            rules_file=rules_file,
            environ=environ,
            settings=settings,
        )
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"lockgate: error: {problem}", file=sys.stderr)
        for warning in exc.warnings:
            print(f"lockgate: warning: {warning}", file=sys.stderr)
        return _EXIT_USAGE

    log = setup_logging(debug=config.settings.debug)
    for warning in config.warnings:
        log.warning(str(warning))
    servers = sorted(config.servers)
    log.log(
        NOTICE,
        f"lockgate {package_version()} serving {config.settings.transport}: "
        f"{_count(len(servers), 'server')} ({', '.join(servers) or 'none'}), "
        f"{_count(len(config.policy.agents), 'agent')}, "
        f"init strategy {config.settings.init_strategy}, "
        f"audit log {config.settings.audit_log}",
    )
    if config.settings.transport == "http":
        try:
            trio.run(partial(serve_http, Gateway(config), config.settings, on_listening=_connect_hint))
        except OSError as exc:  # the port is taken, say
            print(f"lockgate: error: cannot serve HTTP: {exc.strerror or exc}", file=sys.stderr)
            return _EXIT_USAGE
    else:
        trio.run(serve_process_stdio, Gateway(config), config.settings)
    get_logger().info("stopped")
    return 0


def locate(
    flag: str | None,
    flag_name: str,
    variable: str,
    defaults: Sequence[str],
    environ: Mapping[str, str],
    what: str,
) -> str:
    """The file to read: the flag, else the variable, else the first default that exists.

    Raises:
        _Fatal: naming what was looked for.
    """
    if flag:
        if not os.path.isfile(flag):
            raise _Fatal(f"{what} not found: {flag} (from {flag_name})")
        return flag
    value = environ.get(variable)
    if value:
        if not os.path.isfile(value):
            raise _Fatal(f"{what} not found: {value} (from {variable})")
        return value
    for candidate in defaults:
        if os.path.isfile(candidate):
            return candidate
    raise _Fatal(f"no {what} found: looked for {' and '.join(defaults)} (use {flag_name} FILE or set {variable})")


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as file:
            return file.read()
    except UnicodeDecodeError:
        raise _Fatal(f"{path}: not UTF-8 text") from None
    except OSError as exc:
        raise _Fatal(f"cannot read {path}: {exc.strerror or type(exc).__name__}") from None


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"
