"""``lockgate pin``: record, list, show and accept the tool definitions the gateway pins.

``lockgate pin [SERVER...]`` (or ``lockgate pin record [SERVER...]``)
starts the servers (default: all), lists their tools and pins each as it is
now, replacing what was pinned or quarantined. ``lockgate pin list`` shows
each server's pinned and quarantined tools; ``lockgate pin diff [SERVER
[TOOL]]`` a unified diff of each quarantined tool against its pin, the
changed fields named; ``lockgate pin accept SERVER [TOOL]`` pins a
quarantined tool (every one of the server's without ``TOOL``) as the gateway
last saw it. The store is the one ``lockgate serve`` uses: the database
``GATEWAY_DATABASE_URL`` names, else ``.mcp-gateway-pins.json`` next to the
rules file. A running gateway reads the lock file again within a second of
a change, and the database at its next reload (SIGHUP, or a change of the
servers or rules file).

Exit status 0 on success; 1 when a server failed to start (record) or there
is nothing to accept; 2 for a usage or configuration error, or a store that
cannot be read.
"""

from __future__ import annotations

import argparse
import difflib
import json
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
    count,
    load,
    print_json,
)

__all__ = ["add_parser", "run"]

_ACTIONS = ("record", "list", "diff", "accept")

JSONObject = dict[str, Any]


def add_parser(commands: Subcommands) -> None:
    pin = commands.add_parser(
        "pin",
        help="pin the servers' tool definitions; list, diff and accept quarantined changes",
        usage="lockgate pin [SERVER ...] | pin list | pin diff [SERVER [TOOL]] | pin accept SERVER [TOOL]",
        description=(
            "Tool definitions (name, description, input and output schema, annotations) are pinned the first "
            "time the gateway sees them; a tool that changes later is quarantined until accepted. "
            "'lockgate pin [SERVER ...]' starts the servers (default: all) and pins their tools as they are now "
            "('pin record SERVER' for a server named list, diff, accept or record). 'pin list' shows what is "
            "pinned and quarantined, 'pin diff' what changed, 'pin accept SERVER [TOOL]' pins a quarantined tool "
            "as the gateway last saw it. Pins are kept in the database GATEWAY_DATABASE_URL names, else in "
            ".mcp-gateway-pins.json next to the rules file."
        ),
    )
    add_file_options(pin)
    add_json_option(pin)
    add_registry_option(pin)
    pin.add_argument("words", nargs="*", metavar="ARG", help=argparse.SUPPRESS)


def run(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    from ..configfiles import locate_files
    from ..pins import DatabasePins, PinStoreError, pin_store

    words: list[str] = list(args.words)
    action = words.pop(0) if words and words[0] in _ACTIONS else "record"
    if action == "accept" and not 1 <= len(words) <= 2:
        return _usage("pin accept takes a server and, optionally, a tool")
    if action == "diff" and len(words) > 2:
        return _usage("pin diff takes at most a server and a tool")
    if action == "list" and words:
        return _usage("pin list takes no arguments")
    files = locate_files(args.config, args.rules, environ)
    try:
        store = pin_store(environ, files.rules)
    except PinStoreError as exc:
        print(f"lockgate: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        if action == "record":
            return _record(args, environ, store, words)
        stored = store.load()
        if action == "list":
            return _list(stored, args.json)
        if action == "diff":
            return _diff(stored, words)
        return _accept(store, stored, words[0], words[1] if len(words) > 1 else None)
    except PinStoreError as exc:
        print(f"lockgate: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        if isinstance(store, DatabasePins):
            store.close()


def _usage(message: str) -> int:
    print(f"lockgate: error: {message} (see lockgate pin --help)", file=sys.stderr)
    return EXIT_USAGE


def _record(args: argparse.Namespace, environ: Mapping[str, str], store: Any, names: list[str]) -> int:
    """Start the servers, pin their tools as they are now."""
    import trio

    from lockgate.core import pinned_definition, tool_digest

    from ..guardian import guarding
    from ..probe import probe_servers

    config = load(args, environ)
    if config is None:
        return EXIT_USAGE
    unknown = [name for name in names if name not in config.servers]
    if unknown:
        return _usage(f"no server named {', '.join(repr(n) for n in unknown)}")
    with guarding():
        probed = trio.run(probe_servers, config, names or None)
    status = 0
    for name, server in sorted(probed.items()):
        if not server.ok or server.tools is None:
            error = server.status.get("last_error") or f"still {server.status.get('state')}"
            print(f"lockgate: error: {name}: could not list its tools: {error}", file=sys.stderr)
            status = EXIT_FAILED
            continue
        record = {"tools": {t["name"]: {"digest": tool_digest(t), "definition": pinned_definition(t)} for t in server.tools}}
        store.save(name, record)
        print(f"{name}: pinned {count(len(record['tools']), 'tool')}")
    return status


def _list(stored: Mapping[str, Any], as_json: bool) -> int:
    report: dict[str, JSONObject] = {
        server: {
            "pinned": sorted(record.get("tools", {})),
            "quarantined": {
                tool: {"changed": held.get("changed", []), "reason": held.get("reason")}
                for tool, held in sorted(record.get("quarantined", {}).items())
            },
        }
        for server, record in sorted(stored.items()) if isinstance(record, dict)
    }
    if as_json:
        print_json(report)
        return 0
    if not report:
        print("nothing pinned yet")
    for server, entry in report.items():
        held = entry["quarantined"]
        print(f"{server}: {count(len(entry['pinned']), 'tool')} pinned, {len(held)} quarantined")
        for tool, info in held.items():
            what = ", ".join(info["changed"]) or info["reason"]
            print(f"  {tool}: {what}")
    return 0


def _held(stored: Mapping[str, Any], server: str | None, tool: str | None) -> list[tuple[str, str, JSONObject, JSONObject | None]]:
    """The quarantined tools named: (server, tool, what it is now, its pin's definition or None)."""
    found = []
    for name, record in sorted(stored.items()):
        if server is not None and name != server or not isinstance(record, dict):
            continue
        for held_name, held in sorted(record.get("quarantined", {}).items()):
            if tool is None or held_name == tool:
                pin = record.get("tools", {}).get(held_name)
                found.append((name, held_name, held, None if pin is None else pin.get("definition")))
    return found


def _diff(stored: Mapping[str, Any], words: list[str]) -> int:
    server = words[0] if words else None
    tool = words[1] if len(words) > 1 else None
    held = _held(stored, server, tool)
    if not held:
        print("no quarantined tools" + (f" of {server}" if server else ""))
        return 0
    for name, held_name, entry, pinned in held:
        changed = ", ".join(entry.get("changed", [])) or entry.get("reason", "")
        print(f"{name} {held_name}: {changed}")
        before = [] if pinned is None else _lines(pinned)
        after = _lines(entry.get("definition", {}))
        label = "(not pinned)" if pinned is None else "(pinned)"
        sys.stdout.writelines(difflib.unified_diff(
            before, after, fromfile=f"{name}/{held_name} {label}", tofile=f"{name}/{held_name} (now)",
        ))
    return 0


def _lines(definition: JSONObject) -> list[str]:
    return [line + "\n" for line in json.dumps(definition, indent=2, sort_keys=True, ensure_ascii=False).splitlines()]


def _accept(store: Any, stored: Mapping[str, Any], server: str, tool: str | None) -> int:
    held = _held(stored, server, tool)
    if not held:
        what = f"tool {tool!r} of server {server!r}" if tool else f"tool of server {server!r}"
        print(f"lockgate: error: no quarantined {what} (see lockgate pin list)", file=sys.stderr)
        return EXIT_FAILED
    record = dict(stored[server])
    tools = dict(record.get("tools", {}))
    quarantined = dict(record.get("quarantined", {}))
    for _, name, entry, _pinned in held:
        tools[name] = {"digest": entry["digest"], "definition": entry["definition"]}
        del quarantined[name]
        print(f"{server}: accepted {name}")
    record["tools"] = dict(sorted(tools.items()))
    if quarantined:
        record["quarantined"] = quarantined
    else:
        record.pop("quarantined", None)
    store.save(server, record)
    return 0
