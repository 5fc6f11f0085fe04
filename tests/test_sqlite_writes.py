"""SQLite writes: the statements of a transaction go to aiosqlite's thread together."""

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from models import Database
from models.inputs import Limits, NewSession
from models.writer import SessionWriter


async def _count_trips(database: Database, work: Any) -> int:
    """Trips to the writer connection's thread while `work()` runs."""
    writer = database._writer
    assert writer is not None
    driver = writer.driver
    trips = 0
    original = driver._execute

    async def counted(function: Any, *args: Any, **kwargs: Any) -> Any:
        nonlocal trips
        trips += 1
        return await original(function, *args, **kwargs)

    driver._execute = counted  # type: ignore[method-assign,assignment]
    try:
        await work()
    finally:
        del driver._execute
    return trips


@pytest.fixture
def database(tmp_path: Path) -> Any:
    async def opened() -> Database:
        database = Database(f"sqlite+aiosqlite:///{tmp_path}/writes.db")
        await database.migrate()
        await database.fetch("SELECT 1")  # opens the connections
        return database

    return opened


def _stored(path: Path) -> tuple[int, int, int]:
    with sqlite3.connect(path) as connection:
        counts = [
            connection.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            for table in ("sessions", "session_details", "session_events")
        ]
    return counts[0], counts[1], counts[2]


def test_a_create_is_two_trips_to_the_writer_thread(database: Any, tmp_path: Path) -> None:
    """BEGIN with the event-log read, then the inserts with the COMMIT: not one trip each."""

    async def run() -> int:
        db = await database()
        writer = SessionWriter(db, Limits())
        new = NewSession(data_source="car-1", details=[("a", "1"), ("b", "2")], streams=["gps"])
        try:
            return await _count_trips(db, lambda: writer.create(new))
        finally:
            await db.dispose()

    assert asyncio.run(run()) == 2
    assert _stored(tmp_path / "writes.db") == (1, 2, 1)


def test_a_failing_statement_that_waited_rolls_back_the_whole_transaction(
    database: Any, tmp_path: Path
) -> None:
    """A statement sent with the COMMIT fails there: nothing of the transaction stays, the
    error reaches the caller, and the writer takes the next transaction as usual."""

    async def run() -> None:
        db = await database()
        with pytest.raises(sqlite3.IntegrityError):
            async with db.write() as connection:
                await connection.execute(
                    "INSERT INTO sessions (key, data_source, status, created_at, updated_at, "
                    "revision) VALUES ('k', 'car-1', 'LIVE', '2026-01-01', '2026-01-01', 1)"
                )
                await connection.execute(
                    "INSERT INTO session_details (session_key, name, value) "
                    "VALUES ('missing', 'a', '1')"  # no such session: a foreign key fails
                )
        await SessionWriter(db, Limits()).create(NewSession(data_source="car-2"))
        await db.dispose()

    asyncio.run(run())
    assert _stored(tmp_path / "writes.db") == (1, 0, 1)


def test_a_write_that_raises_before_its_first_trip_sends_nothing(
    database: Any, tmp_path: Path
) -> None:
    async def run() -> int:
        db = await database()

        async def work() -> None:
            with pytest.raises(RuntimeError):
                async with db.write() as connection:
                    await connection.execute("DELETE FROM sessions")
                    raise RuntimeError("the use case refused")

        try:
            return await _count_trips(db, work)
        finally:
            await db.dispose()

    assert asyncio.run(run()) == 0
    assert _stored(tmp_path / "writes.db") == (0, 0, 0)
