"""Aggregate mode: the servers' own tools, resources and prompts, served to a client as one server.

Theory of operation
-------------------
A session is in aggregate mode when ``GATEWAY_MODE=aggregate`` or the rules
give its agent ``"mode": "aggregate"``; the agent is decided at
``initialize``, from the credential or the default agent (or a declared
``_meta.agent_id``), and each later request may declare another in its own
``_meta`` (:meth:`Surface.agent`). With ``auto`` (the setting or the
rules), ``initialize`` waits for the agent's servers as aggregate mode's
does, then the session becomes aggregate if the tools the agent may call
cost fewer tokens than the threshold (:func:`~._report.auto_mode`), on
demand otherwise, and is answered as that mode answers; the choice is
logged and kept for the session.

**Lists** (``tools/list``, ``resources/list``, ``resources/templates/list``,
``prompts/list``) are answered from the catalogue each link cached at its
handshake (:mod:`._links`), merged over the servers the agent may use and
filtered by the same policy that guards the calls, so what a client sees is
what it may use. Names come from :mod:`._names` (``server__tool`` unless one
server is configured, a short form past 64 characters or on a collision);
the gateway pages the merged list with its own cursors. A list, and an
``initialize`` (whose capabilities are the union of the servers'), needs
every server it covers to have answered its handshake: until then the
request waits (:class:`Waiting`), each server is started once on its
behalf, and :meth:`Surface.settled` serves it when a link becomes ready or
fails; a server that cannot be reached is left out.

**Requests that name an item** (``tools/call``, ``resources/read``,
``prompts/get``, ``completion/complete``, ``resources/subscribe`` and
``unsubscribe``) are resolved to one server and its own name for the item
(a name or URI that was never issued to this agent is unknown, never
guessed), checked against the policy and the rate limits, and forwarded as a
:class:`~._call.Call` with a :class:`~._call.Forward`: timeouts, failover,
cancellation, progress and the audit record are those of ``execute_tool``.

**Requests servers send clients** are :mod:`._relays`'.

**REST sessions** (:mod:`._rest`) are served here too, one server each: its
lists under the server's own names, without the gateway tools (a resources
or prompts list is asked of the server when first wanted, since only
aggregate mode lists the whole catalogue at the handshake), and a request
that names an item resolved as ``execute_tool`` resolves it, by the name
as given, so a denied name is denied and an unknown one not found.

**A server that restarts** (crash, lost HTTP session) is handshaken again
by :mod:`._links`; once ready, its subscriptions and the clients' log
level are renewed on the new connection, and the clients whose view of its
lists changed are told (:meth:`Surface.restarted`). Their sessions go on.

**What servers say on their own**: ``notifications/message`` about a call
goes to that call's client, any other to the clients that asked for its
level (``logging/setLevel``, which is also passed on to every server that
offers logging); ``resources/updated`` to the clients subscribed to the
resource; a ``list_changed`` refreshes the cache (:mod:`._links`) and is
passed on to the aggregate clients whose view of that list changed, as is
the change a reload makes. Nothing reaches a session before its
``initialize`` answer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ._actions import SendToClient, SendToDownstream
from ._audit import AuditEntry, Decision
from ._authorize import CREDENTIAL_TOOLS, act_as, credential_refused, tool_granted
from ._call import Forward, ForwardMethod
from ._config import Config
from ._context import Context
from ._errors import ErrorCode
from ._events import ClientId
from ._jsonrpc import Notification, Request, error, notification, request
from ._link import LISTS, Internal, Link, State
from ._names import Namer, UriMap, fingerprint, page
from ._policy import Refusal
from ._pool import Unavailable
from ._report import auto_mode, auto_threshold
from ._rest import UNKNOWN_SERVER
from ._session import LOG_LEVELS, ClientSession, SessionState
from ._stateless import discover_result
from ._tools import gateway_tools

if TYPE_CHECKING:
    from ._calls import Calls
    from ._clients import Clients
    from ._links import Links
    from ._search_tool import PendingSearch, Searches
    from ._pins import Pins

__all__ = ["PAGE_SIZE", "Surface", "Waiting", "aggregate_enabled"]

JSONObject = dict[str, Any]

#: Items per page of a merged list.
PAGE_SIZE = 100
# Merged views kept: one per agent (and delegated tool list) in use is what matters.
_VIEWS = 256
#: MCP's error code for a resource that does not exist (server/resources, "Error Handling").
RESOURCE_NOT_FOUND = -32002

#: The requests that tell a client what the gateway offers: the handshake era's and the stateless era's.
_OPENING = ("initialize", "server/discover")

_GATEWAY_TOOL_NAMES = ("list_servers", "search_tools", "get_server_tools", "execute_tool", "get_gateway_status")

#: The lists of a server's catalogue each list request is made from, besides its tools.
_CATALOGUE: dict[str, tuple[Internal, ...]] = {
    "tools/list": (),
    "resources/list": (Internal.RESOURCES_LIST, Internal.TEMPLATES_LIST),
    "resources/templates/list": (Internal.TEMPLATES_LIST,),
    "prompts/list": (Internal.PROMPTS_LIST,),
}

#: What a REST session may ask (see :mod:`._rest`).
_REST_METHODS = frozenset({
    "tools/list", "tools/call", "resources/list", "resources/templates/list", "resources/read", "prompts/list", "prompts/get",
})

#: The key of each list request's items in its result (and in :attr:`View.lists`).
_LISTS: dict[str, str] = {
    "tools/list": "tools",
    "resources/list": "resources",
    "resources/templates/list": "resourceTemplates",
    "prompts/list": "prompts",
}
#: The notification that says a list changed, by its key in :attr:`View.lists`.
_CHANGED_LISTS = {
    "tools": "notifications/tools/list_changed",
    "resources": "notifications/resources/list_changed",
    "resourceTemplates": "notifications/resources/list_changed",
    "prompts": "notifications/prompts/list_changed",
}
#: The same, by the request that lists it.
_CHANGED = {kind: _CHANGED_LISTS[key] for kind, (key, _) in LISTS.items()}


def aggregate_enabled(config: Config) -> bool:
    """May any client of this configuration get aggregate mode (so servers list their whole catalogue)? ``auto`` may."""
    policy = config.policy
    served = ("aggregate", "auto")
    return config.settings.mode in served or any(policy.mode(agent) in served for agent in policy.agents)


@dataclass(slots=True, eq=False)
class Waiting:
    """A request that waits for servers to finish their handshake, and the servers started for it."""

    client: ClientId
    request: Request
    started: set[str] = field(default_factory=set)
    #: The request's size, for the audit record of a REST request that names an item.
    request_bytes: int = 0
    #: A ``search_tools`` call (:mod:`._search_tool`), rather than a list or ``initialize``.
    search: PendingSearch | None = None
    #: A stateless client's first request, waiting for mode ``auto`` to choose (:meth:`Surface.adopt`).
    deciding: bool = False
    #: A restored aggregate session's request, waiting for its agent's servers (:meth:`Surface.warm`).
    warming: bool = False


@dataclass(frozen=True, slots=True)
class _NotFound:
    """A URI no server this agent may use has."""

    uri: str


@dataclass(frozen=True, slots=True)
class View:
    """One agent's merged catalogue: each list as the client sees it, and the names that lead back."""

    lists: dict[str, list[JSONObject]]
    fingerprints: dict[str, str]
    tools: Namer
    prompts: Namer
    uris: UriMap
    #: The servers whose catalogues it merges (a server that could not be reached is absent).
    servers: tuple[str, ...]


class Surface:
    """The aggregate surface (see the module docstring)."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self.calls: Calls
        self.clients: Clients
        self.links: Links
        self.searches: Searches
        self.pins: Pins
        self._waiting: list[Waiting] = []
        self._settling = False
        # Merged views by what they were made from (see _view), and each agent's servers:
        # caches, emptied by a reload (_forget), so no state to speak of.
        self._views: dict[tuple[Any, ...], View] = {}
        self._agent_servers: dict[str, list[str]] = {}
        self._resolving: dict[tuple[Any, ...], View] = {}
        self._per_client = any(spec.isolation == "per_client" for spec in ctx.config.servers.values())

    # -- the session's mode and agent ------------------------------------------------

    def initialize(self, session: ClientSession, req: Request) -> bool:
        """Decide the session's mode at ``initialize``; True when aggregate mode answers it (now or later)."""
        capabilities = req.params.get("capabilities")
        session.capabilities = dict(capabilities) if isinstance(capabilities, dict) else {}
        self._decide_mode(session, req)
        if session.mode not in ("aggregate", "auto"):
            return False
        self.serve_or_wait(Waiting(session.id, req))
        return True

    def adopt(self, session: ClientSession, req: Request, request_bytes: int) -> bool:
        """Decide a stateless client's mode at its first request; True when that request waits for ``auto`` to choose.

        The stateless era has no ``initialize`` to decide at, so the first
        request does what it would have: the agent, the mode, and for
        ``auto`` a wait for the agent's servers, after which the request is
        served (:meth:`~._clients.Clients.serve`).
        """
        self._decide_mode(session, req)
        if session.mode != "auto":
            return False
        self.serve_or_wait(Waiting(session.id, req, request_bytes=request_bytes, deciding=True))
        return True

    def warm(self, session: ClientSession, req: Request, request_bytes: int) -> None:
        """Serve a restored aggregate session's request once its agent's servers are in, as after ``initialize``.

        A session continued on another gateway (``ClientOpened.restored``)
        skipped the ``initialize`` that would have started its agent's
        servers and waited for their catalogues; without them here its names
        would resolve to nothing. So its requests wait for them once.
        """
        self.serve_or_wait(Waiting(session.id, req, request_bytes=request_bytes, warming=True))

    def _decide_mode(self, session: ClientSession, req: Request) -> None:
        ctx = self._ctx
        agent = self.agent(session, req)
        session.agent = agent if isinstance(agent, str) else None
        mode = ctx.config.policy.mode(session.agent) if session.agent is not None else None
        session.mode = mode or ctx.config.settings.mode
        if session.mode == "auto" and session.agent is None:
            # No agent, no tool list to measure: the gateway's tools, which any agent can use.
            self._settle_mode(session, "on_demand", None)

    def listen_resources(self, session: ClientSession, uris: list[str]) -> list[str]:
        """Subscribe a stateless client's listen stream to resources; the URIs honoured, as the client named them.

        Honoured: a URI the agent may read (resolved as ``resources/read``
        resolves it) on a server that offers resource subscriptions. The
        gateway subscribes the server once, for its first subscriber (a
        handshake-era server with ``resources/subscribe``, a stateless one by
        listening again), as it does for a handshake-era client's subscribe.
        """
        ctx = self._ctx
        agent = session.agent
        if agent is None:
            return []
        view = self._known_view(session, agent)
        honoured: list[str] = []
        for uri in uris:
            found = self._resolve("resources/read", {"uri": uri}, view)
            if not isinstance(found, tuple):
                continue
            server, item, _ = found
            link = self._known_links(session, [server]).get(server)
            offered = link.capabilities.get("resources") if link is not None else None
            if link is None or not (isinstance(offered, dict) and offered.get("subscribe") is True):
                continue
            if not self._decide("resources/read", {"uri": item}, agent, server, item).allowed:
                continue
            subscribers = ctx.subscriptions.setdefault((server, item), set())
            first = not subscribers
            subscribers.add(session.id)
            honoured.append(uri)
            if first and link.state is State.READY:
                if link.stateless:
                    self.links.listen(link)
                else:
                    self._internal(link, Internal.SUBSCRIBE, {"uri": item})
        return honoured

    def discover(self, session: ClientSession, req: Request) -> None:
        """Answer a stateless client's ``server/discover``: what ``initialize`` would have said, in discover's shape."""
        if session.mode == "aggregate":
            self.serve_or_wait(Waiting(session.id, req))
        else:
            from ._clients import on_demand_initialize

            self._ctx.reply(session.id, req.id, discover_result(on_demand_initialize(session)))

    def agent(self, session: ClientSession, req: Request | None) -> str | Refusal:
        """The agent an aggregate request acts as: a declared ``_meta.agent_id``, else the session's (``req`` None: the latter).

        Decided afresh for every request, as for a gateway tool call, so a
        credential refused or expired since ``initialize`` acts no more.
        """
        ctx = self._ctx
        meta = req.params.get("_meta") if req is not None else None
        declared = meta.get("agent_id") if isinstance(meta, dict) else None
        if declared is not None and not isinstance(declared, str):
            declared = ""  # refused below as an invalid id
        wanted = declared if declared is not None else session.agent
        if session.principal is not None:
            if session.refused is not None:
                return credential_refused(session.principal, session.refused)
            return act_as(session.principal, wanted, ctx.config.policy, ctx.now)
        return ctx.config.policy.resolve_agent(wanted, default_agent=ctx.config.settings.default_agent)

    # -- requests --------------------------------------------------------------------

    def request(self, session: ClientSession, req: Request, request_bytes: int) -> bool:
        """Serve an aggregate session's request of the servers' surface; False for one it does not serve."""
        method = req.method
        if session.mode == "rest":
            if method in _REST_METHODS:
                self.serve_or_wait(Waiting(session.id, req, request_bytes=request_bytes))
            else:
                self._ctx.reply_error(session.id, req.id, ErrorCode.METHOD_NOT_FOUND, f"Method not found: {method}")
            return True
        if session.mode != "aggregate":
            return False
        if method in _LISTS:
            self.serve_or_wait(Waiting(session.id, req))
        elif method == "tools/call":
            name = req.params.get("name")
            if self._ctx.config.settings.gateway_tools and name in _GATEWAY_TOOL_NAMES:
                return False  # the gateway's own tool, beside the servers'
            self._forward(session, req, request_bytes)
        elif method in ("resources/read", "prompts/get", "completion/complete", "resources/subscribe", "resources/unsubscribe"):
            self._forward(session, req, request_bytes)
        elif method == "logging/setLevel":
            self._set_level(session, req)
        else:
            return False
        return True

    def serve_or_wait(self, waiting: Waiting) -> None:
        """Answer a list, an ``initialize`` or a search once every server it covers has its catalogue; else wait."""
        ctx = self._ctx
        session = ctx.clients.get(waiting.client)
        if session is None:
            if waiting.search is not None:
                self.searches.dropped(waiting.search)
            return
        if waiting.search is not None:
            if not self.searches.serve(session, waiting, waiting.search):
                self._waiting.append(waiting)
            return
        req = waiting.request
        if session.mode == "rest":
            self._serve_rest(session, waiting)
            return
        agent = self.agent(session, req)
        if waiting.deciding or waiting.warming or req.method in _OPENING:
            # No agent yet is no reason to refuse a session: then it offers what any server does.
            servers = self.agent_servers(agent) if isinstance(agent, str) else sorted(ctx.config.servers)
        elif isinstance(agent, Refusal):
            context: JSONObject = {} if agent.rule is None else {"rule": agent.rule}
            ctx.reply_error(session.id, req.id, agent.code, agent.message, **context)
            return
        else:
            servers = self.agent_servers(agent)
        links = self.catalog_links(session, servers, waiting)
        if links is None:
            self._waiting.append(waiting)
            return
        if waiting.deciding:
            self._choose(session, agent, links)
            self.clients.serve(session, req, waiting.request_bytes)
            return
        if waiting.warming:
            session.warming = False
            self.clients.serve(session, req, waiting.request_bytes)
            return
        if req.method in _OPENING:
            if session.mode == "auto":
                self._choose(session, agent, links)
            if session.mode != "aggregate":
                from ._clients import on_demand_initialize

                ctx.reply(session.id, req.id, on_demand_initialize(session))
                return
            opening = self._initialize_result(session, links)
            ctx.reply(session.id, req.id, discover_result(opening) if req.method == "server/discover" else opening)
            return
        assert isinstance(agent, str)
        key = _LISTS[req.method]
        view = self._view(session, agent, links)
        cursor = req.params.get("cursor")
        paged = page(view.lists[key], cursor, PAGE_SIZE, view.fingerprints[key]) if cursor is None or isinstance(cursor, str) else None
        if paged is None:
            ctx.reply_error(session.id, req.id, ErrorCode.INVALID_PARAMS, "Invalid cursor", parameter="cursor")
            return
        chosen, following = paged
        answer: JSONObject = {key: chosen}
        if following is not None:
            answer["nextCursor"] = following
        ctx.reply(session.id, req.id, answer)

    def _choose(self, session: ClientSession, agent: str | Refusal, links: dict[str, Link]) -> None:
        """Decide an ``auto`` session's mode by what the tools its agent may call cost, over the servers reached."""
        if not isinstance(agent, str):
            self._settle_mode(session, "on_demand", None)  # refused since initialize began: measure nothing
            return
        count = self._ctx.tool_tokens
        tokens = sum(
            count(tool)
            for server, link in links.items()
            for tool in self._visible(session, agent, server, Internal.TOOLS_LIST, link.tools or [])
        )
        self._settle_mode(session, auto_mode(tokens, self._ctx.config.settings), tokens)

    def _settle_mode(self, session: ClientSession, mode: str, tokens: int | None) -> None:
        """Keep ``auto``'s choice for the session, and log it."""
        from ._clients import client_label

        session.mode = mode
        fields: JSONObject = {"client": client_label(session.id), "agent": session.agent}
        if tokens is not None:
            fields.update(tokens=tokens, threshold=auto_threshold(self._ctx.config.settings))
        self._ctx.log("info", f"mode auto chose {mode}", **fields)

    def _serve_rest(self, session: ClientSession, waiting: Waiting) -> None:
        """Serve a REST request of one server once that server has its catalogue (see :mod:`._rest`)."""
        ctx = self._ctx
        req = waiting.request
        server = session.server
        agent = self.agent(session, req)
        refusal = agent if isinstance(agent, Refusal) else self._rest_scope(agent, server)
        if refusal is not None:
            self._refuse_rest(session, waiting, refusal)
            return
        assert isinstance(agent, str) and server is not None
        links = self.catalog_links(session, [server], waiting)
        if links is None:
            self._waiting.append(waiting)
            return
        if server not in links:
            pool = ctx.pools.get(server)
            reason = pool.unavailable(ctx.now).reason if pool is not None else "not configured"
            self._refuse_rest(session, waiting, Refusal(ErrorCode.SERVER_UNAVAILABLE, f"Server '{server}' is unavailable: {reason}", None))
            return
        if req.method not in _LISTS:
            self._forward(session, req, waiting.request_bytes)
            return
        if self._list_first(links[server], req.method):
            self._waiting.append(waiting)
            return
        view = self._view(session, agent, links)
        key = _LISTS[req.method]
        answer: JSONObject = {key: view.lists[key]}
        if key == "resources":
            # One REST endpoint lists both: a template is a resource too, to a person scripting against it.
            answer["resourceTemplates"] = view.lists["resourceTemplates"]
        ctx.reply(session.id, req.id, answer)

    def _list_first(self, link: Link, method: str) -> bool:
        """Ask ``link``'s server for the lists ``method`` needs that it offers and has not listed; True while one is due.

        Only aggregate mode lists a server's whole catalogue at its
        handshake; for the REST API a list is asked for when first wanted,
        then kept (and refreshed on ``list_changed``) like the others.
        """
        due = False
        for kind in _CATALOGUE[method]:
            offered = isinstance(link.capabilities.get("prompts" if kind is Internal.PROMPTS_LIST else "resources"), dict)
            if kind in link.catalog or not offered:
                continue
            if kind not in link.listing_wire:
                self.links.request_list(link, kind, None)
            due = True
        return due

    def _rest_scope(self, agent: str, server: str | None) -> Refusal | None:
        """Why ``agent`` may not use a REST session's server: it is not configured, or the policy denies it."""
        config = self._ctx.config
        if server is None or server not in config.servers:
            return Refusal(ErrorCode.TOOL_NOT_FOUND, f"{UNKNOWN_SERVER}: {str(server)[:128]}", None)
        decision = config.policy.decide_server(agent, server)
        if not decision.allowed:
            return Refusal(ErrorCode.DENIED_BY_POLICY, f"Access to server '{server}' is denied ({decision.rule})", decision.rule)
        return None

    def _refuse_rest(self, session: ClientSession, waiting: Waiting, refusal: Refusal) -> None:
        """Refuse a REST request; one that names an item is audited as its MCP twin would be."""
        req = waiting.request
        if req.method in _LISTS:
            context: JSONObject = {} if refusal.rule is None else {"rule": refusal.rule}
            self._ctx.reply_error(session.id, req.id, refusal.code, refusal.message, **context)
            return
        entry = self._entry(session, req, waiting.request_bytes)
        agent = self.agent(session, req)
        entry.agent = agent if isinstance(agent, str) else None
        entry.server = session.server if session.server in self._ctx.config.servers else None
        self.calls.refuse(session, req.id, entry, refusal)

    def settled(self) -> None:
        """A link became ready or failed: serve the requests that waited for it, if they need wait no more."""
        if self._settling or not self._waiting:
            return
        self._settling = True
        try:
            waiting, self._waiting = self._waiting, []
            for entry in waiting:
                self.serve_or_wait(entry)
        finally:
            self._settling = False

    def drop(self, session: ClientSession) -> None:
        """A client went away: forget what it waits for and what it subscribed to."""
        ctx = self._ctx
        for waiting in self._waiting:
            if waiting.client == session.id and waiting.search is not None:
                self.searches.dropped(waiting.search)
        self._waiting = [w for w in self._waiting if w.client != session.id]
        for subscribers in ctx.subscriptions.values():
            subscribers.discard(session.id)

    def _forget(self) -> None:
        """Empty the caches: every one of them was made under the configuration a reload replaced."""
        self._views.clear()
        self._agent_servers.clear()
        self._resolving.clear()
        self.searches.forget()
        config = self._ctx.config
        self._per_client = any(spec.isolation == "per_client" for spec in config.servers.values())

    def agent_servers(self, agent: str) -> list[str]:
        """The servers ``agent`` may use, in name order (kept until a reload: it is asked on every request)."""
        servers = self._agent_servers.get(agent)
        if servers is None:
            config = self._ctx.config
            if len(self._agent_servers) >= _VIEWS:
                self._agent_servers.clear()
            servers = self._agent_servers[agent] = config.policy.visible_servers(agent, sorted(config.servers))
        return servers

    def catalog_links(self, session: ClientSession, servers: list[str], waiting: Waiting) -> dict[str, Link] | None:
        """The link whose catalogue stands for each server, leaving out the unreachable; None while one starts."""
        ctx = self._ctx
        found: dict[str, Link] = {}
        wait = False
        for server in servers:
            pool = ctx.pools.get(server)
            if pool is None:
                continue
            candidates = [pool.clients[session.id]] if session.id in pool.clients else list(pool.shared)
            ready = next((link for link in candidates if link.state is State.READY), None)
            if ready is not None:
                found[server] = ready
                continue
            if any(link.state in (State.STARTING, State.LISTING) for link in candidates):
                wait = True
                continue
            if server in waiting.started or ctx.closing:
                continue  # it failed while this request waited: left out
            link = self.links.choose(pool, session.id, prefer_running=True)
            if isinstance(link, Unavailable):
                continue
            waiting.started.add(server)
            if link.state is State.READY:
                found[server] = link
                continue
            if link.state in (State.IDLE, State.BACKOFF):
                self.links.start(link)
            wait = True
        return None if wait else found

    def _session_servers(self, session: ClientSession, agent: str) -> list[str]:
        """The servers a session's lists cover: the agent's, or a REST session's one server if the agent may use it."""
        servers = self.agent_servers(agent)
        if session.mode != "rest":
            return servers
        return [session.server] if session.server in servers else []

    def _known_view(self, session: ClientSession, agent: str) -> View:
        """The agent's view over every server's cached catalogue, for resolving names (asked on every call)."""
        ctx = self._ctx
        # Per-client links are this session's own; shared ones are everyone's.
        own = session.id if self._per_client else None
        key = (agent, None if session.principal is None else session.principal.tools, ctx.catalog_epoch, own)
        view = self._resolving.get(key)
        if view is None:
            if len(self._resolving) >= _VIEWS:
                self._resolving.clear()
            view = self._resolving[key] = self._view(session, agent, self._known_links(session, self.agent_servers(agent)))
        return view

    def _known_links(self, session: ClientSession, servers: list[str]) -> dict[str, Link]:
        """The link whose cached catalogue stands for each server, ready or not, starting none (for resolving names)."""
        found: dict[str, Link] = {}
        for server in servers:
            pool = self._ctx.pools.get(server)
            if pool is None:
                continue
            candidates = [pool.clients[session.id]] if session.id in pool.clients else list(pool.shared)
            known = [link for link in candidates if link.tools is not None]
            chosen = next((link for link in known if link.state is State.READY), known[0] if known else pool.known)
            if chosen is not None and chosen.tools is not None:
                found[server] = chosen
        return found

    def _view(self, session: ClientSession, agent: str, links: dict[str, Link]) -> View:
        """The agent's merged, filtered catalogue over ``links``: made once, then served from the cache until a list changes."""
        principal = session.principal
        key = (agent, None if principal is None else principal.tools, self._ctx.catalog_epoch, tuple(links), session.mode == "rest")
        view = self._views.get(key)
        if view is None:
            if len(self._views) >= _VIEWS:
                self._views.clear()  # stale ones included; the live ones are made again on use
            view = self._views[key] = self._make_view(session, agent, links)
        return view

    def _make_view(self, session: ClientSession, agent: str, links: dict[str, Link]) -> View:
        """The agent's merged, filtered catalogue over ``links``."""
        settings = self._ctx.config.settings
        servers = self._session_servers(session, agent)
        # A REST session serves one server's items under their own names, and no gateway tools.
        rest = session.mode == "rest"
        gateway = settings.gateway_tools and not rest
        prefix = "never" if rest else settings.prefix
        tools: dict[str, list[JSONObject]] = {s: [] for s in servers}
        prompts: dict[str, list[JSONObject]] = {s: [] for s in servers}
        resources: dict[str, list[JSONObject]] = {s: [] for s in servers}
        templates: dict[str, list[JSONObject]] = {s: [] for s in servers}
        for server, link in links.items():
            catalog = link.catalog
            tools[server] = self._visible(session, agent, server, Internal.TOOLS_LIST, link.tools or [])
            prompts[server] = self._visible(session, agent, server, Internal.PROMPTS_LIST, catalog.get(Internal.PROMPTS_LIST, []))
            resources[server] = self._visible(session, agent, server, Internal.RESOURCES_LIST, catalog.get(Internal.RESOURCES_LIST, []))
            templates[server] = self._visible(session, agent, server, Internal.TEMPLATES_LIST, catalog.get(Internal.TEMPLATES_LIST, []))
        reserved = _GATEWAY_TOOL_NAMES if gateway else ()
        tool_namer = Namer.build(
            {s: [t["name"] for t in items] for s, items in tools.items()},
            separator=settings.name_separator, prefix=prefix, reserved=reserved,
        )
        prompt_namer = Namer.build(
            {s: [p["name"] for p in items] for s, items in prompts.items()},
            separator=settings.name_separator, prefix=prefix,
        )
        uris = UriMap.build(
            {s: [r["uri"] for r in items] for s, items in resources.items()},
            {s: [t["uriTemplate"] for t in items] for s, items in templates.items()},
        )
        lists: dict[str, list[JSONObject]] = {
            "tools": [{**t, "name": tool_namer.public(s, t["name"])} for s in servers for t in tools[s]],
            "prompts": [{**p, "name": prompt_namer.public(s, p["name"])} for s in servers for p in prompts[s]],
            "resources": [{**r, "uri": uris.public(s, r["uri"])} for s in servers for r in resources[s]],
            "resourceTemplates": [
                {**t, "uriTemplate": uris.public_template(s, t["uriTemplate"])} for s in servers for t in templates[s]
            ],
        }
        if gateway:
            lists["tools"] = [*gateway_tools(debug=settings.debug), *lists["tools"]]
        fingerprints = {
            "tools": fingerprint(t["name"] for t in lists["tools"]),
            "prompts": fingerprint(p["name"] for p in lists["prompts"]),
            "resources": fingerprint(r["uri"] for r in lists["resources"]),
            "resourceTemplates": fingerprint(t["uriTemplate"] for t in lists["resourceTemplates"]),
        }
        return View(lists, fingerprints, tool_namer, prompt_namer, uris, tuple(links))

    def _initialize_result(self, session: ClientSession, links: dict[str, Link]) -> JSONObject:
        """The ``initialize`` answer of an aggregate session: what the servers offer together, never more."""
        from ._clients import INSTRUCTIONS, server_info

        offered = [link.capabilities for link in links.values()]
        capabilities: JSONObject = {"tools": {"listChanged": True}}
        if any(isinstance(c.get("logging"), dict) for c in offered):
            capabilities["logging"] = {}
        resources = [c["resources"] for c in offered if isinstance(c.get("resources"), dict)]
        if resources:
            capabilities["resources"] = {
                "subscribe": any(r.get("subscribe") is True for r in resources), "listChanged": True,
            }
        if any(isinstance(c.get("prompts"), dict) for c in offered):
            capabilities["prompts"] = {"listChanged": True}
        if any(isinstance(c.get("completions"), dict) for c in offered):
            capabilities["completions"] = {}
        notes = [(name, link.instructions) for name, link in links.items() if link.instructions]
        if len(self._ctx.config.servers) == 1 and len(notes) == 1:
            instructions = notes[0][1]
        else:
            instructions = "\n\n".join([INSTRUCTIONS if self._ctx.config.settings.gateway_tools else "", *(f"{name}: {text}" for name, text in notes)]).strip()
        answer: JSONObject = {
            "protocolVersion": session.protocol_version,
            "capabilities": capabilities,
            "serverInfo": server_info(),
        }
        if instructions:
            answer["instructions"] = instructions
        return answer

    # -- requests that name an item ------------------------------------------------

    def _forward(self, session: ClientSession, req: Request, request_bytes: int) -> None:
        """Resolve the item a request names to its server, check it, and forward it as a call."""
        ctx = self._ctx
        params = {k: v for k, v in req.params.items() if k != "_meta"}
        entry = self._entry(session, req, request_bytes)
        agent = self.agent(session, req)
        if isinstance(agent, Refusal):
            self.calls.refuse(session, req.id, entry, agent)
            return
        entry.agent = agent
        self.calls.limited(session, req.id, agent, entry, lambda: self._forward_limited(session, req, params, agent, entry))

    def _forward_limited(self, session: ClientSession, req: Request, params: JSONObject, agent: str, entry: AuditEntry) -> None:
        """Go on with a request that names an item once it passed its rate limits: resolve, check and forward it."""
        ctx = self._ctx
        target: tuple[str, str, JSONObject] | Refusal | _NotFound
        if session.mode == "rest":
            target = self._resolve_rest(session, req.method, params)
        else:
            view = self._known_view(session, agent)
            target = self._resolve(req.method, params, view)
            if isinstance(target, Refusal) and req.method == "tools/call" and isinstance(params.get("name"), str):
                # A quarantined tool by the name the agent saw: the call refuses it with TOOL_CHANGED.
                reserved = _GATEWAY_TOOL_NAMES if ctx.config.settings.gateway_tools else ()
                held = self.pins.resolve_held(session, agent, params["name"], view.tools, view.servers, reserved)
                target = target if held is None else (*held, {**params, "name": held[1]})
        if isinstance(target, _NotFound):
            # MCP's own code for an unknown resource (server/resources, "Error Handling").
            ctx.emit(SendToClient(client=session.id, request=req.id, message=error(
                req.id, RESOURCE_NOT_FOUND, "Resource not found", {"uri": target.uri[:1024]})))
            ctx.audit(entry, Decision.ERROR, error=ErrorCode.TOOL_NOT_FOUND)
            return
        if isinstance(target, Refusal):
            self.calls.refuse(session, req.id, entry, target)
            return
        server, item, forwarded = target
        entry.server, entry.tool = server, item
        decision = self._decide(req.method, params, agent, server, item)
        if not decision.allowed:
            self.calls.refuse(
                session, req.id, entry,
                Refusal(ErrorCode.DENIED_BY_POLICY, f"Access to {item!r} on server '{server}' is denied ({decision.rule})", decision.rule),
            )
            return
        if req.method == "tools/call" and not tool_granted(session.principal, server, item):
            # A delegated credential's own tool list: names outside it were never listed, nor may be called.
            assert session.principal is not None
            message = f"Access to tool '{item}' on server '{server}' is denied: credential {session.principal.id} may not call it ({CREDENTIAL_TOOLS})"
            self.calls.refuse(session, req.id, entry, Refusal(ErrorCode.DENIED_BY_POLICY, message, CREDENTIAL_TOOLS))
            return
        entry.rule = decision.rule
        if req.method == "resources/subscribe":
            ctx.subscriptions.setdefault((server, item), set()).add(session.id)
        elif req.method == "resources/unsubscribe":
            ctx.subscriptions.get((server, item), set()).discard(session.id)
        method: ForwardMethod = req.method  # type: ignore[assignment]  # one of the methods routed here
        timeout_ms = _rest_timeout(req) if session.mode == "rest" else None
        if isinstance(timeout_ms, Refusal):
            self.calls.refuse(session, req.id, entry, timeout_ms)
            return
        self.calls.start(session, req, agent, server, Forward(method, forwarded, item, timeout_ms), entry, decision.rule)

    def _entry(self, session: ClientSession, req: Request, request_bytes: int) -> AuditEntry:
        """The audit record of a request that names an item, as far as the request itself tells."""
        arguments = req.params.get("arguments")
        return AuditEntry(
            operation=req.method, request_bytes=request_bytes,
            arg_keys=tuple(sorted(arguments)) if isinstance(arguments, dict) else (),
            principal=None if session.principal is None else session.principal.id,
            transport="rest" if session.mode == "rest" else None,
        )

    def _resolve_rest(self, session: ClientSession, method: str, params: JSONObject) -> tuple[str, str, JSONObject] | Refusal:
        """A REST request names its server and the server's own item: checked as ``execute_tool`` checks.

        The policy decides on the name as given, whether or not the server
        has it (a denied name is denied, not unknown); an allowed name the
        server does not have is the server's to refuse, or the call's (a
        tool it never listed: ``TOOL_NOT_FOUND``).
        """
        key = "uri" if method == "resources/read" else "name"
        item = params.get(key)
        if not isinstance(item, str) or not item:
            return Refusal(ErrorCode.INVALID_PARAMS, f"{method} needs a string {key}", None)
        assert session.server is not None
        return session.server, item, params

    def _resolve(self, method: str, params: JSONObject, view: View) -> tuple[str, str, JSONObject] | Refusal | _NotFound:
        """The server, its own name or URI for the item, and the params it gets; or why there is none."""
        if method in ("tools/call", "prompts/get"):
            namer, what = (view.tools, "tool") if method == "tools/call" else (view.prompts, "prompt")
            name = params.get("name")
            found = namer.resolve(name) if isinstance(name, str) else None
            if found is None:
                return Refusal(ErrorCode.INVALID_PARAMS, f"Unknown {what}: {str(name)[:128]}", None)
            return found[0], found[1], {**params, "name": found[1]}
        if method == "completion/complete":
            ref = params.get("ref")
            if isinstance(ref, dict) and ref.get("type") == "ref/prompt" and isinstance(ref.get("name"), str):
                found = view.prompts.resolve(ref["name"])
                if found is not None:
                    return found[0], found[1], {**params, "ref": {**ref, "name": found[1]}}
            elif isinstance(ref, dict) and ref.get("type") == "ref/resource" and isinstance(ref.get("uri"), str):
                found = view.uris.resolve(ref["uri"]) if view.uris.servers else None
                if found is not None and found[0] in view.servers:
                    return found[0], found[1], {**params, "ref": {**ref, "uri": found[1]}}
            return Refusal(ErrorCode.INVALID_PARAMS, "Unknown completion reference", None)
        uri = params.get("uri")
        found = view.uris.resolve(uri) if isinstance(uri, str) and view.uris.servers else None
        if found is None or found[0] not in view.servers:
            return _NotFound(uri if isinstance(uri, str) else repr(uri))
        return found[0], found[1], {**params, "uri": found[1]}

    def _decide(self, method: str, params: JSONObject, agent: str, server: str, item: str) -> Any:
        policy = self._ctx.config.policy
        if method == "tools/call":
            return policy.decide(agent, server, item)
        if method == "prompts/get":
            return policy.decide_prompt(agent, server, item)
        if method == "completion/complete":
            ref = params.get("ref") or {}
            kind = ref.get("type") if isinstance(ref, dict) else None
            return policy.decide_prompt(agent, server, item) if kind == "ref/prompt" else policy.decide_resource(agent, server, item)
        return policy.decide_resource(agent, server, item)

    def _set_level(self, session: ClientSession, req: Request) -> None:
        """Keep the client's level for server log messages, and pass it on to every server that logs."""
        ctx = self._ctx
        level = req.params.get("level")
        if level not in LOG_LEVELS:
            ctx.reply_error(session.id, req.id, ErrorCode.INVALID_PARAMS, f"Invalid log level: {level!r}", parameter="level")
            return
        session.log_level = level
        ctx.reply(session.id, req.id, {})
        for link in list(ctx.links.values()):
            if link.state is State.READY and isinstance(link.capabilities.get("logging"), dict) and link.downstream is not None:
                self._internal(link, Internal.SET_LEVEL, {"level": level})

    # -- what servers say on their own ---------------------------------------------

    def log_message(self, link: Link, note: Notification, wire_id: int | None = None) -> None:
        """A server's log message: to the client of the call it is about, else to every client that asked for its level.

        The call is known when the message came on its response stream
        (``wire_id``), or when it is the only call in flight on the link; it
        goes to that call's client, on that call's stream, unless the client
        asked for a higher level. Otherwise every aggregate client whose
        ``logging/setLevel`` admits the level gets it (a per-client link's
        own client also when it set none).
        """
        level = note.params.get("level")
        if level not in LOG_LEVELS:
            return
        rank = LOG_LEVELS.index(level)
        call = link.pending.get(wire_id) if wire_id is not None else None
        if call is None and len(link.pending) == 1:
            [call] = link.pending.values()
        message = notification(note.method, note.params)
        if call is not None:
            session = self._ctx.clients.get(call.client)
            if session is not None and session.mode == "aggregate" and (
                session.log_level is None or rank >= LOG_LEVELS.index(session.log_level)
            ):
                self._ctx.emit(SendToClient(client=session.id, message=message, request=call.request_id))
            return
        for session in self.sessions(link):
            wanted = session.log_level
            if (wanted is not None and rank >= LOG_LEVELS.index(wanted)) or (wanted is None and link.client == session.id):
                self._ctx.emit(SendToClient(client=session.id, message=message))

    def notification(self, link: Link, note: Notification) -> None:
        """Any other notification of a server: resource updates go to their subscribers."""
        if note.method != "notifications/resources/updated":
            return
        uri = note.params.get("uri")
        if not isinstance(uri, str):
            return
        ctx = self._ctx
        for client in sorted(ctx.subscriptions.get((link.name, uri), ()), key=str):
            session = ctx.clients.get(client)
            if session is None or session.mode != "aggregate" or session.agent is None:
                continue
            view = self._known_view(session, session.agent)
            if link.name not in view.servers or not any(r["uri"] == view.uris.public(link.name, uri) for r in view.lists["resources"]):
                continue  # no longer a resource this client may read
            public = view.uris.public(link.name, uri)
            ctx.emit(SendToClient(client=client, message=notification(note.method, {**note.params, "uri": public})))

    def restarted(self, link: Link, tools: list[JSONObject], catalog: dict[Internal, list[JSONObject]]) -> None:
        """A server's new connection is ready: renew what clients asked of the old one, and tell who sees a change."""
        ctx = self._ctx
        assert link.downstream is not None
        for (server, uri), subscribers in sorted(ctx.subscriptions.items()):
            if server == link.name and subscribers and (link.client is None or link.client in subscribers):
                self._internal(link, Internal.SUBSCRIBE, {"uri": uri})
        levels = [s.log_level for s in self.sessions(link) if s.log_level is not None]
        if levels and isinstance(link.capabilities.get("logging"), dict):
            self._internal(link, Internal.SET_LEVEL, {"level": min(levels, key=LOG_LEVELS.index)})
        told: dict[tuple[ClientId, str], None] = {}
        for kind in (Internal.TOOLS_LIST, Internal.RESOURCES_LIST, Internal.TEMPLATES_LIST, Internal.PROMPTS_LIST):
            old = tools if kind is Internal.TOOLS_LIST else catalog.get(kind, [])
            for client in self._changed_for(link, kind, old):
                told[(client, _CHANGED[kind])] = None  # resources and templates: one notification
        for client, method in told:
            ctx.emit(SendToClient(client=client, message=notification(method)))

    def _internal(self, link: Link, kind: Internal, params: JSONObject) -> None:
        """A request of the gateway's own whose answer nobody waits for."""
        if link.stateless:
            return  # logging/setLevel and resources/subscribe are not in the stateless era (see _downstream_era)
        assert link.downstream is not None
        wire_id = link.take_wire_id()
        link.internal[wire_id] = kind
        self._ctx.emit(SendToDownstream(downstream=link.downstream, message=request(wire_id, kind.value, params)))

    def catalog_changed(self, link: Link, kind: Internal, old: list[JSONObject]) -> None:
        """A server's list changed from ``old``: tell each aggregate client whose filtered view of it changed."""
        for client in self._changed_for(link, kind, old):
            self._ctx.emit(SendToClient(client=client, message=notification(_CHANGED[kind])))

    def _changed_for(self, link: Link, kind: Internal, old: list[JSONObject]) -> list[ClientId]:
        """The aggregate sessions whose view of one of ``link``'s lists differs from what it was with ``old``."""
        new = link.tools or [] if kind is Internal.TOOLS_LIST else link.catalog.get(kind, [])
        changed: list[ClientId] = []
        for session in self.sessions(link):
            agent = session.agent
            if agent is None or link.name not in self.agent_servers(agent):
                continue
            if self._visible(session, agent, link.name, kind, old) != self._visible(session, agent, link.name, kind, new):
                changed.append(session.id)
        return changed

    def _visible(self, session: ClientSession, agent: str, server: str, kind: Internal, items: list[JSONObject]) -> list[JSONObject]:
        """The items of one of ``server``'s lists that ``agent`` may see, as the server defines them."""
        policy = self._ctx.config.policy
        if kind is Internal.TOOLS_LIST:
            return [
                t for t in items
                if policy.decide(agent, server, t["name"]).allowed and tool_granted(session.principal, server, t["name"])
            ]
        if kind is Internal.PROMPTS_LIST:
            return [p for p in items if policy.decide_prompt(agent, server, p["name"]).allowed]
        key = "uri" if kind is Internal.RESOURCES_LIST else "uriTemplate"
        return [r for r in items if policy.decide_resource(agent, server, r[key]).allowed]

    def sessions(self, link: Link | None = None) -> list[ClientSession]:
        """The aggregate sessions past their handshake that a message of ``link`` may concern.

        Its own client for a per-client link; every one without a link. A
        session still waiting for its ``initialize`` answer hears nothing
        before it, nor a restored one still waiting for its servers (their
        first catalogues here are no change to what it listed elsewhere).
        """
        return [
            session for session in self._ctx.clients.values()
            if session.mode == "aggregate" and session.state is SessionState.READY and not session.warming
            and (link is None or link.client is None or link.client == session.id)
        ]

    def fingerprints(self) -> dict[ClientId, dict[str, str]]:
        """What each aggregate session's lists look like now, to tell after a reload whose changed."""
        out: dict[ClientId, dict[str, str]] = {}
        for session in self.sessions():
            agent = self.agent(session, None)  # its own agent, as its requests without _meta would
            if isinstance(agent, str):
                out[session.id] = dict(self._known_view(session, agent).fingerprints)
        return out

    def reloaded(self, before: dict[ClientId, dict[str, str]]) -> None:
        """A reload happened: tell each aggregate session whose lists it changed (new rules, servers gone or new)."""
        self._forget()
        after = self.fingerprints()
        for client, old in before.items():
            new = after.get(client, {})
            # Templates are told of as resources are: one notification for both.
            changed = dict.fromkeys(method for key, method in _CHANGED_LISTS.items() if old.get(key) != new.get(key))
            for method in changed:
                self._ctx.emit(SendToClient(client=client, message=notification(method)))


def _rest_timeout(req: Request) -> int | None | Refusal:
    """A REST call's own ``timeout_ms`` (``_meta.timeout_ms``), if it gives a valid one."""
    meta = req.params.get("_meta")
    value = meta.get("timeout_ms") if isinstance(meta, dict) else None
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        return Refusal(ErrorCode.INVALID_PARAMS, "timeout_ms must be a positive integer", None)
    return value
