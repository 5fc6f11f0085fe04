"""The Mutation root: each use case's outcome is a member of its result union."""

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import strawberry
from strawberry.types import Info

from api.auth import Role
from api.context import Context
from api.errors import (
    ApiError,
    AssociationCycleError,
    IdempotencyMismatchError,
    RevisionConflictError,
    SessionManagementDisabledError,
    SessionNotFoundError,
    ValidationError,
    disabled_member,
    error_member,
)
from api.inputs import (
    AddSessionStreamsInput,
    AssociateSessionInput,
    CreateSessionInput,
    EndSessionInput,
    UpdateSessionDetailsInput,
    UpdateSessionIdentifierInput,
)
from api.metrics import SESSIONS_CREATED, SESSIONS_ENDED
from api.types import Session
from models import DomainError, SessionWriter, Written

ContextInfo = Info[Context, None]


@strawberry.type
class SessionCreated:
    session: Session


@strawberry.type
class SessionUpdated:
    session: Session


@strawberry.type
class SessionEnded:
    session: Session
    already_ended: bool = strawberry.field(
        description="True when the session had already ended: nothing changed and no event was "
        "sent."
    )


CreateSessionResult = Annotated[
    SessionCreated
    | ValidationError
    | SessionNotFoundError
    | AssociationCycleError
    | IdempotencyMismatchError
    | SessionManagementDisabledError,
    strawberry.union("CreateSessionResult"),
]
UpdateSessionResult = Annotated[
    SessionUpdated
    | ValidationError
    | SessionNotFoundError
    | RevisionConflictError
    | AssociationCycleError
    | SessionManagementDisabledError,
    strawberry.union("UpdateSessionResult"),
]
EndSessionResult = Annotated[
    SessionEnded | ValidationError | SessionNotFoundError | SessionManagementDisabledError,
    strawberry.union("EndSessionResult"),
]


async def _run(context: Context, change: Callable[[], Awaitable[Any]]) -> Any:
    """Run a use case; a domain error becomes its result member."""
    if not context.enabled:
        return disabled_member()
    context.principal.require(Role.WRITE)
    if not context.services.mutation_limiter.allow(context.caller):
        raise ApiError("RATE_LIMITED", "Too many mutations: slow down and retry.")
    try:
        return await change()
    except DomainError as error:
        return error_member(error)


def _answer(context: Context, written: Written) -> Session:
    """The session as the use case left it, answered from what its transaction read or wrote."""
    context.loaders.prime(written)
    return Session.from_row(written.session, context.loaders)


async def _update(context: Context, change: Callable[[SessionWriter], Awaitable[Written]]) -> Any:
    """Run an update use case as the caller; SessionUpdated or an error member."""

    async def updated() -> SessionUpdated:
        return SessionUpdated(session=_answer(context, await change(context.writer)))

    return await _run(context, updated)


# Each mutation as a function of the context and its input, returning its result member: the
# resolvers below and compiled execution (api/compiled.py) both call these.


async def create_session(context: Context, input: CreateSessionInput) -> Any:
    async def create() -> SessionCreated:
        context.principal.require_data_source(input.data_source)
        written, created = await context.writer.create(input.to_domain(), input.idempotency_key)
        if created:
            SESSIONS_CREATED.labels(written.session.data_source).inc()
        return SessionCreated(session=_answer(context, written))

    return await _run(context, create)


async def update_session_details(context: Context, input: UpdateSessionDetailsInput) -> Any:
    return await _update(context, lambda sessions: sessions.update_details(input.to_domain()))


async def update_session_identifier(context: Context, input: UpdateSessionIdentifierInput) -> Any:
    return await _update(
        context,
        lambda sessions: sessions.update_identifier(
            input.session_key, input.identifier, input.expected_revision
        ),
    )


async def add_associate_session(context: Context, input: AssociateSessionInput) -> Any:
    return await _update(
        context,
        lambda sessions: sessions.add_association(input.session_key, input.associate_session_key),
    )


async def remove_associate_session(context: Context, input: AssociateSessionInput) -> Any:
    return await _update(
        context,
        lambda sessions: sessions.remove_association(
            input.session_key, input.associate_session_key
        ),
    )


async def add_session_streams(context: Context, input: AddSessionStreamsInput) -> Any:
    return await _update(
        context, lambda sessions: sessions.add_streams(input.session_key, input.streams)
    )


async def end_session(context: Context, input: EndSessionInput) -> Any:
    async def change() -> SessionEnded:
        written, already = await context.writer.end(
            input.session_key, input.data_source, input.ended_at
        )
        if not already:
            SESSIONS_ENDED.labels(written.session.data_source).inc()
        return SessionEnded(session=_answer(context, written), already_ended=already)

    return await _run(context, change)


# By field name, for compiled execution.
MUTATIONS: dict[str, Callable[[Context, Any], Awaitable[Any]]] = {
    "createSession": create_session,
    "updateSessionDetails": update_session_details,
    "updateSessionIdentifier": update_session_identifier,
    "addAssociateSession": add_associate_session,
    "removeAssociateSession": remove_associate_session,
    "addSessionStreams": add_session_streams,
    "endSession": end_session,
}


@strawberry.type
class Mutation:
    @strawberry.mutation
    async def create_session(
        self, info: ContextInfo, input: CreateSessionInput
    ) -> CreateSessionResult:
        return await create_session(info.context, input)

    @strawberry.mutation
    async def update_session_details(
        self, info: ContextInfo, input: UpdateSessionDetailsInput
    ) -> UpdateSessionResult:
        return await update_session_details(info.context, input)

    @strawberry.mutation
    async def update_session_identifier(
        self, info: ContextInfo, input: UpdateSessionIdentifierInput
    ) -> UpdateSessionResult:
        return await update_session_identifier(info.context, input)

    @strawberry.mutation
    async def add_associate_session(
        self, info: ContextInfo, input: AssociateSessionInput
    ) -> UpdateSessionResult:
        return await add_associate_session(info.context, input)

    @strawberry.mutation
    async def remove_associate_session(
        self, info: ContextInfo, input: AssociateSessionInput
    ) -> UpdateSessionResult:
        return await remove_associate_session(info.context, input)

    @strawberry.mutation
    async def add_session_streams(
        self, info: ContextInfo, input: AddSessionStreamsInput
    ) -> UpdateSessionResult:
        return await add_session_streams(info.context, input)

    @strawberry.mutation
    async def end_session(self, info: ContextInfo, input: EndSessionInput) -> EndSessionResult:
        return await end_session(info.context, input)
