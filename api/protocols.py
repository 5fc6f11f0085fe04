"""uvicorn's HTTP and WebSocket protocols, without the reference cycles they leave behind a
connection and with less memory per WebSocket: the served app collects cycles rarely
(api/app.py), and under churn the closed connections' protocol objects, parsers, buffers and
transports piled up until it did; an idle subscription's memory is mostly its connection's."""

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol


class HttpProtocol(HttpToolsProtocol):
    def handle_websocket_upgrade(self) -> None:
        super().handle_websocket_upgrade()
        # The parser calls back into this protocol, which holds it. uvicorn lets it go when
        # the connection is lost, but an upgraded connection is no longer this protocol's.
        self.parser = None  # type: ignore[assignment]


class Inbox:
    """The connection's received messages, as uvicorn uses its `asyncio.Queue`: put without
    waiting, taken by the task running the app (ASGI's `receive`), tested for empty. An
    `asyncio.Queue` is four deques, 2.9 KB of every idle connection; this is two lists. uvicorn
    pauses reading after each message until the app has taken them, so they stay short."""

    __slots__ = ("_getters", "_items")

    def __init__(self) -> None:
        self._items: list[Any] = []
        self._getters: list[asyncio.Future[None]] = []

    def put_nowait(self, item: Any) -> None:
        self._items.append(item)
        self._wake()

    def empty(self) -> bool:
        return not self._items

    async def get(self) -> Any:
        while not self._items:
            getter = asyncio.get_running_loop().create_future()
            self._getters.append(getter)
            try:
                await getter
            finally:
                self._getters.remove(getter)
                if self._items:  # woken, then cancelled: the next getter takes the message
                    self._wake()
        return self._items.pop(0)

    def _wake(self) -> None:
        for getter in self._getters:
            if not getter.done():
                getter.set_result(None)
                return


class Gate:
    """uvicorn's `writable` flag (set, cleared while the transport is paused, waited on before
    each send) as an `asyncio.Event` without its deque: waiters are listed only while closed."""

    __slots__ = ("_open", "_waiters")

    def __init__(self) -> None:
        self._open = True
        self._waiters: list[asyncio.Future[None]] = []

    def is_set(self) -> bool:
        return self._open

    def set(self) -> None:
        self._open = True
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        self._open = False

    async def wait(self) -> bool:
        if self._open:
            return True
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
        return True


class WebSocketProtocol(WebSocketsSansIOProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.queue = Inbox()  # type: ignore[assignment]
        self.writable = Gate()  # type: ignore[assignment]

    def start_keepalive(self) -> None:
        super().start_keepalive()
        # Called once the handshake's response is written: nothing reads the request or the
        # response again, and their headers were a twelfth of an idle connection's memory.
        self.request = self.response = None  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        # websockets' parser is a generator suspended inside its protocol, which holds it; it
        # would finish only at an EOF, which uvicorn does not pass on. Nothing parses any more.
        self.conn.parser.close()
