"""Tokens from an external issuer: RSA, EC and Ed25519 keys the tests make, JWKS from a file and over HTTP."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
import trio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm
from trio.testing import MockClock, wait_all_tasks_blocked

from lockgate.core import Principal
from lockgate.shells.auth import (
    BearerTokens,
    ExternalIssuer,
    JwksError,
    Refusal,
    RemoteKeySet,
    StaticKeySet,
    TokenIssuer,
    TokenRefused,
    TokenSetupError,
    VerifiedCredential,
    claim_at,
    external_issuer_from_environ,
    load_jwks_file,
    parse_jwks,
)

NOW = 1_800_000_000.0
ISSUER = "https://idp.example"
AUDIENCE = "https://gateway.example/mcp"

RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
ED_KEY = ed25519.Ed25519PrivateKey.generate()
_PRIVATE = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


def jwk(key: _PRIVATE, kid: str, **extra: Any) -> dict[str, Any]:
    public = key.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        entry = RSAAlgorithm.to_jwk(public, as_dict=True)
    elif isinstance(public, ec.EllipticCurvePublicKey):
        entry = ECAlgorithm.to_jwk(public, as_dict=True)
    else:
        entry = OKPAlgorithm.to_jwk(public, as_dict=True)
    assert isinstance(entry, dict)
    return {**entry, "kid": kid, **extra}


def jwks(*entries: object) -> bytes:
    return json.dumps({"keys": list(entries)}).encode()


KEYS = jwks(jwk(RSA_KEY, "rsa-1"), jwk(EC_KEY, "ec-1"), jwk(ED_KEY, "ed-1", alg="EdDSA", use="sig"))


def claims(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "exp": int(NOW) + 600, "iat": int(NOW)}
    base.update(changes)
    return {name: value for name, value in base.items() if value is not None}


def sign(key: _PRIVATE, kid: str | None, algorithm: str, **changes: Any) -> str:
    headers = {} if kid is None else {"kid": kid}
    return jwt.encode(claims(**changes), key, algorithm=algorithm, headers=headers)


def issuer(keys: bytes = KEYS, **options: Any) -> ExternalIssuer:
    return ExternalIssuer(
        issuer=ISSUER, audience=AUDIENCE, keys=StaticKeySet(parse_jwks(keys, source="test")), **options
    )


async def verify(token: str, external: ExternalIssuer | None = None, now: float = NOW) -> VerifiedCredential | TokenRefused:
    return await (external or issuer()).verify(token, now=now)


async def reason(token: str, external: ExternalIssuer | None = None, now: float = NOW) -> Refusal:
    answer = await verify(token, external, now)
    assert isinstance(answer, TokenRefused), answer
    return answer.reason


@pytest.mark.parametrize(("key", "kid", "algorithm"), [(RSA_KEY, "rsa-1", "RS256"), (EC_KEY, "ec-1", "ES256"), (ED_KEY, "ed-1", "EdDSA")])
async def test_rsa_ec_and_ed25519_tokens_verify(key: _PRIVATE, kid: str, algorithm: str) -> None:
    answer = await verify(sign(key, kid, algorithm, role="admin", agents=["backend", "ops.*"]))
    assert isinstance(answer, VerifiedCredential)
    assert answer.principal_id == answer.credential_id == answer.subject == f"jwt:{ISSUER}#alice"
    assert (answer.role, answer.agents, answer.default_agent, answer.issuer) == ("admin", ("backend", "ops.*"), "backend", ISSUER)
    assert answer.expires_at == NOW + 600


async def test_claims_map_through_dotted_paths_strings_and_role_lists() -> None:
    mapped = issuer(role_claim="realm_access.roles", agents_claim="lockgate.agents")
    token = sign(RSA_KEY, "rsa-1", "RS256", realm_access={"roles": ["offline", "admin"]}, lockgate={"agents": "backend ops"})
    answer = await verify(token, mapped)
    assert isinstance(answer, VerifiedCredential)
    assert (answer.role, answer.agents) == ("admin", ("backend", "ops"))
    # A claim whose name has dots is found as written first.
    urls = issuer(role_claim="https://example.com/role")
    answer = await verify(sign(RSA_KEY, "rsa-1", "RS256", **{"https://example.com/role": "admin"}), urls)
    assert isinstance(answer, VerifiedCredential) and answer.role == "admin"
    # Without the claims: a user that may act as no agent.
    answer = await verify(sign(RSA_KEY, "rsa-1", "RS256"))
    assert isinstance(answer, VerifiedCredential) and (answer.role, answer.agents, answer.default_agent) == ("user", (), None)
    assert claim_at({"a": {"b": 1}}, "a.b") == 1 and claim_at({"a": 1}, "a.b") is None


@pytest.mark.parametrize(
    "changes",
    [{"role": "superuser"}, {"role": ["editor"]}, {"role": 1}, {"agents": ["back*"]}, {"agents": {"x": 1}}, {"agents": "ok bad!"}],
)
async def test_a_role_or_agents_claim_lockgate_cannot_read_refuses_the_token(changes: dict[str, Any]) -> None:
    assert await reason(sign(RSA_KEY, "rsa-1", "RS256", **changes)) is Refusal.BAD_CLAIM


async def test_bad_external_tokens_are_refused() -> None:
    assert await reason(sign(OTHER_RSA_KEY, "rsa-1", "RS256")) is Refusal.BAD_SIGNATURE
    assert await reason(sign(RSA_KEY, "rsa-9", "RS256")) is Refusal.UNKNOWN_KEY
    assert await reason(sign(RSA_KEY, None, "RS256")) is Refusal.UNKNOWN_KEY  # several keys: a kid is needed
    only = issuer(jwks(jwk(RSA_KEY, "rsa-1")))
    assert isinstance(await verify(sign(RSA_KEY, None, "RS256"), only), VerifiedCredential)
    assert await reason(sign(RSA_KEY, "rsa-1", "RS256", exp=int(NOW) - 31)) is Refusal.EXPIRED
    assert await reason(sign(RSA_KEY, "rsa-1", "RS256", exp=None)) is Refusal.MISSING_CLAIM
    assert await reason(sign(RSA_KEY, "rsa-1", "RS256", nbf=int(NOW) + 31)) is Refusal.NOT_YET_VALID
    assert await reason(sign(RSA_KEY, "rsa-1", "RS256", aud="https://other.example")) is Refusal.WRONG_AUDIENCE
    assert await reason(sign(RSA_KEY, "rsa-1", "RS256", iss="https://evil.example")) is Refusal.WRONG_ISSUER
    assert await reason(sign(RSA_KEY, "rsa-1", "RS256", sub=None)) is Refusal.MISSING_CLAIM
    assert await reason(sign(RSA_KEY, "rsa-1", "PS256")) is Refusal.ALGORITHM_NOT_ALLOWED
    assert await reason("x" * 9000) is Refusal.TOO_LARGE
    assert await reason("not.a.jwt!") is Refusal.MALFORMED


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _hs256(header: dict[str, Any], payload: dict[str, Any], key: bytes) -> str:
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(payload).encode())}"
    return f"{signing_input}.{_b64(hmac.new(key, signing_input.encode(), hashlib.sha256).digest())}"


@pytest.mark.parametrize(("key", "kid"), [(RSA_KEY, "rsa-1"), (EC_KEY, "ec-1"), (ED_KEY, "ed-1")])
async def test_an_hs256_token_signed_with_the_public_key_is_refused(key: _PRIVATE, kid: str) -> None:
    pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    for public_bytes in (pem, json.dumps(jwk(key, kid)).encode()):
        forged = _hs256({"alg": "HS256", "kid": kid}, claims(role="admin"), public_bytes)
        assert await reason(forged) is Refusal.ALGORITHM_NOT_ALLOWED


async def test_a_token_must_use_the_algorithm_of_its_key() -> None:
    # An EC token that names the RSA key, and the reverse: the key decides.
    assert await reason(sign(EC_KEY, "rsa-1", "ES256")) is Refusal.ALGORITHM_NOT_ALLOWED
    assert await reason(sign(RSA_KEY, "ec-1", "RS256")) is Refusal.ALGORITHM_NOT_ALLOWED
    header = _b64(json.dumps({"alg": "none", "kid": "rsa-1"}).encode())
    assert await reason(f"{header}.{_b64(json.dumps(claims()).encode())}.") is Refusal.ALGORITHM_NOT_ALLOWED


def test_a_jwks_keeps_only_signing_keys_it_can_trust() -> None:
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    keys = parse_jwks(
        jwks(
            jwk(RSA_KEY, "good"),
            jwk(small, "small"),
            jwk(RSA_KEY, "enc", use="enc"),
            jwk(RSA_KEY, "ps", alg="PS256"),
            jwk(ec.generate_private_key(ec.SECP384R1()), "p384"),
            {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"},
            {**jwk(EC_KEY, "private"), "d": "AAAA"},
            jwk(RSA_KEY, "good"),
            "junk",
        ),
        source="test",
    )
    assert [key.kid for key in keys.keys] == ["good"]
    assert len(keys.skipped) == 8
    assert "an RSA key must have 2048 bits or more" in keys.skipped[0]
    assert "private or symmetric key material" in keys.skipped[4]
    for bad in (b"", b"[]", b'{"keys": {}}', jwks({"kty": "oct", "k": "c2VjcmV0"})):
        with pytest.raises(JwksError, match="the key set from test"):
            parse_jwks(bad, source="test")


def test_the_external_issuer_comes_from_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "jwks.json"
    path.write_bytes(KEYS)
    assert external_issuer_from_environ({}) is None
    configured = external_issuer_from_environ({
        "GATEWAY_JWT_ISSUER": ISSUER, "GATEWAY_JWT_AUDIENCE": AUDIENCE, "GATEWAY_JWT_JWKS": str(path),
        "GATEWAY_JWT_ROLE_CLAIM": "realm.role", "GATEWAY_JWT_AGENTS_CLAIM": "",
    })
    assert configured is not None
    assert (configured.issuer, configured.audience, configured.role_claim, configured.agents_claim) == (
        ISSUER, AUDIENCE, "realm.role", "agents"
    )
    assert isinstance(configured.keys, StaticKeySet) and len(configured.keys.keys.keys) == 3
    remote = external_issuer_from_environ({
        "GATEWAY_JWT_ISSUER": ISSUER, "GATEWAY_JWT_AUDIENCE": AUDIENCE, "GATEWAY_JWT_JWKS": "https://idp.example/jwks",
    })
    assert remote is not None and isinstance(remote.keys, RemoteKeySet)

    failures = {
        "is not set": {"GATEWAY_JWT_ISSUER": ISSUER, "GATEWAY_JWT_JWKS": str(path)},
        "cannot read the key set": {"GATEWAY_JWT_ISSUER": ISSUER, "GATEWAY_JWT_AUDIENCE": AUDIENCE, "GATEWAY_JWT_JWKS": str(tmp_path / "none")},
        "must be https": {"GATEWAY_JWT_ISSUER": ISSUER, "GATEWAY_JWT_AUDIENCE": AUDIENCE, "GATEWAY_JWT_JWKS": "http://idp.example/jwks"},
        "must name a claim": {"GATEWAY_JWT_ISSUER": ISSUER, "GATEWAY_JWT_AUDIENCE": AUDIENCE, "GATEWAY_JWT_JWKS": str(path), "GATEWAY_JWT_AGENTS_CLAIM": "a..b"},
    }
    for words, environ in failures.items():
        with pytest.raises(TokenSetupError, match=words) as error:
            external_issuer_from_environ(environ)
        assert "\n" not in str(error.value)
    same = {"GATEWAY_JWT_SECRET": "s" * 32, "GATEWAY_JWT_ISSUER": "lockgate", "GATEWAY_JWT_AUDIENCE": AUDIENCE, "GATEWAY_JWT_JWKS": str(path)}
    with pytest.raises(TokenSetupError, match="same name as Lockgate's own"):
        BearerTokens.from_environ(same)


async def test_bearer_tokens_take_both_issuers(tmp_path: Path) -> None:
    path = tmp_path / "jwks.json"
    path.write_bytes(KEYS)
    bearer = BearerTokens.from_environ({
        "GATEWAY_JWT_SECRET": "s" * 32, "GATEWAY_JWT_ISSUER": ISSUER, "GATEWAY_JWT_AUDIENCE": AUDIENCE, "GATEWAY_JWT_JWKS": str(path),
    })
    external = await bearer.verify(sign(EC_KEY, "ec-1", "ES256"), now=NOW)
    assert isinstance(external, VerifiedCredential) and external.issuer == ISSUER
    own = TokenIssuer(secret=b"s" * 32).issue(Principal(id="user:alice", agents=("backend",)), now=NOW)
    verified = await bearer.verify(own.token, now=NOW)
    assert isinstance(verified, VerifiedCredential) and verified.issuer == "lockgate"
    assert load_jwks_file(str(path)).keys[0].kid == "rsa-1"


# -- JWKS over HTTP: a real server on 127.0.0.1, in a thread. --


@dataclass
class JwksServer:
    """Serves ``body`` with ``status``; counts the requests."""

    body: bytes = KEYS
    status: int = 200
    requests: int = 0
    url: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)


@pytest.fixture
def jwks_server() -> Iterator[JwksServer]:
    state = JwksServer()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
            with state.lock:
                state.requests += 1
                status, body = state.status, state.body
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/jwks.json"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def remote(url: str, **options: Any) -> ExternalIssuer:
    return ExternalIssuer(issuer=ISSUER, audience=AUDIENCE, keys=RemoteKeySet(url, **options))


async def test_fetched_keys_are_cached_and_an_unknown_kid_refetches_at_most_once_a_minute(
    jwks_server: JwksServer, mock_clock: MockClock
) -> None:
    external = remote(jwks_server.url)
    # The clock is virtual and jumps below, so the bound is far above the jumps.
    with trio.fail_after(10_000):
        assert isinstance(await verify(sign(RSA_KEY, "rsa-1", "RS256"), external), VerifiedCredential)
        assert isinstance(await verify(sign(EC_KEY, "ec-1", "ES256"), external), VerifiedCredential)
        assert jwks_server.requests == 1
        # The issuer rotates in a new key; a token with its kid arrives.
        jwks_server.body = jwks(jwk(RSA_KEY, "rsa-1"), jwk(OTHER_RSA_KEY, "rsa-2"))
        rotated = sign(OTHER_RSA_KEY, "rsa-2", "RS256")
        assert await reason(rotated, external) is Refusal.UNKNOWN_KEY  # fetched less than a minute ago
        assert jwks_server.requests == 1
        mock_clock.jump(60)
        assert isinstance(await verify(rotated, external), VerifiedCredential)
        assert jwks_server.requests == 2
        # Made-up kids do not make it fetch again within the minute.
        for index in range(20):
            assert await reason(sign(RSA_KEY, f"made-up-{index}", "RS256"), external) is Refusal.UNKNOWN_KEY
        assert jwks_server.requests == 2


async def test_tasks_needing_keys_together_share_one_fetch(jwks_server: JwksServer) -> None:
    external = remote(jwks_server.url)
    token = sign(RSA_KEY, "rsa-1", "RS256")
    answers: list[VerifiedCredential | TokenRefused] = []

    async def check() -> None:
        answers.append(await verify(token, external))

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            for _ in range(20):
                nursery.start_soon(check)
    assert len(answers) == 20 and all(isinstance(answer, VerifiedCredential) for answer in answers)
    assert jwks_server.requests == 1


async def test_keys_that_cannot_be_fetched_fail_closed(jwks_server: JwksServer, mock_clock: MockClock) -> None:
    token = sign(RSA_KEY, "rsa-1", "RS256")
    with trio.fail_after(10_000):  # on the virtual clock, far above its jumps
        # Nothing listens there.
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            closed_port = probe.getsockname()[1]
        unreachable = remote(f"http://127.0.0.1:{closed_port}/jwks.json")
        answer = await verify(token, unreachable)
        assert isinstance(answer, TokenRefused) and answer.reason is Refusal.KEYS_UNAVAILABLE
        assert answer.detail == f"the issuer's keys cannot be fetched from http://127.0.0.1:{closed_port}/jwks.json"
        assert isinstance(unreachable.keys, RemoteKeySet) and "ConnectError" in (unreachable.keys.failure or "")

        # A server that answers with an error, then with something not a key set.
        jwks_server.status = 500
        failing = remote(jwks_server.url)
        assert await reason(token, failing) is Refusal.KEYS_UNAVAILABLE
        assert await reason(token, failing) is Refusal.KEYS_UNAVAILABLE
        assert jwks_server.requests == 1  # no retry moments after a failure
        jwks_server.status, jwks_server.body = 200, b"<html>"
        mock_clock.jump(11)
        assert await reason(token, failing) is Refusal.KEYS_UNAVAILABLE
        assert isinstance(failing.keys, RemoteKeySet) and "is not JSON" in (failing.keys.failure or "")

        # Keys that aged past their lifetime and cannot be fetched again are not used.
        jwks_server.body = KEYS
        aging = remote(jwks_server.url, ttl=300)
        assert isinstance(await verify(token, aging), VerifiedCredential)
        jwks_server.status = 503
        mock_clock.jump(299)
        assert isinstance(await verify(token, aging), VerifiedCredential)
        mock_clock.jump(2)
        assert await reason(token, aging) is Refusal.KEYS_UNAVAILABLE
        jwks_server.status = 200
        mock_clock.jump(11)
        assert isinstance(await verify(token, aging), VerifiedCredential)


def test_a_key_set_url_must_be_https_unless_it_is_loopback() -> None:
    for url in ("http://idp.example/jwks", "ftp://idp.example/jwks", "https:///jwks", "file:///etc/jwks"):
        with pytest.raises(JwksError, match="must be https"):
            RemoteKeySet(url)
    for url in ("https://idp.example/jwks", "http://127.0.0.1:8/jwks", "http://[::1]:8/jwks", "http://localhost/jwks"):
        RemoteKeySet(url)
    # Credentials in the URL never reach a message.
    with pytest.raises(JwksError) as error:
        RemoteKeySet("http://user:hunter2@idp.example/jwks?token=abc")
    assert "hunter2" not in str(error.value) and "abc" not in str(error.value)


async def wait_until(condition: Callable[[], bool]) -> None:
    while not condition():
        await trio.sleep(0.01)


async def test_offline_verification_uses_the_keys_a_task_keeps_fresh(jwks_server: JwksServer) -> None:
    keys = RemoteKeySet(jwks_server.url, ttl=0.5, min_refresh_interval=0)
    bearer = BearerTokens(TokenIssuer(secret=b"s" * 32), ExternalIssuer(issuer=ISSUER, audience=AUDIENCE, keys=keys))
    token = sign(RSA_KEY, "rsa-1", "RS256")
    # Before the first fetch there are no keys in hand: refused, never waited for.
    answer = bearer.verify_offline(token, now=NOW)
    assert isinstance(answer, TokenRefused) and answer.reason is Refusal.KEYS_UNAVAILABLE
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(bearer.keep_fresh)
            await wait_until(lambda: isinstance(bearer.verify_offline(token, now=NOW), VerifiedCredential))
            # A key it does not know wakes the task; the next token with that kid passes.
            jwks_server.body = jwks(jwk(RSA_KEY, "rsa-1"), jwk(OTHER_RSA_KEY, "rsa-2"))
            rotated = sign(OTHER_RSA_KEY, "rsa-2", "RS256")
            await wait_until(lambda: isinstance(bearer.verify_offline(rotated, now=NOW), VerifiedCredential))
            # And the keys are fetched again before they age out.
            fetched = jwks_server.requests
            await wait_until(lambda: jwks_server.requests > fetched)
            await wait_until(lambda: isinstance(bearer.verify_offline(token, now=NOW), VerifiedCredential))
            nursery.cancel_scope.cancel()
    # Lockgate's own tokens need no keys fetched.
    own = TokenIssuer(secret=b"s" * 32).issue(Principal(id="user:alice"), now=NOW)
    assert isinstance(bearer.verify_offline(own.token, now=NOW), VerifiedCredential)
    assert isinstance(BearerTokens(TokenIssuer(secret=b"s" * 32)).verify_offline(token, now=NOW), TokenRefused)


async def test_the_task_retries_a_failed_fetch_in_its_own_time(jwks_server: JwksServer, mock_clock: MockClock) -> None:
    mock_clock.rate = 1  # real time passes (for the server's answers), and the test jumps ahead of it
    jwks_server.status = 503
    keys = RemoteKeySet(jwks_server.url)
    external = ExternalIssuer(issuer=ISSUER, audience=AUDIENCE, keys=keys)
    token = sign(RSA_KEY, "rsa-1", "RS256")
    with trio.fail_after(10_000):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(keys.keep_fresh)
            await wait_until(lambda: keys.failure is not None)
            for _ in range(20):
                assert external.verify_offline(token, now=NOW) == TokenRefused(
                    Refusal.KEYS_UNAVAILABLE, f"the issuer's keys cannot be fetched from {jwks_server.url}"
                )
            await wait_all_tasks_blocked()
            assert jwks_server.requests == 1
            jwks_server.status = 200
            mock_clock.jump(10)
            await wait_until(lambda: isinstance(external.verify_offline(token, now=NOW), VerifiedCredential))
            assert jwks_server.requests == 2
            nursery.cancel_scope.cancel()
