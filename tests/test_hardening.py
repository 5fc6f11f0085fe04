"""HTTP protections: body size, media type, GET and batching, document limits, profiles, rates."""

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from graphql.language import Lexer, Source, TokenKind

from api.auth import Token
from tests.client import Client

KIB = 1024
CREATE = """
mutation Create($input: CreateSessionInput!) {
  createSession(input: $input) { __typename ... on SessionCreated { session { key } } }
}"""
COUNT = "{ sessions { totalCount } }"

WRITER = "hardening-writer-token-0123456789"
OTHER_WRITER = "hardening-other-token-0123456789"
TOKENS = (
    Token.parse({"token": WRITER, "role": "write"}, "[0]"),
    Token.parse({"token": OTHER_WRITER, "role": "write"}, "[1]"),
)


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """Only SQLite: these protections sit in front of the database."""
    return f"sqlite+aiosqlite:///{tmp_path / 's.db'}"


def stored(client: Client) -> int:
    return int(client.data(COUNT)["sessions"]["totalCount"])


def codes(result: dict[str, Any]) -> list[str]:
    return [error.get("extensions", {}).get("code") for error in result.get("errors") or []]


def refused(result: dict[str, Any], code: str = "VALIDATION") -> bool:
    """True when the operation was refused as a whole with one top-level error of `code`."""
    return result.get("data") is None and codes(result) == [code]


def create_body(size: int) -> bytes:
    """A createSession request padded, with an unused variable, to exactly `size` bytes."""
    variables: dict[str, Any] = {"input": {"dataSource": "car-1"}, "pad": ""}
    document = {"query": CREATE, "variables": variables}
    variables["pad"] = "x" * (size - len(json.dumps(document).encode()))
    body = json.dumps(document).encode()
    assert len(body) == size
    return body


def token_count(document: str) -> int:
    """Tokens as graphql-core's parser counts them against max_tokens (EOF excluded)."""
    lexer = Lexer(Source(document))
    count = 0
    while lexer.advance().kind != TokenKind.EOF:
        count += 1
    return count


def create_with_tokens(tokens: int) -> str:
    """A createSession document of exactly `tokens` tokens: many details, then streams."""
    details = ", ".join(f'{{name: "d{i}", value: "v"}}' for i in range(240))

    def document(streams: int) -> str:
        names = ", ".join(f'"s{i}"' for i in range(streams))
        return (
            f'mutation {{ createSession(input: {{dataSource: "car-1", details: [{details}], '
            f"streams: [{names}]}}) {{ __typename }} }}"
        )

    streams = tokens - token_count(document(0))
    assert 0 <= streams <= 256
    result = document(streams)
    assert token_count(result) == tokens
    return result


def nested(depth: int) -> str:
    """A session query whose innermost field is `depth` levels below the root field."""
    selection = "key"
    for _ in range(depth - 1):
        selection = f"associates {{ {selection} }}"
    return f'{{ session(key: "00000000-0000-0000-0000-000000000000") {{ {selection} }} }}'


@pytest.fixture
def production(make_server: Any) -> Iterator[Client]:
    with Client(make_server(profile="production").url) as client:
        yield client


# -- the body ----------------------------------------------------------------------------------


def test_a_body_larger_than_64_kib_is_refused_with_413_and_changes_nothing(
    client: Client,
) -> None:
    response = client.http.post(
        "/graphql", content=create_body(64 * KIB + 1), headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    assert response.json()["errors"][0]["extensions"]["code"] == "VALIDATION"
    assert stored(client) == 0


def test_a_chunked_body_larger_than_64_kib_is_refused_with_413_and_changes_nothing(
    client: Client,
) -> None:
    body = create_body(64 * KIB + 1)
    chunks = iter([body[i : i + 8 * KIB] for i in range(0, len(body), 8 * KIB)])
    response = client.http.post(
        "/graphql", content=chunks, headers={"content-type": "application/json"}
    )
    assert "content-length" not in response.request.headers
    assert response.status_code == 413
    assert stored(client) == 0


def test_a_body_of_exactly_64_kib_is_served(client: Client) -> None:
    response = client.http.post(
        "/graphql", content=create_body(64 * KIB), headers={"content-type": "application/json"}
    )
    assert response.status_code == 200
    assert response.json()["data"]["createSession"]["__typename"] == "SessionCreated"
    assert stored(client) == 1


# -- media type, GET and batching --------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "text/plain;charset=UTF-8",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=b",
        "application/graphql",
        pytest.param(None, id="none"),
    ],
)
def test_a_post_that_is_not_application_json_is_refused_with_415_and_changes_nothing(
    client: Client, content_type: str | None
) -> None:
    # The body is valid JSON: a browser form or fetch without preflight could send it cross-site.
    body = json.dumps({"query": CREATE, "variables": {"input": {"dataSource": "car-1"}}})
    headers = {"content-type": content_type} if content_type else {}
    response = client.http.post("/graphql", content=body, headers=headers)
    assert response.status_code == 415
    assert response.json()["errors"][0]["extensions"]["code"] == "VALIDATION"
    assert stored(client) == 0


def test_real_form_and_multipart_posts_are_refused_with_415(client: Client) -> None:
    operations = json.dumps({"query": CREATE, "variables": {"input": {"dataSource": "car-1"}}})
    form = client.http.post("/graphql", data={"query": CREATE})
    multipart = client.http.post(
        "/graphql", files={"operations": (None, operations), "map": (None, "{}")}
    )
    assert form.status_code == 415
    assert multipart.status_code == 415
    assert stored(client) == 0


def test_application_json_with_a_charset_is_served(client: Client) -> None:
    response = client.http.post(
        "/graphql",
        content=json.dumps({"query": "{ __typename }"}),
        headers={"content-type": "application/json; charset=utf-8"},
    )
    assert response.status_code == 200
    assert response.json() == {"data": {"__typename": "Query"}}


def test_a_mutation_by_get_is_refused_with_405_and_changes_nothing(client: Client) -> None:
    mutation = 'mutation { createSession(input: {dataSource: "car-1"}) { __typename } }'
    response = client.http.get("/graphql", params={"query": mutation})
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert response.json()["errors"][0]["extensions"]["code"] == "VALIDATION"
    assert stored(client) == 0


def test_a_subscription_by_post_is_refused_with_400(client: Client) -> None:
    """Events flow over WebSocket only; by HTTP a subscription used to run as a query and fail
    as INTERNAL."""
    response = client.http.post(
        "/graphql", json={"query": "subscription { sessionEvents { cursor } }"}
    )
    assert response.status_code == 400
    assert response.json() == {
        "errors": [
            {
                "message": "subscriptions are not allowed when using POST",
                "extensions": {"code": "VALIDATION"},
            }
        ]
    }


def test_a_batch_of_operations_is_refused_with_400_and_changes_nothing(client: Client) -> None:
    operation = {"query": CREATE, "variables": {"input": {"dataSource": "car-1"}}}
    response = client.http.post("/graphql", json=[operation, operation])
    assert response.status_code == 400
    assert stored(client) == 0


# -- document limits ---------------------------------------------------------------------------


def test_a_query_deeper_than_12_is_refused_with_validation(client: Client) -> None:
    result = client.execute(nested(13))
    assert refused(result), result
    assert "depth" in result["errors"][0]["message"]


def test_a_query_12_deep_is_served(client: Client) -> None:
    assert client.data(nested(12)) == {"session": None}


def test_16_aliases_are_refused_and_15_are_served(client: Client) -> None:
    def aliased(count: int) -> str:
        return "{ %s }" % " ".join(f"a{i}: currentSessions {{ key }}" for i in range(count))

    result = client.execute(aliased(16))
    assert refused(result), result
    assert client.data(aliased(15)) == {f"a{i}": [] for i in range(15)}


def test_6_directives_are_refused_and_5_are_served(client: Client) -> None:
    five = (
        "{ __typename @include(if: true) @skip(if: false) "
        "currentSessions @include(if: true) @skip(if: false) { key } "
        "dataSources @include(if: true) { name } }"
    )
    six = five.replace(
        "dataSources @include(if: true)", "dataSources @include(if: true) @skip(if: false)"
    )
    assert six.count("@") == 6
    result = client.execute(six)
    assert refused(result), result
    assert client.data(five) == {"__typename": "Query", "currentSessions": [], "dataSources": []}


def test_a_document_above_2000_tokens_is_refused_and_changes_nothing(client: Client) -> None:
    result = client.execute(create_with_tokens(2001))
    assert result.get("data") is None and result["errors"], result
    assert stored(client) == 0
    assert codes(result) == ["VALIDATION"], result


def test_a_syntax_error_is_a_top_level_validation_error(client: Client) -> None:
    result = client.execute("{ currentSessions { key }")
    assert result.get("data") is None, result
    assert codes(result) == ["VALIDATION"], result


def test_a_document_of_2000_tokens_is_served(client: Client) -> None:
    result = client.data(create_with_tokens(2000))
    assert result == {"createSession": {"__typename": "SessionCreated"}}


def test_a_huge_document_is_refused_without_parsing_it_all(client: Client) -> None:
    result = client.execute("{ currentSessions { %s } }" % ("key " * 10_000))
    assert result.get("data") is None
    assert "2000 tokens" in result["errors"][0]["message"]


# -- the contract's legitimate queries ---------------------------------------------------------


@pytest.fixture
def family(client: Client) -> dict[str, str]:
    """grandchild <- child <- root, with details, all on car-1."""
    grandchild = client.create(details=[{"name": "driver", "value": "C"}])["key"]
    child = client.create(
        associateSessionKeys=[grandchild], details=[{"name": "driver", "value": "B"}]
    )["key"]
    root = client.create(associateSessionKeys=[child], details=[{"name": "driver", "value": "A"}])[
        "key"
    ]
    return {"root": root, "child": child, "grandchild": grandchild}


def test_the_contracts_deep_tree_query_is_served(client: Client, family: dict[str, str]) -> None:
    query = """{
      currentSessions {
        key descendants { session { associates { parents { details { name value } } } } }
      }
    }"""
    sessions = client.data(query)["currentSessions"]
    root = next(session for session in sessions if session["key"] == family["root"])
    # root's first descendant is child; child's associate is grandchild, whose parent is child.
    parents = root["descendants"][0]["session"]["associates"][0]["parents"]
    assert parents == [{"details": [{"name": "driver", "value": "B"}]}]


def test_a_query_using_many_fields_with_arguments_is_served(
    client: Client, family: dict[str, str]
) -> None:
    query = """
    query Overview($key: ID!, $dataSource: String!) {
      session(key: $key) {
        detail(name: "driver")
        descendants(maxDepth: 4) {
          depth viaKey
          session { key detail(name: "driver") ancestors(maxDepth: 2) { depth session { key } } }
        }
      }
      sessions(
        filter: { dataSource: $dataSource, status: LIVE, details: [{ name: "driver", value: "A" }] }
        first: 10
      ) { totalCount edges { cursor node { key } } pageInfo { hasNextPage endCursor } }
      currentSessions(dataSource: $dataSource) { key }
      dataSources { name liveSessions totalSessions }
      sessionSnapshot(dataSource: $dataSource) { cursor sessions { key } }
    }"""
    data = client.data(query, {"key": family["root"], "dataSource": "car-1"})
    assert data["session"]["detail"] == "A"
    assert [node["session"]["key"] for node in data["session"]["descendants"]] == [
        family["child"],
        family["grandchild"],
    ]
    assert [edge["node"]["key"] for edge in data["sessions"]["edges"]] == [family["root"]]
    assert data["dataSources"] == [{"name": "car-1", "liveSessions": 3, "totalSessions": 3}]
    assert len(data["sessionSnapshot"]["sessions"]) == 3


# -- profiles ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    [
        pytest.param("{ __schema { queryType { name } } }", id="schema"),
        pytest.param('{ __type(name: "Session") { fields { name } } }', id="type"),
        pytest.param(
            "query IntrospectionQuery { __schema { types { name fields { name } } } }",
            id="named",
        ),
    ],
)
def test_production_refuses_introspection(production: Client, query: str) -> None:
    result = production.execute(query)
    assert result.get("data") is None, result
    assert set(codes(result)) == {"VALIDATION"}


def test_production_still_answers_typename(production: Client) -> None:
    assert production.data("{ __typename }") == {"__typename": "Query"}


def test_development_serves_introspection(client: Client) -> None:
    assert client.data("{ __schema { queryType { name } } }") == {
        "__schema": {"queryType": {"name": "Query"}}
    }


MISSPELLINGS = [
    pytest.param("{ currentSesions { key } }", id="root-field"),
    pytest.param("{ currentSessions { kee } }", id="object-field"),
    pytest.param("{ sessions(frist: 1) { totalCount } }", id="argument"),
    pytest.param('{ sessions(filter: { dataSorce: "car-1" }) { totalCount } }', id="input-field"),
    pytest.param("{ sessions(filter: { status: LIV }) { totalCount } }", id="enum-value"),
    pytest.param("query Q($f: SessionFiltr) { sessions(filter: $f) { totalCount } }", id="type"),
    pytest.param("{ currentSessions { ... on Sesion { key } } }", id="fragment-type"),
]


@pytest.mark.parametrize("query", MISSPELLINGS)
def test_production_errors_suggest_no_names(production: Client, query: str) -> None:
    result = production.execute(query)
    assert result.get("data") is None and result["errors"], result
    for error in result["errors"]:
        assert "Did you mean" not in error["message"], error["message"]


def test_production_variable_errors_suggest_no_names(production: Client) -> None:
    query = "query Q($f: SessionFilter) { sessions(filter: $f) { totalCount } }"
    for variables in ({"f": {"dataSorce": "car-1"}}, {"f": {"status": "LIV"}}):
        result = production.execute(query, variables)
        assert result["errors"], result
        assert "Did you mean" not in result["errors"][0]["message"], result


def test_development_errors_do_suggest_field_names(client: Client) -> None:
    result = client.execute("{ currentSesions { key } }")
    assert "Did you mean 'currentSessions'?" in result["errors"][0]["message"]


def test_production_does_not_serve_graphiql(production: Client) -> None:
    response = production.http.get("/graphql", headers={"accept": "text/html"})
    assert not response.headers.get("content-type", "").startswith("text/html")
    assert "graphiql" not in response.text.lower()


def test_development_serves_graphiql_to_a_browser(client: Client) -> None:
    response = client.http.get("/graphql", headers={"accept": "text/html"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "graphiql" in response.text.lower()


def test_production_keeps_the_document_limits(production: Client) -> None:
    assert refused(production.execute(nested(13)))
    aliases = "{ %s }" % " ".join(f"a{i}: __typename" for i in range(16))
    assert refused(production.execute(aliases))
    response = production.http.post(
        "/graphql", content=create_body(64 * KIB + 1), headers={"content-type": "application/json"}
    )
    assert response.status_code == 413


# -- mutation rate limit -----------------------------------------------------------------------


def test_mutations_beyond_the_rate_limit_are_refused_and_create_nothing(
    make_server: Any,
) -> None:
    limited = make_server(mutation_rate_per_second=0.001, mutation_burst=2)
    with Client(limited.url) as client:
        variables = {"input": {"dataSource": "car-1"}}
        for _ in range(2):
            assert client.data(CREATE, variables)["createSession"]["__typename"] == "SessionCreated"
        result = client.execute(CREATE, variables)
        assert refused(result, "RATE_LIMITED"), result
        assert stored(client) == 2
        assert len(client.data("{ currentSessions { key } }")["currentSessions"]) == 2


def test_the_mutation_rate_limit_counts_each_token_separately(make_server: Any) -> None:
    limited = make_server(tokens=TOKENS, mutation_rate_per_second=0.001, mutation_burst=2)
    variables = {"input": {"dataSource": "car-1"}}
    with (
        Client(limited.url, headers={"authorization": f"Bearer {WRITER}"}) as first,
        Client(limited.url, headers={"authorization": f"Bearer {OTHER_WRITER}"}) as second,
    ):
        for _ in range(2):
            assert first.data(CREATE, variables)["createSession"]["__typename"] == "SessionCreated"
        assert refused(first.execute(CREATE, variables), "RATE_LIMITED")
        result = second.data(CREATE, variables)["createSession"]
        assert result["__typename"] == "SessionCreated"
        assert stored(second) == 3


@pytest.mark.parametrize(
    "query",
    [
        pytest.param("{}", id="empty-selection"),
        pytest.param("query { session(key: 1) {} }", id="empty-nested-selection"),
        pytest.param("{ ...Missing }", id="unknown-fragment"),
        pytest.param("{ ... on Query {} }", id="empty-inline-fragment"),
    ],
)
def test_documents_the_depth_limit_cannot_measure_are_validation_errors(
    client: Client, query: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Found by tests/test_fuzz.py: Strawberry's depth limit failed on these (a KeyError, a
    max() of nothing), answered as INTERNAL and logged as unexpected."""
    result = client.execute(query)
    assert refused(result) or (result["data"] is None and set(codes(result)) == {"VALIDATION"})
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
