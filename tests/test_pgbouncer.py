"""The service behind PgBouncer in transaction pooling mode (SESSION_SERVICE_DATABASE_POOLER):
migrations at start-up, concurrent requests sharing two server connections, several processes,
and no answer that is an error for a change that was committed."""

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import asyncpg
import httpx
import pytest

from api import Settings
from tests.client import CREATE, UPDATE_RESULT, Client
from tests.conftest import UNLIMITED, BouncedDatabases, LiveServer
from tests.services import Served, service_environment

CREATES = 50
UPDATES = 25
READS = 25
# Every field of a created session, parents included: none of them may need a read after the
# commit that could turn a created session into an error.
CREATE_ALL = CREATE.replace("revision", "revision parents { key }")
UPDATE = (
    "mutation U($input: UpdateSessionDetailsInput!) { updateSessionDetails(input: $input) { %s } }"
    % UPDATE_RESULT
)
READ = """{ sessions(first: 20) { totalCount edges { node { key streams details { name } } } } }"""
EVENTS = """
subscription Events($after: String) {
  sessionEvents(after: $after) { kind sessionKey session { status details { name value } } }
}"""


@pytest.fixture
def bounced(pgbouncer_databases: BouncedDatabases | None) -> Iterator[tuple[str, str]]:
    """An empty database through the pooler, and the same database's direct DSN."""
    if pgbouncer_databases is None:
        pytest.skip("needs SESSION_SERVICE_TEST_POSTGRES_URL and Debian's pgbouncer")
    url = pgbouncer_databases.empty()
    yield url, pgbouncer_databases.direct(url)
    pgbouncer_databases.drop(url)


async def _rows(dsn: str, sql: str) -> list[asyncpg.Record]:
    connection = await asyncpg.connect(dsn)
    try:
        return list(await connection.fetch(sql))
    finally:
        await connection.close()


def rows(dsn: str, sql: str) -> list[asyncpg.Record]:
    return asyncio.run(_rows(dsn, sql))


async def _burst(url: str, requests: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Every request at once, each on a connection of its own."""
    limits = httpx.Limits(max_connections=len(requests))
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as http:

        async def post(query: str, variables: dict[str, Any]) -> dict[str, Any]:
            response = await http.post("/graphql", json={"query": query, "variables": variables})
            assert response.headers["content-type"].startswith("application/json"), response.text
            answer: dict[str, Any] = response.json()
            return answer

        return await asyncio.gather(*(post(query, variables) for query, variables in requests))


def _create(index: int, associate: str) -> tuple[str, dict[str, Any]]:
    fields = {
        "dataSource": "car-1",
        "identifier": f"request-{index}",
        "idempotencyKey": f"key-{index}",
        "streams": ["gps", "can"],
        "details": [{"name": "driver", "value": f"d{index}"}],
        "associateSessionKeys": [associate],
    }
    return CREATE_ALL, {"input": fields}


def test_concurrent_requests_through_pgbouncer_commit_exactly_what_they_answer(
    bounced: tuple[str, str],
) -> None:
    url, direct = bounced
    # Every request in at once: admission control's cap (64) would refuse some.
    settings = Settings(
        database_url=url,
        database_pooler="pgbouncer",
        event_poll_interval=0.5,
        max_requests_in_flight=1000,
        **UNLIMITED,
    )
    with LiveServer(settings) as server, Client(server.url) as client:  # migrates through it
        targets = [client.create(identifier=f"target-{i}")["key"] for i in range(5)]
        creates = [_create(i, targets[i % 5]) for i in range(CREATES)]
        updates = [
            (UPDATE, {"input": {"sessionKey": targets[i % 5], "details": [
                {"name": f"n{i}", "value": str(i)}]}})
            for i in range(UPDATES)
        ]  # fmt: skip
        requests = [*creates, *updates, *[(READ, {})] * READS]
        answers = asyncio.run(_burst(server.url, requests))
        # The service held more connections than PgBouncer has server connections: client
        # transactions took turns on the same two.
        opened = server.services.database._pool.get_size()
        retried = asyncio.run(_burst(server.url, creates))
        with_parents = client.data(
            "query S($key: ID!) { session(key: $key) { details { name } parents { key } } }",
            {"key": targets[0]},
        )["session"]

    assert [answer.get("errors") for answer in answers] == [None] * len(requests)
    created = [answer["data"]["createSession"] for answer in answers[:CREATES]]
    assert {result["__typename"] for result in created} == {"SessionCreated"}
    keys = {f"request-{i}": result["session"]["key"] for i, result in enumerate(created)}
    assert all(result["session"]["parents"] == [] for result in created)
    updated = [answer["data"]["updateSessionDetails"] for answer in answers[CREATES:-READS]]
    assert {result["__typename"] for result in updated} == {"SessionUpdated"}
    assert len(with_parents["details"]) == UPDATES // 5
    assert len(with_parents["parents"]) == CREATES // 5

    # Every session in the database was answered SessionCreated, exactly once, with its key.
    stored = rows(direct, "SELECT identifier, key FROM sessions WHERE identifier LIKE 'request-%'")
    assert Counter(row["identifier"] for row in stored) == Counter(list(keys))
    assert {row["identifier"]: row["key"] for row in stored} == keys
    details = rows(direct, "SELECT name FROM session_details WHERE name LIKE 'n%'")
    assert len(details) == UPDATES

    # Idempotent retries answered the first sessions and created nothing.
    assert [answer.get("errors") for answer in retried] == [None] * CREATES
    again = {
        f"request-{i}": answer["data"]["createSession"]["session"]["key"]
        for i, answer in enumerate(retried)
    }
    assert again == keys
    assert rows(direct, "SELECT count(*) FROM sessions")[0][0] == CREATES + 5

    backends = rows(
        direct,
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND pid <> pg_backend_pid()",
    )[0][0]
    print(f"{opened} service connections on {backends} server connections")
    assert opened > 2 >= backends


def test_two_instances_migrate_at_once_and_deliver_by_the_log_through_pgbouncer(
    bounced: tuple[str, str],
) -> None:
    """Two processes (whose asyncpg would number their prepared statements alike) start on an
    empty database at once, and with no bus between them a subscriber on one hears, through the
    event log read, what the other commits."""
    url, direct = bounced
    env = service_environment(
        url,
        SESSION_SERVICE_DATABASE_POOLER="pgbouncer",
        SESSION_SERVICE_EVENT_POLL_INTERVAL="0.2",
    )
    with ExitStack() as stack:
        starting = [Served(env), Served(env)]  # both processes start before either is waited on
        for served in starting:
            stack.callback(served.__exit__)
        a, b = (served.__enter__() for served in starting)
        reader, writer = stack.enter_context(Client(a.url)), stack.enter_context(Client(b.url))
        subscription = stack.enter_context(reader.subscribe(EVENTS, {"after": "0"}))
        key = writer.create(details=[{"name": "driver", "value": "ann"}])["key"]
        changed = writer.mutate(
            "updateSessionDetails",
            "UpdateSessionDetailsInput",
            sessionKey=key,
            details=[{"name": "lap", "value": "1"}],
        )
        assert changed["__typename"] == "SessionUpdated", changed
        assert writer.end(key)["__typename"] == "SessionEnded"
        started = time.monotonic()
        events = [subscription.next(timeout=10)["sessionEvents"] for _ in range(3)]
        waited = time.monotonic() - started
        found = reader.session(key)
        listed = reader.data("{ sessions(filter: {status: ENDED}) { totalCount } }")

    assert [(event["kind"], event["sessionKey"]) for event in events] == [
        ("STARTED", key),
        ("UPDATED", key),
        ("STOPPED", key),
    ]
    assert events[-1]["session"]["status"] == "ENDED"
    assert found is not None and found["status"] == "ENDED"
    assert found["details"] == [{"name": "driver", "value": "ann"}, {"name": "lap", "value": "1"}]
    assert listed["sessions"]["totalCount"] == 1
    assert waited < 5, waited
    assert rows(direct, "SELECT version_num FROM alembic_version")  # migrated through it
