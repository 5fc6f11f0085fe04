"""Queries: sessions by key, live sessions, filtered cursor pages, data sources and snapshots."""

import base64
import json
import uuid
from datetime import datetime
from typing import Any

from tests.client import Client

PAGE = """
query Page($filter: SessionFilter, $first: Int! = 50, $after: String) {
  sessions(filter: $filter, first: $first, after: $after) {
    edges { cursor node { key createdAt } }
    pageInfo { hasNextPage endCursor }
    totalCount
  }
}"""

CURRENT = """
query Current($dataSource: String) {
  currentSessions(dataSource: $dataSource) { key status createdAt }
}"""

SNAPSHOT = """
query Snapshot($dataSource: String) {
  sessionSnapshot(dataSource: $dataSource) { cursor sessions { key dataSource status } }
}"""

EVENTS = """
subscription Events($after: String) {
  sessionEvents(after: $after) { cursor kind sessionKey }
}"""


def at(minute: int, second: int = 0) -> str:
    """A createdAt on a fixed day, so that ordering by creation time is deterministic."""
    return f"2024-05-01T10:{minute:02d}:{second:02d}+00:00"


def keys(sessions: list[dict[str, Any]]) -> list[str]:
    return [session["key"] for session in sessions]


def page(client: Client, **variables: Any) -> dict[str, Any]:
    return client.data(PAGE, variables)["sessions"]


def page_keys(client: Client, **variables: Any) -> list[str]:
    return [edge["node"]["key"] for edge in page(client, **variables)["edges"]]


def error_codes(result: dict[str, Any]) -> list[str]:
    assert result.get("errors"), result
    return [error["extensions"]["code"] for error in result["errors"]]


# -- session(key) ------------------------------------------------------------------------------


def test_session_returns_the_session_with_that_key(client: Client) -> None:
    created = client.create(
        dataSource="car-1",
        type="Run",
        identifier="FP1",
        details=[{"name": "track", "value": "Monza"}],
        streams=["speed"],
    )
    client.create(dataSource="car-1")
    assert client.session(created["key"]) == created


def test_session_returns_an_ended_session_too(client: Client) -> None:
    key = client.create()["key"]
    client.end(key)
    fetched = client.session(key)
    assert fetched is not None
    assert fetched["status"] == "ENDED"
    assert fetched["isComplete"] is True


def test_session_returns_null_for_an_unknown_key(client: Client) -> None:
    client.create()
    for key in [str(uuid.uuid4()), "not-a-uuid", ""]:
        result = client.execute("query S($key: ID!) { session(key: $key) { key } }", {"key": key})
        assert result == {"data": {"session": None}}, key


# -- currentSessions -----------------------------------------------------------------------------


def test_current_sessions_lists_live_sessions_only_oldest_first(client: Client) -> None:
    newest = client.create(createdAt=at(30))["key"]
    oldest = client.create(createdAt=at(10))["key"]
    ended = client.create(createdAt=at(5))["key"]
    middle = client.create(createdAt=at(20))["key"]
    client.end(ended)
    current = client.data(CURRENT)["currentSessions"]
    assert keys(current) == [oldest, middle, newest]
    assert {session["status"] for session in current} == {"LIVE"}


def test_current_sessions_of_one_data_source(client: Client) -> None:
    second = client.create(dataSource="car-1", createdAt=at(2))["key"]
    client.create(dataSource="car-2", createdAt=at(1))
    first = client.create(dataSource="car-1", createdAt=at(1))["key"]
    client.end(client.create(dataSource="car-1", createdAt=at(0))["key"])
    current = client.data(CURRENT, {"dataSource": "car-1"})["currentSessions"]
    assert keys(current) == [first, second]
    assert client.data(CURRENT, {"dataSource": "nobody"})["currentSessions"] == []


def test_current_sessions_is_empty_when_every_session_has_ended(client: Client) -> None:
    client.end(client.create()["key"])
    assert client.data(CURRENT)["currentSessions"] == []


# -- sessions(filter, first, after) ----------------------------------------------------------------


def test_sessions_lists_every_session_newest_first(client: Client) -> None:
    middle = client.create(createdAt=at(20))["key"]
    newest = client.create(createdAt=at(30))["key"]
    oldest = client.create(createdAt=at(10))["key"]
    client.end(middle)
    connection = page(client)
    assert [edge["node"]["key"] for edge in connection["edges"]] == [newest, middle, oldest]
    assert connection["totalCount"] == 3
    assert connection["pageInfo"] == {
        "hasNextPage": False,
        "endCursor": connection["edges"][-1]["cursor"],
    }


def test_sessions_cursor_pages_walk_every_session_exactly_once(client: Client) -> None:
    # Several sessions share a createdAt, so the pages must order ties consistently too.
    created = [client.create(createdAt=at(minute % 4))["key"] for minute in range(11)]
    # Server-time sessions have sub-second createdAt values, which the cursors must carry.
    created += [client.create()["key"] for _ in range(3)]
    seen: list[str] = []
    times: list[datetime] = []
    after: str | None = None
    pages = 0
    while True:
        connection = page(client, first=3, after=after)
        pages += 1
        edges = connection["edges"]
        seen += [edge["node"]["key"] for edge in edges]
        times += [datetime.fromisoformat(edge["node"]["createdAt"]) for edge in edges]
        assert connection["totalCount"] == 14
        assert connection["pageInfo"]["endCursor"] == edges[-1]["cursor"]
        if not connection["pageInfo"]["hasNextPage"]:
            break
        assert len(edges) == 3
        after = connection["pageInfo"]["endCursor"]
    assert pages == 5
    assert len(edges) == 2
    assert sorted(seen) == sorted(created)
    assert times == sorted(times, reverse=True)


def test_sessions_last_full_page_has_no_next_page(client: Client) -> None:
    for minute in range(4):
        client.create(createdAt=at(minute))
    first = page(client, first=2)
    assert first["pageInfo"]["hasNextPage"] is True
    second = page(client, first=2, after=first["pageInfo"]["endCursor"])
    assert len(second["edges"]) == 2
    assert second["pageInfo"]["hasNextPage"] is False
    assert second["pageInfo"]["endCursor"] == second["edges"][-1]["cursor"]


def test_sessions_with_no_match_is_an_empty_page_without_end_cursor(client: Client) -> None:
    client.create(dataSource="car-1")
    connection = page(client, filter={"dataSource": "car-2"})
    assert connection == {
        "edges": [],
        "pageInfo": {"hasNextPage": False, "endCursor": None},
        "totalCount": 0,
    }


def test_sessions_total_count_counts_every_match_not_just_the_page(client: Client) -> None:
    for minute in range(5):
        client.create(dataSource="car-1", createdAt=at(minute))
    client.create(dataSource="car-2")
    connection = page(client, filter={"dataSource": "car-1"}, first=2)
    assert len(connection["edges"]) == 2
    assert connection["totalCount"] == 5


def test_sessions_filters_by_data_source(client: Client) -> None:
    wanted = [client.create(dataSource="rig-7", createdAt=at(m))["key"] for m in range(2)]
    client.create(dataSource="rig-70")
    client.create(dataSource="car-1")
    assert page_keys(client, filter={"dataSource": "rig-7"}) == wanted[::-1]


def test_sessions_filters_by_status(client: Client) -> None:
    live = client.create(createdAt=at(1))["key"]
    ended = client.create(createdAt=at(2))["key"]
    client.end(ended)
    assert page_keys(client, filter={"status": "LIVE"}) == [live]
    assert page_keys(client, filter={"status": "ENDED"}) == [ended]
    assert page(client, filter={"status": "ENDED"})["totalCount"] == 1


def test_sessions_filters_by_type(client: Client) -> None:
    run = client.create(type="Run")["key"]
    client.create()
    client.create(type="Runs")
    assert page_keys(client, filter={"type": "Run"}) == [run]


def test_sessions_filters_by_exact_identifier(client: Client) -> None:
    exact = client.create(identifier="lap 1")["key"]
    client.create(identifier="lap 12")
    client.create(identifier="Lap 1")
    client.create(identifier="lap")
    assert page_keys(client, filter={"identifier": "lap 1"}) == [exact]
    blank = client.create()["key"]
    assert page_keys(client, filter={"identifier": ""}) == [blank]


def test_sessions_filter_details_requires_every_listed_detail(client: Client) -> None:
    both = client.create(
        createdAt=at(1),
        details=[
            {"name": "track", "value": "Monza"},
            {"name": "driver", "value": "A"},
            {"name": "weather", "value": "dry"},
        ],
    )["key"]
    track_only = client.create(createdAt=at(2), details=[{"name": "track", "value": "Monza"}])[
        "key"
    ]
    other_driver = client.create(
        details=[{"name": "track", "value": "Monza"}, {"name": "driver", "value": "B"}]
    )["key"]
    client.create(details=[{"name": "driver", "value": "A"}, {"name": "circuit", "value": "Monza"}])
    client.create(details=[{"name": "track", "value": "monza"}, {"name": "driver", "value": "A"}])
    wanted = [{"name": "track", "value": "Monza"}, {"name": "driver", "value": "A"}]
    assert page_keys(client, filter={"details": wanted}) == [both]
    assert page(client, filter={"details": wanted})["totalCount"] == 1
    one = [{"name": "track", "value": "Monza"}]
    assert set(page_keys(client, filter={"details": one})) == {both, track_only, other_driver}
    assert page(client, filter={"details": one})["totalCount"] == 3


def test_sessions_filters_by_creation_time_window(client: Client) -> None:
    by_minute = {minute: client.create(createdAt=at(minute))["key"] for minute in range(0, 50, 10)}
    after_15 = {"createdAfter": at(15)}
    assert page_keys(client, filter=after_15) == [by_minute[40], by_minute[30], by_minute[20]]
    before_25 = {"createdBefore": at(25)}
    assert page_keys(client, filter=before_25) == [by_minute[20], by_minute[10], by_minute[0]]
    window = {"createdAfter": at(5), "createdBefore": at(35)}
    assert page_keys(client, filter=window) == [by_minute[30], by_minute[20], by_minute[10]]
    assert page(client, filter=window)["totalCount"] == 3
    # Another offset naming the same instants selects the same sessions.
    shifted = {"createdAfter": "2024-05-01T12:05:00+02:00", "createdBefore": at(35)}
    assert page_keys(client, filter=shifted) == page_keys(client, filter=window)


def test_sessions_combines_filters_and_pages_within_them(client: Client) -> None:
    wanted = []
    for minute in range(5):
        key = client.create(dataSource="car-1", type="Run", createdAt=at(minute), identifier="x")[
            "key"
        ]
        wanted.append(key)
        client.create(dataSource="car-1", type="Test", createdAt=at(minute), identifier="x")
        client.create(dataSource="car-2", type="Run", createdAt=at(minute), identifier="x")
    client.end(wanted[0])
    where = {"dataSource": "car-1", "type": "Run", "status": "LIVE", "identifier": "x"}
    first = page(client, filter=where, first=3)
    second = page(client, filter=where, first=3, after=first["pageInfo"]["endCursor"])
    walked = [edge["node"]["key"] for edge in first["edges"] + second["edges"]]
    assert walked == wanted[:0:-1]
    assert first["totalCount"] == second["totalCount"] == 4
    assert second["pageInfo"]["hasNextPage"] is False


def test_sessions_accepts_first_from_1_to_100(client: Client) -> None:
    for minute in range(3):
        client.create(createdAt=at(minute))
    assert len(page(client, first=1)["edges"]) == 1
    assert len(page(client, first=100)["edges"]) == 3


def test_sessions_refuses_first_outside_1_to_100_with_a_validation_error(client: Client) -> None:
    client.create()
    for first in [101, 1000, 0, -1]:
        result = client.execute(PAGE, {"first": first})
        assert error_codes(result) == ["VALIDATION"], first
        assert result["data"] is None


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode()


GARBAGE_CURSORS = [
    "garbage",
    "",
    "!!!",
    "1",
    _b64("not json"),
    _b64(json.dumps([1, 2, 3])),
    _b64(json.dumps(["yesterday", "key"])),
    _b64(json.dumps([12345, "key"])),
    _b64(json.dumps({"a": 1})),
    _b64(json.dumps(42)),
    base64.urlsafe_b64encode(b"\xff\xfe\x00").decode(),
]


def test_sessions_refuses_a_garbage_after_cursor_with_a_validation_error(client: Client) -> None:
    client.create()
    for after in GARBAGE_CURSORS:
        result = client.execute(PAGE, {"after": after})
        assert error_codes(result) == ["VALIDATION"], after
        assert result["data"] is None


def test_sessions_refuses_a_forged_cursor_with_an_unrepresentable_time(client: Client) -> None:
    # Well-formed, but no cursor this API issued: the time does not fit in UTC.
    client.create()
    for moment in ["9999-12-31T23:00:00-05:00", "0001-01-01T01:00:00+05:00"]:
        result = client.execute(PAGE, {"after": _b64(json.dumps([moment, "key"]))})
        assert error_codes(result) == ["VALIDATION"], moment
        assert result["data"] is None


def test_sessions_refuses_a_filter_time_outside_the_utc_range_with_a_validation_error(
    client: Client,
) -> None:
    client.create()
    for field, moment in [
        ("createdAfter", "9999-12-31T23:00:00-05:00"),
        ("createdBefore", "0001-01-01T01:00:00+05:00"),
    ]:
        result = client.execute(PAGE, {"filter": {field: moment}})
        assert error_codes(result) == ["VALIDATION"], (field, moment, result)
        assert result.get("data") is None


def test_sessions_refuses_variables_of_the_wrong_type_with_a_validation_error(
    client: Client,
) -> None:
    client.create()
    wrong: list[dict[str, Any]] = [
        {"first": "ten"},
        {"first": 2**40},
        {"filter": {"status": "PAUSED"}},
        {"filter": {"createdAfter": "yesterday"}},
        {"filter": {"details": [{"name": "track"}]}},
    ]
    for variables in wrong:
        result = client.execute(PAGE, variables)
        assert error_codes(result) == ["VALIDATION"], (variables, result)
        assert result.get("data") is None


# -- dataSources -----------------------------------------------------------------------------------


def test_data_sources_counts_live_and_total_sessions_by_name(client: Client) -> None:
    assert client.data("{ dataSources { name } }") == {"dataSources": []}
    client.create(dataSource="sim")
    client.create(dataSource="car-a")
    ended = client.create(dataSource="car-a")["key"]
    client.create(dataSource="bench")
    client.end(ended)
    client.end(client.create(dataSource="archive")["key"])
    query = "{ dataSources { name liveSessions totalSessions } }"
    assert client.data(query)["dataSources"] == [
        {"name": "archive", "liveSessions": 0, "totalSessions": 1},
        {"name": "bench", "liveSessions": 1, "totalSessions": 1},
        {"name": "car-a", "liveSessions": 1, "totalSessions": 2},
        {"name": "sim", "liveSessions": 1, "totalSessions": 1},
    ]


# -- sessionSnapshot -------------------------------------------------------------------------------


def test_session_snapshot_returns_the_live_sessions_of_one_data_source(client: Client) -> None:
    first = client.create(dataSource="car-1", createdAt=at(1))["key"]
    second = client.create(dataSource="car-1", createdAt=at(2))["key"]
    client.end(client.create(dataSource="car-1")["key"])
    other = client.create(dataSource="car-2")["key"]
    snapshot = client.data(SNAPSHOT, {"dataSource": "car-1"})["sessionSnapshot"]
    assert set(keys(snapshot["sessions"])) == {first, second}
    assert {s["status"] for s in snapshot["sessions"]} == {"LIVE"}
    everything = client.data(SNAPSHOT)["sessionSnapshot"]
    assert set(keys(everything["sessions"])) == {first, second, other}
    assert everything["cursor"] == snapshot["cursor"]


def test_events_after_a_snapshot_replay_from_its_cursor_and_earlier_ones_do_not(
    client: Client,
) -> None:
    before = client.create(dataSource="car-1")["key"]
    client.mutate(
        "updateSessionDetails",
        "UpdateSessionDetailsInput",
        sessionKey=before,
        details=[{"name": "lap", "value": "1"}],
    )
    snapshot = client.data(SNAPSHOT, {"dataSource": "car-1"})["sessionSnapshot"]
    assert keys(snapshot["sessions"]) == [before]
    later = client.create(dataSource="car-1")["key"]
    client.end(before)
    elsewhere = client.create(dataSource="car-2")["key"]
    expected = [("STARTED", later), ("STOPPED", before), ("STARTED", elsewhere)]

    with client.subscribe(EVENTS, {"after": snapshot["cursor"]}) as subscription:
        # A live event after the replay marks its end, so no waiting for silence.
        marker = client.create(dataSource="marker")["key"]
        received = []
        while (event := subscription.next()["sessionEvents"])["sessionKey"] != marker:
            received.append(event)
    assert [(event["kind"], event["sessionKey"]) for event in received] == expected
    cursors = [event["cursor"] for event in received]
    assert len(set(cursors)) == len(cursors)


def test_a_snapshot_cursor_with_no_later_events_replays_nothing(client: Client) -> None:
    client.create()
    cursor = client.data(SNAPSHOT)["sessionSnapshot"]["cursor"]
    with client.subscribe(EVENTS, {"after": cursor}) as subscription:
        marker = client.create()["key"]
        event = subscription.next()["sessionEvents"]
    assert (event["kind"], event["sessionKey"]) == ("STARTED", marker)


def test_session_snapshot_of_an_empty_service_is_empty(client: Client) -> None:
    snapshot = client.data(SNAPSHOT)["sessionSnapshot"]
    assert snapshot["sessions"] == []
    assert isinstance(snapshot["cursor"], str)


# -- Session fields --------------------------------------------------------------------------------

FIELDS = """
query Fields($key: ID!, $name: String!) {
  session(key: $key) {
    detail(name: $name)
    details { name value }
    associateSessionKeys
    associates { key dataSource }
    parents { key }
  }
}"""


def fields(client: Client, key: str, name: str = "none") -> dict[str, Any]:
    return client.data(FIELDS, {"key": key, "name": name})["session"]


def test_session_detail_returns_the_value_or_null(client: Client) -> None:
    key = client.create(
        details=[{"name": "track", "value": "Monza"}, {"name": "empty", "value": ""}]
    )["key"]
    assert fields(client, key, "track")["detail"] == "Monza"
    assert fields(client, key, "empty")["detail"] == ""
    assert fields(client, key, "missing")["detail"] is None
    assert fields(client, key, "Track")["detail"] is None


def test_session_details_are_ordered_by_name(client: Client) -> None:
    key = client.create(
        details=[
            {"name": "weather", "value": "dry"},
            {"name": "driver", "value": "A"},
            {"name": "track", "value": "Monza"},
        ]
    )["key"]
    client.mutate(
        "updateSessionDetails",
        "UpdateSessionDetailsInput",
        sessionKey=key,
        details=[{"name": "axle", "value": "rear"}, {"name": "temp", "value": "22°C"}],
    )
    assert fields(client, key)["details"] == [
        {"name": "axle", "value": "rear"},
        {"name": "driver", "value": "A"},
        {"name": "temp", "value": "22°C"},
        {"name": "track", "value": "Monza"},
        {"name": "weather", "value": "dry"},
    ]


def _link(client: Client, name: str, parent: str, child: str) -> None:
    result = client.mutate(
        name, "AssociateSessionInput", sessionKey=parent, associateSessionKey=child
    )
    assert result["__typename"] == "SessionUpdated", result


def test_associate_session_keys_and_associates_follow_link_order(client: Client) -> None:
    a, b, c, d = (client.create(dataSource=f"src-{n}")["key"] for n in range(4))
    parent = client.create(associateSessionKeys=[c, a])["key"]
    _link(client, "addAssociateSession", parent, d)
    _link(client, "addAssociateSession", parent, b)
    session = fields(client, parent)
    assert session["associateSessionKeys"] == [c, a, d, b]
    assert keys(session["associates"]) == [c, a, d, b]
    assert [s["dataSource"] for s in session["associates"]] == ["src-2", "src-0", "src-3", "src-1"]
    # Unlinking and linking again moves the associate to the end.
    _link(client, "removeAssociateSession", parent, a)
    _link(client, "addAssociateSession", parent, a)
    session = fields(client, parent)
    assert session["associateSessionKeys"] == [c, d, b, a]
    assert keys(session["associates"]) == [c, d, b, a]


def test_session_without_links_has_no_associates_or_parents(client: Client) -> None:
    session = fields(client, client.create()["key"])
    assert session["associateSessionKeys"] == []
    assert session["associates"] == []
    assert session["parents"] == []


def test_parents_lists_every_session_that_lists_this_one(client: Client) -> None:
    child = client.create(dataSource="car-1")["key"]
    first = client.create(dataSource="car-1", associateSessionKeys=[child])["key"]
    second = client.create(dataSource="rig-2")["key"]
    _link(client, "addAssociateSession", second, child)
    client.create(dataSource="car-1")
    assert set(keys(fields(client, child)["parents"])) == {first, second}
    assert fields(client, first)["parents"] == []
    _link(client, "removeAssociateSession", first, child)
    assert keys(fields(client, child)["parents"]) == [second]
