"""Subscription fan-out: each event is executed and encoded once per audience, and the same text
goes to every subscriber in it, whatever its transport.

Strawberry still parses, validates and authorises a subscription and runs its resolver, which
joins the subscription to its `Audience`: subscribers whose `next` payload must be identical
(the same document, operation, the variables its selection uses, and caller scope; not
`after:`). The audience is the hub's one listener for all its members: it matches, renders and
frames each event once and writes the frame to every member. The resolver returns a
`Delivery`, a source stream that writes the member's replay and never yields. Over a WebSocket
it then hands the member to the audience and ends quietly (the handler keeps the subscription
under its id), so nothing of Strawberry's operation stays alive, and each frame is written
from the fan-out itself: a socket that takes it at once costs no task and no wake-up; a paused
one gets a task and a bounded backlog until it catches up, or is closed with 1013. An HTTP
stream (api/streams.py) keeps its task, which writes the member's backlog: the general path.
"""

import asyncio
import contextlib
import enum
import functools
import json
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextvars import ContextVar
from dataclasses import dataclass
from inspect import isawaitable
from typing import Any, NoReturn, Protocol, cast

import orjson
import strawberry
from graphql import (
    DocumentNode,
    ExecutionResult,
    FieldNode,
    FragmentDefinitionNode,
    GraphQLError,
    Node,
    VariableNode,
    get_operation_ast,
    parse,
)
from graphql.execution import Executor, execute_subscription_event
from starlette.websockets import WebSocketDisconnect

from api.metrics import EVENTS_DELIVERED, EVENTS_RENDERED, SUBSCRIBERS_DROPPED, SUBSCRIPTIONS_OPEN
from models import EventFilter, EventHub, EventRecord

TRY_AGAIN_LATER = 1013
SERVICE_RESTART = 1012

AudienceKey = tuple[str, str | None, str, frozenset[str] | None]

# Where api/app.py keeps the server's own ASGI `send` in a WebSocket's scope: frames written
# there skip Starlette's WebSocket and exception-handler layers, a tenth of each frame's CPU.
SERVER_SEND = "session_service.server_send"


class Ending(enum.Enum):
    """Why a subscription ends before its client asked: either way the client resumes by cursor."""

    LAGGING = "lagging"
    RESTARTING = "restarting"


class Transport(Protocol):
    """Where a subscription's events go: how each becomes a frame, and how the stream ends."""

    def frame(self, event: EventRecord, payload: str) -> str:
        """The text that carries an event's rendered `{"data": …}` payload."""

    # Members whose frames for an event are the same text share this key.
    frame_key: str

    def send(self, frame: str) -> Coroutine[Any, Any, None]: ...

    async def end(self, ending: Ending, reason: str) -> None:
        """End the stream so that the client comes back and resumes after its last cursor."""


class SocketTransport:
    """graphql-transport-ws: `next` messages on the WebSocket, 1013 or 1012 to end."""

    CODES = {Ending.LAGGING: TRY_AGAIN_LATER, Ending.RESTARTING: SERVICE_RESTART}
    __slots__ = ("_hand_over", "_server_send", "frame_key", "id", "websocket")

    def __init__(self, id: str, websocket: Any, hand_over: Callable[[str, "Member"], None]) -> None:
        self.id = id
        self.frame_key = '{"id":%s,"type":"next","payload":' % json.dumps(id)
        self.websocket = websocket
        self._server_send = websocket.scope.get(SERVER_SEND)
        self._hand_over = hand_over

    def send(self, frame: str) -> Coroutine[Any, Any, None]:
        if self._server_send is None:
            return cast(Coroutine[Any, Any, None], self.websocket.send_text(frame))
        return cast(
            Coroutine[Any, Any, None], self._server_send({"type": "websocket.send", "text": frame})
        )

    def detach(self, member: "Member") -> None:
        """The handler keeps the subscription from now on, not Strawberry's operation."""
        self._hand_over(self.id, member)

    def frame(self, event: EventRecord, payload: str) -> str:
        return self.frame_key + payload + "}"

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
        """What shapes the rendered events: the document, the operation, the variables its
        selection uses (`after:` only says where to start) and the caller's scope."""
        used = _shaping_variables(_parsed(self.query), self.operation_name)
        given = {k: v for k, v in (self.variables or {}).items() if k in used}
        variables = json.dumps(given, sort_keys=True, separators=(",", ":"))
        return (self.query, self.operation_name, variables, scope)

    def executor(self, context: Any) -> Executor:
        """The operation's executor, built as Strawberry builds it (the document is valid: a
        resolver only runs after validation)."""
        executor = self.schema.execution_context_class.build(
            self.schema._schema,
            _parsed(self.query),
            context_value=context,
            raw_variable_values=self.variables,
            operation_name=self.operation_name,
        )
        if isinstance(executor, list):
            raise executor[0]
        return executor


@functools.lru_cache(maxsize=256)
def _parsed(query: str) -> DocumentNode:
    return parse(query)


@functools.lru_cache(maxsize=256)
def _shaping_variables(document: DocumentNode, operation_name: str | None) -> frozenset[str]:
    """The variables an operation uses anywhere but as its root fields' `after:` (and any in
    the document's fragments)."""
    operation = get_operation_ast(document, operation_name)
    if operation is None:
        return frozenset()
    pending: list[Any] = [operation.directives]
    pending += [d for d in document.definitions if isinstance(d, FragmentDefinitionNode)]
    for selection in operation.selection_set.selections:
        if isinstance(selection, FieldNode):
            pending += [a for a in selection.arguments or () if a.name.value != "after"]
            pending += [selection.directives, selection.selection_set]
        else:
            pending.append(selection)
    used: set[str] = set()
    while pending:
        node = pending.pop()
        if isinstance(node, VariableNode):
            used.add(node.name.value)
        elif isinstance(node, list | tuple):
            pending += node
        elif isinstance(node, Node):
            pending += [getattr(node, key, None) for key in node.keys]
    return frozenset(used)


# Set by the transport handler while it starts a subscription; the operation's task inherits
# it, so the subscription's resolver knows which message and socket it serves.
SUBSCRIBING: ContextVar[SubscribeRequest | None] = ContextVar("subscribing", default=None)

# A socket that has gone away, as its send reports it (uvicorn, Starlette).
GONE = (OSError, RuntimeError, WebSocketDisconnect)
# Tasks that resume or end handed-over members, kept until done (the loop holds tasks weakly).
_BACKGROUND: set["asyncio.Task[None]"] = set()


def _lagging(capacity: int) -> str:
    return f"fell more than {capacity} events behind: resume after your last cursor"


async def _finish(coroutine: Coroutine[Any, Any, None], yielded: Any) -> None:
    """Runs to its end a coroutine that was stepped outside any task and suspended on
    `yielded` (a future, or None for a bare yield)."""
    try:
        while True:
            if yielded is None:
                await asyncio.sleep(0)
            else:
                await asyncio.wait([yielded])
            yielded = coroutine.send(None)
    except StopIteration:
        return
    except BaseException:
        coroutine.close()
        raise


class Member:
    """One subscription in an audience: its transport, the newest cursor it has been given,
    and a bounded backlog of frames for while it cannot be written to at once (replaying,
    paused). The backlog exists only while it holds frames: most members never need one."""

    __slots__ = (
        "after",
        "audience",
        "backlog",
        "direct",
        "ending",
        "handed",
        "left",
        "transport",
        "waiter",
    )

    def __init__(self, audience: "Audience", transport: Transport, after: int) -> None:
        self.audience = audience
        self.transport = transport
        self.after = after
        self.backlog: deque[str] | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.ending: tuple[Ending, str] | None = None
        # Written to from the fan-out itself: no task of its own (a socket that takes frames).
        self.direct = False
        # Handed over to the fan-out: no task of Strawberry's serves it any more.
        self.handed = False
        self.left = False

    def offer(self, event: EventRecord, payload: str, frame: str) -> int:
        """Takes an event: 1 if written now, 0 if queued or skipped."""
        if event.cursor <= self.after or self.ending is not None:
            return 0
        self.after = event.cursor
        if self.direct:
            sending = self.transport.send(frame)
            try:
                yielded = sending.send(None)
            except StopIteration:
                return 1
            except GONE:
                self.leave()
                return 0
            # Paused: the rest of this frame, and the backlog after it, need a task.
            self.direct = False
            self._spawn(self._resume(sending, yielded))
            return 1
        backlog = self.backlog
        if backlog is None:
            backlog = self.backlog = deque()
        elif len(backlog) >= self.audience.capacity:
            self.end(Ending.LAGGING, _lagging(self.audience.capacity))
            return 0
        backlog.append(frame)
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)
        return 0

    async def _resume(self, sending: Coroutine[Any, Any, None], yielded: Any) -> None:
        try:
            await _finish(sending, yielded)
            await self.catch_up()
        except GONE:
            self.leave()

    async def catch_up(self) -> None:
        """Writes the backlog, then lets the fan-out write directly (no await between the
        backlog's last frame and that switch, so nothing can slip between)."""
        while self.ending is None and (frame := self._backlogged()) is not None:
            await self.transport.send(frame)
            EVENTS_DELIVERED.inc()
        if self.ending is None:
            self.direct = True

    def _backlogged(self) -> str | None:
        """The backlog's next frame; when it has none, the backlog goes."""
        if self.backlog:
            return self.backlog.popleft()
        self.backlog = None
        return None

    async def serve(self) -> Ending | None:
        """The general path, for transports that cannot be written to without a task: writes
        the backlog as it fills, until the member ends."""
        while self.ending is None:
            if (frame := self._backlogged()) is not None:
                await self.transport.send(frame)
                EVENTS_DELIVERED.inc()
            else:
                self.waiter = asyncio.get_running_loop().create_future()
                try:
                    await self.waiter
                finally:
                    self.waiter = None
        return self.ending[0]

    def end(self, ending: Ending, reason: str) -> None:
        """Ends the subscription (the client resumes by cursor): a handed-over socket is told
        at once, else the task that serves the member tells it."""
        if self.ending is not None:
            return
        self.ending = (ending, reason)
        self.backlog = None
        if ending is Ending.LAGGING:
            SUBSCRIBERS_DROPPED.inc()
        if self.handed:
            self._spawn(self.transport.end(ending, reason))
        elif self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)
        self.leave()

    def leave(self) -> None:
        if not self.left:
            self.left = True
            self.direct = False
            self.audience.remove(self)
            SUBSCRIPTIONS_OPEN.dec()

    @staticmethod
    def _spawn(coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        _BACKGROUND.add(task)
        task.add_done_callback(_BACKGROUND.discard)


class Audience:
    """Subscribers who receive the same bytes for an event, and the hub's one listener for all
    of them: it matches, renders (the newest `size` renderings kept, for replays) and frames
    each event once, then writes it to every member that can take it at once."""

    def __init__(
        self,
        where: EventFilter,
        executor: Executor,
        root: Callable[[EventRecord], object],
        finish: Callable[[list[GraphQLError]], list[GraphQLError]],
        capacity: int,
        size: int = 64,
    ) -> None:
        """`root` makes an event the root value of its execution; `finish` reports and codes
        the errors of one rendering, as Strawberry does for an operation."""
        self.where = where
        self.executor = executor
        self.root = root
        self.finish = finish
        self.capacity = capacity
        self.size = size
        self.members: dict[Member, None] = {}
        self.on_empty: Callable[[Audience], None] = lambda audience: None
        self._rendered: OrderedDict[int, str | asyncio.Future[str]] = OrderedDict()
        self._pending: deque[EventRecord] = deque()
        self._pumping: asyncio.Future[None] | None = None

    def add(self, transport: Transport, after: int) -> Member:
        member = Member(self, transport, after)
        self.members[member] = None
        SUBSCRIPTIONS_OPEN.inc()
        return member

    def remove(self, member: Member) -> None:
        self.members.pop(member, None)
        if not self.members:
            self.on_empty(self)

    def offer(self, event: EventRecord) -> None:
        """The hub's call, for every new event in order."""
        if not self.where.matches(event):
            return
        if len(self._pending) >= self.capacity:
            for member in list(self.members):
                member.end(Ending.LAGGING, _lagging(self.capacity))
            return
        self._pending.append(event)
        if self._pumping is None:
            self._pump()

    def fail(self, error: Exception) -> None:
        for member in list(self.members):
            member.end(Ending.RESTARTING, "the server is restarting: resume by cursor")

    def _pump(self) -> None:
        while self._pending:
            event = self._pending[0]
            payload = self.render(event)
            if not isinstance(payload, str):  # still being rendered: continue when it is
                self._pumping = asyncio.ensure_future(self._pump_after(payload))
                return
            self._pending.popleft()
            self._deliver(event, payload)

    async def _pump_after(self, rendering: Awaitable[str]) -> None:
        try:
            await rendering
        finally:
            self._pumping = None
        self._pump()

    def _deliver(self, event: EventRecord, payload: str) -> None:
        frames: dict[str, str] = {}
        delivered = 0
        for member in list(self.members):
            key = member.transport.frame_key
            frame = frames.get(key)
            if frame is None:
                frame = frames[key] = member.transport.frame(event, payload)
            delivered += member.offer(event, payload, frame)
        if delivered:
            EVENTS_DELIVERED.inc(delivered)

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
    """The open audiences, each listening to the hub while it has members."""

    def __init__(self) -> None:
        self._open: dict[AudienceKey, Audience] = {}

    def join(
        self, key: AudienceKey, hub: EventHub, create: Callable[[], Audience], transport: Transport
    ) -> Member:
        """A new member of the key's audience. It is offered every event committed after
        `member.after`: the caller replays those up to it, if it wants them."""
        audience = self._open.get(key)
        if audience is None:
            audience = self._open[key] = create()

            def close(empty: Audience) -> None:
                hub.unsubscribe(empty)
                if self._open.get(key) is empty:
                    del self._open[key]

            audience.on_empty = close
        return audience.add(transport, hub.listen(audience))

    def __len__(self) -> int:
        return len(self._open)


class Delivery:
    """The source stream graphql-core sees for a subscription. Its first `__anext__` writes the
    replay, then either hands the member over to the fan-out and ends quietly (a socket: the
    handler keeps the subscription, and nothing of the operation stays alive), or goes on
    writing the member's events itself (an HTTP stream), until the subscription ends."""

    def __init__(self, member: Member, replay: AsyncIterator[EventRecord]) -> None:
        self.member = member
        self.replay = replay

    def __aiter__(self) -> "Delivery":
        return self

    async def __anext__(self) -> NoReturn:
        member = self.member
        transport, audience = member.transport, member.audience
        try:
            async for event in self.replay:
                if member.ending is not None:
                    break
                payload = audience.render(event)
                if not isinstance(payload, str):
                    payload = await payload
                await transport.send(transport.frame(event, payload))
                EVENTS_DELIVERED.inc()
            detach = getattr(transport, "detach", None)
            if detach is not None and member.ending is None:
                await member.catch_up()
                if member.ending is None and not member.left:
                    member.handed = True
                    detach(member)
                    raise StopAsyncIteration
            elif member.ending is None:
                await member.serve()
            if member.ending is not None:
                await transport.end(*member.ending)
        except GONE:
            pass
        finally:
            if not member.handed:
                member.leave()
        raise StopAsyncIteration

    async def aclose(self) -> None:
        if not self.member.handed:
            self.member.leave()
