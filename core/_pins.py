"""Tool-definition pinning: a server's tools are served only as the operator first saw them.

Theory of operation
-------------------
A server can change a tool's description or schema under an agent that
already trusted it (the "rug pull"). The gateway keeps, per server, a *pin*
of each tool it has seen: a SHA-256 digest of the tool's ``name``,
``description``, ``inputSchema``, ``outputSchema`` and ``annotations`` in
canonical JSON (:func:`tool_digest`), and that definition, so a later change
can be shown as a diff.

Every tool list a server sends (its handshake, a restart, a reconnect,
``notifications/tools/list_changed``) goes through :meth:`Pins.listed`
before the link caches it:

===========================  ==============================================
the tool                     becomes
===========================  ==============================================
pinned, same digest          served
pinned, another digest       *quarantined*: not served, with the fields
                             that changed
not pinned (``new-ok``)      pinned (:class:`~lockgate.core.SavePins`), served
not pinned (``strict``)      quarantined as new
anything, store unreadable   quarantined: it cannot be compared
===========================  ==============================================

A quarantined tool is absent from what the link serves (``link.tools``), so
``get_server_tools``, aggregate ``tools/list`` and search never show it;
the link keeps the whole list in ``link.listed``. A call to it
(``execute_tool``, aggregate or REST ``tools/call``) is refused with
``TOOL_CHANGED`` (:func:`tool_changed_error`), naming what changed. Each new
quarantine is an audit record, a log line and a metric. A removed tool just
disappears; its pin stays, so it comes back as it was.

An operator accepts a quarantined tool (:class:`~lockgate.core.PinAccepted`,
from the REST admin endpoint; ``lockgate pin accept`` changes the store and
the shell hands it in again with :class:`~lockgate.core.PinsLoaded`): it is
pinned as it is now, served again, and the aggregate clients whose list
changed are told.

The store is the shell's (a database table, or ``.mcp-gateway-pins.json``).
It arrives as :class:`~lockgate.core.PinsLoaded`, before the servers start
and again whenever it changes; each server's record leaves as
:class:`~lockgate.core.SavePins` whenever it changes. Until the first
``PinsLoaded`` nothing is pinned (an embedding or a test that never hands a
store in gets the gateway as it was without pinning). Fail closed: a store
that could not be read, or a server record that makes no sense, quarantines
every tool it covers, and nothing is written over it.

Mode, per server (``"pins"`` in its entry) or for all (``GATEWAY_PINS``):
``new-ok`` (the default), ``strict`` or ``off`` (no pinning at all).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ._actions import Audit, SavePins
from ._authorize import tool_granted
from ._config import PinMode
from ._errors import ErrorCode
from ._jsonrpc import RequestId, error
from ._link import Internal, Link, State
from ._metrics import Extra
from ._names import Namer

if TYPE_CHECKING:
    from ._context import Context
    from ._events import PinAccepted, PinsLoaded
    from ._session import ClientSession
    from ._surface import Surface

__all__ = [
    "PIN_MODES",
    "PINNED_FIELDS",
    "Held",
    "Pin",
    "PinMode",
    "PinState",
    "Pins",
    "changed_fields",
    "pinned_definition",
    "tool_changed_error",
    "tool_digest",
]

JSONObject = dict[str, Any]

PIN_MODES: tuple[PinMode, ...] = ("strict", "new-ok", "off")

#: What a pin covers: what an agent reads of a tool and what decides its calls.
PINNED_FIELDS = ("name", "description", "inputSchema", "outputSchema", "annotations")

#: ``changed`` of a tool held back because it is new (``strict``).
NEW = "new"


def pinned_definition(tool: Mapping[str, Any]) -> JSONObject:
    """The part of a tool definition a pin covers (absent fields stay absent)."""
    return {key: tool[key] for key in PINNED_FIELDS if key in tool}


def tool_digest(tool: Mapping[str, Any]) -> str:
    """``sha256:`` and the hex digest of the pinned fields as canonical JSON (sorted keys, no spaces, UTF-8)."""
    canonical = json.dumps(pinned_definition(tool), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


def changed_fields(old: Mapping[str, Any], new: Mapping[str, Any]) -> tuple[str, ...]:
    """The pinned fields that differ between two definitions, in :data:`PINNED_FIELDS` order."""
    return tuple(key for key in PINNED_FIELDS if old.get(key, _ABSENT) != new.get(key, _ABSENT))


_ABSENT = object()


@dataclass(frozen=True, slots=True, kw_only=True)
class Pin:
    """A tool as the operator accepted it: its digest and definition."""

    digest: str
    definition: JSONObject


@dataclass(frozen=True, slots=True, kw_only=True)
class Held:
    """A quarantined tool: what it is now, which pinned fields changed, and why it is held."""

    digest: str
    definition: JSONObject
    #: The fields that differ from the pin; ``("new",)`` for a new tool under ``strict``;
    #: empty when it could not be compared at all (``reason`` says why).
    changed: tuple[str, ...]
    reason: str

    def what(self) -> str:
        """The change in a few words, for messages: ``"description, inputSchema"``."""
        return ", ".join(self.changed) if self.changed else "cannot be compared"


@dataclass(slots=True)
class PinState:
    """What the gateway knows of pins: kept in :class:`~lockgate.core._context.Context` and read by the parts."""

    #: A store was handed in (:class:`~lockgate.core.PinsLoaded`): pinning is on.
    loaded: bool = False
    #: Why the store could not be read; every tool is then held.
    unreadable: str | None = None
    pinned: dict[str, dict[str, Pin]] = field(default_factory=dict)
    held: dict[str, dict[str, Held]] = field(default_factory=dict)
    #: Servers whose stored record could not be understood, and why.
    broken: dict[str, str] = field(default_factory=dict)
    #: What the store holds for each server, as last loaded or saved (not written again).
    stored: dict[str, JSONObject] = field(default_factory=dict)
    #: Tools quarantined since start-up, by server (a counter).
    changes: dict[str, int] = field(default_factory=dict)

    def held_tool(self, server: str, tool: str) -> Held | None:
        """The quarantine of ``tool`` on ``server``, or ``None`` when it is not held."""
        return self.held.get(server, {}).get(tool)

    def record(self, server: str) -> JSONObject:
        """The store's record of ``server``: its pins, and its quarantined tools (for ``lockgate pin list`` and ``diff``)."""
        record: JSONObject = {
            "tools": {
                name: {"digest": pin.digest, "definition": pin.definition}
                for name, pin in sorted(self.pinned.get(server, {}).items())
            },
        }
        held = self.held.get(server)
        if held:
            record["quarantined"] = {
                name: {"digest": h.digest, "definition": h.definition, "changed": list(h.changed), "reason": h.reason}
                for name, h in sorted(held.items())
            }
        return record

    def view(self) -> JSONObject:
        """Every server's pinned and quarantined tools, for the REST admin view and ``get_gateway_status``."""
        servers = sorted(set(self.pinned) | set(self.held))
        return {
            "enabled": self.loaded,
            "unreadable": self.unreadable,
            "servers": {
                server: {
                    "pinned": sorted(self.pinned.get(server, {})),
                    "quarantined": {
                        name: {"changed": list(h.changed), "reason": h.reason}
                        for name, h in sorted(self.held.get(server, {}).items())
                    },
                }
                for server in servers
            },
        }

    def metrics(self, servers: Iterable[str]) -> Extra:
        """``lockgate_tools_quarantined`` and ``lockgate_tool_changes_total``, by configured server (bounded labels)."""
        names = sorted(servers)
        return {
            "tools_quarantined": (
                "gauge", "Tools held back because their definition changed since it was pinned (or is new, or cannot be compared).",
                {(("server", s),): len(self.held.get(s, {})) for s in names},
            ),
            "tool_changes_total": (
                "counter", "Tool definitions quarantined since start-up.",
                {(("server", s),): self.changes.get(s, 0) for s in names},
            ),
        }


def tool_changed_error(request_id: RequestId | None, server: str, tool: str, held: Held) -> JSONObject:
    """The ``TOOL_CHANGED`` error of a call to a quarantined tool: the server, the tool and what changed."""
    if held.changed == (NEW,):
        message = f"Tool '{tool}' on server '{server}' is new and not pinned yet"
    elif held.changed:
        message = f"Tool '{tool}' on server '{server}' changed since it was pinned ({held.what()})"
    else:
        message = f"Tool '{tool}' on server '{server}' cannot be compared with its pin ({held.reason})"
    message += f"; an operator must accept it (lockgate pin accept {server} {tool})"
    data = {"code": ErrorCode.TOOL_CHANGED.name, "server": server, "tool": tool, "changed": list(held.changed), "reason": held.reason}
    return error(request_id, ErrorCode.TOOL_CHANGED, message, data)


class Pins:
    """Comparing listed tools with their pins, quarantine and acceptance (see the module docstring)."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self.surface: Surface

    @property
    def state(self) -> PinState:
        return self._ctx.pins

    def mode(self, server: str, link: Link | None = None) -> PinMode:
        """The pinning mode of ``server``: its own ``pins`` key, else ``GATEWAY_PINS``."""
        spec = self._ctx.config.servers.get(server) or (link.entry if link is not None else None)
        own = spec.pins if spec is not None else None
        return own or self._ctx.config.settings.pins

    # -- a server listed its tools -----------------------------------------------------

    def listed(self, link: Link, tools: list[JSONObject]) -> list[JSONObject]:
        """A tool list arrived on ``link``: keep it whole, and return what the link may serve."""
        link.listed = tools
        if not self.state.loaded or self.mode(link.name, link) == "off":
            return tools  # no pinning: nothing to compare, nothing to save
        before = self.state.record(link.name)
        served = self._compare(link, tools)
        self._save_if_changed(link.name, before)
        return served

    def _compare(self, link: Link, tools: list[JSONObject]) -> list[JSONObject]:
        """What of ``tools`` is served; pins new ones and holds changed ones on the way."""
        state, server = self.state, link.name
        mode = self.mode(server, link)
        if not state.loaded or mode == "off":
            return tools
        pinned = state.pinned.setdefault(server, {})
        held = state.held.setdefault(server, {})
        unreadable = state.unreadable if state.unreadable is not None else state.broken.get(server)
        counts: dict[str, int] = {}
        for tool in tools:
            counts[tool["name"]] = counts.get(tool["name"], 0) + 1
        served: list[JSONObject] = []
        for tool in tools:
            name = tool["name"]
            digest, definition = tool_digest(tool), pinned_definition(tool)
            pin = pinned.get(name)
            if unreadable is not None and (pin is None or pin.digest != digest):  # unless accepted since
                self._hold(link, name, Held(digest=digest, definition=definition, changed=(), reason=unreadable))
            elif not name or counts[name] > 1:
                reason = "listed without a name" if not name else "listed more than once"
                self._hold(link, name, Held(digest=digest, definition=definition, changed=(), reason=reason))
            elif pin is None and mode == "strict":
                self._hold(link, name, Held(digest=digest, definition=definition, changed=(NEW,), reason="new tool (strict pinning)"))
            elif pin is None:
                pinned[name] = Pin(digest=digest, definition=definition)
                held.pop(name, None)
                served.append(tool)
            elif pin.digest == digest:
                held.pop(name, None)  # it changed back
                served.append(tool)
            else:
                changed = changed_fields(pin.definition, definition) or ("definition",)
                self._hold(link, name, Held(digest=digest, definition=definition, changed=changed, reason="changed since pinned"))
        for name in [name for name in held if name not in counts]:
            del held[name]  # gone from the list: nothing left to hold back
        return served

    def _hold(self, link: Link, name: str, new: Held) -> None:
        """Quarantine ``name`` on ``link``'s server; a new quarantine is logged, audited and counted."""
        ctx, server = self._ctx, link.name
        held = self.state.held.setdefault(server, {})
        if held.get(name) == new:
            return  # the same change, seen again (a restart, another instance)
        held[name] = new
        self.state.changes[server] = self.state.changes.get(server, 0) + 1
        ctx.log("warning", "tool quarantined", server=server, tool=name, changed=new.what(), reason=new.reason)
        ctx.emit(Audit(record={
            "agent": None, "operation": "tool_quarantined", "server": server, "tool": name,
            "decision": "DENY", "rule": "pins", "latency_ms": 0.0, "error_code": ErrorCode.TOOL_CHANGED.name,
            "changed": list(new.changed), "reason": new.reason, "digest": new.digest,
        }))

    def _save_if_changed(self, server: str, before: JSONObject) -> None:
        """Hand the shell ``server``'s record when it differs from before and from what the store holds."""
        state = self.state
        if not state.loaded or state.unreadable is not None or server in state.broken:
            return  # nothing is written over a store (or a record) that could not be read
        after = state.record(server)
        if after != before and after != state.stored.get(server):
            state.stored[server] = after
            self._ctx.emit(SavePins(server=server, record=after))

    def _refresh(self, server: str) -> None:
        """Compare every link of ``server`` again (pins changed); tell clients whose list changed."""
        ctx = self._ctx
        pool = ctx.pools.get(server)
        for link in pool.links() if pool is not None else ():
            if link.listed is None:
                continue
            old = link.tools or []
            served = self._compare(link, link.listed)
            if served != old:
                link.set_tools(served)
                ctx.catalog_epoch += 1
                if link.state is State.READY:
                    self.surface.catalog_changed(link, Internal.TOOLS_LIST, old)

    # -- the store and the operator --------------------------------------------------

    def loaded(self, event: PinsLoaded) -> None:
        """The shell read the store (at start-up, or again after it changed)."""
        ctx, state = self._ctx, self.state
        before = {server: state.record(server) for server in ctx.pools}
        first = not state.loaded
        state.loaded = True
        if event.unreadable is not None:
            if state.unreadable != event.unreadable:
                ctx.log("error", "the pin store could not be read: every tool is quarantined until it can",
                        reason=event.unreadable)
            state.unreadable = f"the pin store could not be read: {event.unreadable}"
        else:
            state.unreadable = None
            for server, raw in event.pins.items():
                parsed = _parse_record(raw)
                if isinstance(parsed, str):
                    if state.broken.get(server) is None:
                        ctx.log("error", "pins of a server could not be read: its tools are quarantined",
                                server=server, reason=parsed)
                    state.broken[server] = f"its pins could not be read: {parsed}"
                    continue
                state.broken.pop(server, None)
                state.stored[server] = raw
                # What the store says of a tool wins; tools it does not name keep
                # the pins made here since (a save may not have landed yet).
                state.pinned.setdefault(server, {}).update(parsed)
        if first and not ctx.pools:
            return
        for server in ctx.pools:
            self._refresh(server)
            self._save_if_changed(server, before[server])

    def accepted(self, event: PinAccepted) -> None:
        """An operator accepted ``event.tool`` of ``event.server`` as it is now (``None``: every held tool)."""
        ctx, state, server = self._ctx, self.state, event.server
        before = state.record(server)
        held = state.held.get(server, {})
        names = [event.tool] if event.tool is not None else sorted(held)
        accepted = [name for name in names if name in held]
        if not accepted:
            ctx.log("info", "nothing to accept: no such quarantined tool", server=server, tool=event.tool)
            return
        pinned = state.pinned.setdefault(server, {})
        for name in accepted:
            h = held.pop(name)
            pinned[name] = Pin(digest=h.digest, definition=h.definition)
            ctx.log("notice", "tool accepted", server=server, tool=name, digest=h.digest)
            ctx.emit(Audit(record={
                "agent": None, "operation": "tool_accepted", "server": server, "tool": name,
                "decision": "ALLOW", "rule": "pins", "latency_ms": 0.0, "error_code": None,
                "changed": list(h.changed), "digest": h.digest,
            }))
        if server in state.broken:
            # The operator decided for what could not be read: pins from here on.
            del state.broken[server]
        if state.unreadable is not None:
            ctx.log("warning", "accepted for this run only: the pin store could not be read, so nothing is saved", server=server)
        self._refresh(server)
        self._save_if_changed(server, before)

    # -- aggregate mode: a call by a name the agent saw before the quarantine -------------

    def resolve_held(
        self, session: ClientSession, agent: str, name: str, tools: Namer, servers: Iterable[str],
        reserved: Iterable[str] = (),
    ) -> tuple[str, str] | None:
        """The ``(server, tool)`` a public name would be for a held tool the agent may see, or ``None``.

        The names are made as the aggregate list made them, with the held
        tools in it (their names, as the agent saw them before the quarantine).
        """
        state, ctx = self.state, self._ctx
        policy = ctx.config.policy
        items: dict[str, list[str]] = {server: [] for server in servers}
        for public in tools.names.values():
            if public[0] in items:
                items[public[0]].append(public[1])
        found = False
        for server in items:
            for tool in state.held.get(server, {}):
                if policy.decide(agent, server, tool).allowed and tool_granted(session.principal, server, tool):
                    items[server].append(tool)
                    found = True
        if not found:
            return None
        namer = Namer.build(items, separator=tools.separator, prefix="always" if tools.prefixed else "never",
                            reserved=reserved)
        resolved = namer.resolve(name)
        if resolved is None or state.held_tool(*resolved) is None:
            return None
        return resolved


def _parse_record(raw: object) -> dict[str, Pin] | str:
    """The pins of one server's stored record, or what is wrong with it."""
    if not isinstance(raw, dict) or not isinstance(raw.get("tools"), dict):
        return "not an object with 'tools'"
    pins: dict[str, Pin] = {}
    for name, item in raw["tools"].items():
        if not isinstance(item, dict) or not isinstance(item.get("digest"), str) or not isinstance(item.get("definition"), dict):
            return f"tool {name[:64]!r} has no digest and definition"
        definition = item["definition"]
        if tool_digest(definition) != item["digest"]:
            return f"tool {name[:64]!r}: its digest does not match its definition"
        pins[name] = Pin(digest=item["digest"], definition=pinned_definition(definition))
    return pins
