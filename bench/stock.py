"""Tuned stock Strawberry: the framework's own best at Q1, to place the service between it and
the raw baseline.

A plain strawberry.Schema with only the ParserCache and ValidationCache extensions, served by
Strawberry's GraphQL ASGI view (responses encoded with orjson) under uvicorn with uvloop and
httptools. `session(key)` does the raw baseline's single joined read (bench/raw.py: one shared
aiosqlite connection, or an asyncpg pool) and answers with the same bytes as the service.
"""

from collections.abc import Awaitable, Callable
from datetime import datetime
from enum import Enum
from typing import Any

import orjson
import strawberry
from strawberry.asgi import GraphQL
from strawberry.extensions import ParserCache, ValidationCache

from bench.raw import (
    Q1_SQL,
    Database,
    Receive,
    Scope,
    Send,
    database_from_environment,
    lifespan,
)


@strawberry.enum
class SessionStatus(Enum):
    LIVE = "LIVE"
    ENDED = "ENDED"


@strawberry.type
class SessionDetail:
    name: str
    value: str


@strawberry.type
class Session:
    key: strawberry.ID
    data_source: str
    identifier: str
    status: SessionStatus
    created_at: datetime
    details: list[SessionDetail]


@strawberry.type
class Query:
    @strawberry.field
    async def session(
        self, info: strawberry.Info[Database, None], key: strawberry.ID
    ) -> Session | None:
        database = info.context
        rows = await database.fetch(Q1_SQL.format(key=database.placeholder), key)
        if not rows:
            return None
        key, source, identifier, status, created_at, name, _ = rows[0]
        return Session(
            key=strawberry.ID(key),
            data_source=source,
            identifier=identifier,
            status=SessionStatus(status),
            created_at=database.moment(created_at),
            details=[] if name is None else [SessionDetail(name=r[5], value=r[6]) for r in rows],
        )


class View(GraphQL[Database, None]):
    def __init__(self, schema: strawberry.Schema, database: Database) -> None:
        super().__init__(schema, graphql_ide=None, allow_queries_via_get=False)
        self.database = database

    def encode_json(self, data: object) -> str:
        return orjson.dumps(data).decode()

    async def get_context(self, request: Any, response: Any) -> Database:
        return self.database


def create_app() -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    schema = strawberry.Schema(
        query=Query,
        extensions=[lambda: ParserCache(maxsize=512), lambda: ValidationCache(maxsize=512)],
    )
    database = database_from_environment()
    view = View(schema, database)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await lifespan(database, receive, send)
        else:
            await view(scope, receive, send)  # type: ignore[arg-type]

    return app
