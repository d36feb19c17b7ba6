"""HTTP downstreams: a lost MCP session, and what an HTTP error status means.

The HTTP shell reports facts (a 404 to a message sent under our session, any
other status of 300 or more, with the message as sent and the start of the
body); deciding what they mean for calls and connections happens here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._call import CallState, CallTrigger
from ._context import Context
from ._events import DownstreamHttpError, DownstreamSessionLost, DownstreamUnauthorized
from ._jsonrpc import Notification, Request, Response, decode, error_with
from ._link import Internal, Link, State
from ._strictjson import parse

if TYPE_CHECKING:
    from ._calls import Calls
    from ._health import Health
    from ._links import Links

__all__ = ["LostSessions"]

JSONObject = dict[str, Any]


class LostSessions:
    """What HTTP servers' refusals mean (see the module docstring)."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self.links: Links
        self.calls: Calls
        self.health: Health

    def session_lost(self, ev: DownstreamSessionLost) -> None:
        """An HTTP server lost our MCP session: handshake again, then resend what it refused.

        A 404 to a message sent under a session means the server did not
        process it (MCP 2025-11-25, basic/transports, "Session Management"),
        so a refused ``tools/call`` is sent once more, with a new wire id, as
        soon as the new session is READY; until then it waits with the other
        calls, under its own timer. A call refused twice fails with
        ``SERVER_UNAVAILABLE``, and so does the whole connection when the
        session the handshake just opened is lost too. Refusals of messages
        sent under an older session (wire id below the latest ``initialize``)
        need no new handshake.
        """
        link = self._ctx.links.get(ev.downstream)
        if link is None:
            return
        sent = decode(ev.data) if ev.data is not None else None
        wire_id = sent.id if isinstance(sent, Request) and isinstance(sent.id, int) else None
        if wire_id is None or wire_id >= link.session_wire:
            if link.state is not State.READY:
                self.links.fail(link, "lost its MCP session during the handshake")
                return
            self._ctx.log("info", "server lost our MCP session; opening a new one", server=link.name)
            # Health, ping and idle timers belong to the lost session; READY arms them again.
            self.health.cancel_timers(link)
            link.move(State.STARTING)
            self.links.send_initialize(link)
        if wire_id is None:
            return
        link.internal.pop(wire_id, None)  # a refused tools/list: the new handshake lists again
        call = link.pending.pop(wire_id, None)
        if call is None:
            return
        if call.state is CallState.RESENT:
            self.calls.fail(call, "lost its MCP session twice in a row")
            return
        call.move(CallTrigger.REQUEUE)
        call.wire_id = None
        if link.state is State.READY:
            self.calls.dispatch(link, call)
        else:
            link.waiters.append(call)

    def unauthorized(self, ev: DownstreamUnauthorized) -> None:
        """The shell has no token the server takes: the link's calls fail with why, and how to log in."""
        link = self._ctx.links.get(ev.downstream)
        if link is None:
            return
        reason = f"authorization required: {ev.reason}"
        if ev.login:
            reason += f"; to log in, run: {login_command(link)}"
        self.links.unauthorized(link, reason)

    def http_error(self, ev: DownstreamHttpError) -> None:
        """Decide what an HTTP error status from a downstream means.

        - 401: the server wants credentials we do not have; nothing on this
          connection can work, so it fails (and restarts with backoff).
        - A request answered 4xx with a JSON-RPC error body: that error is
          the request's answer; the connection is fine.
        - A request answered 4xx without one: that request fails with
          ``SERVER_UNAVAILABLE``, or the connection when it was the
          gateway's own (``initialize``, ``tools/list``); but the era probe
          (``server/discover``) refused so means the server does not speak
          the stateless era, and ``initialize`` follows.
        - 5xx and anything else on a request: the server is broken; the
          connection fails.
        - A notification or a response: nothing waits for an answer; logged.
        """
        link = self._ctx.links.get(ev.downstream)
        if link is None:
            return
        reason = f"HTTP status {ev.status} from the server"
        if ev.status == 401:
            self.links.unauthorized(link, _refused(link))
            return
        sent = decode(ev.data) if ev.data is not None else None
        if not isinstance(sent, Request) or not isinstance(sent.id, int):
            method = sent.method if isinstance(sent, Notification) else None
            self._ctx.log("warning", "server refused a message", server=link.name, status=ev.status, method=method)
            return
        if 400 <= ev.status < 500:
            err = _jsonrpc_error(ev.body)
            if err is not None:
                self.links.answer(link, Response(sent.id, error_with(sent.id, err)))
                return
            call = link.pending.pop(sent.id, None)
            if call is not None:
                self.calls.fail(call, reason)
                return
            if sent.id not in link.internal:
                return  # a request already answered or abandoned
            if link.internal[sent.id] is Internal.DISCOVER:
                del link.internal[sent.id]
                self.links.not_stateless(link, reason)
                return
        self.links.fail(link, reason)


def _jsonrpc_error(body: bytes) -> JSONObject | None:
    """The ``error`` object of a JSON-RPC error response in ``body``, if it is one (held to strict JSON)."""
    obj = parse(body)  # a dict, another JSON value, or Flawed
    err = obj.get("error") if isinstance(obj, dict) else None
    if isinstance(err, dict) and isinstance(err.get("code"), int) and isinstance(err.get("message"), str):
        return err
    return None


def login_command(link: Link) -> str:
    """The command that logs in to ``link``'s server for the token its connection carries."""
    command = f"lockgate auth login {link.name}"
    if link.entry.per_user and link.principal is not None:
        command += f" --principal {link.principal}"
    return command


def _refused(link: Link) -> str:
    """Why a 401 the shell passed on (it ran no OAuth for it) ended a connection."""
    if any(name.lower() == "authorization" for name in link.spec.headers):
        return "authorization required: the server refused the Authorization header configured for it"
    if link.spec.oauth is not None and not link.spec.oauth.enabled:
        return "authorization required: the server answered 401, and OAuth is off for it (oauth: false)"
    return f"authorization required: the server answered 401; to log in, run: {login_command(link)}"
