"""OAuth to downstream servers in the core: whose token a connection carries, and what a missing one does.

The shell runs OAuth; the core decides whose token each connection carries
(``StartDownstream.principal`` under ``oauth.per_user``) and what a
``DownstreamUnauthorized`` does: the connection's calls fail with the reason
and the command that logs in, and the instance is not blamed.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from lockgate.core import Config, OAuthSpec, Principal
from lockgate.core._actions import StartDownstream
from lockgate.core._events import DownstreamUnauthorized
from lockgate.core._jsonrpc import encode
from lockgate.core.transcript import event_from_json, event_to_json

from .harness import ECHO_TOOL, Driver, call, make_config, sent_to_client

JSON = dict[str, Any]
ALICE = Principal(id="user:alice", agents=("dev",), default_agent="dev")
BOB = Principal(id="user:bob", agents=("dev",), default_agent="dev")


def per_user_config() -> Config:
    config = make_config()
    db = replace(config.servers["db"], transport="http", url="http://127.0.0.1:9/mcp", command=None, args=(),
                 oauth=OAuthSpec(per_user=True), isolation="per_client")
    return replace(config, servers={**config.servers, "db": db})


def echo(request_id: int) -> JSON:
    return call(request_id, "execute_tool", agent_id="dev", server="db", tool="echo", args={"text": "hi"})


def opened(d: Driver, client: int, principal: Principal | None) -> None:
    d.open(client, transport="http", principal=principal)
    d.client = client
    d.initialize()


def starts(d: Driver) -> list[StartDownstream]:
    return [ds.start for ds in d.downstreams.values()]


def unauthorized(d: Driver, downstream: int, reason: str, *, login: bool = True) -> list[Any]:
    ds = d.downstreams[downstream]
    data = encode(ds.request("initialize")) + b"\n"
    ds.answered.add(ds.request("initialize")["id"])
    return d.handle(DownstreamUnauthorized(now=d.now, downstream=downstream, data=data, reason=reason, login=login))


def reason_of(actions: list[Any]) -> list[str]:
    return [m["error"]["data"]["reason"] for m in sent_to_client(actions) if "error" in m]


def test_per_user_connections_carry_their_own_principal() -> None:
    d = Driver(per_user_config())
    opened(d, 1, ALICE)
    d.send(echo(1))
    opened(d, 2, BOB)
    d.send(echo(2))
    assert [(s.server, s.principal) for s in starts(d)] == [("db", "user:alice"), ("db", "user:bob")]


def test_per_user_tokens_are_the_subjects_a_key_and_a_delegated_token_share_their_users() -> None:
    d = Driver(per_user_config())
    opened(d, 1, Principal(id="key:3f9a1c2b", agents=("dev",), default_agent="dev", subject="user:alice"))
    d.send(echo(1))
    opened(d, 2, Principal(id="delegated:abc", agents=("dev",), default_agent="dev", subject="user:alice"))
    d.send(echo(2))
    assert [s.principal for s in starts(d)] == ["user:alice", "user:alice"]
    actions = unauthorized(d, 1, "no token is stored for user:alice")
    assert reason_of(actions)[0].endswith("run: lockgate auth login db --principal user:alice")


def test_a_subject_round_trips_through_a_transcript() -> None:
    from lockgate.core import ClientOpened

    event = ClientOpened(now=0.0, client=1, transport="http", principal=Principal(id="key:1", subject="user:alice"))
    assert event_from_json(event_to_json(event)) == event


def test_a_shared_server_carries_the_gateway_token() -> None:
    d = Driver()
    opened(d, 1, ALICE)
    d.send(echo(1))
    assert [s.principal for s in starts(d)] == [None]


def test_per_user_without_an_identity_is_refused_and_starts_nothing() -> None:
    d = Driver(per_user_config())
    opened(d, 1, None)
    actions = d.send(echo(1))
    assert reason_of(actions) == [
        "its OAuth tokens are per user (oauth.per_user), and this caller has no identity: "
        "turn authentication on (GATEWAY_AUTH=required)"
    ]
    assert starts(d) == []


def test_unauthorized_names_the_login_command_with_the_principal() -> None:
    d = Driver(per_user_config())
    opened(d, 1, ALICE)
    d.send(echo(1))
    actions = unauthorized(d, 1, "no token is stored for user:alice")
    assert reason_of(actions) == [
        "authorization required: no token is stored for user:alice; "
        "to log in, run: lockgate auth login db --principal user:alice"
    ]
    assert d.downstreams[1].stopped is not None


def test_unauthorized_without_login_says_only_why() -> None:
    d = Driver()
    opened(d, 1, ALICE)
    d.send(echo(1))
    actions = unauthorized(d, 1, "the authorization server refused the client secret (invalid_client)", login=False)
    assert reason_of(actions) == ["authorization required: the authorization server refused the client secret (invalid_client)"]


def test_one_principal_without_a_token_leaves_the_others_working() -> None:
    d = Driver(per_user_config())
    opened(d, 1, ALICE)
    d.send(echo(1))
    d.downstreams[1].complete_handshake([ECHO_TOOL])
    opened(d, 2, BOB)
    d.send(echo(2))
    unauthorized(d, 2, "no token is stored for user:bob")
    # Alice's connection and the instance are untouched: no backoff, her next call is served on it.
    assert d.downstreams[1].alive
    assert d.gw.status()["servers"]["db"]["instances"][0]["state"] != "backoff"
    d.client = 1
    d.send(echo(3))
    assert d.downstreams[1].requests("tools/call")[-1]["params"]["arguments"] == {"text": "hi"}
    # Bob, logged in since, is started afresh at once.
    d.client = 2
    d.send(echo(4))
    assert [s.principal for s in starts(d)] == ["user:alice", "user:bob", "user:bob"]


def test_unauthorized_round_trips_through_a_transcript() -> None:
    event = DownstreamUnauthorized(now=1.5, downstream=3, data=b'{"id":1}\n', reason="token refused", login=False)
    assert event_from_json(event_to_json(event)) == event


def test_a_transcript_never_holds_the_client_secret() -> None:
    from lockgate.core._transcript_json import _spec_to_json

    config = make_config()
    spec = replace(config.servers["db"], oauth=OAuthSpec(grant="client_credentials", client_id="gw", client_secret="s3cret"))
    assert "s3cret" not in repr(_spec_to_json(spec))
    assert "s3cret" not in repr(spec)
