"""The WebSocket front's rules (lockgate.core.ws): upgrades, messages, keep-alive and close codes, exactly."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from lockgate.core.http import HttpPolicy, Reject
from lockgate.core.ws import (
    MAX_FRAGMENTS,
    CloseCode,
    Inbound,
    KeepAlive,
    SendPing,
    Upgrade,
    WaitUntil,
    WsClose,
    accept_token,
    answer_close,
    check_upgrade,
    credential_refused,
    fell_behind,
    going_away,
    is_ws_target,
    keepalive_timeout,
    opened_request,
    protocol_failure,
    session_ended,
    shutting_down,
    streamable_off,
)

POLICY = HttpPolicy(host="127.0.0.1", port=8000)
KEY = base64.b64encode(b"0123456789abcdef").decode()
HEADERS = {
    "host": "127.0.0.1:8000",
    "upgrade": "websocket",
    "connection": "Upgrade",
    "sec-websocket-version": "13",
    "sec-websocket-key": KEY,
    "sec-websocket-protocol": "mcp",
}


def error(reject: Reject) -> tuple[int, str]:
    body = json.loads(reject.body)
    return reject.status, body["error"]["message"]


def upgrade(**changes: Any) -> Reject | Upgrade:
    headers = {**HEADERS, **{k.replace("_", "-"): v for k, v in changes.items() if v is not None}}
    for name in [k.replace("_", "-") for k, v in changes.items() if v is None]:
        headers.pop(name)
    return check_upgrade("GET", "/ws", headers, POLICY)


def test_the_rfc_example_key_gets_the_rfc_accept_token() -> None:
    # RFC 6455, section 1.3.
    assert accept_token("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_a_good_upgrade_is_accepted_selecting_mcp() -> None:
    assert upgrade() == Upgrade(
        headers=(
            ("upgrade", "websocket"),
            ("connection", "Upgrade"),
            ("sec-websocket-accept", accept_token(KEY)),
            ("sec-websocket-protocol", "mcp"),
        )
    )
    # Among other subprotocols, header tokens in any case, a loopback Origin.
    accepted = upgrade(sec_websocket_protocol="json, mcp", upgrade="WebSocket", connection="keep-alive, Upgrade",
                       origin="http://localhost:3000")
    assert isinstance(accepted, Upgrade) and ("sec-websocket-protocol", "mcp") in accepted.headers


@pytest.mark.parametrize(
    ("changes", "status", "message"),
    [
        ({"host": "evil.example"}, 421, "Misdirected Request: invalid Host header"),
        ({"host": None}, 421, "Misdirected Request: invalid Host header"),
        ({"origin": "https://evil.example"}, 403, "Forbidden: Origin not allowed"),
        ({"upgrade": None}, 426, "Upgrade Required: /ws speaks WebSocket (Upgrade: websocket, Connection: Upgrade)"),
        ({"connection": "keep-alive"}, 426, "Upgrade Required: /ws speaks WebSocket (Upgrade: websocket, Connection: Upgrade)"),
        ({"sec_websocket_version": "8"}, 426, "Upgrade Required: WebSocket version 13 only"),
        ({"sec_websocket_key": "short"}, 400, "Bad Request: Sec-WebSocket-Key is not 16 bytes in base64"),
        ({"sec_websocket_key": None}, 400, "Bad Request: Sec-WebSocket-Key is not 16 bytes in base64"),
        ({"sec_websocket_protocol": None}, 400, "Bad Request: Sec-WebSocket-Protocol must offer 'mcp'"),
        ({"sec_websocket_protocol": "graphql-ws, MCP"}, 400, "Bad Request: Sec-WebSocket-Protocol must offer 'mcp'"),
        ({"content_length": "5"}, 400, "Bad Request: a WebSocket upgrade request has no body"),
        ({"transfer_encoding": "chunked"}, 400, "Bad Request: a WebSocket upgrade request has no body"),
    ],
)
def test_a_bad_upgrade_is_refused_before_it_happens(changes: dict[str, Any], status: int, message: str) -> None:
    refused = upgrade(**changes)
    assert isinstance(refused, Reject)
    assert error(refused) == (status, message)


def test_host_is_checked_before_origin_and_both_before_the_rest() -> None:
    refused = check_upgrade("POST", "/ws", {"host": "evil.example", "origin": "https://evil.example"}, POLICY)
    assert isinstance(refused, Reject) and refused.status == 421
    refused = check_upgrade("POST", "/ws", {**HEADERS, "origin": "https://evil.example"}, POLICY)
    assert isinstance(refused, Reject) and refused.status == 403
    refused = check_upgrade("POST", "/ws", HEADERS, POLICY)
    assert isinstance(refused, Reject) and refused.status == 405 and ("allow", "GET") in refused.headers


def test_an_allowed_origin_and_host_pass() -> None:
    policy = HttpPolicy(host="0.0.0.0", port=8000, allowed_origins=frozenset({"https://app.example"}),
                        allowed_hosts=frozenset({"gw.example"}))
    headers = {**HEADERS, "host": "gw.example", "origin": "https://app.example"}
    assert isinstance(check_upgrade("GET", "/ws", headers, policy), Upgrade)


def test_426_says_which_version_and_upgrade() -> None:
    refused = upgrade(sec_websocket_version="8")
    assert isinstance(refused, Reject)
    assert refused.headers[-3:] == (("upgrade", "websocket"), ("connection", "Upgrade"), ("sec-websocket-version", "13"))


def test_the_ws_target_and_what_ws_alone_turns_off() -> None:
    assert is_ws_target("/ws") and is_ws_target("/ws?x=1") and not is_ws_target("/ws/") and not is_ws_target("/mcp")
    for off in ("/mcp", "/mcp?x", "/mcp/echo/tools/call", "/gateway/servers"):
        refused = streamable_off(off)
        assert refused is not None
        assert error(refused) == (404, "Not Found: Streamable HTTP is off; MCP is served over WebSocket at /ws")
    for on in ("/health", "/ready", "/metrics", "/auth/login", "/", "/status"):
        assert streamable_off(on) is None
    assert shutting_down().status == 503 and shutting_down().close


# -- messages ------------------------------------------------------------------------


def test_a_whole_message_passes_as_it_is() -> None:
    inbound = Inbound(10)
    assert inbound.text(b"0123456789", frame_finished=True, message_finished=True) == b"0123456789"
    assert inbound.text(b"{}", frame_finished=True, message_finished=True) == b"{}"


def test_fragments_are_put_together_and_count_toward_the_limit() -> None:
    inbound = Inbound(10)
    assert inbound.text(b"0123", frame_finished=True, message_finished=False) is None
    assert inbound.text(b"45", frame_finished=False, message_finished=False) is None
    assert inbound.text(b"6789", frame_finished=True, message_finished=True) == b"0123456789"
    # The next message starts afresh.
    assert inbound.text(b"abc", frame_finished=True, message_finished=False) is None
    assert inbound.text(b"def", frame_finished=True, message_finished=True) == b"abcdef"


def test_a_message_over_the_limit_closes_with_1009() -> None:
    too_big = WsClose(1009, "a message may be at most 10 bytes")
    assert Inbound(10).text(b"x" * 11, frame_finished=True, message_finished=True) == too_big
    flood = Inbound(10)
    assert [flood.text(b"xxxx", frame_finished=True, message_finished=False) for _ in range(3)] == [None, None, too_big]


def test_a_flood_of_empty_fragments_closes_with_1009() -> None:
    inbound = Inbound(10)
    results = [inbound.text(b"", frame_finished=True, message_finished=False) for _ in range(MAX_FRAGMENTS + 1)]
    assert results[:-1] == [None] * MAX_FRAGMENTS
    assert results[-1] == WsClose(1009, f"a message may come in at most {MAX_FRAGMENTS} frames")


def test_a_binary_message_closes_with_1003() -> None:
    assert Inbound(10).binary() == WsClose(1003, "MCP messages are JSON text: send text messages, not binary")


def test_which_messages_open_a_request() -> None:
    assert opened_request(b'{"jsonrpc":"2.0","id":7,"method":"tools/list"}') == 7
    assert opened_request(b'{"jsonrpc":"2.0","id":"a","method":"ping"}') == "a"
    assert opened_request(b'{"jsonrpc":"2.0","method":"notifications/initialized"}') is None
    assert opened_request(b'{"jsonrpc":"2.0","id":7,"result":{}}') is None
    assert opened_request(b'{"jsonrpc":"2.0","id":null,"method":"x"}') is None
    assert opened_request(b'{"id": 1, "method": not json') is None
    assert opened_request(b'[{"id":1,"method":"x"}]') is None


# -- keep-alive ------------------------------------------------------------------------


def test_pings_go_out_every_interval_while_pongs_come() -> None:
    keepalive = KeepAlive(interval=20, timeout=5, now=100)
    assert keepalive.poll(100) == WaitUntil(120)
    assert keepalive.poll(119.9) == WaitUntil(120)
    assert keepalive.poll(120) == SendPing(b"1")
    assert keepalive.poll(121) == WaitUntil(125)
    assert keepalive.pong(b"1") is True
    assert keepalive.poll(121) == WaitUntil(140)
    assert keepalive.poll(140.5) == SendPing(b"2")
    assert keepalive.pong(b"2") is True
    assert keepalive.poll(141) == WaitUntil(160.5)


def test_no_pong_within_the_timeout_closes_with_1011() -> None:
    keepalive = KeepAlive(interval=20, timeout=5, now=0)
    assert keepalive.poll(20) == SendPing(b"1")
    assert keepalive.pong(b"0") is False  # not the ping awaited
    assert keepalive.pong(b"") is False
    assert keepalive.poll(24.9) == WaitUntil(25)
    assert keepalive.poll(25) == WsClose(1011, "keep-alive ping not answered within 5 s")
    assert keepalive_timeout(0.5) == WsClose(1011, "keep-alive ping not answered within 0.5 s")


def test_a_timeout_longer_than_the_interval_sends_no_second_ping_before_the_pong() -> None:
    keepalive = KeepAlive(interval=1, timeout=3, now=0)
    assert keepalive.poll(1) == SendPing(b"1")
    assert keepalive.poll(2) == WaitUntil(2)  # the next ping would be due: still waits for this pong
    assert keepalive.poll(3) == WaitUntil(2)
    assert keepalive.pong(b"1") is True
    assert keepalive.poll(3) == SendPing(b"2")
    assert keepalive.poll(6) == WsClose(1011, "keep-alive ping not answered within 3 s")


def test_an_unsolicited_pong_changes_nothing_and_interval_zero_turns_it_off() -> None:
    keepalive = KeepAlive(interval=10, timeout=5, now=0)
    assert keepalive.pong(b"1") is False
    assert keepalive.poll(5) == WaitUntil(10)
    off = KeepAlive(interval=0, timeout=5, now=0)
    assert off.poll(1e9) == WaitUntil(float("inf"))


# -- closing ---------------------------------------------------------------------------


def test_the_close_codes() -> None:
    assert going_away() == WsClose(1001, "the gateway is shutting down")
    assert session_ended() == WsClose(1000, "the gateway ended the session")
    assert fell_behind() == WsClose(1008, "the client does not read its messages fast enough")
    assert credential_refused(401, "API key revoked") == WsClose(1008, "credential refused: API key revoked")
    assert credential_refused(503, "the credential store does not answer") is None
    assert protocol_failure(1002, "Unmasked frame") == WsClose(1002, "Unmasked frame")
    assert protocol_failure(1007, "bad utf-8") == WsClose(1007, "bad utf-8")
    assert protocol_failure(4999, "odd") == WsClose(1002, "odd")
    assert answer_close(1000) == WsClose(1000) and answer_close(4001) == WsClose(4001)
    assert answer_close(None) == WsClose(1000) and answer_close(CloseCode.NO_STATUS) == WsClose(1000)


def test_a_close_reason_fits_a_control_frame() -> None:
    long = credential_refused(401, "é" * 200)
    assert long is not None and len(long.reason.encode("utf-8")) <= 123
    assert long.reason.startswith("credential refused: é")


# -- settings --------------------------------------------------------------------------


def test_the_websocket_settings_from_the_environment() -> None:
    from lockgate.core import ConfigError, settings_from_env

    defaults = settings_from_env({})
    assert (defaults.ws_ping_interval, defaults.ws_ping_timeout) == (20.0, 20.0)
    for written, transport in [("ws", "ws"), ("http,ws", "http,ws"), ("WS, http", "http,ws"), ("http", "http")]:
        assert settings_from_env({"GATEWAY_TRANSPORT": written}).transport == transport
    s = settings_from_env({"GATEWAY_WS_PING_INTERVAL": "0", "GATEWAY_WS_PING_TIMEOUT": "2.5"})
    assert (s.ws_ping_interval, s.ws_ping_timeout) == (0.0, 2.5)
    with pytest.raises(ConfigError) as bad:
        settings_from_env({"GATEWAY_TRANSPORT": "ws,stdio", "GATEWAY_WS_PING_INTERVAL": "-1", "GATEWAY_WS_PING_TIMEOUT": "0"})
    assert [(p.path, p.message) for p in bad.value.problems] == [
        ("GATEWAY_TRANSPORT", "'ws,stdio' is not a transport: use 'stdio', 'http', 'ws' or 'http,ws'"),
        ("GATEWAY_WS_PING_INTERVAL", "'-1' is not a number of seconds, 0 or more"),
        ("GATEWAY_WS_PING_TIMEOUT", "'0' is not a positive number of seconds"),
    ]
