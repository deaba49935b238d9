"""Alembic environment of the history store.

trustaudit runs the migrations itself when a store is opened (``audit/store/_engine.py``): it
passes an open connection, already inside a transaction and holding the migration lock, as
``config.attributes["connection"]``. For development (``alembic revision``), an ``alembic.ini``
with ``script_location`` pointing here and ``sqlalchemy.url`` set works too.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from audit.store._schema import VERSION_TABLE, metadata


def _run(connection) -> None:
    context.configure(connection=connection, target_metadata=metadata, version_table=VERSION_TABLE)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():  # pragma: no cover - SQL scripts are not how the store is migrated
    raise RuntimeError("the trustaudit store migrates online only: open the store (trustaudit history --store URL)")

_connection = context.config.attributes.get("connection")
if _connection is not None:
    _run(_connection)
else:  # pragma: no cover - the alembic command line, for developers
    _engine = create_engine(context.config.get_main_option("sqlalchemy.url") or "")
    with _engine.begin() as _conn:
        _run(_conn)
    _engine.dispose()
