"""Every mutation after createSession: details, identifier, streams, associations, endSession."""

import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.client import Client
from tests.conftest import THROUGH_PGBOUNCER

pytestmark = THROUGH_PGBOUNCER

EVENTS = """
subscription Events($after: String) {
  sessionEvents(after: $after) { kind sessionKey }
}"""

FAMILY = """
query Family($key: ID!) {
  session(key: $key) { associateSessionKeys associates { key } parents { key } revision }
}"""


def instant(text: str) -> datetime:
    """A DateTime from the API; it must carry its offset."""
    parsed = datetime.fromisoformat(text)
    assert parsed.tzinfo is not None, f"{text!r} has no UTC offset"
    return parsed


def event_kinds(client: Client, key: str) -> list[str]:
    """The kinds of every logged event of one session, replayed from the start of the log."""
    with client.subscribe(EVENTS, {"after": "0"}) as subscription:
        # A live event after the replay marks its end, so no waiting for silence.
        marker = client.create(dataSource="marker")["key"]
        kinds: list[str] = []
        while (event := subscription.next()["sessionEvents"])["sessionKey"] != marker:
            if event["sessionKey"] == key:
                kinds.append(event["kind"])
        return kinds


def update_details(
    client: Client,
    key: str,
    details: dict[str, str] | None = None,
    remove: list[str] | None = None,
    **fields: Any,
) -> dict[str, Any]:
    pairs = [{"name": name, "value": value} for name, value in (details or {}).items()]
    return client.mutate(
        "updateSessionDetails",
        "UpdateSessionDetailsInput",
        sessionKey=key,
        details=pairs,
        remove=remove or [],
        **fields,
    )


def update_identifier(client: Client, key: str, identifier: str, **fields: Any) -> dict[str, Any]:
    return client.mutate(
        "updateSessionIdentifier",
        "UpdateSessionIdentifierInput",
        sessionKey=key,
        identifier=identifier,
        **fields,
    )


def add_streams(client: Client, key: str, streams: list[str]) -> dict[str, Any]:
    return client.mutate(
        "addSessionStreams", "AddSessionStreamsInput", sessionKey=key, streams=streams
    )


def link(client: Client, parent: str, child: str) -> dict[str, Any]:
    return client.mutate(
        "addAssociateSession",
        "AssociateSessionInput",
        sessionKey=parent,
        associateSessionKey=child,
    )


def unlink(client: Client, parent: str, child: str) -> dict[str, Any]:
    return client.mutate(
        "removeAssociateSession",
        "AssociateSessionInput",
        sessionKey=parent,
        associateSessionKey=child,
    )


def updated(result: dict[str, Any]) -> dict[str, Any]:
    assert result["__typename"] == "SessionUpdated", result
    return result["session"]


def details_of(session: dict[str, Any]) -> dict[str, str]:
    return {detail["name"]: detail["value"] for detail in session["details"]}


# -- updateSessionDetails ----------------------------------------------------------------------


def test_update_session_details_upserts_and_removes_keeping_name_order(client: Client) -> None:
    created = client.create(
        details=[
            {"name": "c", "value": "3"},
            {"name": "a", "value": "1"},
            {"name": "b", "value": "2"},
        ]
    )
    session = updated(update_details(client, created["key"], {"d": "4", "c": "30"}, ["a"]))
    expected = [
        {"name": "b", "value": "2"},
        {"name": "c", "value": "30"},
        {"name": "d", "value": "4"},
    ]
    assert session["details"] == expected
    assert session["revision"] == 2
    assert session["createdAt"] == created["createdAt"]
    assert instant(session["updatedAt"]) > instant(created["updatedAt"])
    fetched = client.session(created["key"])
    assert fetched is not None
    assert fetched["details"] == expected
    query = (
        'query Q($key: ID!) { session(key: $key) { c: detail(name: "c") a: detail(name: "a") } }'
    )
    assert client.data(query, {"key": created["key"]})["session"] == {"c": "30", "a": None}


def test_update_session_details_without_effect_changes_nothing_and_sends_no_event(
    client: Client,
) -> None:
    created = client.create(details=[{"name": "track", "value": "Monza"}])
    no_ops: list[tuple[dict[str, str], list[str]]] = [
        ({}, []),
        ({"track": "Monza"}, []),
        ({}, ["missing"]),
        ({"track": "Monza"}, ["missing"]),
    ]
    for details, remove in no_ops:
        session = updated(update_details(client, created["key"], details, remove))
        assert session["revision"] == 1, (details, remove)
        assert session["updatedAt"] == created["updatedAt"]
        assert session["details"] == [{"name": "track", "value": "Monza"}]
    assert client.session(created["key"]) == session
    assert event_kinds(client, created["key"]) == ["STARTED"]


def test_update_session_details_bumps_revision_by_one_per_change(client: Client) -> None:
    key = client.create()["key"]
    revisions: list[int] = []
    times: list[datetime] = []
    for change in ({"a": "1"}, {"b": "2", "c": "3", "a": "10"}, {"a": "11"}):
        session = updated(update_details(client, key, change))
        revisions.append(session["revision"])
        times.append(instant(session["updatedAt"]))
    session = updated(update_details(client, key, remove=["b", "c"]))
    revisions.append(session["revision"])
    times.append(instant(session["updatedAt"]))
    assert revisions == [2, 3, 4, 5]
    assert times == sorted(times)
    assert len(set(times)) == len(times)
    assert details_of(session) == {"a": "11"}
    assert event_kinds(client, key) == ["STARTED"] + ["UPDATED"] * 4


def test_update_session_details_is_allowed_on_ended_sessions(client: Client) -> None:
    key = client.create(details=[{"name": "track", "value": "Monza"}])["key"]
    ended = client.end(key)["session"]
    session = updated(update_details(client, key, {"note": "wet track"}, ["track"]))
    assert session["status"] == "ENDED"
    assert session["isComplete"] is True
    assert session["endedAt"] == ended["endedAt"]
    assert session["details"] == [{"name": "note", "value": "wet track"}]
    assert session["revision"] == ended["revision"] + 1
    assert event_kinds(client, key) == ["STARTED", "STOPPED", "UPDATED"]


def test_concurrent_detail_updates_of_different_names_all_survive(client: Client) -> None:
    key = client.create()["key"]
    writers, updates_each = 8, 3

    def write(writer: int) -> list[str]:
        with Client(client.url) as own:
            return [
                update_details(own, key, {f"w{writer}-{n}": f"{writer}.{n}"})["__typename"]
                for n in range(updates_each)
            ]

    with ThreadPoolExecutor(max_workers=writers) as pool:
        outcomes = [name for names in pool.map(write, range(writers)) for name in names]
    assert outcomes == ["SessionUpdated"] * writers * updates_each
    session = client.session(key)
    assert session is not None
    assert details_of(session) == {
        f"w{writer}-{n}": f"{writer}.{n}" for writer in range(writers) for n in range(updates_each)
    }
    assert session["revision"] == 1 + writers * updates_each


# -- expectedRevision --------------------------------------------------------------------------

UpdateCall = Callable[[Client, str, int], dict[str, Any]]


def _details_with_revision(client: Client, key: str, revision: int) -> dict[str, Any]:
    return update_details(client, key, {"track": "Spa"}, expectedRevision=revision)


def _identifier_with_revision(client: Client, key: str, revision: int) -> dict[str, Any]:
    return update_identifier(client, key, "run 9", expectedRevision=revision)


@pytest.mark.parametrize(
    "update",
    [_details_with_revision, _identifier_with_revision],
    ids=["updateSessionDetails", "updateSessionIdentifier"],
)
def test_expected_revision_mismatch_is_a_conflict_and_changes_nothing(
    client: Client, update: UpdateCall
) -> None:
    key = client.create(identifier="run 1", details=[{"name": "track", "value": "Monza"}])["key"]
    before = updated(update_details(client, key, {"driver": "A"}))
    assert before["revision"] == 2
    for stale in (1, 3):
        result = update(client, key, stale)
        assert result["__typename"] == "RevisionConflictError", result
        assert result["code"] == "CONFLICT"
        assert result["currentRevision"] == 2
        assert client.session(key) == before
    session = updated(update(client, key, 2))
    assert session["revision"] == 3


# -- updateSessionIdentifier -------------------------------------------------------------------


def test_update_session_identifier_replaces_it_even_with_empty_text(client: Client) -> None:
    created = client.create(identifier="run 1")
    session = updated(update_identifier(client, created["key"], "run 2 ✓"))
    assert session["identifier"] == "run 2 ✓"
    assert session["revision"] == 2
    assert instant(session["updatedAt"]) > instant(created["updatedAt"])
    session = updated(update_identifier(client, created["key"], ""))
    assert session["identifier"] == ""
    assert session["revision"] == 3
    fetched = client.session(created["key"])
    assert fetched is not None
    assert fetched["identifier"] == ""
    assert event_kinds(client, created["key"]) == ["STARTED", "UPDATED", "UPDATED"]


# -- addSessionStreams -------------------------------------------------------------------------


def test_add_session_streams_appends_only_new_names_in_order(client: Client) -> None:
    key = client.create(streams=["speed", "rpm"])["key"]
    session = updated(add_streams(client, key, ["gear", "rpm", "brake", "gear"]))
    assert session["streams"] == ["speed", "rpm", "gear", "brake"]
    assert session["revision"] == 2
    fetched = client.session(key)
    assert fetched is not None
    assert fetched["streams"] == ["speed", "rpm", "gear", "brake"]


def test_add_session_streams_already_present_is_a_no_op(client: Client) -> None:
    created = client.create(streams=["speed", "rpm"])
    for streams in ([], ["rpm", "speed"], ["speed", "speed"]):
        session = updated(add_streams(client, created["key"], streams))
        assert session["streams"] == ["speed", "rpm"]
        assert session["revision"] == 1
        assert session["updatedAt"] == created["updatedAt"]
    assert event_kinds(client, created["key"]) == ["STARTED"]


def test_add_session_streams_to_a_session_without_streams(client: Client) -> None:
    key = client.create()["key"]
    session = updated(add_streams(client, key, ["a", "b"]))
    assert session["streams"] == ["a", "b"]
    session = updated(add_streams(client, key, ["c"]))
    assert session["streams"] == ["a", "b", "c"]
    assert session["revision"] == 3


# -- addAssociateSession / removeAssociateSession ----------------------------------------------


def test_add_and_remove_associate_session_maintain_the_parents_ordered_list(
    client: Client,
) -> None:
    parent, first, second = (client.create()["key"] for _ in range(3))
    assert updated(link(client, parent, second))["associateSessionKeys"] == [second]
    session = updated(link(client, parent, first))
    assert session["associateSessionKeys"] == [second, first]
    assert session["revision"] == 3
    family = client.data(FAMILY, {"key": parent})["session"]
    assert [child["key"] for child in family["associates"]] == [second, first]
    child = client.data(FAMILY, {"key": first})["session"]
    assert child["parents"] == [{"key": parent}]
    assert child["revision"] == 1

    session = updated(unlink(client, parent, second))
    assert session["associateSessionKeys"] == [first]
    assert session["revision"] == 4
    assert client.data(FAMILY, {"key": second})["session"]["parents"] == []
    session = updated(link(client, parent, second))
    assert session["associateSessionKeys"] == [first, second]
    assert event_kinds(client, parent) == ["STARTED"] + ["UPDATED"] * 4
    assert event_kinds(client, first) == ["STARTED"]


def test_adding_an_existing_link_or_removing_a_missing_one_is_a_no_op(client: Client) -> None:
    parent, child, other = (client.create()["key"] for _ in range(3))
    linked = updated(link(client, parent, child))
    again = updated(link(client, parent, child))
    assert again["associateSessionKeys"] == [child]
    assert again["revision"] == linked["revision"]
    assert again["updatedAt"] == linked["updatedAt"]
    missing = updated(unlink(client, parent, other))
    assert missing["associateSessionKeys"] == [child]
    assert missing["revision"] == linked["revision"]
    reversed_link = updated(unlink(client, child, parent))
    assert reversed_link["revision"] == 1
    assert event_kinds(client, parent) == ["STARTED", "UPDATED"]


def test_association_self_links_and_cycles_are_refused(client: Client) -> None:
    top, middle, bottom = (client.create()["key"] for _ in range(3))
    updated(link(client, top, middle))
    updated(link(client, middle, bottom))
    for parent, child in ((top, top), (bottom, top), (middle, top), (bottom, middle)):
        result = link(client, parent, child)
        assert result["__typename"] == "AssociationCycleError", (parent, child, result)
        assert result["code"] == "CYCLE"
    assert client.data(FAMILY, {"key": bottom})["session"]["associateSessionKeys"] == []
    assert client.data(FAMILY, {"key": bottom})["session"]["revision"] == 1
    assert client.data(FAMILY, {"key": top})["session"]["revision"] == 2
    # A second path to the same descendant is not a cycle: hierarchies are DAGs.
    assert updated(link(client, top, bottom))["associateSessionKeys"] == [middle, bottom]


def test_associations_may_cross_data_sources(client: Client) -> None:
    parent = client.create(dataSource="weekend")["key"]
    child = client.create(dataSource="car-1")["key"]
    assert updated(link(client, parent, child))["associateSessionKeys"] == [child]
    assert client.data(FAMILY, {"key": child})["session"]["parents"] == [{"key": parent}]


def test_association_with_an_unknown_session_is_not_found(client: Client) -> None:
    existing = client.create()["key"]
    missing = str(uuid.uuid4())
    for mutation in (link, unlink):
        for parent, child in ((missing, existing), (existing, missing)):
            result = mutation(client, parent, child)
            assert result["__typename"] == "SessionNotFoundError", (mutation, result)
            assert result["code"] == "NOT_FOUND"
            assert result["sessionKey"] == missing
    session = client.session(existing)
    assert session is not None
    assert session["revision"] == 1
    assert session["associateSessionKeys"] == []


# -- unknown keys --------------------------------------------------------------------------------


def test_every_update_of_an_unknown_session_is_not_found(client: Client) -> None:
    missing = str(uuid.uuid4())
    results = [
        update_details(client, missing, {"a": "1"}),
        update_identifier(client, missing, "run"),
        add_streams(client, missing, ["speed"]),
        client.end(missing),
    ]
    for result in results:
        assert result["__typename"] == "SessionNotFoundError", result
        assert result["code"] == "NOT_FOUND"
        assert result["sessionKey"] == missing
    assert client.data("{ sessions { totalCount } }")["sessions"]["totalCount"] == 0


# -- endSession ----------------------------------------------------------------------------------


def test_end_session_marks_it_ended_at_server_time(client: Client) -> None:
    created = client.create()
    before = datetime.now(UTC)
    result = client.end(created["key"])
    after = datetime.now(UTC)
    assert result["__typename"] == "SessionEnded"
    assert result["alreadyEnded"] is False
    session = result["session"]
    assert session["status"] == "ENDED"
    assert session["isComplete"] is True
    assert before <= instant(session["endedAt"]) <= after
    assert session["revision"] == 2
    assert client.session(created["key"]) == session
    assert client.data("{ currentSessions { key } }")["currentSessions"] == []


def test_end_session_keeps_a_given_ended_at(client: Client) -> None:
    expected = datetime(2030, 1, 1, 12, tzinfo=UTC)
    for ended_at in ("2030-01-01T12:00:00+00:00", "2030-01-01T14:00:00+02:00"):
        key = client.create(createdAt="2030-01-01T08:00:00Z")["key"]
        result = client.end(key, endedAt=ended_at)
        assert result["__typename"] == "SessionEnded", result
        assert instant(result["session"]["endedAt"]) == expected
        fetched = client.session(key)
        assert fetched is not None
        assert instant(fetched["endedAt"]) == expected


def test_end_session_reads_an_ended_at_without_offset_as_utc(client: Client) -> None:
    key = client.create(createdAt="2030-01-01T08:00:00Z")["key"]
    result = client.end(key, endedAt="2030-01-01T12:00:00")
    assert result["__typename"] == "SessionEnded", result
    fetched = client.session(key)
    assert fetched is not None
    assert instant(fetched["endedAt"]) == datetime(2030, 1, 1, 12, tzinfo=UTC)


def test_end_session_twice_reports_already_ended_and_sends_one_stop_event(
    client: Client,
) -> None:
    key = client.create()["key"]
    first = client.end(key)["session"]
    again = client.end(key, endedAt="2099-01-01T00:00:00Z")
    assert again["__typename"] == "SessionEnded"
    assert again["alreadyEnded"] is True
    assert again["session"] == first
    assert client.session(key) == first
    assert event_kinds(client, key) == ["STARTED", "STOPPED"]


def test_end_session_with_the_sessions_data_source_succeeds(client: Client) -> None:
    key = client.create(dataSource="car-1")["key"]
    result = client.end(key, dataSource="car-1")
    assert result["__typename"] == "SessionEnded"
    assert result["session"]["status"] == "ENDED"


def test_end_session_with_another_data_source_is_refused(client: Client) -> None:
    created = client.create(dataSource="car-1")
    result = client.end(created["key"], dataSource="car-2")
    assert result["__typename"] == "ValidationError"
    assert result["code"] == "VALIDATION"
    assert result["field"] == "dataSource"
    assert client.session(created["key"]) == created
    assert event_kinds(client, created["key"]) == ["STARTED"]


def test_end_session_before_its_creation_is_refused(client: Client) -> None:
    created = client.create(createdAt="2030-01-01T08:00:00Z")
    result = client.end(created["key"], endedAt="2030-01-01T07:59:59Z")
    assert result["__typename"] == "ValidationError"
    assert result["code"] == "VALIDATION"
    assert result["field"] == "endedAt"
    session = client.session(created["key"])
    assert session is not None
    assert session["status"] == "LIVE"
    assert session["endedAt"] is None
    assert session["revision"] == 1
