"""The async engine, its read and write transactions, and schema migration."""

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import event
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlmodel.ext.asyncio.session import AsyncSession

logger = logging.getLogger(__name__)

# An arbitrary constant naming the advisory lock that serialises migrations.
_MIGRATION_LOCK = 7_412_001
MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


class Database:
    """One engine per process. Writes are serialised: on SQLite by one in-process writer and
    `BEGIN IMMEDIATE` (concurrent writers through the pool gave second-long tails and "database
    is locked"), on PostgreSQL by the event-log row lock every write takes first."""

    def __init__(self, url: str, *, busy_timeout_ms: int = 10_000, pool_size: int = 10) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        options: dict[str, Any] = {}
        if not self.is_sqlite:
            # Bounded waits everywhere, so a database outage fails requests fast instead of
            # hanging them.
            options = {
                "pool_size": pool_size,
                "max_overflow": pool_size,
                "pool_pre_ping": True,
                "pool_timeout": 10,
                "connect_args": {"timeout": 5, "command_timeout": 60},
            }
        self.engine: AsyncEngine = create_async_engine(url, **options)
        self._write_lock = asyncio.Lock()
        if self.is_sqlite:
            _configure_sqlite(self.engine, busy_timeout_ms)
        self._writer = self.engine.execution_options(sqlite_begin="IMMEDIATE")

    @asynccontextmanager
    async def read(self, *, snapshot: bool = False) -> AsyncIterator[AsyncSession]:
        """A read-only transaction; `snapshot` makes every statement in it see one moment."""
        async with AsyncSession(self.engine, expire_on_commit=False) as session:
            if snapshot and not self.is_sqlite:
                await session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
            yield session

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncSession]:
        """A write transaction, committed on exit unless the block raises."""
        lock = self._write_lock if self.is_sqlite else _NO_LOCK
        async with (
            lock,
            AsyncSession(self._writer, expire_on_commit=False) as session,
            session.begin(),
        ):
            yield session

    async def migrate(self) -> None:
        """Bring the schema to the newest Alembic revision; safe with several processes starting
        at once (an immediate transaction on SQLite, an advisory lock on PostgreSQL)."""
        async with self._writer.begin() as connection:
            if not self.is_sqlite:
                await connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK})")
            await connection.run_sync(_upgrade)

    async def ping(self) -> None:
        async with self.engine.connect() as connection:
            await connection.exec_driver_sql("SELECT 1")

    async def dispose(self) -> None:
        await self.engine.dispose()


class SharedRead:
    """The reads of one query operation in one transaction, opened at the first read: a
    connection checked out, begun and rolled back once rather than for every batch of reads
    (on SQLite every one of those is a trip to aiosqlite's thread). Reads take turns on it. A
    snapshot read, and any read after `close` (a loader the operation left running when it
    failed), gets a transaction of its own."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self._turn = asyncio.Lock()
        self._open = AsyncExitStack()
        self._session: AsyncSession | None = None
        self._closed = False

    @asynccontextmanager
    async def read(self, *, snapshot: bool = False) -> AsyncIterator[AsyncSession]:
        if not snapshot:
            await self._turn.acquire()
            if not self._closed:
                try:
                    if self._session is None:
                        self._session = await self._open.enter_async_context(self.database.read())
                    yield self._session
                except BaseException:
                    await self._discard()  # a failed transaction serves no further read
                    raise
                finally:
                    self._turn.release()
                return
            self._turn.release()
        async with self.database.read(snapshot=snapshot) as session:
            yield session

    async def close(self) -> None:
        """End the shared transaction once the read using it, if any, is done."""
        async with self._turn:
            self._closed = True
            await self._discard()

    async def _discard(self) -> None:
        self._session = None
        try:
            await self._open.aclose()
        except Exception as error:  # ending a read-only transaction loses nothing
            logger.warning("could not end a shared read transaction: %r", error)


class _NoLock:
    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc: object) -> None:
        return None


_NO_LOCK = _NoLock()


def alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def _upgrade(connection: Connection) -> None:
    command.upgrade(alembic_config(connection), "head")


def _configure_sqlite(engine: AsyncEngine, busy_timeout_ms: int) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control from the driver so that `begin` below decides the mode.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        for pragma in (
            "journal_mode=WAL",
            f"busy_timeout={busy_timeout_ms}",
            "foreign_keys=ON",
            "synchronous=NORMAL",
        ):
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Connection) -> None:
        mode = connection.get_execution_options().get("sqlite_begin", "DEFERRED")
        connection.exec_driver_sql(f"BEGIN {mode}")
