"""The ``search_tools`` gateway tool: ranked tools across every server an agent may use.

A search needs the tool list of each server it covers. Lists are cached
per link at the handshake, so a search waits, like an aggregate
``tools/list``, while a server it covers starts (:class:`~._surface.Waiting`;
each server is started once on its behalf, and one that cannot be reached
is left out and named in ``unavailable``).

What is ranked is what :meth:`~._calls.Calls.dispatch` would list for
``get_server_tools``: the rules, and a delegated credential's own tool list,
filter the tools *before* ranking, and the statistics the ranking weighs
words with are those of the allowed tools alone (:mod:`._search`). The
index lives as long as the gateway and is updated one server at a time, when
a server's list object changes; the per-agent statistics are kept until the
catalogue, the configuration or the credential's grants change.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._audit import AuditEntry, Decision
from ._authorize import tool_granted
from ._context import Context
from ._errors import ErrorCode
from ._jsonrpc import Request
from ._search import SearchIndex, SearchView
from ._session import ClientSession
from ._tools import SearchTools, tool_result

if TYPE_CHECKING:
    from ._surface import Surface, Waiting

__all__ = ["PendingSearch", "Searches"]

JSONObject = dict[str, Any]

#: Per-agent statistics kept at once (each is a few numbers per allowed tool).
_VIEWS = 256


@dataclass(slots=True)
class PendingSearch:
    """A ``search_tools`` call waiting for the servers it covers: what it asked, as whom, and its audit entry."""

    agent: str
    params: SearchTools
    entry: AuditEntry
    started: float


class Searches:
    """Serves ``search_tools`` (see the module docstring)."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self.surface: Surface
        self.index = SearchIndex()
        self._views: dict[tuple[Any, ...], SearchView] = {}

    def forget(self) -> None:
        """A reload: the rules may allow other tools now, and servers may be gone."""
        self._views.clear()
        for server in self.index.servers:
            if server not in self._ctx.config.servers:
                self.index.drop_server(server)

    def start(self, session: ClientSession, req: Request, agent: str, params: SearchTools, entry: AuditEntry) -> None:
        """A ``search_tools`` call passed its checks: answer it now, or once its servers are ready."""
        from ._surface import Waiting  # the surface imports this module for its types

        self.surface.serve_or_wait(Waiting(session.id, req, search=PendingSearch(agent, params, entry, self._ctx.now)))

    def serve(self, session: ClientSession, waiting: Waiting, search: PendingSearch) -> bool:
        """Answer the search if every server it covers has its tools; False while one starts."""
        ctx = self._ctx
        servers = self.surface.agent_servers(search.agent)
        if search.params.servers is not None:
            # A server the agent may not use is searched as one that does not exist: no hint either way.
            wanted = set(search.params.servers)
            servers = [s for s in servers if s in wanted]
        links = self.surface.catalog_links(session, servers, waiting)
        if links is None:
            return False
        for server, link in links.items():
            self.index.set_server(server, ctx.config.servers[server].description or link.instructions, link.tools or [])
        view = self._view(session, search.agent, tuple(sorted(links)))
        hits = view.search(search.params.query, limit=search.params.limit)
        budget = search.params.max_schema_tokens
        found: list[JSONObject] = []
        used = 0
        for hit in hits:
            definition = self.index.definition(hit.server, hit.name)
            assert definition is not None  # a hit is a tool of the list just indexed
            # The definition's cost, as get_server_tools counts it (cached per definition).
            cost = ctx.tool_tokens(definition)
            tool = {**definition, "server": hit.server, "score": hit.score}
            if budget is not None and used + cost > budget:
                continue
            found.append(tool)
            used += cost
        value = {
            "query": search.params.query,
            "tools": found,
            "returned": len(found),
            "tokens_used": used,
            "servers_searched": sorted(links),
            "unavailable": [s for s in servers if s not in links],
        }
        ctx.reply(session.id, waiting.request.id, tool_result(value))
        ctx.audit(search.entry, Decision.ALLOW, latency=ctx.now - search.started)
        return True

    def dropped(self, search: PendingSearch) -> None:
        """The client went away while its search waited: the call still ends in one audit record."""
        self._ctx.audit(search.entry, Decision.ERROR, latency=self._ctx.now - search.started, error=ErrorCode.CANCELLED)

    def _view(self, session: ClientSession, agent: str, servers: tuple[str, ...]) -> SearchView:
        """The agent's statistics over ``servers``: made once per catalogue, configuration and grants."""
        principal = session.principal
        grants = None if principal is None else principal.tools
        key = (agent, grants, servers)
        view = self._views.get(key)
        if view is None or view.version != self.index.version:
            if len(self._views) >= _VIEWS:
                self._views.clear()
            policy = self._ctx.config.policy

            def allowed(server: str, tool: str) -> bool:
                return policy.decide(agent, server, tool).allowed and tool_granted(principal, server, tool)

            view = self._views[key] = self.index.view(servers, allowed)
        return view
