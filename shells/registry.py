"""The live registry: instances registered while the gateway runs, kept in the database, served at once.

Theory of operation. The configuration the gateway runs is the files'
configuration (the *base*) with the registrations merged in
(:func:`lockgate.core.merge_registrations`). :class:`Registry` holds both
and hands the merge to the core as a ``ConfigReloaded``, the same event a
changed file gives, whenever either changes: a registration
(:meth:`Registry.register`, :meth:`Registry.deregister`), or a reload of the
files (the watcher calls :meth:`Registry.rebase` and feeds what it returns).
The core's reload keeps every instance that did not change running, starts
a new one at once (eager strategy) and lets a removed one finish its calls.

The database (:mod:`.store.registry`) is written before the core is told,
so what the gateway runs is never ahead of what a restart would load. Its
calls run in worker threads. A default SQLite database that does not exist
yet is created by the first registration, not by a start that merely looks
for registrations; :func:`read_registrations`, for the commands that check
a configuration, changes nothing at all.

The HTTP layer decides who may register (an admin); everything here
answers in terms it can send as they are: :class:`Registered`,
:class:`Deregistered` or :class:`RegistrationRefused` (a status, an error
code name, a message and ``data``).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import trio

from lockgate.core import Config, ConfigReloaded, Problem, Registration, merge_registrations, parse_registration

from .audit import utc_timestamp
from .child_process import resolve_command
from .locations import database_url
from .logs import get_logger
from .reload import Feeder

if TYPE_CHECKING:
    from .store.registry import RegistrationRecord, Registrations

__all__ = [
    "Deregistered",
    "Registered",
    "Registry",
    "RegistrationRefused",
    "load_registrations",
    "read_registrations",
    "registry_store_url",
]

_log = get_logger("registry")

JSONObject = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Registered:
    """An instance was registered and the gateway runs it: the ``201`` body is :meth:`json`."""

    server: str
    instance_id: str
    transport: Literal["stdio", "http"]

    def json(self) -> JSONObject:
        return {"server": self.server, "instance_id": self.instance_id, "transport": self.transport, "registered": True}


@dataclass(frozen=True, slots=True)
class Deregistered:
    """An instance was deregistered; it stops once its calls end. The ``200`` body is :meth:`json`."""

    server: str
    instance_id: str

    def json(self) -> JSONObject:
        return {"server": self.server, "instance_id": self.instance_id, "deregistered": True}


@dataclass(frozen=True, slots=True)
class RegistrationRefused:
    """Nothing changed, and why: ``status`` (400, 404, 409, 503), ``code`` (the contract's error name), words, ``data``."""

    status: int
    code: str
    message: str
    data: JSONObject = field(default_factory=dict)

    def json(self) -> JSONObject:
        """The contract's error body."""
        return {"error": {"code": self.code, "message": self.message, "status": self.status, "data": self.data}}


def registry_store_url(environ: Mapping[str, str]) -> str:
    """The database registrations live in: ``GATEWAY_DATABASE_URL``, else the identity store's default SQLite file."""
    return database_url(None, environ)


def _sqlite_file(url: str) -> str | None:
    """The file of a SQLite URL (``sqlite:///relative.db``, ``sqlite:////abs/path.db``), else ``None``.

    Read by hand, not by SQLAlchemy: loading it would cost a command
    without a database more than everything else it does.
    """
    scheme, found, rest = url.partition(":///")
    if not found or scheme.partition("+")[0] != "sqlite":
        return None
    path = rest.partition("?")[0]
    return path or None


def _open(url: str, *, create: bool) -> Registrations | None:
    """The registrations of the database at ``url``, its schema brought up to date; ``None`` when
    ``create`` is false and it is a SQLite file that does not exist (nothing was ever registered there).

    Raises:
        StoreError: the database cannot be opened, or its schema used.
    """
    path = _sqlite_file(url)
    if not create and path is not None and not os.path.exists(path):
        return None  # before the imports: the database libraries take longer to load than the check takes
    from .store import Store
    from .store.registry import Registrations

    return Registrations(Store.open_current(url, _log.info))


def load_registrations(url: str) -> tuple[Registrations | None, list[Registration]]:
    """At start-up: the table (``None`` when there is no database yet) and every registration in it.

    Raises:
        StoreError: the database cannot be opened or read.
    """
    table = _open(url, create=False)
    return table, ([] if table is None else table.load())


def read_registrations(url: str) -> list[Registration]:
    """For the commands that only look (``validate``, ``explain``, ``check``): every registration, changing nothing.

    Unlike :func:`load_registrations`, it neither creates a database nor
    upgrades a schema. A SQLite file that does not exist has no
    registrations, and neither has a database whose schema is not yet the
    one with the registrations table: a registration upgrades the schema
    before it is stored.

    Raises:
        StoreError: the database cannot be opened or read, or its schema is
            a newer Lockgate's (which ``lockgate serve`` refuses too).
    """
    path = _sqlite_file(url)
    if path is not None and not os.path.exists(path):
        return []  # before the imports: the database libraries take longer to load than the check takes
    from .store import SchemaProblem, Store
    from .store.registry import Registrations

    with Store.open(url) as store:
        status = store.schema_status()
        if status.state == "unknown":
            raise SchemaProblem(f"the {store.description} has schema {status}; upgrade Lockgate to use it")
        try:
            return Registrations(store).load()
        except SchemaProblem:
            if status.state == "current":
                raise
            return []  # an older schema, without the registrations table: nothing was registered there


class Registry:
    """Registered instances, merged into the configuration the gateway runs (see the module docstring).

    Build it with the files' configuration and what :func:`load_registrations`
    found; serve :attr:`config`; :meth:`attach` the runtime once it runs
    (``watch_config`` does, for the reload source that carries the registry).
    """

    def __init__(
        self,
        base: Config,
        registrations: Sequence[Registration] = (),
        *,
        url: str,
        table: Registrations | None = None,
        environ: Mapping[str, str] | None = None,
        new_id: Callable[[], str] = lambda: "reg-" + secrets.token_hex(4),
    ) -> None:
        self._base = base
        self._registrations = list(registrations)
        self._url = url
        self._table = table
        self._environ = dict(os.environ if environ is None else environ)
        self._new_id = new_id
        self._feeder: Feeder | None = None
        self._lock = trio.Lock()
        self._config, skipped = merge_registrations(base, self._registrations)
        for problem in skipped:
            _log.warning(problem.message, extra={"fields": {"path": problem.path}})

    @property
    def config(self) -> Config:
        """The configuration to run: the files' with the registrations merged in."""
        return self._config

    def attach(self, feeder: Feeder) -> None:
        """Send later changes to ``feeder`` (the runtime), as ``ConfigReloaded`` events."""
        self._feeder = feeder

    def merge(self, base: Config) -> tuple[Config, tuple[Problem, ...]]:
        """What ``base`` (a reload of the files) would run as, with the registrations merged in; changes nothing."""
        return merge_registrations(base, self._registrations)

    def rebase(self, base: Config) -> Config:
        """The files changed to ``base``: the configuration to feed now (the caller feeds it)."""
        self._base = base
        self._config, _ = merge_registrations(base, self._registrations)
        return self._config

    def registrations(self) -> list[RegistrationRecord]:
        """Every registration as it may be shown: no ``env`` values."""
        from .store.registry import record

        return [record(registration) for registration in self._registrations]

    def file_instance(self, server: str, instance_id: str) -> bool:
        """Is ``instance_id`` an instance of ``server`` in the servers file?"""
        spec = self._base.servers.get(server)
        return spec is not None and any(i.id == instance_id for i in spec.launch_specs())

    async def register(self, body: object) -> Registered | RegistrationRefused:
        """Register the instance ``body`` describes (the ``POST /gateway/register`` body) and run it at once.

        Refused, with nothing stored or changed: 400 for a body that is not
        valid or a command that cannot be found; 409 for an instance id its
        server has already (in the file or the registry); 503 when the
        database cannot be reached.
        """
        parsed = parse_registration(body, default_id=self._new_id())
        if isinstance(parsed, list):
            errors = [{"loc": list(p.loc), "msg": p.message} for p in parsed]
            return RegistrationRefused(400, "INVALID_REQUEST", "; ".join(str(p) for p in parsed), {"errors": errors})
        async with self._lock:
            taken = self._config.servers.get(parsed.server)
            if taken is not None and any(i.id == parsed.instance_id for i in taken.launch_specs()):
                return _conflict(parsed.server, parsed.instance_id)
            missing = self._missing(parsed)
            if missing is not None:
                field_name, why = missing
                return RegistrationRefused(400, "INVALID_REQUEST", why, {"errors": [{"loc": [field_name], "msg": why}]})
            _, skipped = merge_registrations(self._config, [parsed])
            if skipped:
                why = skipped[0].message.removeprefix("registration skipped: ")
                return RegistrationRefused(400, "INVALID_REQUEST", why, {"errors": [{"loc": [], "msg": why}]})
            failure = await self._write(lambda table: table.add(parsed))
            if failure is not None:
                return failure
            self._registrations.append(parsed)
            await self._publish()
        _log.info("instance registered", extra={"fields": {"server": parsed.server, "instance": parsed.instance_id}})
        return Registered(parsed.server, parsed.instance_id, parsed.transport)

    async def deregister(self, server: str, instance_id: str) -> Deregistered | RegistrationRefused:
        """Remove a registered instance; it takes no new calls and stops once its calls end.

        Refused: 409 for an instance of the servers file (not the
        registry's to remove), 404 for one that is not registered, 503 when
        the database cannot be reached.
        """
        async with self._lock:
            found = [r for r in self._registrations if (r.server, r.instance_id) == (server, instance_id)]
            if not found:
                if self.file_instance(server, instance_id):
                    return RegistrationRefused(
                        409, "CONFLICT", f"instance {instance_id!r} of server {server!r} is configured in the servers "
                        "file, not registered: remove it there", {"server": server, "instance_id": instance_id},
                    )
                return RegistrationRefused(
                    404, "NOT_FOUND", f"server {server!r} has no registered instance {instance_id!r}",
                    {"server": server, "instance_id": instance_id},
                )
            failure = await self._write(lambda table: table.remove(server, instance_id))
            if failure is not None and failure.status != 404:
                return failure  # 404: another gateway removed it from the database; this one still runs it
            self._registrations.remove(found[0])
            await self._publish()
        _log.info("instance deregistered", extra={"fields": {"server": server, "instance": instance_id}})
        return Deregistered(server, instance_id)

    def _missing(self, registration: Registration) -> tuple[str, str] | None:
        """A stdio registration whose command or working directory is not there: (the field, why)."""
        if registration.transport != "stdio" or registration.command is None:
            return None
        cwd = registration.working_dir
        if cwd is not None and not os.path.isdir(cwd):
            return "working_dir", f"working directory not found: {cwd}"
        path = registration.env.get("PATH", self._environ.get("PATH", os.defpath))
        if resolve_command(registration.command, path=path, cwd=cwd) is None:
            return "command", f"command not found: {registration.command}"
        return None

    async def _write(self, change: Callable[[Registrations], None]) -> RegistrationRefused | None:
        """Apply ``change`` to the database in a worker thread; the refusal its failure means, else ``None``."""
        from .store import Conflict, NotFound, StoreError

        def run() -> None:
            if self._table is None:
                self._table = _open(self._url, create=True)
            assert self._table is not None
            change(self._table)

        try:
            await trio.to_thread.run_sync(run)
        except Conflict as exc:
            return RegistrationRefused(409, "CONFLICT", str(exc))
        except NotFound as exc:
            return RegistrationRefused(404, "NOT_FOUND", str(exc))
        except StoreError as exc:
            _log.error("registry database unavailable", extra={"fields": {"error": str(exc)}})
            return RegistrationRefused(503, "SERVER_UNAVAILABLE", f"the registry's database is unavailable: {exc}")
        return None

    async def _publish(self) -> None:
        """Merge again and hand the result to the core, as a reload."""
        self._config, _ = merge_registrations(self._base, self._registrations)
        if self._feeder is not None:
            await self._feeder.feed(
                ConfigReloaded(now=trio.current_time(), config=self._config, files=(), time=utc_timestamp())
            )

    def close(self) -> None:
        """Close the database connections."""
        if self._table is not None:
            self._table.close()


def _conflict(server: str, instance_id: str) -> RegistrationRefused:
    return RegistrationRefused(
        409, "CONFLICT", f"server {server!r} has an instance {instance_id!r} already",
        {"server": server, "instance_id": instance_id},
    )
