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
from models import DomainError, SessionRepository, SessionRow

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


async def _run(info: ContextInfo, change: Callable[[], Awaitable[Any]]) -> Any:
    """Run a use case; a domain error becomes its result member."""
    if not info.context.enabled:
        return disabled_member()
    context = info.context
    context.principal.require(Role.WRITE)
    if not context.services.mutation_limiter.allow(context.caller):
        raise ApiError("RATE_LIMITED", "Too many mutations: slow down and retry.")
    try:
        return await change()
    except DomainError as error:
        return error_member(error)


async def _update(
    info: ContextInfo, change: Callable[[SessionRepository], Awaitable[SessionRow]]
) -> Any:
    """Run an update use case on the caller's repository; SessionUpdated or an error member."""

    async def updated() -> SessionUpdated:
        row = await change(info.context.repository)
        return SessionUpdated(session=Session.from_row(row, info.context.loaders()))

    return await _run(info, updated)


@strawberry.type
class Mutation:
    @strawberry.mutation
    async def create_session(
        self, info: ContextInfo, input: CreateSessionInput
    ) -> CreateSessionResult:
        async def create() -> SessionCreated:
            info.context.principal.require_data_source(input.data_source)
            row, created = await info.context.repository.create(
                input.to_domain(), input.idempotency_key
            )
            if created:
                SESSIONS_CREATED.labels(row.data_source).inc()
            return SessionCreated(session=Session.from_row(row, info.context.loaders()))

        return await _run(info, create)

    @strawberry.mutation
    async def update_session_details(
        self, info: ContextInfo, input: UpdateSessionDetailsInput
    ) -> UpdateSessionResult:
        return await _update(info, lambda sessions: sessions.update_details(input.to_domain()))

    @strawberry.mutation
    async def update_session_identifier(
        self, info: ContextInfo, input: UpdateSessionIdentifierInput
    ) -> UpdateSessionResult:
        return await _update(
            info,
            lambda sessions: sessions.update_identifier(
                input.session_key, input.identifier, input.expected_revision
            ),
        )

    @strawberry.mutation
    async def add_associate_session(
        self, info: ContextInfo, input: AssociateSessionInput
    ) -> UpdateSessionResult:
        return await _update(
            info,
            lambda sessions: sessions.add_association(
                input.session_key, input.associate_session_key
            ),
        )

    @strawberry.mutation
    async def remove_associate_session(
        self, info: ContextInfo, input: AssociateSessionInput
    ) -> UpdateSessionResult:
        return await _update(
            info,
            lambda sessions: sessions.remove_association(
                input.session_key, input.associate_session_key
            ),
        )

    @strawberry.mutation
    async def add_session_streams(
        self, info: ContextInfo, input: AddSessionStreamsInput
    ) -> UpdateSessionResult:
        return await _update(
            info, lambda sessions: sessions.add_streams(input.session_key, input.streams)
        )

    @strawberry.mutation
    async def end_session(self, info: ContextInfo, input: EndSessionInput) -> EndSessionResult:
        async def change() -> SessionEnded:
            row, already = await info.context.repository.end(
                input.session_key, input.data_source, input.ended_at
            )
            if not already:
                SESSIONS_ENDED.labels(row.data_source).inc()
            session = Session.from_row(row, info.context.loaders())
            return SessionEnded(session=session, already_ended=already)

        return await _run(info, change)
