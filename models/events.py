"""Event filters and cursors: which committed changes a subscriber wants, and where it is."""

from dataclasses import dataclass

from models.errors import InvalidInput
from models.records import EventRecord
from models.statements import Conditions
from models.tables import EventKind


@dataclass(frozen=True)
class EventFilter:
    """None means "any"; `data_sources` also carries what the caller may read."""

    data_sources: frozenset[str] | None = None
    session_key: str | None = None
    kinds: frozenset[EventKind] | None = None

    def matches(self, event: EventRecord) -> bool:
        return (
            (self.data_sources is None or event.data_source in self.data_sources)
            and (self.session_key is None or event.session_key == self.session_key)
            and (self.kinds is None or event.kind in self.kinds)
        )

    def narrow(self, where: Conditions) -> Conditions:
        """Add this filter's conditions on the `session_events` table to `where`."""
        if self.data_sources is not None:
            where.among("data_source", sorted(self.data_sources))
        if self.session_key is not None:
            where.add("session_key = ?", self.session_key)
        if self.kinds is not None:
            where.among("kind", sorted(self.kinds))
        return where


def encode_cursor(cursor: int) -> str:
    return str(cursor)


def decode_cursor(cursor: str, path: str = "after") -> int:
    if not (cursor.isascii() and cursor.isdigit() and len(cursor) <= 19):
        raise InvalidInput(path, "is not an event cursor this API issued")
    return int(cursor)
