"""The control plane's durable store: SQLAlchemy 2 (async) over SQLite or PostgreSQL.

SQLite (aiosqlite, WAL) in the data dir is the embedded default;
``postgresql+asyncpg://…`` runs the same code against PostgreSQL.  The store
is written through, never read on the request path: the control plane keeps
its records in memory (:class:`~swell.control._registry.Registry`) and changes
the database first, in one transaction per change, so a failed write leaves
both as they were.

Schema migrations are Alembic's (``swell/control/migrations``), run at start-up
against the connection the store already holds; an empty database gets the head
schema straight from the metadata, without Alembic.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Column,
    Connection,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    delete,
    event,
    func,
    insert,
    inspect,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from swell.control._schema import (
    api_keys,
    async_requests,
    deployments,
    environments,
    events,
    metadata,
    models,
    promotions,
    secrets,
    workspace,
)
from swell.files import make_private

__all__ = ["MIGRATIONS_DIR", "NEW_WORKSPACE_FLAG", "Snapshot", "Store", "StoreError", "Transaction", "sqlite_url"]

log = logging.getLogger("swell.store")

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
HEAD_REVISION = "0004"


class StoreError(RuntimeError):
    """The database could not be opened or migrated."""


NEW_WORKSPACE_FLAG = "--new-workspace"
_SQLITE_HEADER = b"SQLite format 3\x00"


def _unusable_sqlite(path: Path) -> str | None:
    """Why the file at ``path`` cannot be Swell's database, or None (a missing file is a new workspace)."""
    if not path.exists():
        return None
    if path.stat().st_size == 0:
        return "is empty (0 bytes)"
    with path.open("rb") as fh:
        if fh.read(len(_SQLITE_HEADER)) != _SQLITE_HEADER:
            return "is not a SQLite database"
    import sqlite3

    try:
        with contextlib.closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as db:
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.DatabaseError as exc:
        return f"cannot be read as SQLite ({exc})"
    if tables and "alembic_version" not in tables:
        return f"is another program's database (tables: {', '.join(sorted(tables)[:5])})"
    return None


def _move_aside(path: Path) -> Path:
    aside = path.with_name(f"{path.name}.unusable-{int(time.time())}")
    for suffix in ("", "-wal", "-shm"):
        part = path.with_name(path.name + suffix)
        if part.exists():
            part.replace(aside.with_name(aside.name + suffix))
    return aside


def sqlite_url(data_dir: Path) -> str:
    return f"sqlite+aiosqlite:///{Path(data_dir).resolve() / 'swell.db'}"


@dataclass
class Snapshot:
    """Every row, as plain mappings, for the control plane to rebuild its records."""

    models: list[Mapping[str, Any]]
    deployments: list[Mapping[str, Any]]
    environments: list[Mapping[str, Any]]
    api_keys: list[Mapping[str, Any]]


class Transaction:
    """The writes the control plane makes, inside one database transaction."""

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def _upsert(
        self,
        table: Any,
        key: Mapping[str, Any],
        values: Mapping[str, Any],
        on_insert: Mapping[str, Any] | None = None,
    ) -> None:
        """Update the row with ``key``, or insert it (with ``on_insert`` too, e.g. a creation time)."""
        where = [table.c[name] == value for name, value in key.items()]
        result = await self.conn.execute(update(table).where(*where).values(**values))
        if result.rowcount == 0:
            await self.conn.execute(insert(table).values(**key, **values, **(on_insert or {})))

    async def add_model(self, model_id: str, name: str, created_at: float) -> None:
        await self.conn.execute(insert(models).values(id=model_id, name=name, created_at=created_at))

    async def delete_model(self, model_id: str) -> None:
        # Explicit children first: SQLite enforces ON DELETE CASCADE only with
        # its foreign_keys pragma, which a hand-opened database may lack.
        await self.conn.execute(delete(environments).where(environments.c.model_id == model_id))
        await self.conn.execute(delete(promotions).where(promotions.c.model_id == model_id))
        owned = select(deployments.c.id).where(deployments.c.model_id == model_id)
        await self.conn.execute(delete(events).where(events.c.deployment_id.in_(owned)))
        await self.conn.execute(delete(deployments).where(deployments.c.model_id == model_id))
        await self.conn.execute(delete(models).where(models.c.id == model_id))

    async def save_deployment(self, row: Mapping[str, Any]) -> None:
        values = dict(row)
        await self._upsert(deployments, {"id": values.pop("id")}, values)

    async def update_deployment(self, deployment_id: str, **values: Any) -> None:
        await self.conn.execute(update(deployments).where(deployments.c.id == deployment_id).values(**values))

    async def delete_deployment(self, deployment_id: str) -> None:
        await self.conn.execute(
            update(environments).where(environments.c.deployment_id == deployment_id).values(deployment_id=None)
        )
        await self.conn.execute(delete(deployments).where(deployments.c.id == deployment_id))
        await self.conn.execute(delete(events).where(events.c.deployment_id == deployment_id))

    async def set_environment(self, model_id: str, name: str, deployment_id: str | None, created_at: float) -> None:
        await self._upsert(
            environments,
            {"model_id": model_id, "name": name},
            {"deployment_id": deployment_id},
            on_insert={"created_at": created_at},
        )

    async def save_promotion(self, row: Mapping[str, Any]) -> None:
        """An environment's rolling promotion, created or moved on (one row per environment)."""
        values = dict(row)
        key = {"model_id": values.pop("model_id"), "environment": values.pop("environment")}
        await self._upsert(promotions, key, values)

    async def add_key(self, row: Mapping[str, Any]) -> None:
        await self.conn.execute(insert(api_keys).values(**row))

    async def revoke_key(self, key_id: str, at: float) -> None:
        await self.conn.execute(update(api_keys).where(api_keys.c.id == key_id).values(revoked_at=at))

    async def touch_keys(self, used: Mapping[str, float]) -> None:
        for key_id, at in used.items():
            await self.conn.execute(update(api_keys).where(api_keys.c.id == key_id).values(last_used_at=at))

    async def touch_deployments(self, used: Mapping[str, float]) -> None:
        for deployment_id, at in used.items():
            await self.update_deployment(deployment_id, last_request_at=at)

    async def put_secret(self, name: str, ciphertext: bytes, now: float) -> float:
        """Create or replace; returns the secret's created_at."""
        row = (await self.conn.execute(select(secrets.c.created_at).where(secrets.c.name == name))).first()
        if row is None:
            await self.conn.execute(insert(secrets).values(name=name, ciphertext=ciphertext, created_at=now, updated_at=now))
            return now
        await self.conn.execute(update(secrets).where(secrets.c.name == name).values(ciphertext=ciphertext, updated_at=now))
        return float(row.created_at)

    async def delete_secret(self, name: str) -> bool:
        result = await self.conn.execute(delete(secrets).where(secrets.c.name == name))
        return bool(result.rowcount)

    async def put_workspace_value(self, name: str, value: bytes, now: float) -> None:
        await self._upsert(workspace, {"name": name}, {"value": value, "updated_at": now})

    async def add_async_request(self, row: Mapping[str, Any]) -> None:
        await self.conn.execute(insert(async_requests).values(**row))

    async def update_async_request(
        self, request_id: str, *, only_if: Iterable[str] | None = None, **values: Any
    ) -> bool:
        """Change one request; with ``only_if``, only while its status is one of
        those (so a result is stored once, and a late write never undoes a
        later one).  True if the row changed."""
        query = update(async_requests).where(async_requests.c.id == request_id)
        if only_if is not None:
            query = query.where(async_requests.c.status.in_(list(only_if)))
        result = await self.conn.execute(query.values(**values))
        return bool(result.rowcount)

    async def add_event(self, row: Mapping[str, Any]) -> int:
        """One event; returns its id (ids grow with time)."""
        result = await self.conn.execute(insert(events).values(**row))
        return int(result.inserted_primary_key[0])

    async def delete_events(self, deployment_id: str) -> None:
        await self.conn.execute(delete(events).where(events.c.deployment_id == deployment_id))

    async def trim_events(self, deployment_id: str, keep: int) -> None:
        """Keep the last ``keep`` events of one deployment."""
        newest = (
            select(events.c.id).where(events.c.deployment_id == deployment_id).order_by(events.c.id.desc()).limit(keep)
        )
        floor = (await self.conn.execute(select(func.min(newest.subquery().c.id)))).scalar()
        if floor is not None:
            await self.conn.execute(delete(events).where(events.c.deployment_id == deployment_id, events.c.id < floor))


def _check_driver(url: URL) -> None:
    """PostgreSQL's driver is an extra (``swell[postgres]``): say so, not ``No module named``."""
    if url.get_backend_name() != "postgresql" or url.get_driver_name() != "asyncpg":
        return
    try:
        import asyncpg  # noqa: F401
    except ImportError:
        raise StoreError(
            "PostgreSQL needs its driver, asyncpg, which is not installed: "
            "pip install 'swell[postgres]'"
        ) from None


class Store:
    """One database; :meth:`transaction` for writes, :meth:`snapshot` at start-up."""

    def __init__(self, url: str, *, new_workspace: bool = False) -> None:
        """``new_workspace``: an empty or foreign database file is moved aside and a new one made
        (else it is refused at start: it would silently be a new workspace with a new key)."""
        self.url = url
        self.new_workspace = new_workspace
        self._engine: AsyncEngine | None = None

    @property
    def engine(self) -> AsyncEngine:
        if self._engine is None:
            raise StoreError("the store is not started")
        return self._engine

    def describe(self) -> str:
        """The URL without its password, for logs."""
        return make_url(self.url).render_as_string(hide_password=True)

    async def start(self) -> None:
        """Open the database and bring its schema to the code's version."""
        url = make_url(self.url)
        kwargs: dict[str, Any] = {}
        if url.get_backend_name() == "sqlite":
            database = url.database or ""
            if database and database != ":memory:":
                Path(database).parent.mkdir(parents=True, exist_ok=True)
                self._check_file(Path(database))
        else:
            _check_driver(url)
            kwargs.update(pool_size=5, max_overflow=5, pool_pre_ping=True)
        try:
            engine = create_async_engine(url, **kwargs)
        except Exception as exc:  # a driver that is not installed, a malformed URL
            raise StoreError(f"cannot open the database {self.describe()}: {exc}") from exc
        if url.get_backend_name() == "sqlite":
            event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        self._engine = engine
        try:
            async with engine.begin() as conn:
                await conn.run_sync(_migrate, self.new_workspace)
            if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
                for suffix in ("", "-wal", "-shm"):  # async inputs and results are in it, in clear
                    part = Path(url.database + suffix)
                    if part.exists():
                        make_private(part)
        except StoreError:
            await engine.dispose()
            self._engine = None
            raise
        except Exception as exc:
            await engine.dispose()
            self._engine = None
            raise StoreError(f"cannot open or migrate the database {self.describe()}: {exc}") from exc

    def _check_file(self, path: Path) -> None:
        problem = _unusable_sqlite(path)
        if problem is None:
            return
        if not self.new_workspace:
            raise StoreError(
                f"the database {path} {problem}, so it holds no Swell workspace: restore swell.db from a "
                f"backup, or start with {NEW_WORKSPACE_FLAG} to move it aside and begin a new, empty "
                "workspace (no models, a new API key)"
            )
        aside = _move_aside(path)
        log.warning("the database %s %s: moved to %s; a new workspace begins (%s)", path, problem, aside, NEW_WORKSPACE_FLAG)

    async def close(self) -> None:
        if self._engine is not None:
            await self._engine.dispose()
            self._engine = None

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        async with self.engine.begin() as conn:
            yield Transaction(conn)

    async def snapshot(self) -> Snapshot:
        async with self.engine.connect() as conn:

            async def rows(query: Any) -> list[Mapping[str, Any]]:
                return [dict(r._mapping) for r in (await conn.execute(query))]

            return Snapshot(
                models=await rows(select(models).order_by(models.c.created_at)),
                deployments=await rows(select(deployments).order_by(deployments.c.created_at)),
                environments=await rows(select(environments).order_by(environments.c.created_at)),
                api_keys=await rows(select(api_keys).order_by(api_keys.c.created_at)),
            )

    async def promotions(self) -> list[Mapping[str, Any]]:
        """Every environment's last rolling promotion."""
        async with self.engine.connect() as conn:
            return [dict(r._mapping) for r in (await conn.execute(select(promotions)))]

    async def secret_rows(self, names: Iterable[str] | None = None) -> list[Mapping[str, Any]]:
        query = select(secrets).order_by(secrets.c.name)
        if names is not None:
            query = query.where(secrets.c.name.in_(list(names)))
        async with self.engine.connect() as conn:
            return [dict(r._mapping) for r in (await conn.execute(query))]

    async def encrypted_values(self) -> int:
        """How many stored values the secrets key encrypted (secrets and workspace values)."""
        async with self.engine.connect() as conn:
            total = 0
            for table in (secrets, workspace):
                total += (await conn.execute(select(func.count()).select_from(table))).scalar_one()
        return total

    async def workspace_value(self, name: str) -> bytes | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(workspace.c.value).where(workspace.c.name == name))).first()
        return None if row is None else bytes(row.value)

    async def async_request(self, request_id: str) -> Mapping[str, Any] | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(async_requests).where(async_requests.c.id == request_id))).first()
        return None if row is None else dict(row._mapping)

    async def events(
        self, deployment_id: str, *, since: float | None = None, after_id: int = 0, limit: int = 1000
    ) -> list[Mapping[str, Any]]:
        """The last ``limit`` events of one deployment (at or after ``since``, after ``after_id``), oldest first."""
        query = select(events).where(events.c.deployment_id == deployment_id, events.c.id > after_id)
        if since is not None:
            query = query.where(events.c.at >= since)
        query = query.order_by(events.c.id.desc()).limit(limit)
        async with self.engine.connect() as conn:
            rows = [dict(r._mapping) for r in (await conn.execute(query))]
        rows.reverse()
        return rows

    async def unfinished_async_requests(self, *, unfinished: Iterable[str], webhook_pending: str) -> list[Mapping[str, Any]]:
        """Rows with a status in ``unfinished``, or whose webhook is still to send, oldest first."""
        query = (
            select(async_requests)
            .where(or_(async_requests.c.status.in_(list(unfinished)), async_requests.c.webhook_status == webhook_pending))
            .order_by(async_requests.c.priority, async_requests.c.created_at)
        )
        async with self.engine.connect() as conn:
            return [dict(r._mapping) for r in (await conn.execute(query))]


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def _current_revision(conn: Connection) -> str | None:
    if not inspect(conn).has_table("alembic_version"):
        return None
    row = conn.execute(text("SELECT version_num FROM alembic_version")).first()
    return str(row[0]) if row else None


# Alembic's own version table (alembic.ddl.impl.DefaultImpl.version_table_impl), for
# stamping a database built from the metadata without importing Alembic.
_ALEMBIC_VERSION = Table(
    "alembic_version",
    MetaData(),
    Column("version_num", String(32), nullable=False),
    PrimaryKeyConstraint("version_num", name="alembic_version_pkc"),
)


def _migrate(conn: Connection, new_workspace: bool = False) -> None:
    """Bring the schema to head.  Alembic (and Mako under it, ~10 MiB of the
    server's memory for as long as it runs) is imported only to upgrade a
    database that has an older schema, or to add Swell's tables beside
    another program's (``--new-workspace``)."""
    current = _current_revision(conn)
    if current == HEAD_REVISION:
        return
    if current is None:
        tables = inspect(conn).get_table_names()
        if not tables:
            _create_at_head(conn)
            return
        if not new_workspace:  # a database some other program uses: Swell's tables do not go beside them unasked
            raise StoreError(
                f"the database has tables but no Swell schema ({', '.join(sorted(tables)[:5])}): point "
                f"--database-url at Swell's database or an empty one, or start with {NEW_WORKSPACE_FLAG} "
                "to create a new workspace in it"
            )
    _upgrade(conn, current)


def _create_at_head(conn: Connection) -> None:
    """An empty database: the head schema straight from the metadata, stamped
    with the head revision (Alembic's "building an up to date database from
    scratch"), so later migrations start from it.  The migrations build the
    same schema (tests/integration/control/test_store.py)."""
    log.info("creating the database's schema at %s", HEAD_REVISION)
    metadata.create_all(conn)
    _ALEMBIC_VERSION.create(conn)
    conn.execute(insert(_ALEMBIC_VERSION).values(version_num=HEAD_REVISION))


def _upgrade(conn: Connection, current: str | None) -> None:
    """Run Alembic's migrations from ``current`` (None: an empty schema) to head."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = conn
    log.info("migrating the database from %s to %s", current or "empty", HEAD_REVISION)
    command.upgrade(config, "head")
