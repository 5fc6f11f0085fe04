"""Subscription fan-out: each event is executed and encoded once per audience, and the same text
goes to every subscriber in it, whatever its transport.

Strawberry still parses, validates and authorises a subscription and runs its resolver. The
events themselves skip the per-subscriber path (graphql-core's per-event execution, Strawberry's
result hooks, a JSON encoding per socket): the resolver returns a `Delivery`, a source stream
that writes each event to its transport itself and never yields. A transport (a WebSocket
here, an HTTP stream in api/streams.py) says how a payload becomes a frame and how a stream that
must be resumed ends. Subscribers whose `next` payload
must be identical (the same document, operation, variables and caller scope) share an
`Audience`, which renders each event once.
"""

import asyncio
import contextlib
import enum
import json
from collections import OrderedDict
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from inspect import isawaitable
from typing import Any, NoReturn, Protocol
from weakref import WeakValueDictionary

import orjson
import strawberry
from graphql import ExecutionResult, GraphQLError, parse
from graphql.execution import Executor, execute_subscription_event

from api.metrics import EVENTS_DELIVERED, EVENTS_RENDERED, SUBSCRIBERS_DROPPED, SUBSCRIPTIONS_OPEN
from models import EventRecord, HubClosed, SubscriberLagging

TRY_AGAIN_LATER = 1013
SERVICE_RESTART = 1012

AudienceKey = tuple[str, str | None, str, frozenset[str] | None]


class Ending(enum.Enum):
    """Why a subscription ends before its client asked: either way the client resumes by cursor."""

    LAGGING = "lagging"
    RESTARTING = "restarting"


class Transport(Protocol):
    """Where a subscription's events go: how each becomes a frame, and how the stream ends."""

    def frame(self, event: EventRecord, payload: str) -> str:
        """The text that carries an event's rendered `{"data": …}` payload."""

    async def send(self, frame: str) -> None: ...

    async def end(self, ending: Ending, reason: str) -> None:
        """End the stream so that the client comes back and resumes after its last cursor."""


class SocketTransport:
    """graphql-transport-ws: `next` messages on the WebSocket, 1013 or 1012 to end."""

    CODES = {Ending.LAGGING: TRY_AGAIN_LATER, Ending.RESTARTING: SERVICE_RESTART}

    def __init__(self, id: str, websocket: Any) -> None:
        self.prefix = '{"id":%s,"type":"next","payload":' % json.dumps(id)
        self.websocket = websocket
        self.send = websocket.send_text

    def frame(self, event: EventRecord, payload: str) -> str:
        return self.prefix + payload + "}"

    async def end(self, ending: Ending, reason: str) -> None:
        with contextlib.suppress(RuntimeError):  # already closed
            await self.websocket.close(self.CODES[ending], reason)


@dataclass(frozen=True)
class SubscribeRequest:
    """A subscription as its transport received it, and where its events go."""

    query: str
    variables: dict[str, Any] | None
    operation_name: str | None
    schema: strawberry.Schema
    transport: Transport
    # A reconnecting client's last cursor (SSE's Last-Event-ID): it wins over `after:`.
    resume_after: str | None = None

    def audience(self, scope: frozenset[str] | None) -> AudienceKey:
        variables = json.dumps(self.variables, sort_keys=True, separators=(",", ":"))
        return (self.query, self.operation_name, variables, scope)

    def executor(self, context: Any) -> Executor:
        """The operation's executor, built as Strawberry builds it (the document is valid: a
        resolver only runs after validation)."""
        executor = self.schema.execution_context_class.build(
            self.schema._schema,
            parse(self.query),
            context_value=context,
            raw_variable_values=self.variables,
            operation_name=self.operation_name,
        )
        if isinstance(executor, list):
            raise executor[0]
        return executor


# Set by the transport handler while it starts a subscription; the operation's task inherits
# it, so the subscription's resolver knows which message and socket it serves.
SUBSCRIBING: ContextVar[SubscribeRequest | None] = ContextVar("subscribing", default=None)


class Audience:
    """Subscribers who receive the same bytes for an event. Keeps the newest `size` renderings,
    so every member reuses the first member's work."""

    def __init__(
        self,
        executor: Executor,
        root: Callable[[EventRecord], object],
        finish: Callable[[list[GraphQLError]], list[GraphQLError]],
        size: int = 64,
    ) -> None:
        """`root` makes an event the root value of its execution; `finish` reports and codes
        the errors of one rendering, as Strawberry does for an operation."""
        self.executor = executor
        self.root = root
        self.finish = finish
        self.size = size
        self._rendered: OrderedDict[int, str | asyncio.Future[str]] = OrderedDict()

    def render(self, event: EventRecord) -> str | Awaitable[str]:
        """The event's `next` payload as JSON text: made now, shared, or still being made."""
        rendered = self._rendered.get(event.cursor)
        if rendered is None:
            EVENTS_RENDERED.inc()
            executor = self.executor.build_per_event_executor(self.root(event))
            result = execute_subscription_event(executor)
            rendered = (
                asyncio.ensure_future(self._encode_later(result))
                if isawaitable(result)
                else self._encode(result)
            )
            self._rendered[event.cursor] = rendered
            if len(self._rendered) > self.size:
                self._rendered.popitem(last=False)
        if isinstance(rendered, str):
            return rendered
        if rendered.done():
            return rendered.result()
        # Shielded: a member that goes away must not cancel the others' rendering.
        return asyncio.shield(rendered)

    async def _encode_later(self, result: Awaitable[ExecutionResult]) -> str:
        return self._encode(await result)

    def _encode(self, result: ExecutionResult) -> str:
        payload: dict[str, Any] = {"data": result.data}
        if result.errors:
            payload["errors"] = [error.formatted for error in self.finish(result.errors)]
        return orjson.dumps(payload).decode()


class Audiences:
    """The open audiences, each kept while one of its subscribers holds it."""

    def __init__(self) -> None:
        self._open: WeakValueDictionary[AudienceKey, Audience] = WeakValueDictionary()

    def join(self, key: AudienceKey, create: Callable[[], Audience]) -> Audience:
        audience = self._open.get(key)
        if audience is None:
            audience = self._open[key] = create()
        return audience


class Delivery:
    """The source stream graphql-core sees for a subscription. Its first `__anext__` delivers
    every event to the transport and ends with the subscription, so graphql-core's per-event
    path never runs."""

    def __init__(
        self,
        events: AsyncGenerator[EventRecord, None],
        message: SubscribeRequest,
        audience: Audience,
    ) -> None:
        self.events = events
        self.message = message
        self.audience = audience

    def __aiter__(self) -> "Delivery":
        return self

    async def __anext__(self) -> NoReturn:
        transport = self.message.transport
        frame, send = transport.frame, transport.send
        SUBSCRIPTIONS_OPEN.inc()
        try:
            async for event in self.events:
                payload = self.audience.render(event)
                if not isinstance(payload, str):
                    payload = await payload
                await send(frame(event, payload))
                EVENTS_DELIVERED.inc()
        except SubscriberLagging as error:
            SUBSCRIBERS_DROPPED.inc()
            await transport.end(Ending.LAGGING, f"{error}: resume after your last cursor")
        except HubClosed:
            await transport.end(Ending.RESTARTING, "the server is restarting: resume by cursor")
        finally:
            SUBSCRIPTIONS_OPEN.dec()
        raise StopAsyncIteration

    async def aclose(self) -> None:
        await self.events.aclose()
