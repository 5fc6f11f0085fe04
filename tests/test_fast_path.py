"""The fast path for JSON POSTs (api/view.py, SessionSchema.execute) answers exactly as
Strawberry's own view and pipeline do: the same status, type and bytes for the same request,
but that its refusals are coded JSON errors where Strawberry's are plain text."""

import json
from typing import Any

import httpx
import pytest

from tests.client import Client
from tests.conftest import LiveServer

FIELDS = "key dataSource type version identifier status isComplete createdAt revision"
READS: list[tuple[str, dict[str, Any] | None]] = [
    (f"query Q1($key: ID!) {{ session(key: $key) {{ {FIELDS} details {{ name value }} }} }}", None),
    ('{ session(key: "nope") { key } }', None),
    (f"{{ currentSessions {{ {FIELDS} streams associates {{ key parents {{ key }} }} }} }}", None),
    (
        "query Tree($key: ID!) { session(key: $key) { descendants(maxDepth: 3) { depth viaKey "
        'session { key detail(name: "track") associateSessionKeys } } ancestors { depth } } }',
        None,
    ),
    (
        "{ sessions(first: 2) { totalCount edges { cursor node { key } } pageInfo { "
        "hasNextPage endCursor } } }",
        None,
    ),
    (
        '{ sessions(filter: {details: [{name: "track", value: "Monza"}]}, first: 5) '
        "{ edges { node { key } } } }",
        None,
    ),
    ("{ dataSources { name liveSessions totalSessions } }", None),
    ("{ sessionSnapshot { cursor sessions { key } } }", None),
    ("{ __typename a: __typename }", None),
    ('{ __type(name: "Session") { name fields { name } } }', None),
    ("query Two { __typename } query Other { dataSources { name } }", {"operationName": "Other"}),
    # Errors: top-level, validation, parse, operation choice.
    ("{ sessions(first: 1000) { totalCount } }", None),
    ("{ session(key: 1, nope: 2) { key } }", None),
    ("{ session(key: ", None),
    ("query A { __typename } query B { __typename }", None),
    ("query A { __typename }", {"operationName": "Missing"}),
    ('subscription { sessionStarted(dataSource: "car-1") { cursor } }', None),
    ("query Q($key: ID!) { session(key: $key) { key } }", {"variables": {}}),
    ('{ session(key: "nope") { descendants(maxDepth: 99) { depth } } }', None),
    (
        'mutation { updateSessionIdentifier(input: {sessionKey: "nope", identifier: "x"}) '
        "{ __typename ... on Error { code message } } }",
        None,
    ),
    (
        'mutation { createSession(input: {dataSource: "bad source!"}) { __typename '
        "... on ValidationError { field message } } }",
        None,
    ),
]
BODIES: list[bytes] = [
    b"{not json",
    b'{"query": "mutation { createSession(input: {dataSource: \\"a\\", identifier: '
    b'\\"\\ud800\\"}) { __typename } }"}',
    b'{"query": "query Q($v: Int) { __typename }", "variables": {"v": 123456789012345678901}}',
    '{"query": "{ __typename }"}'.encode("utf-16"),
    b"[]",
    b'[{"query": "{ __typename }"}]',
    b"{}",
    b'{"query": null}',
    b'{"query": 5}',
    b'{"query": "{ __typename }", "variables": []}',
    b'{"query": "{ __typename }", "extensions": "x"}',
    b'{"query": "{ __typename }", "operationName": 5}',
]


@pytest.fixture
def servers(make_server: Any, database_url: str) -> tuple[LiveServer, LiveServer]:
    """The service twice on one database: with the fast path, and with Strawberry's view."""
    fast = make_server(database_url=database_url)
    general = make_server(database_url=database_url, http_fast_path=False)
    return fast, general


def _seed(url: str) -> dict[str, str]:
    with Client(url) as client:
        child = client.create(identifier="child", details=[{"name": "track", "value": "Monza"}])
        parent = client.create(
            identifier="parent",
            associateSessionKeys=[child["key"]],
            streams=["engine", "tyres"],
            details=[{"name": "track", "value": "Spa"}, {"name": "temp", "value": "22°C"}],
        )
    return {"key": parent["key"]}


def _answer(url: str, body: bytes) -> tuple[int, str, bytes]:
    response = httpx.post(
        f"{url}/graphql",
        content=body,
        headers={"content-type": "application/json", "x-request-id": "same"},
    )
    return response.status_code, response.headers["content-type"], response.content


def refused(message: str | bytes, code: str = "VALIDATION") -> bytes:
    """A refusal as the service words it: a coded GraphQL JSON error."""
    text = message.decode() if isinstance(message, bytes) else message
    error = {"errors": [{"message": text, "extensions": {"code": code}}]}
    return json.dumps(error, separators=(",", ":")).encode()


def _coded(answer: tuple[int, str, bytes]) -> tuple[int, str, bytes]:
    """A plain-text refusal of Strawberry's view, as the fast path words it."""
    status, content_type, body = answer
    if not content_type.startswith("text/plain"):
        return answer
    return status, "application/json", refused(body)


def test_the_fast_path_answers_every_request_as_strawberrys_view_does(
    servers: tuple[LiveServer, LiveServer],
) -> None:
    fast, general = servers
    variables = _seed(fast.url)
    bodies = [
        json.dumps({"query": query, "variables": variables, **(extra or {})}).encode()
        for query, extra in READS
    ] + BODIES
    for body in bodies:
        assert _answer(fast.url, body) == _coded(_answer(general.url, body)), body


def test_a_created_session_is_answered_alike_but_for_its_key(
    servers: tuple[LiveServer, LiveServer],
) -> None:
    fast, general = servers
    create = (
        'mutation { createSession(input: {dataSource: "car-2", identifier: "x", details: '
        '[{name: "b", value: "2"}, {name: "a", value: "1"}], streams: ["s", "s", "t"]}) { '
        "... on SessionCreated { session { dataSource identifier details { name value } "
        "streams revision status associates { key } } } } }"
    )
    body = json.dumps({"query": create}).encode()
    assert _answer(fast.url, body) == _answer(general.url, body)


def test_a_body_that_is_not_an_object_is_refused_with_400_on_either_path(
    servers: tuple[LiveServer, LiveServer],
) -> None:
    """Strawberry's view failed on these with a 500 (an AttributeError): the view checks every
    POST's body first, whichever path answers it."""
    for server in servers:
        for body in (b"null", b'"x"', b"1", b"true", b"1e400"):
            expected = refused("The request body must be a JSON object.")
            assert _answer(server.url, body) == (400, "application/json", expected), body


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        (5, "The GraphQL operation's `operationName` must be a string or null, if provided."),
        (["Q"], "The GraphQL operation's `operationName` must be a string or null, if provided."),
        ("\ud800", 'Unknown operation named "\\ud800".'),
        ("not a name", 'Unknown operation named "not a name".'),
    ],
)
def test_an_operation_name_that_names_nothing_is_a_400_on_either_path(
    servers: tuple[LiveServer, LiveServer], name: Any, reason: str
) -> None:
    """A lone surrogate in the name was a 500: Strawberry's plain-text answer repeated it."""
    body = json.dumps({"query": "query Q { __typename }", "operationName": name}).encode()
    for server in servers:
        assert _answer(server.url, body) == (400, "application/json", refused(reason))


HOSTILE: list[tuple[bytes, str]] = [
    (b"\xff\xfe not UTF-8 \xc3\x28", "application/json"),
    (
        '{"query": "{ __typename }", "x": "é"}'.encode("latin-1"),
        "application/json; charset=latin-1",
    ),
    (b"[" * 10_000 + b"]" * 10_000, "application/json"),
    (b'{"query": "{ __typename }", "variables": {"n": ' + b"9" * 5000 + b"}}", "application/json"),
    (b"1e400", "application/json"),
]


@pytest.mark.parametrize("accept", ["application/json", "multipart/mixed", "text/event-stream"])
def test_hostile_bodies_are_refused_with_400_and_the_server_keeps_answering(
    servers: tuple[LiveServer, LiveServer], accept: str
) -> None:
    """Invalid UTF-8, a declared charset, nesting far past any limit, a 5,000-digit integer:
    each a 400 with a reason, never a 500, on either path and for a streamed Accept too (which
    Strawberry's view answers)."""
    for server in servers:
        for body, content_type in HOSTILE:
            headers = {"content-type": content_type, "accept": accept}
            response = httpx.post(f"{server.url}/graphql", content=body, headers=headers)
            assert response.status_code == 400, (body[:40], response.text)
            [error] = response.json()["errors"]
            assert error["extensions"]["code"] == "VALIDATION"
            assert error["message"] in (
                "Unable to parse request body as JSON",
                "The request body must be a JSON object.",
            )
        with Client(server.url) as client:
            assert client.data("{ __typename }") == {"__typename": "Query"}
