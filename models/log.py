"""Reading the event log: the source of truth for every delivery and replay."""

from sqlmodel import col, select

from models.database import Database
from models.events import EventFilter
from models.tables import EventLogState, EventRow


class EventLog:
    def __init__(self, database: Database) -> None:
        self.database = database

    async def state(self) -> EventLogState:
        """The newest cursor and the newest pruned one."""
        async with self.database.read() as session:
            return (await session.exec(select(EventLogState))).one()

    async def replay(
        self, cursor: int, limit: int, until: int, where: EventFilter
    ) -> tuple[int, list[EventRow]]:
        """The newest pruned cursor and the first events after `cursor`, read from one snapshot,
        so a replay can never start past events that were pruned meanwhile."""
        async with self.database.read(snapshot=True) as session:
            pruned_through = (await session.exec(select(EventLogState.pruned_through))).one()
            query = (
                select(EventRow)
                .where(EventRow.cursor > cursor, EventRow.cursor <= until, *where.conditions())
                .order_by(col(EventRow.cursor))
                .limit(limit)
            )
            return pruned_through, list(await session.exec(query))

    async def after(
        self,
        cursor: int,
        limit: int,
        until: int | None = None,
        where: EventFilter | None = None,
    ) -> list[EventRow]:
        """Events after `cursor` (up to `until`), oldest first."""
        query = select(EventRow).where(EventRow.cursor > cursor)
        if where is not None:
            query = query.where(*where.conditions())
        if until is not None:
            query = query.where(EventRow.cursor <= until)
        async with self.database.read() as session:
            return list(await session.exec(query.order_by(col(EventRow.cursor)).limit(limit)))
