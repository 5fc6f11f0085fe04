"""Filters and cursor pages over the sessions table."""

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from models.errors import InvalidInput
from models.inputs import Detail, Limits, check_details, check_text, check_time
from models.records import SessionRecord
from models.statements import Conditions
from models.tables import SessionStatus, as_utc


@dataclass(frozen=True)
class SessionFilter:
    data_source: str | None = None
    status: SessionStatus | None = None
    type: str | None = None
    identifier: str | None = None
    details: Sequence[Detail] = ()
    created_after: datetime | None = None
    created_before: datetime | None = None

    def validate(self, limits: Limits) -> None:
        for value, path in (
            (self.type, "filter.type"),
            (self.identifier, "filter.identifier"),
            (self.data_source, "filter.dataSource"),
        ):
            if value is not None:
                check_text(value, path, limits.text_length)
        check_details(self.details, limits, "filter.details")
        check_time(self.created_after, "filter.createdAfter")
        check_time(self.created_before, "filter.createdBefore")

    def narrow(self, where: Conditions) -> Conditions:
        """Add this filter's conditions on the `sessions` table to `where`."""
        for column, value in (
            ("data_source", self.data_source),
            ("status", self.status),
            ("type", self.type),
            ("identifier", self.identifier),
        ):
            if value is not None:
                where.add(f"{column} = ?", str(value))
        time = where.database.time
        if self.created_after is not None:
            where.add("created_at > ?", time(as_utc(self.created_after)))
        if self.created_before is not None:
            where.add("created_at < ?", time(as_utc(self.created_before)))
        for name, value in self.details:
            where.add(
                "EXISTS (SELECT 1 FROM session_details d WHERE d.session_key = sessions.key "
                "AND d.name = ? AND d.value = ?)",
                name,
                value,
            )
        return where


@dataclass(frozen=True)
class Page:
    rows: list[SessionRecord]
    has_next: bool

    @property
    def end_cursor(self) -> str | None:
        return page_cursor(self.rows[-1]) if self.rows else None


def encode_page_cursor(created_at: datetime, key: str) -> str:
    """The cursor after the session created at `created_at` with `key`, newest first."""
    raw = json.dumps([created_at.isoformat(), key])
    return base64.urlsafe_b64encode(raw.encode()).decode()


def page_cursor(row: SessionRecord) -> str:
    """The cursor of a page's edge: the page after it starts below this session."""
    return encode_page_cursor(row.created_at, row.key)


def decode_page_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        created_at, key = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        return as_utc(datetime.fromisoformat(created_at)), str(key)
    except (ValueError, TypeError, OverflowError):
        raise InvalidInput("after", "is not a cursor this API issued") from None
