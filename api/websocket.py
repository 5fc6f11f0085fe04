"""The graphql-transport-ws handler: Strawberry's, with strict message shapes, a rate limit,
events delivered by api/fanout.py, and an end when the connection's token expires."""

import asyncio
import contextlib
import time
from typing import Any, cast

import strawberry
from graphql import GraphQLError
from strawberry.asgi import ASGIWebSocketAdapter
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
)
from strawberry.subscriptions.protocols.graphql_transport_ws.types import (
    ConnectionInitMessage,
    Message,
    SubscribeMessage,
)

from api.context import Context
from api.errors import ApiError
from api.fanout import SUBSCRIBING, Member, SocketTransport, SubscribeRequest
from api.persisted import named

# graphql-transport-ws's "Forbidden", with a reason that tells a client to come back with a new
# token (and `after:` its last cursor, so that it misses nothing).
TOKEN_EXPIRED = (4403, "token expired")


# A close frame's reason is at most 123 bytes of UTF-8 (RFC 6455, 5.5).
MAX_REASON_BYTES = 123


class SocketAdapter(ASGIWebSocketAdapter):
    """Strawberry's socket, closing with a reason a close frame can carry: its reasons repeat
    what the client sent (an operation id, a syntax error's character), and one too long or
    with a lone surrogate failed to encode, dropping the connection without a close frame."""

    async def close(self, code: int, reason: str) -> None:
        encoded = reason.encode("utf-8", "backslashreplace")[:MAX_REASON_BYTES]
        await super().close(code, encoded.decode("utf-8", "ignore"))


def _malformed(message: Any) -> str | None:
    """Why a message is malformed, or None; Strawberry would fail on these with a TypeError."""
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        return "A message must be an object with a string type."
    if message["type"] == "complete" and not isinstance(message.get("id"), str):
        return "complete needs a string id."
    if message["type"] != "subscribe":
        return None
    payload = message.get("payload")
    if not isinstance(message.get("id"), str) or not isinstance(payload, dict):
        return "subscribe needs a string id and an object payload."
    if not isinstance(payload.get("query", ""), str):
        return "payload.query must be a string."
    if not isinstance(payload.get("variables") or {}, dict):
        return "payload.variables must be an object."
    if not isinstance(payload.get("operationName") or "", str):
        return "payload.operationName must be a string."
    return None


class TransportWSHandler(BaseGraphQLTransportWSHandler[Context, None]):
    """Subscriptions whose replay is written are handed over by their operation (api/fanout.py)
    and kept here under their id: Strawberry's operation then ends without a `complete`."""

    context: Context
    _expiry: asyncio.Task[None] | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.handed: dict[str, Member] = {}

    async def handle_connection_init(self, message: ConnectionInitMessage) -> None:
        await super().handle_connection_init(message)
        # Strawberry's timeout task would sleep out its time on every acknowledged connection
        # (about 1 KB and a timer each, while thousands connect at once).
        waiting = self.connection_init_timeout_task
        if self.connection_acknowledged and waiting is not None:
            waiting.cancel()
            self.connection_init_timeout_task = None
        expires_at = self.context.principal.expires_at
        if self.connection_acknowledged and expires_at is not None and self._expiry is None:
            self._expiry = asyncio.create_task(self._close_at(expires_at))

    async def _close_at(self, expires_at: float) -> None:
        # Wall-clock time, as the token's exp is: sleep until then, however long.
        await asyncio.sleep(max(0.0, expires_at - time.time()))
        with contextlib.suppress(RuntimeError):  # closed meanwhile
            await self.websocket.close(*TOKEN_EXPIRED)

    async def shutdown(self) -> None:
        for member in self.handed.values():
            member.leave()
        self.handed.clear()
        if self._expiry is not None:
            self._expiry.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._expiry
        await super().shutdown()

    async def handle_message(self, message: Message) -> None:
        if (reason := _malformed(message)) is not None:
            return await self.handle_invalid_message(reason)
        if message["type"] == "complete" and message["id"] in self.handed:
            return self.handed.pop(message["id"]).leave()
        if message["type"] != "subscribe":
            return await super().handle_message(message)
        if message["id"] in self.handed:
            reason = f"Subscriber for {message['id']} already exists"
            return await self.websocket.close(code=4409, reason=reason)
        limit = self.max_subscriptions_per_connection
        if limit is not None and len(self.operations) + len(self.handed) >= limit:
            error = GraphQLError("Subscription limit reached")
            return await self.send_message(
                {"id": message["id"], "type": "error", "payload": [error.formatted]}
            )
        if not self.context.services.subscribe_limiter.allow(self.context.caller):
            error = GraphQLError(
                "Too many subscriptions started: slow down.", extensions={"code": "RATE_LIMITED"}
            )
            return await self.send_message(
                {"id": message["id"], "type": "error", "payload": [error.formatted]}
            )
        payload = message["payload"]
        documents = self.context.services.documents
        try:
            document = named(
                payload.get("extensions"), payload.get("documentId"), payload.get("doc_id")
            )
            payload["query"] = await documents.text(
                payload.get("query"), document, self.context.principal
            )
            await documents.register(document, payload["query"])
        except ApiError as refused:
            return await self.send_message(
                {"id": message["id"], "type": "error", "payload": [refused.formatted]}
            )
        if payload["query"] is None:
            return await self.handle_invalid_message("subscribe needs a query or a document id.")
        # The operation's task, created inside, inherits this: its resolver then delivers the
        # events itself (api/fanout.py).
        token = SUBSCRIBING.set(self._subscribing(message))
        try:
            return await super().handle_message(message)
        finally:
            SUBSCRIBING.reset(token)

    def _subscribing(self, message: SubscribeMessage) -> SubscribeRequest:
        websocket = self.context.websocket
        assert websocket is not None  # a WebSocket's context always holds it
        payload = message["payload"]
        return SubscribeRequest(
            query=payload["query"],
            variables=payload.get("variables"),
            operation_name=payload.get("operationName"),
            schema=cast(strawberry.Schema, self.schema),
            transport=SocketTransport(message["id"], websocket, self._hand_over),
        )

    def _hand_over(self, id: str, member: Member) -> None:
        self.handed[id] = member

    async def send_message(self, message: Message) -> None:
        # The `complete` of an operation that handed its subscription over is not the end.
        if message.get("type") == "complete" and message.get("id") in self.handed:
            return
        await super().send_message(message)
