"""Alembic's environment for Swell's store.

Swell runs migrations itself at start-up (``Store.start``), handing Alembic a
connection it already holds; ``alembic -c swell/control/migrations/alembic.ini``
works too for an operator who wants to run them by hand against
``SWELL_DATABASE_URL``.
"""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import create_engine

from swell.control._schema import metadata

config = context.config


def _run(connection) -> None:  # type: ignore[no-untyped-def]
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:  # by hand: a synchronous driver for the same database
    url = os.environ.get("SWELL_DATABASE_URL") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise SystemExit("set SWELL_DATABASE_URL (e.g. sqlite:///swell-data/swell.db)")
    url = url.replace("+aiosqlite", "").replace("+asyncpg", "")
    with create_engine(url).connect() as conn:
        _run(conn)
