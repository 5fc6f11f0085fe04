"""The supervised bus: a broadcaster backend, reconnected with backoff, watched by heartbeats.

broadcaster's `Broadcast` loses messages silently when its backend drops and leaves its
subscribers waiting forever (its listener task dies), and keeps only one of several subscribers
that arrive on a channel at once. The hub is the only subscriber in a process, so the bus drives
a broadcaster backend directly: a supervisor owns the connection, publishes a heartbeat and
expects to hear traffic back, reconnects with backoff when the bus goes quiet or fails, and calls
`on_connected` after every (re)connection so the hub catches up from the event log. Publishing
never blocks a caller: the newest cursor is handed to a publisher task.
"""

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable
from urllib.parse import urlparse

from broadcaster import Event
from broadcaster._backends.base import BroadcastBackend
from broadcaster._backends.memory import MemoryBackend
from broadcaster._backends.postgres import PostgresBackend

from models.redis_backend import RedisBackend

log = logging.getLogger(__name__)

CHANNEL = "session_events"
HEARTBEAT_PREFIX = "heartbeat:"


class BusSilent(Exception):
    """Nothing, not even our own heartbeat, came back in time."""


def backend_for(url: str, timeout: float) -> BroadcastBackend:
    scheme = urlparse(url).scheme
    if scheme == "memory":
        return MemoryBackend(url)
    if scheme in ("redis", "rediss"):
        return RedisBackend(url, timeout=timeout)
    if scheme in ("postgres", "postgresql"):
        return PostgresBackend(url)
    raise ValueError(f"unsupported bus {scheme}:// (use memory://, redis:// or postgres://)")


class Bus:
    def __init__(
        self,
        url: str,
        on_message: Callable[[int], None],
        on_connected: Callable[[], None],
        *,
        on_lost: Callable[[], None] = lambda: None,
        heartbeat: float = 1.0,
        timeout: float = 3.0,
        max_backoff: float = 5.0,
    ) -> None:
        self.url = url
        self.local = url.startswith("memory://")
        self.on_message = on_message
        self.on_connected = on_connected
        self.on_lost = on_lost
        self.heartbeat = heartbeat
        self.timeout = timeout
        self.max_backoff = max_backoff
        self.connected = False
        self._identity = f"{HEARTBEAT_PREFIX}{uuid.uuid4().hex}"
        self._backend: BroadcastBackend | None = None
        self._pending: int | None = None
        self._publish_wanted = asyncio.Event()
        # One publish at a time: the PostgreSQL backend has a single connection, on which a
        # heartbeat racing a cursor fails with "another operation is in progress".
        self._publishing = asyncio.Lock()
        self._up = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False

    async def start(self) -> None:
        """Start, waiting up to `timeout` for a first connection; a bus that is down at start-up
        delays only cross-instance wake-ups, so the service starts anyway."""
        self._tasks = [
            asyncio.create_task(self._supervise(), name="bus-supervisor"),
            asyncio.create_task(self._publish_pending(), name="bus-publisher"),
        ]
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.timeout):
                await self._up.wait()

    async def stop(self) -> None:
        self._stopping = True
        await cancel(self._tasks)

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
            backend = self._backend
            if cursor is None or backend is None:
                continue  # other instances find it by their periodic log read
            try:
                await self._publish(backend, str(cursor))
            except Exception as error:
                log.warning("could not publish cursor %s: %r", cursor, error)

    async def _publish(self, backend: BroadcastBackend, message: str) -> None:
        async with self._publishing, asyncio.timeout(self.timeout):
            await backend.publish(CHANNEL, message)

    async def _supervise(self) -> None:
        backoff = 0.1
        while True:
            backend = backend_for(self.url, self.timeout)
            try:
                async with asyncio.timeout(self.timeout):
                    await backend.connect()
                    await backend.subscribe(CHANNEL)
                self._backend = backend
                self.connected = True
                self._up.set()
                log.info("bus %s connected", _redacted(self.url))
                self.on_connected()
                backoff = 0.1
                await self._listen(backend)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                if self._stopping:
                    # Cancelled: the TaskGroup raises what cancelling its tasks caused instead.
                    raise asyncio.CancelledError from error
                log.warning(
                    "bus %s lost: %r; reconnecting in %.1fs", _redacted(self.url), error, backoff
                )
            finally:
                self.connected = False
                self._up.clear()
                self._backend = None
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(self.timeout):
                        await backend.disconnect()
            self.on_lost()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.max_backoff)

    async def _listen(self, backend: BroadcastBackend) -> None:
        """Deliver messages until the bus fails or goes quiet for longer than `timeout`."""
        if self.local:
            while True:
                self._deliver(await backend.next_published())
        async with asyncio.TaskGroup() as group:
            group.create_task(self._beat(backend))
            while True:
                try:
                    async with asyncio.timeout(self.timeout):
                        event = await backend.next_published()
                except TimeoutError:
                    raise BusSilent(f"no message for {self.timeout}s") from None
                if not event.message.startswith(HEARTBEAT_PREFIX):
                    self._deliver(event)

    def _deliver(self, event: Event) -> None:
        try:
            cursor = int(event.message)
        except ValueError:
            log.warning("ignored a bus message that is not a cursor: %.40r", event.message)
            return
        self.on_message(cursor)

    async def _beat(self, backend: BroadcastBackend) -> None:
        while True:
            await self._publish(backend, self._identity)
            await asyncio.sleep(self.heartbeat)


async def cancel(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel background tasks and wait until each has finished."""
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _redacted(url: str) -> str:
    """The URL without credentials, for logs."""
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.rpartition('@')[2]}"
