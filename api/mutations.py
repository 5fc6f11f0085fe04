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


def _answer(info: ContextInfo, written: Written) -> Session:
    """The session as the use case left it, answered from what its transaction read or wrote."""
    loaders = info.context.loaders
    loaders.prime(written)
    return Session.from_row(written.session, loaders)


async def _update(info: ContextInfo, change: Callable[[SessionWriter], Awaitable[Written]]) -> Any:
    """Run an update use case as the caller; SessionUpdated or an error member."""

    async def updated() -> SessionUpdated:
        return SessionUpdated(session=_answer(info, await change(info.context.writer)))

    return await _run(info, updated)


@strawberry.type
class Mutation:
    @strawberry.mutation
    async def create_session(
        self, info: ContextInfo, input: CreateSessionInput
    ) -> CreateSessionResult:
        async def create() -> SessionCreated:
            info.context.principal.require_data_source(input.data_source)
            written, created = await info.context.writer.create(
                input.to_domain(), input.idempotency_key
            )
            if created:
                SESSIONS_CREATED.labels(written.session.data_source).inc()
            return SessionCreated(session=_answer(info, written))

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
            written, already = await info.context.writer.end(
                input.session_key, input.data_source, input.ended_at
            )
            if not already:
                SESSIONS_ENDED.labels(written.session.data_source).inc()
            return SessionEnded(session=_answer(info, written), already_ended=already)

        return await _run(info, change)
