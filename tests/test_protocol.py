"""graphql-transport-ws conformance over real sockets: messages, close codes, limits."""

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect
from websockets.typing import Subprotocol

from api.auth import Token
from tests.client import Client

PROTOCOL = "graphql-transport-ws"
EVENTS = "subscription { sessionEvents { kind sessionKey } }"
CREATE = """
mutation { createSession(input: {dataSource: "car-1"}) {
  __typename ... on SessionCreated { session { key dataSource } }
} }"""
KIB = 1024

READER = "protocol-reader-token-0123456789"
OTHER_READER = "protocol-other-token-0123456789"
TOKENS = (
    Token.parse({"token": READER, "role": "read"}, "[0]"),
    Token.parse({"token": OTHER_READER, "role": "read"}, "[1]"),
)


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """Only SQLite: the protocol does not depend on the database."""
    return f"sqlite+aiosqlite:///{tmp_path / 's.db'}"


def open_socket(server: Any, subprotocol: str | None = PROTOCOL) -> ClientConnection:
    url = server.url.replace("http://", "ws://") + "/graphql"
    subprotocols = [Subprotocol(subprotocol)] if subprotocol else None
    return connect(url, subprotocols=subprotocols, open_timeout=10, max_size=None)


def send(ws: ClientConnection, message: Any) -> None:
    ws.send(json.dumps(message))


def receive(ws: ClientConnection, timeout: float = 10) -> dict[str, Any]:
    message = json.loads(ws.recv(timeout=timeout))
    assert isinstance(message, dict), message
    return message


def acknowledge(ws: ClientConnection, payload: dict[str, Any] | None = None) -> None:
    init: dict[str, Any] = {"type": "connection_init"}
    if payload is not None:
        init["payload"] = payload
    send(ws, init)
    assert receive(ws)["type"] == "connection_ack"


def subscribe(ws: ClientConnection, id: str, query: str, **variables: Any) -> None:
    payload = {"query": query, "variables": variables}
    send(ws, {"id": id, "type": "subscribe", "payload": payload})


def ping_pong(ws: ClientConnection) -> list[dict[str, Any]]:
    """Round-trip a ping; returns the messages that arrived before the pong."""
    send(ws, {"type": "ping"})
    before: list[dict[str, Any]] = []
    while (message := receive(ws))["type"] != "pong":
        before.append(message)
    return before


def close_code(ws: ClientConnection, timeout: float = 10) -> int:
    """The code of the close frame the server sends next (messages before it are skipped)."""
    try:
        while True:
            ws.recv(timeout=timeout)
    except ConnectionClosed as closed:
        assert closed.rcvd is not None, "the server closed without a close frame"
        return closed.rcvd.code


def error_code(message: dict[str, Any]) -> str | None:
    assert message["type"] == "error", message
    return message["payload"][0].get("extensions", {}).get("code")


# -- connection initialisation -----------------------------------------------------------------


def test_connection_init_is_answered_with_connection_ack(server: Any) -> None:
    with open_socket(server) as ws:
        assert ws.subprotocol == PROTOCOL
        send(ws, {"type": "connection_init", "payload": {}})
        assert receive(ws)["type"] == "connection_ack"


def test_a_second_connection_init_closes_with_4429(server: Any) -> None:
    with open_socket(server) as ws:
        acknowledge(ws)
        send(ws, {"type": "connection_init"})
        assert close_code(ws) == 4429


def test_a_connection_init_payload_that_is_not_an_object_closes_with_4400(server: Any) -> None:
    with open_socket(server) as ws:
        send(ws, {"type": "connection_init", "payload": "Bearer x"})
        assert close_code(ws) == 4400


def test_subscribe_before_connection_ack_closes_with_4401(server: Any) -> None:
    with open_socket(server) as ws:
        subscribe(ws, "1", "{ __typename }")
        assert close_code(ws) == 4401


def test_connection_init_with_a_bad_token_closes_with_4403(make_server: Any) -> None:
    secured = make_server(tokens=TOKENS)
    for payload in ({}, {"authorization": "Bearer not-a-token"}, {"authorization": READER}):
        with open_socket(secured) as ws:
            send(ws, {"type": "connection_init", "payload": payload})
            assert close_code(ws) == 4403, payload
    with open_socket(secured) as ws:
        acknowledge(ws, {"authorization": f"Bearer {READER}"})
        subscribe(ws, "1", "{ __typename }")
        assert receive(ws)["type"] == "next"


def test_no_connection_init_within_the_timeout_closes_with_4408(make_server: Any) -> None:
    quick = make_server(connection_init_timeout_seconds=0.5)
    with open_socket(quick) as ws:
        assert close_code(ws, timeout=5) == 4408


def test_connection_init_within_the_timeout_keeps_the_socket_open(make_server: Any) -> None:
    quick = make_server(connection_init_timeout_seconds=0.5)
    with open_socket(quick) as ws:
        acknowledge(ws)
        with pytest.raises(TimeoutError):  # outlive the timeout: nothing arrives, no close
            ws.recv(timeout=1.0)
        assert ping_pong(ws) == []


def test_the_legacy_graphql_ws_subprotocol_is_refused_with_4406(server: Any) -> None:
    with open_socket(server, subprotocol="graphql-ws") as ws:
        assert ws.subprotocol is None
        assert close_code(ws) == 4406


def test_a_socket_without_a_subprotocol_is_refused_with_4406(server: Any) -> None:
    with open_socket(server, subprotocol=None) as ws:
        assert close_code(ws) == 4406


# -- ping, pong, complete ----------------------------------------------------------------------


def test_ping_before_ack_is_answered_with_pong(server: Any) -> None:
    with open_socket(server) as ws:
        send(ws, {"type": "ping"})
        pong = receive(ws)
        assert pong["type"] == "pong"
        assert pong.get("payload") in (None, {})
        acknowledge(ws)


def test_ping_after_ack_is_answered_with_pong(server: Any) -> None:
    with open_socket(server) as ws:
        acknowledge(ws)
        send(ws, {"type": "ping", "payload": {"sent": "now"}})
        assert receive(ws)["type"] == "pong"


def test_an_unsolicited_pong_is_ignored(server: Any) -> None:
    with open_socket(server) as ws:
        acknowledge(ws)
        send(ws, {"type": "pong"})
        send(ws, {"type": "pong", "payload": {"beat": 1}})
        assert ping_pong(ws) == []


def test_complete_for_an_unknown_id_is_ignored(server: Any) -> None:
    with open_socket(server) as ws:
        acknowledge(ws)
        send(ws, {"id": "never-subscribed", "type": "complete"})
        assert ping_pong(ws) == []
        subscribe(ws, "1", "{ __typename }")
        assert receive(ws) == {
            "id": "1",
            "type": "next",
            "payload": {"data": {"__typename": "Query"}},
        }
        assert receive(ws) == {"id": "1", "type": "complete"}


def test_a_duplicate_subscription_id_closes_with_4409(server: Any) -> None:
    with open_socket(server) as ws:
        acknowledge(ws)
        subscribe(ws, "same", EVENTS)
        subscribe(ws, "same", EVENTS)
        assert close_code(ws) == 4409


def test_a_subscription_id_may_be_reused_after_the_client_completes_it(server: Any) -> None:
    with open_socket(server) as ws, Client(server.url) as client:
        acknowledge(ws)
        subscribe(ws, "reused", EVENTS)
        send(ws, {"id": "reused", "type": "complete"})
        subscribe(ws, "reused", EVENTS)
        assert ping_pong(ws) == []
        key = client.create()["key"]
        event = receive(ws)
        assert event["id"] == "reused"
        assert event["payload"]["data"]["sessionEvents"] == {"kind": "STARTED", "sessionKey": key}


def test_an_id_may_be_reused_after_the_server_completes_it(server: Any) -> None:
    with open_socket(server) as ws:
        acknowledge(ws)
        for _ in range(2):
            subscribe(ws, "q", "{ __typename }")
            assert receive(ws)["type"] == "next"
            assert receive(ws) == {"id": "q", "type": "complete"}


# -- operations --------------------------------------------------------------------------------


def test_a_query_over_the_socket_gets_next_then_complete(server: Any) -> None:
    with Client(server.url) as client:
        key = client.create()["key"]
    with open_socket(server) as ws:
        acknowledge(ws)
        subscribe(ws, "q", "query Live { currentSessions { key } }")
        assert receive(ws) == {
            "id": "q",
            "type": "next",
            "payload": {"data": {"currentSessions": [{"key": key}]}},
        }
        assert receive(ws) == {"id": "q", "type": "complete"}


def test_a_mutation_over_the_socket_gets_next_then_complete(server: Any) -> None:
    with open_socket(server) as ws:
        acknowledge(ws)
        subscribe(ws, "m", CREATE)
        result = receive(ws)
        assert result["id"] == "m" and result["type"] == "next", result
        created = result["payload"]["data"]["createSession"]
        assert created["__typename"] == "SessionCreated"
        assert receive(ws) == {"id": "m", "type": "complete"}
    with Client(server.url) as client:
        assert client.session(created["session"]["key"]) is not None


@pytest.mark.parametrize(
    "query",
    [
        pytest.param("subscription { noSuchField }", id="unknown-field"),
        pytest.param("subscription { sessionStarted { cursor } }", id="missing-argument"),
        pytest.param("subscription { sessionEvents }", id="missing-selection"),
    ],
)
def test_an_invalid_document_gets_an_error_and_no_complete(server: Any, query: str) -> None:
    with open_socket(server) as ws:
        acknowledge(ws)
        subscribe(ws, "bad", query)
        error = receive(ws)
        assert error["id"] == "bad" and error["type"] == "error", error
        assert isinstance(error["payload"], list) and error["payload"][0]["message"]
        assert error_code(error) == "VALIDATION"
        with pytest.raises(TimeoutError):  # a complete would follow promptly, if at all
            ws.recv(timeout=0.3)
        assert ping_pong(ws) == []
        subscribe(ws, "bad", "{ __typename }")  # the id was released with the error
        assert receive(ws)["type"] == "next"


# -- malformed messages ------------------------------------------------------------------------


def test_text_that_is_not_json_closes_with_4400(server: Any) -> None:
    with open_socket(server) as ws:
        acknowledge(ws)
        ws.send("{not json")
        assert close_code(ws) == 4400


def test_a_binary_frame_closes_with_4400(server: Any) -> None:
    with open_socket(server) as ws:
        acknowledge(ws)
        ws.send(json.dumps({"type": "ping"}).encode())
        assert close_code(ws) == 4400


@pytest.mark.parametrize(
    "message",
    [
        pytest.param([{"type": "ping"}], id="json-array"),
        pytest.param(None, id="json-null"),
        pytest.param(42, id="json-number"),
        pytest.param("ping", id="json-string"),
        pytest.param({"id": "1"}, id="no-type"),
        pytest.param({"type": 1}, id="type-not-a-string"),
        pytest.param({"type": "bogus"}, id="unknown-type"),
        pytest.param({"type": "start", "id": "1", "payload": {"query": "{ a }"}}, id="legacy-type"),
        pytest.param({"type": "next", "id": "1", "payload": {}}, id="server-type-next"),
        pytest.param({"type": "connection_ack"}, id="server-type-ack"),
        pytest.param({"type": "complete"}, id="complete-without-id"),
        # Found by tests/test_fuzz.py: a TypeError (unhashable) that dropped the connection.
        pytest.param({"type": "complete", "id": ["1"]}, id="complete-id-list"),
        pytest.param({"type": "complete", "id": {"a": 1}}, id="complete-id-object"),
        pytest.param({"type": "complete", "id": 1}, id="complete-id-int"),
        pytest.param({"type": "subscribe", "id": "1"}, id="subscribe-without-payload"),
        pytest.param({"type": "subscribe", "id": "1", "payload": None}, id="payload-null"),
        pytest.param({"type": "subscribe", "id": "1", "payload": "{ a }"}, id="payload-string"),
        pytest.param({"type": "subscribe", "id": "1", "payload": []}, id="payload-array"),
        pytest.param({"type": "subscribe", "payload": {"query": "{ a }"}}, id="no-id"),
        pytest.param({"type": "subscribe", "id": 1, "payload": {"query": "{ a }"}}, id="id-int"),
        pytest.param(
            {"type": "subscribe", "id": None, "payload": {"query": "{ a }"}}, id="id-null"
        ),
        pytest.param(
            {"type": "subscribe", "id": ["1"], "payload": {"query": "{ a }"}}, id="id-list"
        ),
        pytest.param({"type": "subscribe", "id": "1", "payload": {}}, id="no-query"),
        pytest.param({"type": "subscribe", "id": "1", "payload": {"query": 1}}, id="query-int"),
        pytest.param(
            {"type": "subscribe", "id": "1", "payload": {"query": "{ a }", "variables": [1]}},
            id="variables-array",
        ),
        pytest.param(
            {"type": "subscribe", "id": "1", "payload": {"query": "{ a }", "operationName": 5}},
            id="operation-name-int",
        ),
    ],
)
def test_a_malformed_message_closes_with_4400(server: Any, message: Any) -> None:
    with open_socket(server) as ws:
        acknowledge(ws)
        send(ws, message)
        assert close_code(ws) == 4400


def test_a_malformed_message_leaves_the_server_serving_other_sockets(server: Any) -> None:
    with open_socket(server) as healthy, open_socket(server) as hostile:
        acknowledge(healthy)
        acknowledge(hostile)
        send(hostile, {"type": "subscribe", "id": 7, "payload": "x"})
        assert close_code(hostile) == 4400
        subscribe(healthy, "1", "{ __typename }")
        assert receive(healthy)["type"] == "next"


# -- sizes and limits --------------------------------------------------------------------------


def test_a_message_larger_than_64_kib_closes_with_1009(server: Any) -> None:
    with open_socket(server) as ws:
        acknowledge(ws)
        send(ws, {"type": "ping", "payload": {"pad": "x" * (64 * KIB)}})
        assert close_code(ws) == 1009


def test_a_message_of_exactly_64_kib_is_served(server: Any) -> None:
    with open_socket(server) as ws:
        acknowledge(ws)
        payload = {"query": "{ __typename }", "pad": ""}
        message = {"id": "1", "type": "subscribe", "payload": payload}
        payload["pad"] = "x" * (64 * KIB - len(json.dumps(message)))
        assert len(json.dumps(message)) == 64 * KIB
        send(ws, message)
        assert receive(ws)["type"] == "next"


def test_a_subscription_beyond_the_per_connection_maximum_gets_an_error(
    make_server: Any,
) -> None:
    limited = make_server(max_subscriptions_per_connection=2)
    with open_socket(limited) as ws, Client(limited.url) as client:
        acknowledge(ws)
        subscribe(ws, "a", EVENTS)
        subscribe(ws, "b", EVENTS)
        subscribe(ws, "c", EVENTS)
        refused = receive(ws)
        assert refused["id"] == "c" and refused["type"] == "error", refused
        assert ping_pong(ws) == []  # the socket stays open
        send(ws, {"id": "a", "type": "complete"})
        subscribe(ws, "c", EVENTS)  # completing one frees its slot
        assert ping_pong(ws) == []
        client.create()
        assert sorted(receive(ws)["id"] for _ in range(2)) == ["b", "c"]


def test_subscribes_beyond_the_rate_limit_get_rate_limited_errors(make_server: Any) -> None:
    limited = make_server(subscribe_rate_per_second=0.001, subscribe_burst=2)
    with open_socket(limited) as ws, Client(limited.url) as client:
        acknowledge(ws)
        subscribe(ws, "1", EVENTS)
        subscribe(ws, "2", EVENTS)
        subscribe(ws, "3", EVENTS)
        refused = receive(ws)
        assert refused["id"] == "3"
        assert error_code(refused) == "RATE_LIMITED"
        client.create()
        assert sorted(receive(ws)["id"] for _ in range(2)) == ["1", "2"]
        # Open mode counts per client address: a new socket does not reset the budget.
        with open_socket(limited) as again:
            acknowledge(again)
            subscribe(again, "1", EVENTS)
            assert error_code(receive(again)) == "RATE_LIMITED"


def test_subscribe_rate_limit_counts_each_token_separately(make_server: Any) -> None:
    limited = make_server(tokens=TOKENS, subscribe_rate_per_second=0.001, subscribe_burst=2)
    with open_socket(limited) as first, open_socket(limited) as second:
        acknowledge(first, {"authorization": f"Bearer {READER}"})
        acknowledge(second, {"authorization": f"Bearer {OTHER_READER}"})
        for operation in ("1", "2"):
            subscribe(first, operation, "{ __typename }")
            assert receive(first)["type"] == "next"
            assert receive(first)["type"] == "complete"
        subscribe(first, "3", "{ __typename }")
        assert error_code(receive(first)) == "RATE_LIMITED"
        subscribe(second, "1", "{ __typename }")
        assert receive(second) == {
            "id": "1",
            "type": "next",
            "payload": {"data": {"__typename": "Query"}},
        }


# -- found by tests/test_fuzz.py ---------------------------------------------------------------


@pytest.mark.parametrize(
    "frame",
    [
        pytest.param("[" * 10_000 + "]" * 10_000, id="nested-10000-deep"),
        pytest.param('{"type": "ping", "payload": %s}' % ("9" * 5_000), id="integer-5000-digits"),
        pytest.param(
            '{"type": "connection_init", "payload": {"a": %s}}' % ("[" * 5_000 + "]" * 5_000),
            id="nested-connection-init",
        ),
    ],
)
def test_a_frame_json_cannot_read_closes_with_4400_not_a_dropped_connection(
    server: Any, frame: str
) -> None:
    with open_socket(server) as ws:
        if "connection_init" not in frame:
            acknowledge(ws)
        ws.send(frame)
        assert close_code(ws) == 4400


def test_an_operation_id_with_a_lone_surrogate_is_answered(server: Any) -> None:
    with open_socket(server) as ws:
        acknowledge(ws)
        ws.send('{"type": "subscribe", "id": "\\ud800", "payload": {"query": "{ __typename }"}}')
        message = receive(ws)
        assert (message["id"], message["type"]) == ("\ud800", "next")


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param({"query": "subscription {"}, id="syntax-error"),
        pytest.param({"query": "{ __typename \ud800 }"}, id="lone-surrogate-in-the-reason"),
        pytest.param({"query": "{ __typename }", "operationName": "Nope"}, id="unknown-operation"),
        pytest.param(
            {"query": "{ __typename }", "operationName": "N" * 500}, id="reason-over-123-bytes"
        ),
    ],
)
def test_a_document_naming_no_operation_closes_with_4400_and_a_reason(
    server: Any, payload: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """These were a bare `complete` with a traceback in the log, an INTERNAL error, or a
    connection dropped without a close frame (a reason with no UTF-8 form or over 123 bytes)."""
    with open_socket(server) as ws:
        acknowledge(ws)
        send(ws, {"id": "1", "type": "subscribe", "payload": payload})
        try:
            while True:
                ws.recv(timeout=10)
        except ConnectionClosed as closed:
            assert closed.rcvd is not None, "closed without a close frame"
            assert closed.rcvd.code == 4400
            assert closed.rcvd.reason and len(closed.rcvd.reason.encode()) <= 123
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_duplicate_id_of_10000_characters_closes_with_4409(server: Any) -> None:
    with open_socket(server) as ws:
        acknowledge(ws)
        subscribe(ws, "x" * 10_000, EVENTS)
        subscribe(ws, "x" * 10_000, EVENTS)
        assert close_code(ws) == 4409
