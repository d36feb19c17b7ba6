"""Canonical time: a recorded core transcript moved onto an event clock before it joins the corpus.

Real times make every recording of a scenario differ from the last. On a
clock that counts events (event n at ``now = n`` ms), with the actions
computed again by a fresh Gateway, only changes of order or behaviour show
in a diff. See "Canonical time" in ``conformance/README.md``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

__all__ = ["canonical", "keep"]

JSON = dict[str, Any]

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
    from lockgate.core.transcript import action_to_json, config_from_json, event_from_json, recorded_tokenizer
    from lockgate.shells.tokenizer import counter_named

    gateway = Gateway(config_from_json(lines[0]["config"]), count_tokens=counter_named(recorded_tokenizer(lines[0])))
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
