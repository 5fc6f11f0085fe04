"""A field whose error nulls the whole answer makes graphql-core cancel its siblings: nothing
they were doing may leak into later requests (a reader connection left inside a snapshot's
transaction, a loader's shared future cancelled under other fields awaiting it)."""

from tests.client import Client

# sessions(first: 0) fails (VALIDATION) and, being non-null, nulls the data: graphql-core
# cancels the snapshot read and the walks running beside it.
FAILING = (
    "query F($key: ID!) { sessions(first: 0) { totalCount } "
    "sessionSnapshot { cursor sessions { key streams } } "
    "a: session(key: $key) { streams descendants { session { key streams } } } "
    "b: session(key: $key) { streams parents { streams } } }"
)


def test_cancelled_siblings_leave_nothing_behind(client: Client) -> None:
    child = client.create(identifier="child", streams=["s"])["key"]
    key = client.create(identifier="parent", associateSessionKeys=[child], streams=["t"])["key"]
    for _ in range(60):
        response = client.http.post("/graphql", json={"query": FAILING, "variables": {"key": key}})
        assert response.status_code == 200, response.text
        assert response.json()["errors"][0]["extensions"]["code"] == "VALIDATION"
    for _ in range(10):
        snapshot = client.data("{ sessionSnapshot { cursor sessions { key } } }")
        assert {s["key"] for s in snapshot["sessionSnapshot"]["sessions"]} == {key, child}
