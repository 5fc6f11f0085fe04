"""The supervised bus: broadcaster, reconnected with backoff, watched by heartbeats.

broadcaster alone loses messages silently when its backend drops and leaves its subscribers
waiting forever (its listener task dies). Here a supervisor owns the connection: it publishes a
heartbeat and expects to hear it back, reconnects with backoff when the bus goes quiet or fails,
and calls `on_connected` after every (re)connection so the hub catches up from the event log.
Publishing never blocks a caller: the newest cursor is handed to a publisher task.
"""

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable

from broadcaster import Broadcast

log = logging.getLogger(__name__)

CHANNEL = "session-events"
HEARTBEAT_PREFIX = "heartbeat:"


class BusSilent(Exception):
    """Nothing, not even our own heartbeat, came back in time."""


class Bus:
    def __init__(
        self,
        url: str,
        on_message: Callable[[], None],
        on_connected: Callable[[], None],
        *,
        heartbeat: float = 1.0,
        timeout: float = 3.0,
        max_backoff: float = 5.0,
    ) -> None:
        self.url = url
        self.local = url.startswith("memory://")
        self.on_message = on_message
        self.on_connected = on_connected
        self.heartbeat = heartbeat
        self.timeout = timeout
        self.max_backoff = max_backoff
        self.connected = False
        self.reconnects = 0
        self._identity = f"{HEARTBEAT_PREFIX}{uuid.uuid4().hex}"
        self._broadcast: Broadcast | None = None
        self._pending: int | None = None
        self._publish_wanted = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._supervise(), name="bus-supervisor"),
            asyncio.create_task(self._publish_pending(), name="bus-publisher"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def publish(self, cursor: int) -> None:
        """Announce that events up to `cursor` exist; returns at once."""
        if self._pending is None or cursor > self._pending:
            self._pending = cursor
        self._publish_wanted.set()

    async def _publish_pending(self) -> None:
        while True:
            await self._publish_wanted.wait()
            self._publish_wanted.clear()
            cursor, self._pending = self._pending, None
            broadcast = self._broadcast
            if cursor is None or broadcast is None or not self.connected:
                continue  # other instances find it by their periodic log read
            try:
                await asyncio.wait_for(broadcast.publish(CHANNEL, str(cursor)), self.timeout)
            except Exception as error:
                log.warning("could not publish cursor %s: %r", cursor, error)

    async def _supervise(self) -> None:
        backoff = 0.1
        while True:
            broadcast = Broadcast(self.url)
            try:
                await asyncio.wait_for(broadcast.connect(), self.timeout)
                async with broadcast.subscribe(CHANNEL) as messages:
                    self._broadcast = broadcast
                    self.connected = True
                    log.info("bus %s connected", _redacted(self.url))
                    self.on_connected()
                    backoff = 0.1
                    await self._listen(broadcast, messages)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                log.warning(
                    "bus %s lost: %r; reconnecting in %.1fs", _redacted(self.url), error, backoff
                )
            finally:
                self.connected = False
                self._broadcast = None
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(broadcast.disconnect(), self.timeout)
            self.reconnects += 1
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.max_backoff)

    async def _listen(self, broadcast: Broadcast, messages: object) -> None:
        """Deliver messages until the bus fails or goes quiet for longer than `timeout`."""
        get = messages.get  # type: ignore[attr-defined]
        if self.local:
            while True:
                await get()
                self.on_message()
        async with asyncio.TaskGroup() as group:
            group.create_task(self._beat(broadcast))
            while True:
                try:
                    event = await asyncio.wait_for(get(), self.timeout)
                except TimeoutError:
                    raise BusSilent(f"no message for {self.timeout}s") from None
                if not event.message.startswith(HEARTBEAT_PREFIX):
                    self.on_message()

    async def _beat(self, broadcast: Broadcast) -> None:
        while True:
            await asyncio.wait_for(broadcast.publish(CHANNEL, self._identity), self.timeout)
            await asyncio.sleep(self.heartbeat)


def _redacted(url: str) -> str:
    """The URL without credentials, for logs."""
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.rpartition('@')[2]}"
