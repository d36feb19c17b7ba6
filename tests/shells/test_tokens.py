"""Lockgate's own bearer tokens: issue, verify, every bad token, the signing secret and its file."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import stat
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from lockgate.core import Principal, Rate
from lockgate.shells.auth import (
    MAX_TOKEN_BYTES,
    BearerTokens,
    Refusal,
    TokenIssuer,
    TokenRefused,
    TokenSetupError,
    VerifiedCredential,
    signing_secret,
    token_ttl,
)
from lockgate.shells.auth.tokens import SECRET_FILE, secret_from_file

SECRET = b"0123456789abcdef0123456789abcdef"
OTHER_SECRET = b"fedcba9876543210fedcba9876543210"
NOW = 1_800_000_000.0
ALICE = Principal(id="user:alice", role="admin", agents=("backend.*", "backend", "ops"), rate=Rate(120, 60.0))


def issuer(secret: bytes = SECRET, **options: Any) -> TokenIssuer:
    return TokenIssuer(secret=secret, **options)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: dict[str, Any], claims: dict[str, Any], key: bytes | None = SECRET) -> str:
    """A token built by hand, HS256-signed with ``key`` (``None``: no signature), whatever its header says."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    signature = b"" if key is None else hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


def signed(head: str, body: str) -> str:
    """``head.body`` with a valid HS256 signature, whatever the two hold."""
    return f"{head}.{body}.{b64(hmac.new(SECRET, f'{head}.{body}'.encode(), hashlib.sha256).digest())}"


def good_claims(**changes: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {
        "iss": "lockgate",
        "aud": "lockgate",
        "sub": "user:alice",
        "role": "user",
        "agents": ["backend"],
        "iat": int(NOW),
        "nbf": int(NOW),
        "exp": int(NOW) + 600,
        "jti": "j1",
    }
    claims.update(changes)
    return {name: value for name, value in claims.items() if value is not None}


def refused(answer: VerifiedCredential | TokenRefused) -> Refusal:
    assert isinstance(answer, TokenRefused), answer
    return answer.reason


def test_an_issued_token_verifies_to_its_principal() -> None:
    tokens = issuer()
    issued = tokens.issue(ALICE, now=NOW + 0.7, ttl=600)
    assert issued.expires_in == 600
    assert issued.principal_id == "user:alice"
    assert issued.token not in repr(issued)

    verified = tokens.verify(issued.token, now=NOW + 10)
    assert isinstance(verified, VerifiedCredential)
    assert verified.principal_id == "user:alice"
    assert verified.credential_id == issued.credential_id and verified.credential_id.startswith("jwt:")
    assert (verified.role, verified.agents, verified.rate, verified.tools) == (
        "admin", ("backend.*", "backend", "ops"), Rate(120, 60.0), None
    )
    assert verified.default_agent == "backend"
    assert verified.expires_at == NOW + 600
    assert verified.chain == () and not verified.delegated

    # The core's clock is not the wall clock: the expiry moves onto it.
    principal = verified.to_principal(now=NOW + 10, event_now=50.0)
    assert principal == Principal(
        id="user:alice", role="admin", agents=("backend.*", "backend", "ops"), default_agent="backend",
        rate=Rate(120, 60.0), expires=50.0 + 590,
    )


def test_the_claims_are_the_documented_ones() -> None:
    issued = issuer(issuer="https://gw.example", audience="https://gw.example/mcp").issue(
        Principal(id="key:3f9a1c2b", agents=("*",), tools=("github/get_*",)), now=NOW
    )
    claims = jwt.decode(issued.token, options={"verify_signature": False})
    assert claims.keys() == {"iss", "aud", "sub", "role", "agents", "iat", "nbf", "exp", "jti", "tools"}
    assert (claims["iss"], claims["aud"], claims["sub"], claims["role"]) == (
        "https://gw.example", "https://gw.example/mcp", "key:3f9a1c2b", "user"
    )
    assert claims["exp"] - claims["iat"] == 3600 and claims["nbf"] == claims["iat"]
    assert jwt.get_unverified_header(issued.token)["alg"] == "HS256"
    # Every token has its own id.
    assert issued.credential_id != issuer().issue(ALICE, now=NOW).credential_id


def test_a_token_signed_with_another_key_is_refused() -> None:
    token = issuer(OTHER_SECRET).issue(ALICE, now=NOW).token
    assert refused(issuer().verify(token, now=NOW)) is Refusal.BAD_SIGNATURE
    # A changed claim breaks the signature too.
    head, _, signature = token.split(".")
    changed = f"{head}.{b64(json.dumps(good_claims(role='admin')).encode())}.{signature}"
    assert refused(issuer().verify(changed, now=NOW)) is Refusal.BAD_SIGNATURE


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
def test_alg_none_is_refused(alg: str) -> None:
    token = forge({"alg": alg, "typ": "JWT"}, good_claims(), key=None)
    assert refused(issuer().verify(token, now=NOW)) is Refusal.ALGORITHM_NOT_ALLOWED
    # Even with an HMAC signature attached.
    token = forge({"alg": alg}, good_claims())
    assert refused(issuer().verify(token, now=NOW)) is Refusal.ALGORITHM_NOT_ALLOWED


def test_an_hmac_verifier_refuses_rsa_and_other_hmac_algorithms() -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rs256 = jwt.encode(good_claims(), private, algorithm="RS256")
    assert refused(issuer().verify(rs256, now=NOW)) is Refusal.ALGORITHM_NOT_ALLOWED
    hs512 = jwt.encode(good_claims(), SECRET * 2, algorithm="HS512")
    assert refused(issuer().verify(hs512, now=NOW)) is Refusal.ALGORITHM_NOT_ALLOWED


def test_expiry_and_not_before_are_checked_with_a_small_leeway() -> None:
    tokens = issuer()
    token = tokens.issue(ALICE, now=NOW, ttl=60).token
    assert isinstance(tokens.verify(token, now=NOW + 60 + 29), VerifiedCredential)
    assert refused(tokens.verify(token, now=NOW + 60 + 30)) is Refusal.EXPIRED
    assert isinstance(tokens.verify(token, now=NOW - 29), VerifiedCredential)
    assert refused(tokens.verify(token, now=NOW - 31)) is Refusal.NOT_YET_VALID
    later = forge({"alg": "HS256"}, good_claims(nbf=int(NOW) + 100))
    assert refused(tokens.verify(later, now=NOW)) is Refusal.NOT_YET_VALID


def test_wrong_audience_and_wrong_issuer_are_refused() -> None:
    mine = issuer(issuer="https://gw.example", audience="https://gw.example/mcp")
    for_another = issuer(issuer="https://gw.example", audience="https://other.example/mcp").issue(ALICE, now=NOW)
    assert refused(mine.verify(for_another.token, now=NOW)) is Refusal.WRONG_AUDIENCE
    from_another = issuer(issuer="https://other.example", audience="https://gw.example/mcp").issue(ALICE, now=NOW)
    assert refused(mine.verify(from_another.token, now=NOW)) is Refusal.WRONG_ISSUER


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"exp": None}, Refusal.MISSING_CLAIM),
        ({"aud": None}, Refusal.MISSING_CLAIM),
        ({"jti": None}, Refusal.MISSING_CLAIM),
        ({"agents": None}, Refusal.MISSING_CLAIM),
        ({"exp": float("nan")}, Refusal.BAD_CLAIM),
        ({"exp": float("inf")}, Refusal.BAD_CLAIM),
        ({"exp": 10**400}, Refusal.BAD_CLAIM),
        ({"exp": True}, Refusal.BAD_CLAIM),
        ({"exp": "tomorrow"}, Refusal.BAD_CLAIM),
        ({"role": "root"}, Refusal.BAD_CLAIM),
        ({"agents": ["back*"]}, Refusal.BAD_CLAIM),
        ({"agents": "backend"}, None),
        ({"sub": ""}, Refusal.BAD_CLAIM),
        ({"sub": 7}, Refusal.BAD_CLAIM),
        ({"tools": ["no-slash"]}, Refusal.BAD_CLAIM),
        ({"rate": "lots"}, Refusal.BAD_CLAIM),
        ({"chain": ["jwt:a"]}, Refusal.BAD_CLAIM),
        ({"chain": ["jwt:a"], "parent": "jwt:b"}, Refusal.BAD_CLAIM),
        ({"chain": [], "parent": "jwt:b"}, Refusal.BAD_CLAIM),
    ],
)
def test_claims_that_are_missing_or_wrong_are_refused(changes: dict[str, Any], reason: Refusal | None) -> None:
    answer = issuer().verify(forge({"alg": "HS256"}, good_claims(**changes)), now=NOW)
    if reason is None:
        assert isinstance(answer, VerifiedCredential)
    else:
        assert refused(answer) is reason


def test_malformed_truncated_and_oversized_tokens_are_refused_without_echoing_them() -> None:
    token = issuer().issue(ALICE, now=NOW).token
    head, body, signature = token.split(".")
    cases = {
        "": Refusal.MALFORMED,
        "lg_3f9a1c2b_notajwt": Refusal.MALFORMED,
        "a.b": Refusal.MALFORMED,
        "a.b.c.d": Refusal.MALFORMED,
        f"{head}.{body}": Refusal.MALFORMED,
        f"{head}.{body}.": Refusal.BAD_SIGNATURE,
        token[: len(token) // 2]: Refusal.MALFORMED,
        f"{head[:-3]}.{body}.{signature}": Refusal.MALFORMED,
        f"{b64(b'[1, 2]')}.{body}.{signature}": Refusal.MALFORMED,
        f"{head}.{b64(b'not json')}.{signature}": Refusal.BAD_SIGNATURE,
        signed(head, b64(b"not json")): Refusal.MALFORMED,
        signed(head, b64(b"[1, 2]")): Refusal.MALFORMED,
        f"{head} .{body}.{signature}": Refusal.MALFORMED,
        token + "x" * MAX_TOKEN_BYTES: Refusal.TOO_LARGE,
        f"{b64(json.dumps({'alg': 'HS256', 'crit': ['exp']}).encode())}.{body}.{signature}": Refusal.MALFORMED,
        f"{b64(json.dumps({'alg': 'HS256', 'b64': False}).encode())}.{body}.{signature}": Refusal.MALFORMED,
    }
    for candidate, reason in cases.items():
        answer = issuer().verify(candidate, now=NOW)
        assert refused(answer) is reason, candidate
        assert isinstance(answer, TokenRefused)
        assert "\n" not in str(answer) and (len(candidate) < 5 or candidate[-5:] not in answer.detail)
    # Cut anywhere, a token proves nothing; which check notices first depends on where the cut falls.
    for end in range(len(token) - 1, 0, -7):
        assert refused(issuer().verify(token[:end], now=NOW)) in (Refusal.MALFORMED, Refusal.BAD_SIGNATURE)


@settings(max_examples=300)
@given(st.text(max_size=200) | st.builds(lambda parts: ".".join(parts), st.lists(st.text("ab_-=+/.{}", max_size=30), max_size=4)))
def test_no_string_makes_verification_raise(candidate: str) -> None:
    assert isinstance(issuer().verify(candidate, now=NOW), TokenRefused)


def test_issue_refuses_what_no_token_should_carry() -> None:
    tokens = issuer()
    for principal in (
        Principal(id="user:bob", agents=("back*",)),
        Principal(id="user:bob", tools=("no-slash",)),
        Principal(id="user:bob", rate=Rate(3, 7.0)),
        Principal(id="", agents=("backend",)),
    ):
        with pytest.raises(ValueError):
            tokens.issue(principal, now=NOW)
    with pytest.raises(ValueError):
        tokens.issue(ALICE, now=NOW, ttl=0)
    with pytest.raises(ValueError):
        TokenIssuer(secret=b"short")


def test_the_secret_comes_from_the_environment_and_must_be_long_enough(tmp_path: Path) -> None:
    long_enough = "s" * 32
    assert signing_secret({"GATEWAY_JWT_SECRET": long_enough, "GATEWAY_STATE_DIR": str(tmp_path)}) == b"s" * 32
    assert not (tmp_path / SECRET_FILE).exists()
    with pytest.raises(TokenSetupError) as error:
        signing_secret({"GATEWAY_JWT_SECRET": "tooshort"})
    assert str(error.value).startswith("GATEWAY_JWT_SECRET is 8 bytes long; it must be at least 32")
    assert "tooshort" not in str(error.value) and "\n" not in str(error.value)


def test_without_a_secret_one_is_made_once_in_the_state_folder(tmp_path: Path) -> None:
    environ = {"GATEWAY_STATE_DIR": str(tmp_path / "state")}
    first = signing_secret(environ)
    path = tmp_path / "state" / SECRET_FILE
    assert len(first) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "state").stat().st_mode) == 0o700
    assert os.listdir(tmp_path / "state") == [SECRET_FILE]
    # A restart, or a second gateway on the machine, reads the same one.
    assert signing_secret(environ) == first
    one, two = (TokenIssuer.from_environ(environ) for _ in range(2))
    assert isinstance(two.verify(one.issue(ALICE, now=NOW).token, now=NOW), VerifiedCredential)


def test_the_state_folder_follows_xdg_state_home(tmp_path: Path) -> None:
    signing_secret({"XDG_STATE_HOME": str(tmp_path)})
    assert (tmp_path / "lockgate" / SECRET_FILE).exists()


def test_a_secret_file_others_may_read_or_that_holds_no_secret_is_refused(tmp_path: Path) -> None:
    path = tmp_path / SECRET_FILE
    secret_from_file(str(path))
    path.chmod(0o644)
    with pytest.raises(TokenSetupError, match=r"other than its owner may use it \(mode 0644\); run: chmod 600"):
        secret_from_file(str(path))
    path.write_text("short\n")
    path.chmod(0o600)
    with pytest.raises(TokenSetupError, match="does not hold a token signing secret"):
        secret_from_file(str(path))
    blocked = tmp_path / "file"
    blocked.write_text("")
    with pytest.raises(TokenSetupError, match="cannot keep the token signing secret in"):
        secret_from_file(str(blocked / SECRET_FILE))


def test_token_lifetime_setting() -> None:
    assert token_ttl({}) == 3600
    assert token_ttl({"GATEWAY_TOKEN_TTL": " 900 "}) == 900
    for bad in ("0", "-5", "1.5", "an hour"):
        with pytest.raises(TokenSetupError, match="GATEWAY_TOKEN_TTL must be a whole number of seconds"):
            token_ttl({"GATEWAY_TOKEN_TTL": bad})
    tokens = TokenIssuer.from_environ({"GATEWAY_JWT_SECRET": "s" * 40, "GATEWAY_TOKEN_TTL": "120"})
    assert tokens.issue(ALICE, now=NOW).expires_in == 120


async def test_bearer_tokens_pick_the_verifier_by_issuer() -> None:
    bearer = BearerTokens(issuer())
    token = issuer().issue(ALICE, now=NOW).token
    assert isinstance(await bearer.verify(token, now=NOW), VerifiedCredential)
    stranger = issuer(issuer="https://idp.example").issue(ALICE, now=NOW).token
    assert refused(await bearer.verify(stranger, now=NOW)) is Refusal.WRONG_ISSUER
    no_issuer = forge({"alg": "HS256"}, good_claims(iss=None))
    assert refused(await bearer.verify(no_issuer, now=NOW)) is Refusal.MISSING_CLAIM
    assert refused(await bearer.verify("garbage", now=NOW)) is Refusal.MALFORMED


def test_rsa_public_key_bytes_are_no_hmac_secret_for_lockgate() -> None:
    # The classic confusion: an attacker signs HS256 with a public key's PEM.
    # Lockgate's own verifier holds only its secret, so this is a bad signature.
    public = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    pem = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert refused(issuer().verify(forge({"alg": "HS256"}, good_claims(), key=pem), now=NOW)) is Refusal.BAD_SIGNATURE
