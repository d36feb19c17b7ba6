"""The store: users and API keys in SQL, one object for the CLI and the gateway alike.

Every method is synchronous and safe to call from several threads at once
(the engine pools connections; the only state of its own, the last-used
times waiting to be written, has a lock). A gateway calls it from worker
threads, never from its event loop. Each change runs in one transaction
that also raises the change counter (:mod:`.schema`), which is how other
gateways sharing the database learn of it within a poll.

Times passed in (``now``) are aware datetimes; left out, they are the
current UTC time. Everything refused is a :class:`~.errors.StoreError`
whose text is one line for the operator.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Row, Select, func, insert, select, update
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.exc import IntegrityError

from lockgate.core import Role, grant_problem, parse_rate

from . import migrate, passwords
from .apikeys import new_key_id, new_secret, parse_secret, secret_hash, secret_matches
from .database import describe, open_engine, parse_url, unavailable_on_failure
from .errors import Conflict, InvalidInput, NotFound, SchemaProblem
from .migrate import SchemaStatus
from .records import KeyRecord, LoginResult, Snapshot, UserRecord
from .schema import CHANGES_ROW, api_keys, changes, revocations, users

__all__ = ["ROLES", "Store"]

#: The roles, least first.
ROLES: tuple[Role, ...] = ("user", "admin")

_USER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
_KEY_NAME_MAX = 128
_TOKEN_ID_MAX = 128
#: A fresh key id can collide with one in use (32 bits); this many tries
#: make a failure at any realistic number of keys vanishingly rare.
_KEY_ID_TRIES = 8


def _now(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(UTC)
    if now.tzinfo is None:
        raise ValueError("naive datetime: pass an aware one (UTC)")
    return now.astimezone(UTC)


def _role(role: str) -> Role:
    if role == "admin":
        return "admin"
    if role == "user":
        return "user"
    raise InvalidInput(f"{role!r} is not a role: use admin or user")


def _lesser(a: Role, b: Role) -> Role:
    return a if ROLES.index(a) <= ROLES.index(b) else b


def _check_user_name(name: str) -> str:
    if not _USER_NAME.fullmatch(name):
        raise InvalidInput(
            f"{name!r} is not a user name: 1 to 64 letters, digits and . _ @ -, starting with a letter or digit"
        )
    return name


def _check_agents(agents: Iterable[str]) -> tuple[str, ...]:
    grants = tuple(dict.fromkeys(grant.strip() for grant in agents if grant.strip()))
    if not grants:
        raise InvalidInput("a key needs at least one agent grant: an agent id (backend), a subtree (backend.*) or *")
    for grant in grants:
        problem = grant_problem(grant)
        if problem is not None:
            raise InvalidInput(problem)
    return grants


def _check_rate(rate: str | None) -> str | None:
    if rate is None:
        return None
    parsed = parse_rate(rate)
    if parsed is None:
        raise InvalidInput(f"{rate!r} is not a rate: use COUNT/UNIT, such as 120/min (units: s, min, h)")
    return str(parsed)


class Store:
    """Users, API keys and revoked token ids in one SQL database (SQLite or PostgreSQL).

    Open one with :meth:`open`; close it with :meth:`close` or a ``with``
    block. The schema is not touched on opening: call
    :meth:`ensure_schema` (start-up) or :meth:`upgrade` first.
    """

    def __init__(self, engine: Engine, url: URL) -> None:
        self._engine = engine
        self._url = url
        self._pending_use: dict[str, datetime] = {}
        self._pending_lock = threading.Lock()

    @classmethod
    def open(cls, url: str) -> Store:
        """Open the database at ``url`` (see :func:`~.database.parse_url`) and check that it answers.

        Raises:
            InvalidInput: the URL is not one Lockgate can use.
            DatabaseUnavailable: the database cannot be reached or opened;
                the message names it (file, or host and port), without a password.
        """
        parsed = parse_url(url)
        return cls(open_engine(parsed), parsed)

    @classmethod
    def open_current(cls, url: str, note: Callable[[str], None]) -> Store:
        """:meth:`open`, then :meth:`ensure_schema`: a store whose schema is this version's; ``note`` hears of an upgrade.

        Raises:
            StoreError: as :meth:`open` and :meth:`ensure_schema`; nothing is left open.
        """
        store = cls.open(url)
        try:
            upgraded = store.ensure_schema()
        except BaseException:
            store.close()
            raise
        if upgraded is not None:
            note(upgraded)
        return store

    def close(self) -> None:
        """Write the last-used times still waiting, and close every pooled connection."""
        try:
            self.flush_last_used()
        finally:
            self._engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def description(self) -> str:
        """The database in words for messages (a file, or host, port, database and user); never a password."""
        return describe(self._url)

    # Schema

    def schema_status(self) -> SchemaStatus:
        """Where the schema stands; changes nothing."""
        with self._connect() as connection:
            return migrate.read_status(connection)

    def upgrade(self) -> tuple[SchemaStatus, SchemaStatus]:
        """Upgrade the schema to the latest revision; the status before and after.

        Raises:
            SchemaProblem: the database is at a revision this Lockgate does
                not know, or Lockgate's tables cannot be created in it.
        """
        self._refuse_unknown(self.schema_status())
        with unavailable_on_failure(self._url):
            return migrate.upgrade(self._engine)

    def ensure_schema(self) -> str | None:
        """The start-up check: upgrade a schema that is behind (or missing), and say so; ``None`` when it was current.

        Raises:
            SchemaProblem: as :meth:`upgrade`.
        """
        status = self.schema_status()
        self._refuse_unknown(status)
        if status.state == "current":
            return None
        before, after = self.upgrade()
        if before.state == "current":
            return None  # another process upgraded it meanwhile
        was = "an empty database" if before.current is None else f"revision {before.current}"
        return f"upgraded the database schema ({self.description}) from {was} to revision {after.current}"

    def _refuse_unknown(self, status: SchemaStatus) -> None:
        if status.state == "unknown":
            raise SchemaProblem(f"the {self.description} has schema {status}; upgrade Lockgate to use it")

    # Users

    def create_user(self, name: str, role: str, password: str, *, now: datetime | None = None) -> UserRecord:
        """Add a user.

        Raises:
            InvalidInput: a bad name, role or password.
            Conflict: a user of that name exists.
        """
        _check_user_name(name)
        password_hash = passwords.hash_password(password)
        values = {
            "name": name,
            "role": _role(role),
            "password_hash": password_hash,
            "disabled": False,
            "created_at": _now(now),
            "last_login_at": None,
        }
        try:
            with self._change() as connection:
                connection.execute(insert(users).values(values))
        except IntegrityError:
            raise Conflict(f"user {name!r} exists already") from None
        return self.get_user(name)

    def list_users(self) -> list[UserRecord]:
        """Every user, by name."""
        with self._connect() as connection:
            return [_user(row) for row in connection.execute(select(users).order_by(users.c.name))]

    def get_user(self, name: str) -> UserRecord:
        """The user called ``name``.

        Raises:
            NotFound: no such user.
        """
        with self._connect() as connection:
            row = connection.execute(select(users).where(users.c.name == name)).first()
        if row is None:
            raise NotFound(f"no user named {name!r}")
        return _user(row)

    def set_role(self, name: str, role: str) -> UserRecord:
        """Give ``name`` another role (their keys follow: a key never has more than its owner).

        Raises:
            InvalidInput: not a role. NotFound: no such user.
        """
        self._update_user(name, role=_role(role))
        return self.get_user(name)

    def set_disabled(self, name: str, disabled: bool) -> UserRecord:
        """Disable a user (their password and keys stop working) or enable them again.

        Raises:
            NotFound: no such user.
        """
        self._update_user(name, disabled=disabled)
        return self.get_user(name)

    def set_password(self, name: str, password: str) -> None:
        """Replace ``name``'s password.

        Raises:
            InvalidInput: too short or too long. NotFound: no such user.
        """
        self._update_user(name, password_hash=passwords.hash_password(password))

    def verify_password(self, name: str, password: str, *, now: datetime | None = None) -> LoginResult:
        """Check ``name``'s password; on success record the login time (and rehash an outdated hash).

        Takes as long for an unknown or disabled user as for a wrong password,
        so timing tells nothing. Slow by design: call it off the event loop.
        """
        with self._connect() as connection:
            row = connection.execute(select(users).where(users.c.name == name)).first()
        stored = None if row is None else str(row.password_hash)
        if not passwords.verify_password(stored, password) or row is None:
            return LoginResult(None, "unknown user" if row is None else "wrong password")
        user = _user(row)
        if user.disabled:
            return LoginResult(None, "user disabled")
        values: dict[str, Any] = {"last_login_at": _now(now)}
        if passwords.needs_rehash(row.password_hash):
            values["password_hash"] = passwords.hash_password(password)
        with self._connect() as connection, connection.begin():
            # No change counter: a login changes nothing a gateway caches.
            connection.execute(update(users).where(users.c.id == row.id).values(values))
        return LoginResult(self.get_user(name))

    def has_admin(self) -> bool:
        """Is there an enabled admin user?"""
        query = select(users.c.id).where(users.c.role == "admin", users.c.disabled.is_(False)).limit(1)
        with self._connect() as connection:
            return connection.execute(query).first() is not None

    def _update_user(self, name: str, **values: Any) -> None:
        with self._change() as connection:
            if connection.execute(update(users).where(users.c.name == name).values(values)).rowcount == 0:
                raise NotFound(f"no user named {name!r}")

    # Keys

    def create_key(
        self,
        name: str,
        *,
        role: str,
        agents: Sequence[str],
        expires_at: datetime | None = None,
        rate: str | None = None,
        user: str | None = None,
        now: datetime | None = None,
    ) -> tuple[KeyRecord, str]:
        """Make an API key; its record and its secret, which is not kept and cannot be shown again.

        ``agents`` are grants (``backend``, ``backend.*``, ``*``), ``rate``
        a limit such as ``120/min``, ``user`` the owner's name (``None``: the
        key stands alone). An owned key's role is at most its owner's.

        Raises:
            InvalidInput: an empty name, a bad role, grant or rate, an expiry
                that is not in the future, or a role above the owner's.
            NotFound: no such owner.
        """
        name = name.strip()
        if not name or len(name) > _KEY_NAME_MAX or not name.isprintable():
            raise InvalidInput(f"a key name is 1 to {_KEY_NAME_MAX} printable characters")
        key_role = _role(role)
        grants = _check_agents(agents)
        created = _now(now)
        if expires_at is not None and _now(expires_at) <= created:
            raise InvalidInput(f"the expiry {_now(expires_at).isoformat()} is not in the future")
        values: dict[str, Any] = {
            "name": name,
            "role": key_role,
            "agents": list(grants),
            "expires_at": expires_at,
            "rate": _check_rate(rate),
            "revoked": False,
            "revoked_at": None,
            "created_at": created,
            "last_used_at": None,
        }
        for _ in range(_KEY_ID_TRIES):
            key_id = new_key_id()
            secret = new_secret(key_id)
            try:
                with self._change() as connection:
                    values["user_id"] = None if user is None else self._owner_id(connection, user, key_role)
                    row = {**values, "key_id": key_id, "secret_hash": secret_hash(secret)}
                    connection.execute(insert(api_keys).values(row))
            except IntegrityError:
                continue  # the key id was taken: draw another
            return self.get_key(key_id), secret
        raise InvalidInput("could not draw an unused key id; try again")  # pragma: no cover

    def _owner_id(self, connection: Connection, name: str, role: Role) -> int:
        owner = connection.execute(select(users.c.id, users.c.role).where(users.c.name == name)).first()
        if owner is None:
            raise NotFound(f"no user named {name!r}")
        if role == "admin" and owner.role != "admin":
            raise InvalidInput(f"user {name!r} has role {owner.role}: a key of theirs cannot have role admin")
        return int(owner.id)

    def list_keys(self) -> list[KeyRecord]:
        """Every key, oldest first."""
        with self._connect() as connection:
            return [_key(row) for row in connection.execute(_KEYS.order_by(api_keys.c.created_at, api_keys.c.id))]

    def get_key(self, key_id: str) -> KeyRecord:
        """The key with this id.

        Raises:
            NotFound: no such key.
        """
        with self._connect() as connection:
            row = connection.execute(_KEYS.where(api_keys.c.key_id == key_id)).first()
        if row is None:
            raise NotFound(f"no key with id {key_id!r}")
        return _key(row)

    def revoke_key(self, key_id: str, *, now: datetime | None = None) -> bool:
        """Revoke a key for good; ``False`` if it was revoked already.

        Raises:
            NotFound: no such key.
        """
        with self._connect() as connection:
            found = connection.execute(select(api_keys.c.revoked).where(api_keys.c.key_id == key_id)).first()
        if found is None:
            raise NotFound(f"no key with id {key_id!r}")
        if found.revoked:
            return False
        with self._change() as connection:
            revoke = update(api_keys).where(api_keys.c.key_id == key_id, api_keys.c.revoked.is_(False))
            done = connection.execute(revoke.values(revoked=True, revoked_at=_now(now))).rowcount
        return done == 1

    def lookup(self, secret: str) -> KeyRecord | None:
        """The key whose secret this is, else ``None`` (malformed, unknown or wrong).

        The shape is checked before any query, and the hash compared in
        constant time. A revoked, expired or owner-disabled key is returned
        all the same: its :meth:`~.records.KeyRecord.state` says why it may
        not be used, for the audit record.
        """
        parsed = parse_secret(secret)
        if parsed is None:
            return None
        with self._connect() as connection:
            row = connection.execute(_KEYS.where(api_keys.c.key_id == parsed.key_id)).first()
        if row is None or not secret_matches(secret, row.secret_hash):
            return None
        return _key(row)

    def touch_last_used(self, key_id: str, *, when: datetime | None = None) -> None:
        """Note that a key was used; written by the next :meth:`flush_last_used`, not now (it is per call)."""
        moment = _now(when)
        with self._pending_lock:
            previous = self._pending_use.get(key_id)
            if previous is None or previous < moment:
                self._pending_use[key_id] = moment

    def flush_last_used(self) -> int:
        """Write the last-used times noted since the last flush, in one transaction; how many keys.

        If the write fails they are kept for the next flush, and the error propagates.
        """
        with self._pending_lock:
            pending, self._pending_use = self._pending_use, {}
        if not pending:
            return 0
        try:
            with self._connect() as connection, connection.begin():
                # No change counter: when a key was last used is not a change to what it may do.
                for key_id, moment in sorted(pending.items()):
                    connection.execute(update(api_keys).where(api_keys.c.key_id == key_id).values(last_used_at=moment))
        except BaseException:
            with self._pending_lock:
                for key_id, moment in pending.items():
                    self._pending_use[key_id] = max(moment, self._pending_use.get(key_id, moment))
            raise
        return len(pending)

    # Revoked delegated tokens

    def revoke_token(self, token_id: str, *, now: datetime | None = None) -> bool:
        """Record a delegated token's id as revoked; ``False`` if it was already.

        Raises:
            InvalidInput: an empty or overlong id.
        """
        if not token_id or len(token_id) > _TOKEN_ID_MAX:
            raise InvalidInput(f"a token id is 1 to {_TOKEN_ID_MAX} characters")
        with self._connect() as connection:
            found = connection.execute(select(revocations.c.token_id).where(revocations.c.token_id == token_id))
            if found.first() is not None:
                return False
        try:
            with self._change() as connection:
                connection.execute(insert(revocations).values(token_id=token_id, revoked_at=_now(now)))
        except IntegrityError:
            return False  # revoked by another process meanwhile
        return True

    def revoked_tokens(self) -> frozenset[str]:
        """Every revoked token id."""
        with self._connect() as connection:
            return frozenset(connection.execute(select(revocations.c.token_id)).scalars())

    # What gateways cache

    def change_marker(self) -> int:
        """A number that moves whenever users, keys or revocations change: one row read by primary key."""
        with self._connect() as connection:
            return int(connection.execute(select(changes.c.counter).where(changes.c.id == CHANGES_ROW)).scalar_one())

    def snapshot(self) -> Snapshot:
        """Every user and key (no secrets, no password hashes) and every revoked token id, with the change marker."""
        with self._connect() as connection:
            # The marker first: see Snapshot.
            marker = int(connection.execute(select(changes.c.counter).where(changes.c.id == CHANGES_ROW)).scalar_one())
            user_rows = connection.execute(select(users).order_by(users.c.name)).all()
            key_rows = connection.execute(_KEYS.order_by(api_keys.c.created_at, api_keys.c.id)).all()
            revoked = frozenset(connection.execute(select(revocations.c.token_id)).scalars())
        return Snapshot(
            marker=marker,
            users={row.name: _user(row) for row in user_rows},
            keys={row.key_id: _key(row) for row in key_rows},
            revoked_tokens=revoked,
        )

    # Connections

    @contextmanager
    def _connect(self) -> Iterator[Connection]:
        """A pooled connection; losing the database inside becomes DatabaseUnavailable."""
        with unavailable_on_failure(self._url), self._engine.connect() as connection:
            yield connection

    @contextmanager
    def _change(self) -> Iterator[Connection]:
        """A transaction that changes what gateways cache: it raises the change counter before it commits."""
        with self._connect() as connection, connection.begin():
            yield connection
            connection.execute(update(changes).where(changes.c.id == CHANGES_ROW).values(counter=changes.c.counter + 1))


_KEYS: Select[Any] = select(
    api_keys,
    users.c.name.label("owner"),
    users.c.role.label("owner_role"),
    func.coalesce(users.c.disabled, False).label("owner_disabled"),
).select_from(api_keys.outerjoin(users, api_keys.c.user_id == users.c.id))


def _user(row: Row[Any]) -> UserRecord:
    return UserRecord(
        name=row.name,
        role=_role(row.role),
        disabled=bool(row.disabled),
        created_at=row.created_at,
        last_login_at=row.last_login_at,
    )


def _key(row: Row[Any]) -> KeyRecord:
    role = _role(row.role)
    return KeyRecord(
        key_id=row.key_id,
        name=row.name,
        role=role if row.owner_role is None else _lesser(role, _role(row.owner_role)),
        agents=tuple(row.agents),
        user=row.owner,
        owner_disabled=bool(row.owner_disabled),
        expires_at=row.expires_at,
        rate=row.rate,
        revoked=bool(row.revoked),
        revoked_at=row.revoked_at,
        created_at=row.created_at,
        last_used_at=row.last_used_at,
        secret_hash=row.secret_hash,
    )
