"""The database tables: sessions, their parts, the event log and idempotency records."""

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel


class UTCDateTime(sa.TypeDecorator[datetime]):
    """Timezone-aware UTC on every backend (SQLite stores naive text, so tag it on the way out)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        value = as_utc(value)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class EnumText(sa.TypeDecorator[StrEnum]):
    """A StrEnum stored as its text, read back as the member (so `is` comparisons hold)."""

    impl = sa.String
    cache_ok = True

    def __init__(self, enum: type[StrEnum]) -> None:
        super().__init__()
        self.enum = enum

    def process_result_value(self, value: str | None, dialect: Any) -> StrEnum | None:
        return None if value is None else self.enum(value)


def as_utc(value: datetime) -> datetime:
    """The same instant in UTC; a time without an offset is taken to be UTC already."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


class SessionStatus(StrEnum):
    LIVE = "LIVE"
    ENDED = "ENDED"


class EventKind(StrEnum):
    STARTED = "STARTED"
    UPDATED = "UPDATED"
    STOPPED = "STOPPED"


class SessionRow(SQLModel, table=True):
    __tablename__ = "sessions"
    __table_args__ = (
        sa.Index("ix_sessions_status_created", "status", "created_at"),
        sa.Index("ix_sessions_source_status", "data_source", "status"),
        sa.Index("ix_sessions_created_key", "created_at", "key"),
    )

    key: str = Field(primary_key=True)
    data_source: str
    type: str
    version: int
    identifier: str
    utc_offset_seconds: int
    status: SessionStatus = Field(sa_type=EnumText(SessionStatus))
    created_at: datetime = Field(sa_type=UTCDateTime)
    updated_at: datetime = Field(sa_type=UTCDateTime)
    ended_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    revision: int = 1


class DetailRow(SQLModel, table=True):
    __tablename__ = "session_details"

    session_key: str = Field(primary_key=True, foreign_key="sessions.key", ondelete="CASCADE")
    name: str = Field(primary_key=True)
    value: str


class StreamRow(SQLModel, table=True):
    __tablename__ = "session_streams"
    __table_args__ = (sa.UniqueConstraint("session_key", "name"),)

    session_key: str = Field(primary_key=True, foreign_key="sessions.key", ondelete="CASCADE")
    position: int = Field(primary_key=True)
    name: str


class AssociationRow(SQLModel, table=True):
    """A parent session listing a child (associate) session."""

    __tablename__ = "session_associations"

    parent_key: str = Field(primary_key=True, foreign_key="sessions.key", ondelete="CASCADE")
    child_key: str = Field(
        primary_key=True, foreign_key="sessions.key", ondelete="CASCADE", index=True
    )
    position: int


class EventRow(SQLModel, table=True):
    """One committed change. No foreign key: events outlive the sessions they describe."""

    __tablename__ = "session_events"

    cursor: int = Field(
        primary_key=True, sa_type=sa.BigInteger, sa_column_kwargs={"autoincrement": False}
    )
    kind: EventKind = Field(sa_type=EnumText(EventKind))
    session_key: str
    data_source: str
    occurred_at: datetime = Field(sa_type=UTCDateTime)


class EventLogState(SQLModel, table=True):
    """The single row that allocates cursors; locking it serialises writers so that cursor
    order is commit order on every backend."""

    __tablename__ = "event_log_state"

    id: int = Field(default=1, primary_key=True)
    last_cursor: int = Field(default=0, sa_type=sa.BigInteger)
    pruned_through: int = Field(default=0, sa_type=sa.BigInteger)
    # Moved by every transaction that changed what a query can read (api/cache.py).
    version: int = Field(default=0, sa_type=sa.BigInteger, sa_column_kwargs={"server_default": "0"})


class IdempotencyRow(SQLModel, table=True):
    __tablename__ = "idempotency_records"

    key: str = Field(primary_key=True)
    fingerprint: str
    session_key: str = Field(foreign_key="sessions.key", ondelete="CASCADE")
    created_at: datetime = Field(sa_type=UTCDateTime)


class PersistedDocumentRow(SQLModel, table=True):
    """A GraphQL document registered by a client's automatic persisted query, by the SHA-256 of
    its text: every instance answers its hash."""

    __tablename__ = "persisted_documents"

    sha256: str = Field(primary_key=True)
    body: str
    stored_at: datetime = Field(sa_type=UTCDateTime, index=True)
