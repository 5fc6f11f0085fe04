"""A broadcaster backend for Redis pub/sub that fails loudly instead of going quiet.

broadcaster 0.3.1's own Redis backend starts listening before redis-py has recorded the
subscription (it delivers nothing with redis-py 8) and leaves a listener task behind when a
connection attempt fails. This one subscribes before it reads and owns nothing it cannot close.
"""

from typing import Any

from broadcaster import Event
from broadcaster._backends.base import BroadcastBackend
from redis import asyncio as redis


class RedisBackend(BroadcastBackend):
    def __init__(self, url: str, *, timeout: float = 3.0) -> None:
        self._client = redis.Redis.from_url(
            url, socket_connect_timeout=timeout, socket_keepalive=True, retry_on_timeout=False
        )
        self._pubsub = self._client.pubsub(ignore_subscribe_messages=True)

    async def connect(self) -> None:
        await self._client.ping()  # type: ignore[misc]

    async def disconnect(self) -> None:
        await self._pubsub.aclose()
        await self._client.aclose()

    async def subscribe(self, channel: str) -> None:
        await self._pubsub.subscribe(channel)

    async def unsubscribe(self, channel: str) -> None:
        await self._pubsub.unsubscribe(channel)

    async def publish(self, channel: str, message: Any) -> None:
        await self._client.publish(channel, message)

    async def next_published(self) -> Event:
        while True:
            message = await self._pubsub.get_message(timeout=None)
            if message is not None and message["type"] == "message":
                return Event(channel=message["channel"].decode(), message=message["data"].decode())
