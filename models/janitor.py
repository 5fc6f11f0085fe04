"""Background cleanup: ends idle sessions, deletes old ended sessions and old events."""

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta

from models.bus import cancel
from models.repository import SessionRepository
from models.tables import utcnow

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Retention:
    """Each period in seconds; None turns that part of the cleanup off."""

    idle_timeout: float | None = None
    ended_sessions: float | None = 90 * 24 * 3600
    events: float | None = 30 * 24 * 3600


class Janitor:
    def __init__(
        self, repository: SessionRepository, retention: Retention, *, interval: float
    ) -> None:
        self.repository = repository
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
            (self.retention.idle_timeout, self.repository.end_idle, "ended idle sessions"),
            (self.retention.ended_sessions, self.repository.delete_ended, "deleted sessions"),
            (self.retention.events, self.repository.prune_events, "pruned events"),
        ):
            if period is not None:
                count = await _drain(step, now - timedelta(seconds=period))
                if count:
                    log.info("%s: %d", what, count)

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
