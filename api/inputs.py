"""The GraphQL input types and their translation to the domain's inputs."""

from dataclasses import fields
from datetime import datetime
from typing import Any, TypeVar

import strawberry

from api.types import SessionStatus  # registered with Strawberry there
from models import DetailsChange, NewSession, SessionFilter


@strawberry.input
class DetailInput:
    name: str
    value: str


T = TypeVar("T")


def _pairs(details: list[DetailInput] | None) -> tuple[tuple[str, str], ...]:
    return tuple((detail.name, detail.value) for detail in details or ())


def _domain(cls: type[T], source: object, **given: Any) -> T:
    """The domain input `cls` from the same-named fields of `source`, and those `given`: each
    field is named once, in the domain's dataclass."""
    named = {f.name: getattr(source, f.name) for f in fields(cls) if f.name not in given}  # type: ignore[arg-type]
    return cls(**named, **given)


@strawberry.input(name="SessionFilter")
class SessionFilterInput:
    data_source: str | None = None
    status: SessionStatus | None = None
    type: str | None = None
    identifier: str | None = strawberry.field(default=None, description="Exact match.")
    details: list[DetailInput] | None = strawberry.field(
        default=None, description="Every listed detail must be present with exactly this value."
    )
    created_after: datetime | None = None
    created_before: datetime | None = None

    def to_domain(self) -> SessionFilter:
        return _domain(SessionFilter, self, details=_pairs(self.details))


@strawberry.input
class CreateSessionInput:
    data_source: str
    type: str = "Session"
    version: int = 1
    utc_offset_seconds: int = 0
    identifier: str = ""
    details: list[DetailInput] = strawberry.field(default_factory=list)
    associate_session_keys: list[strawberry.ID] = strawberry.field(default_factory=list)
    streams: list[str] = strawberry.field(default_factory=list)
    created_at: datetime | None = strawberry.field(
        default=None, description="Server time when omitted."
    )
    idempotency_key: str | None = strawberry.field(
        default=None,
        description="Retrying with the same key returns the first result and creates nothing new.",
    )

    def to_domain(self) -> NewSession:
        return _domain(
            NewSession,
            self,
            details=_pairs(self.details),
            associate_keys=tuple(self.associate_session_keys),
            streams=tuple(self.streams),
        )


@strawberry.input
class UpdateSessionDetailsInput:
    session_key: strawberry.ID
    details: list[DetailInput] = strawberry.field(
        default_factory=list,
        description="Merged: new names are added, existing names are overwritten.",
    )
    remove: list[str] = strawberry.field(default_factory=list, description="Names to delete.")
    expected_revision: int | None = None

    def to_domain(self) -> DetailsChange:
        return _domain(DetailsChange, self, details=_pairs(self.details), remove=tuple(self.remove))


@strawberry.input
class UpdateSessionIdentifierInput:
    session_key: strawberry.ID
    identifier: str
    expected_revision: int | None = None


@strawberry.input
class AssociateSessionInput:
    session_key: strawberry.ID = strawberry.field(description="The parent.")
    associate_session_key: strawberry.ID = strawberry.field(description="The associate (child).")


@strawberry.input
class AddSessionStreamsInput:
    session_key: strawberry.ID
    streams: list[str]


@strawberry.input
class EndSessionInput:
    session_key: strawberry.ID
    data_source: str | None = strawberry.field(
        default=None, description="When given, must be the session's data source."
    )
    ended_at: datetime | None = strawberry.field(
        default=None, description="Server time when omitted."
    )
