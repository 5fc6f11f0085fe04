"""The event hub: the process's one bus subscriber, reading the log and fanning out locally."""

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Protocol

from models.bus import Bus, cancel
from models.errors import CursorExpired
from models.events import EventFilter
from models.log import EventLog
from models.records import EventRecord

logger = logging.getLogger(__name__)

BATCH = 500


class SubscriberLagging(Exception):
    """A subscriber's queue filled up: it must resume from its last cursor."""


class HubClosed(Exception):
    """The hub shut down while a subscriber was waiting."""


class Listener(Protocol):
    """What the hub fans out to: it is offered every new event, in order, and told when the hub
    closes. A subscriber below, or a whole audience of them (api/fanout.py)."""

    def offer(self, event: EventRecord) -> None: ...

    def fail(self, error: Exception) -> None: ...


class Subscriber:
    """A subscriber's filter and its bounded backlog of matching events. Lighter than an
    asyncio.Queue, which matters with thousands of subscribers: one deque and, while the
    subscriber waits, one future."""

    def __init__(self, where: EventFilter, start: int, capacity: int) -> None:
        self.where = where
        self.start = start
        self.capacity = capacity
        self._backlog: deque[EventRecord] = deque()
        self._failure: Exception | None = None
        self._waiter: asyncio.Future[None] | None = None

    def offer(self, event: EventRecord) -> None:
        if self._failure is not None or not self.where.matches(event):
            return
        if len(self._backlog) >= self.capacity:
            self.fail(SubscriberLagging(f"fell more than {self.capacity} events behind"))
        else:
            self._backlog.append(event)
            self._wake()

    def fail(self, error: Exception) -> None:
        """End the stream: the error comes next, before anything still queued (the client
        resumes by cursor, so dropping those events loses nothing)."""
        self._failure = error
        self._backlog.clear()
        self._wake()

    async def next(self) -> EventRecord:
        while not self._backlog:
            if self._failure is not None:
                raise self._failure
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._backlog.popleft()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


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
        self._subscribers: set[Listener] = set()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self.position = self.known = (await self.log.state()).last_cursor
        await self.bus.start()
        self._tasks = [asyncio.create_task(self._read(), name="hub-read")]

    async def stop(self) -> None:
        await cancel(self._tasks)
        self.end_streams()
        await self.bus.stop()

    def end_streams(self) -> None:
        """End every subscriber's stream now (the server is going away): each resumes by
        cursor elsewhere. The hub itself goes on until `stop`."""
        for subscriber in list(self._subscribers):
            subscriber.fail(HubClosed("the server is shutting down"))

    def announce(self, events: list[EventRecord]) -> None:
        """Called after a commit with the events it appended: tell every other process via the
        bus, and fan them out here, right after, when they follow what the hub has fanned out
        (else the log read fills the gap first)."""
        newest = events[-1].cursor
        self.bus.publish(newest)
        self.known = max(self.known, newest)
        # On the loop's next turn: the commit's own answer goes out first, never delayed by
        # the fan-out to thousands of subscribers.
        asyncio.get_running_loop().call_soon(self._announced, events)

    def _announced(self, events: list[EventRecord]) -> None:
        fresh = [event for event in events if event.cursor > self.position]
        if fresh and fresh[0].cursor == self.position + 1:
            self._fan_out(fresh)
        elif fresh:
            self._wake.set()

    def _heard(self, cursor: int) -> None:
        self.known = max(self.known, cursor)
        # A wake-up for what the hub has fanned out already (this process's own commits, heard
        # back from the bus) needs no read of the log.
        if cursor > self.position:
            self._wake.set()

    def subscribe(self, where: EventFilter) -> Subscriber:
        subscriber = Subscriber(where, max(self.position, self.known), self.queue_size)
        self._subscribers.add(subscriber)
        return subscriber

    def unsubscribe(self, subscriber: Listener) -> None:
        self._subscribers.discard(subscriber)

    @property
    def listeners(self) -> int:
        """How many listeners the hub offers events to now (audiences, streams)."""
        return len(self._subscribers)

    def listen(self, listener: Listener) -> int:
        """Offer `listener` every event after the cursor returned (events up to it have been
        committed: `replay` reads those)."""
        self._subscribers.add(listener)
        return max(self.position, self.known)

    async def replay(
        self, where: EventFilter, after: int | None, until: int
    ) -> AsyncIterator[EventRecord]:
        """The log's events matching `where` in (after, until], checked for expiry now."""
        if after is None or after >= until:
            return _nothing()
        pruned_through, first = await self.log.replay(after, BATCH, until, where)
        if after < pruned_through:
            raise CursorExpired(after, pruned_through)
        return self._replayed(where, until, first)

    async def _replayed(
        self, where: EventFilter, until: int, batch: list[EventRecord]
    ) -> AsyncGenerator[EventRecord, None]:
        while True:
            for event in batch:
                yield event
            if len(batch) < BATCH:
                return
            batch = await self.log.after(batch[-1].cursor, BATCH, until=until, where=where)

    async def open_stream(
        self, where: EventFilter, after: int | None
    ) -> AsyncGenerator[EventRecord, None]:
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
        self, subscriber: Subscriber, after: int | None, batch: list[EventRecord]
    ) -> AsyncGenerator[EventRecord, None]:
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
                event = await subscriber.next()
                if event.cursor > position:
                    position = event.cursor
                    yield event
        finally:
            self.unsubscribe(subscriber)

    async def _read(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll_interval):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self._catch_up()
            except Exception:
                logger.exception("could not read the event log; retrying")

    async def _catch_up(self) -> None:
        while True:
            batch = await self.log.after(self.position, BATCH)
            # Events announced by this process while the read was under way are out already.
            self._fan_out([event for event in batch if event.cursor > self.position])
            if len(batch) < BATCH:
                return

    def _fan_out(self, events: list[EventRecord]) -> None:
        for event in events:
            for subscriber in list(self._subscribers):
                subscriber.offer(event)
            self.position = event.cursor


async def _nothing() -> AsyncGenerator[EventRecord, None]:
    return
    yield
