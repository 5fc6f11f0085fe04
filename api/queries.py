"""The Query root: sessions by key, live, filtered and paged; data sources; snapshots."""

import strawberry
from strawberry.types import Info
from strawberry.types.nodes import SelectedField

from api.context import Context
from api.errors import top_level
from api.inputs import SessionFilterInput
from api.types import DataSource, PageInfo, Session, SessionConnection, SessionEdge, SessionSnapshot
from models import InvalidInput, SessionFilter, encode_cursor
from models.queries import encode_page_cursor

ContextInfo = Info[Context, None]


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
        context = info.context
        context.require_enabled()
        context.require_key(key, "key")
        loaders = context.loaders
        if _selects(info, "details"):
            row = await loaders.load_with_details(key)
        else:
            row = await loaders.session.load(key)
        return None if row is None else Session.from_row(row, loaders)

    @strawberry.field(description="Live sessions, oldest first; of one data source when given.")
    async def current_sessions(
        self, info: ContextInfo, data_source: str | None = None
    ) -> list[Session]:
        context = info.context
        context.require_enabled()
        context.require_data_source(data_source)
        loaders = context.loaders
        rows = await loaders.reader.current(data_source)
        return [Session.from_row(row, loaders) for row in rows]

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
        context = info.context
        context.require_enabled()
        where = filter.to_domain() if filter else SessionFilter()
        context.require_data_source(where.data_source, "filter.dataSource")
        loaders = context.loaders
        try:
            page = await loaders.reader.page(where, first, after)
        except InvalidInput as error:
            raise top_level(error) from error
        last = page.rows[-1] if page.rows else None
        return SessionConnection(
            edges=[SessionEdge(node=Session.from_row(row, loaders)) for row in page.rows],
            page_info=PageInfo(
                has_next_page=page.has_next,
                end_cursor=encode_page_cursor(last.created_at, last.key) if last else None,
            ),
            where=where,
            loaders=loaders,
        )

    @strawberry.field(description="Every data source that has sessions, by name.")
    async def data_sources(self, info: ContextInfo) -> list[DataSource]:
        context = info.context
        context.require_enabled()
        return [
            DataSource(name=name, live_sessions=live, total_sessions=total)
            for name, live, total in await context.loaders.reader.data_sources()
        ]

    @strawberry.field(
        description="Live sessions and an event cursor taken in one read: subscribe with "
        "after: cursor to miss nothing."
    )
    async def session_snapshot(
        self, info: ContextInfo, data_source: str | None = None
    ) -> SessionSnapshot:
        context = info.context
        context.require_enabled()
        context.require_data_source(data_source)
        loaders = context.loaders
        cursor, rows = await loaders.reader.snapshot(data_source)
        return SessionSnapshot(
            cursor=encode_cursor(cursor), sessions=[Session.from_row(r, loaders) for r in rows]
        )
