"""GraphQL over HTTP as the specification says: both response media types and their status
codes, queries by GET, and refusals that are always coded JSON errors."""

import json

import httpx
import pytest

from tests.client import Client

GRAPHQL_RESPONSE = "application/graphql-response+json"


def post(client: Client, body: object, accept: str | None) -> httpx.Response:
    headers = {"accept": accept} if accept else {}
    return client.http.post("/graphql", json=body, headers=headers)


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, "application/json"),
        ("*/*", "application/json"),
        ("application/json", "application/json"),
        (GRAPHQL_RESPONSE, GRAPHQL_RESPONSE),
        (f"{GRAPHQL_RESPONSE}, application/json;q=0.9", GRAPHQL_RESPONSE),
        (f"application/json, {GRAPHQL_RESPONSE}", GRAPHQL_RESPONSE),
        (f"application/json, {GRAPHQL_RESPONSE};q=0.5", "application/json"),
        (f"{GRAPHQL_RESPONSE};charset=utf-8", GRAPHQL_RESPONSE),
    ],
)
def test_the_answer_is_in_the_media_type_the_client_prefers(
    client: Client, accept: str | None, expected: str
) -> None:
    response = post(client, {"query": "{ __typename }"}, accept)
    assert response.status_code == 200
    assert response.headers["content-type"] == expected
    assert response.json() == {"data": {"__typename": "Query"}}


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"query": "{ session(key: "}, "does not parse"),
        ({"query": "{ nope }"}, "does not validate"),
        ({"query": "query Q($n: Int!) { sessions(first: $n) { totalCount } }"}, "no variable"),
        (
            {"query": "query Q($n: Int!) { sessions(first: $n) { totalCount } }",
             "variables": {"n": "many"}},
            "a variable that does not coerce",
        ),
    ],
)  # fmt: skip
def test_a_request_that_never_ran_is_a_400_without_data_in_graphql_response_json(
    client: Client, body: dict[str, object], reason: str
) -> None:
    response = post(client, body, GRAPHQL_RESPONSE)
    assert response.status_code == 400, reason
    assert response.headers["content-type"] == GRAPHQL_RESPONSE
    assert list(response.json()) == ["errors"], reason
    # application/json keeps answering 200, with data null, as it always has.
    legacy = post(client, body, "application/json")
    assert legacy.status_code == 200 and legacy.json()["data"] is None, reason


def test_a_field_error_is_a_200_with_data_in_both_media_types(client: Client) -> None:
    body = {"query": "{ sessions(first: 1000) { totalCount } }"}
    for accept in (GRAPHQL_RESPONSE, "application/json"):
        response = post(client, body, accept)
        assert response.status_code == 200
        assert "data" in response.json() and response.json()["errors"]


def test_a_client_that_takes_neither_media_type_is_refused_with_406(client: Client) -> None:
    response = post(client, {"query": "{ __typename }"}, "text/html")
    assert response.status_code == 406
    assert response.json()["errors"][0]["extensions"]["code"] == "VALIDATION"


def test_a_query_by_get_is_served_in_development(client: Client) -> None:
    key = client.create(dataSource="car-a", identifier="FP1")["key"]
    response = client.http.get(
        "/graphql",
        params={
            "query": "query S($key: ID!) { session(key: $key) { identifier } }",
            "variables": json.dumps({"key": key}),
            "operationName": "S",
        },
        headers={"accept": GRAPHQL_RESPONSE},
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == GRAPHQL_RESPONSE
    assert response.json() == {"data": {"session": {"identifier": "FP1"}}}


@pytest.mark.parametrize("name", ["variables", "extensions"])
def test_a_get_whose_json_parameters_do_not_parse_is_a_coded_400(client: Client, name: str) -> None:
    response = client.http.get("/graphql", params={"query": "{ __typename }", name: "{nope"})
    assert response.status_code == 400
    assert response.json()["errors"][0]["extensions"]["code"] == "VALIDATION"


def test_every_refusal_is_a_coded_json_error(client: Client) -> None:
    json_type = {"content-type": "application/json"}
    subscription = "subscription { sessionEvents { cursor } }"
    refusals = [
        client.http.post("/graphql", json={"query": "query A { a: __typename }",
                                           "operationName": "B"}),
        client.http.post("/graphql", json={}),
        client.http.post("/graphql", json=[{"query": "{ __typename }"}]),
        client.http.post("/graphql", content=b"{nope", headers=json_type),
        client.http.post("/graphql", content=b"{}", headers={"content-type": "text/plain"}),
        client.http.get("/graphql", params={"query": subscription}),
    ]  # fmt: skip
    for response in refusals:
        assert 400 <= response.status_code < 500, response.text
        assert response.headers["content-type"].startswith("application/json"), response.text
        [error] = response.json()["errors"]
        assert error["extensions"]["code"] == "VALIDATION", response.text
