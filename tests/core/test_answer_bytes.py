"""A server's answer passed on with only its envelope rewritten: the same message, its result's bytes kept."""

from __future__ import annotations

import json

import pytest

from lockgate.core import SendToClient
from lockgate.core._jsonrpc import Response, answer_bytes, decode, error_with, result

CLIENT_IDS = [1, 0, -3, "abc", 'a"b\\c', "é\u2028\u0001", ""]

KEPT = [
    b'{"jsonrpc":"2.0","id":7,"result":{"content":[{"type":"text","text":"hi"}],"structuredContent":{"result":"hi"},"isError":false}}',
    b' { "jsonrpc" : "2.0" , "id" : 7 , "result" : { "a" : [1, 2.5e3, null] } }\t',
    b'{"jsonrpc":"2.0","id":7,"error":{"code":-32000,"message":"no","data":{"x":[]}}}',
    b'{"jsonrpc":"2.0","id":7,"result":"caf\xc3\xa9 \\" }"}',
    b'{"jsonrpc":"2.0","id":7,"result":{}}',
]

ENCODED_AGAIN = [
    b'{"id":7,"jsonrpc":"2.0","result":{}}',  # another order
    b'{"jsonrpc":"2.0","id":7,"result":{"id":1}}',  # "id" inside the result
    b'{"jsonrpc":"2.0","id":7,"result":{"t":"\\u00e9"}}',  # a \u00 escape anywhere
    b'{"jsonrpc":"2.0","id":7,"result":{},"\\u0069d":7}',  # a second id spelled with escapes
    b'{"jsonrpc":"2.0","id":7,"result":{},"extra":1}',  # a member after the result
    b'{"jsonrpc":"2.0","id":7,"result":{\n"a":1}}',  # a newline between tokens breaks line framing
    b'{"jsonrpc":"2.0","id":"7","result":{}}',  # not an id the gateway sends
    b'{"jsonrpc":"2.0","id":7,"jsonrpc":"2.0","result":{}}',
]


@pytest.mark.parametrize("data", KEPT)
@pytest.mark.parametrize("client_id", CLIENT_IDS)
def test_the_result_bytes_are_kept_and_the_message_is_the_same(data: bytes, client_id: int | str) -> None:
    msg = decode(data)
    assert isinstance(msg, Response)
    out = answer_bytes(msg, client_id)
    assert out is not None
    expected = error_with(client_id, msg.raw["error"]) if "error" in msg.raw else result(client_id, msg.raw["result"])
    assert json.loads(out) == expected
    assert b"\n" not in out and b"\r" not in out
    kind = b'"error"' if "error" in msg.raw else b'"result"'
    value = data.strip().split(kind, 1)[1].strip()[1:-1].strip()  # after the colon, before the last brace
    assert out.endswith(kind + b":" + value + b"}")


@pytest.mark.parametrize("data", ENCODED_AGAIN)
def test_answers_whose_bytes_do_not_show_their_value_plainly_are_encoded_again(data: bytes) -> None:
    msg = decode(data)
    assert isinstance(msg, Response)
    assert answer_bytes(msg, "c") is None


def test_a_response_built_by_the_core_has_no_bytes() -> None:
    assert answer_bytes(Response(7, result(7, {})), 1) is None


def test_wire_bytes_are_sent_as_they_are_and_left_out_of_comparisons() -> None:
    message = result(1, {"a": 1})
    plain = SendToClient(client=0, message=message, request=1)
    spliced = SendToClient(client=0, message=message, request=1, wire=b'{"jsonrpc":"2.0","id":1,"result":{"a": 1}}')
    assert plain == spliced
    assert plain.encoded() == b'{"jsonrpc":"2.0","id":1,"result":{"a":1}}'
    assert spliced.encoded() == b'{"jsonrpc":"2.0","id":1,"result":{"a": 1}}'
