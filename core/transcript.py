"""Core transcripts: events and actions as JSON, and their exact replay.

A core transcript pins the gateway's behaviour at the core's boundary. It is
JSON Lines (``conformance/README.md`` documents every field):

1. a header: format version, Lockgate version and the configuration the
   Gateway was built from (:func:`header`);
2. then, for each event in the order the core saw it, one event line
   (:func:`event_to_json`) followed by one line per action it returned
   (:func:`action_to_json`).

:func:`replay` builds a fresh :class:`~lockgate.core.Gateway` from the header,
feeds it the recorded events and compares what comes out with the recorded
actions, line by line. Since the core is deterministic, a transcript recorded
from a real run replays exactly; any difference is a behaviour change. Token
counts are the one input not in the events: the replay is given the counter
the recording ran with (:func:`recorded_tokenizer` names it).

Everything here is pure: the shells read and write the files.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ._gateway import Gateway
from ._jsonrpc import encode
from ._strictjson import Flawed, parse
from ._tools import TokenCounter, estimate_bytes
from ._transcript_json import (
    FORMAT,
    REDACTED,
    TranscriptError,
    action_to_json,
    config_from_json,
    config_to_json,
    event_from_json,
    event_to_json,
    header,
)

__all__ = [
    "FORMAT",
    "REDACTED",
    "Divergence",
    "TranscriptError",
    "action_to_json",
    "config_from_json",
    "config_to_json",
    "event_from_json",
    "event_to_json",
    "header",
    "recorded_tokenizer",
    "replay",
    "wire_line",
]

JSONObject = dict[str, Any]


# -- replay ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Divergence:
    """Where a replay first differed from the recording.

    ``line`` is the 1-based line number in the transcript; ``event`` the event
    line being replayed; ``index`` the position of the action among that
    event's actions. ``expected`` or ``actual`` is ``None`` when one side has
    fewer actions.
    """

    line: int
    event: JSONObject
    index: int
    expected: JSONObject | None
    actual: JSONObject | None


def recorded_tokenizer(first: Mapping[str, Any]) -> str:
    """The ``GATEWAY_TOKENIZER`` a transcript was recorded with, from its header.

    ``estimate`` for a transcript recorded before the setting existed, when
    bytes / 4 was the only count.
    """
    settings = first.get("config", {}).get("settings", {})
    return str(settings.get("tokenizer", "estimate"))


def replay(lines: Iterable[Mapping[str, Any]], *, count_tokens: TokenCounter = estimate_bytes) -> Divergence | None:
    """Feed a transcript's events to a fresh Gateway; ``None`` when every action matches.

    Args:
        lines: the parsed lines of one transcript, header first.
        count_tokens: the counter the recording ran with (see
            :func:`recorded_tokenizer`).

    Raises:
        TranscriptError: the transcript itself is malformed (no header, a
            format this code does not read, an action before any event).
    """
    it = iter(enumerate(lines, start=1))
    first = next(it, None)
    if first is None or first[1].get("transcript") != "lockgate-core":
        raise TranscriptError("the first line is not a lockgate-core header")
    if first[1].get("format") != FORMAT:
        raise TranscriptError(f"format {first[1].get('format')!r} is not {FORMAT}")
    gateway = Gateway(config_from_json(first[1]["config"]), count_tokens=count_tokens)

    current: tuple[int, JSONObject] | None = None
    produced: list[JSONObject] = []
    position = 0

    def leftover() -> Divergence | None:
        if current is not None and position < len(produced):
            return Divergence(
                line=current[0], event=current[1], index=position, expected=None, actual=produced[position]
            )
        return None

    for number, line in it:
        if "event" in line:
            missing = leftover()
            if missing is not None:
                return missing
            current = (number, dict(line))
            produced = [action_to_json(a) for a in gateway.handle(event_from_json(line))]
            position = 0
        elif "action" in line:
            if current is None:
                raise TranscriptError(f"line {number}: an action before any event")
            actual = produced[position] if position < len(produced) else None
            if actual != line:
                return Divergence(line=number, event=current[1], index=position, expected=dict(line), actual=actual)
            position += 1
        else:
            raise TranscriptError(f"line {number}: neither an event nor an action")
    return leftover()


def wire_line(direction: str, data: bytes | None) -> JSONObject:
    """One line of a wire transcript: a message read (``"c2s"``) or written (``"s2c"``) as a JSON value.

    ``None`` is a message the shell refused to buffer (too large). Bytes that
    are not UTF-8 are kept as ``raw_base64``; text that is not JSON, or JSON
    the gateway could not write back (a lone surrogate, ``NaN``), as ``raw``;
    a value whose compact encoding differs from the text keeps the text in
    ``raw`` too, so a replay sends exactly the recorded bytes.
    """
    line: JSONObject = {"dir": direction}
    if data is None:
        line["too_large"] = True
        return line
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        line["raw_base64"] = base64.b64encode(data).decode("ascii")
        return line
    value = parse(data)
    if isinstance(value, Flawed):
        line["raw"] = text
        return line
    line["msg"] = value
    if encode(value).decode("utf-8") != text:
        line["raw"] = text
    return line
