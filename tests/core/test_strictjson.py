"""The strict JSON boundary: what it refuses, where it says the flaw is, and what it salvages."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lockgate.core._jsonrpc import Invalid, Request, decode, encode
from lockgate.core._strictjson import MAX_DEPTH, MAX_INTEGER_DIGITS, Flaw, Flawed, parse

ID = b'{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"execute_tool","arguments":{"args":{"x":%s}}}}'


def refused(data: bytes | str) -> Flawed:
    value = parse(data)
    assert isinstance(value, Flawed), value
    return value


@pytest.mark.parametrize(
    ("poison", "kind", "detail"),
    [
        (b'"\\ud800"', "surrogate", "a string holds a lone UTF-16 surrogate"),
        (b'"a\\udfffb"', "surrogate", "a string holds a lone UTF-16 surrogate"),
        (b"NaN", "constant", "NaN is not JSON"),
        (b"Infinity", "constant", "Infinity is not JSON"),
        (b"-Infinity", "constant", "-Infinity is not JSON"),
        (b"1e400", "number", "a number out of the range of a double"),
        (b"-1.5E+999", "number", "a number out of the range of a double"),
        (b"1" + b"0" * MAX_INTEGER_DIGITS, "integer", f"an integer of more than {MAX_INTEGER_DIGITS} digits"),
        (b"-" + b"9" * 400, "integer", f"an integer of more than {MAX_INTEGER_DIGITS} digits"),
        (b"[" * MAX_DEPTH + b"]" * MAX_DEPTH, "depth", f"nesting deeper than {MAX_DEPTH} levels"),
    ],
)
def test_each_poison_class_is_refused_where_it_stands(poison: bytes, kind: str, detail: str) -> None:
    flawed = refused(ID % poison)
    assert flawed.first.kind == kind
    assert flawed.first.detail == detail
    assert flawed.first.path[:5] == ("params", "arguments", "args", "x") + ((0,) if kind == "depth" else ())
    assert flawed.tainted == {"params"}
    # What was salvaged can always be encoded again, and keeps the id.
    assert flawed.salvaged["id"] == 7
    encode(flawed.salvaged)


def test_invalid_utf8_is_located_by_byte_and_by_path() -> None:
    data = b'{"jsonrpc":"2.0","id":"a","params":{"k":"\xed\xa0\x80"}}'
    flawed = refused(data)
    at = data.index(b"\xed")
    assert flawed.first == Flaw("utf8", ("params", "k"), f"invalid UTF-8 at byte {at}")
    assert flawed.first.not_json
    assert flawed.salvaged["params"]["k"] == "\ufffd\ufffd\ufffd"
    # Outside a string it is a syntax error; nothing is salvaged.
    assert refused(b'{"a":1}\xff').salvaged is None


def test_a_lone_surrogate_key_is_salvaged_as_a_replacement_character() -> None:
    flawed = refused(b'{"id":1,"params":{"arguments":{"\\ud800":1,"ok":2}}}')
    assert flawed.first.path == ("params", "arguments", "\ufffd")
    assert flawed.salvaged["params"]["arguments"] == {"\ufffd": 1, "ok": 2}


def test_a_poisoned_id_is_tainted_so_it_is_never_echoed() -> None:
    flawed = refused(b'{"jsonrpc":"2.0","id":"\\ud800","method":"ping"}')
    assert flawed.tainted == {"id"}
    message = decode(b'{"jsonrpc":"2.0","id":"\\ud800","method":"ping"}')
    assert isinstance(message, Invalid) and message.id is None


def test_nesting_past_the_parser_keeps_the_members_before_it() -> None:
    deep = b"[" * 50_000 + b"]" * 50_000
    flawed = refused(b'{"jsonrpc":"2.0","id":9,"method":"x","params":' + deep + b',"after":1}')
    assert flawed.first == Flaw("depth", ("params",), "nesting too deep to parse")
    assert flawed.salvaged == {"jsonrpc": "2.0", "id": 9, "method": "x", "params": None}
    assert refused(deep).salvaged is None


def test_limits_are_inclusive() -> None:
    assert parse(b"[" * MAX_DEPTH + b"]" * MAX_DEPTH) is not None
    assert parse(b"9" * MAX_INTEGER_DIGITS) == int("9" * MAX_INTEGER_DIGITS)
    assert parse(b"-" + b"9" * MAX_INTEGER_DIGITS) == -int("9" * MAX_INTEGER_DIGITS)
    assert parse(b"1.7976931348623157e308") == 1.7976931348623157e308
    assert parse(b"1e-400") == 0.0  # underflow loses precision but round-trips


def test_valid_surrogate_pairs_and_escaped_backslashes_pass() -> None:
    assert parse(b'"\\ud83d\\ude00"') == "\U0001f600"
    assert parse(b'"\\\\ud800"') == "\\ud800"


def test_large_texts_take_the_number_scan_and_still_refuse_bad_numbers() -> None:
    filler = b'"' + b"x" * 70_000 + b'"'
    assert parse(b"[" + filler + b",1.5,12345]") == ["x" * 70_000, 1.5, 12345]
    assert refused(b"[" + filler + b",1e999]").first.kind == "number"
    assert refused(b"[" + filler + b"," + b"7" * 30 + b"]").first.kind == "integer"
    # "e000" inside a string only sends the text down the slower path.
    assert parse(b'["file000", ' + filler + b"]") == ["file000", "x" * 70_000]


def test_str_input_is_checked_alike() -> None:
    assert parse('{"a": [1, 2.5, "\u00e9"]}') == {"a": [1, 2.5, "\u00e9"]}
    # A lone surrogate character is what the bytes ED A0 80 decode to: not UTF-8.
    assert refused('{"a": "\ud800"}').first.kind == "utf8"


def test_the_request_keeps_its_id_and_the_error_says_where() -> None:
    message = decode(ID % b"NaN")
    assert message == Invalid(
        code=-32700,  # type: ignore[arg-type]
        message="Parse error: NaN is not JSON at params.arguments.args.x",
        id=7,
        path="params.arguments.args.x",
        salvaged={
            "jsonrpc": "2.0", "id": 7, "method": "tools/call",
            "params": {"name": "execute_tool", "arguments": {"args": {"x": None}}},
        },
    )
    assert decode(ID % b"1e400").code == -32602  # type: ignore[union-attr]
    outside = decode(b'{"jsonrpc":"2.0","id":7,"method":"\\ud800"}')
    assert isinstance(outside, Invalid) and (outside.code, outside.id) == (-32600, 7)


def test_a_deep_path_is_shortened_in_the_message() -> None:
    message = decode(ID % (b"[" * 200 + b"]" * 200))
    assert isinstance(message, Invalid)
    assert message.message == "Invalid params: nesting deeper than 128 levels at params.arguments.args.x[0][0][0][0]... (120 levels more)"


# -- properties ------------------------------------------------------------------

sound_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**MAX_INTEGER_DIGITS) + 1, 10**MAX_INTEGER_DIGITS - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=30,
)


@given(sound_values, st.booleans())
def test_everything_within_the_limits_round_trips(value: Any, ascii: bool) -> None:
    for text in (json.dumps(value, ensure_ascii=ascii), encode(value)):
        parsed = parse(text)
        assert parsed == value or (isinstance(value, float) and math.isnan(value))


@settings(max_examples=500)
@given(st.binary(max_size=300) | st.text(max_size=100).map(lambda t: t.encode("utf-8", "surrogatepass")))
def test_parse_never_raises_and_what_it_accepts_or_salvages_encodes(data: bytes) -> None:
    value = parse(data)
    if isinstance(value, Flawed):
        assert value.flaws
        if value.salvaged is not None:
            encode(value.salvaged)
    else:
        assert json.loads(encode(value)) == value


surrogates = st.integers(0xD800, 0xDFFF).map(lambda c: '"\\u%04x"' % c)
poisons = st.sampled_from(["NaN", "Infinity", "-Infinity", "1e400", "-2E+500", "9" * 30]) | surrogates


@given(poisons, st.integers(0, 3))
def test_poison_anywhere_in_params_keeps_the_id_and_is_invalid_params_or_parse_error(poison: str, where: int) -> None:
    slots = ['{"args":{"x":%s}}', '{"name":%s}', '{"list":[1,2,%s]}', '{"%s":1}']
    slot = slots[where]
    if where == 3:
        if not poison.startswith('"'):
            return
        slot = "{%s:1}"
    data = ('{"jsonrpc":"2.0","id":"req-1","method":"tools/call","params":%s}' % (slot % poison)).encode()
    message = decode(data)
    assert isinstance(message, Invalid)
    assert message.id == "req-1"
    assert message.code in (-32700, -32602)
    assert message.path is not None and message.path.startswith("params")
    encode({"error": message.message, "salvaged": message.salvaged})


def test_a_request_decodes_as_before() -> None:
    assert isinstance(decode(b'{"jsonrpc":"2.0","id":1,"method":"ping"}'), Request)
