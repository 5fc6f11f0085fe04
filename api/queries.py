"""The Query root: sessions by key, live, filtered and paged; data sources; snapshots.

Each field's reads are a function of the context and the field's arguments, returning records:
the resolvers below wrap them in the GraphQL types, and compiled execution (api/compiled.py)
answers from the records directly. Both paths share every check and read.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import strawberry
from strawberry.types import Info
from strawberry.types.nodes import SelectedField

from api.context import Context
from api.errors import invalid_argument, top_level
from api.inputs import SessionFilterInput
from api.node import Node, parse_global_id
from api.types import DataSource, PageInfo, Session, SessionConnection, SessionEdge, SessionSnapshot
from models import InvalidInput, SessionFilter, SessionRecord, encode_cursor
from models.queries import Page

ContextInfo = Info[Context, None]


@dataclass(frozen=True, slots=True)
class FilteredPage:
    page: Page
    where: SessionFilter


async def read_session(context: Context, key: str, with_details: bool) -> SessionRecord | None:
    """The session, and its details in the same statement when they will be asked for."""
    context.require_enabled()
    context.require_key(key, "key")
    loaders = context.loaders
    if with_details:
        return await loaders.load_with_details(key)
    return await loaders.session.load(key)


async def read_current(context: Context, data_source: str | None) -> list[SessionRecord]:
    context.require_enabled()
    context.require_data_source(data_source)
    return await context.loaders.reader.current(data_source)


async def read_page(
    context: Context, filter: SessionFilterInput | None, first: int, after: str | None
) -> FilteredPage:
    context.require_enabled()
    where = filter.to_domain() if filter else SessionFilter()
    context.require_data_source(where.data_source, "filter.dataSource")
    try:
        page = await context.loaders.reader.page(where, first, after)
    except InvalidInput as error:
        raise top_level(error) from error
    return FilteredPage(page, where)


async def read_data_sources(context: Context) -> list[tuple[str, int, int]]:
    context.require_enabled()
    return await context.loaders.reader.data_sources()


async def read_snapshot(
    context: Context, data_source: str | None
) -> tuple[int, list[SessionRecord]]:
    context.require_enabled()
    context.require_data_source(data_source)
    return await context.loaders.reader.snapshot(data_source)


async def read_nodes(context: Context, ids: Sequence[str], path: str) -> list[SessionRecord | None]:
    """The sessions that global ids name, in order; null for an id of another type, of no
    session, or of one the caller may not read (Relay's node fields answer null, never an
    error, for what the caller cannot see)."""
    context.require_enabled()
    loaders = context.loaders
    limit = loaders.reader.limits.page_size
    if len(ids) > limit:
        raise invalid_argument(path, f"at most {limit} ids at once")
    keys: list[str | None] = []
    for id in ids:
        type_name, key = parse_global_id(id, path)
        context.require_key(key, path)
        keys.append(key if type_name == "Session" else None)
    found = iter(await loaders.sessions([key for key in keys if key is not None]))
    return [None if key is None else next(found) for key in keys]


def _selects(info: ContextInfo, name: str) -> bool:
    """Whether the field's own selection names `name` directly (not through a fragment)."""
    return any(
        isinstance(selection, SelectedField) and selection.name == name
        for field in info.selected_fields
        for selection in field.selections
    )


@strawberry.type
class Query:
    @strawberry.field(description="The session with this key, or null.")
    async def session(self, info: ContextInfo, key: strawberry.ID) -> Session | None:
        row = await read_session(info.context, key, _selects(info, "details"))
        return None if row is None else Session.from_row(row, info.context.loaders)

    @strawberry.field(description="Live sessions, oldest first; of one data source when given.")
    async def current_sessions(
        self, info: ContextInfo, data_source: str | None = None
    ) -> list[Session]:
        rows = await read_current(info.context, data_source)
        return [Session.from_row(row, info.context.loaders) for row in rows]

    @strawberry.field(
        description="All sessions matching the filter, newest first, by cursor pages "
        "(first: 1..100)."
    )
    async def sessions(
        self,
        info: ContextInfo,
        filter: SessionFilterInput | None = None,
        first: int = 50,
        after: str | None = None,
    ) -> SessionConnection:
        found = await read_page(info.context, filter, first, after)
        loaders = info.context.loaders
        return SessionConnection(
            edges=[SessionEdge(node=Session.from_row(row, loaders)) for row in found.page.rows],
            page_info=PageInfo(has_next_page=found.page.has_next, end_cursor=found.page.end_cursor),
            where=found.where,
            loaders=loaders,
        )

    @strawberry.field(description="The object with this global id, or null (Relay).")
    async def node(self, info: ContextInfo, id: strawberry.ID) -> Node | None:
        [row] = await read_nodes(info.context, [id], "id")
        return None if row is None else Session.from_row(row, info.context.loaders)

    @strawberry.field(
        description="The objects with these global ids, in order, null for each unknown."
    )
    async def nodes(self, info: ContextInfo, ids: list[strawberry.ID]) -> list[Node | None]:
        rows = await read_nodes(info.context, ids, "ids")
        loaders = info.context.loaders
        return [None if row is None else Session.from_row(row, loaders) for row in rows]

    @strawberry.field(description="Every data source that has sessions, by name.")
    async def data_sources(self, info: ContextInfo) -> list[DataSource]:
        return [
            DataSource(name=name, live_sessions=live, total_sessions=total)
            for name, live, total in await read_data_sources(info.context)
        ]

    @strawberry.field(
        description="Live sessions and an event cursor taken in one read: subscribe with "
        "after: cursor to miss nothing."
    )
    async def session_snapshot(
        self, info: ContextInfo, data_source: str | None = None
    ) -> SessionSnapshot:
        cursor, rows = await read_snapshot(info.context, data_source)
        loaders = info.context.loaders
        return SessionSnapshot(
            cursor=encode_cursor(cursor), sessions=[Session.from_row(r, loaders) for r in rows]
        )
