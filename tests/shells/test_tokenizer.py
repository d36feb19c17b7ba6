"""The tokenizer the shells hand the core: cl100k_base, loaded offline, and the figures `lockgate check` gives with it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import tiktoken

from lockgate.core import encode
from lockgate.shells.tokenizer import ENCODING, load_counter

from .raw_mcp_server import TOOLS
from .test_cli import EXAMPLES, REPO, clean_env, run

ENCODER = tiktoken.get_encoding(ENCODING)


def tiktoken_tokens(tools: list[dict[str, Any]]) -> int:
    """What tiktoken itself counts for each definition's compact JSON, summed."""
    return sum(len(ENCODER.encode_ordinary(encode(tool).decode())) for tool in tools)


def test_the_counter_is_tiktokens_cl100k_base() -> None:
    count = load_counter()
    assert load_counter() is count  # loaded once
    assert count(b"get_server_tools") == len(tiktoken.get_encoding(ENCODING).encode("get_server_tools"))
    # The same vocabulary as tiktoken's own cl100k_base (these ids are fixed by it).
    assert ENCODER.encode("The quick brown fox") == [791, 4062, 14198, 39935]
    # Text that looks like a special token is ordinary text in a tool's description.
    assert count(b"<|endoftext|>") == len(ENCODER.encode_ordinary("<|endoftext|>")) > 1
    assert count("h\u00e9llo \u2603".encode()) == len(ENCODER.encode("h\u00e9llo \u2603"))


def test_the_vocabulary_loads_with_no_network_and_no_download(tmp_path: Path) -> None:
    """Every socket refuses and the cache folder is empty: the shipped file is all it reads."""
    cache = tmp_path / "cache"
    cache.mkdir()
    program = (
        "import socket, sys\n"
        "def refuse(*args, **kwargs):\n"
        "    raise OSError('no network here')\n"
        "socket.socket.connect = refuse\n"
        "socket.create_connection = refuse\n"
        "socket.getaddrinfo = refuse\n"
        "from lockgate.shells.tokenizer import load_counter\n"
        "print(load_counter()(b'hello world'))\n"
        "assert 'requests' not in sys.modules, 'tiktoken reached for its HTTP client'\n"
    )
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "TIKTOKEN_CACHE_DIR": str(cache)}
    result = subprocess.run([sys.executable, "-c", program], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "2"


def test_validate_does_not_load_the_tokenizer(tmp_path: Path) -> None:
    """Only commands that count tokens pay for tiktoken's import and its vocabulary."""
    program = (
        "import sys\n"
        "from lockgate.shells.cli import main\n"
        f"status = main(['validate', '--config', {str(EXAMPLES / '.mcp.json')!r}, '--rules', {str(EXAMPLES / '.mcp-gateway-rules.json')!r}])\n"
        "assert status == 0, status\n"
        "assert not [m for m in sys.modules if m.startswith('tiktoken')], 'tiktoken was imported'\n"
    )
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "GATEWAY_STATE_DIR": str(tmp_path / "state")}
    result = subprocess.run([sys.executable, "-c", program], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def check_files(tmp_path: Path) -> list[str]:
    servers = {"raw": {"command": sys.executable, "args": [str(REPO / "tests" / "shells" / "raw_mcp_server.py")]}}
    rules = {
        "agents": {
            "few": {"allow": {"servers": ["raw"], "tools": {"raw": ["echo", "big"]}}, "mode": "auto"},
            "all": {"allow": {"servers": ["raw"]}, "mode": "auto"},
            "none": {},
        }
    }
    (tmp_path / "s.json").write_text(json.dumps({"mcpServers": servers}))
    (tmp_path / "r.json").write_text(json.dumps(rules))
    return ["--config", "s.json", "--rules", "r.json"]


def test_check_counts_tokens_with_tiktoken(tmp_path: Path) -> None:
    files = check_files(tmp_path)
    # A context window that puts "few" (two tools) under the threshold and "all" (five) over it.
    few = tiktoken_tokens([TOOLS[0], TOOLS[3]])
    every = tiktoken_tokens(TOOLS)
    window = str(10 * (few + every) // 2)
    result = run("check", "--json", *files, cwd=tmp_path, env=clean_env(GATEWAY_CONTEXT_WINDOW=window))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["tokenizer"] == "cl100k_base"
    assert report["servers"]["raw"]["tokens"] == every
    context = report["context"]
    assert context["all_servers"]["tokens"] == every
    assert context["auto_threshold_tokens"] == int(window) // 10
    from lockgate.core._tools import gateway_tools

    assert context["gateway"]["tokens"] == tiktoken_tokens(gateway_tools(debug=False))
    agents = context["agents"]
    assert agents["few"]["direct"]["tokens"] == agents["few"]["by_server"]["raw"]["tokens"] == few
    assert (agents["few"]["mode"], agents["few"]["auto_mode"]) == ("auto", "aggregate")
    assert agents["all"]["direct"]["tokens"] == every
    assert (agents["all"]["mode"], agents["all"]["auto_mode"]) == ("auto", "on_demand")
    assert agents["none"]["by_server"] == {} and agents["none"]["direct"]["tokens"] == 0
    assert agents["all"]["saved_tokens"] == every - context["gateway"]["tokens"]

    text = run("check", *files, cwd=tmp_path, env=clean_env(GATEWAY_CONTEXT_WINDOW=window))
    assert text.returncode == 0, text.stderr
    out = text.stdout
    assert f"all servers: 5 tools, {report['servers']['raw']['bytes']} bytes, {every} tokens;" in out
    assert "(tokens: cl100k_base)" in out
    assert f"mode auto aggregates under {int(window) // 10} tokens" in out
    sections = out.split("\n\n")
    agents_table = [line.split() for line in sections[2].splitlines()[2:]]
    assert agents_table == [
        ["all", "auto:", "on_demand", "1", "5", str(report["servers"]["raw"]["bytes"]), str(every),
         str(context["gateway"]["tokens"]), str(agents["all"]["saved_tokens"])],
        ["few", "auto:", "aggregate", "1", "2", str(agents["few"]["direct"]["bytes"]), str(few),
         str(context["gateway"]["tokens"]), str(agents["few"]["saved_tokens"])],
        ["none", "on_demand", "0", "0", "0", "0", str(context["gateway"]["tokens"]), str(-context["gateway"]["tokens"])],
    ]
    assert [line.split() for line in sections[3].splitlines()] == [
        ["tokens", "per", "agent", "and", "server"],
        ["agent", "server", "tools", "bytes", "tokens"],
        ["all", "raw", "5", str(report["servers"]["raw"]["bytes"]), str(every)],
        ["few", "raw", "2", str(agents["few"]["by_server"]["raw"]["bytes"]), str(few)],
    ]


def test_the_estimate_loads_nothing_and_counts_bytes_over_four(tmp_path: Path) -> None:
    from lockgate.core import Settings, estimate_bytes
    from lockgate.shells.tokenizer import counter_for, counter_named

    assert counter_for(Settings(tokenizer="estimate")) is estimate_bytes
    assert counter_for(Settings()) is load_counter()
    assert counter_named("estimate")(b"12345") == 2
    files = check_files(tmp_path)
    result = run("check", "--json", *files, cwd=tmp_path, env=clean_env(GATEWAY_TOKENIZER="estimate"))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["tokenizer"] == "estimate"
    assert report["servers"]["raw"]["tokens"] == sum(-(-len(encode(tool)) // 4) for tool in TOOLS)


def test_a_preloading_counter_counts_as_the_loaded_one() -> None:
    from lockgate.core import Settings, estimate_bytes
    from lockgate.shells.tokenizer import counter_for, load_counter, preloading_counter

    text = b'{"name":"echo","description":"Return the text unchanged."}'
    assert preloading_counter()(text) == load_counter()(text)
    assert counter_for(Settings(), preload=True)(text) == load_counter()(text)
    assert counter_for(Settings(tokenizer="estimate"), preload=True) is estimate_bytes
