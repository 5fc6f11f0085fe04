"""Bad input: every limit refused with a ValidationError naming the field, and nothing changed."""

import json
import uuid
from typing import Any

import pytest

from models import Limits
from tests.client import Client

COUNT = "{ sessions { totalCount } }"
MAX_INT32 = 2**31 - 1
CREATE_QUERY = """
mutation C($input: CreateSessionInput!) {
  createSession(input: $input) { __typename ... on ValidationError { code message field } }
}"""


def total(client: Client) -> int:
    return int(client.data(COUNT)["sessions"]["totalCount"])


def details(count: int) -> list[dict[str, str]]:
    return [{"name": f"d{index:03d}", "value": "v"} for index in range(count)]


def with_detail(index: int, name: str = "n", value: str = "v") -> list[dict[str, str]]:
    """Valid details with the given name and value at position `index`."""
    return [*details(index), {"name": name, "value": value}]


def assert_refused(result: dict[str, Any], field: str) -> None:
    assert result["__typename"] == "ValidationError", (field, result)
    assert result["code"] == "VALIDATION"
    assert result["field"] == field, result
    assert result["message"]


BadInput = tuple[dict[str, Any], str]

CREATE_CASES = [
    pytest.param(
        [
            ({"dataSource": ""}, "dataSource"),
            ({"dataSource": "c" * 129}, "dataSource"),
            ({"dataSource": "car 1"}, "dataSource"),
            ({"dataSource": "car#1"}, "dataSource"),
            ({"dataSource": "car\x00"}, "dataSource"),
        ],
        id="dataSource",
    ),
    pytest.param(
        [
            ({"type": "t" * 257}, "type"),
            ({"type": "Run\x00"}, "type"),
            ({"identifier": "i" * 257}, "identifier"),
            ({"identifier": "run\x001"}, "identifier"),
            ({"idempotencyKey": "key\x00"}, "idempotencyKey"),
        ],
        id="type-identifier-idempotencyKey",
    ),
    pytest.param(
        [
            ({"version": -1}, "version"),
            ({"utcOffsetSeconds": -64801}, "utcOffsetSeconds"),
            ({"utcOffsetSeconds": 64801}, "utcOffsetSeconds"),
        ],
        id="numbers",
    ),
    pytest.param(
        [
            ({"details": details(257)}, "details"),
            ({"details": with_detail(3, name="")}, "details.3.name"),
            ({"details": with_detail(3, name="n" * 129)}, "details.3.name"),
            ({"details": with_detail(2, name="a\x00")}, "details.2.name"),
            ({"details": with_detail(3, value="v" * 4097)}, "details.3.value"),
            ({"details": with_detail(0, value="\x00")}, "details.0.value"),
            (
                {"details": [{"name": "a", "value": "1"}, {"name": "a", "value": "2"}]},
                "details.1.name",
            ),
        ],
        id="details",
    ),
    pytest.param(
        [
            (
                {"associateSessionKeys": [str(uuid.uuid4()) for _ in range(1025)]},
                "associateSessionKeys",
            ),
            ({"streams": [f"s{i}" for i in range(257)]}, "streams"),
            ({"streams": [""]}, "streams.0"),
            ({"streams": ["speed", "rpm\x00"]}, "streams.1"),
        ],
        id="associates-streams",
    ),
]


@pytest.mark.parametrize("cases", CREATE_CASES)
def test_create_session_refuses_input_beyond_a_limit_and_creates_nothing(
    client: Client, cases: list[BadInput]
) -> None:
    client.create()
    for fields, field in cases:
        result = client.create_result(**{"dataSource": "car-1", **fields})
        assert_refused(result, field)
    assert total(client) == 1


def test_create_session_refuses_an_unrepresentable_version_as_a_validation_error(
    client: Client,
) -> None:
    # GraphQL's Int stops at 2^31 - 1, so the refusal is a top-level error, still VALIDATION.
    response = client.execute(
        CREATE_QUERY,
        {"input": {"dataSource": "car-1", "version": MAX_INT32 + 1}},
    )
    assert response.get("data") is None
    assert response["errors"][0]["extensions"]["code"] == "VALIDATION"
    assert total(client) == 0


BOUNDARY_CASES = [
    pytest.param(
        {
            "dataSource": ("Az09._-:/" * 15)[:128],
            "type": "t" * 256,
            "identifier": "°" * 256,
            "version": MAX_INT32,
            "utcOffsetSeconds": 64800,
            "details": [
                {"name": f"{index:03d}" + "n" * 125, "value": "v" * (4096 if index == 0 else 8)}
                for index in range(256)
            ],
            "streams": [f"stream-{index}" + "s" * 240 for index in range(256)],
        },
        id="largest",
    ),
    pytest.param(
        {
            "dataSource": "c",
            "version": 0,
            "utcOffsetSeconds": -64800,
            "identifier": "",
            "details": [{"name": "n", "value": ""}],
            "streams": ["s"],
        },
        id="smallest",
    ),
]


@pytest.mark.parametrize("fields", BOUNDARY_CASES)
def test_create_session_accepts_values_at_each_limit_and_stores_them_as_given(
    make_server: Any, fields: dict[str, Any]
) -> None:
    # A session at every limit at once is about 1 MB of JSON: past the default 64 KiB body
    # limit, which an operator raises to create such sessions in one request.
    with Client(make_server(max_body_bytes=4 * 2**20).url) as client:
        session = client.create(**fields)
        fetched = client.session(session["key"])
    assert fetched is not None
    for name, value in fields.items():
        assert fetched[name] == value, name


UPDATE_CASES = [
    pytest.param(
        "updateSessionDetails",
        "UpdateSessionDetailsInput",
        [
            ({"details": with_detail(1, value="v" * 4097)}, "details.1.value"),
            ({"details": with_detail(0, name="")}, "details.0.name"),
            ({"details": with_detail(1, name="n" * 129)}, "details.1.name"),
            ({"details": with_detail(0, value="a\x00b")}, "details.0.value"),
            ({"details": details(257)}, "details"),
            # 100 stored, 1 removed, 200 new: 299 in all.
            (
                {
                    "details": [{"name": f"new{i}", "value": "v"} for i in range(200)],
                    "remove": ["keep"],
                },
                "details",
            ),
            ({"remove": ["keep", ""]}, "remove.1"),
        ],
        id="updateSessionDetails",
    ),
    pytest.param(
        "updateSessionIdentifier",
        "UpdateSessionIdentifierInput",
        [({"identifier": "i" * 257}, "identifier"), ({"identifier": "\x00"}, "identifier")],
        id="updateSessionIdentifier",
    ),
    pytest.param(
        "addSessionStreams",
        "AddSessionStreamsInput",
        [
            ({"streams": [f"s{i}" for i in range(257)]}, "streams"),
            # 100 stored and 200 new: 300 in all.
            ({"streams": [f"new{i}" for i in range(200)]}, "streams"),
            ({"streams": ["new", ""]}, "streams.1"),
            ({"streams": ["new\x00"]}, "streams.0"),
        ],
        id="addSessionStreams",
    ),
]


@pytest.mark.parametrize(("mutation", "input_type", "cases"), UPDATE_CASES)
def test_updates_refuse_input_beyond_a_limit_and_change_nothing(
    client: Client, mutation: str, input_type: str, cases: list[BadInput]
) -> None:
    created = client.create(
        details=[*details(99), {"name": "keep", "value": "me"}],
        streams=[f"old{i}" for i in range(100)],
    )
    for fields, field in cases:
        result = client.mutate(mutation, input_type, sessionKey=created["key"], **fields)
        assert_refused(result, field)
    assert client.session(created["key"]) == created


SMALL_LIMITS = Limits(details_per_session=3, streams_per_session=3, associates_per_session=2)


def test_configured_limits_count_what_a_session_already_holds(make_server: Any) -> None:
    with Client(make_server(limits=SMALL_LIMITS).url) as client:
        session = client.create(details=details(2), streams=["a", "b"])
        key = session["key"]
        assert_refused(
            client.mutate(
                "updateSessionDetails",
                "UpdateSessionDetailsInput",
                sessionKey=key,
                details=[{"name": "x", "value": "1"}, {"name": "y", "value": "2"}],
            ),
            "details",
        )
        assert_refused(
            client.mutate(
                "addSessionStreams", "AddSessionStreamsInput", sessionKey=key, streams=["c", "d"]
            ),
            "streams",
        )
        assert client.session(key) == session
        # Up to the limit is fine.
        result = client.mutate(
            "updateSessionDetails",
            "UpdateSessionDetailsInput",
            sessionKey=key,
            details=[{"name": "x", "value": "1"}],
        )
        assert result["__typename"] == "SessionUpdated", result
        result = client.mutate(
            "addSessionStreams", "AddSessionStreamsInput", sessionKey=key, streams=["c"]
        )
        assert result["__typename"] == "SessionUpdated", result


def test_configured_associate_limit_refuses_one_link_more(make_server: Any) -> None:
    with Client(make_server(limits=SMALL_LIMITS).url) as client:
        first, second, third = (client.create()["key"] for _ in range(3))
        assert_refused(
            client.create_result(dataSource="car-1", associateSessionKeys=[first, second, third]),
            "associateSessionKeys",
        )
        assert total(client) == 3
        session = client.create(associateSessionKeys=[first, second])
        result = client.mutate(
            "addAssociateSession",
            "AssociateSessionInput",
            sessionKey=session["key"],
            associateSessionKey=third,
        )
        assert result["__typename"] == "ValidationError", result
        assert result["code"] == "VALIDATION"
        assert result["field"] == "associateSessionKey"
        assert client.session(session["key"]) == session


def test_text_that_is_not_valid_unicode_is_refused(client: Client) -> None:
    # A lone surrogate survives JSON's \u escapes but has no UTF-8 form to store.
    body = {
        "query": CREATE_QUERY,
        "variables": {"input": {"dataSource": "car-1", "identifier": "run \ud800"}},
    }
    response = client.http.post(
        "/graphql",
        content=json.dumps(body, ensure_ascii=True),
        headers={"content-type": "application/json"},
    )
    result = response.json()["data"]["createSession"]
    assert_refused(result, "identifier")
    assert total(client) == 0


def test_sessions_page_size_beyond_1_to_100_is_a_top_level_validation_error(
    client: Client,
) -> None:
    for first in (0, 101, -1):
        response = client.execute(
            "query P($first: Int!) { sessions(first: $first) { totalCount } }", {"first": first}
        )
        assert response["data"] is None, first
        assert response["errors"][0]["extensions"]["code"] == "VALIDATION", response


def test_sessions_page_size_of_100_is_accepted(client: Client) -> None:
    client.create()
    data = client.data("{ sessions(first: 100) { totalCount edges { cursor } } }")
    assert data["sessions"]["totalCount"] == 1


def test_a_field_refused_while_sibling_reads_are_under_way_reports_only_typed_errors(
    client: Client,
) -> None:
    """The operation ends at the refused field while its siblings' batched reads still run;
    those reads must not fail on the operation's already closed transaction."""
    for _ in range(3):
        child = client.create()["key"]
        client.create(associateSessionKeys=[child])
    query = """{ currentSessions {
        key associates { createdAt details { name } } descendants(maxDepth: -2) { viaKey } } }"""
    for _ in range(5):
        result = client.execute(query)
        assert result.get("data") is None
        codes = {error.get("extensions", {}).get("code") for error in result["errors"]}
        assert codes == {"VALIDATION"}, result["errors"]
