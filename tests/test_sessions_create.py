"""createSession: defaults, validation, associates and idempotency."""

import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from tests.client import Client
from tests.conftest import THROUGH_PGBOUNCER

pytestmark = THROUGH_PGBOUNCER

COUNTS = "{ sessions { totalCount } dataSources { name totalSessions } }"

EVENTS = """
subscription Events($after: String) {
  sessionEvents(after: $after) { kind sessionKey }
}"""


def instant(text: str) -> datetime:
    """A DateTime from the API; it must carry its offset."""
    parsed = datetime.fromisoformat(text)
    assert parsed.tzinfo is not None, f"{text!r} has no UTC offset"
    return parsed


def logged_events(client: Client) -> list[tuple[str, str]]:
    """(kind, sessionKey) of every event in the log so far, read by replaying from the start."""
    with client.subscribe(EVENTS, {"after": "0"}) as subscription:
        # A live event after the replay marks its end, so no waiting for silence.
        marker = client.create(dataSource="marker")["key"]
        events: list[tuple[str, str]] = []
        while (event := subscription.next()["sessionEvents"])["sessionKey"] != marker:
            events.append((event["kind"], event["sessionKey"]))
        return events


def test_create_session_applies_the_documented_defaults(client: Client) -> None:
    session = client.create(dataSource="car-1")
    assert session["type"] == "Session"
    assert session["version"] == 1
    assert session["utcOffsetSeconds"] == 0
    assert session["identifier"] == ""
    assert session["status"] == "LIVE"
    assert session["isComplete"] is False
    assert session["revision"] == 1
    assert session["endedAt"] is None
    assert session["details"] == []
    assert session["streams"] == []
    assert session["associateSessionKeys"] == []
    assert len(session["key"]) == 36


def test_create_session_allocates_a_distinct_uuid_key_each_time(client: Client) -> None:
    keys = [client.create()["key"] for _ in range(3)]
    assert len(set(keys)) == 3
    for key in keys:
        assert str(uuid.UUID(key)) == key


def test_create_session_without_created_at_uses_server_time(client: Client) -> None:
    before = datetime.now(UTC)
    session = client.create()
    after = datetime.now(UTC)
    assert before <= instant(session["createdAt"]) <= after
    assert before <= instant(session["updatedAt"]) <= after


def test_create_session_keeps_a_given_created_at(client: Client) -> None:
    expected = datetime(2024, 5, 1, 10, tzinfo=UTC)
    for created_at in (
        "2024-05-01T10:00:00+00:00",
        "2024-05-01T10:00:00Z",
        "2024-05-01T12:00:00+02:00",
    ):
        before = datetime.now(UTC)
        session = client.create(createdAt=created_at)
        assert instant(session["createdAt"]) == expected, created_at
        assert before <= instant(session["updatedAt"])
        fetched = client.session(session["key"])
        assert fetched is not None
        assert instant(fetched["createdAt"]) == expected


def test_create_session_reads_a_created_at_without_offset_as_utc(client: Client) -> None:
    session = client.create(createdAt="2024-05-01T10:00:00")
    fetched = client.session(session["key"])
    assert fetched is not None
    expected = datetime(2024, 5, 1, 10, tzinfo=UTC)
    assert instant(fetched["createdAt"]) == expected
    # The mutation's answer must say the same as every later read.
    assert instant(session["createdAt"]) == expected


def test_create_session_round_trips_unicode_details(client: Client) -> None:
    session = client.create(details=[{"name": "temp", "value": "22°C"}], streams=["ä", "b"])
    fetched = client.session(session["key"])
    assert fetched is not None
    assert fetched["details"] == [{"name": "temp", "value": "22°C"}]
    assert fetched["streams"] == ["ä", "b"]


def test_create_session_stores_every_given_field(client: Client) -> None:
    session = client.create(
        dataSource="rig:7/bench_2.a",
        type="Run",
        version=3,
        utcOffsetSeconds=-3600,
        identifier="FP1 lap 12",
        details=[
            {"name": "track", "value": "Monza"},
            {"name": "driver", "value": "A. Driver"},
            {"name": "empty", "value": ""},
        ],
    )
    fetched = client.session(session["key"])
    assert fetched == session
    assert fetched["dataSource"] == "rig:7/bench_2.a"
    assert fetched["type"] == "Run"
    assert fetched["version"] == 3
    assert fetched["utcOffsetSeconds"] == -3600
    assert fetched["identifier"] == "FP1 lap 12"
    # Details come back ordered by name, whatever order they were given in.
    assert fetched["details"] == [
        {"name": "driver", "value": "A. Driver"},
        {"name": "empty", "value": ""},
        {"name": "track", "value": "Monza"},
    ]


def test_create_session_keeps_streams_and_associates_in_order_without_repeats(
    client: Client,
) -> None:
    first, second, third = (client.create()["key"] for _ in range(3))
    session = client.create(
        streams=["speed", "rpm", "speed", "gear", "rpm"],
        associateSessionKeys=[third, first, third, second, first],
    )
    assert session["streams"] == ["speed", "rpm", "gear"]
    assert session["associateSessionKeys"] == [third, first, second]
    fetched = client.session(session["key"])
    assert fetched is not None
    assert fetched["streams"] == ["speed", "rpm", "gear"]
    assert fetched["associateSessionKeys"] == [third, first, second]
    query = """
    query Q($key: ID!) {
      session(key: $key) { associates { key parents { key } } }
    }"""
    associates = client.data(query, {"key": session["key"]})["session"]["associates"]
    assert [child["key"] for child in associates] == [third, first, second]
    assert all(child["parents"] == [{"key": session["key"]}] for child in associates)


def test_create_session_with_an_unknown_associate_names_it_and_creates_nothing(
    client: Client,
) -> None:
    existing = client.create()["key"]
    counts = client.data(COUNTS)
    missing = str(uuid.uuid4())
    result = client.create_result(
        dataSource="car-2", associateSessionKeys=[existing, missing], streams=["speed"]
    )
    assert result["__typename"] == "SessionNotFoundError"
    assert result["code"] == "NOT_FOUND"
    assert result["sessionKey"] == missing
    assert missing in result["message"]
    assert client.data(COUNTS) == counts
    assert counts["sessions"]["totalCount"] == 1
    assert logged_events(client) == [("STARTED", existing)]


def test_create_session_retry_with_the_same_idempotency_key_returns_the_first_session(
    client: Client,
) -> None:
    fields: dict[str, Any] = {
        "dataSource": "car-1",
        "identifier": "run 1",
        "details": [{"name": "track", "value": "Monza"}],
        "streams": ["speed"],
        "idempotencyKey": "request-1",
    }
    first = client.create(**fields)
    retried = client.create(**fields)
    assert retried["key"] == first["key"]
    assert retried["createdAt"] == first["createdAt"]
    assert retried["revision"] == first["revision"]
    assert client.data(COUNTS)["sessions"]["totalCount"] == 1
    assert logged_events(client) == [("STARTED", first["key"])]


def test_concurrent_retries_with_one_idempotency_key_create_one_session(client: Client) -> None:
    def create(_: int) -> str:
        with Client(client.url) as own:
            return str(own.create(identifier="run 1", idempotencyKey="request-1")["key"])

    with ThreadPoolExecutor(max_workers=6) as pool:
        keys = set(pool.map(create, range(6)))
    assert len(keys) == 1
    assert client.data(COUNTS)["sessions"]["totalCount"] == 1
    assert logged_events(client) == [("STARTED", keys.pop())]


def test_create_session_retry_spelling_out_the_defaults_is_the_same_input(
    client: Client,
) -> None:
    first = client.create(idempotencyKey="request-1")
    retried = client.create(
        idempotencyKey="request-1", type="Session", version=1, identifier="", details=[]
    )
    assert retried["key"] == first["key"]
    assert client.data(COUNTS)["sessions"]["totalCount"] == 1


def test_create_session_with_different_idempotency_keys_creates_two_sessions(
    client: Client,
) -> None:
    first = client.create(idempotencyKey="request-1")
    second = client.create(idempotencyKey="request-2")
    assert first["key"] != second["key"]
    assert client.data(COUNTS)["sessions"]["totalCount"] == 2


def test_create_session_same_idempotency_key_with_different_input_is_a_mismatch(
    client: Client,
) -> None:
    fields: dict[str, Any] = {
        "dataSource": "car-1",
        "identifier": "run 1",
        "details": [{"name": "track", "value": "Monza"}],
        "streams": ["speed"],
        "idempotencyKey": "request-1",
    }
    first = client.create(**fields)
    counts = client.data(COUNTS)
    changes: list[dict[str, Any]] = [
        {"identifier": "run 2"},
        {"dataSource": "car-2"},
        {"details": [{"name": "track", "value": "Spa"}]},
        {"streams": ["rpm"]},
        {"createdAt": "2024-05-01T10:00:00Z"},
    ]
    for change in changes:
        result = client.create_result(**{**fields, **change})
        assert result["__typename"] == "IdempotencyMismatchError", (change, result)
        assert result["code"] == "IDEMPOTENCY_MISMATCH"
    assert client.data(COUNTS) == counts
    # The first request's own retry still answers with its session.
    assert client.create(**fields)["key"] == first["key"]
    assert logged_events(client) == [("STARTED", first["key"])]
