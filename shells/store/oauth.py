"""OAuth tokens and clients for downstream servers, sealed in the store's database: put, get, delete, list.

Lockgate gets a token from a downstream MCP server's authorization server for
a Lockgate principal, or for the whole gateway (principal :data:`GATEWAY`,
``""``), and registers itself there as a client (dynamic client
registration). Both are secrets: each is stored sealed by a
:class:`~lockgate.shells.sealed.SecretBox` for its own row (the associated
data names the table, the server and the principal or issuer), so a sealed
value copied into another row does not open.

An :class:`OAuthStore` works on an open :class:`~.store.Store` (same
database, same connections, same error mapping); like the store its methods
are synchronous and thread-safe. Reading or writing a value needs the box;
listing and deleting do not, and listing gives metadata only (server,
principal or issuer, expiry, scopes, when stored), never a sealed value or
anything opened from one.

Like registrations, these rows do not raise the change counter: it tells
gateways to read users and keys again, which a token does not change.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Row, Select, Table, delete, select
from sqlalchemy.dialects import postgresql, sqlite

from ..sealed import SecretBox, associated_data
from .errors import InvalidInput
from .schema import oauth_clients, oauth_tokens
from .store import Store, _now

__all__ = ["GATEWAY", "ClientRecord", "OAuthStore", "StoredClient", "StoredToken", "TokenRecord"]

#: The principal of a gateway-wide token: one every principal's calls to the server use.
GATEWAY = ""

_SERVER_MAX = 128
_PRINCIPAL_MAX = 255
_ISSUER_MAX = 1024
#: RFC 6749, section 3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E ).
_SCOPE = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")
#: The kinds of place a value is sealed for (see :func:`~lockgate.shells.sealed.associated_data`).
_TOKEN_PLACE = "oauth-token"
_CLIENT_PLACE = "oauth-client"


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenRecord:
    """What may be shown of a stored token: whose it is, for which server, its scopes and expiry; no secret."""

    server: str
    #: A Lockgate principal id (``user:alice``), or :data:`GATEWAY` (``""``) for the gateway-wide token.
    principal: str
    expires_at: datetime | None
    scopes: tuple[str, ...]
    updated_at: datetime

    @property
    def gateway_wide(self) -> bool:
        """Is this the gateway's own token for the server, rather than one principal's?"""
        return self.principal == GATEWAY

    def expired(self, now: datetime) -> bool:
        """Has it expired at ``now``? A token without an expiry never has."""
        return self.expires_at is not None and self.expires_at <= now


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredToken:
    """A token as stored: its record, and the opened token response (kept out of ``repr``)."""

    record: TokenRecord
    value: dict[str, Any] = field(repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientRecord:
    """What may be shown of a registered client: the server and issuer it is for; no secret."""

    server: str
    issuer: str
    updated_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredClient:
    """A client as stored: its record, and the opened client information (kept out of ``repr``)."""

    record: ClientRecord
    value: dict[str, Any] = field(repr=False)


class OAuthStore:
    """The ``oauth_tokens`` and ``oauth_clients`` tables of ``store``'s database (see the module docstring).

    ``box`` seals and opens values; without one, only listing and deleting work.
    """

    def __init__(self, store: Store, box: SecretBox | None = None) -> None:
        self._store = store
        self._box_or_none = box

    # Tokens

    def put_token(
        self,
        server: str,
        principal: str,
        value: Mapping[str, Any],
        *,
        expires_at: datetime | None = None,
        scopes: Iterable[str] = (),
        now: datetime | None = None,
    ) -> TokenRecord:
        """Store ``principal``'s token for ``server``, replacing the one stored; what may be shown of it.

        ``value`` is the token response (JSON: access and refresh token, type
        and the like); ``expires_at`` and ``scopes`` are kept beside it for
        listing.

        Raises:
            InvalidInput: a bad server name, principal or scope, a naive
                expiry, or a value that is not JSON or is too large.
        """
        _check_name(server, "a server name", _SERVER_MAX)
        _check_principal(principal)
        granted = _check_scopes(scopes)
        if expires_at is not None:
            expires_at = _aware(expires_at, "the token's expiry")
        sealed = self._seal(value, associated_data(_TOKEN_PLACE, server, principal))
        values: dict[str, Any] = {"sealed": sealed, "expires_at": expires_at, "scopes": list(granted), "updated_at": _now(now)}
        self._upsert(oauth_tokens, {"server": server, "principal": principal}, values)
        return TokenRecord(server=server, principal=principal, expires_at=expires_at, scopes=granted, updated_at=values["updated_at"])

    def get_token(self, server: str, principal: str) -> StoredToken | None:
        """``principal``'s token for ``server`` (:data:`GATEWAY` for the gateway's), else ``None``.

        Raises:
            UnsealError: it is stored but does not open (another secret key,
                or the row's sealed value was altered or copied from another).
        """
        where = (oauth_tokens.c.server == server) & (oauth_tokens.c.principal == principal)
        with self._store._connect() as connection:
            row = connection.execute(select(oauth_tokens).where(where)).first()
        if row is None:
            return None
        value = self._open(row.sealed, associated_data(_TOKEN_PLACE, server, principal))
        return StoredToken(record=_token(row), value=value)

    def delete_token(self, server: str, principal: str) -> bool:
        """Forget ``principal``'s token for ``server``; ``False`` if none was stored."""
        where = (oauth_tokens.c.server == server) & (oauth_tokens.c.principal == principal)
        return self._delete(oauth_tokens, where) > 0

    def delete_tokens(self, server: str) -> int:
        """Forget every token for ``server``, the gateway's and every principal's; how many."""
        return self._delete(oauth_tokens, oauth_tokens.c.server == server)

    def list_tokens(self, server: str | None = None) -> list[TokenRecord]:
        """The stored tokens (of ``server`` only, if given), by server then principal; metadata only."""
        query = _TOKEN_LISTING if server is None else _TOKEN_LISTING.where(oauth_tokens.c.server == server)
        with self._store._connect() as connection:
            rows = connection.execute(query.order_by(oauth_tokens.c.server, oauth_tokens.c.principal)).all()
        return [_token(row) for row in rows]

    # Clients

    def put_client(self, server: str, issuer: str, value: Mapping[str, Any], *, now: datetime | None = None) -> ClientRecord:
        """Store the client Lockgate registered for ``server`` with ``issuer``, replacing the one stored.

        ``value`` is the client information the registration returned (JSON:
        client id and secret, and the like).

        Raises:
            InvalidInput: a bad server name or issuer, or a value that is not
                JSON or is too large.
        """
        _check_name(server, "a server name", _SERVER_MAX)
        _check_name(issuer, "an issuer", _ISSUER_MAX)
        sealed = self._seal(value, associated_data(_CLIENT_PLACE, server, issuer))
        updated = _now(now)
        self._upsert(oauth_clients, {"server": server, "issuer": issuer}, {"sealed": sealed, "updated_at": updated})
        return ClientRecord(server=server, issuer=issuer, updated_at=updated)

    def get_client(self, server: str, issuer: str) -> StoredClient | None:
        """The client registered for ``server`` with ``issuer``, else ``None``.

        Raises:
            UnsealError: it is stored but does not open (see :meth:`get_token`).
        """
        where = (oauth_clients.c.server == server) & (oauth_clients.c.issuer == issuer)
        with self._store._connect() as connection:
            row = connection.execute(select(oauth_clients).where(where)).first()
        if row is None:
            return None
        value = self._open(row.sealed, associated_data(_CLIENT_PLACE, server, issuer))
        return StoredClient(record=_client(row), value=value)

    def delete_client(self, server: str, issuer: str) -> bool:
        """Forget the client registered for ``server`` with ``issuer``; ``False`` if there was none."""
        where = (oauth_clients.c.server == server) & (oauth_clients.c.issuer == issuer)
        return self._delete(oauth_clients, where) > 0

    def list_clients(self) -> list[ClientRecord]:
        """The registered clients, by server then issuer; metadata only."""
        with self._store._connect() as connection:
            rows = connection.execute(_CLIENT_LISTING.order_by(oauth_clients.c.server, oauth_clients.c.issuer)).all()
        return [_client(row) for row in rows]

    # Shared

    @property
    def _box(self) -> SecretBox:
        if self._box_or_none is None:
            raise TypeError("this OAuthStore was made without a SecretBox: it can list and delete, not read or write values")
        return self._box_or_none

    def _seal(self, value: Mapping[str, Any], associated: bytes) -> bytes:
        if not isinstance(value, Mapping):
            raise InvalidInput(f"an OAuth value to store is a JSON object, not a {type(value).__name__}")
        try:
            return self._box.seal(dict(value), associated)
        except ValueError as exc:  # its message names the value's type or size, never its content
            raise InvalidInput(str(exc)) from None

    def _open(self, blob: bytes, associated: bytes) -> dict[str, Any]:
        value = self._box.open(bytes(blob), associated)
        if not isinstance(value, dict):  # pragma: no cover - only _seal seals here, and it seals objects
            raise TypeError("a stored OAuth value opened to something other than a JSON object")
        return value

    def _upsert(self, table: Table, key: dict[str, str], values: dict[str, Any]) -> None:
        """Insert the row for ``key``, or update it: one statement, so two writers at once cannot clash."""
        dialect = self._store._engine.dialect.name
        maker = postgresql.insert if dialect == "postgresql" else sqlite.insert
        statement = maker(table).values({**key, **values})
        statement = statement.on_conflict_do_update(index_elements=list(key), set_=values)
        with self._store._connect() as connection, connection.begin():
            connection.execute(statement)

    def _delete(self, table: Table, where: ColumnElement[bool]) -> int:
        with self._store._connect() as connection, connection.begin():
            return int(connection.execute(delete(table).where(where)).rowcount)


#: What listing reads: never the sealed column.
_TOKEN_LISTING: Select[Any] = select(
    oauth_tokens.c.server,
    oauth_tokens.c.principal,
    oauth_tokens.c.expires_at,
    oauth_tokens.c.scopes,
    oauth_tokens.c.updated_at,
)
_CLIENT_LISTING: Select[Any] = select(oauth_clients.c.server, oauth_clients.c.issuer, oauth_clients.c.updated_at)


def _check_name(value: str, what: str, longest: int) -> None:
    if not value or len(value) > longest or not value.isprintable():
        raise InvalidInput(f"{what} is 1 to {longest} printable characters")


def _check_principal(principal: str) -> None:
    if len(principal) > _PRINCIPAL_MAX or not principal.isprintable():
        raise InvalidInput(f"a principal id is up to {_PRINCIPAL_MAX} printable characters ('' for the gateway's own token)")


def _check_scopes(scopes: Iterable[str]) -> tuple[str, ...]:
    if isinstance(scopes, str):
        raise InvalidInput("scopes are a list of scope tokens, not one string")
    granted = tuple(dict.fromkeys(scopes))
    for scope in granted:
        if not isinstance(scope, str) or not _SCOPE.fullmatch(scope):
            raise InvalidInput(f"{scope!r} is not an OAuth scope: printable ASCII without spaces, quotes or backslashes")
    return granted


def _aware(when: datetime, what: str) -> datetime:
    try:
        return _now(when)
    except ValueError:
        raise InvalidInput(f"{what} must be an aware datetime (UTC)") from None


def _token(row: Row[Any]) -> TokenRecord:
    return TokenRecord(
        server=row.server,
        principal=row.principal,
        expires_at=row.expires_at,
        scopes=tuple(row.scopes),
        updated_at=row.updated_at,
    )


def _client(row: Row[Any]) -> ClientRecord:
    return ClientRecord(server=row.server, issuer=row.issuer, updated_at=row.updated_at)
