"""The pin store: where each server's tool pins are kept, and the gateway's link to it.

Two stores, one interface (:class:`PinStore`):

- :class:`FilePins`: ``.mcp-gateway-pins.json`` next to the rules file, for
  users without a database. Written whole, aside then renamed over the old
  one, so a reader sees the old file or the new one and never half of one.
- :class:`DatabasePins`: the ``tool_pins`` table of the identity database,
  when ``GATEWAY_DATABASE_URL`` names one.

:func:`pin_store` chooses. :class:`PinKeeper` is what the runtime uses: it
reads the store when the runtime starts (``PinsLoaded``, before
``GatewayStarted``), writes each ``SavePins`` in a worker thread, in order,
one write at a time, and reads the store again when it changes under the
gateway (``lockgate pin accept``): the file by looking at it every
:data:`POLL_INTERVAL`, the database at every configuration reload (a change
of the servers or rules file, or SIGHUP). Its own writes are not taken for
changes. A store that cannot be read is handed to the core as such
(``PinsLoaded(unreadable=...)``): every tool is then quarantined, and the
file is left as it is for the operator to mend.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Awaitable, Protocol

import trio

from lockgate.core import PinsLoaded

from .logs import get_logger

if TYPE_CHECKING:
    from .store import Store

__all__ = ["FILE_NAME", "DatabasePins", "FilePins", "PinKeeper", "PinStore", "PinStoreError", "pin_store"]

#: The lock file's name, in the rules file's folder.
FILE_NAME = ".mcp-gateway-pins.json"
#: The lock file's format version.
VERSION = 1
#: Seconds between two looks at the lock file.
POLL_INTERVAL = 0.5

JSONObject = dict[str, Any]

_log = get_logger("pins")


class PinStoreError(Exception):
    """The store cannot be read or written; ``str()`` is one line for the operator."""


class PinStore(Protocol):
    """Each server's pin record (as :class:`~lockgate.core.SavePins` carries it), kept somewhere."""

    @property
    def description(self) -> str:
        """Where the pins are, in words (a path, or the database)."""
        ...

    def load(self) -> dict[str, JSONObject]:
        """Every server's record. Raises :class:`PinStoreError` when the store cannot be read."""
        ...

    def save(self, server: str, record: JSONObject) -> None:
        """Replace ``server``'s record. Raises :class:`PinStoreError`."""
        ...

    def signature(self) -> str | None:
        """Something that changes when the store does, cheap to get; ``None``: the store cannot tell."""
        ...


class FilePins:
    """``.mcp-gateway-pins.json``: ``{"version": 1, "servers": {server: record}}``."""

    def __init__(self, path: str) -> None:
        self.path = path

    @property
    def description(self) -> str:
        return self.path

    def load(self) -> dict[str, JSONObject]:
        try:
            with open(self.path, "rb") as file:
                data = file.read()
        except FileNotFoundError:
            return {}  # nothing pinned yet
        except OSError as exc:
            raise PinStoreError(f"cannot read {self.path}: {exc.strerror or type(exc).__name__}") from None
        try:
            doc = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise PinStoreError(f"{self.path} is not a pin file: {exc}") from None
        if not isinstance(doc, dict) or doc.get("version") != VERSION or not isinstance(doc.get("servers"), dict):
            raise PinStoreError(f"{self.path} is not a pin file: expected {{\"version\": {VERSION}, \"servers\": {{...}}}}")
        servers: dict[str, JSONObject] = doc["servers"]
        return servers

    def save(self, server: str, record: JSONObject) -> None:
        # Read again first: `lockgate pin accept`, or another worker of `serve --workers N`,
        # may have written another server's record meanwhile. The folder's lock makes the
        # read and the write one step for every process that saves, so none loses another's.
        with _folder_lock(os.path.dirname(self.path) or "."):
            servers = self.load()
            servers[server] = record
            self.write(servers)

    def write(self, servers: Mapping[str, JSONObject]) -> None:
        """Write every record: aside in the same folder, then renamed over the file."""
        doc = {"version": VERSION, "servers": dict(sorted(servers.items()))}
        text = json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
        folder = os.path.dirname(self.path) or "."
        try:
            descriptor, aside = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(self.path)}.")
            try:
                with os.fdopen(descriptor, "w", encoding="utf-8") as file:
                    file.write(text)
                    file.flush()
                    os.fsync(file.fileno())
                os.chmod(aside, 0o644)  # not a secret: what the servers publish
                os.replace(aside, self.path)
            except BaseException:
                try:
                    os.unlink(aside)
                except OSError:
                    pass
                raise
        except OSError as exc:
            raise PinStoreError(f"cannot write {self.path}: {exc.strerror or type(exc).__name__}") from None

    def signature(self) -> str | None:
        try:
            with open(self.path, "rb") as file:
                st = os.fstat(file.fileno())
                digest = hashlib.sha256(file.read()).hexdigest()
        except OSError as exc:
            return f"error: {exc.errno}"
        return f"{st.st_ino}:{st.st_size}:{st.st_mtime_ns}:{digest}"


@contextmanager
def _folder_lock(folder: str) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``folder`` while the block runs; without one, run it unlocked.

    The folder, not the pin file: the file is replaced by a rename, and a
    lock on the old one would not exclude a process that opened the new one.
    """
    try:
        descriptor = os.open(folder, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        yield  # the save then says what is wrong with the folder
        return
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
        except OSError:
            pass  # a file system without locks: as before, last writer wins
        yield
    finally:
        os.close(descriptor)  # releases the lock


class DatabasePins:
    """The ``tool_pins`` table of an open :class:`~.store.Store` (same connections, same error mapping)."""

    def __init__(self, store: Store) -> None:
        self._store = store

    @property
    def description(self) -> str:
        return f"the tool_pins table of the {self._store.description}"

    def load(self) -> dict[str, JSONObject]:
        from sqlalchemy import select

        from .store import StoreError
        from .store.schema import tool_pins

        try:
            with self._store._connect() as connection:
                rows = connection.execute(select(tool_pins.c.server, tool_pins.c.record)).all()
        except StoreError as exc:
            raise PinStoreError(str(exc)) from None
        return {row.server: row.record for row in rows}

    def save(self, server: str, record: JSONObject) -> None:
        from datetime import UTC, datetime

        from sqlalchemy.dialects import postgresql, sqlite

        from .store import StoreError
        from .store.schema import tool_pins

        try:
            with self._store._connect() as connection, connection.begin():
                # One statement: replicas sharing the database pin the same server at once when they start.
                dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
                values = {"server": server, "record": record, "updated_at": datetime.now(UTC)}
                upsert = dialect.insert(tool_pins).values(**values)
                connection.execute(
                    upsert.on_conflict_do_update(index_elements=[tool_pins.c.server], set_={"record": record, "updated_at": values["updated_at"]})
                )
        except StoreError as exc:
            raise PinStoreError(str(exc)) from None

    def signature(self) -> str | None:
        return None  # read again at every reload instead of polled

    def close(self) -> None:
        self._store.close()


def pin_store(environ: Mapping[str, str], rules_file: str) -> FilePins | DatabasePins:
    """The store of this gateway: the database ``GATEWAY_DATABASE_URL`` names, else the lock file next to ``rules_file``.

    Raises:
        PinStoreError: the database cannot be opened (the caller decides: the
            gateway serves with every tool quarantined, a command stops).
    """
    from .locations import DATABASE_VARIABLE

    url = environ.get(DATABASE_VARIABLE, "").strip()
    if not url:
        return FilePins(os.path.join(os.path.dirname(os.path.abspath(rules_file)), FILE_NAME))
    from .store import Store, StoreError

    try:
        return DatabasePins(Store.open_current(url, _log.info))
    except StoreError as exc:
        raise PinStoreError(str(exc)) from None


class PinKeeper:
    """The runtime's link to a :class:`PinStore` (see the module docstring).

    ``store`` is ``None`` when it could not even be opened: the gateway is
    then told the store is unreadable (with ``problem``) and saves nothing.
    """

    def __init__(self, store: PinStore | None, problem: str | None = None) -> None:
        self.store = store
        self.problem = problem
        self._pending: dict[str, JSONObject] = {}
        self._wake = trio.Event()
        self._idle = trio.Event()
        self._idle.set()
        self._seen: str | None = None
        self._reread = trio.Event()

    # -- for the runtime -----------------------------------------------------------

    async def load_event(self) -> PinsLoaded:
        """Read the store (in a worker thread): the ``PinsLoaded`` to feed."""
        if self.store is None:
            return PinsLoaded(now=trio.current_time(), pins={}, unreadable=self.problem or "no pin store")
        store = self.store
        try:
            self._seen = await trio.to_thread.run_sync(store.signature)
            pins = await trio.to_thread.run_sync(store.load)
        except PinStoreError as exc:
            _log.error(f"cannot read the tool pins: {exc}; every tool is quarantined until they can be read")
            return PinsLoaded(now=trio.current_time(), pins={}, unreadable=str(exc))
        return PinsLoaded(now=trio.current_time(), pins=pins)

    def save(self, server: str, record: JSONObject) -> None:
        """Queue ``SavePins``; never waits (the runtime performs it inline). A later record of a server replaces an earlier one."""
        if self.store is None:
            return
        self._pending[server] = record
        self._idle = trio.Event() if self._idle.is_set() else self._idle
        self._wake.set()

    def reread(self) -> None:
        """The configuration was reloaded: read the store again (a database is not polled)."""
        self._reread.set()

    def close(self) -> None:
        """Close the store's database connections, if it has any."""
        close = getattr(self.store, "close", None)
        if close is not None:
            close()

    async def flush(self) -> None:
        """Wait until every queued record is written."""
        await self._idle.wait()

    async def run(self, feed: Callable[[PinsLoaded], Awaitable[None]], *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Write queued records, and feed ``PinsLoaded`` when the store changed under the gateway, until cancelled."""
        task_status.started()
        if self.store is None:
            await trio.sleep_forever()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._write_loop)
            while True:
                with trio.move_on_after(POLL_INTERVAL):
                    await self._reread.wait()
                reread, self._reread = self._reread.is_set(), trio.Event()
                if self._pending or not self._idle.is_set():
                    continue  # our own write is under way: look once it landed
                signature = await trio.to_thread.run_sync(self.store.signature)
                if reread or (signature is not None and signature != self._seen):
                    await feed(await self.load_event())

    async def _write_loop(self) -> None:
        assert self.store is not None
        store = self.store
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            while self._pending:
                server = next(iter(self._pending))
                record = self._pending.pop(server)
                try:
                    await trio.to_thread.run_sync(store.save, server, record)
                except PinStoreError as exc:
                    _log.error(f"cannot save the tool pins of {server}: {exc}")
            self._seen = await trio.to_thread.run_sync(store.signature)
            if not self._pending:
                self._idle.set()
