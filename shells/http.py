"""The Streamable HTTP front: an h11 server on trio around the same core as stdio.

MCP 2025-11-25, basic/transports, "Streamable HTTP". :func:`serve_http` binds
the port, starts the :class:`~.runtime.Runtime` and accepts connections until
SIGTERM or SIGINT. Three modules do the work, one concern each:

- :mod:`.http_connections`: the open connections, their deadlines and the
  room for new ones (the rules are in :mod:`lockgate.core.http`);
- :mod:`.http_exchange`: one connection's requests and responses (h11);
- :mod:`.http_endpoint`: the MCP endpoint, its sessions and the ops routes
  (``/health``, ``/ready``, ``/metrics``);
- :mod:`.ws`: with ``--transport ws`` or ``http,ws``, the WebSocket front at
  ``/ws`` on the same port, which sees every request first.

Bad peers are bounded: a request head must arrive whole within
``GATEWAY_HTTP_HEAD_TIMEOUT`` of its first byte and its body within a time
scaled to its size, whatever the pace; a keep-alive connection may wait
``read_timeout`` for its next request; at ``GATEWAY_MAX_CONNECTIONS`` (or
``GATEWAY_MAX_CONNECTIONS_PER_ADDRESS`` from one address) a newcomer closes
the oldest idle connection, else the slowest request under way, and gets 503
only when every connection is busy. A head over 100 fields or 64 KiB gets
431, a body over ``GATEWAY_MAX_MESSAGE_BYTES`` 413 without being read to the
end, ambiguous framing 400; each closes the connection. A failure inside the
shell while serving one request (a bug) is logged, answered 500 if nothing
was sent yet, and closes that connection alone.

Shutdown (SIGTERM, SIGINT, or :meth:`HttpServer.shutdown`): stop accepting,
close idle connections, let POSTs in flight finish for up to
``GATEWAY_SHUTDOWN_GRACE`` seconds, then feed ``ShutdownRequested`` (the core
fails what is left), end the SSE streams and stop every downstream.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING

import trio

from lockgate.core import GatewayStarted, Settings
from lockgate.core.http import DEFAULT_IDLE_TIMEOUT, ConnectionLimits, HttpPolicy, open_to_any_host
from lockgate.core.ws import DEFAULT_WS_PING_INTERVAL, DEFAULT_WS_PING_TIMEOUT, WS_PATH

from .http_connections import ConnectionTable
from .http_endpoint import McpEndpoint
from .session_ids import SessionIds
from .http_exchange import Handler, serve_connection
from .logs import NOTICE, get_logger
from .record import Recorder
from .rest.api import RestApi
from .reload import ReloadSource, watch_config
from .runtime import GatewayCore, Runtime
from .shared_limits import CREDENTIALS_CHANGED
from .oauth import for_front
from .signals import STOP_SIGNALS, receive_signals, stop_on_signals
from .ws import WsFront

if TYPE_CHECKING:
    # Only with authentication on: they bring the database and JOSE libraries.
    from .http_auth import HttpAuth
    from .identity import Authentication
    from .registry import Registry

__all__ = ["CannotListen", "HttpServer", "serve_http"]

_log = get_logger("http")


class CannotListen(Exception):
    """The listening socket could not be opened: the address or port, and the ``OSError`` why.

    Only the bind raises it, so a caller can tell "pick another port" apart
    from a failure once serving.
    """

    def __init__(self, host: str, port: int, error: OSError) -> None:
        super().__init__(f"cannot listen on {host}:{port}: {error.strerror or error}")
        self.host = host
        self.port = port
        self.error = error


class HttpServer:
    """Serve the MCP endpoint for one :class:`~.runtime.Runtime`; see the module docstring."""

    def __init__(
        self,
        core: GatewayCore,
        runtime: Runtime,
        policy: HttpPolicy,
        *,
        limits: ConnectionLimits = ConnectionLimits(),
        shutdown_grace: float = 10.0,
        recorder: Recorder | None = None,
        auth: HttpAuth | None = None,
        registry: Registry | None = None,
        streamable: bool = True,
        websocket: bool = False,
        ping_interval: float = DEFAULT_WS_PING_INTERVAL,
        ping_timeout: float = DEFAULT_WS_PING_TIMEOUT,
        session_ids: SessionIds | None = None,
    ) -> None:
        self._policy = policy
        self._table = ConnectionTable(limits)
        self.rest = RestApi(core, runtime, authenticated=auth is not None, loopback=policy.loopback, registry=registry)
        self._endpoint = McpEndpoint(core, runtime, policy, recorder, auth, self.rest, session_ids)
        self._handler: Handler = self._endpoint.handle
        #: The WebSocket front (``--transport ws`` or ``http,ws``), which routes every request first.
        self.ws: WsFront | None = None
        if websocket:
            self.ws = WsFront(
                runtime, policy, endpoint=self._endpoint.handle, streamable=streamable,
                ping_interval=ping_interval, ping_timeout=ping_timeout, auth=auth, recorder=recorder,
            )
            self._handler = self.ws.handle
        self._shutdown_grace = shutdown_grace
        #: Every connection with a task, refused ones included.
        self._connections = 0

    async def handle_connection(self, stream: trio.SocketStream) -> None:
        """Serve one TCP connection until it closes; never raises (but for cancellation)."""
        self._connections += 1
        try:
            await serve_connection(stream, self._table, self._policy, self._handler)
        finally:
            self._connections -= 1

    async def shutdown(self) -> None:
        """Stop serving: idle connections close, POSTs in flight get ``shutdown_grace`` to finish.

        Then the core hears ``ShutdownRequested`` and every SSE stream ends.
        WebSocket requests in flight share the same grace period; then every
        WebSocket connection closes with 1001. The caller stops accepting
        connections first.
        """
        self._table.shut()
        if self.ws is None:
            await self._endpoint.shutdown(self._shutdown_grace)
        else:
            await self.ws.shutdown(self._shutdown_grace, self._endpoint.shutdown)

    def statistics(self) -> dict[str, int]:
        """Counts for operators and tests: connections, sessions, requests in flight.

        ``connections`` counts every connection with a task, refused ones
        included; the rest come from :meth:`.ConnectionTable.statistics`.
        """
        return {
            "connections": self._connections,
            "sessions": self._endpoint.sessions,
            "requests_in_flight": self._endpoint.in_flight,
            "websockets": 0 if self.ws is None else len(self.ws.connections),
            **self._table.statistics(),
        }


async def serve_http(
    core: GatewayCore,
    settings: Settings,
    *,
    host: str | None = None,
    port: int | None = None,
    handle_signals: bool = True,
    read_timeout: float = DEFAULT_IDLE_TIMEOUT,
    environ: Mapping[str, str] | None = None,
    on_listening: Callable[[str], None] | None = None,
    stop: trio.Event | None = None,
    reload: ReloadSource | None = None,
    recorder: Recorder | None = None,
    authentication: Authentication | None = None,
    sockets: Sequence[socket.socket] | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``core`` over Streamable HTTP until SIGTERM/SIGINT (or ``stop`` is set).

    With ``reload``, the configuration files are watched and SIGHUP reloads
    them (see :mod:`.reload`), as for stdio. With ``recorder`` (``--record``;
    ``core`` must then be ``recorder.wrap(...)``), each session's wire
    transcript is written too. With ``authentication`` (``--auth``), every
    request to ``/mcp`` needs a credential and ``/auth/`` serves sign-in,
    delegation and the management of users and keys (see :mod:`.http_auth`).

    Reports the bound port through ``task_status`` and calls ``on_listening``
    with the endpoint URL once it accepts connections. ``read_timeout`` is
    how long a connection may wait for its next request, or a request for
    its next bytes; the other connection limits come from ``settings``.

    With ``sockets``, listening sockets already bound (a worker's, inherited
    from its supervisor: see :mod:`.workers`), it accepts on them instead of
    binding ``host`` and ``port`` itself.
    """
    host = settings.http_host if host is None else host
    port = settings.http_port if port is None else port
    if sockets is not None:
        listeners = [trio.SocketListener(trio.socket.from_stdlib_socket(sock)) for sock in sockets]
    else:
        try:
            listeners = await trio.open_tcp_listeners(port, host=host)
        except OSError as exc:  # taken, privileged, not this machine's, or a name that does not resolve
            raise CannotListen(host, port, exc) from exc
    bound = listeners[0].socket.getsockname()[1]
    policy = HttpPolicy(
        host=host,
        port=bound,
        allowed_origins=frozenset(settings.cors_origins),
        allowed_hosts=frozenset(h.lower() for h in settings.allowed_hosts),
        max_body_bytes=settings.max_message_bytes,
    )
    limits = ConnectionLimits(
        max_connections=settings.max_connections,
        max_per_address=settings.max_connections_per_address,
        idle_timeout=read_timeout,
        head_timeout=settings.http_head_timeout,
    )
    oauth = for_front(os.environ if environ is None else environ, stdio=False)
    # Sealed session ids: any gateway holding the same key continues a session (see .session_ids).
    session_ids = SessionIds.from_environ(os.environ if environ is None else environ, settings.session_lifetime)
    runtime = Runtime(core, settings=settings, environ=environ, oauth=oauth, pins=None if reload is None else reload.pins)
    auth = None
    if authentication is not None:
        from .http_auth import HttpAuth

        external = authentication.bearer.external
        shared = runtime.shared_limits
        auth = HttpAuth(
            authentication.identity, authentication.issuer, runtime.feed,
            authorization_servers=() if external is None else (external.issuer,),
            announce=None if shared is None else partial(shared.announce, CREDENTIALS_CHANGED),
        )
    # Any transport but ws alone serves Streamable HTTP (tests hand in default settings: stdio).
    streamable = settings.transport != "ws"
    websocket = settings.transport in ("ws", "http,ws")
    server = HttpServer(
        core, runtime, policy, limits=limits, shutdown_grace=settings.shutdown_grace, recorder=recorder, auth=auth,
        registry=None if reload is None else reload.registry, streamable=streamable, websocket=websocket,
        ping_interval=settings.ws_ping_interval, ping_timeout=settings.ws_ping_timeout, session_ids=session_ids,
    )
    stop = stop if stop is not None else trio.Event()
    url = f"http://{_url_host(host)}:{bound}/mcp"
    ws_url = f"ws://{_url_host(host)}:{bound}{WS_PATH}"
    with receive_signals(handle_signals, *STOP_SIGNALS) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(runtime.run)
            await nursery.start(server.rest.watch_late)
            if authentication is not None:
                await nursery.start(authentication.run)
                if runtime.shared_limits is not None:
                    # Another replica's revoke reaches this one at once, not at the next poll of the database.
                    await nursery.start(runtime.shared_limits.follow, CREDENTIALS_CHANGED, authentication.identity.nudge)
            if server.ws is not None:
                await nursery.start(server.ws.recheck_credentials)
            # The seed is the randomness of the `random` balancing strategy.
            await runtime.feed(GatewayStarted(now=trio.current_time(), seed=secrets.randbits(64)))
            if reload is not None:
                # After GatewayStarted: a reload must not race the eager start.
                await nursery.start(partial(watch_config, handle_sighup=handle_signals), runtime, reload)
            if signals is not None:
                nursery.start_soon(stop_on_signals, signals, stop, _log, "stopping")
            async with trio.open_nursery() as connections:
                accept_scope = trio.CancelScope()

                async def accept() -> None:
                    with accept_scope:
                        await trio.serve_listeners(server.handle_connection, listeners, handler_nursery=connections)

                connections.start_soon(accept)
                if streamable:
                    _log.log(NOTICE, f"serving Streamable HTTP at {url}")
                if websocket:
                    _log.log(NOTICE, f"serving MCP over WebSocket at {ws_url} (subprotocol mcp)")
                if open_to_any_host(policy):
                    _log.warning(
                        f"bound to {host} with no GATEWAY_ALLOWED_HOSTS: any Host header is accepted; "
                        "list the names clients use to keep DNS rebinding protection"
                    )
                if on_listening is not None:
                    on_listening(url if streamable else ws_url)
                task_status.started(bound)
                await stop.wait()
                accept_scope.cancel()
                for listener in listeners:
                    await listener.aclose()
                await server.shutdown()
                # Let the ended SSE responses write their last bytes.
                with trio.move_on_after(1):
                    while server.statistics()["connections"]:
                        await trio.sleep(0.01)
                connections.cancel_scope.cancel()
            await runtime.aclose(grace=settings.shutdown_grace)
            nursery.cancel_scope.cancel()
    oauth.close()


def _url_host(host: str) -> str:
    if host in ("", "0.0.0.0", "::"):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host
