"""One server's OAuth token for one principal: using it, refreshing it, getting a new one.

Theory of operation. A :class:`TokenSession` holds the SDK provider (see
:mod:`.provider`) for one server and one Lockgate principal (or the
gateway), and :class:`DownstreamAuth` is the ``httpx.Auth`` an HTTP
downstream's client sends every request through:

1. The request goes out with the token held in memory (read from the
   database on first use), or with none: most servers need no token, and a
   server that does says so with a 401. A token about to expire is
   refreshed first.
2. A 401, or a 403 with ``insufficient_scope`` (step-up), is a challenge.
   :meth:`TokenSession.obtain` takes it, one flow at a time per session (a
   second call meeting the same challenge waits, then uses what the first
   got): a refresh when there is a refresh token (the challenge came on a
   token, or the stored one has expired), else the SDK's whole flow when it
   needs no person (client credentials) or a person is at hand (``lockgate
   auth login``, or a stdio gateway on a desktop, which opens the browser);
   else it fails with :class:`OAuthProblem`, whose reason says why and
   whether logging in helps. A token the server refused and that could not
   be refreshed is not offered again, even when read back from the database.
3. The request is sent once more with the new token; a second challenge is
   an :class:`OAuthProblem` (a server that refuses the token it was just
   given would otherwise loop).

The SDK's flow is an ``httpx2.Auth`` and runs in an ``httpx2`` client of its
own, never on the downstream's connection: its own requests (discovery,
registration, token) go to the network, and the request it authorizes is a
stand-in (:class:`_Probe`) that answers with the challenge the real request
met, then with 200. So a refresh or a login never replays a real call, and a
slow authorization server holds up only the calls that wait for its token.
"""

from __future__ import annotations

import webbrowser
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

import httpx
import httpx2
import trio
from mcp.client.auth.exceptions import OAuthFlowError, OAuthRegistrationError, OAuthTokenError
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientInformationFull, OAuthClientMetadata
from pydantic import AnyUrl, ValidationError

from lockgate.core import OAuthSpec

from ..downstream_http_replies import describe_failure, host_and_port
from ..logs import get_logger
from .errors import OAuthProblem
from .loopback import CallbackError, Loopback, open_loopback
from .provider import AuthorizationCodeProvider, ClientCredentialsProvider
from .storage import StoredTokens

__all__ = ["Challenge", "DownstreamAuth", "OAuthProblem", "Opener", "TokenSession", "browser_opener"]

#: How long the authorization server may take: to connect, and to answer.
CONNECT_S = 10.0
ANSWER_S = 20.0
#: How long a person has to finish logging in.
LOGIN_S = 300.0
#: Headers of an MCP POST the probe copies, so the SDK sees the protocol version.
_PROBE_MARK = "x-lockgate-probe"
#: A request that needs no session, for asking a server whether it wants a token.
INITIALIZE = (
    b'{"jsonrpc":"2.0","id":"lockgate-auth","method":"initialize","params":{"protocolVersion":"2025-11-25",'
    b'"capabilities":{},"clientInfo":{"name":"lockgate","version":"login"}}}'
)

_log = get_logger("oauth")

#: Shows a person the authorization URL (opens the browser, prints it); ``None`` where there is no person.
Opener = Callable[[str], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Challenge:
    """What a server answered a request it wants a token for: the status (401 or 403) and its headers."""

    status: int
    headers: tuple[tuple[bytes, bytes], ...]

    @property
    def step_up(self) -> bool:
        return self.status == 403


def challenge_of(response: httpx.Response) -> Challenge | None:
    """The challenge in ``response``: a 401, or a 403 whose ``WWW-Authenticate`` says ``insufficient_scope``."""
    if response.status_code == 401:
        return Challenge(401, tuple(response.headers.raw))
    if response.status_code == 403 and "insufficient_scope" in response.headers.get("www-authenticate", ""):
        return Challenge(403, tuple(response.headers.raw))
    return None


class TokenSession:
    """The token of ``server`` for ``principal`` (``""``: the gateway's); see the module docstring.

    ``opener`` shows a person where to log in (``None``: nobody is there,
    and a login is an :class:`OAuthProblem` naming the command to run).
    """

    def __init__(
        self,
        *,
        server: str,
        url: str,
        oauth: OAuthSpec,
        storage: StoredTokens,
        opener: Opener | None,
        login_timeout: float = LOGIN_S,
    ) -> None:
        self.server = server
        self.url = url
        self.oauth = oauth
        self.storage = storage
        self.opener = opener
        #: Seconds a person has to finish logging in.
        self.login_timeout = login_timeout
        self._lock = trio.Lock()
        self._loopback: Loopback | None = None
        self._loaded = False
        #: Why the last refresh failed, for the reason of the login it leads to.
        self._refresh_failed: str | None = None
        #: The token the server refused and that could not be refreshed: never offered again, even read back.
        self._refused: str | None = None
        self.provider = self._provider()

    @property
    def whose(self) -> str:
        return self.storage.principal or "the gateway"

    @property
    def needs_person(self) -> bool:
        return self.oauth.grant == "authorization_code"

    def _provider(self) -> AuthorizationCodeProvider | ClientCredentialsProvider:
        oauth = self.oauth
        if oauth.grant == "client_credentials":
            assert oauth.client_id is not None and oauth.client_secret is not None  # the servers file checks it
            return ClientCredentialsProvider(
                self.url, self.storage, client_id=oauth.client_id, client_secret=oauth.client_secret,
                issuer=oauth.issuer, scopes=oauth.scopes,
            )
        metadata = OAuthClientMetadata(
            client_name="Lockgate",
            redirect_uris=[AnyUrl(f"http://127.0.0.1:{oauth.redirect_port or 0}/callback")],
            grant_types=["authorization_code", "refresh_token"],
            response_types=["code"],
            token_endpoint_auth_method="client_secret_post" if oauth.client_secret or not oauth.client_id else "none",
            scope=" ".join(oauth.scopes) or None,
        )
        return AuthorizationCodeProvider(
            self.url, metadata, self.storage, self._redirect, self._callback,
            client_metadata_url=oauth.client_metadata_url, scopes=oauth.scopes,
        )

    def configured_client(self) -> OAuthClientInformationFull | None:
        """The client registered by hand (``oauth.client_id``) for the authorization-code flow, else ``None``."""
        oauth = self.oauth
        if oauth.client_id is None or oauth.grant != "authorization_code":
            return None
        return OAuthClientInformationFull(
            client_id=oauth.client_id,
            client_secret=oauth.client_secret,
            redirect_uris=[AnyUrl(f"http://127.0.0.1:{oauth.redirect_port or 0}/callback")],
            grant_types=["authorization_code", "refresh_token"],
            token_endpoint_auth_method="client_secret_post" if oauth.client_secret else "none",
        )

    # -- the token in memory ---------------------------------------------------

    def reload(self) -> None:
        """Read the token from the database again before it is next used (another process may have logged in)."""
        if not self.provider.context.is_token_valid():
            self._loaded = False

    async def current(self) -> str | None:
        """The token to send now, refreshed first if it is about to expire; ``None`` if there is none.

        Before the first challenge nothing is read from the database: a
        server that wants no token never costs a database read.
        """
        context = self.provider.context
        if not self._loaded:
            return None
        if context.is_token_valid():
            assert context.current_tokens is not None
            return context.current_tokens.access_token
        if not context.can_refresh_token():
            return None
        async with self._lock:
            await self._load()
            if not context.is_token_valid() and context.can_refresh_token():
                await self._run_sdk(None)
            return context.current_tokens.access_token if context.is_token_valid() and context.current_tokens else None

    async def _load(self) -> None:
        if not self._loaded:
            await self.provider._initialize()
            self._loaded = True
            tokens = self.provider.context.current_tokens
            if tokens is not None and tokens.access_token == self._refused:
                self.provider.context.clear_tokens()  # still the stored one: as if there were none
            elif tokens is not None:
                self._refused = None  # another is stored now (a login)

    # -- a challenge ---------------------------------------------------------------

    async def obtain(self, challenge: Challenge, sent: str | None, *, person: bool = True) -> str:
        """A token for a request that met ``challenge`` when sent with token ``sent``.

        ``person``: a person may be asked to log in (a POST; never the
        background GET stream).

        Raises:
            OAuthProblem: none can be had now; its reason says why.
        """
        context = self.provider.context
        async with self._lock:
            await self._load()
            held = context.current_tokens.access_token if context.current_tokens is not None else None
            if context.is_token_valid() and held is not None and held != sent and not challenge.step_up:
                return held  # another request met the same challenge, and got a token meanwhile
            if challenge.status == 401 and context.can_refresh_token():
                # The server refused the token sent, or none was sent and the stored one has
                # expired (read back after a restart): treat it as expired, and refresh.
                context.token_expiry_time = 1.0
                await self._run_sdk(None)
                if context.is_token_valid() and context.current_tokens is not None:
                    return context.current_tokens.access_token
            if challenge.status == 401 and sent is not None:
                self._refused = sent
            if self.needs_person and (self.opener is None or not person):
                wanted = _www_field(challenge, "scope") if challenge.step_up else None
                if wanted:
                    await self.storage.want(tuple(wanted.split()))  # the login the reason asks for asks for it too
                raise OAuthProblem(self._why_login(challenge, sent), login=True)
            if challenge.status == 401:
                context.clear_tokens()  # the SDK's flow must not offer the refused token again
            await self._run_sdk(challenge)
            if not context.is_token_valid() or context.current_tokens is None:
                raise OAuthProblem("the authorization server gave no usable token", login=self.needs_person)
            return context.current_tokens.access_token

    def _why_login(self, challenge: Challenge, sent: str | None) -> str:
        if challenge.step_up:
            wanted = _www_field(challenge, "scope")
            return f"the server wants a wider scope{f' ({wanted})' if wanted else ''} than {self.whose}'s token has"
        if self._refresh_failed is not None and (sent is not None or self._refused is not None):
            return f"the server refused {self.whose}'s token, and refreshing it failed ({self._refresh_failed})"
        if self._refresh_failed is not None:
            return f"{self.whose}'s token expired, and refreshing it failed ({self._refresh_failed})"
        if sent is not None:
            return f"the server refused {self.whose}'s token"
        return f"no token is stored for {self.whose}"

    async def login(self) -> None:
        """Log in afresh (``lockgate auth login``): ask the server for its challenge, then run the whole flow.

        Raises:
            OAuthProblem: the server needs no token, cannot be reached, or the flow failed.
        """
        challenge = await self._ask_server()
        if challenge is None:
            raise OAuthProblem(f"{self.server} answered without asking for a token: it needs no login", login=False)
        async with self._lock:
            await self._load()
            self.provider.context.clear_tokens()
            await self._run_sdk(challenge)
            if not self.provider.context.is_token_valid():
                raise OAuthProblem("the authorization server gave no usable token", login=False)

    async def _ask_server(self) -> Challenge | None:
        """The server's answer to an ``initialize`` sent with no token: its challenge, or ``None`` if it took it."""
        headers = {"content-type": "application/json", "accept": "application/json, text/event-stream",
                   "mcp-protocol-version": "2025-11-25"}
        try:
            async with httpx.AsyncClient(timeout=httpx.Timeout(ANSWER_S, connect=CONNECT_S)) as client:
                response = await client.post(self.url, content=INITIALIZE, headers=headers)
                session = response.headers.get("mcp-session-id")
                if session and response.status_code < 300:
                    await client.delete(self.url, headers={"mcp-session-id": session})
        except httpx.HTTPError as exc:
            raise OAuthProblem(describe_failure(exc, host_and_port(self.url)), login=False) from None
        return challenge_of(response)

    # -- the SDK's flow --------------------------------------------------------------

    async def _run_sdk(self, challenge: Challenge | None) -> None:
        """Drive the SDK's flow once on a stand-in request that meets ``challenge`` (``None``: only refresh)."""
        provider = self.provider
        context = provider.context
        had_refresh = challenge is None and context.can_refresh_token()
        timeout = httpx2.Timeout(ANSWER_S, connect=CONNECT_S)
        probe = _Probe(self.url, challenge, timeout)
        # The session reads the token and the client (_load); the SDK must not read them again itself (it
        # would after a failed refresh), which would undo a registration for another loopback port.
        provider._initialized = True
        try:
            async with httpx2.AsyncClient(auth=provider, transport=probe, timeout=timeout, follow_redirects=False) as client:
                if self.needs_person and challenge is not None:
                    async with open_loopback(self._redirect_port()) as loopback:
                        self._use_loopback(loopback)
                        try:
                            await client.post(self.url, content=INITIALIZE, headers=probe.headers())
                        finally:
                            self._loopback = None
                else:
                    await client.post(self.url, content=INITIALIZE, headers=probe.headers())
        except OAuthProblem:
            raise
        except CallbackError as exc:
            raise OAuthProblem(str(exc), login=True) from None
        except httpx2.TimeoutException:
            raise OAuthProblem(f"the authorization server did not answer within {ANSWER_S:g} s", login=False) from None
        except httpx2.TransportError as exc:
            raise OAuthProblem(f"the authorization server cannot be reached ({_transport(exc)})", login=False) from None
        except (OAuthFlowError, OAuthTokenError, OAuthRegistrationError, ValidationError, ValueError) as exc:
            # A broken authorization server (garbage or another issuer's metadata, a refused
            # registration or token request) is not mended by logging in again; a redirect
            # with the wrong state is: that one login went astray.
            reason = _flow_failure(exc)
            raise OAuthProblem(reason, login=self.needs_person and reason == _WRONG_STATE) from None
        if had_refresh:
            self._refresh_failed = None if context.is_token_valid() else "the authorization server refused the refresh token"
            if self._refresh_failed:
                _log.warning(f"refreshing the token failed for {self.whose}", extra={"fields": {"server": self.server}})
        elif context.is_token_valid():
            self._refresh_failed = None
            self._refused = None
            _log.info(f"got a token for {self.whose}", extra={"fields": {"server": self.server}})

    def _redirect_port(self) -> int:
        """The loopback port: the configured one, else the one the stored client was registered with, else any."""
        if self.oauth.redirect_port:
            return self.oauth.redirect_port
        client = self.provider.context.client_info
        for uri in (client.redirect_uris or []) if client is not None else []:
            port = urlsplit(str(uri)).port
            if port:
                return port
        return 0

    def _use_loopback(self, loopback: Loopback) -> None:
        """Make ``loopback`` the redirect URI of this flow; a client registered with another must register again."""
        self._loopback = loopback
        context = self.provider.context
        uri = AnyUrl(loopback.redirect_uri)
        context.client_metadata.redirect_uris = [uri]
        client = context.client_info
        if self.oauth.client_id is not None:
            # A client registered by hand: the authorization server must take
            # any loopback port (RFC 8252, section 7.3) or the configured one.
            self.storage.fixed_client = _with_redirect(client, uri) if client is not None else None
            context.client_info = self.storage.fixed_client
        elif client is not None and str(uri) not in {str(u) for u in client.redirect_uris or []}:
            context.client_info = None

    async def _redirect(self, url: str) -> None:
        if self.opener is None or self._loopback is None:
            raise OAuthProblem("logging in needs a person, and none is at hand", login=True)
        state = parse_qs(urlsplit(url).query).get("state", [""])[0]
        self._loopback.expect(state)
        await self.opener(url)

    async def _callback(self) -> AuthorizationCodeResult:
        if self._loopback is None:
            raise OAuthProblem("logging in needs a person, and none is at hand", login=True)
        return await self._loopback.wait(self.login_timeout)


class DownstreamAuth(httpx.Auth):
    """The ``httpx.Auth`` of an HTTP downstream whose server may want an OAuth token; see the module docstring."""

    requires_request_body = False
    requires_response_body = False

    def __init__(self, session: TokenSession) -> None:
        self.session = session

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        session = self.session
        token = await session.current()
        _bearer(request, token)
        response = yield request
        challenge = challenge_of(response)
        if challenge is None:
            return
        await response.aread()  # a short error body: read, so the connection is reused
        fresh = await session.obtain(challenge, token, person=request.method == "POST")
        _bearer(request, fresh)
        response = yield request
        again = challenge_of(response)
        if again is not None:
            await response.aread()
            raise OAuthProblem(
                f"the server refused the token it was just given (HTTP {again.status} again); gave up after one retry",
                login=False,
            )


def _bearer(request: httpx.Request, token: str | None) -> None:
    if token is None:
        request.headers.pop("authorization", None)
    else:
        request.headers["authorization"] = f"Bearer {token}"


class _Probe(httpx2.AsyncBaseTransport):
    """The SDK's transport: the stand-in request meets ``challenge`` once, then 200; the SDK's own requests go out."""

    def __init__(self, url: str, challenge: Challenge | None, timeout: httpx2.Timeout) -> None:
        self._url = httpx2.URL(url)
        self._challenge = challenge
        self._timeout = timeout.as_dict()
        self._network = httpx2.AsyncHTTPTransport()

    def headers(self) -> dict[str, str]:
        return {"content-type": "application/json", "accept": "application/json, text/event-stream",
                "mcp-protocol-version": "2025-11-25", _PROBE_MARK: "1"}

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        if request.headers.get(_PROBE_MARK) == "1" and request.url == self._url:
            challenge, self._challenge = self._challenge, None
            if challenge is not None:
                return httpx2.Response(challenge.status, headers=list(challenge.headers), request=request)
            return httpx2.Response(200, json={"jsonrpc": "2.0", "id": "lockgate-auth", "result": {}}, request=request)
        # The SDK makes its requests itself, without the client's timeout: without one they would wait for ever.
        request.extensions.setdefault("timeout", self._timeout)
        return await self._network.handle_async_request(request)

    async def aclose(self) -> None:
        await self._network.aclose()


def _with_redirect(client: OAuthClientInformationFull, uri: AnyUrl) -> OAuthClientInformationFull:
    return client.model_copy(update={"redirect_uris": [uri]})


def _www_field(challenge: Challenge, name: str) -> str | None:
    for key, value in challenge.headers:
        if key.lower() == b"www-authenticate":
            text = value.decode("latin-1")
            marker = f'{name}="'
            if marker in text:
                return text.split(marker, 1)[1].split('"', 1)[0]
    return None


def _transport(exc: httpx2.TransportError) -> str:
    url = exc.request.url if _has_request(exc) else None
    where = f"{url.host}:{url.port or (443 if url.scheme == 'https' else 80)}" if url is not None else "it"
    if isinstance(exc, httpx2.ConnectError):
        return f"cannot connect to {where}"
    return f"{type(exc).__name__} talking to {where}"


def _has_request(exc: httpx2.TransportError) -> bool:
    try:
        exc.request
    except RuntimeError:
        return False
    return True


_WRONG_STATE = "the login's redirect carried the wrong state"


def _flow_failure(exc: Exception) -> str:
    """A short reason for a failed flow, never a token: the SDK's words, first line, cut."""
    if isinstance(exc, ValidationError):
        return "the authorization server answered with something that is not valid OAuth metadata or a token"
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if "State parameter mismatch" in text:
        return _WRONG_STATE
    return f"OAuth failed: {text[:200]}"


def browser_opener(announce: Callable[[str], None]) -> Opener:
    """An :data:`Opener` that says the URL (``announce``) and opens the browser (``BROWSER`` names which)."""

    async def open_browser(url: str) -> None:
        announce(url)
        await trio.to_thread.run_sync(webbrowser.open, url)

    return open_browser

