"""The bridge between the eras: a handshake-era server asking a stateless client something.

A server of the handshake era asks its client mid-call (``elicitation/create``,
``sampling/createMessage``, ``roots/list``) and waits for the answer on the
same connection. A client of the stateless era (MCP 2026-07-28) cannot be
asked: its servers return ``input_required`` instead
(``inputRequests``, an opaque ``requestState``), and it retries the request
with a new id, its ``inputResponses`` and the ``requestState`` unchanged
(https://modelcontextprotocol.io/specification/2026-07-28/basic/input-required).

Theory of operation
-------------------
When such a request comes for a stateless client's call (:mod:`._relays`
finds the call), the call is *parked*: the client's request is answered
with ``input_required``, holding the server's request under a key of the
gateway's, and the :class:`~._call.Call` itself stays open downstream,
detached from the client's request, its timer now the wait for the
client's retry (:data:`INPUT_WAIT_S`). The ``requestState`` names the parked
call, the caller and the deadline, under an HMAC-SHA256 with the shell's
key (``Gateway(state_key=...)``): the core stays deterministic, and a state
that was altered, made up, expired, or presented by another credential is
refused (-32602).

The retry *resumes* the call: each answer in ``inputResponses`` goes to the
server under its own request id, the call is attached to the retry (its
id, its client, a fresh timeout), and the server's final answer reaches the
retry. A server that asks again, or asked several things at once, parks the
call again with what is still unanswered. A parked call nobody comes back
for times out: it is cancelled downstream and audited, as any call that
times out. At most :data:`MAX_PARKED` calls wait at once: a question that
would park one more is refused to its server.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from dataclasses import dataclass, field
from typing import Any

from ._actions import SendToClient, SendToDownstream
from ._call import Call
from ._context import Context
from ._errors import ErrorCode
from ._jsonrpc import Request, error, result
from ._link import Link
from ._session import ClientSession
from ._timers import TimerKind

__all__ = ["INPUT_WAIT_S", "MAX_PARKED", "Bridge", "STATE_PREFIX"]

JSONObject = dict[str, Any]

#: How long a parked call waits for the client's retry.
INPUT_WAIT_S = 300.0
#: Parked calls at once, over all clients: each holds a server's request open.
MAX_PARKED = 1024
#: What starts every ``requestState`` the gateway issues (a server's own passes through untouched).
STATE_PREFIX = "lockgate.1."
_MAC_BYTES = 16


@dataclass(slots=True, eq=False)
class Parked:
    """A call waiting for its client's answers: the server's requests, by the key the client answers under."""

    number: int
    call: Call
    downstream: int
    #: The server's request id and the request as the client sees it, by key; each answered once.
    asked: dict[str, tuple[Any, JSONObject]] = field(default_factory=dict)
    #: Sent to the client in the latest ``input_required`` (the rest came after it).
    shown: set[str] = field(default_factory=set)
    deadline: float = 0.0
    #: Questions asked so far, for their keys.
    count: int = 0


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Bridge:
    """Parked calls of stateless clients (see the module docstring)."""

    def __init__(self, ctx: Context, state_key: bytes) -> None:
        self._ctx = ctx
        self._key = state_key
        self._parked: dict[int, Parked] = {}
        self._by_call: dict[int, Parked] = {}
        self._next = 0

    # -- parking -------------------------------------------------------------------

    def ask(self, call: Call, link: Link, server_request: Request) -> None:
        """A server asks a stateless client's call something: answer the client ``input_required``, keep the call.

        When the call is parked already (the client has not retried yet), the
        question waits with the others for the retry.
        """
        ctx = self._ctx
        assert link.downstream is not None
        parked = self._by_call.get(id(call))
        if parked is None:
            if len(self._parked) >= MAX_PARKED:
                ctx.emit(SendToDownstream(downstream=link.downstream, message=error(
                    server_request.id, int(ErrorCode.INTERNAL_ERROR), "The gateway holds too many calls waiting for their clients")))
                return
            self._next += 1
            parked = Parked(number=self._next, call=call, downstream=link.downstream)
            self._parked[parked.number] = parked
            self._by_call[id(call)] = parked
        parked.asked[f"lockgate-{parked.number}-{parked.count + 1}"] = (
            server_request.id, {"method": server_request.method, "params": server_request.params}
        )
        parked.count += 1
        session = ctx.clients.get(call.client)
        if session is not None and session.calls.get(call.request_id) is call:
            self._show(parked, session)

    def _show(self, parked: Parked, session: ClientSession) -> None:
        """Answer the call's client request with what is still asked; the call waits for the retry."""
        ctx = self._ctx
        call = parked.call
        session.calls.pop(call.request_id, None)
        ctx.cancel_timer(call.timer)
        parked.deadline = ctx.now + INPUT_WAIT_S
        call.deadline = call.hard_deadline = parked.deadline
        call.timer = ctx.set_timer(TimerKind.CALL, parked.deadline, call=call)
        parked.shown = set(parked.asked)
        answer = {
            "resultType": "input_required",
            "inputRequests": {key: shown for key, (_, shown) in parked.asked.items()},
            "requestState": self._state(parked, call),
        }
        ctx.emit(SendToClient(client=session.id, message=result(call.request_id, answer), request=call.request_id))

    def _state(self, parked: Parked, call: Call) -> str:
        principal = call.principal.id if call.principal is not None else None
        body = json.dumps({"n": parked.number, "p": principal, "d": parked.deadline}, separators=(",", ":")).encode()
        mac = hmac.new(self._key, body, hashlib.sha256).digest()[:_MAC_BYTES]
        return STATE_PREFIX + _b64(body) + "." + _b64(mac)

    def parked(self, call: Call) -> bool:
        """Whether ``call`` waits for its client's answers (its client's request was answered already)."""
        return id(call) in self._by_call

    def forget(self, call: Call) -> None:
        """A parked call ended (timed out, its server went away): nothing waits for it any more."""
        parked = self._by_call.pop(id(call), None)
        if parked is not None:
            self._parked.pop(parked.number, None)

    # -- resuming ------------------------------------------------------------------

    def resume(self, session: ClientSession, req: Request) -> bool:
        """A stateless request carrying a ``requestState``: the retry of a parked call, or False for a server's own state.

        Answers the retry itself when its state or its answers are refused.
        """
        state = req.params.get("requestState")
        if not isinstance(state, str) or not state.startswith(STATE_PREFIX):
            return False
        ctx = self._ctx
        parked = self._check(state, session)
        if isinstance(parked, str):
            ctx.reply_error(session.id, req.id, ErrorCode.INVALID_PARAMS, f"Invalid requestState: {parked}", parameter="requestState")
            return True
        answers = req.params.get("inputResponses")
        if not isinstance(answers, dict):
            ctx.reply_error(session.id, req.id, ErrorCode.INVALID_PARAMS, "inputResponses must be an object", parameter="inputResponses")
            return True
        unknown = sorted(set(answers) - parked.shown)
        if unknown:
            ctx.reply_error(
                session.id, req.id, ErrorCode.INVALID_PARAMS,
                f"inputResponses answers a request never asked: {unknown[0][:64]}", parameter="inputResponses",
            )
            return True
        if req.id in session.calls:
            ctx.reply_error(session.id, req.id, ErrorCode.INVALID_REQUEST, f"Request id {req.id!r} is already in use")
            return True
        call = parked.call
        link = ctx.links.get(parked.downstream)
        for key in sorted(answers):
            server_id, _ = parked.asked.pop(key)
            answer = answers[key]
            message = result(server_id, answer) if isinstance(answer, dict) else error(
                server_id, int(ErrorCode.INVALID_PARAMS), "The client's answer is not an object")
            if link is not None:
                ctx.emit(SendToDownstream(downstream=parked.downstream, message=message))
        parked.shown.clear()
        # The retry is the call's request from now on: its answer, its cancellation, its timeout.
        call.client, call.request_id = session.id, req.id
        session.calls[req.id] = call
        ctx.cancel_timer(call.timer)
        timeout = call.timeout_ms / 1000
        call.deadline = ctx.now + timeout
        call.hard_deadline = max(call.hard_deadline, call.deadline)
        call.timer = ctx.set_timer(TimerKind.CALL, call.deadline, call=call)
        if parked.asked:
            self._show(parked, session)  # asked more meanwhile, or the client left some unanswered
        else:
            self.forget(call)
        return True

    def _check(self, state: str, session: ClientSession) -> Parked | str:
        """The parked call ``state`` names for this caller, or why it names none."""
        body_text, _, mac_text = state[len(STATE_PREFIX):].partition(".")
        try:
            body, mac = _unb64(body_text), _unb64(mac_text)
        except (binascii.Error, ValueError):
            return "not one this gateway issued"
        expected = hmac.new(self._key, body, hashlib.sha256).digest()[:_MAC_BYTES]
        if not hmac.compare_digest(mac, expected):
            return "not one this gateway issued, or altered"
        claims = json.loads(body)
        parked = self._parked.get(claims["n"])
        if parked is None or self._ctx.now > claims["d"] or claims["d"] != parked.deadline:
            return "expired or already used"
        principal = session.principal.id if session.principal is not None else None
        if claims["p"] != principal:
            return "issued to another credential"
        return parked
