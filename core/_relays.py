"""Requests servers send clients, relayed in aggregate mode: sampling, elicitation, roots.

Theory of operation
-------------------
In aggregate mode the gateway tells each server it starts that its clients
may be asked (:data:`CLIENT_CAPABILITIES`). A server's
``sampling/createMessage``, ``elicitation/create`` or ``roots/list``
(handshake era) then goes to the client whose call caused it, under an id of
the gateway's (``lockgate-<n>``), when that client declared the capability
(an ``elicitation`` capability without ``url`` offers form mode only);
otherwise the server gets -32601. The client's answer goes back under the
server's own id (:class:`Relayed`).

Whose request it is: over Streamable HTTP it comes on the response stream of
the call it is about, which the shell reports. Otherwise a per-client link
belongs to one client; on a shared link the client is the one whose calls
are in flight there (with none, the only aggregate client there is), and
when several clients' calls are, the server gets an error saying to give it
``isolation: per_client``.

A client that answers an id it was never sent, or twice, is ignored; a
client that goes away leaves each of its open relays answered with an
error; a server that withdraws a request (``notifications/cancelled``) has
the client told under the gateway's id; a URL-mode elicitation's
``notifications/elicitation/complete`` reaches the client it was relayed to.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ._actions import SendToClient, SendToDownstream
from ._audit import Decision
from ._call import Call, CallState
from ._context import Context, error_response
from ._errors import ErrorCode
from ._jsonrpc import Notification, Request, Response, error, error_with, notification, request, result
from ._link import Link, State
from ._session import ClientSession

if TYPE_CHECKING:
    from ._bridge import Bridge
    from ._calls import Calls
    from ._surface import Surface

__all__ = ["CLIENT_CAPABILITIES", "Relayed", "Relays"]

JSONObject = dict[str, Any]

#: What the gateway offers a server, on behalf of its clients, in aggregate mode.
CLIENT_CAPABILITIES: JSONObject = {"sampling": {}, "elicitation": {"form": {}, "url": {}}, "roots": {"listChanged": True}}

#: The client capability each server-to-client request needs (MCP 2025-11-25, client features).
_NEEDS = {"sampling/createMessage": "sampling", "elicitation/create": "elicitation", "roots/list": "roots"}


@dataclass(frozen=True, slots=True)
class Relayed:
    """A server's request forwarded to a client: where its answer goes back, under which id.

    ``gather`` instead, for what a stateless server asked in an
    ``input_required`` answer: the answer joins the call's retry.
    """

    downstream: int
    wire_id: Any
    gather: Gathering | None = None


@dataclass(slots=True, eq=False)
class Gathering:
    """A stateless server's questions to a handshake-era client, answered one by one, then sent back as the call's retry."""

    call: Call
    #: The server's ``requestState``, echoed unchanged (absent: the server gave none).
    state: Any
    #: The server's key of each question, by the relay id the client answers.
    keys: dict[str, str] = field(default_factory=dict)
    answers: dict[str, Any] = field(default_factory=dict)


class Relays:
    """Servers' requests to clients and what follows them (see the module docstring)."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self.surface: Surface
        self.bridge: Bridge
        self.calls: Calls

    def server_request(self, link: Link, msg: Request, wire_id: int | None = None) -> None:
        """A server asks a client something: relay it to the client whose call caused it, or refuse.

        ``wire_id`` is the call it came with (on that call's response stream), when the transport says.
        """
        ctx = self._ctx
        assert link.downstream is not None
        waiting = self._parked_call(link, wire_id)
        if waiting is not None:
            self.bridge.ask(waiting, link, msg)  # a stateless client's call, waiting for its retry
            return
        session, related = self._origin(link, wire_id)
        if session is None:
            reason = (
                "no client call is in flight on this server"
                if related is None
                else "calls of several clients are in flight on this shared server; give it isolation: per_client"
            )
            ctx.emit(SendToDownstream(downstream=link.downstream, message=error(
                msg.id, int(ErrorCode.INTERNAL_ERROR), f"The gateway cannot tell which client {msg.method} is for: {reason}")))
            return
        needed = _NEEDS.get(msg.method)
        declared = session.capabilities.get(needed) if needed is not None else None
        url_mode = msg.method == "elicitation/create" and msg.params.get("mode") == "url"
        # An elicitation capability without "url" offers form mode only (MCP 2025-11-25, client/elicitation).
        if not isinstance(declared, dict) or (url_mode and not isinstance(declared.get("url"), dict)):
            what = f"{msg.method} in URL mode" if url_mode else msg.method
            ctx.emit(SendToDownstream(downstream=link.downstream, message=error(
                msg.id, int(ErrorCode.METHOD_NOT_FOUND), f"Method not found: the client does not support {what}")))
            return
        call = session.calls.get(related) if related is not None else None
        if session.era == "stateless":
            # It cannot be asked: its call is answered input_required, and its retry carries the answer.
            if call is None:
                ctx.emit(SendToDownstream(downstream=link.downstream, message=error(
                    msg.id, int(ErrorCode.INTERNAL_ERROR), f"The gateway cannot tell which call {msg.method} is for")))
            else:
                self.bridge.ask(call, link, msg)
            return
        elicitation = msg.params.get("elicitationId")
        if url_mode and isinstance(elicitation, str):
            # Its completion is announced later, by notification: it goes to this client.
            ctx.elicitations[(link.name, elicitation)] = session.id
        session.next_relay += 1
        relay_id = f"lockgate-{session.next_relay}"
        session.relayed[relay_id] = Relayed(link.downstream, msg.id)
        ctx.emit(SendToClient(client=session.id, message=request(relay_id, msg.method, msg.params), request=related))

    def _parked_call(self, link: Link, wire_id: int | None) -> Call | None:
        """The parked call (:mod:`._bridge`) a server's request on ``link`` is about, if it is about one."""
        call = link.pending.get(wire_id) if wire_id is not None else None
        if call is None and wire_id is None and len(link.pending) == 1:
            [call] = link.pending.values()
        return call if call is not None and self.bridge.parked(call) else None

    def _origin(self, link: Link, wire_id: int | None) -> tuple[ClientSession | None, Any]:
        """The session a server's request on ``link`` is for, and the client request it relates to.

        ``(None, None)`` when no call is in flight there, ``(None, <anything>)``
        when calls of several clients are (see the module docstring).
        """
        call = link.pending.get(wire_id) if wire_id is not None else None
        if call is not None:
            return self._ctx.clients.get(call.client), call.request_id
        # A parked call (its client's request answered input_required) is not the one asking now.
        calls = [call for call in link.pending.values() if not self.bridge.parked(call)]
        clients = {call.client for call in calls} | ({link.client} if link.client is not None else set())
        if not clients:
            # No call to say whose (a server asking for roots as it starts, say): the one client there is, if so.
            sessions = self.surface.sessions(link)
            clients = {sessions[0].id} if len(sessions) == 1 else set()
        if len(clients) != 1:
            return None, (None if not clients else "several")
        [client] = clients
        session = self._ctx.clients.get(client)
        related = next((call.request_id for call in calls if call.client == client), None)
        return session, related

    def ask_client(self, session: ClientSession, call: Call, link: Link, answer: JSONObject) -> bool:
        """A stateless server answered a handshake-era client's call ``input_required``: ask the client each question.

        Each of ``inputRequests`` goes to the client as the request it names
        (under an id of the gateway's, on the call's stream); once all are
        answered, the call is sent again with them (:meth:`~._calls.Calls.resend`).
        False (the answer is passed on as it is) when it asks nothing. A
        question the client did not declare the capability for ends the
        call with -32021: the gateway told the server what the client can
        answer, so the server asked out of turn.
        """
        ctx = self._ctx
        asked = answer.get("inputRequests")
        if not isinstance(asked, dict) or not asked:
            return False
        for question in asked.values():
            method = question.get("method") if isinstance(question, dict) else None
            needed = _NEEDS.get(method) if isinstance(method, str) else None
            if needed is None or not isinstance(session.capabilities.get(needed), dict):
                what = method if isinstance(method, str) else "something"
                self.calls.finish(call, error_response(
                    call.request_id, ErrorCode.MISSING_CLIENT_CAPABILITY,
                    f"Server '{call.server}' asks the client for {what[:64]}, which the client did not declare",
                    server=call.server,
                ), Decision.ERROR, error=ErrorCode.MISSING_CLIENT_CAPABILITY)
                return True
        assert link.downstream is not None
        gathering = Gathering(call=call, state=answer.get("requestState"))
        for key, question in asked.items():
            session.next_relay += 1
            relay_id = f"lockgate-{session.next_relay}"
            gathering.keys[relay_id] = key
            session.relayed[relay_id] = Relayed(link.downstream, None, gathering)
            message = request(relay_id, question["method"], question.get("params") if isinstance(question.get("params"), dict) else {})
            ctx.emit(SendToClient(client=session.id, message=message, request=call.request_id))
        return True

    def _gathered(self, gathering: Gathering, relay_id: str, msg: Response) -> None:
        """One answer to a stateless server's question: kept, and with the last one the call is sent again."""
        call = gathering.call
        if call.state is CallState.FINISHED:
            return  # ended meanwhile (timed out, cancelled): nobody waits for the answers
        raw = msg.raw
        if "error" in raw:
            # The client could not answer: the call ends with what it said.
            self.calls.finish(call, error_with(call.request_id, raw["error"]), Decision.ERROR, error="DOWNSTREAM_ERROR")
            return
        value = raw.get("result")
        gathering.answers[gathering.keys[relay_id]] = value if isinstance(value, dict) else {}
        if len(gathering.answers) == len(gathering.keys):
            inputs: JSONObject = {"inputResponses": gathering.answers}
            if gathering.state is not None:
                inputs["requestState"] = gathering.state
            self.calls.resend(call, inputs)

    def client_answer(self, session: ClientSession, msg: Response) -> bool:
        """A client answered a relayed request: back to its server under the server's id; False if none was open."""
        ctx = self._ctx
        relayed = session.relayed.pop(msg.id, None) if isinstance(msg.id, str) else None
        if relayed is None:
            return False
        if relayed.gather is not None:
            assert isinstance(msg.id, str)
            self._gathered(relayed.gather, msg.id, msg)
            return True
        if relayed.downstream not in ctx.links:
            return True  # the server's connection is gone: nobody waits
        raw = msg.raw
        value = raw.get("result")
        answer = error_with(relayed.wire_id, raw["error"]) if "error" in raw else result(relayed.wire_id, value if isinstance(value, dict) else {})
        ctx.emit(SendToDownstream(downstream=relayed.downstream, message=answer))
        return True

    def notification(self, link: Link, note: Notification) -> None:
        """A server withdrew a relayed request, or says a URL-mode elicitation is complete: its client hears it."""
        ctx = self._ctx
        if note.method == "notifications/elicitation/complete":
            elicitation = note.params.get("elicitationId")
            client = ctx.elicitations.pop((link.name, elicitation), None) if isinstance(elicitation, str) else None
            if client is not None and client in ctx.clients:
                ctx.emit(SendToClient(client=client, message=notification(note.method, note.params)))
            return
        wire_id = note.params.get("requestId")
        for session in ctx.clients.values():
            for relay_id, relayed in list(session.relayed.items()):
                if relayed.downstream == link.downstream and relayed.wire_id == wire_id:
                    del session.relayed[relay_id]
                    params = {**note.params, "requestId": relay_id}
                    ctx.emit(SendToClient(client=session.id, message=notification("notifications/cancelled", params)))
                    return

    def roots_changed(self, session: ClientSession) -> None:
        """The client's roots changed: tell the servers that are its own (per-client), which may ask again."""
        for pool in self._ctx.pools.values():
            link = pool.clients.get(session.id)
            if link is not None and link.state is State.READY and link.downstream is not None:
                self._ctx.emit(SendToDownstream(downstream=link.downstream, message=notification("notifications/roots/list_changed")))

    def link_gone(self, downstream: int) -> None:
        """A server connection ended: its relayed requests can no longer be answered."""
        for session in self._ctx.clients.values():
            for relay_id in [r for r, relayed in session.relayed.items() if relayed.downstream == downstream]:
                del session.relayed[relay_id]

    def drop(self, session: ClientSession) -> None:
        """A client went away: each request it was asked is answered with an error, and its elicitations forgotten."""
        ctx = self._ctx
        for key in [key for key, client in ctx.elicitations.items() if client == session.id]:
            del ctx.elicitations[key]
        for relayed in session.relayed.values():
            if relayed.gather is None and relayed.downstream in ctx.links:
                message = error(relayed.wire_id, int(ErrorCode.INTERNAL_ERROR), "The client went away before answering")
                ctx.emit(SendToDownstream(downstream=relayed.downstream, message=message))
        session.relayed.clear()
