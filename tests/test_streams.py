"""Subscriptions over server-sent events and Apollo's multipart HTTP, through real HTTP."""

import hashlib
import json
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.auth import Token
from tests.client import Client
from tests.conftest import LiveServer
from tests.services import Served, service_environment

EVENTS = "subscription ($after: String) { sessionEvents(after: $after) { cursor kind dataSource } }"
SSE = {"accept": "text/event-stream"}
MULTIPART = {"accept": 'multipart/mixed;boundary="graphql";subscriptionSpec="1.0",application/json'}
READER = "reader-token-for-car-1-only"
ADMIN = "admin-token-with-enough-characters"


class EventStream:
    """One server-sent event stream read message by message (comments kept apart)."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.lines = response.iter_lines()
        self.comments: list[str] = []

    def message(self) -> dict[str, Any] | None:
        """The next message with an event (`id`, `event`, `data` parsed), or None at the end."""
        fields: dict[str, Any] = {}
        for line in self.lines:
            if line == "":
                if "event" in fields:
                    if fields.get("data"):
                        fields["data"] = json.loads(fields["data"])
                    return fields
                fields = {}
            elif line.startswith(":"):
                self.comments.append(line[1:].strip())
            else:
                name, _, value = line.partition(":")
                fields[name] = value.removeprefix(" ")
        return None

    def next(self) -> dict[str, Any]:
        message = self.message()
        assert message is not None and message["event"] == "next", message
        return message


@contextmanager
def sse(
    url: str,
    variables: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
    query: str = EVENTS,
    method: str = "POST",
    cookies: dict[str, str] | None = None,
) -> Iterator[EventStream]:
    body = {"query": query, "variables": variables or {}}
    options: dict[str, Any] = (
        {"json": body}
        if method == "POST"
        else {"params": {"query": query, "variables": json.dumps(variables or {})}}
    )
    with (
        httpx.Client(base_url=url, timeout=10, cookies=cookies) as http,
        http.stream(method, "/graphql", headers={**SSE, **(headers or {})}, **options) as response,
    ):
        yield EventStream(response)


def snapshot(client: Client) -> str:
    return str(client.data("{ sessionSnapshot { cursor } }")["sessionSnapshot"]["cursor"])


def test_sse_events_carry_their_cursor_and_last_event_id_resumes_without_gap_or_repeat(
    client: Client, server: LiveServer
) -> None:
    start = snapshot(client)
    created = [client.create(dataSource="car-1")["key"] for _ in range(3)]
    with sse(server.url, {"after": start}) as stream:
        assert stream.response.status_code == 200
        assert stream.response.headers["content-type"].startswith("text/event-stream")
        first = [stream.next() for _ in range(2)]
        assert client.metrics()["session_service_subscriptions"] == 1
    assert [m["id"] for m in first] == [m["data"]["data"]["sessionEvents"]["cursor"] for m in first]
    client.create(dataSource="car-1")
    # Last-Event-ID wins over the variables' after: as EventSource sends it on reconnecting.
    with sse(server.url, {"after": start}, {"last-event-id": first[-1]["id"]}) as stream:
        rest = [stream.next() for _ in range(2)]
        client.create(dataSource="car-2")
        live = stream.next()
    cursors = [int(m["id"]) for m in first + rest + [live]]
    assert cursors == list(range(int(start) + 1, int(start) + 6))
    assert len(created) == 3


def test_sse_by_get_and_a_query_answered_as_one_next_then_complete(
    client: Client, server: LiveServer
) -> None:
    client.create(dataSource="car-1")
    query = "{ dataSources { name } }"
    for method in ("POST", "GET"):
        with sse(server.url, query=query, method=method) as stream:
            answer = stream.next()
            assert answer["data"] == {"data": {"dataSources": [{"name": "car-1"}]}}
            assert "id" not in answer
            assert stream.message() == {"event": "complete", "data": ""}
    with sse(server.url, {"after": "0"}, method="GET") as stream:
        assert stream.next()["id"] == "1"
    mutation = 'mutation { endSession(input: {sessionKey: "x"}) { __typename } }'
    with sse(server.url, query=mutation, method="GET") as stream:
        assert stream.response.status_code == 405


def test_sse_get_with_free_text_is_refused_in_production_and_a_persisted_id_is_served(
    make_server: Any,
) -> None:
    server = make_server(profile="production")
    with sse(server.url, {"after": "0"}, method="GET") as stream:
        assert stream.response.status_code == 400
        stream.response.read()
        code = stream.response.json()["errors"][0]["extensions"]["code"]
        assert code == "PERSISTED_QUERY_REQUIRED"
    # An EventSource names a persisted document instead: registered once (here over SSE too).
    digest = hashlib.sha256(EVENTS.encode()).hexdigest()
    persisted = {"persistedQuery": {"version": 1, "sha256Hash": digest}}
    with Client(server.url) as client:
        client.create(dataSource="car-1")
    with httpx.Client(base_url=server.url, timeout=10) as http:
        body = {"query": EVENTS, "variables": {"after": "0"}, "extensions": persisted}
        with http.stream("POST", "/graphql", headers=SSE, json=body) as response:
            assert EventStream(response).next()["id"] == "1"
        params = {"documentId": f"sha256:{digest}", "variables": json.dumps({"after": "0"})}
        with http.stream("GET", "/graphql", headers=SSE, params=params) as response:
            assert response.status_code == 200
            assert EventStream(response).next()["id"] == "1"


def test_sse_reports_an_expired_cursor_as_an_error_then_complete(make_server: Any) -> None:
    server = make_server(event_retention_seconds=1, cleanup_interval_seconds=0.2)
    with Client(server.url) as client:
        client.create(dataSource="car-1")
        deadline = time.monotonic() + 15
        while True:
            with sse(server.url, headers={"last-event-id": "0"}) as stream:
                message = stream.next()
                if "errors" in message["data"]:
                    error = message["data"]["errors"][0]
                    assert error["extensions"]["code"] == "CURSOR_EXPIRED", message
                    assert stream.message() == {"event": "complete", "data": ""}
                    break
            assert time.monotonic() < deadline, "the event log was not pruned in 15 s"
            time.sleep(0.2)
        with sse(server.url, headers={"last-event-id": "not-a-cursor"}) as stream:
            error = stream.next()["data"]["errors"][0]
            assert error["extensions"]["code"] == "VALIDATION"
            assert "Last-Event-ID" in error["message"]


@pytest.fixture
def guarded(make_server: Any) -> LiveServer:
    tokens = (
        Token.parse({"token": READER, "role": "read", "dataSources": ["car-1"]}, "reader"),
        Token.parse({"token": ADMIN, "role": "admin"}, "admin"),
    )
    return make_server(tokens=tokens)  # type: ignore[no-any-return]


def test_sse_keeps_scopes_and_the_stream_cookie_carries_them_for_event_source(
    guarded: LiveServer,
) -> None:
    url = guarded.url
    with Client(url, headers={"authorization": f"Bearer {ADMIN}"}) as admin:
        start = snapshot(admin)
        for source in ("car-2", "car-1", "car-2", "car-1"):
            admin.create(dataSource=source)
    with sse(url, {"after": start}) as stream:
        assert stream.response.status_code == 401
    reader = {"authorization": f"Bearer {READER}"}
    with sse(url, {"after": start}, reader) as stream:
        assert [stream.next()["data"]["data"]["sessionEvents"]["dataSource"] for _ in "12"] == [
            "car-1",
            "car-1",
        ]
    forbidden = 'subscription { sessionStarted(dataSource: "car-2") { cursor } }'
    with sse(url, query=forbidden, headers=reader) as stream:
        assert stream.next()["data"]["errors"][0]["extensions"]["code"] == "FORBIDDEN"

    refused = httpx.post(f"{url}/graphql/stream-cookie")
    assert refused.status_code == 401
    issued = httpx.post(f"{url}/graphql/stream-cookie", headers=reader)
    assert issued.status_code == 204
    cookie = issued.cookies["session_service_stream"]
    set_cookie = issued.headers["set-cookie"].lower()
    assert "httponly" in set_cookie and "samesite=strict" in set_cookie
    assert READER not in set_cookie
    cookies = {"session_service_stream": cookie}
    with sse(url, {"after": start}, method="GET", cookies=cookies) as stream:
        sources = [stream.next()["data"]["data"]["sessionEvents"]["dataSource"] for _ in "12"]
        assert sources == ["car-1", "car-1"]
    # Only an EventSource's GET takes the cookie; a tampered one proves nothing.
    with sse(url, {"after": start}, cookies=cookies) as stream:
        assert stream.response.status_code == 401
    tampered = {"session_service_stream": cookie[:-2]}
    with sse(url, {"after": start}, method="GET", cookies=tampered) as stream:
        assert stream.response.status_code == 401


def test_sse_streams_per_caller_are_bounded_and_heartbeats_flow(make_server: Any) -> None:
    server = make_server(max_streams_per_caller=1, stream_heartbeat_seconds=0.2)
    with sse(server.url) as stream:
        with sse(server.url) as second:
            assert second.response.status_code == 429
            second.response.read()
            assert second.response.json()["errors"][0]["extensions"]["code"] == "RATE_LIMITED"
        deadline = time.monotonic() + 5
        for line in stream.lines:
            if line == ":":
                break
            assert time.monotonic() < deadline
    with sse(server.url) as again:  # the first stream's place is free again
        assert again.response.status_code == 200


def test_a_lagging_sse_stream_is_closed_and_resumes_by_last_event_id(make_server: Any) -> None:
    # Two instances on one database with an in-process bus: the listener's instance learns of
    # the other's commits by reading the log, a batch at a time, beyond its queue of 5.
    listener = make_server(subscriber_queue_size=5, event_poll_interval=0.5)
    writer = make_server()
    with Client(listener.url) as client, Client(writer.url) as other:
        start = snapshot(client)
        dropped = client.metrics()["session_service_subscribers_dropped_total"]
        with sse(listener.url, {"after": start}) as stream:
            other.create(dataSource="car-1")
            received = [stream.next()["id"]]
            for _ in range(20):
                other.create(dataSource="car-1")
            while (message := stream.message()) is not None:
                assert message["event"] == "next", message  # ends without complete
                received.append(message["id"])
            assert any("resume after your last cursor" in c for c in stream.comments)
        assert client.metrics()["session_service_subscribers_dropped_total"] == dropped + 1
        # Resumed once the listener's hub has read every commit: the stream then replays the
        # rest from the log. Resumed earlier, a later batch beyond the queue would drop it as
        # well (a CI run under load resumed before the hub's next read of the log).
        deadline = time.monotonic() + 10
        while listener.services.hub.position < int(start) + 21:
            assert time.monotonic() < deadline, "the listener's hub did not read the commits"
            time.sleep(0.05)
        with sse(listener.url, headers={"last-event-id": received[-1]}) as stream:
            while len(received) < 21:
                received.append(stream.next()["id"])
    assert received == [str(cursor) for cursor in range(int(start) + 1, int(start) + 22)]


def test_multipart_subscription_as_apollo_reads_it(client: Client, server: LiveServer) -> None:
    start = snapshot(client)
    client.create(dataSource="car-1")
    body = {"query": EVENTS, "variables": {"after": start}}
    with httpx.stream("POST", f"{server.url}/graphql", json=body, headers=MULTIPART) as response:
        assert response.headers["content-type"].startswith("multipart/mixed")
        assert 'boundary="graphql"' in response.headers["content-type"]
        text = ""
        for chunk in response.iter_text():
            text += chunk
            if text.count("--graphql") >= 2:
                break
    part = text.split("\r\n--graphql")[1]
    headers, _, payload = part.partition("\r\n\r\n")
    assert "content-type: application/json" in headers
    event = json.loads(payload)["payload"]["data"]["sessionEvents"]
    assert event["cursor"] == str(int(start) + 1)
    # A query that asks for multipart (as Apollo's HttpLink may) gets plain JSON.
    answer = httpx.post(
        f"{server.url}/graphql", json={"query": "{ dataSources { name } }"}, headers=MULTIPART
    )
    assert answer.json() == {"data": {"dataSources": [{"name": "car-1"}]}}


def test_sigterm_ends_sse_streams_at_once_without_complete(tmp_path: Path) -> None:
    env = service_environment(
        f"sqlite+aiosqlite:///{tmp_path / 'stop.db'}",
        SESSION_SERVICE_SHUTDOWN_TIMEOUT_SECONDS="10",
    )
    with Served(env) as served, Client(served.url) as client:
        start = snapshot(client)
        client.create(dataSource="car-1")
        with sse(served.url, {"after": start}) as stream:
            stream.next()
            served.process.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            assert stream.message() is None  # the end, with no complete
            ended = time.monotonic() - signalled
            assert any("restarting" in comment for comment in stream.comments)
        served.process.wait(timeout=15)
        exited = time.monotonic() - signalled
    # Well within the 10 s that uvicorn gives responses in flight.
    assert ended < 3 and exited < 5, (ended, exited)


def test_a_subscription_from_a_client_that_lists_event_streams_after_json_is_streamed(
    client: Client, server: LiveServer
) -> None:
    """urql sends this Accept with every request: queries are answered as JSON, a subscription
    as server-sent events."""
    urql = {"accept": "application/graphql-response+json, application/graphql+json, "
            "application/json, text/event-stream, multipart/mixed"}  # fmt: skip
    answer = httpx.post(f"{server.url}/graphql", json={"query": "{ __typename }"}, headers=urql)
    assert answer.headers["content-type"] == "application/graphql-response+json"
    start = snapshot(client)
    client.create(dataSource="car-1")
    with sse(server.url, {"after": start}, headers=urql) as stream:
        assert stream.response.headers["content-type"].startswith("text/event-stream")
        assert stream.next()["id"] == str(int(start) + 1)


def test_a_stream_holds_no_admission_slot_and_outlives_the_request_bound(
    make_server: Any,
) -> None:
    """With one request in flight allowed and a 1 s bound, an open stream neither blocks other
    requests nor loses its database reads after a second (rendering reads each session)."""
    server = make_server(max_requests_in_flight=1, request_timeout_seconds=1)
    query = "subscription { sessionEvents { cursor session { key status } } }"
    with Client(server.url) as client, sse(server.url, query=query) as stream:
        for _ in range(3):
            assert client.data("{ __typename }") == {"__typename": "Query"}
        time.sleep(1.5)
        key = client.create(dataSource="car-1")["key"]
        event = stream.next()["data"]
        assert event == {"data": {"sessionEvents": {"cursor": event["data"]["sessionEvents"][
            "cursor"], "session": {"key": key, "status": "LIVE"}}}}  # fmt: skip
