"""``lockgate check``: start every server, list its tools, stop it, and report sizes.

The servers are the files' and the live registry's, unless ``--no-registry``.

Exit status 0 on success; 1 when a server failed to start or list its tools;
2 for a usage or configuration error.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from .common import (
    EXIT_FAILED,
    EXIT_USAGE,
    Subcommands,
    add_file_options,
    add_json_option,
    add_registry_option,
    count,
    load,
    print_json,
    table,
)

__all__ = ["add_parser", "run"]


def add_parser(commands: Subcommands) -> None:
    check = commands.add_parser(
        "check",
        help="start every server, list its tools, stop it, and report sizes",
        description=(
            "Start every configured server, complete the MCP handshake, list its "
            "tools and stop it. Reports per server its state, protocol version, "
            "era (stateless: MCP 2026-07-28; handshake: initialize), tool count and the size of its tool definitions (bytes, and tokens "
            "counted with the cl100k_base tokenizer), and per agent what its full "
            "tool list would cost in context, per server and in total, against the "
            "gateway's own tools, and what mode auto would choose. Instances "
            "registered at run time are included, unless --no-registry. With "
            "GATEWAY_REDIS_URL, also whether Redis answers (shared rate limits). Exit "
            "status 1 when a server fails."
        ),
    )
    add_file_options(check)
    add_registry_option(check)
    add_json_option(check)


def run(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    import trio

    from lockgate.core import context_report, tool_cost

    from ..guardian import guarding
    from ..probe import probe_servers
    from ..tokenizer import counter_for

    config = load(args, environ)
    if config is None:
        return EXIT_USAGE
    with guarding():
        probed = trio.run(probe_servers, config)
    counter = counter_for(config.settings)
    servers = {}
    for name, server in probed.items():
        status = server.status
        servers[name] = {
            "ok": server.ok,
            # A failed server may already be restarting; "failed" says what the probe saw.
            "state": status.get("state") if server.ok or not status.get("last_error") else "failed",
            "transport": status.get("transport"),
            "protocol_version": status.get("protocol_version"),
            "era": status.get("era"),
            "server_info": status.get("server_info"),
            "error": None if server.ok else (status.get("last_error") or f"still {status.get('state')}"),
            **tool_cost(server.tools or [], counter),
        }
    context = context_report(config, {name: server.tools for name, server in probed.items()}, counter)
    report = {
        "ok": all(s["ok"] for s in servers.values()),
        "tokenizer": config.settings.tokenizer,
        "servers": servers,
        "context": context,
    }
    shared = _shared_limits(config.settings.shared_limits, config.settings.redis_failure, config.settings.redis_timeout, environ)
    if shared is not None:
        report["shared_limits"] = shared
    if args.json:
        print_json(report)
    else:
        _print_check(report)
    return 0 if report["ok"] else EXIT_FAILED


def _shared_limits(shared: bool, failure: Any, timeout: float, environ: Mapping[str, str]) -> dict[str, Any] | None:
    """Does the Redis of shared rate limits answer (as ``/ready`` says it)? ``None`` without ``GATEWAY_REDIS_URL``."""
    import trio

    from ..shared_limits import from_environment

    limits = from_environment(environ, failure, timeout) if shared else None
    if limits is None:
        return None
    try:
        trio.run(limits.ping)
        return limits.status()
    finally:
        limits.close()


def _print_check(report: dict[str, Any]) -> None:
    rows = [["server", "state", "protocol", "era", "tools", "bytes", "tokens"]]
    for name, s in report["servers"].items():
        rows.append(
            [name, str(s["state"]), str(s["protocol_version"] or "-"), str(s["era"] or "-"), str(s["tools"]), str(s["bytes"]),
             str(s["tokens"])]
        )
    print("\n".join(table(rows)))
    for name, s in report["servers"].items():
        if not s["ok"]:
            print(f"FAILED {name}: {s['error']}")
    shared = report.get("shared_limits")
    if shared is not None and shared["reachable"]:
        print("rate limits: shared through Redis, which answers")
    elif shared is not None:
        outcome = "refused" if shared["on_failure"] == "closed" else "let through unchecked"
        print(f"WARNING rate limits: Redis does not answer ({shared.get('error')}); calls under a rate limit would be {outcome}")
    context = report["context"]
    own, every = context["gateway"], context["all_servers"]
    print(
        f"\nall servers: {count(every['tools'], 'tool')}, {every['bytes']} bytes, {every['tokens']} tokens; "
        f"gateway tools/list: {count(own['tools'], 'tool')}, {own['bytes']} bytes, {own['tokens']} tokens "
        f"(tokens: {report['tokenizer']})"
    )
    rows = [["agent", "mode", "servers", "tools", "bytes", "tokens", "via gateway", "saved"]]
    per_server = [["agent", "server", "tools", "bytes", "tokens"]]
    for agent, a in context["agents"].items():
        direct = a["direct"]
        mode = f"auto: {a['auto_mode']}" if "auto_mode" in a else a["mode"]
        rows.append(
            [agent, mode, str(len(a["servers"])), str(direct["tools"]), str(direct["bytes"]), str(direct["tokens"]),
             str(a["gateway"]["tokens"]), str(a["saved_tokens"])]
        )
        for server, cost in a["by_server"].items():
            per_server.append([agent, server, str(cost["tools"]), str(cost["bytes"]), str(cost["tokens"])])
    if len(rows) > 1:
        print(
            "\ncontext cost per agent (all allowed tools loaded up front vs the gateway's tools; "
            f"mode auto aggregates under {context['auto_threshold_tokens']} tokens)"
        )
        print("\n".join(table(rows)))
    if len(per_server) > 1:
        print("\ntokens per agent and server")
        print("\n".join(table(per_server)))
