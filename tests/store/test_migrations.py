"""The schema: migrations from an empty database, its status, and the migrations matching the code's tables."""

from __future__ import annotations

import threading

import pytest
import sqlalchemy
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from lockgate.shells.store import SchemaProblem, SchemaStatus, Store
from lockgate.shells.store import migrate
from lockgate.shells.store.schema import metadata

LATEST = migrate.HEAD
TABLES = {"alembic_version", "users", "api_keys", "revocations", "changes", "registrations", "oauth_tokens", "oauth_clients", "tool_pins"}


def table_names(store: Store) -> set[str]:
    with store._engine.connect() as connection:
        return set(sqlalchemy.inspect(connection).get_table_names())


def test_an_empty_database_is_migrated_to_the_latest_revision(database_url: str) -> None:
    with Store.open(database_url) as store:
        status = store.schema_status()
        assert (status.current, status.head, status.state) == (None, LATEST, "empty")
        assert table_names(store) == set()
        message = store.ensure_schema()
        assert message == f"upgraded the database schema ({store.description}) from an empty database to revision {LATEST}"
        assert store.schema_status() == SchemaStatus(current=LATEST, head=LATEST)
        assert store.schema_status().state == "current"
        assert table_names(store) == TABLES
        assert store.ensure_schema() is None  # nothing more to do
        before, after = store.upgrade()
        assert before == after == SchemaStatus(current=LATEST, head=LATEST)
        assert store.change_marker() == 0


def test_the_migrations_create_exactly_the_tables_the_code_uses(database_url: str) -> None:
    with Store.open(database_url) as store:
        store.ensure_schema()
        with store._engine.connect() as connection:
            differences = compare_metadata(MigrationContext.configure(connection), metadata)
    assert differences == []


def test_the_first_revision_can_be_undone_and_done_again(database_url: str) -> None:
    with Store.open(database_url) as store:
        store.ensure_schema()
        with store._engine.begin() as connection:
            command.downgrade(migrate._config(connection), "base")
        assert table_names(store) == {"alembic_version"}
        assert store.schema_status().state == "empty"
        assert store.ensure_schema() is not None
        assert table_names(store) == TABLES


def test_a_revision_from_a_newer_lockgate_is_refused_not_touched(database_url: str) -> None:
    with Store.open(database_url) as store:
        store.ensure_schema()
        with store._engine.begin() as connection:
            connection.execute(sqlalchemy.text("UPDATE alembic_version SET version_num = '9999'"))
        status = store.schema_status()
        assert status.state == "unknown" and status.current == "9999"
        assert "9999, which this Lockgate does not know: a newer Lockgate migrated it" in str(status)
        for attempt in (store.ensure_schema, store.upgrade):
            with pytest.raises(SchemaProblem, match="a newer Lockgate migrated it; upgrade Lockgate to use it"):
                attempt()
        assert store.schema_status().current == "9999"


def test_using_a_database_without_the_schema_says_to_upgrade(database_url: str) -> None:
    with Store.open(database_url) as store:
        with pytest.raises(SchemaProblem, match="has no Lockgate tables .*: run lockgate db upgrade"):
            store.list_users()
        with pytest.raises(SchemaProblem, match="run lockgate db upgrade"):
            store.change_marker()


def test_gateways_starting_together_upgrade_once(database_url: str) -> None:
    stores = [Store.open(database_url) for _ in range(4)]
    results: list[str | None] = []
    problems: list[BaseException] = []
    start = threading.Barrier(len(stores))

    def prepare(store: Store) -> None:
        try:
            start.wait(timeout=30)
            results.append(store.ensure_schema())
        except BaseException as exc:  # reported below
            problems.append(exc)

    threads = [threading.Thread(target=prepare, args=(store,)) for store in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    for store in stores:
        store.close()
    assert problems == []
    assert len([result for result in results if result is not None]) == 1


def test_the_status_in_words() -> None:
    assert str(SchemaStatus(None, "0002")) == "no Lockgate schema yet (latest revision 0002)"
    behind = SchemaStatus("0001", "0002")
    assert behind.state == "behind" and str(behind) == "revision 0001, behind the latest (0002)"
    assert str(SchemaStatus("0002", "0002")) == "revision 0002 (the latest)"


def test_a_database_with_a_table_in_the_way_is_refused_and_left_as_it_was(database_url: str) -> None:
    with Store.open(database_url) as store:
        with store._engine.begin() as connection:
            connection.execute(sqlalchemy.text("CREATE TABLE revocations (other INTEGER)"))
        with pytest.raises(SchemaProblem, match="cannot create Lockgate's tables in the .*: .*revocations.* give Lockgate a database of its own"):
            store.ensure_schema()
        # The tables made before the clash were rolled back with it.
        assert table_names(store) == {"revocations"}
        assert store.schema_status().state == "empty"


def test_a_database_at_the_registry_revision_gains_the_oauth_tables_and_keeps_its_rows(database_url: str) -> None:
    with Store.open(database_url) as store:
        with store._engine.begin() as connection:
            command.upgrade(migrate._config(connection), "0002")
            connection.execute(sqlalchemy.text(
                "INSERT INTO registrations (server, instance_id, transport, command, args, env, weight, description, created_at) "
                "VALUES ('db', 'w1', 'stdio', 'srv', '[]', '{}', 1, '', '2026-05-01 12:00:00+00:00')"
            ))
        assert store.schema_status() == SchemaStatus(current="0002", head=LATEST)
        assert table_names(store) == TABLES - {"oauth_tokens", "oauth_clients", "tool_pins"}
        assert store.ensure_schema() == f"upgraded the database schema ({store.description}) from revision 0002 to revision {LATEST}"
        assert table_names(store) == TABLES
        with store._engine.connect() as connection:
            assert connection.execute(sqlalchemy.text("SELECT instance_id FROM registrations")).scalars().all() == ["w1"]
        # And back: the downgrade drops only what 0003 and 0004 made.
        with store._engine.begin() as connection:
            command.downgrade(migrate._config(connection), "0003")
        assert table_names(store) == TABLES - {"tool_pins"}
        with store._engine.begin() as connection:
            command.downgrade(migrate._config(connection), "0002")
        assert table_names(store) == TABLES - {"oauth_tokens", "oauth_clients", "tool_pins"}


def test_the_quick_head_is_the_one_alembic_reads_from_the_scripts() -> None:
    # A new revision must move migrate.HEAD too, or status checks would call it unknown.
    assert migrate.HEAD == migrate.head_revision()
