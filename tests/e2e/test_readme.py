"""Every shell and Python block of README.md runs here as written, or is marked as not run, with why.

A block is skipped only when the line before its fence (blank lines aside)
is ``<!-- not run: REASON -->``. Otherwise:

- a ``sh`` block runs line by line in a fresh folder, with ``/abs/path/``
  standing for the bundled example's folder and ``lockgate`` the installed
  command; a ``lockgate serve`` line is started, checked to serve (an MCP
  ``initialize`` over stdio, ``/ready`` over HTTP) and stopped with SIGTERM,
  which it must answer with exit status 0;
- a ``python`` block runs as a program, with ``lockgate`` on ``PATH``; when it
  talks to ``http://127.0.0.1:8000`` a gateway serves the example there first
  (on a free port, written into the block);
- a block of output that starts with ``$ lockgate ...`` runs that command
  from the repository and must print what the block shows (a line ``…``
  stands for any lines, and a ``…`` inside a line for any text).

A ``not run`` comment that precedes no block, a marked block that is not of
a kind that would run, and a ``$`` block of another command fail the test.
The sizes of the gateway's ``tools/list`` that the text quotes are measured
against a real gateway too.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
EXAMPLES = REPO / "examples"
BIN = Path(sys.executable).parent
NOT_RUN = re.compile(r"^<!-- not run: (.+) -->$")
MARKER = re.compile(r"<!--\s*not run")
RUNNABLE = ("sh", "python")


@dataclass(frozen=True)
class Block:
    line: int
    info: str
    text: str
    not_run: str | None

    def __str__(self) -> str:
        return f"README.md:{self.line}"


def blocks() -> list[Block]:
    """The fenced blocks of the README, each with its ``not run`` reason if marked."""
    found: list[Block] = []
    lines = README.read_text(encoding="utf-8").splitlines()
    start: int | None = None
    for number, line in enumerate(lines, 1):
        if start is None and line.startswith("```"):
            start = number
        elif start is not None and line == "```":
            before = [text for text in lines[: start - 1] if text.strip()][-1:]
            marked = NOT_RUN.match(before[0]) if before else None
            body = "\n".join(lines[start : number - 1]) + "\n"
            found.append(Block(start, lines[start - 1][3:].strip(), body, marked.group(1) if marked else None))
            start = None
    return found


#: The state folder (database, keys) the blocks share, as one user's would be: never the real user's.
STATE = Path(tempfile.mkdtemp(prefix="lockgate-readme-state-"))
atexit.register(shutil.rmtree, STATE, ignore_errors=True)


def environment(**extra: str) -> dict[str, str]:
    """A clean environment: no GATEWAY_* of the caller's, a state folder of its own, this venv's commands first on PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env["XDG_STATE_HOME"] = str(STATE)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', os.defpath)}"
    env["PYTHON"] = sys.executable
    env.update(extra)
    return env


def concrete(text: str, port: int | None = None) -> str:
    text = text.replace("/abs/path/", f"{EXAMPLES}/")
    return text.replace("127.0.0.1:8000", f"127.0.0.1:{port}") if port is not None else text


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def commands(block: Block) -> list[str]:
    """The block's command lines: continuations joined, comments and blank lines dropped."""
    joined = block.text.replace("\\\n", " ")
    lines = (re.sub(r"(^|\s+)#\s.*$", "", raw).strip() for raw in joined.splitlines())
    return [line for line in lines if line]


@contextmanager
def serving(argv: list[str], cwd: Path, port: int | None) -> Iterator[subprocess.Popen[bytes]]:
    """Start a ``lockgate serve``; stop it (SIGTERM) at the end, and check that it stopped cleanly."""
    proc = subprocess.Popen(argv, cwd=cwd, env=environment(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        if port is not None:
            deadline = time.monotonic() + 30
            while True:
                assert proc.poll() is None, proc.communicate()[1].decode()
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "the gateway did not become ready"
                time.sleep(0.1)
        yield proc
    except BaseException:
        stop(proc)
        raise
    else:
        stderr = stop(proc)
        assert proc.returncode == 0, f"`{shlex.join(argv)}` exited with {proc.returncode} on SIGTERM\n{stderr}"


def stop(proc: subprocess.Popen[bytes]) -> str:
    """SIGTERM, then SIGKILL after 15 s; the process's stderr."""
    proc.terminate()
    try:
        return proc.communicate(timeout=15)[1].decode(errors="replace")
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.communicate()[1].decode(errors="replace")


def check_stdio_gateway(proc: subprocess.Popen[bytes]) -> None:
    """An MCP ``initialize`` over stdio is answered by Lockgate."""
    assert proc.stdin is not None and proc.stdout is not None
    hello = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "readme", "version": "1"}}}
    proc.stdin.write(json.dumps(hello).encode() + b"\n")
    proc.stdin.flush()
    answer = json.loads(proc.stdout.readline())
    assert answer["result"]["serverInfo"]["name"] == "lockgate"


def run_sh(block: Block, tmp: Path) -> None:
    lines = commands(block)
    if "127.0.0.1:8000" in block.text and not any(line.startswith("lockgate serve") for line in lines):
        # Requests of a running gateway (curl): the example serves them, on a free port.
        port = free_port()
        with serving(example_gateway(port), tmp, port):
            for command in lines:
                result = subprocess.run(concrete(command, port), shell=True, cwd=tmp, env=environment(), capture_output=True, text=True, timeout=120)
                assert result.returncode == 0, f"{block}: {command}\n{result.stdout}{result.stderr}"
        return
    for command in lines:
        argv = shlex.split(concrete(command))
        if argv[:2] == ["lockgate", "serve"]:
            port = free_port() if "--transport" in argv and {"http", "ws", "http,ws"} & set(argv) else None
            if port is not None:
                argv = shlex.split(concrete(command, port).replace("--port 8000", f"--port {port}"))
            with serving(argv, tmp, port) as proc:
                if port is None:
                    check_stdio_gateway(proc)
        else:
            result = subprocess.run(concrete(command), shell=True, cwd=tmp, env=environment(), capture_output=True, text=True, timeout=120)
            assert result.returncode == 0, f"{block}: {command}\n{result.stdout}{result.stderr}"


def run_python(block: Block, tmp: Path) -> None:
    def program(port: int | None) -> None:
        result = subprocess.run([sys.executable, "-c", concrete(block.text, port)], cwd=tmp, env=environment(), capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, f"{block}\n{result.stdout}{result.stderr}"

    if "127.0.0.1:8000" not in block.text:
        program(None)
        return
    port = free_port()
    with serving(example_gateway(port), tmp, port):
        program(port)


def example_gateway(port: int) -> list[str]:
    """``lockgate serve`` of the bundled example over HTTP (and WebSocket, at ``/ws``) on ``port``."""
    return ["lockgate", "serve", "--config", str(EXAMPLES / ".mcp.json"), "--rules", str(EXAMPLES / ".mcp-gateway-rules.json"), "--transport", "http,ws", "--port", str(port)]


def matches(shown: str, printed: str) -> bool:
    """``printed`` is what ``shown`` shows, where a ``…`` line stands for any lines and a ``…`` in a line for any text."""
    pattern = "".join(
        r"(?:.*\n)*?" if line == "…" else ".*".join(re.escape(part) for part in line.split("…")) + r"\n"
        for line in shown.splitlines()
    )
    return re.fullmatch(pattern, printed) is not None


def run_output(block: Block) -> None:
    first, _, shown = block.text.partition("\n")
    argv = shlex.split(first.removeprefix("$ "))
    result = subprocess.run(argv, cwd=REPO, env=environment(), capture_output=True, text=True, timeout=120)
    assert matches(shown, result.stdout + result.stderr), f"{block} shows\n{shown}\nbut `{first[2:]}` printed\n{result.stdout}{result.stderr}"


ALL = blocks()
RUN = [b for b in ALL if b.not_run is None and (b.info in RUNNABLE or b.text.startswith("$ lockgate "))]


def test_every_shell_and_python_block_is_run_or_says_why_not() -> None:
    unmarked_other = [b for b in ALL if b.info in ("bash", "shell", "console", "py", "python3")]
    assert unmarked_other == [], "use ```sh or ```python so the blocks are run"
    for block in ALL:
        if block.not_run is not None:
            assert block.info in RUNNABLE or block.text.startswith("$ "), f"{block}: only runnable blocks need a reason"
        elif block.text.startswith("$ "):
            assert block.text.startswith("$ lockgate "), f"{block}: only `$ lockgate ...` output is run; mark it, or show lockgate's"
    lines = README.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, 1):
        if MARKER.search(line):
            following = [b for b in ALL if b.line > number][:1]
            between = lines[number : following[0].line - 1] if following else ["(end of file)"]
            assert NOT_RUN.match(line) and not any(text.strip() for text in between), (
                f"README.md:{number}: a `<!-- not run: REASON -->` marker must be the line before a fence (blank lines aside)"
            )
    assert len(RUN) >= 5


@pytest.mark.parametrize("block", RUN, ids=str)
def test_readme_block(block: Block, tmp_path: Path) -> None:
    if block.info == "sh":
        run_sh(block, tmp_path)
    elif block.info == "python":
        run_python(block, tmp_path)
    else:
        run_output(block)


def gateway_tool_list(cwd: Path, *flags: str) -> list[dict[str, object]]:
    """The ``tools`` of a real gateway's ``tools/list`` (stdio, the bundled example)."""
    argv = ["lockgate", "serve", "--config", str(EXAMPLES / ".mcp.json"), "--rules", str(EXAMPLES / ".mcp-gateway-rules.json"), *flags]
    with serving(argv, cwd, None) as proc:
        assert proc.stdin is not None and proc.stdout is not None
        check_stdio_gateway(proc)
        for message in ({"jsonrpc": "2.0", "method": "notifications/initialized"}, {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}):
            proc.stdin.write(json.dumps(message).encode() + b"\n")
        proc.stdin.flush()
        answer = json.loads(proc.stdout.readline())
    tools: list[dict[str, object]] = answer["result"]["tools"]
    return tools


def compact(value: object) -> int:
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())


def figure(pattern: str, text: str) -> int:
    found = re.search(pattern, text)
    assert found is not None, f"README.md no longer says {pattern!r}: update this test"
    return int(found.group(1).replace(",", ""))


def test_the_sizes_of_the_gateway_tool_list_that_the_text_quotes(tmp_path: Path) -> None:
    text = README.read_text(encoding="utf-8")
    tools, debug_tools = gateway_tool_list(tmp_path), gateway_tool_list(tmp_path, "--debug")
    result = figure(r"The whole `tools/list` result is ([\d,]+) bytes of compact JSON", text)
    assert result == compact({"tools": tools}) == figure(r"\| `tools/list` result, bytes \| ([\d,]+) \|", text)
    assert figure(r"\(([\d,]+) in debug mode, which adds a fifth tool\)", text) == compact({"tools": debug_tools})
    assert (len(tools), len(debug_tools)) == (4, 5)
    # `lockgate check` adds up the definitions; the block that shows its output is run above.
    check = figure(r"`lockgate check` reports ([\d,]+) bytes", text)
    assert check == sum(compact(tool) for tool in tools)
    [shown] = [b.text for b in ALL if b.text.startswith("$ lockgate check ")]
    assert f"gateway tools/list: 4 tools, {check} bytes" in shown
    servers = re.search(r"the two small example servers alone list (\d+) tools in ([\d,]+) bytes", text)
    assert servers is not None
    assert f"all servers: {servers.group(1)} tools, {servers.group(2).replace(',', '')} bytes" in shown
