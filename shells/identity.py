"""Who is calling: a request's credential, verified without a database read, as a core Principal.

Theory of operation. :class:`Identity` keeps a :class:`~.store.Snapshot` of
the store's users, keys and revoked token ids in memory, and a task
(:meth:`Identity.keep_fresh`) reads a new one whenever the store's change
marker moves, polling it every :data:`REFRESH` seconds in a worker thread.
How fresh the snapshot is goes by the monotonic clock, so an
:class:`Identity` opened before serving works in any trio run.
So a revoke reaches every gateway that shares the database within about a
second, and no call waits on a query. With ``GATEWAY_REDIS_URL`` set, the
gateway (or command) that made a change also announces it on Redis, and
every replica that hears it looks at the store at once (:meth:`Identity.nudge`).

:meth:`Identity.authenticate` takes the credential a request presents (an
API key, or a bearer token that the token verifier checks offline) and
returns the :class:`~lockgate.core.Principal` it proves, or a
:class:`Refused` with the HTTP status to answer and a reason for the audit
record. It fails closed: when the snapshot is older than :data:`STALE`
(the database stopped answering), every credential is refused with 503,
never waved through.

Nothing here decides what a principal may do; the core does.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Literal

import trio

from lockgate.core import AuthenticationFailed, AuthenticationSucceeded, ClientId, Event, Principal, parse_rate

from .auth import BearerTokens, TokenIssuer
from .auth.credentials import TokenRefused, VerifiedCredential, is_revoked
from .logs import get_logger
from .store import KEY_PREFIX, Snapshot, Store, UserRecord, database_url, parse_secret

__all__ = [
    "REFRESH",
    "STALE",
    "Authentication",
    "HeldCredential",
    "Identity",
    "Refused",
    "login_principal",
    "open_authentication",
    "presented_credential",
]

_log = get_logger("identity")

#: Seconds between two reads of the store's change marker.
REFRESH = 0.5
#: Seconds without a successful read after which every credential is refused (503).
STALE = 5.0
#: The longest credential read from a header; longer ones are refused unread.
MAX_CREDENTIAL = 8192
#: Verified tokens remembered, the oldest forgotten first.
MAX_VERIFIED = 10_000
# Seconds the core's clock may drift from the wall clock before a cached principal's expiry is moved again.
_CLOCK_DRIFT = 0.05
# Seconds between two notes of one key's use.
_TOUCH_EVERY = 1.0

#: A token verifier: the token and the wall-clock time, to what it proves or why not.
TokenVerifier = Callable[[str, float], "VerifiedCredential | TokenRefused"]


@dataclass(frozen=True, slots=True)
class Refused:
    """A credential that proves nothing: the status to answer (401, or 503 when the store is out of reach) and why.

    ``credential`` names it for the audit record when it could be told (a
    key id, a principal id), never with its secret.
    """

    status: Literal[401, 503]
    reason: str
    credential: str | None = None


def login_principal(user: UserRecord) -> Principal:
    """What a signed-in user may act as: an admin every agent, a user the agent of their name and those below it."""
    agents = ("*",) if user.role == "admin" else (user.name, f"{user.name}.*")
    return Principal(id=user.principal_id, role=user.role, agents=agents)


def presented_credential(headers: Mapping[str, str]) -> str | None:
    """The credential of a request: ``Authorization: Bearer …``, else ``X-API-Key``; ``None`` when there is none.

    Any other ``Authorization`` scheme counts as none, so it gets the
    401 that names the bearer scheme.
    """
    authorization = headers.get("authorization")
    if authorization is not None:
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    api_key = headers.get("x-api-key")
    return api_key.strip() if api_key is not None and api_key.strip() else None


class Identity:
    """Credentials as the gateway sees them; see the module docstring."""

    def __init__(
        self,
        store: Store,
        verify_token: TokenVerifier | None = None,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._verify_token = verify_token
        self._clock = clock
        self._monotonic = monotonic
        self._snapshot: Snapshot | None = None
        # Credentials checked in full (a token's signature costs more than a call, see
        # bench/auth_overhead.py), and their principals with the clock offset their
        # expiry was moved by. Both start empty with each snapshot, which is how a
        # revoke or a disabled user takes effect (a token's revoked ancestors are
        # checked before it is kept); expiry is still checked on every use.
        self._verified: dict[str, VerifiedCredential] = {}
        self._principals: dict[str, tuple[Principal, float]] = {}
        # When each key's use was last noted (monotonic): noted at most once a second.
        self._touched: dict[str, float] = {}
        self._revoked: frozenset[str] = frozenset()
        self._fresh_at = float("-inf")
        self._failing = False
        self._nudged = trio.Event()

    @property
    def store(self) -> Store:
        """The store behind the cache, for what changes it (the ``/auth/`` endpoints)."""
        return self._store

    @property
    def has_admin(self) -> bool:
        """Does the snapshot have an enabled admin user (someone who can manage users and keys)?"""
        snapshot = self._snapshot
        return snapshot is not None and any(u.role == "admin" and not u.disabled for u in snapshot.users.values())

    @property
    def available(self) -> bool:
        """Is the snapshot recent enough to trust (for ``/ready``)?"""
        return self._snapshot is not None and self._monotonic() - self._fresh_at <= STALE

    async def load(self) -> None:
        """Read the first snapshot; raises what the store raises (the caller refuses to start)."""
        self._take(await trio.to_thread.run_sync(self._store.snapshot))

    def nudge(self) -> None:
        """Look at the store now rather than at the next poll: another replica says users or keys changed."""
        self._nudged.set()

    async def keep_fresh(self) -> None:
        """Follow the store's changes for ever; see the module docstring."""
        while True:
            with trio.move_on_after(REFRESH):
                await self._nudged.wait()
            self._nudged = trio.Event()
            try:
                marker = await trio.to_thread.run_sync(self._store.change_marker)
                if self._snapshot is None or marker != self._snapshot.marker:
                    self._take(await trio.to_thread.run_sync(self._store.snapshot))
                else:
                    self._fresh_at = self._monotonic()
                await trio.to_thread.run_sync(self._store.flush_last_used)
            except Exception as exc:  # the database is down or answers garbage: stale, so refuse
                if not self._failing:
                    _log.error(f"cannot read the credential store: {type(exc).__name__}; authenticated requests are refused until it answers")
                self._failing = True
            else:
                if self._failing:
                    _log.warning("the credential store answers again")
                self._failing = False

    def _take(self, snapshot: Snapshot) -> None:
        self._snapshot = snapshot
        self._verified = {}
        self._principals = {}
        self._fresh_at = self._monotonic()
        # Revoking a key or disabling a user revokes every token delegated from them.
        self._revoked = snapshot.revoked_tokens | {
            *(key.principal_id for key in snapshot.keys.values() if key.revoked),
            *(user.principal_id for user in snapshot.users.values() if user.disabled),
        }

    def authenticate(self, credential: str | None, event_now: float) -> Principal | Refused:
        """The principal ``credential`` proves, with its expiry on the core's clock at ``event_now``, or why not."""
        now = self._clock()
        verified = self.verify(credential, now)
        if isinstance(verified, Refused):
            return verified
        # The principal is the same on every call: made once per snapshot, its expiry
        # moved onto the core's clock, and again only if the two clocks drift apart.
        assert credential is not None
        offset = event_now - now
        cached = self._principals.get(credential)
        if cached is not None and abs(cached[1] - offset) <= _CLOCK_DRIFT:
            return cached[0]
        principal = verified.to_principal(now=now, event_now=event_now)
        if cached is not None or len(self._principals) < MAX_VERIFIED:
            self._principals[credential] = (principal, offset)
        return principal

    def verify(self, credential: str | None, now: float) -> VerifiedCredential | Refused:
        """What ``credential`` proves at wall-clock ``now`` (for delegating from it), or why not."""
        if credential is None:
            return Refused(401, "no credential")
        if len(credential) > MAX_CREDENTIAL:
            return Refused(401, "credential too large")
        snapshot = self._snapshot
        if snapshot is None or self._monotonic() - self._fresh_at > STALE:
            return Refused(503, "credential store unavailable")
        verified = self._verified.get(credential)
        if verified is not None and verified.expires_at is not None and verified.expires_at <= now:
            # Past its expiry: checked again (a token's verifier has some leeway; a key is refused).
            del self._verified[credential]
            verified = None
        if verified is None:
            checked = self._check(snapshot, credential, now)
            if isinstance(checked, Refused):
                return checked
            verified = checked
            if not verified.principal_id.startswith("key:") and is_revoked(verified.lineage, self._revoked):
                # Checked once per snapshot: the revoked ids change only with one, which empties the cache.
                return Refused(401, "token revoked", verified.principal_id)
            if verified.expires_at is None or verified.expires_at > now:
                if len(self._verified) >= MAX_VERIFIED:
                    del self._verified[next(iter(self._verified))]  # the oldest
                self._verified[credential] = verified
        if verified.principal_id.startswith("key:"):
            self._touch(verified.principal_id)
        return verified

    def _touch(self, principal_id: str) -> None:
        """Note a key's use for its last-used time, which is kept to the second."""
        moment = self._monotonic()
        if moment - self._touched.get(principal_id, -_TOUCH_EVERY) >= _TOUCH_EVERY:
            if len(self._touched) >= MAX_VERIFIED:
                self._touched.clear()
            self._touched[principal_id] = moment
            self._store.touch_last_used(principal_id.removeprefix("key:"))

    def _check(self, snapshot: Snapshot, credential: str, now: float) -> VerifiedCredential | Refused:
        """The full check of a credential not in the cache: an API key against the snapshot, or a token's signature."""
        if parse_secret(credential) is not None:
            return self._key(snapshot, credential, now)
        if credential.startswith(KEY_PREFIX):
            return Refused(401, "malformed API key")
        if self._verify_token is None:
            return Refused(401, "bearer tokens are not accepted")
        checked = self._verify_token(credential, now)
        if isinstance(checked, TokenRefused):
            return Refused(401, f"token {checked.reason.value}")
        return checked

    def _key(self, snapshot: Snapshot, secret: str, now: float) -> VerifiedCredential | Refused:
        record = snapshot.lookup(secret)
        if record is None:
            parsed = parse_secret(secret)
            return Refused(401, "unknown API key", None if parsed is None else f"key:{parsed.key_id}")
        state = record.state(datetime.fromtimestamp(now, timezone.utc))
        if state != "active":
            return Refused(401, f"API key {state}", record.principal_id)
        return VerifiedCredential(
            principal_id=record.principal_id,
            credential_id=record.principal_id,
            # An owned key speaks for its user: disabling the user revokes what was delegated from the key.
            subject=f"user:{record.user}" if record.user is not None else record.principal_id,
            issuer="lockgate",
            role=record.role,
            agents=record.agents,
            rate=parse_rate(record.rate) if record.rate else None,
            expires_at=None if record.expires_at is None else record.expires_at.timestamp(),
        )


@dataclass(frozen=True, slots=True)
class Authentication:
    """What serving with authentication needs, opened before serving: the store, its cache, the token verifiers."""

    identity: Identity
    bearer: BearerTokens

    @property
    def issuer(self) -> TokenIssuer:
        """Lockgate's own token issuer (login and delegation)."""
        return self.bearer.lockgate

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Keep the credential cache and an external issuer's keys fresh, for ever."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.identity.keep_fresh)
            nursery.start_soon(self.bearer.keep_fresh)
            task_status.started()


@dataclass(frozen=True, slots=True)
class HeldCredential:
    """A credential a process presents for its whole life (stdio's ``GATEWAY_API_KEY``), checked again as the store changes.

    Over HTTP every request presents its credential; over stdio the one
    client presents it once, at start, so a revoke has to reach the session
    another way: :meth:`watch` checks it again every :data:`REFRESH` seconds
    and reports each change of outcome to the core, which refuses the
    session's calls while it proves nothing. The secret is never logged.
    """

    authentication: Authentication
    secret: str = dataclasses.field(repr=False)

    def check(self, event_now: float) -> Principal | Refused:
        """What the credential proves now, its expiry on the core's clock at ``event_now``."""
        return self.authentication.identity.authenticate(self.secret, event_now)

    async def watch(
        self,
        report: Callable[[Event], Awaitable[None]],
        client: ClientId,
        first: Principal | Refused,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Keep the store fresh and report each change of what the credential proves (``first`` at start), for ever."""
        async with trio.open_nursery() as nursery:
            await nursery.start(self.authentication.run)
            task_status.started()
            last = _outcome(first)
            while True:
                await trio.sleep(REFRESH)
                now = trio.current_time()
                checked = self.check(now)
                if _outcome(checked) == last:
                    continue
                last = _outcome(checked)
                if isinstance(checked, Principal):
                    await report(AuthenticationSucceeded(now=now, principal=checked, client=client))
                else:
                    _log.warning(f"the client's credential no longer counts: {checked.reason}; its calls are refused")
                    await report(
                        AuthenticationFailed(now=now, reason=checked.reason, credential=checked.credential, client=client)
                    )


def _outcome(checked: Principal | Refused) -> object:
    """What matters of a check for telling a change: the principal but for its expiry's clock, or the refusal."""
    return dataclasses.replace(checked, expires=None) if isinstance(checked, Principal) else checked


async def open_authentication(environ: Mapping[str, str]) -> tuple[Authentication, str | None]:
    """Open the store (upgrading a schema that is behind), read its first snapshot, set up the token verifiers.

    Returns the authentication and a note to log (a schema upgrade), if any.

    Raises:
        StoreError: the database cannot be reached or its schema is not one this Lockgate knows.
        TokenSetupError: a token setting that cannot be used.
    """
    bearer = BearerTokens.from_environ(environ)
    store = await trio.to_thread.run_sync(Store.open, database_url(None, environ))
    try:
        note = await trio.to_thread.run_sync(store.ensure_schema)
        identity = Identity(store, lambda token, now: bearer.verify_offline(token, now=now))
        await identity.load()
    except BaseException:
        store.close()
        raise
    return Authentication(identity, bearer), note
