"""Tool search: the ranking (core/_search.py) and the ``search_tools`` gateway tool (core/_search_tool.py)."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from lockgate.core._actions import Audit, StartDownstream
from lockgate.core._events import ClientClosed
from lockgate.core._identity import Principal
from lockgate.core._lexicon import RELATED, stem
from lockgate.core._search import EXACT, Hit, SearchIndex, words

from .harness import Driver, audited, audits, call, make_config, sent_to_client, structured

JSON = dict[str, Any]


def tool(name: str, description: str = "", **params: str) -> JSON:
    return {
        "name": name,
        "description": description,
        "inputSchema": {"type": "object", "properties": {k: {"type": "string", "description": v} for k, v in params.items()}},
    }


FS = [
    tool("read_file", "Read the complete contents of a file from the file system.", path="Path of the file"),
    tool("write_file", "Create a new file or overwrite an existing file with new content.", path="Path", content="Text"),
    tool("list_directory", "Get a detailed listing of all files and directories in a specified path.", path="Path"),
    tool("move_file", "Move or rename files and directories.", source="From", destination="To"),
    tool("delete_file", "Delete a file.", path="Path"),
]
GIT = [
    tool("git_add", "Adds file contents to the staging area", repo_path="Repository", files="Files to stage"),
    tool("git_diff", "Shows differences between branches or commits", repo_path="Repository", target="Target"),
    tool("git_log", "Shows the commit logs", repo_path="Repository", max_count="How many"),
]
MATH = [tool("add", "Adds two numbers", a="First number", b="Second number")]


def index(**servers: list[JSON]) -> SearchIndex:
    built = SearchIndex()
    for name, tools in servers.items():
        built.set_server(name, None, tools)
    return built


def top(hits: list[Hit]) -> list[str]:
    return [f"{h.server}.{h.name}" for h in hits]


# -- words and the lexicon ------------------------------------------------------------


def test_words_split_names_drop_stop_words_and_stem() -> None:
    assert words("readFile HTTPServer get_current-time") == ["read", "file", "http", "server", "get", "current", "time"]
    assert words("Delete the files in these directories") == ["delet", "file", "directory"]
    assert words("add 3 and 5") == ["add", "number", "number"]


def test_the_stemmer_makes_the_forms_of_a_word_meet() -> None:
    for forms in (
        ("delete", "deleted", "deleting", "deletion", "deletes"),
        ("directory", "directories"),
        ("list", "lists", "listing", "listed"),
        ("stop", "stopped", "stopping", "stops"),
        ("create", "created", "creating", "creation"),
        ("match", "matches"),
    ):
        assert len({stem(f) for f in forms}) == 1, forms


def test_related_words_are_symmetric_and_stemmed() -> None:
    assert "directory" in RELATED["folder"] and "folder" in RELATED["directory"]
    assert stem("delete") in RELATED[stem("remove")]
    for word, others in RELATED.items():
        assert word not in others
        for other in others:
            assert word in RELATED[other]


# -- ranking ----------------------------------------------------------------------------


def test_an_agents_words_find_a_tool_described_in_other_words() -> None:
    built = index(fs=FS, git=GIT, math=MATH)
    assert top(built.search("remove a file", limit=1)) == ["fs.delete_file"]
    assert top(built.search("what is in this folder", limit=1)) == ["fs.list_directory"]
    assert top(built.search("compare two commits", limit=1)) == ["git.git_diff"]
    # Without the lexicon the same needs miss.
    assert "fs.delete_file" not in top(built.search("remove a file", limit=1, expand=False))


def test_context_words_tell_near_namesakes_apart() -> None:
    built = index(fs=FS, git=GIT, math=MATH)
    assert top(built.search("sum two numbers", limit=1)) == ["math.add"]
    assert top(built.search("stage my changes in the repository", limit=1)) == ["git.git_add"]


def test_a_tool_named_exactly_comes_first_then_prefixes() -> None:
    built = index(fs=FS, git=GIT, math=MATH)
    hits = built.search("add")
    assert top(hits)[0] == "math.add" and hits[0].score >= EXACT * 1000
    assert top(built.search("git_d", limit=1)) == ["git.git_diff"]
    assert top(built.search("readFile", limit=1)) == ["fs.read_file"]


def test_no_match_is_no_hit_and_ties_are_ordered_by_server_and_name() -> None:
    built = index(b=[tool("ping", "Check it lives")], a=[tool("ping", "Check it lives")])
    assert built.search("zebra crossing") == []
    assert top(built.search("check lives")) == ["a.ping", "b.ping"]


def test_limit_and_servers_filter() -> None:
    built = index(fs=FS, git=GIT)
    assert len(built.search("file", limit=2)) == 2
    assert {h.server for h in built.search("file", servers=["git"], limit=10)} == {"git"}
    assert built.search("file", servers=["nope"]) == []


def test_the_index_is_updated_one_server_at_a_time() -> None:
    built = index(fs=FS, git=GIT)
    version = built.version
    built.set_server("fs", None, FS)  # the same list: nothing to do
    assert built.version == version
    built.set_server("git", None, [*GIT, tool("git_blame", "Show who last changed each line")])
    assert built.version == version + 1
    assert top(built.search("who changed this line", limit=1)) == ["git.git_blame"]
    built.drop_server("git")
    assert built.servers == ["fs"] and built.search("blame") == []
    built.drop_server("git")
    assert built.version == version + 2


def test_views_are_dropped_when_the_index_changes() -> None:
    built = index(fs=FS)
    allowed = lambda server, name: name != "delete_file"  # noqa: E731
    assert "fs.delete_file" not in top(built.search("delete", allowed=allowed))
    built.set_server("fs", None, [tool("delete_file", "Delete a file.")])
    assert top(built.search("delete", allowed=allowed)) == []


def test_tools_without_a_name_and_odd_schemas_are_indexed_safely() -> None:
    odd: list[JSON] = [
        {"description": "no name"},
        {"name": "a", "inputSchema": "not an object"},
        {"name": "b", "inputSchema": {"properties": {"x": {"enum": ["alpha", 3, None]}, "y": "z"}}},
        {"name": "c", "title": "Fancy title", "description": 7},
    ]
    built = index(s=odd)
    assert top(built.search("alpha")) == ["s.b"]
    assert top(built.search("fancy")) == ["s.c"]
    assert built.search("x" * 5000) == []


# -- no leak through scores -------------------------------------------------------------------

WORDS = st.sampled_from(["file", "read", "write", "folder", "delete", "commit", "time", "zone", "add", "sum", "list"])
TOOLS = st.lists(
    st.builds(lambda n, d: tool(n, " ".join(d)), st.sampled_from(["t1", "t2", "t3", "t4", "t5", "t6"]), st.lists(WORDS, max_size=6)),
    max_size=6,
    unique_by=lambda t: t["name"],
)


@settings(max_examples=150, deadline=None)
@given(
    st.dictionaries(st.sampled_from(["s1", "s2", "s3"]), TOOLS, max_size=3),
    st.sets(st.tuples(st.sampled_from(["s1", "s2", "s3"]), st.sampled_from(["t1", "t2", "t3", "t4", "t5", "t6"]))),
    st.lists(WORDS, min_size=1, max_size=4),
)
def test_denied_tools_change_nothing_about_the_ranking_of_allowed_ones(
    servers: dict[str, list[JSON]], denied: set[tuple[str, str]], query: list[str]
) -> None:
    whole = index(**servers)
    only_allowed = index(**{s: [t for t in tools if (s, t["name"]) not in denied] for s, tools in servers.items()})
    text = " ".join(query)
    filtered = whole.search(text, limit=50, allowed=lambda s, n: (s, n) not in denied)
    assert filtered == only_allowed.search(text, limit=50)
    assert not {(h.server, h.name) for h in filtered} & denied


# -- the search_tools gateway tool ---------------------------------------------------------------


def test_search_tools_starts_the_servers_it_covers_and_ranks_what_the_agent_may_call() -> None:
    d = Driver()
    d.initialize()
    message = call(1, "search_tools", agent_id="dev", query="drop a table")
    actions = d.send(message)
    assert sent_to_client(actions) == [] and [a.spec.name for a in actions if isinstance(a, StartDownstream)] == ["db", "util"]
    d.handshake("db", [tool("drop_table", "Drop a table"), tool("get_user", "Get a user by id")])
    actions = d.handshake("util", [tool("echo", "Echo text back")])
    [answer] = sent_to_client(actions)
    value = structured(answer)
    # dev may not call drop_* on db: it is neither listed nor weighed.
    assert [(t["server"], t["name"]) for t in value["tools"]] == []
    assert value["servers_searched"] == ["db", "util"] and value["unavailable"] == []
    assert audits(actions) == [audited(message).record]
    actions = d.send(message := call(2, "search_tools", agent_id="dev", query="who is this user"))
    value = structured(sent_to_client(actions)[0])
    assert [(t["server"], t["name"], t["description"]) for t in value["tools"]] == [("db", "get_user", "Get a user by id")]
    assert value["tools"][0]["inputSchema"] == {"type": "object", "properties": {}} and value["tools"][0]["score"] > 0
    assert value["returned"] == 1 and value["tokens_used"] > 0
    assert audits(actions) == [audited(message).record]


def test_search_tools_leaves_out_a_server_that_fails_and_names_it() -> None:
    d = Driver()
    d.initialize()
    d.send(call(1, "search_tools", agent_id="dev", query="echo"))
    d.server("db").exit("exited with code 3")
    [answer] = sent_to_client(d.handshake("util", [tool("echo", "Echo text back")]))
    value = structured(answer)
    assert [t["name"] for t in value["tools"]] == ["echo"]
    assert value["unavailable"] == ["db"]


def test_search_tools_servers_filter_treats_a_denied_server_as_absent() -> None:
    d = Driver()
    d.initialize()
    d.send(call(1, "get_server_tools", agent_id="reader", server="db"))
    d.handshake("db", [tool("get_user", "Get a user"), tool("drop_table", "Drop a table")])
    [answer] = sent_to_client(d.send(call(2, "search_tools", agent_id="reader", query="user table", servers="db,util")))
    value = structured(answer)
    assert [t["name"] for t in value["tools"]] == ["get_user"]
    assert value["servers_searched"] == ["db"] and value["unavailable"] == []


def test_search_tools_budget_takes_whole_tools_in_rank_order() -> None:
    d = Driver()
    d.initialize()
    big = tool("get_user_everything", "Get a user " + "with every detail " * 40)
    d.send(call(1, "get_server_tools", agent_id="reader", server="db"))
    d.handshake("db", [big, tool("get_user", "Get a user")])
    value = structured(sent_to_client(d.send(call(2, "search_tools", agent_id="reader", query="get user", max_schema_tokens=60)))[0])
    assert [t["name"] for t in value["tools"]] == ["get_user"] and value["tokens_used"] <= 60


def test_search_tools_arguments_are_checked() -> None:
    d = Driver()
    d.initialize()
    for arguments, parameter in (({}, "query"), ({"query": ""}, "query"), ({"query": "x", "limit": 0}, "limit"),
                                 ({"query": "x", "limit": 51}, "limit"), ({"query": "x", "servers": 3}, "servers")):
        [answer] = sent_to_client(d.send(call(1, "search_tools", agent_id="dev", **arguments)))
        assert answer["error"]["code"] == -32602 and answer["error"]["data"]["parameter"] == parameter


def test_a_search_whose_client_leaves_while_it_waits_is_audited_as_cancelled() -> None:
    d = Driver()
    d.initialize()
    message = call(1, "search_tools", agent_id="dev", query="echo")
    d.send(message)
    actions = d.handle(ClientClosed(now=d.now, client=0))
    assert [a for a in actions if isinstance(a, Audit)] == [audited(message, "ERROR", error_code="CANCELLED")]


def test_search_results_follow_a_servers_list_changed() -> None:
    d = Driver()
    d.initialize()
    d.send(call(1, "get_server_tools", agent_id="dev", server="util"))
    d.handshake("util", [tool("echo", "Echo text back")])
    d.send(call(2, "get_server_tools", agent_id="dev", server="db"))
    d.handshake("db", [tool("get_user", "Get a user")])
    db = d.server("db")
    db.notify("notifications/tools/list_changed")
    db.answer("tools/list", result={"tools": [tool("get_user", "Get a user"), tool("find_orders", "Find orders of a user")]})
    value = structured(sent_to_client(d.send(call(3, "search_tools", agent_id="dev", query="orders")))[0])
    assert [t["name"] for t in value["tools"]] == ["find_orders"]


NAMES = ("get_user", "get_secret", "echo", "drop_table", "list_rows")
GLOBS = st.sampled_from(["get_*", "echo", "*", "drop_*", "*_user", "list_rows", "g?t_secret"])


@settings(max_examples=60, deadline=None)
@given(st.lists(GLOBS, max_size=3), st.lists(GLOBS, max_size=2))
def test_search_tools_only_returns_tools_execute_tool_would_allow(allow: list[str], deny: list[str]) -> None:
    agent: JSON = {"allow": {"servers": ["db"]}}
    if allow:
        agent["allow"]["tools"] = {"db": allow}
    if deny:
        agent["deny"] = {"tools": {"db": deny}}
    d = Driver(make_config({"agents": {"a": agent}, "defaults": {"deny_on_missing_agent": True}}))
    d.initialize()
    everything = " ".join(NAMES).replace("_", " ")
    d.send(call(1, "search_tools", agent_id="a", query=everything, limit=50))
    value = structured(sent_to_client(d.handshake("db", [tool(n, everything) for n in NAMES]))[0])
    found = {t["name"] for t in value["tools"]}
    db = d.server("db")
    for n, name in enumerate(NAMES, start=10):
        answers = sent_to_client(d.send(call(n, "execute_tool", agent_id="a", server="db", tool=name)))
        # An allowed call goes down to the server; a denied one is answered at once.
        forwarded = answers == []
        assert forwarded == (name in found), (name, answers)
        if forwarded:
            db.answer(db.requests("tools/call")[-1], result={"content": []})


def test_a_delegated_credentials_own_tool_list_filters_the_search_too() -> None:
    d = Driver()
    client = d.open(1, principal=Principal(id="key:1", agents=("dev",), default_agent="dev", tools=("util/*", "db/get_*")))
    client.initialize()
    client.send(call(1, "search_tools", query="user echo"))
    d.handshake("db", [tool("get_user", "Get a user"), tool("set_user", "Set a user")])
    [answer] = sent_to_client(d.handshake("util", [tool("echo", "Echo text back"), tool("user_echo", "Echo a user")]))
    assert sorted((t["server"], t["name"]) for t in structured(answer)["tools"]) == [
        ("db", "get_user"), ("util", "echo"), ("util", "user_echo"),
    ]
