"""Delegated tokens: narrower is granted, wider is refused field by field, chains revoke, never an agent too many."""

from __future__ import annotations

from fnmatch import fnmatchcase

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lockgate.core import Principal, Rate, may_act_as
from lockgate.shells.auth import (
    MAX_CHAIN,
    DelegationRefused,
    DelegationRequest,
    IssuedToken,
    TokenIssuer,
    VerifiedCredential,
    is_revoked,
    tools_within,
)

NOW = 1_800_000_000.0
TOKENS = TokenIssuer(secret=b"0123456789abcdef0123456789abcdef")
BACKEND = Principal(id="user:alice", role="admin", agents=("backend", "backend.*"), tools=("github/*", "db/read_*"))


def verified(token: IssuedToken | DelegationRefused, now: float = NOW) -> VerifiedCredential:
    assert isinstance(token, IssuedToken), token
    credential = TOKENS.verify(token.token, now=now)
    assert isinstance(credential, VerifiedCredential), credential
    return credential


def parent(principal: Principal = BACKEND, ttl: int = 3600) -> VerifiedCredential:
    return verified(TOKENS.issue(principal, now=NOW, ttl=ttl))


def refusal(answer: IssuedToken | DelegationRefused) -> DelegationRefused:
    assert isinstance(answer, DelegationRefused), answer
    return answer


def test_a_narrower_token_is_granted_and_verifies_offline() -> None:
    mother = parent()
    issued = TOKENS.delegate(
        mother, DelegationRequest(agents=("backend.reviewer",), ttl=300, tools=("github/get_*",)), now=NOW + 5
    )
    child = verified(issued, now=NOW + 5)
    assert isinstance(issued, IssuedToken)
    assert child.principal_id == issued.principal_id
    assert child.principal_id.startswith("delegated:")
    assert child.subject == "user:alice"
    assert (child.role, child.agents, child.tools, child.default_agent) == (
        "user", ("backend.reviewer",), ("github/get_*",), "backend.reviewer"
    )
    assert child.chain == (mother.credential_id,) and child.delegated
    assert child.expires_at == NOW + 5 + 300
    assert issued.expires_in == 300


def test_what_the_request_leaves_out_is_the_parents_or_the_least() -> None:
    mother = parent(Principal(id="key:3f9a1c2b", role="admin", agents=("*",), tools=("github/*",), rate=Rate(60, 60.0)))
    child = verified(TOKENS.delegate(mother, DelegationRequest(agents=("ops",)), now=NOW))
    # The role is user unless asked; tools and rate are the parent's; the lifetime a short default.
    assert (child.role, child.tools, child.rate) == ("user", ("github/*",), Rate(60, 60.0))
    assert child.expires_at == NOW + 900
    admin = verified(TOKENS.delegate(mother, DelegationRequest(agents=("ops",), role="admin", rate=Rate(1, 1.0)), now=NOW))
    assert (admin.role, admin.rate) == ("admin", Rate(1, 1.0))


def test_a_child_carries_the_rates_of_its_ancestors_to_share_their_buckets() -> None:
    key = VerifiedCredential.from_principal(Principal(id="key:3f9a1c2b", agents=("backend.*",), rate=Rate(60, 60.0)))
    child = verified(TOKENS.delegate(key, DelegationRequest(agents=("backend.a",), rate=Rate(10, 60.0)), now=NOW))
    assert child.shared_rates == (("key:3f9a1c2b", Rate(60, 60.0)),)
    grandchild = verified(TOKENS.delegate(child, DelegationRequest(agents=("backend.a",)), now=NOW))
    assert grandchild.rate == Rate(10, 60.0)
    assert grandchild.shared_rates == (("key:3f9a1c2b", Rate(60, 60.0)), (child.principal_id, Rate(10, 60.0)))
    principal = grandchild.to_principal(now=NOW, event_now=0.0)
    assert principal.shared_rates == grandchild.shared_rates
    # No rate anywhere up the chain: nothing to share.
    assert verified(TOKENS.delegate(parent(), DelegationRequest(agents=("backend",)), now=NOW)).shared_rates == ()


@pytest.mark.parametrize(
    "shared",
    [[["key:1", "fast"]], [["", "1/s"]], [["key:1"]], "key:1=1/s", [["key:1", "1/s"], ["key:2", "1/s"]], [[1, "1/s"]]],
)
def test_a_token_whose_shared_rates_are_not_its_ancestors_rates_is_refused(shared: object) -> None:
    import jwt

    claims = {"iss": "lockgate", "aud": "lockgate", "sub": "key:1", "role": "user", "agents": ["backend"],
              "iat": int(NOW), "nbf": int(NOW), "exp": int(NOW) + 60, "jti": "j", "parent": "key:1",
              "chain": ["key:1"], "shared_rates": shared}
    refused = TOKENS.verify(jwt.encode(claims, TOKENS.secret, algorithm="HS256"), now=NOW)
    assert not isinstance(refused, VerifiedCredential)
    assert refused.reason == "bad_claim" and "shared_rates" in refused.detail


def test_the_default_lifetime_never_outlives_the_parent() -> None:
    mother = parent(ttl=100)
    child = verified(TOKENS.delegate(mother, DelegationRequest(agents=("backend",)), now=NOW + 40), now=NOW + 40)
    assert child.expires_at == mother.expires_at == NOW + 100


@pytest.mark.parametrize(
    ("request_", "field", "words"),
    [
        (DelegationRequest(agents=()), "agents", "name at least one agent"),
        (DelegationRequest(agents=("billing",)), "agents", "'billing' reaches beyond"),
        (DelegationRequest(agents=("*",)), "agents", "'*' reaches beyond"),
        (DelegationRequest(agents=("backend.db", "back*")), "agents", "'back*' is not an agent grant"),
        (DelegationRequest(agents=("backend",), role="root"), "role", "'root' is not a role"),  # type: ignore[arg-type]
        (DelegationRequest(agents=("backend",), ttl=3000), "ttl", "outlives the parent credential (2900s left)"),
        (DelegationRequest(agents=("backend",), ttl=3601), "ttl", "above the longest a delegated token may live"),
        (DelegationRequest(agents=("backend",), ttl=0), "ttl", "1 or more"),
        (DelegationRequest(agents=("backend",), ttl=float("nan")), "ttl", "1 or more"),
        (DelegationRequest(agents=("backend",), tools=("github/*", "slack/post")), "tools", "'slack/post' reaches"),
        (DelegationRequest(agents=("backend",), tools=("*/*",)), "tools", "'*/*' reaches beyond"),
        (DelegationRequest(agents=("backend",), tools=("db/read*",)), "tools", "'db/read*' reaches beyond"),
        (DelegationRequest(agents=("backend",), tools=("nothing",)), "tools", "not a tool pattern"),
    ],
)
def test_a_wider_request_is_refused_naming_what(request_: DelegationRequest, field: str, words: str) -> None:
    refused = refusal(TOKENS.delegate(parent(), request_, now=NOW + 700))
    assert refused.field == field
    assert words in refused.reason
    assert str(refused).startswith("delegation refused: ")


def test_role_lifetime_and_rate_above_the_parents_are_refused() -> None:
    user = parent(Principal(id="user:bob", role="user", agents=("backend",), rate=Rate(10, 60.0)), ttl=600)
    assert refusal(TOKENS.delegate(user, DelegationRequest(agents=("backend",), role="admin"), now=NOW)).field == "role"
    assert refusal(TOKENS.delegate(user, DelegationRequest(agents=("backend",), ttl=601), now=NOW)).field == "ttl"
    assert refusal(TOKENS.delegate(user, DelegationRequest(agents=("backend",), ttl=60), now=NOW + 599.5)).field == "ttl"
    for rate in (Rate(11, 60.0), Rate(10, 30.0), Rate(1, 1.0)):
        assert refusal(TOKENS.delegate(user, DelegationRequest(agents=("backend",), rate=rate), now=NOW)).field == "rate"
    assert isinstance(TOKENS.delegate(user, DelegationRequest(agents=("backend",), rate=Rate(5, 60.0)), now=NOW), IssuedToken)


def test_a_key_that_never_expires_delegates_within_the_issuers_ceiling() -> None:
    key = VerifiedCredential.from_principal(Principal(id="key:3f9a1c2b", agents=("backend.*",)))
    assert refusal(TOKENS.delegate(key, DelegationRequest(agents=("backend.db",), ttl=7200), now=NOW)).field == "ttl"
    child = verified(TOKENS.delegate(key, DelegationRequest(agents=("backend.db",), ttl=3600), now=NOW))
    assert child.chain == ("key:3f9a1c2b",) and child.subject == "key:3f9a1c2b"


def test_a_chain_names_every_ancestor_and_a_revoked_one_revokes_its_descendants() -> None:
    key = VerifiedCredential.from_principal(Principal(id="key:3f9a1c2b", role="admin", agents=("*",)))
    first = verified(TOKENS.delegate(key, DelegationRequest(agents=("backend.*",), ttl=3000), now=NOW))
    second = verified(TOKENS.delegate(first, DelegationRequest(agents=("backend.db.*",)), now=NOW))
    third = verified(TOKENS.delegate(second, DelegationRequest(agents=("backend.db.reader",)), now=NOW))
    assert third.chain == ("key:3f9a1c2b", first.credential_id, second.credential_id)
    assert third.lineage == ("key:3f9a1c2b", first.credential_id, second.credential_id, third.credential_id)
    for revoked in ("key:3f9a1c2b", first.credential_id, second.credential_id, third.credential_id):
        assert is_revoked(third.lineage, {revoked})
    assert not is_revoked(second.lineage, {third.credential_id})
    assert not is_revoked(third.lineage, {"key:00000000", "jwt:other"})
    # A login token is revoked with its user, too.
    login = parent()
    assert is_revoked(login.lineage, {"user:alice"})
    assert is_revoked(verified(TOKENS.delegate(login, DelegationRequest(agents=("backend",)), now=NOW)).lineage, {"user:alice"})


def test_a_chain_has_a_bounded_depth() -> None:
    credential = parent()
    for _ in range(MAX_CHAIN):
        credential = verified(TOKENS.delegate(credential, DelegationRequest(agents=("backend",)), now=NOW))
    assert len(credential.chain) == MAX_CHAIN
    assert refusal(TOKENS.delegate(credential, DelegationRequest(agents=("backend",)), now=NOW)).field == "parent"


def test_an_expired_parent_delegates_nothing() -> None:
    mother = parent(ttl=60)
    assert refusal(TOKENS.delegate(mother, DelegationRequest(agents=("backend",)), now=NOW + 61)).field == "ttl"


@pytest.mark.parametrize(
    ("child", "parent_", "within"),
    [
        ("github/get_issue", "github/get_*", True),
        ("github/get_*", "github/get_*", True),
        ("github/get_*", "github/*", True),
        ("github/*", "github/get_*", False),
        ("github/get_?", "github/get_*", True),
        ("a/x*c", "a/x?c", False),  # a literal reading of the child would say yes: x*c matches x?c
        ("a/b[xy]", "a/b?", True),
        ("a/bx", "a/b[xy]", True),
        ("a/bz", "a/b[xy]", False),
        ("a/b[xy]", "a/b[xyz]", False),  # contained, but only set reasoning shows it: refused, the safe side
        ("a/[", "a/[", True),
        ("*/read", "db/*", False),
    ],
)
def test_tool_patterns_within(child: str, parent_: str, within: bool) -> None:
    assert tools_within((child,), (parent_,)) is within


# Hierarchical agent names from a small alphabet, so that random grants overlap often.
_NAMES = st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=3).map(".".join)
_GRANTS = st.one_of(_NAMES, _NAMES.map(lambda name: name + ".*"), st.just("*"))
_ROLES = st.sampled_from(["user", "admin"])


@settings(max_examples=300, deadline=None)
@given(
    parent_agents=st.lists(_GRANTS, max_size=4),
    parent_role=_ROLES,
    asked=st.lists(_GRANTS, min_size=1, max_size=4),
    asked_role=_ROLES,
    probes=st.lists(_NAMES, min_size=1, max_size=10),
)
def test_a_delegated_token_never_grants_an_agent_its_parent_could_not_act_as(
    parent_agents: list[str], parent_role: str, asked: list[str], asked_role: str, probes: list[str]
) -> None:
    mother = parent(Principal(id="user:p", role=parent_role, agents=tuple(parent_agents)))  # type: ignore[arg-type]
    answer = TOKENS.delegate(mother, DelegationRequest(agents=tuple(asked), role=asked_role), now=NOW)  # type: ignore[arg-type]
    if isinstance(answer, DelegationRefused):
        return
    child = verified(answer)
    for agent in (*probes, *(grant.removesuffix(".*") + ".x" for grant in asked)):
        if may_act_as(child.agents, agent):
            assert may_act_as(mother.agents, agent), (agent, child.agents, mother.agents)
    assert parent_role == "admin" or child.role == "user"
    assert child.expires_at is not None and mother.expires_at is not None and child.expires_at <= mother.expires_at


_GLOB = st.text(alphabet="ab*?[]!", min_size=1, max_size=6)


@settings(max_examples=500, deadline=None)
@given(child=_GLOB, parent_=_GLOB, names=st.lists(st.text(alphabet="ab*?[]!", max_size=8), max_size=20))
def test_tool_containment_is_never_wrong_when_it_says_within(child: str, parent_: str, names: list[str]) -> None:
    if tools_within((child,), (parent_,)):
        for name in names:
            if fnmatchcase(name, child):
                assert fnmatchcase(name, parent_), (name, child, parent_)
