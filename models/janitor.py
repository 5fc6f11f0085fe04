"""Background retention: deletes events older than the retention period."""

import asyncio
import contextlib
import logging
from datetime import timedelta

from models.repository import SessionRepository
from models.tables import utcnow

log = logging.getLogger(__name__)


class Janitor:
    def __init__(
        self, repository: SessionRepository, *, event_retention: float, interval: float
    ) -> None:
        self.repository = repository
        self.event_retention = timedelta(seconds=event_retention)
        self.interval = interval
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="janitor")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def sweep(self) -> None:
        pruned = await self.repository.prune_events(utcnow() - self.event_retention)
        if pruned:
            log.info("pruned %d events older than %s", pruned, self.event_retention)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.sweep()
            except Exception:
                log.exception("retention sweep failed; retrying in %ss", self.interval)
