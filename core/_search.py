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

No leak through scores: the statistics BM25 weighs words with (how many
tools have a word, how long fields are on average) are computed over the
tools the agent may call only, so a denied tool changes nothing about how
the allowed ones rank. A :class:`SearchView` holds those statistics for one
agent's allowed set; the gateway keeps views until the catalogue changes.

The index is incremental: :meth:`SearchIndex.set_server` re-reads one
server's tools (nothing if it is the same list object), and views built
before the change are dropped by the index's version number.
"""

from __future__ import annotations

import math
import re
from bisect import bisect_left
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ._lexicon import PHRASES, RELATED, STOP_WORDS, stem

__all__ = ["Hit", "SearchIndex", "SearchView", "words"]

JSONObject = dict[str, Any]
Allowed = Callable[[str, str], bool]

#: Field weights, in the order of a posting's frequencies: name, text, params, server.
WEIGHTS = (3.0, 1.0, 0.3, 0.3)
#: Length normalisation per field (BM25's ``b``): names are all short, descriptions vary.
B = (0.3, 0.75, 0.6, 0.0)
K1 = 1.2
#: How much a related word counts against the word the agent used.
RELATED_WEIGHT = 0.5
#: How much a server whose tools share a query word lifts all of them (see SearchView._term_scores).
SERVER_PRIOR = 0.25
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
    name: str
    key: str
    lengths: tuple[int, int, int, int]


class _ServerDocs:
    """One server's tools, tokenised once: documents and postings."""

    __slots__ = ("tools", "docs", "postings", "keys")

    def __init__(self, server: str, description: str | None, tools: Sequence[JSONObject]) -> None:
        self.tools = tools
        self.docs: list[_Doc] = []
        self.postings: dict[str, list[tuple[int, tuple[int, int, int, int]]]] = {}
        server_words = words(server.replace("_", " ")) + words(description or "")
        for tool in tools:
            name = tool.get("name")
            if not isinstance(name, str):
                continue
            fields = (_name_words(tool, name), words(_text(tool.get("description"))), _param_words(tool), server_words)
            counts: dict[str, list[int]] = {}
            for f, terms in enumerate(fields):
                for term in terms:
                    counts.setdefault(term, [0] * _FIELDS)[f] += 1
            index = len(self.docs)
            self.docs.append(_Doc(name, _name_key(name), (len(fields[0]), len(fields[1]), len(fields[2]), len(fields[3]))))
            for term, tf in counts.items():
                self.postings.setdefault(term, []).append((index, (tf[0], tf[1], tf[2], tf[3])))
        #: The documents by name key, sorted, to find a name's prefixes by bisection.
        self.keys = sorted((doc.key, i) for i, doc in enumerate(self.docs))

    def named(self, key: str) -> Iterable[tuple[int, bool]]:
        """The documents whose name starts with ``key``, each with whether it is the whole name."""
        at = bisect_left(self.keys, (key, -1))
        while at < len(self.keys) and self.keys[at][0].startswith(key):
            yield self.keys[at][1], self.keys[at][0] == key
            at += 1


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
    """Every server's tools, tokenised, ready to rank for any agent (see the module docstring)."""

    def __init__(self) -> None:
        self._servers: dict[str, _ServerDocs] = {}
        self._descriptions: dict[str, str | None] = {}
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
        if known is not None and known.tools is tools and self._descriptions.get(server) == description:
            return
        self._servers[server] = _ServerDocs(server, description, tools)
        self._descriptions[server] = description
        self._changed()

    def drop_server(self, server: str) -> None:
        """Forget ``server`` (removed by a reload, say)."""
        if self._servers.pop(server, None) is not None:
            self._descriptions.pop(server, None)
            self._changed()

    def _changed(self) -> None:
        self.version += 1
        self._views.clear()

    def view(self, servers: Iterable[str] | None = None, allowed: Allowed | None = None) -> SearchView:
        """The statistics for the tools of ``servers`` (default: all) that ``allowed`` lets through (default: all)."""
        chosen = sorted(self._servers) if servers is None else sorted(s for s in set(servers) if s in self._servers)
        return SearchView(self.version, {s: self._servers[s] for s in chosen}, allowed)

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
    """One allowed set's statistics: which documents count, field lengths, and word frequencies (memoised)."""

    def __init__(self, version: int, servers: Mapping[str, _ServerDocs], allowed: Allowed | None) -> None:
        self.version = version
        self._servers = servers
        #: Per server, the indexes of the allowed documents (None: all of them).
        self._allowed: dict[str, frozenset[int] | None] = {}
        #: Per server, how many of its documents are allowed.
        self._sizes: dict[str, int] = {}
        totals = [0] * _FIELDS
        count = 0
        for server, docs in servers.items():
            if allowed is None:
                keep: frozenset[int] | None = None
                chosen: Iterable[_Doc] = docs.docs
            else:
                keep = frozenset(i for i, d in enumerate(docs.docs) if allowed(server, d.name))
                chosen = (docs.docs[i] for i in keep)
            self._allowed[server] = keep
            self._sizes[server] = len(docs.docs) if keep is None else len(keep)
            for doc in chosen:
                count += 1
                for f in range(_FIELDS):
                    totals[f] += doc.lengths[f]
        self.size = count
        averages = [total / count if count else 1.0 for total in totals]
        # Per document, the length normalisation of each field: 1 - b + b * len / avg.
        self._norms: dict[str, list[tuple[float, ...]]] = {
            server: [
                tuple(1 - B[f] + B[f] * (doc.lengths[f] / averages[f] if averages[f] else 0.0) for f in range(_FIELDS))
                for doc in docs.docs
            ]
            for server, docs in servers.items()
        }
        self._idf: dict[str, float] = {}

    def _allowed_postings(self, term: str) -> Iterable[tuple[str, int, tuple[int, int, int, int]]]:
        for server, docs in self._servers.items():
            postings = docs.postings.get(term)
            if postings is None:
                continue
            keep = self._allowed[server]
            for doc, tf in postings:
                if keep is None or doc in keep:
                    yield server, doc, tf

    def _term_scores(self, term: str) -> dict[tuple[str, int], float]:
        """BM25F's score of ``term`` for every allowed document that has it, plus its server's share.

        A server most of whose tools speak of a word (a git server of
        commits) is likelier to hold the tool for it: every tool of a server
        gains :data:`SERVER_PRIOR` times the word's weight times the share of
        the server's allowed tools that have it in their name or description.
        """
        idf = self.idf(term)
        found: dict[tuple[str, int], float] = {}
        if idf == 0.0:
            return found
        having: dict[str, int] = {}
        for server, doc, tf in self._allowed_postings(term):
            norms = self._norms[server][doc]
            pseudo = sum(WEIGHTS[f] * tf[f] / norms[f] for f in range(_FIELDS) if tf[f])
            found[(server, doc)] = idf * pseudo * (K1 + 1) / (K1 + pseudo)
            if tf[0] or tf[1]:
                having[server] = having.get(server, 0) + 1
        if SERVER_PRIOR:
            for server, count in having.items():
                if count < 2:
                    continue  # one tool's word is that tool's, not its server's
                gain = SERVER_PRIOR * idf * count / self._sizes[server]
                keep = self._allowed[server]
                for doc in range(len(self._servers[server].docs)):
                    if keep is None or doc in keep:
                        found[(server, doc)] = found.get((server, doc), 0.0) + gain
        return found

    def idf(self, term: str) -> float:
        """BM25's inverse document frequency of ``term`` over the allowed documents."""
        value = self._idf.get(term)
        if value is None:
            df = sum(1 for _ in self._allowed_postings(term))
            value = self._idf[term] = math.log(1 + (self.size - df + 0.5) / (df + 0.5)) if df else 0.0
        return value

    def search(self, query: str, *, limit: int = 5, expand: bool = True) -> list[Hit]:
        """Rank the allowed documents for ``query``; the best ``limit`` first, ties by server and name.

        Each query word adds, to each document, the best of its own score
        and its related words' (at :data:`RELATED_WEIGHT`): one need counted
        once, so a tool whose text holds many words of a group gains nothing
        over one that holds the word itself.
        """
        query = query[:MAX_QUERY]
        scores: dict[tuple[str, int], float] = {}
        memo: dict[str, dict[tuple[str, int], float]] = {}
        for word, weight, related in _query_words(query, expand=expand):
            best: dict[tuple[str, int], float] = {}
            for term, factor in ((word, 1.0), *related):
                found = memo.get(term)
                if found is None:
                    found = memo[term] = self._term_scores(term)
                for doc, score in found.items():
                    if score * factor > best.get(doc, 0.0):
                        best[doc] = score * factor
            for doc, score in best.items():
                scores[doc] = scores.get(doc, 0.0) + weight * score
        key = _name_key(query.strip())
        if key:
            for server, docs in self._servers.items():
                keep = self._allowed[server]
                for i, exact in docs.named(key):
                    if keep is None or i in keep:
                        tier = EXACT if exact else PREFIX
                        scores[(server, i)] = scores.get((server, i), 0.0) + tier * 1000.0
        ranked = sorted(scores.items(), key=lambda item: (-item[1], item[0][0], self._servers[item[0][0]].docs[item[0][1]].name))
        return [Hit(server, self._servers[server].docs[doc].name, round(score, 4)) for (server, doc), score in ranked[:limit] if score > 0]


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
