"""A fake downstream MCP server that answers from a recording (stdio, no SDK).

Two sources, two ways of answering:

``--core TRANSCRIPT --server NAME --state DIR`` (shell replay). The fake plays
one connection of server NAME as the core transcript recorded it: the N-th
time it starts (counted in DIR) it plays the N-th ``StartDownstream`` of NAME.
That connection's traffic is a script of inputs (what the gateway sent), outputs
(what the server sent) and maybe an exit. The fake walks it in order: an
output is written once every input recorded before it has arrived, so it
answers what was asked, and no sooner than it did when recorded (a result
recorded after a cancellation waits for the cancellation). An input that
arrives is matched to the first unmatched recorded input with the same method
and params, else the same method (responses match responses, in order).
Request ids and progress tokens are mapped from the recorded ones to the live
ones, should they differ.

``--wire TRANSCRIPT`` (fixture). The transcript is ``{"dir", "msg"}`` lines
between a client and a server (``../shared`` style). Each request that
arrives is answered like the recorded request with the same method and
params (else the same method): first the server messages recorded between
that request and its response (progress, requests), then the response, with
the live id and progress token. Requests it never saw get -32601.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

JSON = dict[str, Any]


def _write(data: bytes) -> None:
    sys.stdout.buffer.write(data + b"\n")
    sys.stdout.buffer.flush()


def _data(line: JSON) -> bytes:
    if "data" in line:
        return str(line["data"]).encode("utf-8")
    import base64

    return base64.b64decode(line["data_base64"])


def _key(msg: JSON) -> tuple[Any, ...]:
    """What identifies a message apart from its id and progress token."""
    if "method" not in msg:
        return ("response",)
    params = dict(msg.get("params") or {})
    params.pop("_meta", None)
    return (msg["method"], json.dumps(params, sort_keys=True))


def _match(items: list[tuple[int, JSON]], msg: JSON, used: set[int]) -> int | None:
    key = _key(msg)
    for exact in (True, False):
        for index, recorded in items:
            if index in used:
                continue
            other = _key(recorded)
            if other == key if exact else other[0] == key[0]:
                return index
    return None


def _remap(data: bytes, ids: dict[Any, Any], tokens: dict[Any, Any]) -> bytes:
    """Rewrite a recorded output's response id and progress token to the live ones."""
    try:
        msg = json.loads(data)
    except ValueError:
        return data
    if not isinstance(msg, dict):
        return data
    changed = False
    if "method" not in msg and "id" in msg and ids.get(msg["id"], msg["id"]) != msg["id"]:
        msg["id"] = ids[msg["id"]]
        changed = True
    params = msg.get("params")
    if msg.get("method") == "notifications/progress" and isinstance(params, dict):
        token = params.get("progressToken")
        if tokens.get(token, token) != token:
            params["progressToken"] = tokens[token]
            changed = True
    return json.dumps(msg, separators=(",", ":"), ensure_ascii=False).encode() if changed else data


def _read() -> JSON | None:
    """The next message from the gateway, or ``None`` at end of input."""
    while True:
        line = sys.stdin.buffer.readline()
        if not line:
            return None
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if isinstance(msg, dict):
            return msg


def _exit(reason: str) -> None:
    sys.stdout.flush()
    if reason.startswith("killed by signal "):
        name = reason.removeprefix("killed by signal ").split()[0]
        os.kill(os.getpid(), getattr(signal, name, signal.SIGKILL))
    code = reason.removeprefix("exited with code ")
    sys.exit(int(code) if code.isdigit() else 1)


# -- core transcripts ------------------------------------------------------------------


def script_from_core(path: Path, server: str, life: int) -> list[tuple[str, Any]]:
    """The ``life``-th (0-based) connection of ``server``: ``("in", msg)``, ``("out", bytes)``, ``("exit", reason)``."""
    starts: list[int] = []
    connection: int | None = None
    script: list[tuple[str, Any]] = []
    with path.open(encoding="utf-8") as file:
        for text in file:
            line = json.loads(text)
            kind = line.get("action") or line.get("event")
            if kind == "StartDownstream" and line["server"] == server:
                starts.append(line["downstream"])
                if len(starts) == life + 1:
                    connection = line["downstream"]
            if connection is None or line.get("downstream") != connection:
                continue
            if kind == "SendToDownstream":
                script.append(("in", line["message"]))
            elif kind == "DownstreamMessageReceived":
                script.append(("out", _data(line)))
            elif kind == "DownstreamExited":
                script.append(("exit", line["reason"]))
                break
            elif kind == "StopDownstream":
                break
    return script


def play_core(script: list[tuple[str, Any]]) -> None:
    inputs = [(i, item[1]) for i, item in enumerate(script) if item[0] == "in"]
    arrived: set[int] = set()
    ids: dict[Any, Any] = {}
    position = 0
    while True:
        if position < len(script):
            kind, value = script[position]
            if kind == "out":
                # The gateway's progress token for a call is the call's own id.
                _write(_remap(value, ids, ids))
                position += 1
                continue
            if kind == "exit":
                _exit(value)
            if position in arrived:
                position += 1
                continue
        msg = _read()
        if msg is None:
            return
        index = _match([(i, m) for i, m in inputs if i >= position], msg, arrived)
        if index is None:
            print(f"fake server: unexpected input {json.dumps(msg)[:200]}", file=sys.stderr)
            continue
        arrived.add(index)
        recorded = script[index][1]
        if "id" in recorded and "id" in msg:
            ids[recorded["id"]] = msg["id"]


def next_life(state: Path, server: str) -> int:
    state.mkdir(parents=True, exist_ok=True)
    life = 0
    while True:
        try:
            os.close(os.open(state / f"{server}.{life}", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            return life
        except FileExistsError:
            life += 1


# -- wire fixtures ---------------------------------------------------------------------


def play_wire(path: Path) -> None:
    lines = [json.loads(text) for text in path.read_text(encoding="utf-8").splitlines() if text.strip()]
    requests: list[tuple[int, JSON]] = []
    for index, line in enumerate(lines):
        msg = line.get("msg")
        if line.get("dir") == "c2s" and isinstance(msg, dict) and "method" in msg and "id" in msg:
            requests.append((index, msg))
    while (msg := _read()) is not None:
        if "method" not in msg or "id" not in msg:
            continue  # notifications and answers to our requests
        found = _match(requests, msg, set())
        if found is None:
            _write(json.dumps({"jsonrpc": "2.0", "id": msg["id"], "error": {"code": -32601, "message": f"Method not found: {msg['method']}"}}).encode())
            continue
        recorded = lines[found]["msg"]
        token = ((recorded.get("params") or {}).get("_meta") or {}).get("progressToken")
        live_token = ((msg.get("params") or {}).get("_meta") or {}).get("progressToken")
        ids = {recorded["id"]: msg["id"]}
        tokens = {token: live_token} if token is not None else {}
        for line in lines[found + 1:]:
            out = line.get("msg")
            if line.get("dir") != "s2c" or not isinstance(out, dict):
                continue
            if "method" not in out and out.get("id") == recorded["id"]:
                _write(_remap(json.dumps(out).encode(), ids, tokens))
                break
            if "method" in out:
                if out["method"] == "notifications/progress" and live_token is None:
                    continue
                _write(_remap(json.dumps(out).encode(), ids, tokens))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--core", type=Path)
    parser.add_argument("--server")
    parser.add_argument("--state", type=Path)
    parser.add_argument("--wire", type=Path)
    args = parser.parse_args()
    if args.wire is not None:
        play_wire(args.wire)
    elif args.core is not None and args.server and args.state is not None:
        play_core(script_from_core(args.core, args.server, next_life(args.state, args.server)))
    else:
        parser.error("use --wire FILE, or --core FILE --server NAME --state DIR")


if __name__ == "__main__":
    main()
