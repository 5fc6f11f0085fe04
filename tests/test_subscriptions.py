"""Subscriptions over graphql-transport-ws: scoping, update events, replay by cursor, expiry."""

import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from typing import Any

import pytest

from tests.client import Client, Subscription

EVENT_FIELDS = """
    cursor kind sessionKey dataSource occurredAt
    session { key identifier status revision streams associateSessionKeys details { name value } }
"""

STARTED = (
    """
subscription Started($dataSource: String!, $after: String) {
  sessionStarted(dataSource: $dataSource, after: $after) { %s }
}"""
    % EVENT_FIELDS
)

STOPPED = (
    """
subscription Stopped($dataSource: String!, $after: String) {
  sessionStopped(dataSource: $dataSource, after: $after) { %s }
}"""
    % EVENT_FIELDS
)

EVENTS = (
    """
subscription Events(
  $dataSource: String, $sessionKey: ID, $kinds: [SessionEventKind!], $after: String
) {
  sessionEvents(dataSource: $dataSource, sessionKey: $sessionKey, kinds: $kinds, after: $after) {
    %s
  }
}"""
    % EVENT_FIELDS
)

# Each subscription field with the variables it needs, for tests that apply to all three.
EVERY_FIELD = [
    pytest.param(STARTED, {"dataSource": "car-1"}, id="sessionStarted"),
    pytest.param(STOPPED, {"dataSource": "car-1"}, id="sessionStopped"),
    pytest.param(EVENTS, {}, id="sessionEvents"),
]

SNAPSHOT = """
query Snapshot($dataSource: String) {
  sessionSnapshot(dataSource: $dataSource) { cursor sessions { key } }
}"""

DETAILS = "UpdateSessionDetailsInput"
IDENTIFIER = "UpdateSessionIdentifierInput"
ASSOCIATE = "AssociateSessionInput"
STREAMS = "AddSessionStreamsInput"


def started(subscription: Subscription) -> dict[str, Any]:
    return subscription.next()["sessionStarted"]


def stopped(subscription: Subscription) -> dict[str, Any]:
    return subscription.next()["sessionStopped"]


def events(subscription: Subscription, count: int) -> list[dict[str, Any]]:
    return [subscription.next()["sessionEvents"] for _ in range(count)]


def summary(found: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(event["kind"], event["sessionKey"]) for event in found]


def error_code(subscription: Subscription) -> str:
    """The extensions.code of the `error` message that must end this subscription."""
    message = subscription.message()
    assert message["type"] == "error", message
    assert message["id"] == subscription.id, message
    return str(message["payload"][0]["extensions"]["code"])


def newest_cursor(client: Client) -> str:
    return str(client.data(SNAPSHOT)["sessionSnapshot"]["cursor"])


def position(cursor: str) -> int:
    """Cursors are opaque, but this service issues them as decimal log positions."""
    return int(cursor)


def assert_increasing(cursors: list[str]) -> None:
    positions = [position(cursor) for cursor in cursors]
    assert positions == sorted(set(positions)), cursors


def read_until(subscription: Subscription, key: str) -> list[dict[str, Any]]:
    """sessionEvents events up to and including the first one for `key` (bounded by count)."""
    found: list[dict[str, Any]] = []
    for _ in range(1000):
        event = subscription.next()["sessionEvents"]
        found.append(event)
        if event["sessionKey"] == key:
            return found
    raise AssertionError(f"no event for {key} within 1000 events")


def updated(client: Client, name: str, input_type: str, **fields: Any) -> dict[str, Any]:
    result = client.mutate(name, input_type, **fields)
    assert result["__typename"] == "SessionUpdated", result
    return result["session"]


# -- scoping ------------------------------------------------------------------------------------


def test_session_started_delivers_only_started_events_of_its_data_source(client: Client) -> None:
    with client.subscribe(STARTED, {"dataSource": "car-1"}) as subscription:
        other = client.create(dataSource="car-2")
        client.end(other["key"])
        first = client.create(dataSource="car-1", identifier="run 1")
        updated(
            client, "updateSessionIdentifier", IDENTIFIER, sessionKey=first["key"], identifier="x"
        )
        client.end(first["key"])
        second = client.create(dataSource="car-1")

        event = started(subscription)
        assert event["kind"] == "STARTED"
        assert event["sessionKey"] == first["key"]
        assert event["dataSource"] == "car-1"
        assert event["occurredAt"]
        assert event["session"]["key"] == first["key"]
        # Cursor order: the next one being `second` proves nothing in between was delivered.
        assert started(subscription)["sessionKey"] == second["key"]
        assert subscription.nothing_within(0.3)


def test_session_started_ignores_sessions_created_before_it_was_established(
    client: Client,
) -> None:
    before = client.create(dataSource="car-1")
    with client.subscribe(STARTED, {"dataSource": "car-1"}) as subscription:
        after = client.create(dataSource="car-1")
        assert started(subscription)["sessionKey"] == after["key"]
    assert before["key"] != after["key"]


def test_a_new_subscription_gets_no_event_committed_before_it_was_opened(
    make_server: Any,
) -> None:
    # The hub has not read the earlier event yet (its periodic read is 30 s away, and the bus
    # message that woke it may still be on its way): it must not deliver it all the same.
    # Across instances, an event whose bus message had not arrived when the subscription
    # opened can still come (at-least-once); resuming with after: is exact.
    here = make_server(event_poll_interval=30)
    with Client(here.url) as client:
        earlier = client.create(dataSource="car-1")
        with client.subscribe(EVENTS) as subscription:
            later = client.create(dataSource="car-1")
            first = events(subscription, 1)[0]
    assert first["sessionKey"] != earlier["key"], "delivered an event from before subscribing"
    assert first["sessionKey"] == later["key"]


def test_session_stopped_delivers_only_stopped_events_of_its_data_source(client: Client) -> None:
    with client.subscribe(STOPPED, {"dataSource": "car-1"}) as subscription:
        mine = client.create(dataSource="car-1")
        other = client.create(dataSource="car-2")
        updated(
            client, "updateSessionIdentifier", IDENTIFIER, sessionKey=mine["key"], identifier="x"
        )
        client.end(other["key"])
        client.end(mine["key"])
        sentinel = client.create(dataSource="car-1")
        client.end(sentinel["key"])

        event = stopped(subscription)
        assert event["kind"] == "STOPPED"
        assert event["sessionKey"] == mine["key"]
        assert event["dataSource"] == "car-1"
        assert event["session"]["status"] == "ENDED"
        assert stopped(subscription)["sessionKey"] == sentinel["key"]
        assert subscription.nothing_within(0.3)


def test_session_events_delivers_every_kind_of_every_data_source(client: Client) -> None:
    with client.subscribe(EVENTS) as subscription:
        first = client.create(dataSource="car-1")
        second = client.create(dataSource="car-2")
        updated(
            client, "updateSessionIdentifier", IDENTIFIER, sessionKey=first["key"], identifier="x"
        )
        client.end(second["key"])

        found = events(subscription, 4)
        assert summary(found) == [
            ("STARTED", first["key"]),
            ("STARTED", second["key"]),
            ("UPDATED", first["key"]),
            ("STOPPED", second["key"]),
        ]
        assert [event["dataSource"] for event in found] == ["car-1", "car-2", "car-1", "car-2"]
        assert subscription.nothing_within(0.3)


def test_session_events_narrowed_by_data_source_delivers_only_that_data_source(
    client: Client,
) -> None:
    with client.subscribe(EVENTS, {"dataSource": "car-2"}) as subscription:
        first = client.create(dataSource="car-1")
        second = client.create(dataSource="car-2")
        client.end(first["key"])
        client.end(second["key"])
        sentinel = client.create(dataSource="car-2")

        assert summary(events(subscription, 3)) == [
            ("STARTED", second["key"]),
            ("STOPPED", second["key"]),
            ("STARTED", sentinel["key"]),
        ]


def test_session_events_narrowed_by_session_key_delivers_only_that_session(
    client: Client,
) -> None:
    mine = client.create(dataSource="car-1")
    other = client.create(dataSource="car-1")
    variables = {"sessionKey": mine["key"], "after": newest_cursor(client)}
    with client.subscribe(EVENTS, variables) as subscription:
        updated(
            client, "updateSessionIdentifier", IDENTIFIER, sessionKey=other["key"], identifier="o"
        )
        updated(
            client, "updateSessionIdentifier", IDENTIFIER, sessionKey=mine["key"], identifier="m"
        )
        client.end(other["key"])
        client.end(mine["key"])

        found = events(subscription, 2)
        assert summary(found) == [("UPDATED", mine["key"]), ("STOPPED", mine["key"])]
        assert subscription.nothing_within(0.3)


def test_session_events_narrowed_by_kinds_delivers_only_those_kinds(client: Client) -> None:
    with client.subscribe(EVENTS, {"kinds": ["UPDATED", "STOPPED"]}) as subscription:
        first = client.create(dataSource="car-1")
        second = client.create(dataSource="car-2")
        updated(
            client, "updateSessionIdentifier", IDENTIFIER, sessionKey=second["key"], identifier="x"
        )
        client.end(first["key"])
        sentinel = client.create(dataSource="car-1")
        client.end(sentinel["key"])

        assert summary(events(subscription, 3)) == [
            ("UPDATED", second["key"]),
            ("STOPPED", first["key"]),
            ("STOPPED", sentinel["key"]),
        ]


def test_session_events_filters_combine(client: Client) -> None:
    variables = {"dataSource": "car-1", "kinds": ["STOPPED"]}
    with client.subscribe(EVENTS, variables) as subscription:
        first = client.create(dataSource="car-1")
        second = client.create(dataSource="car-2")
        client.end(second["key"])
        client.end(first["key"])

        assert summary(events(subscription, 1)) == [("STOPPED", first["key"])]
        assert subscription.nothing_within(0.3)


# -- which mutations send events ----------------------------------------------------------------

Family = dict[str, dict[str, Any]]
Change = Callable[[Client, Family], dict[str, Any]]

CHANGES: dict[str, Change] = {
    "updateSessionDetails adds": lambda c, f: updated(
        c, "updateSessionDetails", DETAILS, sessionKey=f["parent"]["key"],
        details=[{"name": "weather", "value": "22°C"}],
    ),
    "updateSessionDetails overwrites": lambda c, f: updated(
        c, "updateSessionDetails", DETAILS, sessionKey=f["parent"]["key"],
        details=[{"name": "track", "value": "Spa"}],
    ),
    "updateSessionDetails removes": lambda c, f: updated(
        c, "updateSessionDetails", DETAILS, sessionKey=f["parent"]["key"], remove=["track"]
    ),
    "updateSessionIdentifier": lambda c, f: updated(
        c, "updateSessionIdentifier", IDENTIFIER, sessionKey=f["parent"]["key"],
        identifier="renamed",
    ),
    "updateSessionIdentifier to empty": lambda c, f: updated(
        c, "updateSessionIdentifier", IDENTIFIER, sessionKey=f["parent"]["key"], identifier=""
    ),
    "addAssociateSession": lambda c, f: updated(
        c, "addAssociateSession", ASSOCIATE, sessionKey=f["parent"]["key"],
        associateSessionKey=f["other"]["key"],
    ),
    "removeAssociateSession": lambda c, f: updated(
        c, "removeAssociateSession", ASSOCIATE, sessionKey=f["parent"]["key"],
        associateSessionKey=f["child"]["key"],
    ),
    "addSessionStreams": lambda c, f: updated(
        c, "addSessionStreams", STREAMS, sessionKey=f["parent"]["key"], streams=["gps", "can"]
    ),
}  # fmt: skip


def family(client: Client) -> Family:
    """A parent (identifier "run", detail track=Monza, stream can) with one associate (child),
    and an unrelated session (other)."""
    child = client.create(dataSource="car-2")
    parent = client.create(
        dataSource="car-1",
        identifier="run",
        details=[{"name": "track", "value": "Monza"}],
        streams=["can"],
        associateSessionKeys=[child["key"]],
    )
    return {"parent": parent, "child": child, "other": client.create(dataSource="car-9")}


def run_and_record(
    client: Client, change: Change, members: Family
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The change's result and every event it sent, closed by a sentinel session's STARTED.

    Resuming after the newest cursor makes the window exact whatever the hub has read so far.
    """
    with client.subscribe(EVENTS, {"after": newest_cursor(client)}) as subscription:
        try:
            result = change(client, members)
        finally:
            sentinel = client.create(dataSource="car-1")
        found = read_until(subscription, sentinel["key"])
    return result, found[:-1]


def test_each_update_mutation_sends_one_updated_event_for_the_changed_session(
    client: Client, subtests: pytest.Subtests
) -> None:
    shown = ("identifier", "details", "streams", "associateSessionKeys")
    for name, change in CHANGES.items():
        with subtests.test(name):
            members = family(client)
            parent = members["parent"]
            session, found = run_and_record(client, change, members)
            assert summary(found) == [("UPDATED", parent["key"])]
            [event] = found
            assert event["dataSource"] == "car-1"
            assert event["session"]["revision"] == session["revision"] == parent["revision"] + 1
            assert [event["session"][field] for field in shown] == [
                session[field] for field in shown
            ]
            assert [session[field] for field in shown] != [parent[field] for field in shown]


NO_OPS: dict[str, Change] = {
    "updateSessionDetails with nothing": lambda c, f: updated(
        c, "updateSessionDetails", DETAILS, sessionKey=f["parent"]["key"]
    ),
    "updateSessionDetails with the same value": lambda c, f: updated(
        c, "updateSessionDetails", DETAILS, sessionKey=f["parent"]["key"],
        details=[{"name": "track", "value": "Monza"}],
    ),
    "updateSessionDetails removing a missing name": lambda c, f: updated(
        c, "updateSessionDetails", DETAILS, sessionKey=f["parent"]["key"], remove=["nope"]
    ),
    "updateSessionIdentifier with the same identifier": lambda c, f: updated(
        c, "updateSessionIdentifier", IDENTIFIER, sessionKey=f["parent"]["key"], identifier="run"
    ),
    "addAssociateSession of an existing link": lambda c, f: updated(
        c, "addAssociateSession", ASSOCIATE, sessionKey=f["parent"]["key"],
        associateSessionKey=f["child"]["key"],
    ),
    "removeAssociateSession of a missing link": lambda c, f: updated(
        c, "removeAssociateSession", ASSOCIATE, sessionKey=f["child"]["key"],
        associateSessionKey=f["parent"]["key"],
    ),
    "addSessionStreams of an existing stream": lambda c, f: updated(
        c, "addSessionStreams", STREAMS, sessionKey=f["parent"]["key"], streams=["can"]
    ),
}  # fmt: skip


def test_a_no_op_change_sends_no_event(client: Client, subtests: pytest.Subtests) -> None:
    for name, change in NO_OPS.items():
        with subtests.test(name):
            members = family(client)
            session, found = run_and_record(client, change, members)
            assert summary(found) == []
            assert session["revision"] == 1


def test_end_session_twice_sends_one_stopped_event(client: Client) -> None:
    session = client.create(dataSource="car-1")
    with client.subscribe(EVENTS, {"after": newest_cursor(client)}) as subscription:
        first = client.end(session["key"])
        second = client.end(session["key"])
        sentinel = client.create(dataSource="car-1")

        assert (first["alreadyEnded"], second["alreadyEnded"]) == (False, True)
        assert summary(events(subscription, 2)) == [
            ("STOPPED", session["key"]),
            ("STARTED", sentinel["key"]),
        ]


MISSING = str(uuid.UUID(int=0))

FAILURES: dict[str, Change] = {
    "createSession with a bad dataSource": lambda c, f: c.create_result(
        dataSource="bad source!"
    ),
    "createSession with a missing associate": lambda c, f: c.create_result(
        dataSource="car-1", associateSessionKeys=[MISSING]
    ),
    "updateSessionDetails of a missing session": lambda c, f: c.mutate(
        "updateSessionDetails", DETAILS, sessionKey=MISSING, details=[{"name": "a", "value": "b"}]
    ),
    "updateSessionDetails with a stale revision": lambda c, f: c.mutate(
        "updateSessionDetails", DETAILS, sessionKey=f["parent"]["key"],
        details=[{"name": "a", "value": "b"}], expectedRevision=7,
    ),
    "updateSessionIdentifier too long": lambda c, f: c.mutate(
        "updateSessionIdentifier", IDENTIFIER, sessionKey=f["parent"]["key"], identifier="x" * 257
    ),
    "addAssociateSession of itself": lambda c, f: c.mutate(
        "addAssociateSession", ASSOCIATE, sessionKey=f["parent"]["key"],
        associateSessionKey=f["parent"]["key"],
    ),
    "addAssociateSession closing a cycle": lambda c, f: c.mutate(
        "addAssociateSession", ASSOCIATE, sessionKey=f["child"]["key"],
        associateSessionKey=f["parent"]["key"],
    ),
    "addAssociateSession of a missing session": lambda c, f: c.mutate(
        "addAssociateSession", ASSOCIATE, sessionKey=f["parent"]["key"], associateSessionKey=MISSING
    ),
    "removeAssociateSession of a missing session": lambda c, f: c.mutate(
        "removeAssociateSession", ASSOCIATE, sessionKey=MISSING,
        associateSessionKey=f["child"]["key"],
    ),
    "addSessionStreams of a missing session": lambda c, f: c.mutate(
        "addSessionStreams", STREAMS, sessionKey=MISSING, streams=["gps"]
    ),
    "endSession with another dataSource": lambda c, f: c.end(
        f["parent"]["key"], dataSource="car-2"
    ),
    "endSession of a missing session": lambda c, f: c.end(MISSING),
}  # fmt: skip


def test_a_failed_mutation_sends_no_event(client: Client, subtests: pytest.Subtests) -> None:
    for name, failure in FAILURES.items():
        with subtests.test(name):
            members = family(client)
            result, found = run_and_record(client, failure, members)
            assert result["__typename"].endswith("Error"), result
            assert summary(found) == []
            for member in members.values():
                assert client.session(member["key"]) == member


# -- what an event carries ----------------------------------------------------------------------


def test_event_session_is_the_state_when_delivered_not_when_it_occurred(client: Client) -> None:
    start = newest_cursor(client)
    session = client.create(dataSource="car-1", identifier="before")
    updated(
        client, "updateSessionIdentifier", IDENTIFIER, sessionKey=session["key"], identifier="later"
    )
    client.end(session["key"])

    with client.subscribe(EVENTS, {"after": start}) as subscription:
        found = events(subscription, 3)
    assert summary(found) == [
        ("STARTED", session["key"]),
        ("UPDATED", session["key"]),
        ("STOPPED", session["key"]),
    ]
    for event in found:
        assert event["session"]["identifier"] == "later"
        assert event["session"]["status"] == "ENDED"
        assert event["session"]["revision"] == 3


def test_events_arrive_in_cursor_order_with_increasing_cursors(client: Client) -> None:
    with client.subscribe(EVENTS) as subscription:
        keys = [client.create(dataSource=f"car-{i % 3}")["key"] for i in range(6)]
        for key in keys[::2]:
            client.end(key)
        found = events(subscription, 9)

    assert summary(found) == [("STARTED", key) for key in keys] + [
        ("STOPPED", key) for key in keys[::2]
    ]
    assert_increasing([event["cursor"] for event in found])
    # Resuming after any event's cursor replays exactly the events that followed it.
    with client.subscribe(EVENTS, {"after": found[4]["cursor"]}) as resumed:
        assert summary(events(resumed, 4)) == summary(found[5:])


def test_concurrent_writers_deliver_every_event_once_in_cursor_order(server: Any) -> None:
    def write(worker: int) -> list[str]:
        with Client(server.url) as own:
            keys = [own.create(dataSource=f"car-{worker}")["key"] for _ in range(8)]
            for key in keys[:4]:
                own.end(key)
            return keys

    with Client(server.url) as client, client.subscribe(EVENTS) as subscription:
        start = newest_cursor(client)
        with ThreadPoolExecutor(4) as pool:
            written = [key for keys in pool.map(write, range(4)) for key in keys]
        live = events(subscription, 48)
        assert subscription.nothing_within(0.3)
        with client.subscribe(EVENTS, {"after": start}) as replay:
            replayed = events(replay, 48)

    assert_increasing([event["cursor"] for event in live])
    assert sorted(event["sessionKey"] for event in live if event["kind"] == "STARTED") == sorted(
        written
    )
    assert [event["cursor"] for event in replayed] == [event["cursor"] for event in live]
    assert summary(replayed) == summary(live)


# -- replay by cursor ---------------------------------------------------------------------------


def test_after_cursor_replays_the_log_then_continues_live_without_gap_or_duplicate(
    client: Client,
) -> None:
    with client.subscribe(EVENTS) as recorder:
        for i in range(6):
            client.create(dataSource=f"car-{i % 2}")
        history = events(recorder, 6)
        middle = history[2]["cursor"]

        with client.subscribe(EVENTS, {"after": middle}) as subscription:
            later = [client.create(dataSource="car-1") for _ in range(3)]
            history += events(recorder, 3)
            found = events(subscription, 6)
            assert subscription.nothing_within(0.3)

    assert [event["cursor"] for event in found] == [event["cursor"] for event in history[3:]]
    assert [event["sessionKey"] for event in found[3:]] == [session["key"] for session in later]
    assert_increasing([event["cursor"] for event in found])


def test_after_cursor_misses_nothing_written_while_the_subscription_opens(server: Any) -> None:
    def write(worker: int) -> None:
        with Client(server.url) as own:
            for _ in range(10):
                own.create(dataSource=f"car-{worker}")

    with Client(server.url) as client, client.subscribe(EVENTS) as recorder:
        for _ in range(3):
            client.create(dataSource="car-1")
        recorded = events(recorder, 3)
        middle = recorded[1]["cursor"]
        with ThreadPoolExecutor(3) as pool:
            writers = [pool.submit(write, worker) for worker in range(2)]
            with client.subscribe(EVENTS, {"after": middle}) as subscription:
                for writer in writers:
                    writer.result()
                sentinel = client.create(dataSource="car-1")
                found = read_until(subscription, sentinel["key"])
                assert subscription.nothing_within(0.3)
        recorded += read_until(recorder, sentinel["key"])

    expected = [
        event["cursor"] for event in recorded if position(event["cursor"]) > position(middle)
    ]
    assert [event["cursor"] for event in found] == expected
    assert len(found) == 1 + 20 + 1


def test_replay_respects_the_filters(client: Client) -> None:
    start = newest_cursor(client)
    first = client.create(dataSource="car-1")
    second = client.create(dataSource="car-2")
    third = client.create(dataSource="car-1")
    updated(client, "updateSessionIdentifier", IDENTIFIER, sessionKey=first["key"], identifier="x")
    client.end(second["key"])
    client.end(first["key"])

    with client.subscribe(STARTED, {"dataSource": "car-1", "after": start}) as subscription:
        assert [started(subscription)["sessionKey"] for _ in range(2)] == [
            first["key"],
            third["key"],
        ]
        assert subscription.nothing_within(0.2)
    with client.subscribe(STOPPED, {"dataSource": "car-2", "after": start}) as subscription:
        assert stopped(subscription)["sessionKey"] == second["key"]
        assert subscription.nothing_within(0.2)
    with client.subscribe(EVENTS, {"sessionKey": first["key"], "after": start}) as subscription:
        assert summary(events(subscription, 3)) == [
            ("STARTED", first["key"]),
            ("UPDATED", first["key"]),
            ("STOPPED", first["key"]),
        ]
        assert subscription.nothing_within(0.2)
    variables = {"dataSource": "car-1", "kinds": ["UPDATED", "STOPPED"], "after": start}
    with client.subscribe(EVENTS, variables) as subscription:
        assert summary(events(subscription, 2)) == [
            ("UPDATED", first["key"]),
            ("STOPPED", first["key"]),
        ]
        assert subscription.nothing_within(0.2)


def test_snapshot_then_subscribe_after_its_cursor_misses_nothing(client: Client) -> None:
    kept = client.create(dataSource="car-1")
    gone = client.create(dataSource="car-1")
    client.create(dataSource="car-2")
    snapshot = client.data(SNAPSHOT, {"dataSource": "car-1"})["sessionSnapshot"]
    live = [session["key"] for session in snapshot["sessions"]]
    assert live == [kept["key"], gone["key"]]

    # Changes between the snapshot and the subscription are replayed, later ones arrive live.
    between = client.create(dataSource="car-1")
    client.end(gone["key"])
    variables = {"dataSource": "car-1", "after": snapshot["cursor"]}
    with client.subscribe(EVENTS, variables) as subscription:
        afterwards = client.create(dataSource="car-1")
        client.end(kept["key"])
        for event in events(subscription, 4):
            if event["kind"] == "STARTED":
                live.append(event["sessionKey"])
            elif event["kind"] == "STOPPED":
                live.remove(event["sessionKey"])
        assert subscription.nothing_within(0.2)

    assert live == [between["key"], afterwards["key"]]
    current = client.data('{ currentSessions(dataSource: "car-1") { key } }')["currentSessions"]
    assert [session["key"] for session in current] == live


# -- failures -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("query", "variables"), EVERY_FIELD)
def test_a_malformed_cursor_fails_the_subscription_with_validation(
    client: Client, query: str, variables: dict[str, Any]
) -> None:
    client.create(dataSource="car-1")
    for cursor in ["abc", "-1", "1.5", "", " 1", "1e3", "9" * 20, "\u0661\u0662"]:
        with client.subscribe(query, {**variables, "after": cursor}) as subscription:
            assert error_code(subscription) == "VALIDATION", cursor


@contextmanager
def pruning_server(make_server: Any) -> Iterator[Client]:
    server = make_server(event_retention_seconds=0.2, cleanup_interval_seconds=0.1)
    with Client(server.url) as client:
        yield client


def wait_until_expired(client: Client, cursor: str) -> None:
    """Poll until resuming after `cursor` fails with CURSOR_EXPIRED: the cleanup has deleted
    the event that followed it."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        with client.subscribe(EVENTS, {"after": cursor}) as subscription:
            message = subscription.message()
            if message["type"] == "error":
                assert message["payload"][0]["extensions"]["code"] == "CURSOR_EXPIRED", message
                return
            assert message["type"] == "next", message
        time.sleep(0.05)
    raise AssertionError(f"events after {cursor} were not pruned within 15 seconds")


@pytest.mark.parametrize(("query", "variables"), EVERY_FIELD)
def test_a_cursor_older_than_the_retention_window_fails_with_cursor_expired(
    make_server: Any, query: str, variables: dict[str, Any]
) -> None:
    with pruning_server(make_server) as client:
        client.create(dataSource="car-1")
        old = newest_cursor(client)
        for _ in range(3):
            client.end(client.create(dataSource="car-1")["key"])
        wait_until_expired(client, old)
        with client.subscribe(query, {**variables, "after": old}) as subscription:
            assert error_code(subscription) == "CURSOR_EXPIRED"


def test_the_newest_cursor_still_resumes_after_pruning(make_server: Any) -> None:
    with pruning_server(make_server) as client:
        for _ in range(3):
            client.create(dataSource="car-1")
        penultimate = newest_cursor(client)
        client.create(dataSource="car-1")
        newest = newest_cursor(client)
        # Expired after the penultimate cursor: the newest event itself has been deleted.
        wait_until_expired(client, penultimate)
        with client.subscribe(EVENTS, {"after": newest}) as subscription:
            session = client.create(dataSource="car-1")
            event = events(subscription, 1)[0]
    assert (event["kind"], event["sessionKey"]) == ("STARTED", session["key"])
    assert position(event["cursor"]) > position(newest)


@pytest.mark.parametrize(("query", "variables"), EVERY_FIELD)
def test_subscriptions_fail_with_disabled_when_session_management_is_off(
    make_server: Any, query: str, variables: dict[str, Any]
) -> None:
    server = make_server(integrate_session_management=False)
    with Client(server.url) as client, client.subscribe(query, variables) as subscription:
        assert error_code(subscription) == "DISABLED"


# -- connections --------------------------------------------------------------------------------


def subscribe_also(
    connection: Subscription, subscription_id: str, query: str, variables: dict[str, Any]
) -> None:
    """Start another subscription on `connection`'s socket; returns once the server took it."""
    connection.send(
        {
            "id": subscription_id,
            "type": "subscribe",
            "payload": {"query": query, "variables": variables},
        }
    )
    sync(connection)


def sync(connection: Subscription) -> None:
    """Ping and wait for the pong: the server has then read everything sent before."""
    connection.send({"type": "ping"})
    while (message := connection.receive())["type"] != "pong":
        connection._pending.append(message)


def collect(connection: Subscription, count: int) -> dict[str, list[dict[str, Any]]]:
    """The next `count` messages on the socket, grouped by subscription id."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    for _ in range(count):
        message = connection.message()
        assert message["type"] == "next", message
        assert not message["payload"].get("errors"), message
        [event] = message["payload"]["data"].values()
        grouped.setdefault(message["id"], []).append(event)
    return grouped


def test_several_subscriptions_on_one_connection_are_independent(client: Client) -> None:
    with client.subscribe(STARTED, {"dataSource": "car-1"}) as connection:
        subscribe_also(connection, "stopped", STOPPED, {"dataSource": "car-1"})
        subscribe_also(connection, "car-2", EVENTS, {"dataSource": "car-2"})
        first = client.create(dataSource="car-1")
        client.end(first["key"])
        other = client.create(dataSource="car-2")

        grouped = collect(connection, 3)
        assert summary(grouped[connection.id]) == [("STARTED", first["key"])]
        assert summary(grouped["stopped"]) == [("STOPPED", first["key"])]
        assert summary(grouped["car-2"]) == [("STARTED", other["key"])]

        # Completing one leaves the others running.
        connection.send({"id": connection.id, "type": "complete"})
        sync(connection)
        second = client.create(dataSource="car-1")
        client.end(second["key"])
        client.end(other["key"])
        grouped = collect(connection, 2)
        assert set(grouped) == {"stopped", "car-2"}
        assert summary(grouped["stopped"]) == [("STOPPED", second["key"])]
        assert summary(grouped["car-2"]) == [("STOPPED", other["key"])]
        assert connection.nothing_within(0.3)


def test_completing_a_subscription_stops_its_deliveries(client: Client) -> None:
    with client.subscribe(EVENTS) as connection:
        subscribe_also(connection, "witness", EVENTS, {})
        connection.send({"id": connection.id, "type": "complete"})
        sync(connection)
        session = client.create(dataSource="car-1")

        grouped = collect(connection, 1)
        assert summary(grouped["witness"]) == [("STARTED", session["key"])]
        assert connection.nothing_within(0.3)


def test_many_concurrent_subscribers_all_receive_the_same_events(client: Client) -> None:
    with ExitStack() as stack:
        subscriptions = [
            stack.enter_context(client.subscribe(EVENTS, {"dataSource": "car-1"}))
            for _ in range(20)
        ]
        keys = [client.create(dataSource="car-1")["key"] for _ in range(3)]
        client.end(keys[0])
        received = [events(subscription, 4) for subscription in subscriptions]

    expected = [("STARTED", key) for key in keys] + [("STOPPED", keys[0])]
    cursors = [event["cursor"] for event in received[0]]
    for found in received:
        assert summary(found) == expected
        assert [event["cursor"] for event in found] == cursors


def test_each_event_is_rendered_once_for_every_subscriber_who_asked_the_same(
    client: Client,
) -> None:
    """Subscribers with the same document, variables and scope share one execution and one
    encoding of each event; a different document or different variables get their own."""
    lean = "subscription { sessionEvents { cursor kind } }"
    full = """subscription Full($details: Boolean!) { sessionEvents {
        cursor session { key details @include(if: $details) { name value } } } }"""
    with ExitStack() as stack:
        audiences = {
            "lean": [stack.enter_context(client.subscribe(lean)) for _ in range(4)],
            "with details": [
                stack.enter_context(client.subscribe(full, {"details": True})) for _ in range(3)
            ],
            "without": [stack.enter_context(client.subscribe(full, {"details": False}))],
        }
        before = client.metrics()
        keys = [client.create(details=[{"name": "lap", "value": str(n)}])["key"] for n in (1, 2)]
        received = {
            name: [[s.next()["sessionEvents"] for _ in keys] for s in members]
            for name, members in audiences.items()
        }
        after = client.metrics()

    def delta(name: str) -> float:
        return after[name] - before.get(name, 0)

    assert delta("session_service_events_rendered_total") == 2 * len(audiences)
    assert delta("session_service_events_delivered_total") == 2 * 8
    for members in received.values():
        assert all(seen == members[0] for seen in members)
    first = received["with details"][0][0]["session"]
    assert first == {"key": keys[0], "details": [{"name": "lap", "value": "1"}]}
    assert received["without"][0][0]["session"] == {"key": keys[0]}
    assert received["lean"][0][0].keys() == {"cursor", "kind"}
