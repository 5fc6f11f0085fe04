"""Writes in few trips: on SQLite the statements of a transaction go to aiosqlite's thread
together; on PostgreSQL plain INSERTs go as one statement of CTEs."""

import asyncio
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
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


def test_a_create_on_postgresql_is_four_round_trips(postgres: Any) -> None:
    """BEGIN, the event-log lock, every INSERT with the log's UPDATE in one statement, COMMIT;
    and what it stored is what a statement per INSERT stores."""
    if postgres is None:
        pytest.skip("PostgreSQL variant: set SESSION_SERVICE_TEST_POSTGRES_URL (.ci/run sets it)")
    url = postgres.new()

    async def run() -> tuple[int, list[Any], list[Any]]:
        db = Database(url)
        await db.migrate()
        await db.fetch("SELECT 1")
        trips = 0
        original = (asyncpg.Connection.execute, asyncpg.Connection.fetch)

        async def execute(self: Any, *args: Any, **kwargs: Any) -> Any:
            nonlocal trips
            trips += 1
            return await original[0](self, *args, **kwargs)

        async def fetch(self: Any, *args: Any, **kwargs: Any) -> Any:
            nonlocal trips
            trips += 1
            return await original[1](self, *args, **kwargs)

        writer = SessionWriter(db, Limits())
        parent, _ = await writer.create(NewSession(data_source="car-1"))
        new = NewSession(
            data_source="car-1",
            details=[("a", "1"), ("b", "2")],
            streams=["gps", "can"],
            associate_keys=[parent.session.key],
        )
        asyncpg.Connection.execute, asyncpg.Connection.fetch = execute, fetch  # type: ignore[method-assign]
        try:
            written, _ = await writer.create(new)
        finally:
            asyncpg.Connection.execute, asyncpg.Connection.fetch = original  # type: ignore[method-assign]
        key = written.session.key
        details = await db.fetch(
            "SELECT name, value FROM session_details WHERE session_key = ? ORDER BY name", key
        )
        events = await db.fetch("SELECT kind, session_key FROM session_events ORDER BY cursor")
        await db.dispose()
        return trips, [tuple(row) for row in details], [tuple(row) for row in events]

    try:
        trips, details, events = asyncio.run(run())
    finally:
        postgres.drop(url)
    # BEGIN; the log's row and the associates (two reads); the INSERTs and UPDATE; COMMIT.
    assert trips == 5
    assert details == [("a", "1"), ("b", "2")]
    assert [kind for kind, _ in events] == ["STARTED", "STARTED"]


def test_a_failing_insert_among_combined_ones_rolls_back_everything(postgres: Any) -> None:
    if postgres is None:
        pytest.skip("PostgreSQL variant: set SESSION_SERVICE_TEST_POSTGRES_URL (.ci/run sets it)")
    url = postgres.new()

    async def run() -> int:
        db = Database(url)
        await db.migrate()
        now = datetime.now(UTC)
        with pytest.raises(asyncpg.ForeignKeyViolationError):
            async with db.write() as connection:
                await connection.execute(
                    "INSERT INTO sessions (key, data_source, type, version, identifier, "
                    "utc_offset_seconds, status, created_at, updated_at, revision) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    "k", "car-1", "Session", 1, "", 0, "LIVE", now, now, 1,
                )  # fmt: skip
                await connection.execute(
                    "INSERT INTO session_details (session_key, name, value) VALUES (?, ?, ?)",
                    "missing", "a", "1",
                )  # fmt: skip
        count = (await db.fetch("SELECT count(*) FROM sessions"))[0][0]
        await db.dispose()
        return int(count)

    try:
        assert asyncio.run(run()) == 0
    finally:
        postgres.drop(url)
