"""The fan-out (api/fanout.py): audiences shared across cursors but never across scopes, the
socket path against the general one, and the metrics under churn."""

import asyncio
import gc
import json
import socket
import time
import weakref
from typing import Any

import httpx
import pytest
from starlette.websockets import WebSocket
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.exceptions import ConnectionClosed
from websockets.server import ServerProtocol
from websockets.sync.client import connect
from websockets.typing import Subprotocol

from api import Settings, create_app
from api.auth import Token
from api.context import Context
from models import EventRecord
from tests.client import CREATE, Client, Subscription

EVENTS = """
subscription Events($after: String) {
  sessionEvents(after: $after) { cursor kind dataSource session { key identifier } }
}"""
ALL = "fan-out-all-token-0123456789"
CAR_A = "fan-out-car-a-token-0123456789"
TOKENS = (
    Token.parse({"token": ALL, "role": "admin"}, "[0]"),
    Token.parse({"token": CAR_A, "role": "read", "dataSources": ["car-a"]}, "[1]"),
)


def _as(token: str) -> dict[str, Any]:
    return {"authorization": f"Bearer {token}"}


def test_two_scopes_on_the_same_document_each_get_only_their_own_events(make_server: Any) -> None:
    server = make_server(tokens=TOKENS)
    with (
        Client(server.url, headers=_as(ALL)) as writer,
        Subscription(server.url, EVENTS, init_payload=_as(ALL)) as everything,
        Subscription(server.url, EVENTS, init_payload=_as(CAR_A)) as car_a,
    ):
        b = writer.create(dataSource="car-b")["key"]
        a = writer.create(dataSource="car-a")["key"]
        assert [everything.next()["sessionEvents"]["session"]["key"] for _ in range(2)] == [b, a]
        seen = car_a.next()["sessionEvents"]
        assert (seen["dataSource"], seen["session"]["key"]) == ("car-a", a)
        assert car_a.nothing_within(0.5)


def test_subscribers_resuming_from_different_cursors_share_one_rendering(
    client: Client, server: Any
) -> None:
    first = client.create(dataSource="car-1")
    cursors = client.data("{ sessionSnapshot { cursor } }")["sessionSnapshot"]["cursor"]
    with (
        Subscription(server.url, EVENTS, {"after": None}) as live,
        Subscription(server.url, EVENTS, {"after": cursors}) as resumed,
    ):
        rendered = client.metrics()["session_service_events_rendered_total"]
        key = client.create(dataSource="car-1")["key"]
        assert live.next()["sessionEvents"]["session"]["key"] == key
        assert resumed.next()["sessionEvents"]["session"]["key"] == key
        # One audience: the live event is rendered once for both.
        assert client.metrics()["session_service_events_rendered_total"] == rendered + 1
    assert first["key"] != key


def test_the_socket_path_and_the_general_path_send_the_same_payloads(
    client: Client, server: Any
) -> None:
    """Sockets are written from the fan-out itself; an SSE stream through its own task. The
    same document must give the same bytes both ways."""
    headers = {"accept": "text/event-stream", "content-type": "application/json"}
    body = {"query": EVENTS, "variables": {}}
    with (
        Subscription(server.url, EVENTS) as socket,
        httpx.Client(base_url=server.url, timeout=10) as http,
        http.stream("POST", "/graphql", headers=headers, json=body) as stream,
    ):
        lines = stream.iter_lines()
        assert next(lines).startswith("retry:")
        with Subscription(server.url, EVENTS):  # a second socket: the stream is open by now
            pass
        for _ in range(3):
            client.create(dataSource="car-1")
        over_socket = [socket.message()["payload"] for _ in range(3)]
        over_sse: list[Any] = []
        while len(over_sse) < 3:
            line = next(lines)
            if line.startswith("data: "):
                over_sse.append(json.loads(line[6:]))
    assert over_socket == over_sse


def _settled(client: Client, name: str, expected: float, timeout: float = 10) -> float:
    """The metric once it reads `expected` (closes are handled asynchronously), or its last
    reading at the deadline."""
    deadline = time.monotonic() + timeout
    while (value := client.metrics().get(name, 0.0)) != expected and time.monotonic() < deadline:
        time.sleep(0.05)
    return value


def test_metrics_stay_right_under_churn(client: Client, server: Any) -> None:
    gauge, delivered = "session_service_subscriptions", "session_service_events_delivered_total"
    with Subscription(server.url, EVENTS) as steady:
        assert _settled(client, gauge, 1) == 1
        before = client.metrics()[delivered]
        keys = []
        for round_ in range(12):
            churner = Subscription(server.url, EVENTS).__enter__()
            keys.append(client.create(dataSource="car-1")["key"])
            assert churner.next()["sessionEvents"]["session"]["key"] == keys[-1]
            if round_ % 3 == 0:
                churner.send({"id": churner.id, "type": "complete"})
                churner.send({"type": "ping"})
                assert churner.receive()["type"] == "pong"
            churner.__exit__(None, None, None)
        got = [steady.next()["sessionEvents"]["session"]["key"] for _ in keys]
        assert got == keys
        assert _settled(client, gauge, 1) == 1
        # Each event to the steady subscriber and to the one churner open at the time.
        assert client.metrics()[delivered] == before + 2 * len(keys)
    assert _settled(client, gauge, 0) == 0


HEAVY = """
subscription Events($after: String) {
  sessionEvents(after: $after) { cursor session { key details { name value } } }
}"""
# About 60 KB an event: the server's send buffer grows to 4 MB (tcp_wmem) before its
# transport pauses.
BLOB = [{"name": f"blob{n}", "value": "x" * 4000} for n in range(15)]


def test_a_paused_socket_falls_behind_alone_and_resumes_by_cursor(make_server: Any) -> None:
    """A client that stops reading fills its socket's buffers until the server's transport
    pauses: that member's frames then go to its bounded backlog (the audience's other member,
    on the same document, is written to as before), and past the bound it is closed with 1013.
    What it did receive is contiguous, and resuming after its last cursor brings the rest."""
    server = make_server(subscriber_queue_size=20, websocket_ping_interval_seconds=300)
    ws_url = server.url.replace("http://", "ws://") + "/graphql"
    with (
        Client(server.url) as writer,
        connect(
            ws_url,
            subprotocols=[Subprotocol("graphql-transport-ws")],
            ping_interval=None,  # a client that stops reading cannot answer pings either
            max_queue=1,  # the client library reads only what the test asks for
        ) as slow,
        Subscription(server.url, HEAVY) as fast,
    ):
        slow.send(json.dumps({"type": "connection_init"}))
        assert json.loads(slow.recv(timeout=10))["type"] == "connection_ack"
        slow.send(json.dumps({"id": "slow", "type": "subscribe", "payload": {"query": HEAVY}}))
        slow.send(json.dumps({"type": "ping"}))
        assert json.loads(slow.recv(timeout=10))["type"] == "pong"
        # The slow socket reads nothing from here on; the other keeps up with every event.
        keys = []
        for _ in range(200):
            keys.append(writer.create(dataSource="car-1", details=BLOB)["key"])
            assert fast.next()["sessionEvents"]["session"]["key"] == keys[-1]
        received: list[dict[str, Any]] = []
        with pytest.raises(ConnectionClosed) as closed:
            while len(received) <= len(keys):
                received.append(json.loads(slow.recv(timeout=10)))
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013
        events = [message["payload"]["data"]["sessionEvents"] for message in received]
        assert all(message["type"] == "next" for message in received)
        assert 0 < len(events) < len(keys), "the slow socket was never paused"
        assert [event["session"]["key"] for event in events] == keys[: len(events)]

    with Subscription(server.url, HEAVY, {"after": events[-1]["cursor"]}) as resumed:
        rest = [resumed.next()["sessionEvents"]["session"]["key"] for _ in keys[len(events) :]]
        assert rest == keys[len(events) :]
        assert resumed.nothing_within(0.3)


class Recorder:
    """A hub listener (models/hub.py's Listener) that notes the cursors it is offered."""

    def __init__(self) -> None:
        self.offered: list[int] = []
        self.first = asyncio.get_running_loop().create_future()

    def offer(self, event: EventRecord) -> None:
        self.offered.append(event.cursor)
        if not self.first.done():
            self.first.set_result(None)

    def fail(self, error: Exception) -> None:
        pass


def test_the_mutation_is_answered_before_its_event_fans_out(settings: Settings) -> None:
    """The response's last byte goes to the server before the hub offers the commit's event
    to any listener: with thousands of subscribers, the fan-out never delays the answer."""

    async def scenario() -> tuple[list[int], list[int]]:
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            recorder = Recorder()
            app.state.services.hub.listen(recorder)
            body = json.dumps({"query": CREATE, "variables": {"input": {"dataSource": "car-1"}}})
            requests = [{"type": "http.request", "body": body.encode(), "more_body": False}]
            offered_when_answered: list[int] = []
            sent: list[dict[str, Any]] = []

            async def receive() -> dict[str, Any]:
                return requests.pop(0)

            async def send(message: Any) -> None:
                sent.append(message)
                if message["type"] == "http.response.body" and not message.get("more_body"):
                    offered_when_answered.extend(recorder.offered)

            scope = {
                "type": "http",
                "asgi": {"version": "3.0"},
                "http_version": "1.1",
                "method": "POST",
                "scheme": "http",
                "path": "/graphql",
                "raw_path": b"/graphql",
                "root_path": "",
                "query_string": b"",
                "headers": [(b"content-type", b"application/json"), (b"host", b"test")],
                "client": ("127.0.0.1", 50000),
                "server": ("127.0.0.1", 8000),
            }
            await app(scope, receive, send)
            assert sent[0]["status"] == 200, sent
            assert b"SessionCreated" in b"".join(m.get("body", b"") for m in sent[1:]), sent
            await asyncio.wait_for(recorder.first, 10)
            return offered_when_answered, recorder.offered

    when_answered, offered = asyncio.run(scenario())
    assert when_answered == []
    assert len(offered) == 1


def test_churned_subscriptions_leave_no_audience_or_listener_behind(
    client: Client, server: Any
) -> None:
    """Subscriptions that end every way a client can end one (complete, close, a dropped
    connection, one socket with several subscriptions) leave nothing behind in the audiences
    or the hub: only the steady subscriber's audience stays."""
    services = server.services
    by_source = """subscription S($dataSource: String) {
      sessionEvents(dataSource: $dataSource) { cursor sessionKey } }"""
    with Subscription(server.url, EVENTS) as steady:
        assert _settled(client, "session_service_subscriptions", 1) == 1
        assert (len(services.audiences), services.hub.listeners) == (1, 1)
        for _ in range(3):
            churners = [
                Subscription(server.url, by_source, {"dataSource": f"car-{n}"}).__enter__()
                for n in range(4)
            ]
            second = churners[3]
            second.send({"id": "second", "type": "subscribe", "payload": {"query": EVENTS}})
            assert _settled(client, "session_service_subscriptions", 6) == 6
            assert (len(services.audiences), services.hub.listeners) == (5, 5)
            key = client.create(dataSource="car-1")["key"]
            assert steady.next()["sessionEvents"]["session"]["key"] == key
            assert churners[1].next()["sessionEvents"]["sessionKey"] == key
            churners[0].send({"id": churners[0].id, "type": "complete"})
            churners[0].send({"type": "ping"})
            assert churners[0].receive()["type"] == "pong"
            assert churners[1].socket is not None
            churners[1].socket.socket.shutdown(socket.SHUT_RDWR)  # no close frame
            for churner in churners:
                churner.__exit__(None, None, None)
        assert _settled(client, "session_service_subscriptions", 1) == 1
        assert (len(services.audiences), services.hub.listeners) == (1, 1)
    assert _settled(client, "session_service_subscriptions", 0) == 0
    assert (len(services.audiences), services.hub.listeners) == (0, 0)


STARTED = """
subscription Started($after: String) {
  sessionStarted(dataSource: "car-1", after: $after) { cursor session { key } }
}"""


# What the server keeps of a connection: uvicorn's protocol objects, websockets' (its parser
# and buffers), Starlette's WebSocket, and every context that holds one.
SERVER_SIDE = (HttpToolsProtocol, WebSocketsSansIOProtocol, ServerProtocol, WebSocket)


def _server_side() -> list[Any]:
    return [
        thing
        for thing in gc.get_objects()
        if isinstance(thing, SERVER_SIDE)
        or (type(thing) is Context and thing.websocket is not None)
    ]


def test_a_closed_connection_is_freed_without_the_cycle_collector(
    client: Client, server: Any
) -> None:
    """The served app collects cycles rarely (api/app.py): whatever of a closed connection a
    reference cycle holds stays until a full collection, megabytes under churn. With the
    collector off, nothing of connections that subscribed (live, or replaying by `after:`),
    received an event and closed (or dropped) may stay alive, though the audiences they made
    live on for subscribers who joined them later."""
    snapshot = "{ sessionSnapshot { cursor } }"
    before = client.data(snapshot)["sessionSnapshot"]["cursor"]
    replayed = client.create(dataSource="car-1")["key"]
    cursor = client.data(snapshot)["sessionSnapshot"]["cursor"]
    gc.collect()
    gc.disable()
    try:
        clients_own = _server_side()  # the HTTP client's connection
        churners = [Subscription(server.url, EVENTS).__enter__() for _ in range(3)]
        churners += [
            Subscription(server.url, STARTED, {"after": before}).__enter__() for _ in range(3)
        ]
        for churner in churners[3:]:
            assert churner.next()["sessionStarted"]["session"]["key"] == replayed
        kept = {id(thing) for thing in clients_own}
        theirs = [weakref.ref(thing) for thing in _server_side() if id(thing) not in kept]
        assert len(theirs) >= 3 * len(churners)
        with (
            Subscription(server.url, EVENTS) as steady,
            Subscription(server.url, STARTED, {"after": cursor}) as resumed,
        ):
            key = client.create(dataSource="car-1")["key"]
            for churner in churners[:3]:
                assert churner.next()["sessionEvents"]["session"]["key"] == key
            for churner in churners[3:]:
                assert churner.next()["sessionStarted"]["session"]["key"] == key
            for churner in churners[2:4]:
                assert churner.socket is not None
                churner.socket.socket.shutdown(socket.SHUT_RDWR)  # no close frame
            for churner in churners:
                churner.__exit__(None, None, None)
            # Freed as each connection's task ends, a moment after the client sees the close.
            deadline = time.monotonic() + 10
            while (alive := sum(ref() is not None for ref in theirs)) and (
                time.monotonic() < deadline
            ):
                time.sleep(0.05)
            assert alive == 0, f"{alive} objects of closed connections are still alive"
            assert steady.next()["sessionEvents"]["session"]["key"] == key
            assert resumed.next()["sessionStarted"]["session"]["key"] == key
    finally:
        gc.enable()
