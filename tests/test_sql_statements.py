"""No N+1: the SQL statements one query costs do not grow with the sessions it returns."""

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from tests.client import CREATE, Client
from tests.conftest import LiveServer


@pytest.fixture
def server(make_server: Any) -> LiveServer:
    # Trees are built with hundreds of createSession calls to a request: past the default
    # document limits, which protect the service, not what these tests measure.
    # The response cache would answer a repeated query without its statements.
    server: LiveServer = make_server(
        max_aliases=1000, max_tokens=1_000_000, max_body_bytes=16 * 2**20, response_cache=False
    )
    return server


# The event hub reads the log in the background, and SQLite opens each transaction with a
# BEGIN statement: neither is a statement of the query under measurement.
NOT_THE_QUERY = re.compile(r"^\s*(BEGIN|COMMIT|ROLLBACK)\b|session_events|event_log_state", re.I)

NESTED = """
{
  currentSessions {
    key
    associates { associates { associates { key details { name } } } }
  }
}"""

TREE = """
query Tree($key: ID!) {
  session(key: $key) {
    descendants(maxDepth: 12) {
      depth viaKey
      session { key status details { name value } associateSessionKeys parents { key } }
    }
  }
}"""

EVERY_TREE = """
{
  currentSessions {
    key
    descendants { depth session { key } }
    ancestors { depth session { key } }
  }
}"""


@contextmanager
def recorded(server: LiveServer) -> Iterator[list[str]]:
    """Every SQL statement the server executes inside the block, except NOT_THE_QUERY."""
    listeners = server.services.database.listeners
    statements: list[str] = []

    def record(statement: str) -> None:
        if not NOT_THE_QUERY.search(statement):
            statements.append(statement)

    listeners.append(record)
    try:
        yield statements
    finally:
        listeners.remove(record)


def every_statement_for(server: LiveServer, client: Client, query: str) -> list[str]:
    """Every statement one request for `query` runs, transaction control included."""
    listeners = server.services.database.listeners
    statements: list[str] = []
    client.data(query)
    listeners.append(statements.append)
    try:
        assert client.data(query)
    finally:
        listeners.remove(statements.append)
    return [s for s in statements if not re.search("session_events|event_log_state", s)]


def statements_for(server: LiveServer, client: Client, query: str, **variables: Any) -> int:
    """The statements one request for `query` costs, once the connection pool is warm."""
    client.data(query, variables)
    with recorded(server) as statements:
        data = client.data(query, variables)
    assert data
    return len(statements)


def create_many(client: Client, inputs: list[dict[str, Any]]) -> list[str]:
    """Create sessions with a few requests: aliased createSession mutations run in turn."""
    keys: list[str] = []
    for start in range(0, len(inputs), 250):
        chunk = inputs[start : start + 250]
        params = ", ".join(f"$i{n}: CreateSessionInput!" for n in range(len(chunk)))
        fields = " ".join(
            f"s{n}: createSession(input: $i{n}) {{ ... on SessionCreated {{ session {{ key }} }} }}"
            for n in range(len(chunk))
        )
        variables = {f"i{n}": value for n, value in enumerate(chunk)}
        data = client.data(f"mutation Many({params}) {{ {fields} }}", variables)
        keys += [data[f"s{n}"]["session"]["key"] for n in range(len(chunk))]
    return keys


def create_tree(client: Client, size: int, fanout: int) -> list[str]:
    """A tree of `size` sessions, node i listing nodes fanout*i+1 .. fanout*i+fanout, created
    a level at a time from the leaves up; returns the keys by node number (0 is the root)."""
    depth = [0] * size
    for node in range(1, size):
        depth[node] = depth[(node - 1) // fanout] + 1
    keys = [""] * size
    for level in range(max(depth), -1, -1):
        nodes = [node for node in range(size) if depth[node] == level]
        inputs = [
            {
                "dataSource": "tree",
                "details": [{"name": "node", "value": str(node)}],
                "associateSessionKeys": [
                    keys[child]
                    for child in range(fanout * node + 1, min(fanout * node + fanout + 1, size))
                ],
            }
            for node in nodes
        ]
        for node, key in zip(nodes, create_many(client, inputs), strict=True):
            keys[node] = key
    return keys


def end_many(client: Client, keys: list[str]) -> None:
    """End sessions with one request of aliased endSession mutations."""
    params = ", ".join(f"$k{n}: ID!" for n in range(len(keys)))
    fields = " ".join(
        f"e{n}: endSession(input: {{sessionKey: $k{n}}}) {{ __typename }}" for n in range(len(keys))
    )
    variables = {f"k{n}": key for n, key in enumerate(keys)}
    data = client.data(f"mutation End({params}) {{ {fields} }}", variables)
    assert {result["__typename"] for result in data.values()} == {"SessionEnded"}


def create_families(client: Client, count: int) -> None:
    """`count` families of 11 sessions, of which only the root is live: the root lists 2
    children, which list 2 grandchildren each, which list one great-grandchild each."""
    for _ in range(count):
        great = create_many(client, [{"dataSource": "car-1"}] * 4)
        grand = create_many(
            client, [{"dataSource": "car-1", "associateSessionKeys": [key]} for key in great]
        )
        children = create_many(
            client,
            [{"dataSource": "car-1", "associateSessionKeys": grand[n : n + 2]} for n in (0, 2)],
        )
        create_many(client, [{"dataSource": "car-1", "associateSessionKeys": children}])
        end_many(client, great + grand + children)


def test_nested_associates_cost_the_same_statements_for_10_or_100_sessions(
    server: LiveServer, client: Client
) -> None:
    create_families(client, 1)
    small = statements_for(server, client, NESTED)
    create_families(client, 8)
    large = statements_for(server, client, NESTED)
    roots = client.data(NESTED)["currentSessions"]
    assert len(roots) == 9
    deepest = [
        leaf
        for root in roots
        for child in root["associates"]
        for grandchild in child["associates"]
        for leaf in grandchild["associates"]
    ]
    assert len(deepest) == 36
    assert large == small
    assert small <= 10


def test_a_query_costs_one_statement_per_batch_and_no_transaction(
    server: LiveServer, client: Client
) -> None:
    """Reads are single statements, each its own snapshot: no BEGIN or ROLLBACK round trips
    (on SQLite each is a trip to aiosqlite's thread). Here 8 batches: the live sessions, then
    the links and the linked sessions at each of three levels, then the details."""
    create_families(client, 2)
    statements = every_statement_for(server, client, NESTED)
    assert len(statements) == 8
    assert not [s for s in statements if re.match(r"\s*(BEGIN|COMMIT|ROLLBACK)", s, re.I)]


def test_descendants_of_a_1000_session_tree_cost_the_same_statements_as_of_10(
    server: LiveServer, client: Client
) -> None:
    small_tree = create_tree(client, 10, 2)
    large_tree = create_tree(client, 1000, 2)
    small = statements_for(server, client, TREE, key=small_tree[0])
    large = statements_for(server, client, TREE, key=large_tree[0])
    nodes = client.data(TREE, {"key": large_tree[0]})["session"]["descendants"]
    assert len(nodes) == 999
    assert {node["session"]["key"] for node in nodes} == set(large_tree[1:])
    assert large == small
    assert small <= 10


def test_walks_from_every_current_session_cost_statements_independent_of_roots(
    server: LiveServer, client: Client
) -> None:
    for _ in range(2):
        create_tree(client, 7, 2)
    few = statements_for(server, client, EVERY_TREE)
    for _ in range(28):
        create_tree(client, 7, 2)
    many = statements_for(server, client, EVERY_TREE)
    assert len(client.data(EVERY_TREE)["currentSessions"]) == 210
    assert many == few
    assert few <= 10


def test_a_session_asked_for_with_its_details_is_one_statement(
    server: LiveServer, client: Client
) -> None:
    key = client.create(details=[{"name": "b", "value": "2"}, {"name": "a", "value": "1"}])["key"]
    query = "query Q($key: ID!) { session(key: $key) { key details { name value } } }"
    assert statements_for(server, client, query, key=key) == 1
    assert client.data(query, {"key": key})["session"]["details"] == [
        {"name": "a", "value": "1"},
        {"name": "b", "value": "2"},
    ]
    # Through a fragment too: the compiled plan sees every field the fragments select.
    fragment = (
        "query Q($key: ID!) { session(key: $key) { key ... on Session { details { name } } } }"
    )
    assert statements_for(server, client, fragment, key=key) == 1


def test_a_walk_selecting_only_keys_reads_no_session(server: LiveServer, client: Client) -> None:
    """The walk brings each reached session's data source: the caller's scope is checked on
    it, and sessions are read only when more than their keys is selected."""
    leaf = client.create(identifier="leaf")["key"]
    middle = client.create(identifier="middle", associateSessionKeys=[leaf])["key"]
    root = client.create(identifier="root", associateSessionKeys=[middle])["key"]
    keys_only = (
        "query Q($key: ID!) { session(key: $key) { descendants { depth viaKey "
        "session { key dataSource __typename } } } }"
    )
    # The root session, then the walk.
    assert statements_for(server, client, keys_only, key=root) == 2
    more = "query Q($key: ID!) { session(key: $key) { descendants { session { identifier } } } }"
    assert statements_for(server, client, more, key=root) == 3
    assert client.data(more, {"key": root})["session"]["descendants"] == [
        {"session": {"identifier": "middle"}},
        {"session": {"identifier": "leaf"}},
    ]


def test_a_created_session_is_answered_from_its_transaction(
    server: LiveServer, client: Client
) -> None:
    """No statement after the commit (the event-log update is the transaction's last one):
    a read there that failed would answer an error for a session that exists."""
    parent = client.create()["key"]
    listeners = server.services.database.listeners
    statements: list[str] = []
    listeners.append(statements.append)
    try:
        created = client.data(
            CREATE.replace("revision", "revision parents { key } associates { key }"),
            {"input": {"dataSource": "car-1", "associateSessionKeys": [parent],
                       "streams": ["gps"], "details": [{"name": "n", "value": "v"}]}},
        )["createSession"]  # fmt: skip
    finally:
        listeners.remove(statements.append)
    assert created["session"]["parents"] == []
    assert created["session"]["associates"] == [{"key": parent}]
    last = max(i for i, sql in enumerate(statements) if sql.startswith("UPDATE event_log_state"))
    after = [sql for sql in statements[last + 1 :] if not NOT_THE_QUERY.search(sql)]
    assert after == []
