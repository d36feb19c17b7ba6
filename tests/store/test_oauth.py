"""OAuth tokens and clients in the database: sealed per row, replaced in place, listed without secrets, deleted."""

from __future__ import annotations

import secrets
import threading
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy

from lockgate.shells.sealed import SecretBox, UnsealError
from lockgate.shells.store import InvalidInput, Store
from lockgate.shells.store.oauth import GATEWAY, ClientRecord, OAuthStore, TokenRecord
from lockgate.shells.store.schema import oauth_clients, oauth_tokens

from .helpers import everything_stored, open_upgraded

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
LATER = NOW + timedelta(hours=1)
ACCESS, REFRESH, CLIENT_SECRET = "at-3c2b1a0f9e8d", "rt-7a6b5c4d3e2f", "cs-1f2e3d4c5b6a"
SECRET_TEXTS = (ACCESS, REFRESH, CLIENT_SECRET)


def token(access: str = ACCESS) -> dict[str, object]:
    return {"access_token": access, "refresh_token": REFRESH, "token_type": "Bearer", "expires_in": 3600}


CLIENT = {"client_id": "lockgate-42", "client_secret": CLIENT_SECRET, "redirect_uris": ["http://127.0.0.1/cb"]}


def new_box() -> SecretBox:
    return SecretBox(secrets.token_bytes(32))


def test_a_token_is_put_got_listed_and_deleted(database_url: str) -> None:
    with open_upgraded(database_url) as store:
        oauth = OAuthStore(store, new_box())
        record = oauth.put_token("github", "user:alice", token(), expires_at=LATER, scopes=["repo", "read:org"], now=NOW)
        assert record == TokenRecord(server="github", principal="user:alice", expires_at=LATER, scopes=("repo", "read:org"), updated_at=NOW)
        oauth.put_token("github", GATEWAY, token("at-gateway"), scopes=[], now=NOW)
        oauth.put_token("atlassian", "key:3f9a1c2b", token("at-key"), expires_at=NOW, now=NOW)

        got = oauth.get_token("github", "user:alice")
        assert got is not None and got.value == token() and got.record == record
        gateway = oauth.get_token("github", GATEWAY)
        assert gateway is not None and gateway.value == token("at-gateway")
        assert gateway.record.gateway_wide and gateway.record.expires_at is None
        assert oauth.get_token("github", "user:bob") is None
        assert oauth.get_token("gitlab", GATEWAY) is None

        listed = oauth.list_tokens()
        assert [(t.server, t.principal, t.scopes, t.expires_at) for t in listed] == [
            ("atlassian", "key:3f9a1c2b", (), NOW),
            ("github", "", (), None),
            ("github", "user:alice", ("repo", "read:org"), LATER),
        ]
        assert listed[0].expired(NOW) and not listed[2].expired(NOW) and not listed[1].expired(LATER)
        assert [t.principal for t in oauth.list_tokens("github")] == ["", "user:alice"]

        assert oauth.delete_token("github", "user:alice") is True
        assert oauth.delete_token("github", "user:alice") is False
        assert oauth.get_token("github", "user:alice") is None
        assert oauth.delete_tokens("github") == 1
        assert oauth.delete_tokens("github") == 0
        assert [t.server for t in oauth.list_tokens()] == ["atlassian"]


def test_putting_a_token_again_replaces_it_in_its_row(database_url: str) -> None:
    with open_upgraded(database_url) as store:
        oauth = OAuthStore(store, new_box())
        oauth.put_token("github", "user:alice", token(), expires_at=NOW, scopes=["repo"], now=NOW)
        oauth.put_token("github", "user:alice", token("at-refreshed"), expires_at=LATER, scopes=["repo", "gist"], now=LATER)
        got = oauth.get_token("github", "user:alice")
        assert got is not None and got.value == token("at-refreshed")
        assert got.record == TokenRecord(
            server="github", principal="user:alice", expires_at=LATER, scopes=("repo", "gist"), updated_at=LATER
        )
        assert len(oauth.list_tokens()) == 1
        assert not any(ACCESS in value for value in everything_stored(database_url))


def test_one_row_per_server_and_principal_even_when_written_at_once(database_url: str) -> None:
    with open_upgraded(database_url) as store:
        oauth = OAuthStore(store, new_box())
        start = threading.Barrier(6)
        problems: list[BaseException] = []

        def put(n: int) -> None:
            try:
                start.wait(timeout=30)
                oauth.put_token("github", GATEWAY, token(f"at-{n}"))
            except BaseException as exc:  # reported below
                problems.append(exc)

        threads = [threading.Thread(target=put, args=(n,)) for n in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert problems == []
        assert len(oauth.list_tokens()) == 1
        got = oauth.get_token("github", GATEWAY)
        assert got is not None and got.value["access_token"] in {f"at-{n}" for n in range(6)}


def test_the_database_refuses_a_second_row_for_the_same_place(database_url: str) -> None:
    with open_upgraded(database_url) as store:
        OAuthStore(store, new_box()).put_token("github", GATEWAY, token(), now=NOW)
        OAuthStore(store, new_box()).put_client("github", "https://issuer", CLIENT, now=NOW)
        row = {"server": "github", "principal": GATEWAY, "sealed": b"x", "scopes": [], "updated_at": NOW}
        client = {"server": "github", "issuer": "https://issuer", "sealed": b"x", "updated_at": NOW}
        for table, values in ((oauth_tokens, row), (oauth_clients, client)):
            with pytest.raises(sqlalchemy.exc.IntegrityError):
                with store._engine.begin() as connection:
                    connection.execute(sqlalchemy.insert(table).values(values))


def test_a_client_is_put_got_listed_and_deleted(database_url: str) -> None:
    with open_upgraded(database_url) as store:
        oauth = OAuthStore(store, new_box())
        record = oauth.put_client("github", "https://github.com/login/oauth", CLIENT, now=NOW)
        assert record == ClientRecord(server="github", issuer="https://github.com/login/oauth", updated_at=NOW)
        oauth.put_client("github", "https://other.example", {**CLIENT, "client_id": "other"}, now=NOW)
        oauth.put_client("github", "https://github.com/login/oauth", {**CLIENT, "client_id": "again"}, now=LATER)
        got = oauth.get_client("github", "https://github.com/login/oauth")
        assert got is not None and got.value == {**CLIENT, "client_id": "again"} and got.record.updated_at == LATER
        assert oauth.get_client("gitlab", "https://github.com/login/oauth") is None
        assert oauth.list_clients() == [
            ClientRecord(server="github", issuer="https://github.com/login/oauth", updated_at=LATER),
            ClientRecord(server="github", issuer="https://other.example", updated_at=NOW),
        ]
        assert oauth.delete_client("github", "https://other.example") is True
        assert oauth.delete_client("github", "https://other.example") is False
        assert [c.issuer for c in oauth.list_clients()] == ["https://github.com/login/oauth"]


def test_nothing_secret_is_stored_in_the_clear_listed_or_shown(database_url: str) -> None:
    with open_upgraded(database_url) as store:
        box = new_box()
        oauth = OAuthStore(store, box)
        oauth.put_token("github", "user:alice", token(), scopes=["repo"], now=NOW)
        oauth.put_client("github", "https://issuer", CLIENT, now=NOW)
        shown = repr([oauth.list_tokens(), oauth.list_clients(), oauth.get_token("github", "user:alice"), oauth.get_client("github", "https://issuer")])
        stored = list(everything_stored(database_url))
    for text in SECRET_TEXTS:
        assert text not in shown
        assert not any(text in value for value in stored)
    # Listing needs no key, and opens nothing.
    with Store.open(database_url) as store:
        assert [t.principal for t in OAuthStore(store).list_tokens()] == ["user:alice"]
        with pytest.raises(TypeError, match="without a SecretBox"):
            OAuthStore(store).get_token("github", "user:alice")


def test_a_sealed_value_copied_to_another_row_does_not_open_there(database_url: str) -> None:
    with open_upgraded(database_url) as store:
        oauth = OAuthStore(store, new_box())
        oauth.put_token("github", "user:alice", token(), now=NOW)
        oauth.put_token("github", "user:mallory", token("at-mallory"), now=NOW)
        oauth.put_token("gitlab", GATEWAY, token("at-gitlab"), now=NOW)
        oauth.put_client("github", "https://issuer", CLIENT, now=NOW)
        oauth.put_client("github", "https://evil", {**CLIENT, "client_secret": "evil"}, now=NOW)

        with store._engine.begin() as connection:
            alice = connection.execute(
                sqlalchemy.select(oauth_tokens.c.sealed).where(oauth_tokens.c.principal == "user:alice")
            ).scalar_one()
            # Alice's token into Mallory's row, and into another server's gateway-wide row.
            connection.execute(sqlalchemy.update(oauth_tokens).where(oauth_tokens.c.principal == "user:mallory").values(sealed=alice))
            connection.execute(sqlalchemy.update(oauth_tokens).where(oauth_tokens.c.server == "gitlab").values(sealed=alice))
            client = connection.execute(
                sqlalchemy.select(oauth_clients.c.sealed).where(oauth_clients.c.issuer == "https://issuer")
            ).scalar_one()
            connection.execute(sqlalchemy.update(oauth_clients).where(oauth_clients.c.issuer == "https://evil").values(sealed=client))
            # A client's sealed value in a token's row: another kind of place.
            connection.execute(
                sqlalchemy.insert(oauth_tokens).values(
                    server="github", principal="https://issuer", sealed=client, scopes=[], updated_at=NOW
                )
            )

        for server, principal in (("github", "user:mallory"), ("gitlab", GATEWAY), ("github", "https://issuer")):
            with pytest.raises(UnsealError, match="sealed for another place") as raised:
                oauth.get_token(server, principal)
            assert not any(text in str(raised.value) for text in SECRET_TEXTS)
        with pytest.raises(UnsealError, match="sealed for another place"):
            oauth.get_client("github", "https://evil")
        # Where they were sealed they still open.
        got = oauth.get_token("github", "user:alice")
        assert got is not None and got.value == token()


def test_another_key_does_not_open_what_is_stored(database_url: str) -> None:
    with open_upgraded(database_url) as store:
        OAuthStore(store, new_box()).put_token("github", GATEWAY, token(), now=NOW)
        with pytest.raises(UnsealError, match="sealed under another secret key"):
            OAuthStore(store, new_box()).get_token("github", GATEWAY)


def test_bad_values_are_refused_before_anything_is_stored(database_url: str) -> None:
    with open_upgraded(database_url) as store:
        oauth = OAuthStore(store, new_box())
        refusals: list[tuple[str, dict[str, object]]] = [
            ("a server name is 1 to 128 printable characters", {"server": ""}),
            ("a server name is 1 to 128 printable characters", {"server": "x" * 129}),
            ("a server name is 1 to 128 printable characters", {"server": "a\nb"}),
            ("a principal id is up to 255 printable characters", {"principal": "p" * 256}),
            ("a principal id is up to 255 printable characters", {"principal": "user:\0"}),
            ("'two words' is not an OAuth scope", {"scopes": ["two words"]}),
            ("'' is not an OAuth scope", {"scopes": [""]}),
            ("scopes are a list of scope tokens, not one string", {"scopes": "repo"}),
            ("the token's expiry must be an aware datetime", {"expires_at": datetime(2027, 1, 1)}),
            ("only JSON values can be sealed: this dict is not one, or holds something that is not", {"value": {"x": {ACCESS}}}),
            ("an OAuth value to store is a JSON object, not a list", {"value": [ACCESS]}),
        ]
        for message, change in refusals:
            arguments: dict[str, object] = {"server": "github", "principal": GATEWAY, "value": token(), **change}
            with pytest.raises(InvalidInput, match=message) as raised:
                oauth.put_token(**arguments)  # type: ignore[arg-type]
            assert ACCESS not in str(raised.value)
        with pytest.raises(InvalidInput, match="an issuer is 1 to 1024 printable characters"):
            oauth.put_client("github", "", CLIENT)
        assert oauth.list_tokens() == [] and oauth.list_clients() == []
