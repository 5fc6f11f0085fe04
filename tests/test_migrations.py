"""Alembic migrations build exactly the schema the table models describe."""

import asyncio
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.ext.asyncio import create_async_engine
from sqlmodel import SQLModel

import models.tables  # noqa: F401  (registers the tables)
from models import Database


def _differences(connection: Any) -> list[Any]:
    return list(compare_metadata(MigrationContext.configure(connection), SQLModel.metadata))


async def _migrate_and_compare(url: str) -> list[Any]:
    database = Database(url)
    await database.migrate()
    await database.migrate()  # a second run is a no-op
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(_differences)
    finally:
        await engine.dispose()


def test_migrated_database_matches_the_models(database_url: str) -> None:
    assert asyncio.run(_migrate_and_compare(database_url)) == []
