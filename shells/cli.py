"""The ``lockgate`` command: serve (stdio or Streamable HTTP), validate, explain and check.

Exit codes:

- ``serve``: 0 after a normal shutdown (stdin closed, SIGTERM, SIGINT); 2 for
  a usage or configuration error (a missing file, an invalid one).
- ``validate``: 0 when both files are valid, 1 when not (or missing).
- ``explain``, ``check``: 0 on success; 1 when a server failed to start or
  list its tools, or (``explain``) the agent is not defined; 2 for a usage or
  configuration error.

Errors are one line each on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Mapping, Sequence
from functools import partial
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any, cast

from .configfiles import (
    RULES_DEFAULTS,
    RULES_VARIABLE,
    SERVERS_DEFAULTS,
    SERVERS_VARIABLE,
    FileProblem,
    locate_files,
    read_text,
)
from .logs import NOTICE, get_logger, setup_logging

if TYPE_CHECKING:
    import logging

    from lockgate.core import Config, ConfigError, Settings

__all__ = ["build_parser", "main"]

_EXIT_USAGE = 2
_EXIT_FAILED = 1


def package_version() -> str:
    try:
        return version("lockgate")
    except PackageNotFoundError:
        return "unknown"


def _add_file_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        metavar="FILE",
        help=(
            f"server configuration in the .mcp.json shape; default: ${SERVERS_VARIABLE}, "
            f"else {' then '.join(SERVERS_DEFAULTS)}"
        ),
    )
    parser.add_argument(
        "--rules",
        metavar="FILE",
        help=(
            f"access rules (.mcp-gateway-rules.json); default: ${RULES_VARIABLE}, "
            f"else {' then '.join(RULES_DEFAULTS)}"
        ),
    )


def _add_json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON document on stdout instead of text")


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
            "rules from the rules file. Both files are watched: a change is "
            "loaded without a restart (an invalid one is logged and ignored), "
            "and SIGHUP reloads at once."
        ),
    )
    _add_file_options(serve)
    serve.add_argument(
        "--debug",
        action="store_true",
        help="log everything, down to debug, on stderr, and offer get_gateway_status (also GATEWAY_DEBUG=1)",
    )
    _add_transport_options(serve)
    serve.add_argument(
        "--record",
        metavar="DIR",
        help="write core and wire transcripts of every session into DIR (see conformance/README.md)",
    )

    validate = commands.add_parser(
        "validate",
        help="check both configuration files and report every problem",
        description=(
            "Validate the server configuration, the rules file and the GATEWAY_* "
            "variables without starting anything. Every error is reported with "
            "its file and JSON path, followed by the warnings. Exit status 0 "
            "when valid, 1 when not."
        ),
    )
    _add_file_options(validate)
    _add_json_option(validate)

    explain = commands.add_parser(
        "explain",
        help="show which servers and tools an agent may see and call, and why",
        description=(
            "Show, for one agent, every server and tool it may see and call, and "
            "the rule that decides each. By default the servers the agent may use "
            "are started to list their tools, then stopped; with --offline only "
            "the rules and server names are used, and each server's tool rules "
            "are shown instead. Exit status 1 when the agent is not defined or a "
            "server could not list its tools."
        ),
    )
    _add_file_options(explain)
    explain.add_argument("--agent", metavar="ID", required=True, help="the agent id to explain (as in agent_id)")
    explain.add_argument("--server", metavar="NAME", help="explain this server only")
    explain.add_argument(
        "--offline", action="store_true", help="start no server: explain from the rules and server names alone"
    )
    _add_json_option(explain)

    check = commands.add_parser(
        "check",
        help="start every server, list its tools, stop it, and report sizes",
        description=(
            "Start every configured server, complete the MCP handshake, list its "
            "tools and stop it. Reports per server its state, protocol version, "
            "tool count and the size of its tool definitions (bytes and estimated "
            "tokens), and per agent what its full tool list would cost in context "
            "against the gateway's own tools. Exit status 1 when a server fails."
        ),
    )
    _add_file_options(check)
    _add_json_option(check)
    return parser


def _add_transport_options(serve: argparse.ArgumentParser) -> None:
    serve.add_argument(
        "--transport",
        choices=("stdio", "http"),
        help="stdio (default) or Streamable HTTP at /mcp; also GATEWAY_TRANSPORT",
    )
    serve.add_argument("--host", help="HTTP address to bind; default: $GATEWAY_HTTP_HOST, else 127.0.0.1")
    serve.add_argument("--port", type=_port, help="HTTP port (0 picks a free one); default: $GATEWAY_HTTP_PORT, else 8000")


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
    commands = {"serve": _serve, "validate": _validate, "explain": _explain, "check": _check}
    command = commands.get(args.command)
    if command is None:
        parser.print_usage(sys.stderr)
        print("lockgate: error: a command is required (try: lockgate --help)", file=sys.stderr)
        return _EXIT_USAGE
    try:
        return command(args, os.environ)
    except FileProblem as exc:
        print(f"lockgate: error: {exc}", file=sys.stderr)
        return _EXIT_USAGE
    except KeyboardInterrupt:
        return 130


# -- serve -------------------------------------------------------------------------


def _serve(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    import trio

    from lockgate.core import ConfigError, load_config, settings_from_env
    from lockgate.core import Gateway

    from dataclasses import replace

    from .guardian import guarding
    from .http import GatewayCore, serve_http
    from .record import Recorder
    from .reload import ReloadSource
    from .stdio import STDIO_CLIENT, serve_process_stdio

    files = locate_files(args.config, args.rules, environ)
    servers_text = read_text(files.servers)
    rules_text = read_text(files.rules)
    try:
        settings = _with_transport_flags(settings_from_env(environ, debug=args.debug), args)
        config = load_config(
            servers_text=servers_text,
            servers_file=files.servers,
            rules_text=rules_text,
            rules_file=files.rules,
            environ=environ,
            settings=settings,
        )
    except ConfigError as exc:
        _print_config_error(exc)
        return _EXIT_USAGE

    log = _setup_logging(config.settings)
    for warning in config.warnings:
        log.warning(warning.message, extra={"fields": {"file": warning.file, "path": warning.path}})
    servers = sorted(config.servers)
    log.log(
        NOTICE,
        f"lockgate {package_version()} serving {config.settings.transport}: "
        f"{_count(len(servers), 'server')} ({', '.join(servers) or 'none'}), "
        f"{_count(len(config.policy.agents), 'agent')}, "
        f"init strategy {config.settings.init_strategy}, "
        f"audit log {config.settings.audit_log}; "
        f"watching {files.servers} and {files.rules}",
    )
    source = ReloadSource(
        files=files, environ=dict(environ), settings=config.settings, loaded=(servers_text, rules_text)
    )
    recorder: Recorder | None = None
    core: GatewayCore = Gateway(config)
    if args.record:
        try:
            recorder = Recorder(args.record, config, json.loads(rules_text), transport=config.settings.transport)
        except OSError as exc:
            raise FileProblem(f"cannot record into {args.record}: {exc.strerror or type(exc).__name__}") from None
        core = cast("GatewayCore", recorder.wrap(core))  # it forwards the read-only accessors
        keep = recorder.remember_rules
        source = replace(source, on_config=lambda new, rules: keep(new, json.loads(rules)))
    try:
        # Servers die with the gateway however it ends; leftovers of a killed one are swept first.
        with guarding():
            if config.settings.transport == "http":
                try:
                    trio.run(
                        partial(
                            serve_http, core, config.settings, on_listening=_connect_hint, reload=source, recorder=recorder
                        )
                    )
                except OSError as exc:  # the port is taken, say
                    print(f"lockgate: error: cannot serve HTTP: {exc.strerror or exc}", file=sys.stderr)
                    return _EXIT_USAGE
            else:
                tap = recorder.wire(STDIO_CLIENT) if recorder is not None else None
                trio.run(serve_process_stdio, core, config.settings, source, tap)
    finally:
        if recorder is not None:
            recorder.close()
    get_logger().info("stopped")
    return 0


def _setup_logging(settings: Settings) -> logging.Logger:
    return setup_logging(debug=settings.debug, level=settings.log_level, log_format=settings.log_format)


def _print_config_error(exc: ConfigError) -> None:
    for problem in exc.problems:
        print(f"lockgate: error: {problem}", file=sys.stderr)
    for warning in exc.warnings:
        print(f"lockgate: warning: {warning}", file=sys.stderr)


def _load(args: argparse.Namespace, environ: Mapping[str, str]) -> Config | None:
    """Locate, read and validate both files for explain and check; ``None`` after printing errors."""
    from lockgate.core import ConfigError, load_config

    files = locate_files(args.config, args.rules, environ)
    try:
        config = load_config(
            servers_text=read_text(files.servers),
            servers_file=files.servers,
            rules_text=read_text(files.rules),
            rules_file=files.rules,
            environ=environ,
        )
    except ConfigError as exc:
        _print_config_error(exc)
        return None
    _setup_logging(config.settings)
    return config


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False))


def _table(rows: list[list[str]]) -> list[str]:
    """Left-aligned columns, two spaces apart."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]


# -- validate ----------------------------------------------------------------------


def _validate(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    from lockgate.core import ConfigError, Problem, load_config
    from lockgate.core import problem_json

    report: dict[str, Any] = {"valid": False, "servers_file": None, "rules_file": None}
    errors: list[Problem] = []
    warnings: tuple[Problem, ...] = ()
    config = None
    missing = False
    try:
        files = locate_files(args.config, args.rules, environ)
        report["servers_file"], report["rules_file"] = files.servers, files.rules
        texts = (read_text(files.servers), read_text(files.rules))
    except FileProblem as exc:
        # Its message names the file already, so text output shows it alone.
        errors.append(Problem(file=exc.path or "", path="", message=str(exc)))
        missing = True
    else:
        try:
            config = load_config(
                servers_text=texts[0], servers_file=files.servers, rules_text=texts[1], rules_file=files.rules,
                environ=environ,
            )
        except ConfigError as exc:
            errors, warnings = exc.problems, exc.warnings
        else:
            warnings = config.warnings
            report["valid"] = True
            report["servers"] = list(config.servers)
            report["agents"] = sorted(config.policy.agents)
    report["errors"] = [problem_json(p) for p in errors]
    report["warnings"] = [problem_json(p) for p in warnings]
    if args.json:
        _print_json(report)
    else:
        for problem in errors:
            print(f"error: {problem.message if missing else problem}")
        for warning in warnings:
            print(f"warning: {warning}")
        if config is not None:
            print(
                f"valid: {report['servers_file']} ({_count(len(config.servers), 'server')}), "
                f"{report['rules_file']} ({_count(len(config.policy.agents), 'agent')}), "
                f"{_count(len(warnings), 'warning')}"
            )
        else:
            print(f"invalid: {_count(len(errors), 'error')}, {_count(len(warnings), 'warning')}")
    return 0 if report["valid"] else _EXIT_FAILED


# -- explain -----------------------------------------------------------------------


def _explain(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    import trio

    from lockgate.core import explain_agent

    from .guardian import guarding
    from .probe import probe_servers

    config = _load(args, environ)
    if config is None:
        return _EXIT_USAGE
    policy = config.policy
    if args.agent not in policy.agents:
        defined = ", ".join(sorted(policy.agents)) or "none"
        print(f"lockgate: error: agent {args.agent!r} is not defined in the rules (defined: {defined})", file=sys.stderr)
        return _EXIT_FAILED
    failed: dict[str, str] = {}
    tools = None
    if not args.offline:
        names = [args.server] if args.server is not None else list(config.servers)
        wanted = [n for n in names if n in config.servers and policy.decide_server(args.agent, n).allowed]
        with guarding():
            probed = trio.run(probe_servers, config, wanted)
        tools = {name: server.tools for name, server in probed.items()}
        failed = {name: str(s.status.get("last_error") or s.status.get("state")) for name, s in probed.items() if not s.ok}
    report = explain_agent(config, args.agent, tools=tools, server=args.server)
    for entry in report["servers"]:
        if entry["server"] in failed:
            entry["error"] = failed[entry["server"]]
    if args.json:
        _print_json(report)
    else:
        _print_explanation(report)
    return _EXIT_FAILED if failed else 0


def _verdict(allowed: bool) -> str:
    return "allow" if allowed else "deny"


def _decided(decision: dict[str, Any]) -> str:
    return f"{'allowed' if decision['allowed'] else 'denied'} by {decision['rule']}"


def _print_explanation(report: dict[str, Any]) -> None:
    how = "from the rules alone (offline)" if report["offline"] else "with each server's listed tools"
    print(f"agent {report['agent']}, {how}")
    for entry in report["servers"]:
        where = "" if entry["configured"] else " (not configured)"
        print(f"\nserver {entry['server']}{where}: {_decided(entry)}")
        if not entry["allowed"]:
            print("  every tool is denied with it")
        elif "tool_rules" in entry:
            if entry["tool_rules"]:
                print("  tool rules, first match decides:")
                rows = [[f"    {_verdict(r['allowed'])}", r["entry"], r["rule"]] for r in entry["tool_rules"]]
                print("\n".join(_table(rows)))
            other = entry["other_tools"]
            print(f"  any other tool: {_decided(other)}")
        elif not entry["configured"]:
            print("  no such server in the configuration")
        elif entry["tools"] is None:
            print(f"  tools not listed: {entry.get('error', 'not started')}")
        elif not entry["tools"]:
            print("  the server offers no tools")
        else:
            rows = [[f"  {_verdict(t['allowed'])}", str(t["name"]), t["rule"]] for t in entry["tools"]]
            print("\n".join(_table(rows)))


# -- check -------------------------------------------------------------------------


def _check(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    import trio

    from lockgate.core import context_report, tool_cost

    from .guardian import guarding
    from .probe import probe_servers

    config = _load(args, environ)
    if config is None:
        return _EXIT_USAGE
    with guarding():
        probed = trio.run(probe_servers, config)
    servers = {}
    for name, server in probed.items():
        status = server.status
        servers[name] = {
            "ok": server.ok,
            # A failed server may already be restarting; "failed" says what the probe saw.
            "state": status.get("state") if server.ok or not status.get("last_error") else "failed",
            "transport": status.get("transport"),
            "protocol_version": status.get("protocol_version"),
            "server_info": status.get("server_info"),
            "error": None if server.ok else (status.get("last_error") or f"still {status.get('state')}"),
            **tool_cost(server.tools or []),
        }
    context = context_report(config, {name: server.tools for name, server in probed.items()})
    report = {"ok": all(s["ok"] for s in servers.values()), "servers": servers, "context": context}
    if args.json:
        _print_json(report)
    else:
        _print_check(report)
    return 0 if report["ok"] else _EXIT_FAILED


def _print_check(report: dict[str, Any]) -> None:
    rows = [["server", "state", "protocol", "tools", "bytes", "tokens"]]
    for name, s in report["servers"].items():
        rows.append([name, str(s["state"]), str(s["protocol_version"] or "-"), str(s["tools"]), str(s["bytes"]), str(s["tokens"])])
    print("\n".join(_table(rows)))
    for name, s in report["servers"].items():
        if not s["ok"]:
            print(f"FAILED {name}: {s['error']}")
    context = report["context"]
    own, every = context["gateway"], context["all_servers"]
    print(
        f"\nall servers: {_count(every['tools'], 'tool')}, {every['bytes']} bytes, ~{every['tokens']} tokens; "
        f"gateway tools/list: {_count(own['tools'], 'tool')}, {own['bytes']} bytes, ~{own['tokens']} tokens"
    )
    rows = [["agent", "servers", "tools", "bytes", "tokens", "via gateway", "saved"]]
    for agent, a in context["agents"].items():
        direct = a["direct"]
        rows.append(
            [agent, str(len(a["servers"])), str(direct["tools"]), str(direct["bytes"]), str(direct["tokens"]),
             str(a["gateway"]["tokens"]), str(a["saved_tokens"])]
        )
    if len(rows) > 1:
        print("\ncontext cost per agent (tokens: estimated, all allowed tools loaded up front vs the gateway's tools)")
        print("\n".join(_table(rows)))


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"
