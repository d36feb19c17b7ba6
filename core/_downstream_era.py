"""Which era of MCP the gateway speaks to each server, and how a stateless-era message to one looks.

Theory of operation
-------------------
A link (:mod:`._link`) decides its era at every start, per connection
(:meth:`~._links.Links.start`), as ``GATEWAY_DOWNSTREAM_ERA`` says:

- ``auto`` (the default): ``server/discover`` first, carrying the
  stateless era's ``_meta`` envelope (:func:`discover_request`). A result
  whose ``supportedVersions`` lists 2026-07-28 makes the link *stateless*
  (:func:`speaks_stateless`); any error (-32601 from a handshake-era
  server, -32022, an HTTP 4xx the shell reports) or a result without it
  means *handshake*: ``initialize`` follows on the same connection, as the
  SDK's client does in ``mode="auto"``. The start timeout covers the probe
  and the handshake together: a server that never answers the probe fails
  its start like one that never answers ``initialize``, and its instance
  then starts with ``initialize`` until the configuration changes.
- ``handshake``: ``initialize`` only (what Lockgate did before 2026-07-28).
- ``stateless``: ``server/discover`` only; a server that does not speak
  2026-07-28 fails its start.

On a stateless link there is no ``initialize`` and no
``notifications/initialized``; every request carries the envelope, merged
into its own ``_meta`` (:func:`shape_downstream`, which
:meth:`~._context.Context.emit` applies to every message to a server, the
one place they all pass). The discover result stands for the
``initialize`` result: its ``capabilities``, ``instructions`` and
``_meta`` ``serverInfo`` are kept on the link where the rest of the core
reads them. What the stateless era removed is not sent: health checks use
``server/discover`` instead of ``ping`` (:mod:`._health`);
``logging/setLevel`` and ``resources/(un)subscribe`` are not sent (a
call carries its client's level in ``_meta`` instead, and a client's
subscribe is answered by the gateway, which keeps the subscriber table);
``notifications/roots/list_changed`` is dropped here.
"""

from __future__ import annotations

import base64
import re
from typing import TYPE_CHECKING, Any, Final

from . import __version__
from ._actions import SendToDownstream
from ._eras import (
    CLIENT_CAPABILITIES_KEY,
    CLIENT_INFO_KEY,
    HANDSHAKE_VERSIONS,
    MODERN_VERSIONS,
    NAME_BEARING,
    PROTOCOL_VERSION_KEY,
    SERVER_INFO_KEY,
    is_modern_version,
)
from ._jsonrpc import Request, request

if TYPE_CHECKING:
    from ._link import Link

__all__ = [
    "STATELESS_VERSION",
    "client_capabilities",
    "discover_request",
    "envelope",
    "header_value",
    "opening",
    "routing_headers",
    "shape_downstream",
    "speaks_stateless",
    "unsupported_versions",
]

JSONObject = dict[str, Any]

#: The stateless revision the gateway offers a server.
STATELESS_VERSION: Final = MODERN_VERSIONS[-1]

#: What an HTTP header value may hold as it is: visible ASCII and spaces (the rest goes in base64).
_HEADER_SAFE: Final = re.compile(r"[\x20-\x7e]*")
_BASE64_FORM: Final = re.compile(r"=\?base64\?.*\?=")

#: Notifications the stateless era does not have: never sent to a stateless link.
_REMOVED_NOTIFICATIONS: Final = frozenset({"notifications/initialized", "notifications/roots/list_changed"})


def envelope(capabilities: JSONObject) -> JSONObject:
    """The ``_meta`` every request to a stateless server carries: version, what the gateway can relay, who it is."""
    return {
        PROTOCOL_VERSION_KEY: STATELESS_VERSION,
        CLIENT_CAPABILITIES_KEY: capabilities,
        CLIENT_INFO_KEY: {"name": "lockgate", "version": __version__},
    }


def discover_request(wire_id: int, capabilities: JSONObject) -> JSONObject:
    """The ``server/discover`` that probes a server's era (and, on a stateless link, checks its health)."""
    return request(wire_id, "server/discover", {"_meta": envelope(capabilities)})


def speaks_stateless(result: object) -> bool:
    """Whether a ``server/discover`` result lists a stateless revision the gateway speaks."""
    versions = result.get("supportedVersions") if isinstance(result, dict) else None
    return isinstance(versions, list) and any(v in MODERN_VERSIONS for v in versions)


def unsupported_versions(error: object) -> list[str] | None:
    """The versions a -32022 error says the server speaks, when it names none the gateway does (else ``None``)."""
    data = error.get("data") if isinstance(error, dict) and error.get("code") == -32022 else None
    supported = data.get("supported") if isinstance(data, dict) else None
    if not isinstance(supported, list):
        return None
    known = (*HANDSHAKE_VERSIONS, *MODERN_VERSIONS)
    return None if any(v in known for v in supported) else [v for v in supported if isinstance(v, str)][:8]


def opening(result: JSONObject) -> tuple[JSONObject, str | None, JSONObject | None]:
    """What a stateless server's discover result offers, as ``initialize`` would have said it: capabilities, instructions, serverInfo."""
    capabilities = result.get("capabilities")
    instructions = result.get("instructions")
    meta = result.get("_meta")
    info = meta.get(SERVER_INFO_KEY) if isinstance(meta, dict) else None
    return (
        capabilities if isinstance(capabilities, dict) else {},
        instructions if isinstance(instructions, str) else None,
        info if isinstance(info, dict) else None,
    )


def shape_downstream(link: Link, action: SendToDownstream) -> SendToDownstream | None:
    """A message to a stateless link as the stateless era has it: a request in its envelope; ``None``: not sent.

    The envelope's keys win over the request's own, but for the client
    capabilities a call's request names (:func:`client_capabilities`); the
    rest of its ``_meta`` (a progress token, say) stays.
    """
    stamp = link.stamp
    if stamp is None:
        return action
    message = action.message
    method = message.get("method")
    if "id" not in message:
        return None if method in _REMOVED_NOTIFICATIONS else action
    if not isinstance(method, str):
        return action  # a response: the stateless era's servers send no requests, but one answered is answered
    params = message.get("params")
    params = dict(params) if isinstance(params, dict) else {}
    meta = params.get("_meta")
    meta = meta if isinstance(meta, dict) else {}
    shaped = {**meta, **stamp}
    if CLIENT_CAPABILITIES_KEY in meta:
        shaped[CLIENT_CAPABILITIES_KEY] = meta[CLIENT_CAPABILITIES_KEY]  # a call's own client's (client_capabilities)
    params["_meta"] = shaped
    return SendToDownstream(downstream=action.downstream, message={**message, "params": params})


def client_capabilities(link: Link, declared: JSONObject) -> JSONObject:
    """The capabilities a call to a stateless ``link`` declares: its client's, of those the gateway relays.

    The gateway builds every forwarded request's ``_meta`` itself (a
    client's own never passes), so this is the only way a client's
    capabilities reach a server.
    """
    offered = link.stamp.get(CLIENT_CAPABILITIES_KEY) if link.stamp is not None else None
    if not isinstance(offered, dict):
        return {}
    return {key: value for key, value in declared.items() if key in offered}


def header_value(value: str) -> str:
    """``value`` as an ``Mcp-Name`` header carries it: as it is when plain visible ASCII, else ``=?base64?…?=``.

    Edge whitespace, and a value that looks like the base64 form itself, take the base64 form too.
    """
    if _HEADER_SAFE.fullmatch(value) and value == value.strip() and not _BASE64_FORM.fullmatch(value):
        return value
    return f"=?base64?{base64.b64encode(value.encode('utf-8')).decode('ascii')}?="


def routing_headers(msg: Request) -> dict[str, str] | None:
    """The Streamable HTTP headers of a request in the stateless era's envelope; ``None`` for any other request.

    ``MCP-Protocol-Version`` as in its ``_meta``, ``Mcp-Method``, and
    ``Mcp-Name`` for the requests that name an item (MCP 2026-07-28,
    basic/transports): a server checks them against the body.
    """
    meta = msg.params.get("_meta")
    version = meta.get(PROTOCOL_VERSION_KEY) if isinstance(meta, dict) else None
    if not is_modern_version(version):
        return None
    assert isinstance(version, str)
    headers = {"mcp-protocol-version": version, "mcp-method": msg.method}
    key = NAME_BEARING.get(msg.method)
    name = msg.params.get(key) if key is not None else None
    if isinstance(name, str):
        headers["mcp-name"] = header_value(name)
    return headers
