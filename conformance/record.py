"""Record the conformance corpus: ``make conformance-record`` (or ``python conformance/record.py``).

Each scenario (:mod:`conformance.scenarios`) starts a real ``lockgate serve
--record`` over stdio (or over Streamable HTTP, ``transport="http"``) in a
scratch folder, drives it with a real client (the MCP SDK ``Client``, or a
raw JSON-lines client for what the SDK never sends), and keeps the session's
core and wire transcripts as ``transcripts/<scenario>.core.jsonl`` and
``transcripts/<scenario>.wire.jsonl``. The downstreams are real too: the
SDK server and the raw misbehaving server in ``servers/``, the bundled
examples, the PyPI ``mcp-server-time`` and ``mcp-server-git``, and
``fake_server.py`` answering from the recorded sessions in ``fixtures/``.

Server commands and paths are relative to the scratch folder (``python``
from ``PATH``, ``servers/…``), so transcripts do not depend on where the
checkout lives. The scratch folder holds: ``servers`` and ``examples``
(links to this checkout), ``fixtures``, ``fake_server.py`` and ``repo`` (a
small git repository with fixed dates, for ``mcp-server-git``).

    python conformance/record.py                 # every scenario
    python conformance/record.py crash timeout   # only these (names or prefixes)
    python conformance/record.py --list
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import trio

if __package__ in (None, ""):  # run as a script: make the checkout importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from conformance.canonical import keep  # noqa: E402
from conformance.clients import INIT, MemoryClient, Raw, call_params  # noqa: E402
from conformance.scenarios import (  # noqa: E402
    HERE,
    INSPECTOR,
    RAW,
    ROOT,
    RULES,
    SCENARIOS,
    SDK,
    SESSIONS,
    TRANSCRIPTS,
    Scenario,
)

JSON = dict[str, Any]


# -- the MCP Inspector CLI ---------------------------------------------------------------


def _inspector() -> list[str] | None:
    """The command that runs ``mcp-inspector``, in a network namespace of its own when possible; ``None`` without Node 22."""
    import shutil

    found = shutil.which("mcp-inspector")
    node = shutil.which("node")
    if found is None or node is None:
        return None
    version = subprocess.run([node, "--version"], capture_output=True, text=True).stdout.strip().lstrip("v")
    if not version.split(".")[0].isdigit() or int(version.split(".")[0]) < 22:
        return None
    # Some Node tools listen on every interface; with only loopback nothing can reach them.
    isolated = shutil.which("unshare") and subprocess.run(["unshare", "-rn", "true"], capture_output=True).returncode == 0
    return (["unshare", "-rn"] if isolated else []) + [found, "--cli"]


async def record_inspector(name: str, arguments: list[str], command: list[str], out: Path = TRANSCRIPTS) -> None:
    with _scratch() as work:
        # The Inspector takes --config for itself: the gateway finds its files under their default names.
        (work / ".mcp.json").write_text(json.dumps({"mcpServers": {"raw": RAW}}, indent=2))
        (work / ".mcp-gateway-rules.json").write_text(json.dumps(RULES, indent=2))
        env = {**_environ(), "HOME": str(work), "MCP_CATALOG_PATH": str(work / "catalog.json")}
        argv = [*command, "--cwd", str(work), "-e", "GATEWAY_AUDIT_LOG=audit.jsonl", "-e", "GATEWAY_INIT_STRATEGY=lazy",
                *arguments, "--", "python", "-m", "lockgate.shells", "serve", "--record", "recording"]
        with trio.fail_after(60):
            await trio.run_process(argv, cwd=str(work), env=env, capture_stdout=True, capture_stderr=True, check=False)
        _keep_sessions(work / "recording", name, 1, out)


# -- concurrent sessions (two clients of one gateway, in process) -----------------------


async def record_sessions(out: Path = TRANSCRIPTS) -> None:
    from lockgate.core import load_config
    from lockgate.core import ClientClosed, ClientOpened, GatewayStarted, ShutdownRequested
    from lockgate.core import Gateway
    from lockgate.shells.record import Recorder
    from lockgate.shells.runtime import Runtime
    from lockgate.shells.tokenizer import counter_for

    with _scratch() as work:
        servers_text = json.dumps({"mcpServers": {"raw": RAW, "sdk": SDK}})
        rules_text = json.dumps(RULES)
        environ = _environ()
        old = os.getcwd()
        os.chdir(work)  # server commands and the audit log are relative to the gateway's folder
        try:
            config = load_config(servers=servers_text, servers_file="servers.json", rules=rules_text,
                                 rules_file="rules.json", environ=environ)
            recorder = Recorder(work / "recording", config, RULES, transport="memory", prefix="run")
            runtime = Runtime(
                recorder.wrap(Gateway(config, count_tokens=counter_for(config.settings))), settings=config.settings, environ=environ
            )
            async with trio.open_nursery() as nursery:
                await nursery.start(runtime.run)
                await runtime.feed(GatewayStarted(now=trio.current_time()))
                clients = [MemoryClient(runtime, n, recorder.wire(n)) for n in (1, 2)]
                for c in clients:
                    runtime.register_client(c.client, c.send_action)
                    await runtime.feed(ClientOpened(now=trio.current_time(), client=c.client, transport="memory"))

                async def session(c: MemoryClient, agent: str, server: str) -> None:
                    await c.request(1, "initialize", INIT)
                    await c.request(2, "tools/call", call_params("execute_tool", agent_id=agent, server=server, tool="echo", args={"text": agent}))
                    await c.request(3, "tools/call", call_params("execute_tool", agent_id=agent, server="raw", tool="slow", args={"steps": 2}))
                    await c.request(4, "tools/call", call_params("get_server_tools", agent_id=agent, server="raw", names="echo,drop_table"))

                async with trio.open_nursery() as both:
                    both.start_soon(session, clients[0], "dev", "sdk")
                    both.start_soon(session, clients[1], "reader", "raw")
                await runtime.feed(ClientClosed(now=trio.current_time(), client=1))
                await clients[1].request(5, "ping")
                await runtime.feed(ClientClosed(now=trio.current_time(), client=2))
                await runtime.feed(ShutdownRequested(now=trio.current_time()))
                await runtime.aclose()
            recorder.close()
        finally:
            os.chdir(old)
        _keep_sessions(work / "recording", SESSIONS, 2, out)


# -- running ---------------------------------------------------------------------------


@contextmanager
def _scratch() -> Iterator[Path]:
    """A scratch folder to record in, prepared (see the module docstring) and removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="lockgate-record-") as scratch:
        work = Path(scratch)
        _prepare(work)
        yield work


def _prepare(work: Path) -> None:
    (work / "servers").symlink_to(HERE / "servers")
    (work / "examples").symlink_to(ROOT / "examples" / "servers")
    (work / "fixtures").symlink_to(HERE / "fixtures")
    (work / "fake_server.py").symlink_to(HERE / "fake_server.py")
    repo = work / "repo"
    repo.mkdir()
    env = {**os.environ, "GIT_AUTHOR_NAME": "Lockgate", "GIT_AUTHOR_EMAIL": "conformance@example.invalid",
           "GIT_COMMITTER_NAME": "Lockgate", "GIT_COMMITTER_EMAIL": "conformance@example.invalid",
           "GIT_AUTHOR_DATE": "2026-01-01T00:00:00Z", "GIT_COMMITTER_DATE": "2026-01-01T00:00:00Z"}
    (repo / "README.md").write_text("A fixture repository.\n")
    for args in (["init", "-q", "-b", "main"], ["add", "README.md"], ["commit", "-q", "-m", "First commit"]):
        subprocess.run(["git", *args], cwd=repo, env=env, check=True)


def _environ(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The gateway's environment: this Python first on ``PATH``, an audit log, lazy starts, the handshake era towards servers, then ``extra``."""
    bin_dir = str(Path(sys.executable).parent)
    return {
        "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", "/tmp"),
        "GATEWAY_AUDIT_LOG": "audit.jsonl",
        "GATEWAY_INIT_STRATEGY": "lazy",
        # The corpus speaks the handshake era to its servers; a scenario of the stateless era says so in ``extra``.
        "GATEWAY_DOWNSTREAM_ERA": "handshake",
        **(extra or {}),
    }


def _serve_recording(work: Path, scenario: Scenario) -> list[str]:
    """Write the scenario's servers and rules files into ``work``; the command that serves them, recording."""
    (work / "servers.json").write_text(json.dumps({"mcpServers": scenario.servers}, indent=2))
    (work / "rules.json").write_text(json.dumps(scenario.rules, indent=2))
    return [sys.executable, "-m", "lockgate.shells", "serve", "--config", "servers.json", "--rules", "rules.json",
            "--record", "recording"]


def _keep_sessions(recording: Path, name: str, sessions: int, out: Path, *, rename_clients: bool = False) -> None:
    """Keep the transcripts of the ``sessions`` sessions in ``recording`` as ``name`` (``name_1`` … when several).

    With ``rename_clients``, session N's client id (a random HTTP session
    id) is written ``http-N`` instead, so two recordings differ only in behaviour.
    A stdio server's ``cwd`` (the servers file's folder: the random scratch
    folder) is written ``.``, the gateway's working folder, which is the same place.
    """
    names = [name] if sessions == 1 else [f"{name}_{n}" for n in range(1, sessions + 1)]
    cores = [next(recording.glob(f"*-s{n}.core.jsonl"), None) for n in range(1, sessions + 1)]
    wires = [next(recording.glob(f"*-s{n}.wire.jsonl"), None) for n in range(1, sessions + 1)]
    if None in cores or None in wires or next(recording.glob(f"*-s{sessions + 1}.*.jsonl"), None):
        found = sorted(recording.iterdir()) if recording.is_dir() else []
        raise RuntimeError(f"{name}: expected {sessions} session(s), found {found}")
    clients: dict[str, str] = {}
    for path in cores if rename_clients else []:
        assert path is not None
        first = json.loads(path.read_text(encoding="utf-8").splitlines()[0])
        clients[first["client"]] = f"http-{first['session']}"
    for scratch in {str(recording.parent), os.path.realpath(recording.parent)}:
        clients[scratch] = "."  # keep() renames whole JSON strings, client ids or not
    out.mkdir(parents=True, exist_ok=True)
    for session, core, wire in zip(names, cores, wires):
        assert core is not None and wire is not None
        keep(core, out / f"{session}.core.jsonl", clients)
        (out / f"{session}.wire.jsonl").write_bytes(wire.read_bytes())


async def record_http(scenario: Scenario, out: Path = TRANSCRIPTS) -> None:
    """Run one scenario over Streamable HTTP; keep each session's core and wire transcripts in ``out``.

    The SDK ``Client``s connect one after the other (session N is the N-th
    client), run the script, and leave (DELETE); then the gateway gets
    SIGTERM. Session ids are random: the core transcripts name session N
    ``http-N`` instead, so two recordings differ only in behaviour.
    """
    from contextlib import AsyncExitStack

    from mcp import Client

    from conformance.replay_http import start_gateway

    assert scenario.sdk is not None, "HTTP scenarios use the SDK Client"
    with _scratch() as work:
        argv = _serve_recording(work, scenario)
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                gateway = await start_gateway(nursery, argv, _environ(scenario.env), work)
                try:
                    async with AsyncExitStack() as stack:
                        clients = [await stack.enter_async_context(
                                       Client(gateway.url, mode=scenario.sdk_mode, read_timeout_seconds=30, **scenario.client_options))
                                   for _ in range(scenario.sessions)]
                        await scenario.sdk(clients if scenario.sessions > 1 else clients[0])
                finally:
                    code = await gateway.stop()
        if code != 0:
            raise RuntimeError(f"{scenario.name}: lockgate exited with {code}:\n{gateway.stderr.decode(errors='replace')[-2000:]}")
        _keep_sessions(work / "recording", scenario.name, scenario.sessions, out, rename_clients=True)


async def record(scenario: Scenario, out: Path = TRANSCRIPTS) -> None:
    """Run one scenario and keep its core and wire transcripts in ``out``."""
    if scenario.transport == "http":
        await record_http(scenario, out)
        return
    with _scratch() as work:
        argv = _serve_recording(work, scenario)
        env = _environ(scenario.env)
        with trio.fail_after(60):
            if scenario.sdk is not None:
                from mcp import Client, StdioServerParameters

                params = StdioServerParameters(command=argv[0], args=argv[1:], env=env, cwd=str(work))
                async with Client(params, mode=scenario.sdk_mode, read_timeout_seconds=30, **scenario.client_options) as client:
                    await scenario.sdk(client)
                # The client has closed the gateway's stdin; wait for it to finish writing.
                with trio.move_on_after(10):
                    while not list((work / "recording").glob("*.core.jsonl")) or _open_sessions(work / "recording"):
                        await trio.sleep(0.05)
            else:
                assert scenario.raw is not None
                with (work / "stderr.log").open("wb") as stderr:
                    process = await trio.lowlevel.open_process(argv, stdin=-1, stdout=-1, stderr=stderr, cwd=str(work), env=env)
                    raw = Raw(process)
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(raw.reader)
                        await scenario.raw(raw)
                        assert process.stdin is not None
                        await process.stdin.aclose()
                        code = await process.wait()
                if code != 0:
                    raise RuntimeError(f"{scenario.name}: lockgate exited with {code}:\n{(work / 'stderr.log').read_text()[-2000:]}")
        _keep_sessions(work / "recording", scenario.name, 1, out)


def _open_sessions(directory: Path) -> bool:
    """Whether a recording gateway is still running there (its run transcript lacks the shutdown)."""
    for run in directory.glob("*.all.core.jsonl"):
        text = run.read_text()
        if '"ShutdownRequested"' not in text:
            return True
    return False


async def main_async(names: list[str]) -> int:
    chosen = [s for s in SCENARIOS if not names or any(s.name == n or s.name.startswith(n) for n in names)]
    failures = 0
    total = len(chosen)
    inspector = [entry for entry in INSPECTOR if not names or any(entry[0].startswith(n) for n in names)]
    if inspector:
        command = _inspector()
        if command is None:
            print("skipped the MCP Inspector scenarios: mcp-inspector and Node 22 are not on PATH (make conformance-record installs them)")
        for name, _about, arguments in inspector if command else []:
            assert command is not None
            total += 1
            try:
                await record_inspector(name, arguments, command)
                print(f"recorded {name}")
            except Exception as exc:
                failures += 1
                print(f"FAILED {name}: {exc!r}", file=sys.stderr)
    if not names or any(SESSIONS.startswith(n) or n.startswith(SESSIONS) for n in names):
        total += 1
        try:
            await record_sessions()
            print(f"recorded {SESSIONS}_1 and {SESSIONS}_2")
        except Exception as exc:
            failures += 1
            print(f"FAILED {SESSIONS}: {exc!r}", file=sys.stderr)
    for s in chosen:
        try:
            await record(s)
            print(f"recorded {s.name}")
        except Exception as exc:  # report every scenario, not just the first failure
            failures += 1
            print(f"FAILED {s.name}: {exc!r}", file=sys.stderr)
    print(f"{total - failures} of {total} scenarios recorded into {TRANSCRIPTS.relative_to(ROOT)}")
    return 1 if failures else 0


def main() -> int:
    parser = argparse.ArgumentParser(description="Record the conformance corpus.")
    parser.add_argument("names", nargs="*", help="scenario names or prefixes (default: all)")
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    args = parser.parse_args()
    if args.list:
        for s in SCENARIOS:
            print(f"{s.name:36} {s.about}")
        for name, about, _ in INSPECTOR:
            print(f"{name:36} {about}")
        print(f"{SESSIONS + '_1, _2':36} two clients of one gateway at once, recorded in process (shell replay over HTTP)")
        return 0
    return trio.run(main_async, args.names)


if __name__ == "__main__":
    sys.exit(main())
