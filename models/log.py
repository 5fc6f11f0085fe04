"""Reading the event log: the source of truth for every delivery and replay."""

from dataclasses import dataclass

from models.database import Database
from models.events import EventFilter
from models.records import EVENT_COLUMNS, EventRecord, event_record
from models.statements import Conditions


@dataclass(frozen=True)
class LogState:
    last_cursor: int
    pruned_through: int


class EventLog:
    def __init__(self, database: Database) -> None:
        self.database = database

    async def state(self) -> LogState:
        """The newest cursor and the newest pruned one."""
        (last, pruned), *_ = await self.database.fetch(
            "SELECT last_cursor, pruned_through FROM event_log_state WHERE id = 1"
        )
        return LogState(last, pruned)

    async def replay(
        self, cursor: int, limit: int, until: int, where: EventFilter
    ) -> tuple[int, list[EventRecord]]:
        """The newest pruned cursor and the first events after `cursor`, read in one statement,
        so a replay can never start past events that were pruned meanwhile."""
        conditions = where.narrow(self._after(cursor, until))
        rows = await self.database.fetch(
            f"SELECT {EVENT_COLUMNS}, (SELECT pruned_through FROM event_log_state WHERE id = 1) "
            f"FROM session_events{conditions.sql()} ORDER BY cursor LIMIT ?",
            *conditions.params,
            limit,
        )
        if not rows:
            # No events to carry the mark: read it alone (a later prune only moves it on).
            return (await self.state()).pruned_through, []
        return rows[0][-1], [event_record(row[:-1]) for row in rows]

    async def after(
        self,
        cursor: int,
        limit: int,
        until: int | None = None,
        where: EventFilter | None = None,
    ) -> list[EventRecord]:
        """Events after `cursor` (up to `until`), oldest first."""
        conditions = self._after(cursor, until)
        if where is not None:
            where.narrow(conditions)
        rows = await self.database.fetch(
            f"SELECT {EVENT_COLUMNS} FROM session_events{conditions.sql()} ORDER BY cursor LIMIT ?",
            *conditions.params,
            limit,
        )
        return [event_record(row) for row in rows]

    def _after(self, cursor: int, until: int | None) -> Conditions:
        conditions = Conditions(self.database).add("cursor > ?", cursor)
        if until is not None:
            conditions.add("cursor <= ?", until)
        return conditions
