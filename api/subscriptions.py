"""The Subscription root: committed events, replayed from a cursor and then live."""

from collections.abc import AsyncIterator
from dataclasses import replace

import strawberry
from graphql import GraphQLError
from strawberry.types import Info

from api.context import Context
from api.errors import ApiError, top_level
from api.fanout import SUBSCRIBING, Audience, Delivery
from api.masking import reported
from api.types import SessionEvent
from models import DomainError, EventFilter, EventKind, EventRecord, decode_cursor

ContextInfo = Info[Context, None]


async def _open(info: ContextInfo, where: EventFilter, after: str | None) -> Delivery:
    """Resolve a subscription: fail now (an `error` message) or deliver its events.

    Not a generator, so that a bad or expired cursor fails the subscribe itself and the
    subscriber joins its audience before this resolver first awaits.
    """
    context = info.context
    context.require_enabled()
    message = SUBSCRIBING.get()
    # Read once, then cleared: timers the database driver schedules from this task (asyncpg's
    # statement cache, 300 s) copy its context, which would keep the request, and so its
    # connection, alive after it closed.
    SUBSCRIBING.set(None)
    if message is None:
        raise ApiError(
            "VALIDATION",
            "Subscribe over WebSocket (graphql-transport-ws) or server-sent events.",
        )
    try:
        if message.resume_after is not None:
            position: int | None = decode_cursor(message.resume_after, "Last-Event-ID")
        else:
            position = None if after is None else decode_cursor(after)
    except DomainError as error:
        raise top_level(error) from error
    services = context.services
    scope = context.principal.data_sources
    hide_suggestions = not services.settings.development

    def root(event: EventRecord) -> SessionEvent:
        return SessionEvent.from_row(event, services.event_loaders.get(event.cursor, scope))

    operation_name = message.operation_name

    def finish(errors: list[GraphQLError]) -> list[GraphQLError]:
        return reported(errors, operation_name, hide_suggestions)

    def audience() -> Audience:
        # The audience outlives the subscriber who opens it: what it keeps (its executor's
        # context, `finish`) must not hold that subscriber's connection, closed or not.
        executor = message.executor(replace(context, websocket=None))
        return Audience(where, executor, root, finish, context.hub.queue_size)

    # Joined before the first await: nothing committed from here on can be missed.
    member = services.audiences.join(
        message.audience(scope), context.hub, audience, message.transport
    )
    try:
        replay = await context.hub.replay(where, position, member.after)
    except DomainError as error:
        member.leave()
        raise top_level(error) from error
    return Delivery(member, replay)


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
