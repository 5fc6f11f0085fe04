"""Background cleanup: ends idle sessions, deletes old ended sessions and old events."""

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from models.bus import cancel
from models.database import Database
from models.records import SESSION_COLUMNS, session_record
from models.tables import EventKind, SessionStatus, utcnow
from models.writer import Announce, writing

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Retention:
    """Each period in seconds; None turns that part of the cleanup off."""

    idle_timeout: float | None = None
    ended_sessions: float | None = 90 * 24 * 3600
    events: float | None = 30 * 24 * 3600


class Janitor:
    """Cleans up every `interval` seconds. Several instances may run one each: every step is a
    write, serialised by the event log's lock, so each session ends once."""

    def __init__(
        self,
        database: Database,
        retention: Retention,
        *,
        interval: float,
        announce: Announce | None = None,
    ) -> None:
        self.database = database
        self.announce = announce
        self.retention = retention
        self.interval = interval
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="janitor")

    async def stop(self) -> None:
        if self._task is not None:
            await cancel([self._task])

    async def sweep(self) -> None:
        now = utcnow()
        for period, step, what in (
            (self.retention.idle_timeout, self.end_idle, "ended idle sessions"),
            (self.retention.ended_sessions, self.delete_ended, "deleted sessions"),
            (self.retention.events, self.prune_events, "pruned events"),
        ):
            if period is not None:
                count = await _drain(step, now - timedelta(seconds=period))
                if count:
                    log.info("%s: %d", what, count)

    async def end_idle(self, idle_since: datetime, limit: int = 500) -> int:
        """End up to `limit` live sessions unchanged since `idle_since`, each with one STOPPED
        event."""
        time = self.database.time
        async with writing(self.database, self.announce) as write:
            rows = await write.connection.fetch(
                f"SELECT {SESSION_COLUMNS} FROM sessions WHERE status = 'LIVE' AND updated_at < ? "
                "ORDER BY updated_at LIMIT ?",
                time(idle_since),
                limit,
            )
            if not rows:
                return 0
            now = utcnow()
            sessions = [session_record(row) for row in rows]
            await write.connection.execute(
                "UPDATE sessions SET status = 'ENDED', ended_at = ?, updated_at = ?, "
                f"revision = revision + 1 WHERE {self.database.in_keys('key')}",
                time(now),
                time(now),
                self.database.keys([session.key for session in sessions]),
            )
            for session in sessions:
                session.status, session.ended_at, session.updated_at = SessionStatus.ENDED, now, now
                session.revision += 1
                write.record(EventKind.STOPPED, session)
        return len(sessions)

    async def delete_ended(self, ended_before: datetime, limit: int = 500) -> int:
        """Delete up to `limit` sessions that ended before `ended_before`, with their parts."""
        async with writing(self.database, self.announce) as write:
            deleted = await write.connection.fetch(
                "DELETE FROM sessions WHERE key IN (SELECT key FROM sessions "
                "WHERE status = 'ENDED' AND ended_at < ? LIMIT ?) RETURNING key",
                self.database.time(ended_before),
                limit,
            )
            write.changed = bool(deleted)
        return len(deleted)

    async def prune_events(self, before: datetime, limit: int = 500) -> int:
        """Delete up to `limit` of the oldest events that occurred before `before`; cursors
        before the newest deleted one then expire."""
        async with writing(self.database, self.announce) as write:
            (newest,), *_ = await write.connection.fetch(
                "SELECT max(cursor) FROM (SELECT cursor FROM session_events "
                "WHERE occurred_at < ? ORDER BY cursor LIMIT ?) oldest",
                self.database.time(before),
                limit,
            )
            if newest is None:
                return 0
            deleted = await write.connection.fetch(
                "DELETE FROM session_events WHERE cursor <= ? RETURNING cursor", newest
            )
            write.pruned_through = newest
        return len(deleted)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.sweep()
            except Exception:
                log.exception("cleanup failed; retrying in %ss", self.interval)


async def _drain(step: Callable[..., Awaitable[int]], before: object, batch: int = 500) -> int:
    """Run a batched cleanup step until a batch comes back short."""
    total = 0
    while (count := await step(before, batch)) >= batch:
        total += count
    return total + count
