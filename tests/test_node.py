"""Relay's global object identification: Session implements Node; node(id:) and nodes(ids:)."""

import base64
from typing import Any

from api.auth import Token
from tests.client import Client
from tests.conftest import LiveServer

ADMIN, READER_A = "admin-token-0123456789", "reader-a-0123456789"
TOKENS = (
    Token.parse({"token": ADMIN, "role": "admin"}, "[0]"),
    Token.parse({"token": READER_A, "role": "read", "dataSources": ["car-a"]}, "[1]"),
)

NODE = """
query Node($id: ID!) {
  node(id: $id) { __typename id ... on Session { key identifier details { name value } } }
}"""
NODES = "query Nodes($ids: [ID!]!) { nodes(ids: $ids) { id ... on Session { key } } }"


def relay_id(type_name: str, key: str) -> str:
    """graphql-relay's toGlobalId, written out independently of the service's code."""
    return base64.b64encode(f"{type_name}:{key}".encode()).decode()


def codes(result: dict[str, Any]) -> list[str]:
    assert result.get("errors"), result
    return [error["extensions"]["code"] for error in result["errors"]]


def test_a_sessions_id_is_its_relay_global_id_on_every_path(client: Client) -> None:
    key = client.create(
        dataSource="car-a", identifier="lap", details=[{"name": "t", "value": "1"}]
    )["key"]
    created = client.data(
        """mutation { createSession(input: {dataSource: "car-a", identifier: "x"}) {
             ... on SessionCreated { session { id key } } } }"""
    )["createSession"]["session"]
    assert created["id"] == relay_id("Session", created["key"])
    page = client.data("{ sessions(first: 5) { edges { node { id key } } } }")["sessions"]
    assert all(
        edge["node"]["id"] == relay_id("Session", edge["node"]["key"]) for edge in page["edges"]
    )
    one = client.data("query($key: ID!) { session(key: $key) { id } }", {"key": key})
    assert one["session"]["id"] == relay_id("Session", key)


def test_node_refetches_a_session_by_its_id(client: Client) -> None:
    key = client.create(
        dataSource="car-a", identifier="lap", details=[{"name": "t", "value": "1"}]
    )["key"]
    node = client.data(NODE, {"id": relay_id("Session", key)})["node"]
    assert node == {
        "__typename": "Session",
        "id": relay_id("Session", key),
        "key": key,
        "identifier": "lap",
        "details": [{"name": "t", "value": "1"}],
    }


def test_node_is_null_for_an_unknown_session_or_another_type(client: Client) -> None:
    key = client.create(dataSource="car-a", identifier="lap")["key"]
    unknown = "00000000-0000-0000-0000-000000000000"
    assert client.data(NODE, {"id": relay_id("Session", unknown)}) == {"node": None}
    assert client.data(NODE, {"id": relay_id("DataSource", key)}) == {"node": None}


def test_nodes_answers_in_order_with_null_for_each_unknown(client: Client) -> None:
    first = client.create(dataSource="car-a", identifier="1")["key"]
    second = client.create(dataSource="car-b", identifier="2")["key"]
    ids = [
        relay_id("Session", second),
        relay_id("Session", "00000000-0000-0000-0000-000000000000"),
        relay_id("Session", first),
        relay_id("Other", first),
        relay_id("Session", second),
    ]
    nodes = client.data(NODES, {"ids": ids})["nodes"]
    assert nodes == [
        {"id": ids[0], "key": second},
        None,
        {"id": ids[2], "key": first},
        None,
        {"id": ids[4], "key": second},
    ]


def test_ids_that_are_not_global_ids_are_refused_as_validation_errors(client: Client) -> None:
    for bad in ["not base64!", base64.b64encode(b"no separator").decode(), "", "\u00e9"]:
        assert codes(client.execute(NODE, {"id": bad})) == ["VALIDATION"], bad
    assert codes(client.execute(NODES, {"ids": [relay_id("Session", "k"), "%%%"]})) == [
        "VALIDATION"
    ]


def test_nodes_takes_at_most_a_page_of_ids(client: Client) -> None:
    key = client.create(dataSource="car-a", identifier="1")["key"]
    assert len(client.data(NODES, {"ids": [relay_id("Session", key)] * 100})["nodes"]) == 100
    assert codes(client.execute(NODES, {"ids": [relay_id("Session", key)] * 101})) == ["VALIDATION"]


def test_node_and_nodes_answer_within_the_callers_scope(make_server: Any) -> None:
    server: LiveServer = make_server(tokens=TOKENS)
    with Client(server.url, {"Authorization": f"Bearer {ADMIN}"}) as admin:
        mine = admin.create(dataSource="car-a", identifier="mine")["key"]
        theirs = admin.create(dataSource="car-b", identifier="theirs")["key"]
    with Client(server.url, {"Authorization": f"Bearer {READER_A}"}) as reader:
        assert reader.data(NODE, {"id": relay_id("Session", theirs)}) == {"node": None}
        assert reader.data(NODE, {"id": relay_id("Session", mine)})["node"]["key"] == mine
        ids = [relay_id("Session", theirs), relay_id("Session", mine)]
        assert reader.data(NODES, {"ids": ids})["nodes"] == [None, {"id": ids[1], "key": mine}]
