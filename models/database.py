"""The database: driver connections for reads and writes, their transactions, and migration.

Requests talk to the driver (aiosqlite, asyncpg) directly. Through SQLAlchemy's async engine a
small select cost about 270 µs of CPU against 33 µs for the same statement on an aiosqlite
connection (its adapter makes four trips to aiosqlite's thread per statement, plus a greenlet
switch). SQLAlchemy and Alembic still own the schema: `migrate` runs them on an engine of its own.
"""

import asyncio
import logging
import re
import sqlite3
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager, suppress
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import aiosqlite
import asyncpg
import orjson
from alembic import command
from alembic.config import Config
from sqlalchemy import event
from sqlalchemy.engine import Connection as SAConnection
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from models.errors import DatabaseUnavailable

logger = logging.getLogger(__name__)

# An arbitrary constant naming the advisory lock that serialises migrations.
_MIGRATION_LOCK = 7_412_001
MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"

# The event loop's time by which the current request's database work must be done (see
# `deadline`); None outside a request: each use of a connection then gets the database's timeout.
_DEADLINE: ContextVar[float | None] = ContextVar("database_deadline", default=None)
# A new PostgreSQL connection must be up within this (or the operation's bound, if sooner).
CONNECT_TIMEOUT_SECONDS = 5.0
Row = Sequence[Any]
Listener = Callable[[str], None]
# What sits between the service and PostgreSQL: nothing, or PgBouncer in transaction pooling
# mode (any pool mode works with its settings; session mode does not need them).
Pooler = Literal["none", "pgbouncer"]
POOLERS: tuple[Pooler, ...] = ("none", "pgbouncer")


class Connection(ABC):
    """One driver connection. Statements are written once, with `?` placeholders; the
    PostgreSQL connection numbers them. Lists of keys go in as one parameter (`keys`)."""

    def __init__(self, database: "Database") -> None:
        self.database = database

    @abstractmethod
    async def fetch(self, sql: str, *params: Any) -> list[Row]:
        """The statement's rows."""

    @abstractmethod
    async def execute(self, sql: str, *params: Any) -> None:
        """Run a statement that returns no rows."""

    def _heard(self, sql: str) -> None:
        for listener in self.database.listeners:
            listener(sql)


class _SQLite(Connection):
    def __init__(self, database: "Database", driver: aiosqlite.Connection) -> None:
        super().__init__(database)
        self.driver = driver

    async def fetch(self, sql: str, *params: Any) -> list[Row]:
        self._heard(sql)
        # Straight to aiosqlite's thread: its execute_fetchall wraps the same call in a
        # context-manager object and a coroutine of its own, then we copied the list.
        return await self.driver._execute(_fetch_all, self.driver, sql, params)

    async def execute(self, sql: str, *params: Any) -> None:
        self._heard(sql)
        await self.driver._execute(_fetch_all, self.driver, sql, params)


class _SQLiteWriter(_SQLite):
    """The SQLite writer connection. Inside a transaction, statements whose rows nobody reads
    wait, and go to aiosqlite's thread together with the next statement that returns rows, or
    with the COMMIT: a create is two trips to that thread instead of seven, as the raw
    baseline's one function per transaction is one (bench/REPORT.md). A waiting statement that
    fails, fails the trip it goes in, still inside the transaction, which is then rolled back."""

    def __init__(self, database: "Database", driver: aiosqlite.Connection) -> None:
        super().__init__(database, driver)
        # Statements not yet sent, BEGIN IMMEDIATE first; None outside a transaction.
        self.pending: list[tuple[str, Sequence[Any]]] | None = None

    def begin(self) -> None:
        self._heard("BEGIN IMMEDIATE")
        self.pending = [("BEGIN IMMEDIATE", ())]

    async def execute(self, sql: str, *params: Any) -> None:
        if self.pending is None:
            return await super().execute(sql, *params)
        self._heard(sql)
        self.pending.append((sql, params))

    async def fetch(self, sql: str, *params: Any) -> list[Row]:
        if not self.pending:
            return await super().fetch(sql, *params)
        self._heard(sql)
        pending, self.pending = self.pending, []
        return await self.driver._execute(_run_then_fetch, self.driver, pending, sql, params)

    async def commit(self) -> None:
        pending, self.pending = self.pending or [], None
        self._heard("COMMIT")
        await self.driver._execute(_run_and_commit, self.driver, pending)

    async def rollback(self) -> None:
        """Drop the statements not yet sent, and roll back what began (if BEGIN went)."""
        pending, self.pending = self.pending, None
        if pending and pending[0][0] == "BEGIN IMMEDIATE":
            return
        self._heard("ROLLBACK")
        try:
            await self.driver._execute(_roll_back, self.driver)
        except Exception as error:  # a failed transaction that cannot end is ended by SQLite
            logger.warning("could not roll back a write: %r", error)


def _fetch_all(driver: aiosqlite.Connection, sql: str, params: Sequence[Any]) -> list[Row]:
    """On aiosqlite's thread: one statement's rows."""
    return driver._conn.execute(sql, params).fetchall()


def _run(connection: sqlite3.Connection, statements: list[tuple[str, Sequence[Any]]]) -> None:
    for sql, params in statements:
        connection.execute(sql, params)


def _run_then_fetch(
    driver: aiosqlite.Connection,
    statements: list[tuple[str, Sequence[Any]]],
    sql: str,
    params: Sequence[Any],
) -> list[Row]:
    """On aiosqlite's thread: the waiting statements, then one that returns rows."""
    connection = driver._conn
    _run(connection, statements)
    return connection.execute(sql, params).fetchall()


def _roll_back(driver: aiosqlite.Connection) -> None:
    if driver._conn.in_transaction:
        driver._conn.execute("ROLLBACK")


def _run_and_commit(
    driver: aiosqlite.Connection, statements: list[tuple[str, Sequence[Any]]]
) -> None:
    """On aiosqlite's thread: the waiting statements and the COMMIT, or a ROLLBACK if one fails
    (a transaction whose BEGIN was never sent has nothing to end)."""
    try:
        _run(driver._conn, statements)
        driver._conn.execute("COMMIT")
    except BaseException:
        _roll_back(driver)
        raise


class _Postgres(Connection):
    def __init__(self, database: "Database", driver: asyncpg.Connection) -> None:
        super().__init__(database)
        self.driver = driver

    async def fetch(self, sql: str, *params: Any) -> list[Row]:
        self._heard(sql)
        return list(await self.driver.fetch(_numbered(sql), *params))

    async def execute(self, sql: str, *params: Any) -> None:
        self._heard(sql)
        await self.driver.execute(_numbered(sql), *params)


class _PostgresWriter(_Postgres):
    """A PostgreSQL write transaction. Plain INSERTs (VALUES, no ON CONFLICT, one per table)
    wait, and go as one statement of data-modifying CTEs, each INSERT a CTE: closed by an
    UPDATE of another table (the event log's, which ends every write), or sent before the next
    other statement or the COMMIT. A create is then four round trips instead of seven, as the
    raw baseline's one statement of CTEs is one (bench/REPORT.md). Safe because none of them
    reads what another writes: CTEs share one snapshot, and foreign keys are checked at the
    end of the statement."""

    def __init__(self, database: "Database", driver: asyncpg.Connection) -> None:
        super().__init__(database, driver)
        self.pending: list[tuple[str, str, Sequence[Any]]] = []  # (table, sql, params)

    async def execute(self, sql: str, *params: Any) -> None:
        table = _plain_insert(sql)
        if table is not None and all(table != waiting for waiting, _, _ in self.pending):
            self._heard(sql)
            self.pending.append((table, sql, params))
            return
        closing = _plain_update(sql) if self.pending else None
        if closing is not None and all(closing != waiting for waiting, _, _ in self.pending):
            self._heard(sql)
            return await self._send(sql, params)
        await self.flush()
        await super().execute(sql, *params)

    async def fetch(self, sql: str, *params: Any) -> list[Row]:
        await self.flush()
        return await super().fetch(sql, *params)

    async def flush(self) -> None:
        """Send the waiting INSERTs."""
        if self.pending:
            *rest, (_, last, params) = self.pending
            self.pending = rest
            await self._send(last, params)

    async def _send(self, sql: str, params: Sequence[Any]) -> None:
        """The waiting INSERTs as CTEs of `sql`, in one round trip."""
        pending, self.pending = self.pending, []
        if pending:
            ctes = ", ".join(f"w{index} AS ({text})" for index, (_, text, _) in enumerate(pending))
            sql = f"WITH {ctes} {sql}"
            params = [value for _, _, values in pending for value in values] + list(params)
        await self.driver.execute(_numbered(sql), *params)


_PLAIN_INSERT = re.compile(r"INSERT INTO (\w+) \([^()]*\) VALUES [(),? ]+")
_PLAIN_UPDATE = re.compile(r"UPDATE (\w+) SET [^()]*")


def _plain_insert(sql: str) -> str | None:
    """The table of an `INSERT INTO t (columns) VALUES (?, …), …` and nothing more."""
    found = _PLAIN_INSERT.fullmatch(sql)
    return found.group(1) if found else None


def _plain_update(sql: str) -> str | None:
    """The table of an UPDATE without a subquery."""
    found = _PLAIN_UPDATE.fullmatch(sql)
    return found.group(1) if found else None


@lru_cache(maxsize=1024)
def _numbered(sql: str) -> str:
    """`?` placeholders as PostgreSQL's `$1`, `$2`, … (our statements hold no literal `?`)."""
    parts = sql.split("?")
    return "".join(f"{part}${index}" for index, part in enumerate(parts[:-1], 1)) + parts[-1]


async def _end_snapshot(connection: "Connection") -> None:
    with suppress(sqlite3.OperationalError):  # BEGIN failed: there is no transaction to end
        await connection.execute("ROLLBACK")


class Database:
    """The connections of one process. Writes are serialised: on SQLite by one writer
    connection behind a lock, in `BEGIN IMMEDIATE` (concurrent writers gave second-long tails
    and "database is locked"), on PostgreSQL by the event-log row lock every write takes first.
    Reads run on connections of their own, each statement in its own snapshot unless a
    `snapshot` transaction groups them.

    On SQLite every read outside a snapshot goes to one shared connection, never checked out:
    aiosqlite's thread runs the statements one after another as they come, as the raw
    baseline's one connection does. Checked out, two connections answered Q1 at about half the
    rate (bench/REPORT.md): a read waited for a free connection, then the event loop for the
    connection's thread, and three threads took turns at the GIL instead of two. A snapshot
    checks out a connection of its own (`snapshot_connections` of them)."""

    def __init__(
        self,
        url: str,
        *,
        busy_timeout_ms: int = 10_000,
        pool_size: int = 10,
        snapshot_connections: int = 2,
        timeout: float = 10,
        max_waiting: int = 100,
        pooler: Pooler = "none",
    ) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        self.busy_timeout_ms = busy_timeout_ms
        self.pool_size = pool_size
        self.snapshot_connections = snapshot_connections
        # PostgreSQL: the most a use of a connection may take, from the wait for it to its
        # release, and how many operations may wait for one (beyond: DatabaseUnavailable).
        self.timeout = timeout
        self.max_waiting = max_waiting
        self._acquiring = 0
        self.pooler = pooler
        # Called with every statement's text before it runs: tests count statements with it.
        self.listeners: list[Listener] = []
        self._opening = asyncio.Lock()
        self._ready = False
        self._pool: asyncpg.Pool | None = None
        # SQLite: the shared read connection, and the connections snapshots check out.
        self._statements: _SQLite | None = None
        self._snapshots: asyncio.LifoQueue[_SQLite] = asyncio.LifoQueue()
        self._sqlite: list[aiosqlite.Connection] = []
        self._writer: _SQLiteWriter | None = None
        # SQLite: a connection that only ever asks `PRAGMA data_version` (see data_version).
        self._versions: sqlite3.Connection | None = None
        self._write_lock = asyncio.Lock()

    # -- transactions ----------------------------------------------------------------------

    @asynccontextmanager
    async def read(self) -> AsyncIterator[Connection]:
        """A connection for reads; every statement sees the newest commit."""
        if not self._ready:
            await self._open()
        if self._pool is not None:
            async with self._pooled() as driver:
                yield _Postgres(self, driver)
            return
        assert self._statements is not None  # opened above
        yield self._statements

    async def fetch(self, sql: str, *params: Any) -> list[Row]:
        """One read statement: on SQLite without `read()`'s context manager, which cost as
        much as the rest of the read."""
        if self._statements is not None:
            return await self._statements.fetch(sql, *params)
        async with self.read() as connection:
            return await connection.fetch(sql, *params)

    @asynccontextmanager
    async def snapshot(self) -> AsyncIterator[Connection]:
        """A read-only transaction: every statement in it sees one moment."""
        if not self._ready:
            await self._open()
        if self._pool is not None:
            async with self._pooled() as driver:
                async with driver.transaction(isolation="repeatable_read", readonly=True):
                    yield _Postgres(self, driver)
            return
        try:  # most often one is idle, and taking it needs no wait
            connection = self._snapshots.get_nowait()
        except asyncio.QueueEmpty:
            connection = await self._snapshots.get()
        try:
            await connection.execute("BEGIN")
            yield connection
        finally:
            # Even when cancelled during BEGIN (which aiosqlite's thread still runs), and
            # shielded: graphql-core cancels the siblings of a field whose error nulls their
            # parent, and a connection that went back to the pool inside its transaction
            # failed every later snapshot on it. Queued before the pool hands it out again.
            try:
                await asyncio.shield(_end_snapshot(connection))
            finally:
                self._snapshots.put_nowait(connection)

    @asynccontextmanager
    async def write(self) -> AsyncIterator[Connection]:
        """A write transaction, committed on exit unless the block raises."""
        if not self._ready:
            await self._open()
        if self._pool is not None:
            async with self._pooled() as driver, driver.transaction():
                batched = _PostgresWriter(self, driver)
                yield batched
                await batched.flush()
            return
        assert self._writer is not None  # opened above
        async with self._write_lock:
            writer = self._writer
            writer.begin()
            try:
                yield writer
            except BaseException:
                await writer.rollback()
                raise
            await writer.commit()

    @asynccontextmanager
    async def _pooled(self) -> AsyncIterator[asyncpg.Connection]:
        """A pool connection, used until the operation's deadline at most.

        A database that stops answering without closing its sockets (paused, a network
        partition) would hold every waiting request as long as it lasts. At the deadline the
        connection is terminated instead of cancelled: the statement under way fails at once,
        a transaction not yet committed is rolled back by the server, and nothing waits for a
        cancel request or a ROLLBACK the silent server would never answer (asyncpg's cancel on
        release waited that long, and so did /readyz's `wait_for`). A connection that failed
        below SQL, or whose operation was cancelled, is never reused either: asyncpg's reset,
        which we skip, would have found it broken (a database restart left one "with another
        operation in progress" for the next request)."""
        assert self._pool is not None
        loop = asyncio.get_running_loop()
        deadline = min(_DEADLINE.get() or float("inf"), loop.time() + self.timeout)
        if self._acquiring >= self.max_waiting:
            raise DatabaseUnavailable(f"{self._acquiring} operations already wait for a connection")
        self._acquiring += 1
        try:
            driver = await self._pool.acquire(timeout=max(deadline - loop.time(), 0.001))
        except TimeoutError as error:
            raise DatabaseUnavailable("no database connection within the bound") from error
        finally:
            self._acquiring -= 1
        expired = False

        def expire() -> None:
            nonlocal expired
            expired = True
            driver.terminate()

        watchdog = loop.call_at(deadline, expire)
        try:
            yield driver
        except BaseException as error:
            if _broken(error) or isinstance(error, asyncio.CancelledError):
                driver.terminate()
            if expired and not isinstance(error, asyncio.CancelledError):
                raise DatabaseUnavailable("the database did not answer within the bound") from error
            raise
        finally:
            watchdog.cancel()
            await self._pool.release(driver)

    # -- statements that differ by backend ----------------------------------------------------

    def keys(self, values: Sequence[str]) -> Any:
        """A list of keys as the one parameter of `in_keys`."""
        return orjson.dumps(list(values)).decode() if self.is_sqlite else list(values)

    def in_keys(self, column: str) -> str:
        """`column` is one of the keys given as one parameter: one statement text however many
        keys there are, so the driver's statement cache hits."""
        if self.is_sqlite:
            return f"{column} IN (SELECT value FROM json_each(?))"
        return f"{column} = ANY(?::text[])"

    def time(self, value: datetime | None) -> Any:
        """A UTC time as the backend stores it: SQLite holds naive text, always with
        microseconds (as SQLAlchemy wrote it), so that text order is time order."""
        if value is None or not self.is_sqlite:
            return value
        return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")

    def for_update(self) -> str:
        # SQLite's BEGIN IMMEDIATE already holds the write lock.
        return "" if self.is_sqlite else " FOR UPDATE"

    # -- lifecycle ---------------------------------------------------------------------------

    async def _open(self) -> None:
        async with self._opening:
            if self._ready:
                return
            if self.is_sqlite:
                path = make_url(self.url).database or ":memory:"
                self._statements = _SQLite(self, await self._connect_sqlite(path))
                for _ in range(self.snapshot_connections):
                    self._snapshots.put_nowait(_SQLite(self, await self._connect_sqlite(path)))
                self._writer = _SQLiteWriter(self, await self._connect_sqlite(path))
                if path != ":memory:":
                    self._versions = sqlite3.connect(
                        path, isolation_level=None, check_same_thread=False
                    )
                    # Never waits: a busy database is an error, and the caller reads afresh.
                    self._versions.execute("PRAGMA busy_timeout=0")
            else:
                self._pool = await asyncpg.create_pool(
                    _asyncpg_dsn(self.url),
                    min_size=1,
                    max_size=self.pool_size,
                    timeout=min(CONNECT_TIMEOUT_SECONDS, self.timeout),
                    command_timeout=self.timeout,
                    # Our connections keep no session state to reset between uses: skip the
                    # round trip asyncpg's default reset makes on every release.
                    reset=_no_reset,
                    **_pooled_arguments(self.pooler),
                )
            self._ready = True

    async def _connect_sqlite(self, path: str) -> aiosqlite.Connection:
        # isolation_level None: transactions are ours to begin (BEGIN IMMEDIATE for writes).
        driver = await aiosqlite.connect(path, isolation_level=None)
        for pragma in (
            "journal_mode=WAL",
            f"busy_timeout={self.busy_timeout_ms}",
            "foreign_keys=ON",
            "synchronous=NORMAL",
        ):
            await driver.execute(f"PRAGMA {pragma}")
        self._sqlite.append(driver)
        return driver

    async def migrate(self) -> None:
        """Bring the schema to the newest Alembic revision; safe with several processes starting
        at once (an immediate transaction on SQLite, an advisory lock on PostgreSQL)."""
        engine = create_async_engine(self.url, **_engine_arguments(self.pooler))
        if self.is_sqlite:
            _begin_immediately(engine)
        try:
            async with engine.begin() as connection:
                if not self.is_sqlite:
                    # Transaction-scoped, so it holds behind a transaction pooler too (a
                    # session-level lock would stay on a server connection others then get).
                    await connection.exec_driver_sql(
                        f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK})"
                    )
                await connection.run_sync(_upgrade)
        finally:
            await engine.dispose()

    async def data_version(self) -> int:
        """A number that moves with every committed change, whichever process made it.

        SQLite: `PRAGMA data_version` on a connection of its own, which moves when any other
        connection commits. It reads the WAL index in shared memory, never the disk, so it is
        asked on the event loop: about 6 µs, against a trip to aiosqlite's thread for a read.
        PostgreSQL: `event_log_state.version`, which every change moves, one indexed row."""
        if not self._ready:
            await self._open()
        if self._versions is not None:
            return int(self._versions.execute("PRAGMA data_version").fetchone()[0])
        rows = await self.fetch("SELECT version FROM event_log_state WHERE id = 1")
        return int(rows[0][0])

    async def ping(self) -> None:
        await self.fetch("SELECT 1")

    async def dispose(self) -> None:
        async with self._opening:
            if self._pool is not None:
                await self._pool.close()
                self._pool = None
            for driver in self._sqlite:
                await driver.close()
            self._sqlite.clear()
            if self._versions is not None:
                self._versions.close()
                self._versions = None
            self._statements = None
            self._snapshots = asyncio.LifoQueue()
            self._writer = None
            self._ready = False


@contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Bound every use of a PostgreSQL connection in this block (and the tasks it starts) to end
    within `seconds` from now, all together: a request's database work, however many statements
    and connections it takes, fails as DatabaseUnavailable by then."""
    token = set_deadline(seconds)
    try:
        yield
    finally:
        reset_deadline(token)


def set_deadline(seconds: float) -> Token[float | None]:
    """`deadline` without a context manager, for the request path: reset with the token."""
    return _DEADLINE.set(asyncio.get_running_loop().time() + seconds)


def reset_deadline(token: Token[float | None]) -> None:
    _DEADLINE.reset(token)


@contextmanager
def without_deadline() -> Iterator[None]:
    """Lift a request's bound in this block (a request that became a long-lived stream): each
    use of a connection keeps its own."""
    token = _DEADLINE.set(None)
    try:
        yield
    finally:
        _DEADLINE.reset(token)


def _broken(error: BaseException) -> bool:
    """A failure of the connection itself, as opposed to one of the statement."""
    if isinstance(error, asyncpg.PostgresError):
        return str(error.sqlstate or "").startswith(("08", "57P"))
    return isinstance(error, asyncpg.InterfaceError | asyncpg.InternalClientError | OSError)


async def _no_reset(connection: asyncpg.Connection) -> None:
    return None


def _pooled_arguments(pooler: Pooler) -> dict[str, Any]:
    """asyncpg's arguments for connections through `pooler`. Behind a transaction pooler each
    transaction, and each statement outside one, may run on another server connection, where
    a named prepared statement of ours does not exist, or one of another client process has the
    same name (asyncpg numbers them per process). Without a statement cache asyncpg prepares
    unnamed statements and sends their Parse again with Bind and Execute, in one message that
    the pooler hands to one server connection: this works with every PgBouncer version (Debian
    12 has 1.18; `max_prepared_statements` needs 1.21) and with other transaction poolers, for
    a second round trip and parse per statement."""
    return {"statement_cache_size": 0} if pooler == "pgbouncer" else {}


def _engine_arguments(pooler: Pooler) -> dict[str, Any]:
    """The migration engine's arguments: SQLAlchemy's asyncpg dialect names its prepared
    statements and keeps a cache of its own, so both caches go; and no pool, as the engine
    serves one migration."""
    if pooler == "none":
        return {}
    return {
        "poolclass": NullPool,
        "connect_args": {"prepared_statement_cache_size": 0, **_pooled_arguments(pooler)},
    }


def _asyncpg_dsn(url: str) -> str:
    """The SQLAlchemy URL as a DSN asyncpg takes (no `+asyncpg`)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def alembic_config(connection: SAConnection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def _upgrade(connection: SAConnection) -> None:
    command.upgrade(alembic_config(connection), "head")


def _begin_immediately(engine: AsyncEngine) -> None:
    """SQLite migrations in `BEGIN IMMEDIATE`: one process migrates while the others wait."""

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # transactions are begun below, not by the driver

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: SAConnection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")
