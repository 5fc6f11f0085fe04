"""The event hub: the process's one bus subscriber, reading the log and fanning out locally."""

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

from models.bus import Bus, cancel
from models.errors import CursorExpired
from models.events import EventFilter
from models.log import EventLog
from models.tables import EventRow

logger = logging.getLogger(__name__)

BATCH = 500


class SubscriberLagging(Exception):
    """A subscriber's queue filled up: it must resume from its last cursor."""


class HubClosed(Exception):
    """The hub shut down while a subscriber was waiting."""


class Subscriber:
    def __init__(self, where: EventFilter, start: int, queue_size: int) -> None:
        self.where = where
        self.start = start
        self.queue: asyncio.Queue[EventRow | Exception] = asyncio.Queue(queue_size + 1)
        self.capacity = queue_size
        self.failed = False

    def offer(self, event: EventRow) -> None:
        if self.failed or not self.where.matches(event):
            return
        if self.queue.qsize() >= self.capacity:
            self.fail(SubscriberLagging(f"fell more than {self.capacity} events behind"))
        else:
            self.queue.put_nowait(event)

    def fail(self, error: Exception) -> None:
        """End the stream: the error comes next, before anything still queued (the client
        resumes by cursor, so dropping those events loses nothing)."""
        self.failed = True
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queue.put_nowait(error)


class EventHub:
    """Bus messages only say "look": the log is the source of truth. A periodic catch-up also
    delivers events whose announcement was lost (a crash between commit and publish, a bus
    hiccup)."""

    def __init__(
        self,
        log: EventLog,
        broadcast_url: str,
        *,
        poll_interval: float = 1.0,
        queue_size: int = 1000,
        on_bus_lost: Callable[[], None] = lambda: None,
    ) -> None:
        self.log = log
        self._wake = asyncio.Event()
        self.bus = Bus(
            broadcast_url, on_message=self._heard, on_connected=self._wake.set, on_lost=on_bus_lost
        )
        self.poll_interval = poll_interval
        self.queue_size = queue_size
        # How far the hub has read and fanned out the log, and the newest cursor it knows to
        # exist (announced here or on the bus): new subscribers start after the latter.
        self.position = 0
        self.known = 0
        self._subscribers: set[Subscriber] = set()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self.position = self.known = (await self.log.state()).last_cursor
        await self.bus.start()
        self._tasks = [asyncio.create_task(self._read(), name="hub-read")]

    async def stop(self) -> None:
        await cancel(self._tasks)
        for subscriber in list(self._subscribers):
            subscriber.fail(HubClosed("the server is shutting down"))
        await self.bus.stop()

    def announce(self, cursor: int) -> None:
        """Called after a commit: wake this process at once and every other one via the bus."""
        self._heard(cursor)
        self.bus.publish(cursor)

    def _heard(self, cursor: int) -> None:
        self.known = max(self.known, cursor)
        self._wake.set()

    def subscribe(self, where: EventFilter) -> Subscriber:
        subscriber = Subscriber(where, max(self.position, self.known), self.queue_size)
        self._subscribers.add(subscriber)
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.discard(subscriber)

    async def open_stream(self, where: EventFilter, after: int | None) -> AsyncIterator[EventRow]:
        """Events matching `where`: those after `after` from the log first, then live ones.

        Registration happens before the first await, so nothing committed after this call
        can be missed; cursors dedupe the overlap between replay and live delivery.
        """
        subscriber = self.subscribe(where)
        if after is None or after >= subscriber.start:
            return self._stream(subscriber, after, [])
        pruned_through, first = await self.log.replay(after, BATCH, subscriber.start, where)
        if after < pruned_through:
            self.unsubscribe(subscriber)
            raise CursorExpired(after, pruned_through)
        return self._stream(subscriber, after, first)

    async def _stream(
        self, subscriber: Subscriber, after: int | None, batch: list[EventRow]
    ) -> AsyncIterator[EventRow]:
        """`batch`: the replay's first events, read with the expiry check."""
        position = subscriber.start if after is None else after
        try:
            while position < subscriber.start:
                for event in batch:
                    yield event
                if len(batch) < BATCH:
                    break
                position = batch[-1].cursor
                batch = await self.log.after(
                    position, BATCH, until=subscriber.start, where=subscriber.where
                )
            position = max(position, subscriber.start)
            while True:
                item = await subscriber.queue.get()
                if isinstance(item, Exception):
                    raise item
                if item.cursor > position:
                    position = item.cursor
                    yield item
        finally:
            self.unsubscribe(subscriber)

    async def _read(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_interval)
            self._wake.clear()
            try:
                await self._catch_up()
            except Exception:
                logger.exception("could not read the event log; retrying")

    async def _catch_up(self) -> None:
        while True:
            batch = await self.log.after(self.position, BATCH)
            for event in batch:
                for subscriber in list(self._subscribers):
                    subscriber.offer(event)
                self.position = event.cursor
            if len(batch) < BATCH:
                return
