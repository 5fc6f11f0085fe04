"""The raw baselines: the cheapest correct implementation of the service's work on its stack.

Plain ASGI endpoints served by uvicorn (`--loop uvloop --http httptools`), one SQL statement
where one suffices, responses encoded with orjson into exactly the bytes the service sends
for the same request (bench/run.py checks that before it measures anything):

    /q1  session(key) with key dataSource identifier status createdAt details { name value }
    /q2  sessions(first: 100) { edges { node { 8 fields } } pageInfo { hasNextPage } }
    /m1  createSession(input) ... on SessionCreated { session { key } }
    /h1  session(key) { descendants(maxDepth: 8) { depth viaKey session { key } } }

The database comes from SESSION_SERVICE_DATABASE_URL, as for the service:

- sqlite+aiosqlite:///path: ONE aiosqlite connection opened at startup with the service's
  pragmas. A write is one call into aiosqlite's thread that runs BEGIN IMMEDIATE ... COMMIT,
  behind one asyncio.Lock: reads share the connection, so they must never run between a
  write's statements (they would see its uncommitted rows).
- postgresql+asyncpg://...: an asyncpg pool; createSession is one statement (data-modifying
  CTEs), so one round trip and one implicit transaction, that locks the event-log row first
  thing as the service does.

/ws and /publish are the fan-out baseline (bench/fanout.py): publish answers, then writes its
body to every socket in one loop.
"""

import asyncio
import os
import sqlite3
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import aiosqlite
import asyncpg
import orjson
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
Row = Sequence[Any]

PRAGMAS = ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON", "busy_timeout=10000")
# The H1 query's literal maxDepth.
MAX_DEPTH = 8

Q1_SQL = (
    "SELECT s.key, s.data_source, s.identifier, s.status, s.created_at, d.name, d.value"
    " FROM sessions s LEFT JOIN session_details d ON d.session_key = s.key"
    " WHERE s.key = {key} ORDER BY d.name"
)
Q2_SQL = (
    "SELECT key, data_source, type, version, identifier, status, created_at, revision"
    " FROM sessions ORDER BY created_at DESC, key DESC LIMIT 101"
)
# Breadth first as the service walks: level by level, and within a level the children, in
# association position order, of the previous level's sessions in their order. That is the
# order of (depth, the path of positions from the start), with fixed-width steps so that the
# paths compare as sequences. Each session once: the first by that order (on a DAG the same
# depth and via as the service's walk gives; on a tree every session is reached once anyway).
# The start comes back at depth 0, so an unknown key returns no row at all.
H1_SQLITE = (
    "WITH RECURSIVE walk(key, depth, via, path) AS ("
    " SELECT key, 0, NULL, '' FROM sessions WHERE key = ?"
    " UNION ALL"
    " SELECT a.child_key, w.depth + 1, w.key, w.path || printf('%010d', a.position)"
    " FROM walk w JOIN session_associations a ON a.parent_key = w.key WHERE w.depth < ?)"
    " SELECT key, depth, via FROM ("
    "  SELECT key, depth, via, path,"
    "   row_number() OVER (PARTITION BY key ORDER BY depth, path) AS n FROM walk)"
    " WHERE n = 1 ORDER BY depth, path"
)
H1_POSTGRES = (
    "WITH RECURSIVE walk(key, depth, via, path) AS ("
    " SELECT key::text, 0, NULL::text, ARRAY[]::int[] FROM sessions WHERE key = $1"
    " UNION ALL"
    " SELECT a.child_key::text, w.depth + 1, w.key, w.path || a.position"
    " FROM walk w JOIN session_associations a ON a.parent_key = w.key WHERE w.depth < $2)"
    " SELECT key, depth, via FROM ("
    "  SELECT key, depth, via, path,"
    "   row_number() OVER (PARTITION BY key ORDER BY depth, path) AS n FROM walk) AS first"
    " WHERE n = 1 ORDER BY depth, path"
)
NEXT_CURSOR = (
    "UPDATE event_log_state SET last_cursor = last_cursor + 1 WHERE id = 1 RETURNING last_cursor"
)
INSERT_SESSION = (
    "INSERT INTO sessions (key, data_source, type, version, identifier, utc_offset_seconds,"
    " status, created_at, updated_at, revision) VALUES ({key}, {source}, 'Session', 1, '', 0,"
    " 'LIVE', {now}, {now}, 1)"
)
INSERT_EVENT = (
    "INSERT INTO session_events (cursor, kind, session_key, data_source, occurred_at)"
    " VALUES ({cursor}, 'STARTED', {key}, {source}, {now})"
)
CREATE_POSTGRES = (
    f"WITH log AS ({NEXT_CURSOR}),"
    " session AS ("
    + INSERT_SESSION.format(key="$1", source="$2", now="$3")
    + "), details AS (INSERT INTO session_details (session_key, name, value)"
    " SELECT $1, name, value FROM unnest($4::text[], $5::text[]) AS given(name, value))"
    " INSERT INTO session_events (cursor, kind, session_key, data_source, occurred_at)"
    " SELECT last_cursor, 'STARTED', $1, $2, $3 FROM log"
)
SESSION_NULL = b'{"data":{"session":null}}'


class SQLite:
    """One shared connection; writes one at a time, each a single trip to its thread."""

    placeholder = "?"

    def __init__(self, path: str) -> None:
        self.path = path
        self.lock = asyncio.Lock()
        self._details_sql: dict[int, str] = {}

    async def open(self) -> None:
        self.connection = await aiosqlite.connect(self.path, isolation_level=None)
        for pragma in PRAGMAS:
            await self.connection.execute(f"PRAGMA {pragma}")

    async def close(self) -> None:
        await self.connection.close()

    async def fetch(self, sql: str, *parameters: Any) -> list[Row]:
        return list(await self.connection.execute_fetchall(sql, parameters))

    @staticmethod
    def moment(value: str) -> datetime:
        """Stored naive UTC text, as the aware datetime the service reads."""
        return datetime.fromisoformat(value).replace(tzinfo=UTC)

    @staticmethod
    def time(value: str) -> str:
        """As the service sends it: isoformat() of the aware datetime."""
        return datetime.fromisoformat(value).replace(tzinfo=UTC).isoformat()

    async def create(self, key: str, source: str, details: list[tuple[str, str]]) -> None:
        # As SQLAlchemy writes a naive UTC datetime to SQLite: always with microseconds.
        now = datetime.now(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")
        sql = self._details_sql.get(len(details))
        if sql is None:
            values = ",".join(["(?, ?, ?)"] * len(details))
            sql = self._details_sql[len(details)] = (
                f"INSERT INTO session_details (session_key, name, value) VALUES {values}"
            )
        flat = [item for name, value in details for item in (key, name, value)]
        async with self.lock:
            # aiosqlite's only way to run several statements in one trip to its thread.
            await self.connection._execute(self._create, key, source, now, sql, flat)

    def _create(self, key: str, source: str, now: str, details_sql: str, flat: list[str]) -> None:
        """In aiosqlite's thread: nothing else runs on the connection meanwhile."""
        connection: sqlite3.Connection = self.connection._conn
        connection.execute("BEGIN IMMEDIATE")
        try:
            (cursor,) = connection.execute(NEXT_CURSOR).fetchone()
            connection.execute(_SQLITE_SESSION, (key, source, now, now))
            if flat:
                connection.execute(details_sql, flat)
            connection.execute(_SQLITE_EVENT, (cursor, key, source, now))
            connection.execute("COMMIT")
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise


_SQLITE_SESSION = INSERT_SESSION.format(key="?", source="?", now="?")
_SQLITE_EVENT = INSERT_EVENT.format(cursor="?", key="?", source="?", now="?")


class Postgres:
    placeholder = "$1"

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn

    async def open(self) -> None:
        self.pool = await asyncpg.create_pool(self.dsn, min_size=10, max_size=20)

    async def close(self) -> None:
        await self.pool.close()

    async def fetch(self, sql: str, *parameters: Any) -> list[Row]:
        return list(await self.pool.fetch(sql, *parameters))

    @staticmethod
    def moment(value: datetime) -> datetime:
        return value.astimezone(UTC)

    @staticmethod
    def time(value: datetime) -> str:
        return value.astimezone(UTC).isoformat()

    async def create(self, key: str, source: str, details: list[tuple[str, str]]) -> None:
        names = [name for name, _ in details]
        values = [value for _, value in details]
        await self.pool.execute(CREATE_POSTGRES, key, source, datetime.now(UTC), names, values)


Database = SQLite | Postgres


def database_from_environment() -> Database:
    url = os.environ["SESSION_SERVICE_DATABASE_URL"]
    if url.startswith("sqlite"):
        return SQLite(url.split(":///", 1)[1])
    return Postgres(url.replace("postgresql+asyncpg://", "postgresql://", 1))


async def _body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


async def _send(send: Send, body: bytes, status: int = 200) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _endpoints(database: Database) -> dict[str, Callable[[bytes], Awaitable[bytes]]]:
    time = database.time
    q1_sql = Q1_SQL.format(key=database.placeholder)
    h1_sql = H1_SQLITE if isinstance(database, SQLite) else H1_POSTGRES

    async def q1(body: bytes) -> bytes:
        rows = await database.fetch(q1_sql, orjson.loads(body)["variables"]["key"])
        if not rows:
            return SESSION_NULL
        key, source, identifier, status, created_at, name, _ = rows[0]
        details = [] if name is None else [{"name": r[5], "value": r[6]} for r in rows]
        session = {
            "key": key,
            "dataSource": source,
            "identifier": identifier,
            "status": status,
            "createdAt": time(created_at),
            "details": details,
        }
        return orjson.dumps({"data": {"session": session}})

    async def q2(body: bytes) -> bytes:
        rows = await database.fetch(Q2_SQL)
        edges = [
            {
                "node": {
                    "key": r[0],
                    "dataSource": r[1],
                    "type": r[2],
                    "version": r[3],
                    "identifier": r[4],
                    "status": r[5],
                    "createdAt": time(r[6]),
                    "revision": r[7],
                }
            }
            for r in rows[:100]
        ]
        page = {"edges": edges, "pageInfo": {"hasNextPage": len(rows) > 100}}
        return orjson.dumps({"data": {"sessions": page}})

    async def m1(body: bytes) -> bytes:
        given = orjson.loads(body)["variables"]["input"]
        key = str(uuid.uuid4())
        details = [(detail["name"], detail["value"]) for detail in given.get("details", ())]
        await database.create(key, given["dataSource"], details)
        return orjson.dumps({"data": {"createSession": {"session": {"key": key}}}})

    async def h1(body: bytes) -> bytes:
        rows = await database.fetch(h1_sql, orjson.loads(body)["variables"]["key"], MAX_DEPTH)
        if not rows:
            return SESSION_NULL
        nodes = [
            {"depth": depth, "viaKey": via, "session": {"key": key}} for key, depth, via in rows[1:]
        ]
        return orjson.dumps({"data": {"session": {"descendants": nodes}}})

    return {"/q1": q1, "/q2": q2, "/m1": m1, "/h1": h1}


def _fan_out() -> Starlette:
    """The fan-out baseline: a WebSocket endpoint and a publish request that sends its body,
    as it is, to every connected socket."""
    sockets: set[WebSocket] = set()

    async def fan_out(websocket: WebSocket) -> None:
        await websocket.accept()
        sockets.add(websocket)
        try:
            while True:
                await websocket.receive_text()
        except WebSocketDisconnect:
            pass
        finally:
            sockets.discard(websocket)

    async def send_all(text: str) -> None:
        for websocket in list(sockets):
            try:
                await websocket.send_text(text)
            except WebSocketDisconnect:  # closed since it was listed: the others still get it
                sockets.discard(websocket)

    async def publish(request: Request) -> Response:
        # Answered first, as the service answers its mutation before the fan-out.
        text = (await request.body()).decode()
        return Response(str(len(sockets)), background=BackgroundTask(send_all, text))

    return Starlette(
        routes=[Route("/publish", publish, methods=["POST"]), WebSocketRoute("/ws", fan_out)]
    )


async def lifespan(database: "Database", receive: Receive, send: Send) -> None:
    """The ASGI lifespan protocol: the database opens at startup and closes at shutdown."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await database.open()
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await database.close()
            await send({"type": "lifespan.shutdown.complete"})
            return


def create_app() -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    database = database_from_environment()
    endpoints = _endpoints(database)
    fan_out = _fan_out()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http" and (endpoint := endpoints.get(scope["path"])) is not None:
            await _send(send, await endpoint(await _body(receive)))
        elif kind == "lifespan":
            await lifespan(database, receive, send)
        else:
            await fan_out(scope, receive, send)  # type: ignore[arg-type]

    return app
