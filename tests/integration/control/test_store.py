"""The store on each database: migrations build exactly the schema the code uses, and upgrades keep data."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from swell.control._schema import metadata
from swell.control._store import HEAD_REVISION, Store, StoreError, _upgrade


async def test_migrations_build_the_schema_the_code_uses(database_url: str) -> None:
    store = Store(database_url)
    await store.start()
    try:
        async with store.engine.connect() as conn:

            def diff(sync_conn):  # type: ignore[no-untyped-def]
                return compare_metadata(MigrationContext.configure(sync_conn), metadata)

            assert await conn.run_sync(diff) == []
            version = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar()
        assert version == HEAD_REVISION
    finally:
        await store.close()


async def test_the_migrations_from_empty_build_the_schema_the_code_uses(database_url: str) -> None:
    """A new database is built from the metadata (no Alembic); the migrations must build the same."""
    engine = create_async_engine(database_url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_upgrade, None)

            def diff(sync_conn):  # type: ignore[no-untyped-def]
                return compare_metadata(MigrationContext.configure(sync_conn), metadata)

            assert await conn.run_sync(diff) == []
    finally:
        await engine.dispose()


async def test_a_new_database_is_stamped_so_alembic_upgrades_it_from_head(database_url: str) -> None:
    store = Store(database_url)
    await store.start()
    await store.close()
    engine = create_async_engine(database_url)
    try:
        async with engine.begin() as conn:

            def revision(sync_conn):  # type: ignore[no-untyped-def]
                return MigrationContext.configure(sync_conn).get_current_revision()

            assert await conn.run_sync(revision) == HEAD_REVISION
            await conn.run_sync(_upgrade, HEAD_REVISION)  # nothing to do, and no error
            assert await conn.run_sync(revision) == HEAD_REVISION
    finally:
        await engine.dispose()


def test_a_new_sqlite_database_does_not_import_alembic(tmp_path: Path) -> None:
    """Alembic and Mako stay out of a first start's memory (bench/idle_memory.py)."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'swell.db'}"
    script = (
        "import asyncio, sys\n"
        "from swell.control._store import Store\n"
        "async def main():\n"
        f"    store = Store({url!r})\n"
        "    await store.start()\n"
        "    await store.close()\n"
        "asyncio.run(main())\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('alembic', 'mako')))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "[]"


async def test_reopening_keeps_rows_and_does_not_migrate_again(database_url: str) -> None:
    store = Store(database_url)
    await store.start()
    async with store.transaction() as tx:
        await tx.add_model("m1", "name", 1.0)
        await tx.set_environment("m1", "production", None, 1.0)
    await store.close()
    again = Store(database_url)
    await again.start()
    try:
        snapshot = await again.snapshot()
        assert [m["name"] for m in snapshot.models] == ["name"]
        assert snapshot.environments[0]["name"] == "production"
    finally:
        await again.close()


async def test_a_failed_transaction_writes_nothing(database_url: str) -> None:
    store = Store(database_url)
    await store.start()
    try:
        with pytest.raises(RuntimeError):
            async with store.transaction() as tx:
                await tx.add_model("m1", "name", 1.0)
                raise RuntimeError("boom")
        assert (await store.snapshot()).models == []
    finally:
        await store.close()


async def test_a_bad_url_is_a_clear_error(tmp_path: Path) -> None:
    store = Store("postgresql+asyncpg://nobody@/nothing?host=" + str(tmp_path / "no-socket"))
    with pytest.raises(StoreError) as info:
        await store.start()
    assert "cannot open" in str(info.value)
    with pytest.raises(StoreError):
        await Store("nosuchdriver://x").start()


def test_the_head_revision_the_code_expects_is_alembic_s_head() -> None:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from swell.control._store import MIGRATIONS_DIR

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    assert ScriptDirectory.from_config(config).get_current_head() == HEAD_REVISION
