"""Ranked tool search over the cached catalogue: BM25F with query expansion.

``search_tools`` answers "which tool does X?" across every server an agent
may use. Each tool is a document of four fields, weighted:

========== ===================================================== ======
field      text                                                  weight
========== ===================================================== ======
name       the tool's name, split on ``_``, ``-``, ``.`` and     3.0
           camelCase, and its ``title``
text       its description                                       1.0
params     its parameters' names, descriptions and enum values   0.3
server     the server's name and description                     0.3
========== ===================================================== ======

Words are lower-cased, stop words dropped and stemmed (:mod:`._lexicon`).
A query word also matches its related words from the lexicon (folder and
directory, remove and delete, compare and diff) at a lower weight, since
agents describe a need in their own words rather than the tool's.
A query that names a tool (its exact name, or a prefix of it) ranks that
tool first.

No leak through scores: the one statistic BM25 takes from the other tools
(how many of them have a word, for its idf) is counted over the tools the
agent may call only, and field lengths are normalised against fixed typical
lengths rather than averages, so a denied tool changes nothing about how
the allowed ones rank. A :class:`SearchView` holds one allowed set and the
word scores computed for it; the gateway keeps views until the catalogue
changes.

The index is incremental: :meth:`SearchIndex.set_server` re-reads one
server's tools (nothing if it is the same list object), and views built
before the change are dropped by the index's version number.
"""

from __future__ import annotations

import heapq
import math
import re
from bisect import bisect_left, insort
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ._lexicon import PHRASES, RELATED, STOP_WORDS, stem

__all__ = ["Hit", "SearchIndex", "SearchView", "words"]

JSONObject = dict[str, Any]
Allowed = Callable[[str, str], bool]

#: Field weights, in the order of a document's fields: name, text, params, server.
WEIGHTS = (3.0, 1.0, 0.3, 0.3)
#: Length normalisation per field (BM25's ``b``): names are all short, descriptions vary.
B = (0.3, 0.75, 0.6, 0.0)
K1 = 1.2
#: A typical length, in words, of each field: BM25's length normalisation compares with these rather than
#: with the averages of the tools searched, so a tool's weights do not depend on which others an agent may see.
TYPICAL = (2.5, 16.0, 16.0, 1.0)
#: How much a related word counts against the word the agent used.
RELATED_WEIGHT = 0.5
#: How much the figures in a query count (see _query_words).
NUMBER_WEIGHT = 0.3
#: Tiers above any score: a query equal to a tool's name, then a prefix of it.
EXACT, PREFIX = 2, 1
#: The longest query read, in characters: a search is for a need, not a document.
MAX_QUERY = 1000
_FIELDS = 4

_WORD = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|\d+")


def words(text: str) -> list[str]:
    """The search terms of ``text``: split, lower-cased, stop words dropped, stemmed."""
    out = []
    for part in _WORD.findall(text):
        if part.isdigit():
            # "add 3 and 5": the figures say nothing, that they are numbers does.
            out.append("number")
            continue
        word = part.lower()
        if word not in STOP_WORDS:
            out.append(stem(word))
    return out


def _name_key(text: str) -> str:
    """A tool name or query reduced to its words, for exact and prefix matches."""
    return " ".join(part.lower() for part in _WORD.findall(text))


@dataclass(frozen=True, slots=True)
class Hit:
    """One tool a search found, with its score (higher is better; the tier of a name match first)."""

    server: str
    name: str
    score: float


@dataclass(slots=True)
class _Doc:
    """One tool as the index holds it: where it is, its name, and its words per field."""

    server: str
    name: str
    key: str
    #: Each of its words with its BM25F weight in this document (before the word's idf).
    terms: dict[str, float]


def _document(server: str, server_words: list[str], tool: JSONObject) -> _Doc | None:
    name = tool.get("name")
    if not isinstance(name, str):
        return None
    fields = (_name_words(tool, name), words(_text(tool.get("description"))), _param_words(tool), server_words)
    counts: dict[str, list[int]] = {}
    for f, terms in enumerate(fields):
        for term in terms:
            counts.setdefault(term, [0] * _FIELDS)[f] += 1
    lengths = (len(fields[0]), len(fields[1]), len(fields[2]), len(fields[3]))
    # BM25F: each field's frequency, weighted and normalised by the field's length against a typical one.
    norms = [WEIGHTS[f] / (1 - B[f] + B[f] * lengths[f] / TYPICAL[f]) for f in range(_FIELDS)]
    scored = {}
    for term, tf in counts.items():
        pseudo = sum(norms[f] * tf[f] for f in range(_FIELDS))
        scored[term] = pseudo * (K1 + 1) / (K1 + pseudo)
    return _Doc(server, name, _name_key(name), scored)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _name_words(tool: JSONObject, name: str) -> list[str]:
    found = words(name)
    title = tool.get("title")
    annotations = tool.get("annotations")
    if not isinstance(title, str) and isinstance(annotations, dict):
        title = annotations.get("title")
    if isinstance(title, str):
        found += [w for w in words(title) if w not in found]
    return found


def _param_words(tool: JSONObject) -> list[str]:
    """Words of the parameters: names, descriptions, titles and string enum values, one level of nesting."""
    found: list[str] = []
    schema = tool.get("inputSchema")
    pending = [(schema, 0)]
    while pending:
        node, depth = pending.pop()
        if not isinstance(node, dict):
            continue
        props = node.get("properties")
        if isinstance(props, dict):
            for key, prop in props.items():
                found += words(str(key))
                if isinstance(prop, dict):
                    found += words(_text(prop.get("description"))) + words(_text(prop.get("title")))
                    enum = prop.get("enum")
                    if isinstance(enum, list):
                        found += [w for value in enum[:20] if isinstance(value, str) for w in words(value)]
                    if depth < 1:
                        pending.append((prop, depth + 1))
                        pending.append((prop.get("items"), depth + 1))
    return found


class SearchIndex:
    """Every server's tools, tokenised, in one inverted index (see the module docstring).

    Each tool has an id of its own for as long as its server's list stays
    the same; the postings map a word to the ids that have it and how often,
    per field. Changing one server's list touches that server's words only.
    """

    def __init__(self) -> None:
        #: Per server: the list object it was made from, its description, and its documents' ids.
        self._servers: dict[str, tuple[Sequence[JSONObject], str | None, list[int]]] = {}
        #: Per server, each tool's definition by name, as the list had it.
        self._definitions: dict[str, dict[str, JSONObject]] = {}
        self._docs: dict[int, _Doc] = {}
        self._postings: dict[str, dict[int, float]] = {}
        #: Every document's name key with its id, sorted, to find names by prefix.
        self._keys: list[tuple[str, int]] = []
        self._next = 0
        #: Bumped on every change, so views made before it are not used after it.
        self.version = 0
        self._views: dict[tuple[Any, ...], SearchView] = {}

    def __contains__(self, server: str) -> bool:
        return server in self._servers

    @property
    def servers(self) -> list[str]:
        return sorted(self._servers)

    def set_server(self, server: str, description: str | None, tools: Sequence[JSONObject]) -> None:
        """Index ``server``'s tools; nothing to do when it is the same list (by identity) and description."""
        known = self._servers.get(server)
        if known is not None and known[0] is tools and known[1] == description:
            return
        self._remove(server)
        server_words = words(server.replace("_", " ")) + words(description or "")
        ids: list[int] = []
        named: dict[str, JSONObject] = {}
        for tool in tools:
            doc = _document(server, server_words, tool)
            if doc is None:
                continue
            named[doc.name] = tool
            gid = self._next
            self._next += 1
            ids.append(gid)
            self._docs[gid] = doc
            for term, tf in doc.terms.items():
                self._postings.setdefault(term, {})[gid] = tf
            insort(self._keys, (doc.key, gid))
        self._servers[server] = (tools, description, ids)
        self._definitions[server] = named
        self._changed()

    def definition(self, server: str, name: str) -> JSONObject | None:
        """The definition of tool ``name`` of ``server``, as the list it was indexed from has it."""
        return self._definitions.get(server, {}).get(name)

    def drop_server(self, server: str) -> None:
        """Forget ``server`` (removed by a reload, say)."""
        if server in self._servers:
            self._remove(server)
            self._changed()

    def _remove(self, server: str) -> None:
        known = self._servers.pop(server, None)
        self._definitions.pop(server, None)
        if known is None:
            return
        gone = set(known[2])
        for gid in known[2]:
            doc = self._docs.pop(gid)
            for term in doc.terms:
                postings = self._postings[term]
                del postings[gid]
                if not postings:
                    del self._postings[term]
        self._keys = [entry for entry in self._keys if entry[1] not in gone]

    def _changed(self) -> None:
        self.version += 1
        self._views.clear()

    def view(self, servers: Iterable[str] | None = None, allowed: Allowed | None = None) -> SearchView:
        """The statistics for the tools of ``servers`` (default: all) that ``allowed`` lets through (default: all)."""
        chosen = sorted(self._servers) if servers is None else sorted(s for s in set(servers) if s in self._servers)
        kept: dict[str, list[int]] = {}
        for server in chosen:
            ids = self._servers[server][2]
            kept[server] = ids if allowed is None else [gid for gid in ids if allowed(server, self._docs[gid].name)]
        return SearchView(self, kept, whole=len(chosen) == len(self._servers) and allowed is None)

    def search(
        self,
        query: str,
        *,
        limit: int = 5,
        servers: Collection[str] | None = None,
        allowed: Allowed | None = None,
        expand: bool = True,
    ) -> list[Hit]:
        """Rank the allowed tools of ``servers`` for ``query``; the best ``limit`` first.

        Views are kept per ``(servers, allowed)`` (the predicate by identity)
        until the index changes, so repeated searches with the same filter
        pay for the statistics once.
        """
        key = (None if servers is None else frozenset(servers), allowed)
        view = self._views.get(key)
        if view is None:
            if len(self._views) >= 64:
                self._views.clear()
            view = self._views[key] = self.view(servers, allowed)
        return view.search(query, limit=limit, expand=expand)


class SearchView:
    """One allowed set's statistics: which documents count, how many, and each word's scores (memoised)."""

    #: Words whose scores a view keeps (an agent's queries share most of theirs).
    MEMO = 4096

    def __init__(self, index: SearchIndex, kept: Mapping[str, list[int]], *, whole: bool) -> None:
        self.version = index.version
        self._index = index
        #: The allowed ids, or None when every document of the index counts.
        self._allowed: frozenset[int] | None = None if whole else frozenset(g for ids in kept.values() for g in ids)
        self.size = sum(len(ids) for ids in kept.values())
        self._scores: dict[str, dict[int, float]] = {}
        self._words: dict[tuple[str, tuple[tuple[str, float], ...]], dict[int, float]] = {}

    def _term_scores(self, term: str) -> dict[int, float]:
        """BM25F's score of ``term`` for every allowed document that has it (memoised)."""
        found = self._scores.get(term)
        if found is not None:
            return found
        postings = self._index._postings.get(term, {})
        allowed = self._allowed
        having = postings if allowed is None else {gid: w for gid, w in postings.items() if gid in allowed}
        df = len(having)
        idf = math.log(1 + (self.size - df + 0.5) / (df + 0.5)) if df else 0.0
        found = {gid: idf * w for gid, w in having.items()}
        if len(self._scores) >= self.MEMO:
            self._scores.clear()
        self._scores[term] = found
        return found

    def _word_scores(self, word: str, related: tuple[tuple[str, float], ...]) -> dict[int, float]:
        """Each allowed document's best score for ``word`` or one of its related words (memoised)."""
        key = (word, related)
        best = self._words.get(key)
        if best is not None:
            return best
        best = self._term_scores(word)
        if related:
            best = dict(best)
            for term, factor in related:
                for gid, score in self._term_scores(term).items():
                    if score * factor > best.get(gid, 0.0):
                        best[gid] = score * factor
        if len(self._words) >= self.MEMO:
            self._words.clear()
        self._words[key] = best
        return best

    def search(self, query: str, *, limit: int = 5, expand: bool = True) -> list[Hit]:
        """Rank the allowed documents for ``query``; the best ``limit`` first, ties by server and name.

        Each query word adds, to each document, the best of its own score
        and its related words' (at :data:`RELATED_WEIGHT`): one need counted
        once, so a tool whose text holds many words of a group gains nothing
        over one that holds the word itself.
        """
        query = query[:MAX_QUERY]
        scores: dict[int, float] = {}
        for word, weight, related in _query_words(query, expand=expand):
            best = self._word_scores(word, related)
            if not scores and weight == 1.0:
                scores = dict(best)
                continue
            for gid, score in best.items():
                scores[gid] = scores.get(gid, 0.0) + weight * score
        key = _name_key(query.strip())
        if key:
            keys = self._index._keys
            at = bisect_left(keys, (key, -1))
            while at < len(keys) and keys[at][0].startswith(key):
                name_key, gid = keys[at]
                at += 1
                if self._allowed is None or gid in self._allowed:
                    tier = EXACT if name_key == key else PREFIX
                    scores[gid] = scores.get(gid, 0.0) + tier * 1000.0
        if not scores:
            return []
        docs = self._index._docs
        if len(scores) > limit:
            floor = heapq.nlargest(limit, scores.values())[-1]
            chosen = [(gid, score) for gid, score in scores.items() if score >= floor]
        else:
            chosen = list(scores.items())
        chosen.sort(key=lambda item: (-item[1], docs[item[0]].server, docs[item[0]].name))
        return [Hit(docs[gid].server, docs[gid].name, round(score, 4)) for gid, score in chosen[:limit] if score > 0]


def _related(term: str) -> tuple[tuple[str, float], ...]:
    """The words ``term`` also matches, each with how much a match counts."""
    return tuple((r, RELATED_WEIGHT) for r in RELATED.get(term, ()))


def _query_words(query: str, *, expand: bool) -> list[tuple[str, float, tuple[tuple[str, float], ...]]]:
    """Each distinct query word with its weight and (when ``expand``) its related words.

    A figure counts for less than a word: that a query holds numbers says
    something, but less than what it asks to do with them.
    """
    seen: dict[str, float] = {}
    figures = False
    for part in _WORD.findall(query):
        if part.isdigit():
            figures = True
        elif (word := part.lower()) not in STOP_WORDS:
            term = stem(word)
            seen[term] = 1.0
            if expand:
                for meant in PHRASES.get(term, ()):
                    seen.setdefault(meant, RELATED_WEIGHT)
    if figures and "number" not in seen:
        seen["number"] = NUMBER_WEIGHT
    return [(term, weight, _related(term) if expand else ()) for term, weight in seen.items()]
