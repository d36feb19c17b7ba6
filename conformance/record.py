"""Record the conformance corpus: ``make conformance-record`` (or ``python conformance/record.py``).

Each scenario below starts a real ``lockgate serve --record`` over stdio (or
over Streamable HTTP, ``transport="http"``) in a scratch folder, drives it with a real client (the MCP SDK ``Client``, or a
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
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import trio

if __package__ in (None, ""):  # run as a script: make the checkout importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

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
    with tempfile.TemporaryDirectory(prefix="lockgate-record-") as scratch:
        work = Path(scratch)
        _prepare(work)
        # The Inspector takes --config for itself: the gateway finds its files under their default names.
        (work / ".mcp.json").write_text(json.dumps({"mcpServers": {"raw": RAW}}, indent=2))
        (work / ".mcp-gateway-rules.json").write_text(json.dumps(RULES, indent=2))
        env = {**_environ(Scenario(name=name, about="")), "HOME": str(work), "MCP_CATALOG_PATH": str(work / "catalog.json")}
        argv = [*command, "--cwd", str(work), "-e", "GATEWAY_AUDIT_LOG=audit.jsonl", "-e", "GATEWAY_INIT_STRATEGY=lazy",
                *arguments, "--", "python", "-m", "lockgate.shells", "serve", "--record", "recording"]
        with trio.fail_after(60):
            await trio.run_process(argv, cwd=str(work), env=env, capture_stdout=True, capture_stderr=True, check=False)
        sessions = sorted((work / "recording").glob("*-s1.*.jsonl"))
        if len(sessions) != 2:
            raise RuntimeError(f"{name}: expected a core and a wire transcript, found {sessions}")
        for path in sessions:
            kind = path.name.rsplit(".", 2)[-2]
            if kind == "core":
                keep(path, out / f"{name}.core.jsonl")
            else:
                (out / f"{name}.wire.jsonl").write_bytes(path.read_bytes())


# -- concurrent sessions (two clients of one gateway, in process) -----------------------


async def record_sessions(out: Path = TRANSCRIPTS) -> None:
    from lockgate.core import load_config
    from lockgate.core import ClientClosed, ClientOpened, GatewayStarted, ShutdownRequested
    from lockgate.core import Gateway
    from lockgate.shells.record import Recorder
    from lockgate.shells.runtime import Runtime

    with tempfile.TemporaryDirectory(prefix="lockgate-record-") as scratch:
        work = Path(scratch)
        _prepare(work)
        servers_text = json.dumps({"mcpServers": {"raw": RAW, "sdk": SDK}})
        rules_text = json.dumps(RULES)
        environ = _environ(Scenario(name=SESSIONS, about=""))
        old = os.getcwd()
        os.chdir(work)  # server commands and the audit log are relative to the gateway's folder
        try:
            config = load_config(servers_text=servers_text, servers_file="servers.json", rules_text=rules_text,
                                 rules_file="rules.json", environ=environ)
            recorder = Recorder(work / "recording", config, RULES, transport="memory", prefix="run")
            runtime = Runtime(recorder.wrap(Gateway(config)), settings=config.settings, environ=environ)
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
        for n in (1, 2):
            keep(work / "recording" / f"run-s{n}.core.jsonl", out / f"{SESSIONS}_{n}.core.jsonl")
            data = (work / "recording" / f"run-s{n}.wire.jsonl").read_bytes()
            (out / f"{SESSIONS}_{n}.wire.jsonl").write_bytes(data)


# -- canonical time --------------------------------------------------------------------

_BACKOFF_SECONDS = re.compile(r"next start attempt in [0-9.]+ s")


def _timeless(action: JSON) -> str:
    """An action with what depends on the clock blanked, as text."""
    action = json.loads(json.dumps(action))
    action.pop("deadline", None)
    if isinstance(action.get("record"), dict):
        action["record"].pop("latency_ms", None)
    return _BACKOFF_SECONDS.sub("next start attempt in N s", json.dumps(action, sort_keys=True))


def canonical(lines: list[JSON]) -> list[JSON] | None:
    """The transcript with event n at ``now = n`` ms and the actions computed again.

    Real times make every recording of a scenario differ from the last; on a
    clock that counts events, only changes of order or behaviour show in a
    diff. The core uses time only for deadlines, latencies and the backoff
    wait, so the actions must come out the same apart from those; if they do
    not, ``None`` says to keep the real times.
    """
    from lockgate.core import Gateway
    from lockgate.core.transcript import action_to_json, config_from_json, event_from_json

    gateway = Gateway(config_from_json(lines[0]["config"]))
    out: list[JSON] = [lines[0]]
    recorded: list[JSON] = []
    produced: list[JSON] = []
    count = 0
    for line in [*lines[1:], None]:
        if line is None or "event" in line:
            if [_timeless(a) for a in recorded] != [_timeless(a) for a in produced]:
                return None
            out.extend(produced)
            recorded, produced = [], []
            if line is None:
                break
            event = {**line, "now": count / 1000}
            count += 1
            out.append(event)
            produced = [action_to_json(a) for a in gateway.handle(event_from_json(event))]
        else:
            recorded.append(line)
    return out


def keep(source: Path, target: Path, clients: dict[str, str] | None = None) -> None:
    """Copy a core transcript into the corpus, on canonical time when that changes nothing else.

    ``clients`` renames client ids (random HTTP session ids) wherever they
    appear as a JSON string; :func:`canonical` then checks that the core
    decides the same with the new names.
    """
    text = source.read_text(encoding="utf-8")
    for old, new in (clients or {}).items():
        text = text.replace(json.dumps(old), json.dumps(new))
    lines = [json.loads(line) for line in text.splitlines()]
    # The HTTP front seeds the random balancing strategy; a fixed seed keeps
    # recordings alike, and canonical() checks that no decision depended on it.
    seeded = [{**line, "seed": 0} if line.get("event") == "GatewayStarted" and "seed" in line else line for line in lines]
    result = canonical(seeded) if seeded != lines else None
    if result is None:
        result = canonical(lines)
    if result is None:
        print(f"note: {target.name} keeps its real times (on an event clock it would decide otherwise)")
        result = lines
    target.write_text("".join(json.dumps(line, ensure_ascii=False) + "\n" for line in result), encoding="utf-8")


# -- running ---------------------------------------------------------------------------


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


def _environ(scenario: Scenario) -> dict[str, str]:
    bin_dir = str(Path(sys.executable).parent)
    return {
        "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", "/tmp"),
        "GATEWAY_AUDIT_LOG": "audit.jsonl",
        "GATEWAY_INIT_STRATEGY": "lazy",
        **scenario.env,
    }


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
    with tempfile.TemporaryDirectory(prefix="lockgate-record-") as scratch:
        work = Path(scratch)
        _prepare(work)
        (work / "servers.json").write_text(json.dumps({"mcpServers": scenario.servers}, indent=2))
        (work / "rules.json").write_text(json.dumps(scenario.rules, indent=2))
        argv = [sys.executable, "-m", "lockgate.shells", "serve", "--config", "servers.json", "--rules", "rules.json",
                "--record", "recording"]
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                gateway = await start_gateway(nursery, argv, _environ(scenario), work)
                try:
                    async with AsyncExitStack() as stack:
                        clients = [await stack.enter_async_context(Client(gateway.url, mode=scenario.sdk_mode, read_timeout_seconds=30))  # type: ignore[arg-type]
                                   for _ in range(scenario.sessions)]
                        await scenario.sdk(clients if scenario.sessions > 1 else clients[0])
                finally:
                    code = await gateway.stop()
        if code != 0:
            raise RuntimeError(f"{scenario.name}: lockgate exited with {code}:\n{gateway.stderr.decode(errors='replace')[-2000:]}")
        recording = work / "recording"
        names = [scenario.name] if scenario.sessions == 1 else [f"{scenario.name}_{n}" for n in range(1, scenario.sessions + 1)]
        cores = [next(recording.glob(f"*-s{n}.core.jsonl"), None) for n in range(1, len(names) + 1)]
        wires = [next(recording.glob(f"*-s{n}.wire.jsonl"), None) for n in range(1, len(names) + 1)]
        if None in cores or None in wires or next(recording.glob(f"*-s{len(names) + 1}.*.jsonl"), None):
            raise RuntimeError(f"{scenario.name}: expected {len(names)} sessions, found {sorted(recording.iterdir())}")
        clients_by_id = {}
        for path in cores:
            assert path is not None
            first = json.loads(path.read_text(encoding="utf-8").splitlines()[0])
            clients_by_id[first["client"]] = f"http-{first['session']}"
        out.mkdir(parents=True, exist_ok=True)
        for name, core, wire in zip(names, cores, wires):
            assert core is not None and wire is not None
            keep(core, out / f"{name}.core.jsonl", clients_by_id)
            (out / f"{name}.wire.jsonl").write_bytes(wire.read_bytes())


async def record(scenario: Scenario, out: Path = TRANSCRIPTS) -> None:
    """Run one scenario and keep its core and wire transcripts in ``out``."""
    if scenario.transport == "http":
        await record_http(scenario, out)
        return
    with tempfile.TemporaryDirectory(prefix="lockgate-record-") as scratch:
        work = Path(scratch)
        _prepare(work)
        (work / "servers.json").write_text(json.dumps({"mcpServers": scenario.servers}, indent=2))
        (work / "rules.json").write_text(json.dumps(scenario.rules, indent=2))
        argv = [sys.executable, "-m", "lockgate.shells", "serve", "--config", "servers.json", "--rules", "rules.json",
                "--record", "recording"]
        env = _environ(scenario)
        with trio.fail_after(60):
            if scenario.sdk is not None:
                from mcp import Client, StdioServerParameters

                params = StdioServerParameters(command=argv[0], args=argv[1:], env=env, cwd=str(work))
                async with Client(params, mode=scenario.sdk_mode, read_timeout_seconds=30) as client:  # type: ignore[arg-type]
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
        sessions = sorted((work / "recording").glob("*-s1.core.jsonl"))
        wires = sorted((work / "recording").glob("*-s1.wire.jsonl"))
        if len(sessions) != 1 or len(wires) != 1:
            raise RuntimeError(f"{scenario.name}: expected one session, found {sessions} {wires}")
        out.mkdir(parents=True, exist_ok=True)
        keep(sessions[0], out / f"{scenario.name}.core.jsonl")
        (out / f"{scenario.name}.wire.jsonl").write_bytes(wires[0].read_bytes())


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
