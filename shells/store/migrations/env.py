"""Alembic's entry point for Lockgate's migrations: run on the connection the store hands over.

:func:`lockgate.shells.store.migrate.upgrade` builds the Alembic ``Config`` in
code and puts an open connection, inside its transaction, in
``config.attributes["connection"]``; no ``alembic.ini`` and no URL are read.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

connection = context.config.attributes.get("connection")
if not isinstance(connection, Connection):
    raise RuntimeError("Lockgate's migrations run through lockgate.shells.store, on a connection it opens")

context.configure(connection=connection, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
