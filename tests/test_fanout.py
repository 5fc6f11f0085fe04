"""The fan-out (api/fanout.py): audiences shared across cursors but never across scopes, the
socket path against the general one, and the metrics under churn."""

import json
import time
from typing import Any

import httpx

from api.auth import Token
from tests.client import Client, Subscription

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
