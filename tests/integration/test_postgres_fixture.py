"""The PostgreSQL fixture gives a real server that SQLAlchemy's asyncpg engine can use."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine


async def test_select_one(postgres_url: str) -> None:
    engine = create_async_engine(postgres_url)
    try:
        async with engine.connect() as conn:
            assert (await conn.execute(text("select 1"))).scalar_one() == 1
            assert "PostgreSQL" in (await conn.execute(text("select version()"))).scalar_one()
    finally:
        await engine.dispose()


async def test_each_test_gets_a_fresh_database(postgres_database: str) -> None:
    engine = create_async_engine(postgres_database)
    try:
        async with engine.begin() as conn:
            tables = (await conn.execute(text(
                "select count(*) from information_schema.tables where table_schema = 'public'"))).scalar_one()
            assert tables == 0
            await conn.execute(text("create table t (x int)"))
            await conn.execute(text("insert into t values (42)"))
            assert (await conn.execute(text("select x from t"))).scalar_one() == 42
    finally:
        await engine.dispose()


async def test_database_url_gives_each_kind(database_url: str) -> None:
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            assert (await conn.execute(text("select 1"))).scalar_one() == 1
            assert conn.dialect.name == database_url.split("+")[0]
    finally:
        await engine.dispose()
