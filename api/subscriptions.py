"""The Subscription root: committed events, replayed from a cursor and then live."""

import contextlib
from collections.abc import AsyncIterator

import strawberry
from strawberry.types import Info

from api.context import Context
from api.errors import top_level
from api.metrics import EVENTS_DELIVERED, SUBSCRIBERS_DROPPED, SUBSCRIPTIONS_OPEN
from api.types import SessionEvent
from models import (
    DomainError,
    EventFilter,
    EventKind,
    EventRow,
    HubClosed,
    SubscriberLagging,
    decode_cursor,
)

ContextInfo = Info[Context, None]

TRY_AGAIN_LATER = 1013
SERVICE_RESTART = 1012


async def _open(
    info: ContextInfo, where: EventFilter, after: str | None
) -> AsyncIterator[SessionEvent]:
    """Resolve a subscription: fail now (an `error` message) or return the event stream.

    Not a generator, so that a bad or expired cursor fails the subscribe itself and the hub
    registers the subscriber before this resolver first awaits.
    """
    context = info.context
    context.require_enabled()
    try:
        position = None if after is None else decode_cursor(after)
        events = await context.hub.open_stream(where, position)
    except DomainError as error:
        raise top_level(error) from error
    return _present(events, context)


async def _present(
    events: AsyncIterator[EventRow], context: Context
) -> AsyncIterator[SessionEvent]:
    SUBSCRIPTIONS_OPEN.inc()
    try:
        async for event in events:
            EVENTS_DELIVERED.inc()
            loaders = context.services.event_loaders.get(
                event.cursor, context.principal.data_sources
            )
            yield SessionEvent.from_row(event, loaders)
    except SubscriberLagging as error:
        SUBSCRIBERS_DROPPED.inc()
        await _close(context, TRY_AGAIN_LATER, f"{error}: resume with after: your last cursor")
    except HubClosed:
        await _close(context, SERVICE_RESTART, "the server is restarting: resume by cursor")
    finally:
        SUBSCRIPTIONS_OPEN.dec()


async def _close(context: Context, code: int, reason: str) -> None:
    """End the connection with a code graphql-ws clients retry, so they resume by cursor."""
    if context.websocket is not None:
        with contextlib.suppress(RuntimeError):  # already closed
            await context.websocket.close(code, reason)


def _one_source(info: ContextInfo, data_source: str, kind: EventKind) -> EventFilter:
    info.context.require_data_source(data_source)
    return EventFilter(data_sources=frozenset({data_source}), kinds=frozenset({kind}))


@strawberry.type
class Subscription:
    @strawberry.subscription(
        description="Sessions of this data source that start from now on (or after the cursor)."
    )
    async def session_started(
        self, info: ContextInfo, data_source: str, after: str | None = None
    ) -> AsyncIterator[SessionEvent]:
        return await _open(info, _one_source(info, data_source, EventKind.STARTED), after)

    @strawberry.subscription(
        description="Sessions of this data source that end from now on (or after the cursor)."
    )
    async def session_stopped(
        self, info: ContextInfo, data_source: str, after: str | None = None
    ) -> AsyncIterator[SessionEvent]:
        return await _open(info, _one_source(info, data_source, EventKind.STOPPED), after)

    @strawberry.subscription(
        description="Every kind of change, optionally narrowed; all data sources the caller may "
        "read when dataSource is null."
    )
    async def session_events(
        self,
        info: ContextInfo,
        data_source: str | None = None,
        session_key: strawberry.ID | None = None,
        kinds: list[EventKind] | None = None,
        after: str | None = None,
    ) -> AsyncIterator[SessionEvent]:
        info.context.require_data_source(data_source)
        info.context.require_key(session_key, "sessionKey")
        where = EventFilter(
            data_sources=(
                info.context.principal.data_sources
                if data_source is None
                else frozenset({data_source})
            ),
            session_key=session_key,
            kinds=None if kinds is None else frozenset(kinds),
        )
        return await _open(info, where, after)
