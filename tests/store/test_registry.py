"""Registered instances in the database: stored, listed without env values, removed, unique per server and id."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest

from lockgate.core import Registration
from lockgate.shells.store import Conflict, InvalidInput, NotFound
from lockgate.shells.store.registry import Registrations

from .helpers import everything_stored, open_upgraded

SECRET = "s3cret-token-value"
NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def worker(instance_id: str = "w1", **fields: object) -> Registration:
    values: dict[str, object] = {
        "server": "db", "instance_id": instance_id, "transport": "stdio", "command": "srv",
        "args": ("--port", "1"), "working_dir": "/srv", "env": {"TOKEN": SECRET}, "weight": 2, "description": "spare",
    }
    return Registration(**{**values, **fields})  # type: ignore[arg-type]


def test_a_registration_comes_back_whole_to_the_gateway_and_without_env_values_to_a_list(database_url: str) -> None:
    with open_upgraded(database_url) as store:
        table = Registrations(store)
        table.add(worker(), now=NOW)
        web = Registration(server="web", instance_id="a", transport="http", endpoint="https://h/mcp")
        table.add(web, now=NOW.replace(hour=13))
        assert table.load() == [worker(), web]
        listed = table.list()
        assert [(r.server, r.instance_id, r.env_keys, r.created_at) for r in listed] == [
            ("db", "w1", ("TOKEN",), NOW), ("web", "a", (), NOW.replace(hour=13))
        ]
        assert SECRET not in repr(listed)
        # It is stored, since the process needs it to start.
        assert any(SECRET in value for value in everything_stored(database_url))


def test_a_taken_id_on_the_same_server_is_a_conflict_and_another_server_may_use_it(database_url: str) -> None:
    with open_upgraded(database_url) as store:
        table = Registrations(store)
        table.add(worker())
        with pytest.raises(Conflict, match="server 'db' has a registered instance 'w1' already"):
            table.add(worker(command="other"))
        table.add(worker(server="util"))
        assert [(r.server, r.instance_id) for r in table.load()] == [("db", "w1"), ("util", "w1")]


def test_registrations_are_removed_by_server_and_id(database_url: str) -> None:
    with open_upgraded(database_url) as store:
        table = Registrations(store)
        table.add(worker("w1"))
        table.add(worker("w2"))
        table.remove("db", "w1")
        assert [r.instance_id for r in table.load()] == ["w2"]
        with pytest.raises(NotFound, match="server 'db' has no registered instance 'w1'"):
            table.remove("db", "w1")


def test_an_invalid_registration_is_refused(database_url: str) -> None:
    with open_upgraded(database_url) as store:
        with pytest.raises(InvalidInput, match="instance id 'no spaces' is not"):
            Registrations(store).add(worker("no spaces"))
        assert Registrations(store).load() == []


def test_registering_the_same_id_at_once_from_many_threads_stores_one(database_url: str) -> None:
    with open_upgraded(database_url) as store:
        table = Registrations(store)
        start = threading.Barrier(6)
        outcomes: list[str] = []

        def register(n: int) -> None:
            start.wait(timeout=30)
            try:
                table.add(worker(args=(str(n),)))
                outcomes.append("added")
            except Conflict:
                outcomes.append("conflict")

        threads = [threading.Thread(target=register, args=(n,)) for n in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert sorted(outcomes) == ["added"] + ["conflict"] * 5
        assert len(table.load()) == 1
