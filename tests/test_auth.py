"""Bearer tokens: roles and data-source scopes, enforced on every path data can leak through."""

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed

from api.auth import Token
from api.config import ConfigError, load_settings
from tests.client import Client, Subscription

READER_A = "reader-a-token-0123456789"
WRITER_A = "writer-a-token-0123456789"
WRITER_ALL = "writer-all-token-0123456789"
ADMIN = "admin-token-0123456789abcdef"
HASHED = "hashed-token-0123456789abcdef"

TOKENS = (
    Token.parse({"token": READER_A, "role": "read", "dataSources": ["car-a"]}, "[0]"),
    Token.parse({"token": WRITER_A, "role": "write", "dataSources": ["car-a"]}, "[1]"),
    Token.parse({"token": WRITER_ALL, "role": "write", "dataSources": ["*"]}, "[2]"),
    Token.parse({"token": ADMIN, "role": "admin"}, "[3]"),
    Token.parse({"sha256": hashlib.sha256(HASHED.encode()).hexdigest(), "role": "read"}, "[4]"),
)

TREE = """
query Tree($key: ID!) {
  session(key: $key) {
    associateSessionKeys
    associates { key }
    parents { key }
    descendants { depth viaKey session { key } }
    ancestors { depth viaKey session { key } }
  }
}"""


def as_(server: Any, token: str | None) -> Client:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return Client(server.url, headers=headers)


def code(result: dict[str, Any]) -> str:
    return str(result["errors"][0]["extensions"]["code"])


@pytest.fixture
def secured(make_server: Any) -> Any:
    return make_server(tokens=TOKENS)


@pytest.fixture
def world(secured: Any) -> dict[str, str]:
    """Sessions of two data sources, linked across them: a1 -> b1 -> a2, and a1 -> a3."""
    with as_(secured, WRITER_ALL) as writer:
        a2 = writer.create(dataSource="car-a")["key"]
        a3 = writer.create(dataSource="car-a")["key"]
        b1 = writer.create(dataSource="car-b", associateSessionKeys=[a2])["key"]
        a1 = writer.create(dataSource="car-a", associateSessionKeys=[b1, a3])["key"]
    return {"a1": a1, "a2": a2, "a3": a3, "b1": b1}


def test_requests_without_a_valid_token_are_unauthenticated(secured: Any) -> None:
    for token in (None, "not-a-token", READER_A + "x"):
        with as_(secured, token) as client:
            response = client.http.post("/graphql", json={"query": "{ dataSources { name } }"})
            assert response.status_code == 401
            assert response.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    with Client(secured.url, headers={"authorization": f"Basic {READER_A}"}) as client:
        assert client.http.post("/graphql", json={"query": "{ __typename }"}).status_code == 401


def test_a_token_configured_as_its_sha256_digest_is_accepted(secured: Any) -> None:
    with as_(secured, HASHED) as client:
        assert client.data("{ dataSources { name } }") == {"dataSources": []}


def test_read_role_cannot_change_anything(secured: Any) -> None:
    with as_(secured, READER_A) as reader, as_(secured, WRITER_ALL) as writer:
        result = reader.execute(
            'mutation { createSession(input: {dataSource: "car-a"}) { __typename } }'
        )
        assert code(result) == "FORBIDDEN"
        assert writer.data("{ sessions { totalCount } }")["sessions"]["totalCount"] == 0


def test_writer_is_confined_to_its_data_sources(secured: Any, world: dict[str, str]) -> None:
    with as_(secured, WRITER_A) as writer:
        result = writer.execute(
            'mutation { createSession(input: {dataSource: "car-b"}) { __typename } }'
        )
        assert code(result) == "FORBIDDEN"
        assert writer.create(dataSource="car-a")["dataSource"] == "car-a"
        # Sessions of other data sources do not exist as far as this token can tell.
        hidden = world["b1"]
        for result in (
            writer.mutate(
                "updateSessionDetails",
                "UpdateSessionDetailsInput",
                sessionKey=hidden,
                details=[{"name": "x", "value": "1"}],
            ),
            writer.mutate(
                "updateSessionIdentifier",
                "UpdateSessionIdentifierInput",
                sessionKey=hidden,
                identifier="mine",
            ),
            writer.mutate(
                "addSessionStreams", "AddSessionStreamsInput", sessionKey=hidden, streams=["s"]
            ),
            writer.mutate(
                "addAssociateSession",
                "AssociateSessionInput",
                sessionKey=world["a3"],
                associateSessionKey=hidden,
            ),
            writer.end(hidden),
        ):
            assert result["__typename"] == "SessionNotFoundError", result
            assert result["sessionKey"] == hidden
        created = writer.create_result(dataSource="car-a", associateSessionKeys=[hidden])
        assert created["__typename"] == "SessionNotFoundError"
    with as_(secured, WRITER_ALL) as owner:
        untouched = owner.session(hidden)
        assert untouched is not None
        assert untouched["revision"] == 1


def test_scoped_reader_sees_only_its_data_sources_everywhere(
    secured: Any, world: dict[str, str]
) -> None:
    with as_(secured, READER_A) as reader:
        assert reader.session(world["b1"]) is None
        live = reader.data("{ currentSessions { dataSource } }")["currentSessions"]
        assert {s["dataSource"] for s in live} == {"car-a"}
        page = reader.data("{ sessions { totalCount edges { node { dataSource } } } }")
        assert page["sessions"]["totalCount"] == 3
        assert reader.data("{ dataSources { name totalSessions } }")["dataSources"] == [
            {"name": "car-a", "totalSessions": 3}
        ]
        snapshot = reader.data("{ sessionSnapshot { sessions { dataSource } } }")
        assert {s["dataSource"] for s in snapshot["sessionSnapshot"]["sessions"]} == {"car-a"}
        for query in (
            '{ currentSessions(dataSource: "car-b") { key } }',
            '{ sessions(filter: {dataSource: "car-b"}) { totalCount } }',
            '{ sessionSnapshot(dataSource: "car-b") { cursor } }',
        ):
            assert code(reader.execute(query)) == "FORBIDDEN"

        tree = reader.data(TREE, {"key": world["a1"]})["session"]
        assert tree["associateSessionKeys"] == [world["a3"]]
        assert tree["associates"] == [{"key": world["a3"]}]
        # a2 is reached only through b1, which this token may not read: the walk stops there.
        assert tree["descendants"] == [
            {"depth": 1, "viaKey": world["a1"], "session": {"key": world["a3"]}}
        ]
        below = reader.data(TREE, {"key": world["a2"]})["session"]
        assert below["parents"] == []
        assert below["ancestors"] == []
    with as_(secured, WRITER_ALL) as everyone:
        tree = everyone.data(TREE, {"key": world["a1"]})["session"]
        assert [n["session"]["key"] for n in tree["descendants"]] == [
            world["b1"],
            world["a3"],
            world["a2"],
        ]


def subscription(server: Any, query: str, token: str | None) -> Subscription:
    payload = {"authorization": f"Bearer {token}"} if token else {}
    return Subscription(server.url, query, init_payload=payload)


def test_websocket_without_a_valid_token_is_closed_with_4403(secured: Any) -> None:
    for token in (None, "wrong-token"):
        with pytest.raises(ConnectionClosed) as closed:
            with subscription(secured, "subscription { sessionEvents { cursor } }", token):
                pass
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 4403


def test_scoped_subscriber_receives_only_its_data_sources(secured: Any) -> None:
    events = "subscription { sessionEvents { dataSource sessionKey } }"
    with subscription(secured, events, READER_A) as scoped, as_(secured, WRITER_ALL) as writer:
        writer.create(dataSource="car-b")
        visible = writer.create(dataSource="car-a")["key"]
        assert scoped.next()["sessionEvents"] == {"dataSource": "car-a", "sessionKey": visible}
        assert scoped.nothing_within(0.3)
    forbidden = 'subscription { sessionStarted(dataSource: "car-b") { cursor } }'
    with subscription(secured, forbidden, READER_A) as refused:
        message = refused.message()
        assert message["type"] == "error"
        assert message["payload"][0]["extensions"]["code"] == "FORBIDDEN"


def test_subscribers_asking_the_same_in_different_scopes_each_see_their_own(
    secured: Any, world: dict[str, str]
) -> None:
    """Events are rendered once per document, variables and scope: never shared across scopes."""
    events = (
        'subscription { sessionEvents(dataSource: "car-a") { session { associateSessionKeys } } }'
    )
    with (
        subscription(secured, events, ADMIN) as everything,
        subscription(secured, events, READER_A) as scoped,
        as_(secured, WRITER_ALL) as writer,
    ):
        writer.end(world["a1"])
        seen = everything.next()["sessionEvents"]["session"]["associateSessionKeys"]
        assert sorted(seen) == sorted([world["b1"], world["a3"]])
        assert scoped.next()["sessionEvents"]["session"] == {"associateSessionKeys": [world["a3"]]}


def test_metrics_need_an_admin_token(secured: Any) -> None:
    for token, status in ((None, 401), (WRITER_ALL, 403), (ADMIN, 200)):
        with as_(secured, token) as client:
            assert client.http.get("/metrics").status_code == status


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"token": "short", "role": "read"}, r"\[0\]\.token"),
        ({"token": READER_A, "role": "owner"}, r"\[0\]\.role"),
        ({"sha256": "abc", "role": "read"}, r"\[0\]\.sha256"),
        ({"token": READER_A, "sha256": "0" * 64, "role": "read"}, "exactly one"),
        ({"token": READER_A, "role": "read", "dataSources": "car-a"}, "dataSources"),
    ],
)
def test_invalid_token_entries_are_refused_naming_the_key(
    tmp_path: Path, entry: dict[str, Any], message: str
) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"Tokens": [entry]}))
    with pytest.raises(ConfigError, match=message):
        load_settings({"SESSION_SERVICE_CONFIG": str(path)})
