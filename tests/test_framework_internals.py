"""The framework internals api/ relies on, each pinned in pyproject.toml: these fail when an
upgrade moves one, before a subscriber or a request notices."""

import ast
import asyncio
import gc
import inspect
import threading
import time
import weakref
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any, cast

import pytest
import uvicorn
from graphql import parse
from graphql.execution import Executor, execute_subscription_event
from starlette.types import Receive, Scope, Send
from strawberry.http import process_result
from strawberry.schema.exceptions import CannotGetOperationTypeError, InvalidOperationTypeError
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext, validate_document
from strawberry.types import ExecutionResult
from strawberry.types.graphql import OperationType
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.server import ServerProtocol
from websockets.sync.client import connect

from api import Settings
from api.app import server_options
from api.executor import PerEventExecutor
from api.fanout import _finish
from api.schema import build_schema
from tests.client import Client, Subscription

SUBSCRIPTION = "subscription { sessionEvents { cursor } }"


def _executor() -> Executor:
    schema = build_schema(Settings())
    executor = PerEventExecutor.build(schema._schema, parse(SUBSCRIPTION))
    assert isinstance(executor, Executor), executor
    return executor


def test_graphql_core_shares_the_subfield_memo_with_every_per_event_executor() -> None:
    """The leak api/executor.py works around: graphql-core's per-event copy shares the memo
    keyed by per-event lists. If this stops holding, the workaround can go."""
    executor = _executor()
    memo = executor._relevant_sub_fields
    assert isinstance(memo, dict)
    plain = Executor.build_per_event_executor(executor, {"sessionEvents": None})
    assert plain._relevant_sub_fields is memo


def test_each_event_gets_a_fresh_memo_and_is_executed_by_graphql_core() -> None:
    executor = _executor()
    event = executor.build_per_event_executor(SimpleNamespace(cursor="7"))
    assert event._relevant_sub_fields == {}
    assert event._relevant_sub_fields is not executor._relevant_sub_fields
    result = execute_subscription_event(event)
    assert result.data == {"sessionEvents": {"cursor": "7"}}  # type: ignore[union-attr]


def test_graphql_core_binds_its_resolver_helpers_to_the_executor() -> None:
    """The cycle api/executor.py breaks: executor -> helpers -> the executor's bound methods.
    If this stops holding, the override can go."""
    plain = Executor.build(build_schema(Settings())._schema, parse(SUBSCRIPTION))
    assert isinstance(plain, Executor), plain
    assert getattr(plain.async_helpers.track, "__self__", None) is plain


def test_our_executors_are_freed_without_the_cycle_collector_and_their_helpers_work() -> None:
    executor = _executor()
    event = executor.build_per_event_executor(SimpleNamespace(cursor="7"))
    event.async_helpers.track([None])
    gathered = event.async_helpers.gather([])
    assert asyncio.run(cast(Any, gathered)) == []
    gc.collect()
    gc.disable()
    try:
        references = [weakref.ref(executor), weakref.ref(event)]
        del executor, event
        assert [reference() for reference in references] == [None, None]
    finally:
        gc.enable()


def test_websockets_parser_holds_its_protocol_until_closed() -> None:
    """The cycle api/protocols.py breaks when a connection is lost: websockets' parser is a
    generator suspended inside its protocol, which holds it."""
    gc.collect()
    gc.disable()
    try:
        held = weakref.ref(ServerProtocol())
        protocol = held()
        assert protocol is not None  # only the cycle collector would free it
        protocol.parser.close()
        del protocol
        assert held() is None
    finally:
        gc.enable()


def _uses_of(attribute: str) -> dict[str, set[str]]:
    """What uvicorn's WebSocket protocol does with `self.<attribute>`, method by method: the
    names it takes from it, or "" where it only reads or assigns it."""
    found: dict[str, set[str]] = {}
    tree = ast.parse(inspect.getsource(WebSocketsSansIOProtocol))
    for method in ast.walk(tree):
        if not isinstance(method, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for node in ast.walk(method):
            if not (isinstance(node, ast.Attribute) and node.attr == attribute):
                continue
            if isinstance(node.value, ast.Name) and node.value.id == "self":
                found.setdefault(method.name, set())
        for node in ast.walk(method):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Attribute)
                and node.value.attr == attribute
            ):
                found.setdefault(method.name, set()).add(node.attr)
    return found


def test_uvicorn_asks_of_its_receive_queue_and_writable_event_only_what_ours_give() -> None:
    """api/protocols.py replaces the `asyncio.Queue` and `asyncio.Event` uvicorn gives each
    WebSocket with leaner ones that have only what uvicorn calls."""
    taken = set().union(*_uses_of("queue").values())
    assert taken <= {"put_nowait", "get", "empty"}, taken
    taken = set().union(*_uses_of("writable").values())
    assert taken <= {"set", "clear", "wait", "is_set"}, taken


def test_uvicorn_reads_the_handshake_only_until_it_has_answered_it() -> None:
    """api/protocols.py lets the handshake's request and response go once uvicorn starts the
    keepalive, right after writing the response: only the handshake's own steps read them."""
    assert set(_uses_of("request")) == {"handle_connect"}
    assert set(_uses_of("response")) == {"handle_connect", "send"}
    source = inspect.getsource(WebSocketsSansIOProtocol.send)
    accepted = source.index('"websocket.accept"')
    last_read = source.rindex("self.response")
    assert accepted < last_read < source.index("self.start_keepalive()", accepted)
    assert source.count("self.start_keepalive()") == 1


def test_the_strawberry_parts_the_fast_path_answers_with() -> None:
    """Strawberry's validation (with its own rules), result shape and refusal reasons, which
    the fast path (api/view.py, SessionSchema.execute) reuses to answer as Strawberry does."""
    schema = build_schema(Settings())
    assert issubclass(PerEventExecutor, StrawberryGraphQLCoreExecutionContext)
    assert validate_document(schema._schema, parse("{ __typename }"), ()) == []
    assert process_result(ExecutionResult(data={"a": 1}, errors=None)) == {"data": {"a": 1}}
    assert "subscriptions are not allowed" in InvalidOperationTypeError(
        OperationType.SUBSCRIPTION
    ).as_http_error_reason("POST")
    assert CannotGetOperationTypeError("X").as_http_error_reason()


class SendingEndpoint:
    """A WebSocket ASGI app that steps the server's sends by hand, as api/fanout.py's
    Member.offer does, and notes how each went."""

    def __init__(self) -> None:
        self.steps: list[str] = []
        self.finished = threading.Event()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "websocket"
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})

        def text(frame: str) -> Any:
            return send({"type": "websocket.send", "text": frame})

        sending = text("small")
        try:
            sending.send(None)
        except StopIteration:
            self.steps.append("written at once")
        else:
            self.steps.append("suspended while writable")
            sending.close()
        # The client reads nothing until it has "paused": frames until the transport pauses.
        big = "x" * (1 << 20)
        for _ in range(64):
            sending = text(big)
            try:
                yielded = sending.send(None)
            except StopIteration:
                continue
            self.steps.append("paused")
            await _finish(sending, yielded)  # completes once the client reads
            self.steps.append("resumed")
            break
        await text("end")
        self.finished.set()
        while (await receive())["type"] != "websocket.disconnect":
            pass


@pytest.fixture
def sending_server() -> Iterator[tuple[str, SendingEndpoint]]:
    """The endpoint, served by uvicorn with the service's own WebSocket options."""
    endpoint = SendingEndpoint()
    config = uvicorn.Config(
        endpoint, host="127.0.0.1", port=0, log_level="warning", **server_options(Settings())
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"ws://127.0.0.1:{port}/ws", endpoint
    server.should_exit = True
    thread.join(timeout=30)


def test_uvicorn_writes_a_frame_within_the_send_call_and_suspends_only_when_paused(
    sending_server: tuple[str, SendingEndpoint],
) -> None:
    """api/fanout.py steps each socket's send once, from the fan-out itself: it relies on
    uvicorn's ASGI send for a WebSocket (the websockets-sansio protocol) writing the frame
    without suspending while the transport is writable, and suspending, to finish later, only
    while it is paused. A send that always suspended would cost a task per frame; one that
    never did would buffer without bound."""
    url, endpoint = sending_server
    with connect(url, max_queue=1) as client:
        first = client.recv(timeout=10)
        assert endpoint.steps[:1] == ["written at once"]
        assert first == "small"
        # Nothing more is read until the server's transport has paused.
        deadline = time.monotonic() + 30
        while "paused" not in endpoint.steps and not endpoint.finished.is_set():
            assert time.monotonic() < deadline, endpoint.steps
            time.sleep(0.01)
        while (message := client.recv(timeout=10)) != "end":
            assert len(message) == 1 << 20
    assert endpoint.finished.wait(10)
    assert endpoint.steps == ["written at once", "paused", "resumed"]


def test_strawberry_sends_an_operations_complete_through_send_message(
    client: Client, server: Any
) -> None:
    """api/websocket.py's handler keeps a handed-over subscription under its id and holds back
    the `complete` that Strawberry's operation then sends, by overriding send_message: the
    operation must send it that way (Operation.send_operation_message), or the client would
    see its live subscription end."""
    with Subscription(server.url, SUBSCRIPTION) as subscription:
        # The first event may reach it before the hand-over, the second after.
        for _ in range(2):
            client.create()
            assert subscription.next()["sessionEvents"]["cursor"]
        subscription.send({"type": "ping"})
        assert subscription.message() == {"type": "pong"}
