"""What the store tests share: an upgraded store, and every value the database holds."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import sqlalchemy
from sqlalchemy.engine import make_url

from lockgate.shells.store import Store
from lockgate.shells.store.database import parse_url


def everything_stored(url: str) -> Iterator[str]:
    """Every value of every row of every table, as text; and for SQLite every byte of its files.

    Opened with a plain SQLAlchemy engine, not the store, so that what the
    store does not show is seen too.
    """
    engine = sqlalchemy.create_engine(parse_url(url))
    try:
        with engine.connect() as connection:
            for table in sqlalchemy.inspect(connection).get_table_names():
                for row in connection.execute(sqlalchemy.text(f'SELECT * FROM "{table}"')):
                    yield from (str(value) for value in row)
    finally:
        engine.dispose()
    database = make_url(url).database
    if make_url(url).get_backend_name() == "sqlite" and database:
        for suffix in ("", "-wal", "-shm", "-journal"):
            path = Path(database + suffix)
            if path.exists():
                yield path.read_bytes().decode("latin-1")


def open_upgraded(url: str) -> Store:
    store = Store.open(url)
    store.ensure_schema()
    return store
