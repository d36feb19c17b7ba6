"""Aggregate mode's names (lockgate.core._names): tool names, resource URIs, cursors."""

from __future__ import annotations

import base64
import hashlib
import re
from random import Random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lockgate.core._errors import LocalProtocolError
from lockgate.core._names import (
    NAMESPACE,
    Namer,
    Prefix,
    UriMap,
    decode_cursor,
    encode_cursor,
    fingerprint,
    page,
)

VALID_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def digest(server: str, name: str) -> str:
    """The documented digest, computed here independently of the module."""
    return hashlib.sha256((server + "\0" + name).encode("utf-8")).hexdigest()[:8]


# Namer: prefix modes and separator


def test_auto_does_not_prefix_a_single_server() -> None:
    namer = Namer.build({"github": ["create_issue", "list_repos"]})
    assert dict(namer.names) == {"create_issue": ("github", "create_issue"), "list_repos": ("github", "list_repos")}
    assert namer.public("github", "create_issue") == "create_issue"
    assert namer.prefixed is False


def test_auto_prefixes_when_there_are_several_servers() -> None:
    namer = Namer.build({"github": ["create_issue"], "db": ["query"]})
    assert dict(namer.names) == {"github__create_issue": ("github", "create_issue"), "db__query": ("db", "query")}
    assert namer.prefixed is True


def test_auto_counts_a_server_with_no_items() -> None:
    # So a server that is down for a moment does not rename everyone else's tools.
    namer = Namer.build({"github": ["create_issue"], "db": []})
    assert namer.public("github", "create_issue") == "github__create_issue"


def test_always_prefixes_even_one_server() -> None:
    namer = Namer.build({"github": ["create_issue"]}, prefix="always")
    assert namer.public("github", "create_issue") == "github__create_issue"


def test_never_passes_names_through() -> None:
    namer = Namer.build({"github": ["create_issue"], "db": ["query"]}, prefix="never")
    assert dict(namer.names) == {"create_issue": ("github", "create_issue"), "query": ("db", "query")}
    assert namer.prefixed is False


@pytest.mark.parametrize("separator", ["_", ".", "-", "__", "..", "_x_", "12345678"])
def test_the_separator_joins_server_and_name(separator: str) -> None:
    namer = Namer.build({"github": ["create_issue"], "db": ["query"]}, separator=separator)
    assert namer.public("db", "query") == f"db{separator}query"
    assert namer.resolve(f"db{separator}query") == ("db", "query")
    assert namer.separator == separator


@pytest.mark.parametrize("separator", ["", "/", "a b", ":", "123456789", "é"])
def test_a_bad_separator_is_misuse(separator: str) -> None:
    with pytest.raises(LocalProtocolError, match="separator"):
        Namer.build({"a": ["b"]}, separator=separator)


def test_a_bad_prefix_mode_is_misuse() -> None:
    with pytest.raises(LocalProtocolError, match="prefix"):
        Namer.build({"a": ["b"]}, prefix="sometimes")  # type: ignore[arg-type]


# Namer: collisions


def test_never_collision_first_server_in_sorted_order_keeps_the_plain_name() -> None:
    namer = Namer.build({"github": ["create_issue"], "gitea": ["create_issue"]}, prefix="never")
    # "gitea" < "github", whatever order they were given in.
    assert namer.public("gitea", "create_issue") == "create_issue"
    assert namer.public("github", "create_issue") == "github__create_issue__" + digest("github", "create_issue")


def test_prefixed_collision_first_pair_in_sorted_order_keeps_the_plain_name() -> None:
    # "a" + "__" + "b__c" and "a__b" + "__" + "c" are the same string.
    namer = Namer.build({"a__b": ["c"], "a": ["b__c"]})
    assert namer.public("a", "b__c") == "a__b__c"
    assert namer.public("a__b", "c") == "a__b__c__" + digest("a__b", "c")


def test_reserved_names_are_never_issued() -> None:
    namer = Namer.build({"util": ["list_servers", "ping"]}, prefix="never", reserved=["list_servers"])
    assert namer.public("util", "list_servers") == "util__list_servers__" + digest("util", "list_servers")
    assert namer.public("util", "ping") == "ping"
    assert namer.resolve("list_servers") is None


def test_a_plain_name_made_to_look_like_a_short_form_does_not_take_it() -> None:
    victim = "x" * 70
    lookalike = "x" * 54 + "__" + digest("a", victim)
    namer = Namer.build({"a": [victim], "b": [lookalike]}, prefix="never")
    assert namer.public("b", lookalike) == lookalike
    # The victim's short form is taken, so it gets the next one: "-2", the readable part giving way.
    assert namer.public("a", victim) == "x" * 52 + "__" + digest("a", victim) + "-2"
    assert namer.resolve(lookalike) == ("b", lookalike)


def test_many_lookalikes_only_push_the_counter_further() -> None:
    victim = "y" * 70
    d = digest("a", victim)
    lookalikes = ["y" * 54 + "__" + d] + [("y" * 64)[: 64 - len(f"__{d}-{n}")] + f"__{d}-{n}" for n in range(2, 6)]
    namer = Namer.build({"a": [victim], "b": lookalikes}, prefix="never")
    assert namer.public("a", victim).endswith(f"__{d}-6")
    assert len(namer) == 6


# Namer: long names and bad characters


def test_a_name_of_exactly_64_characters_stays_plain() -> None:
    name = "n" * 64
    assert Namer.build({"s": [name]}).public("s", name) == name


def test_a_long_name_gets_a_64_character_short_form() -> None:
    name = "create_" + "x" * 80
    public = Namer.build({"github": [name], "db": []}).public("github", name)
    assert public == ("github__" + name)[:54] + "__" + digest("github", name)
    assert len(public) == 64


def test_a_long_name_without_prefix_keeps_its_own_start() -> None:
    name = "n" * 65
    assert Namer.build({"s": [name]}).public("s", name) == "n" * 54 + "__" + digest("s", name)


def test_bad_characters_become_underscores_in_the_short_form() -> None:
    namer = Namer.build({"github": ["bad name!", "café/menu"], "db": []})
    assert namer.public("github", "bad name!") == "github__bad_name___" + digest("github", "bad name!")
    assert namer.public("github", "café/menu") == "github__caf__menu__" + digest("github", "café/menu")


def test_a_bad_server_name_makes_every_prefixed_name_short() -> None:
    namer = Namer.build({"my server": ["q"], "db": ["q"]})
    assert namer.public("my server", "q") == "my_server__q__" + digest("my server", "q")
    assert namer.public("db", "q") == "db__q"


def test_an_empty_name_is_not_a_name() -> None:
    assert Namer.build({"s": [""]}).public("s", "") == "__" + digest("s", "")


def test_a_lone_surrogate_does_not_break_the_digest() -> None:
    public = Namer.build({"s": ["\ud800"]}).public("s", "\ud800")
    assert public == "___" + hashlib.sha256("s\0\ud800".encode("utf-8", "surrogatepass")).hexdigest()[:8]


def test_a_huge_name_is_cheap_and_short() -> None:
    name = "z" * 1_000_000
    assert len(Namer.build({"s": [name]}).public("s", name)) == 64


# Namer: order independence, resolve, misuse, immutability


def test_the_names_do_not_depend_on_the_order_given() -> None:
    servers = {"github": ["create_issue", "x" * 90, "q"], "gitea": ["create_issue", "q"], "db": ["q", "query"]}
    backwards = {s: list(reversed(items)) for s, items in reversed(servers.items())}
    for prefix in ("auto", "always", "never"):
        assert dict(Namer.build(servers, prefix=prefix).names) == dict(Namer.build(backwards, prefix=prefix).names)


def test_duplicate_items_count_once() -> None:
    namer = Namer.build({"s": ["a", "a", "b"]})
    assert dict(namer.names) == {"a": ("s", "a"), "b": ("s", "b")}


def test_resolve_only_knows_names_it_issued() -> None:
    namer = Namer.build({"github": ["create_issue"], "db": ["query"]})
    assert namer.resolve("github__create_issue") == ("github", "create_issue")
    assert namer.resolve("github__delete_repo") is None  # looks right, was never issued
    assert namer.resolve("create_issue") is None  # the downstream name, not the public one
    assert namer.resolve("nope__query") is None
    assert namer.resolve("") is None


def test_never_resolve_does_not_guess_from_a_prefix() -> None:
    namer = Namer.build({"github": ["create_issue"], "db": ["query"]}, prefix="never")
    assert namer.resolve("db__query") is None
    assert namer.resolve("github__create_issue") is None


def test_public_of_an_item_never_given_is_misuse() -> None:
    namer = Namer.build({"github": ["create_issue"]})
    with pytest.raises(LocalProtocolError, match="delete_repo"):
        namer.public("github", "delete_repo")
    with pytest.raises(LocalProtocolError):
        namer.public("db", "create_issue")


def test_a_namer_cannot_be_changed() -> None:
    namer = Namer.build({"github": ["create_issue"]})
    with pytest.raises(TypeError):
        namer.names["evil"] = ("github", "delete_repo")  # type: ignore[index]
    with pytest.raises(AttributeError):
        namer.separator = "."  # type: ignore[misc]
    with pytest.raises(AttributeError):
        namer.extra = 1  # type: ignore[attr-defined]
    assert repr(namer) == "Namer(1 names, separator='__', prefixed=False)"


def test_no_servers_no_names() -> None:
    namer = Namer.build({})
    assert len(namer) == 0
    assert namer.resolve("x") is None


# UriMap


def test_a_uri_one_server_lists_stays_as_it_is() -> None:
    uris = UriMap.build({"fs": ["file:///a", "file:///shared"], "web": ["https://x/", "file:///shared"]})
    assert uris.public("fs", "file:///a") == "file:///a"
    assert uris.public("web", "https://x/") == "https://x/"
    assert uris.resolve("file:///a") == ("fs", "file:///a")
    assert uris.resolve("https://x/") == ("web", "https://x/")


def test_a_uri_two_servers_list_is_namespaced() -> None:
    uris = UriMap.build({"fs": ["file:///shared"], "web": ["file:///shared"]})
    assert uris.public("fs", "file:///shared") == "lockgate://fs/file:///shared"
    assert uris.public("web", "file:///shared") == "lockgate://web/file:///shared"
    assert uris.resolve("lockgate://web/file:///shared") == ("web", "file:///shared")
    assert uris.resolve("file:///shared") is None  # ambiguous: no guess


def test_a_uri_another_server_lists_is_namespaced_for_this_one() -> None:
    uris = UriMap.build({"fs": ["file:///a"], "web": []})
    assert uris.public("web", "file:///a") == "lockgate://web/file:///a"
    assert uris.public("web", "file:///unlisted") == "lockgate://web/file:///unlisted"


def test_the_original_uri_is_kept_verbatim_and_the_server_percent_encoded() -> None:
    uris = UriMap.build({"my server/1": ["x"], "b": ["x"]})
    odd = "file:///a b/ü?q=%20&r#frag"
    assert uris.public("my server/1", odd) == "lockgate://my%20server%2F1/" + odd
    assert uris.resolve("lockgate://my%20server%2F1/" + odd) == ("my server/1", odd)


def test_a_namespaced_uri_of_a_known_server_resolves_even_if_unlisted() -> None:
    uris = UriMap.build({"fs": ["file:///a"], "web": ["https://x/"]})
    assert uris.resolve("lockgate://fs/file:///made/by/a/template") == ("fs", "file:///made/by/a/template")
    assert uris.resolve("lockgate://fs/") == ("fs", "")


def test_unknown_uris_resolve_to_nothing() -> None:
    uris = UriMap.build({"fs": ["file:///a"], "web": ["https://x/"]})
    assert uris.resolve("file:///b") is None
    assert uris.resolve("lockgate://nobody/file:///a") is None
    assert uris.resolve("lockgate://fs") is None  # no "/" after the server
    assert uris.resolve("lockgate://FS/file:///a") is None  # servers are exact
    assert uris.resolve("") is None


def test_a_downstream_uri_in_our_namespace_is_always_namespaced() -> None:
    uris = UriMap.build({"fs": ["lockgate://web/x"], "web": []})
    assert uris.public("fs", "lockgate://web/x") == "lockgate://fs/lockgate://web/x"
    assert uris.resolve("lockgate://fs/lockgate://web/x") == ("fs", "lockgate://web/x")
    assert uris.resolve("lockgate://web/x") == ("web", "x")


def test_with_one_server_every_plain_uri_is_its_own() -> None:
    uris = UriMap.build({"fs": ["file:///a"]}, templates={"fs": ["file:///{path}"]})
    assert uris.public("fs", "file:///anything") == "file:///anything"
    assert uris.public_template("fs", "file:///{path}") == "file:///{path}"
    assert uris.resolve("file:///expanded/from/template") == ("fs", "file:///expanded/from/template")
    assert uris.public("fs", "lockgate://x/y") == "lockgate://fs/lockgate://x/y"
    assert uris.public_template("fs", "lockgate://{x}") == "lockgate://fs/lockgate://{x}"


def test_templates_of_several_servers_are_namespaced_and_expand_back() -> None:
    # A server that offers only templates is a server too.
    uris = UriMap.build({"fs": ["file:///a"]}, templates={"db": ["db://{table}/{+path}"]})
    assert uris.servers == frozenset({"fs", "db"})
    published = uris.public_template("db", "db://{table}/{+path}")
    assert published == "lockgate://db/db://{table}/{+path}"
    # What a client's RFC 6570 expansion of it gives back, escapes and all:
    assert uris.resolve("lockgate://db/db://my%20table/a/b") == ("db", "db://my%20table/a/b")


def test_an_unknown_server_is_misuse() -> None:
    uris = UriMap.build({"fs": []})
    with pytest.raises(LocalProtocolError, match="web"):
        uris.public("web", "file:///a")
    with pytest.raises(LocalProtocolError, match="web"):
        uris.public_template("web", "file:///{a}")


def test_an_empty_map_resolves_nothing() -> None:
    uris = UriMap.build({})
    assert uris.resolve("file:///a") is None
    assert uris.resolve(NAMESPACE + "x/y") is None
    assert repr(uris) == "UriMap(servers=[], plain=0)"


# Cursors


def test_a_cursor_round_trips_and_is_url_safe_and_short() -> None:
    cursor = encode_cursor(50, "c4761a53260f7299")
    assert re.fullmatch(r"[A-Za-z0-9_-]+", cursor)
    assert len(cursor) <= 32
    assert decode_cursor(cursor) == (50, "c4761a53260f7299")


def test_the_longest_cursor_is_within_the_decode_cap() -> None:
    assert decode_cursor(encode_cursor(2**53 - 1, "f" * 64)) == (2**53 - 1, "f" * 64)


@pytest.mark.parametrize(
    ("offset", "fp"), [(-1, "fp"), (2**53, "fp"), (True, "fp"), (1, ""), (1, "a b"), (1, "f" * 65), (1, "é")]
)
def test_encoding_a_bad_cursor_is_misuse(offset: int, fp: str) -> None:
    with pytest.raises(LocalProtocolError):
        encode_cursor(offset, fp)


@pytest.mark.parametrize(
    "text",
    ["", "a", "abcde", "====", "not a cursor", "x" * 129, "A" * 10_000_000, "é" * 8, "\0" * 8],
)
def test_text_that_is_not_a_cursor_decodes_to_none(text: str) -> None:
    assert decode_cursor(text) is None


def test_a_forged_cursor_past_the_largest_offset_decodes_to_none() -> None:
    # The check is no secret, so a client can make one with a well-formed but too large offset.
    raw = b"9999999999999999.fp"
    check = hashlib.sha256(b"lockgate cursor 1\0" + raw).digest()[:4]
    forged = base64.urlsafe_b64encode(raw + check).rstrip(b"=").decode("ascii")
    assert decode_cursor(forged) is None
    raw = b"9007199254740991.fp"
    check = hashlib.sha256(b"lockgate cursor 1\0" + raw).digest()[:4]
    assert decode_cursor(base64.urlsafe_b64encode(raw + check).rstrip(b"=").decode("ascii")) == (2**53 - 1, "fp")


def test_non_text_decodes_to_none() -> None:
    assert decode_cursor(5) is None  # type: ignore[arg-type]
    assert decode_cursor(None) is None  # type: ignore[arg-type]


def test_a_damaged_cursor_decodes_to_none() -> None:
    cursor = encode_cursor(3, "fp")
    for i in range(len(cursor)):
        for c in "AQw_-":
            damaged = cursor[:i] + c + cursor[i + 1 :]
            if damaged != cursor:
                assert decode_cursor(damaged) is None, damaged


def test_a_second_spelling_of_the_same_bytes_is_refused() -> None:
    cursor = encode_cursor(3, "fp")
    # The last character carries unused low bits when the length is not a multiple of 3 bytes.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    spellings = [cursor[:-1] + c for c in alphabet]
    assert [s for s in spellings if decode_cursor(s) is not None] == [cursor]


def test_fingerprint_is_stable_and_order_sensitive() -> None:
    assert fingerprint(["a", "b"]) == fingerprint(iter(["a", "b"]))
    assert re.fullmatch(r"[0-9a-f]{16}", fingerprint(["a", "b"]))
    assert fingerprint(["a", "b"]) != fingerprint(["b", "a"])
    assert fingerprint(["ab"]) != fingerprint(["a", "b"])
    assert fingerprint([]) != fingerprint([""])
    # Pinned, so a change of the form (which breaks every client's cursors) is deliberate.
    assert fingerprint(["a", "b"]) == fingerprint(["a", "b"]) == _pinned_fingerprint()


def _pinned_fingerprint() -> str:
    h = hashlib.sha256(b"lockgate list 1\0")
    for name in (b"a", b"b"):
        h.update(len(name).to_bytes(8, "big") + name)
    return h.hexdigest()[:16]


def test_pages_walk_the_list() -> None:
    items = list(range(7))
    fp = fingerprint(map(str, items))
    first = page(items, None, 3, fp)
    assert first is not None and first[0] == [0, 1, 2] and first[1] is not None
    second = page(items, first[1], 3, fp)
    assert second is not None and second[0] == [3, 4, 5] and second[1] is not None
    assert page(items, second[1], 3, fp) == ([6], None)


def test_one_page_needs_no_cursor() -> None:
    assert page(["a", "b"], None, 2, "fp") == (["a", "b"], None)
    assert page([], None, 5, "fp") == ([], None)


def test_a_cursor_of_another_list_is_refused() -> None:
    items = list(range(7))
    cursor = encode_cursor(3, fingerprint(["old"]))
    assert page(items, cursor, 3, fingerprint(["new"])) is None


def test_cursors_page_never_issues_are_refused() -> None:
    items = list(range(7))
    assert page(items, "garbage", 3, "fp") is None
    assert page(items, encode_cursor(0, "fp"), 3, "fp") is None
    assert page(items, encode_cursor(7, "fp"), 3, "fp") is None
    assert page(items, encode_cursor(100, "fp"), 3, "fp") is None
    assert page(items, encode_cursor(6, "fp"), 3, "fp") == ([6], None)


def test_paging_misuse_raises() -> None:
    with pytest.raises(LocalProtocolError, match="size"):
        page([1], None, 0, "fp")
    with pytest.raises(LocalProtocolError, match="fingerprint"):
        page([1], None, 1, "not a fingerprint")


# Properties

server_names = st.text(max_size=12) | st.sampled_from(["a", "b", "a__b", "db", "github", "gitea", "x.y"])
item_names = (
    st.text(alphabet="ab_.-", max_size=6)
    | st.text(max_size=20)
    | st.text(alphabet="xyz_", min_size=55, max_size=90)
    | st.sampled_from(["create_issue", "b__c", "query", "", "list_servers"])
)
catalogues = st.dictionaries(server_names, st.lists(item_names, max_size=8), max_size=5)
prefixes: st.SearchStrategy[Prefix] = st.sampled_from(["auto", "always", "never"])
separators = st.sampled_from(["__", "_", ".", "-", "..", "a"])


@settings(max_examples=400, deadline=None)
@given(catalogues, separators, prefixes, st.lists(item_names, max_size=3), st.randoms(use_true_random=False))
def test_every_public_name_is_valid_unique_and_resolves_back(
    servers: dict[str, list[str]], separator: str, prefix: Prefix, reserved: list[str], rnd: Random
) -> None:
    namer = Namer.build(servers, separator=separator, prefix=prefix, reserved=reserved)
    pairs = {(s, n) for s, items in servers.items() for n in items}
    publics = [namer.public(s, n) for s, n in pairs]
    assert len(set(publics)) == len(pairs) == len(namer)
    for (s, n), public in zip(pairs, publics):
        assert VALID_NAME.fullmatch(public), public
        assert namer.resolve(public) == (s, n)
        assert public not in reserved
    # The same catalogue given in another order names everything the same.
    shuffled_servers = list(servers.items())
    rnd.shuffle(shuffled_servers)
    shuffled = {s: sorted(items, key=lambda _: rnd.random()) for s, items in shuffled_servers}
    again = Namer.build(shuffled, separator=separator, prefix=prefix, reserved=list(reversed(reserved)))
    assert dict(again.names) == dict(namer.names)


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(server_names, st.lists(st.text(max_size=30), max_size=5), max_size=4),
    st.dictionaries(server_names, st.lists(st.text(max_size=20), max_size=2), max_size=2),
    st.lists(st.text(max_size=30) | st.just("lockgate://a/b"), max_size=5),
)
def test_every_uri_round_trips(
    resources: dict[str, list[str]], templates: dict[str, list[str]], others: list[str]
) -> None:
    uris = UriMap.build(resources, templates)
    listed = [u for items in resources.values() for u in items]
    for server in uris.servers:
        for uri in listed + others:
            assert uris.resolve(uris.public(server, uri)) == (server, uri)
        for template in [t for items in templates.values() for t in items] + others:
            published = uris.public_template(server, template)
            assert uris.resolve(published) == (server, template)
            assert (published == template) == (len(uris.servers) == 1 and not template.startswith(NAMESPACE))
    # Plain means: exactly one server lists it, or only one server exists.
    for server, items in resources.items():
        for uri in items:
            owners = {s for s, its in resources.items() if uri in its}
            plain = not uri.startswith(NAMESPACE) and (len(owners) == 1 or len(uris.servers) == 1)
            assert (uris.public(server, uri) == uri) == plain


fingerprints = st.from_regex(r"[A-Za-z0-9_.-]{1,64}", fullmatch=True)


@given(st.integers(0, 2**53 - 1), fingerprints)
def test_cursors_round_trip(offset: int, fp: str) -> None:
    cursor = encode_cursor(offset, fp)
    assert len(cursor) <= 128
    assert re.fullmatch(r"[A-Za-z0-9_-]+", cursor)
    assert decode_cursor(cursor) == (offset, fp)


@settings(max_examples=1000)
@given(
    st.text(max_size=200)
    | st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", max_size=130)
    | st.binary(max_size=100).map(lambda b: b.decode("latin-1"))
)
def test_decode_cursor_never_raises(text: str) -> None:
    decoded = decode_cursor(text)
    if decoded is not None:
        assert encode_cursor(*decoded) == text


@settings(max_examples=500)
@given(st.binary(max_size=100) | st.from_regex(rb"[0-9]{1,20}\.[A-Za-z0-9_.-]{0,70}", fullmatch=True))
def test_decode_cursor_never_raises_on_forged_checks(raw: bytes) -> None:
    # Hostile clients can compute the check; what is inside must still never make decoding raise.
    check = hashlib.sha256(b"lockgate cursor 1\0" + raw).digest()[:4]
    text = base64.urlsafe_b64encode(raw + check).rstrip(b"=").decode("ascii")
    decoded = decode_cursor(text)
    if decoded is not None:
        assert encode_cursor(*decoded) == text


@settings(max_examples=300)
@given(st.lists(st.integers(), max_size=40), st.integers(1, 12))
def test_paging_yields_the_whole_list_once(items: list[int], size: int) -> None:
    fp = fingerprint(map(str, items))
    seen: list[int] = []
    cursor: str | None = None
    while True:
        result = page(items, cursor, size, fp)
        assert result is not None
        chunk, cursor = result
        assert len(chunk) <= size
        seen += chunk
        if cursor is None:
            break
        assert page(items, cursor, size, fingerprint(["something else"])) is None
    assert seen == items
