"""SQLite reads outside a snapshot share one connection that nobody checks out; a snapshot
checks out a connection of its own."""

import asyncio
from pathlib import Path

from models import Database


async def _opened(path: Path) -> Database:
    database = Database(f"sqlite+aiosqlite:///{path}/reads.db", snapshot_connections=2)
    await database.migrate()
    await database.fetch("SELECT 1")  # opens the connections
    return database


async def _bump(database: Database) -> None:
    async with database.write() as connection:
        await connection.execute("UPDATE event_log_state SET last_cursor = last_cursor + 1")


def test_reads_answer_while_every_snapshot_connection_is_taken(tmp_path: Path) -> None:
    """Before, reads and snapshots checked out the same two connections: two open snapshots
    (two replays under way, say) held every read until one ended."""

    async def scenario() -> None:
        database = await _opened(tmp_path)
        try:
            async with database.snapshot() as first, database.snapshot() as second:
                # SQLite takes a snapshot's moment at its first read.
                (before,), *_ = await first.fetch("SELECT last_cursor FROM event_log_state")
                await second.fetch("SELECT 1 FROM sessions")
                reads = [
                    database.fetch("SELECT last_cursor FROM event_log_state") for _ in range(16)
                ]
                async with asyncio.timeout(5):
                    answers = await asyncio.gather(*reads)
                    await _bump(database)
                    async with database.read() as connection:
                        (now,), *_ = await connection.fetch(
                            "SELECT last_cursor FROM event_log_state"
                        )
                assert {tuple(rows[0]) for rows in answers} == {(before,)}
                # Each read sees the newest commit; a snapshot keeps the moment it began at.
                assert now == before + 1
                for snapshot in (first, second):
                    (seen,), *_ = await snapshot.fetch("SELECT last_cursor FROM event_log_state")
                    assert seen == before
        finally:
            await database.dispose()

    asyncio.run(scenario())


def test_a_cancelled_snapshot_gives_its_connection_back_outside_a_transaction(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        database = await _opened(tmp_path)
        try:
            entered = asyncio.Event()

            async def held() -> None:
                async with database.snapshot() as connection:
                    await connection.fetch("SELECT 1")
                    entered.set()
                    await asyncio.sleep(30)

            holders = [asyncio.create_task(held()) for _ in range(2)]
            await entered.wait()
            await asyncio.sleep(0.05)
            for holder in holders:
                holder.cancel()
            await asyncio.gather(*holders, return_exceptions=True)
            await _bump(database)
            async with asyncio.timeout(5):
                for _ in range(2):  # each connection, in turn: both back, and current
                    async with database.snapshot() as first, database.snapshot() as second:
                        for connection in (first, second):
                            rows = await connection.fetch("SELECT last_cursor FROM event_log_state")
                            assert rows[0][0] == 1
        finally:
            await database.dispose()

    asyncio.run(scenario())
