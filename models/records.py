"""What the domain reads and writes: a session and an event, as plain records.

The tables in models/tables.py own the schema (Alembic migrates from them); these records are
what a statement's row becomes. They are plain slotted dataclasses because building a SQLModel
table instance costs about 90 µs, a hundred times more, and a page holds a hundred sessions.
tests/test_records.py checks that each record's fields are its table's columns, in order.
"""

from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any

from models.tables import EventKind, SessionStatus


@dataclass(slots=True)
class SessionRecord:
    key: str
    data_source: str
    type: str
    version: int
    identifier: str
    utc_offset_seconds: int
    status: SessionStatus
    created_at: datetime
    updated_at: datetime
    ended_at: datetime | None
    revision: int


@dataclass(slots=True, frozen=True)
class EventRecord:
    """One committed change. Events outlive the sessions they describe."""

    cursor: int
    kind: EventKind
    session_key: str
    data_source: str
    occurred_at: datetime


def column_list(record: type, alias: str = "") -> str:
    """The record's columns for a SELECT, in field order."""
    prefix = f"{alias}." if alias else ""
    return ", ".join(prefix + field.name for field in fields(record))


SESSION_COLUMNS = column_list(SessionRecord)
EVENT_COLUMNS = column_list(EventRecord)


def utc(value: Any) -> datetime:
    """A stored time as an aware UTC datetime: SQLite gives naive text, PostgreSQL datetimes."""
    if isinstance(value, str):
        return datetime.fromisoformat(value).replace(tzinfo=UTC)
    return value if value.tzinfo is UTC else value.astimezone(UTC)


def session_record(row: Any) -> SessionRecord:
    key, source, type_, version, identifier, offset, status, created, updated, ended, rev = row
    return SessionRecord(
        key,
        source,
        type_,
        version,
        identifier,
        offset,
        SessionStatus(status),
        utc(created),
        utc(updated),
        None if ended is None else utc(ended),
        rev,
    )


def event_record(row: Any) -> EventRecord:
    cursor, kind, key, source, occurred = row
    return EventRecord(cursor, EventKind(kind), key, source, utc(occurred))
