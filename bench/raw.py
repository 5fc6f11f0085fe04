"""The raw baselines: plain Starlette endpoints doing the same SQL and sending the same JSON."""

import json
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import sqlalchemy as sa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from models import Database
from models.tables import utcnow

SESSION = sa.text(
    "SELECT key, data_source, identifier, status, created_at FROM sessions WHERE key = :key"
)
DETAILS = sa.text("SELECT name, value FROM session_details WHERE session_key = :key ORDER BY name")
PAGE = sa.text(
    "SELECT key, data_source, type, version, identifier, status, created_at, revision "
    "FROM sessions ORDER BY created_at DESC, key DESC LIMIT 101"
)


def _json(document: object) -> Response:
    return Response(json.dumps(document, separators=(",", ":")), media_type="application/json")


def _time(value: object) -> str:
    return str(value).replace(" ", "T") + ("" if "+" in str(value) else "+00:00")


def create_app() -> Starlette:
    database = Database(os.environ["SESSION_SERVICE_DATABASE_URL"])
    sockets: set[WebSocket] = set()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await database.dispose()

    async def one_session(request: Request) -> Response:
        key = (await request.json())["variables"]["key"]
        async with database.engine.connect() as connection:
            row = (await connection.execute(SESSION, {"key": key})).one()
            details = (await connection.execute(DETAILS, {"key": key})).all()
        session = {
            "key": row.key,
            "dataSource": row.data_source,
            "identifier": row.identifier,
            "status": row.status,
            "createdAt": _time(row.created_at),
            "details": [{"name": d.name, "value": d.value} for d in details],
        }
        return _json({"data": {"session": session}})

    async def page(request: Request) -> Response:
        await request.body()
        async with database.engine.connect() as connection:
            rows = (await connection.execute(PAGE)).all()
        nodes = [
            {
                "key": r.key,
                "dataSource": r.data_source,
                "type": r.type,
                "version": r.version,
                "identifier": r.identifier,
                "status": r.status,
                "createdAt": _time(r.created_at),
                "revision": r.revision,
            }
            for r in rows[:100]
        ]
        edges = [{"node": node} for node in nodes]
        return _json({"data": {"sessions": {"edges": edges, "pageInfo": {"hasNextPage": True}}}})

    async def create(request: Request) -> Response:
        body = (await request.json())["variables"]["input"]
        key, now = str(uuid.uuid4()), utcnow()
        async with database.write() as session:
            connection = await session.connection()
            # Allocating the cursor locks the row on PostgreSQL, as the service does.
            cursor = (
                await connection.execute(
                    sa.text(
                        "UPDATE event_log_state SET last_cursor = last_cursor + 1 "
                        "WHERE id = 1 RETURNING last_cursor"
                    )
                )
            ).scalar_one()
            await connection.execute(
                sa.text(
                    "INSERT INTO sessions (key, data_source, type, version, identifier, "
                    "utc_offset_seconds, status, created_at, updated_at, revision) VALUES "
                    "(:key, :ds, 'Session', 1, '', 0, 'LIVE', :now, :now, 1)"
                ),
                {"key": key, "ds": body["dataSource"], "now": now},
            )
            await connection.execute(
                sa.text("INSERT INTO session_details VALUES (:key, :name, :value)"),
                [{"key": key, **detail} for detail in body["details"]],
            )
            await connection.execute(
                sa.text("INSERT INTO session_events VALUES (:c, 'STARTED', :key, :ds, :now)"),
                {"c": cursor, "key": key, "ds": body["dataSource"], "now": now},
            )
        return _json({"data": {"createSession": {"session": {"key": key}}}})

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

    async def publish(request: Request) -> Response:
        """Send the request body, as it is, to every connected socket."""
        text = (await request.body()).decode()
        for websocket in list(sockets):
            await websocket.send_text(text)
        return Response(str(len(sockets)))

    return Starlette(
        routes=[
            Route("/q1", one_session, methods=["POST"]),
            Route("/q2", page, methods=["POST"]),
            Route("/m1", create, methods=["POST"]),
            Route("/publish", publish, methods=["POST"]),
            WebSocketRoute("/ws", fan_out),
        ],
        lifespan=lifespan,
    )
