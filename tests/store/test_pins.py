"""The ``tool_pins`` table (lockgate.shells.pins.DatabasePins), on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest

from lockgate.core import pinned_definition, tool_digest
from lockgate.shells.pins import DatabasePins, PinStoreError, pin_store
from lockgate.shells.store import Store

ECHO: dict[str, Any] = {"name": "echo", "description": "Echo text back.", "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}}}


def record(*tools: dict[str, Any]) -> dict[str, Any]:
    return {"tools": {t["name"]: {"digest": tool_digest(t), "definition": pinned_definition(t)} for t in tools}}


def test_records_are_saved_replaced_and_loaded(database_url: str) -> None:
    pins = DatabasePins(Store.open_current(database_url, lambda _: None))
    try:
        assert pins.load() == {}
        pins.save("utils", record(ECHO))
        pins.save("notes", {"tools": {}})
        changed = {**ECHO, "description": "changed"}
        held = {**record(ECHO), "quarantined": {"echo": {"digest": tool_digest(changed), "definition": changed, "changed": ["description"], "reason": "changed since pinned"}}}
        pins.save("utils", held)
        assert pins.load() == {"utils": held, "notes": {"tools": {}}}
        assert pins.signature() is None  # not polled: read again at each reload
        assert "tool_pins" in pins.description
    finally:
        pins.close()


def test_replicas_pinning_one_server_at_once_all_succeed(database_url: str) -> None:
    import threading

    stores = [DatabasePins(Store.open_current(database_url, lambda _: None)) for _ in range(4)]
    errors: list[BaseException] = []
    start = threading.Barrier(len(stores))

    def pin(pins: DatabasePins) -> None:
        start.wait()
        try:
            for _ in range(10):
                pins.save("utils", record(ECHO))
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=pin, args=(pins,)) for pins in stores]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert errors == []  # a unique violation here once stopped a replica's pinning
        assert stores[0].load() == {"utils": record(ECHO)}
    finally:
        for pins in stores:
            pins.close()


def test_the_database_is_the_store_when_gateway_database_url_names_one(database_url: str) -> None:
    store = pin_store({"GATEWAY_DATABASE_URL": database_url}, "/nowhere/.mcp-gateway-rules.json")
    try:
        assert isinstance(store, DatabasePins)
        store.save("utils", record(ECHO))  # the schema was brought up to date on opening
        assert store.load() == {"utils": record(ECHO)}
    finally:
        if isinstance(store, DatabasePins):
            store.close()


def test_a_database_that_cannot_be_opened_is_a_pin_store_error() -> None:
    with pytest.raises(PinStoreError, match="cannot"):
        pin_store({"GATEWAY_DATABASE_URL": "postgresql://lockgate@127.0.0.1:1/none"}, "/x/rules.json")
