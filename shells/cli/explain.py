"""``lockgate explain``: which servers and tools an agent may see and call, and why.

The servers are the files' and the live registry's (unless ``--no-registry``);
a server with registered instances says which.

Exit status 0 on success; 1 when the agent is not defined or a server failed
to start or list its tools; 2 for a usage or configuration error.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from typing import Any

from .common import (
    EXIT_FAILED,
    EXIT_USAGE,
    Subcommands,
    add_file_options,
    add_json_option,
    add_registry_option,
    load,
    print_json,
    registered_instances,
    table,
)

__all__ = ["add_parser", "run"]


def add_parser(commands: Subcommands) -> None:
    explain = commands.add_parser(
        "explain",
        help="show which servers and tools an agent may see and call, and why",
        description=(
            "Show, for one agent, every server and tool it may see and call, and "
            "the rule that decides each. By default the servers the agent may use "
            "are started to list their tools, then stopped; with --offline only "
            "the rules and server names are used, and each server's tool rules "
            "are shown instead. Instances registered at run time are included, "
            "unless --no-registry. Exit status 1 when the agent is not defined or a "
            "server could not list its tools."
        ),
    )
    add_file_options(explain)
    add_registry_option(explain)
    explain.add_argument("--agent", metavar="ID", required=True, help="the agent id to explain (as in agent_id)")
    explain.add_argument("--server", metavar="NAME", help="explain this server only")
    explain.add_argument(
        "--offline", action="store_true", help="start no server: explain from the rules and server names alone"
    )
    add_json_option(explain)


def run(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    import trio

    from lockgate.core import explain_agent

    from ..guardian import guarding
    from ..probe import probe_servers

    config = load(args, environ)
    if config is None:
        return EXIT_USAGE
    policy = config.policy
    if args.agent not in policy.agents:
        defined = ", ".join(sorted(policy.agents)) or "none"
        print(f"lockgate: error: agent {args.agent!r} is not defined in the rules (defined: {defined})", file=sys.stderr)
        return EXIT_FAILED
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
    registered = registered_instances(config)
    for entry in report["servers"]:
        if entry["server"] in failed:
            entry["error"] = failed[entry["server"]]
        if entry["server"] in registered:
            entry["registered"] = registered[entry["server"]]
    if args.json:
        print_json(report)
    else:
        _print_explanation(report)
    return EXIT_FAILED if failed else 0


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
        if "registered" in entry:
            print(f"  registered instances: {', '.join(entry['registered'])}")
        if not entry["allowed"]:
            print("  every tool is denied with it")
        elif "tool_rules" in entry:
            for singular, plural in (("tool", "tools"), ("resource", "resources"), ("prompt", "prompts")):
                if f"{singular}_rules" not in entry:
                    continue  # no resources or prompts lists: they follow the server
                if entry[f"{singular}_rules"]:
                    print(f"  {singular} rules, first match decides:")
                    rows = [[f"    {_verdict(r['allowed'])}", r["entry"], r["rule"]] for r in entry[f"{singular}_rules"]]
                    print("\n".join(table(rows)))
                print(f"  any other {singular}: {_decided(entry[f'other_{plural}'])}")
        elif not entry["configured"]:
            print("  no such server in the configuration")
        elif entry["tools"] is None:
            print(f"  tools not listed: {entry.get('error', 'not started')}")
        elif not entry["tools"]:
            print("  the server offers no tools")
        else:
            rows = [[f"  {_verdict(t['allowed'])}", str(t["name"]), t["rule"]] for t in entry["tools"]]
            print("\n".join(table(rows)))
