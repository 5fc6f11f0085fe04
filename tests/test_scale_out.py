"""Several instances on one PostgreSQL: events cross instances through the bus, in order, exactly
once by cursor, whatever the bus does in between."""

import asyncio
import statistics
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from api import Settings
from models import Database, Limits, NewSession, SessionWriter
from tests.client import Client, Subscription
from tests.conftest import UNLIMITED, LiveServer
from tests.services import PrivateRedis, Served, service_environment

EVENTS = """
subscription Events($after: String) {
  sessionEvents(after: $after) { cursor kind sessionKey }
}"""

# Long enough that only the bus, never the periodic log read, can deliver within the test.
SLOW_POLL = "30"


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[Any]:
    """Servers with default settings changed as given (not parametrized by the test database)."""
    with ExitStack() as stack:
        yield lambda **changes: stack.enter_context(LiveServer(Settings(**UNLIMITED | changes)))


@pytest.fixture
def database(postgres: Any) -> Iterator[str]:
    if postgres is None:
        pytest.skip("needs SESSION_SERVICE_TEST_POSTGRES_URL")
    url = postgres.new()
    yield url
    postgres.drop(url)


def plain_dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def logged_cursors(url: str, after: int = 0) -> list[int]:
    """The event log's cursors, straight from the database: the ledger to check clients by."""

    async def read() -> list[int]:
        connection = await asyncpg.connect(plain_dsn(url))
        try:
            rows = await connection.fetch(
                "SELECT cursor FROM session_events WHERE cursor > $1 ORDER BY cursor", after
            )
            return [row["cursor"] for row in rows]
        finally:
            await connection.close()

    return asyncio.run(read())


def receive(subscription: Subscription, count: int, seconds: float) -> list[dict[str, Any]]:
    deadline = time.monotonic() + seconds
    events: list[dict[str, Any]] = []
    while len(events) < count:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"received {len(events)} of {count} events in {seconds}s"
        events.append(subscription.next(timeout=remaining)["sessionEvents"])
    return events


@pytest.mark.parametrize("bus", ["redis", "postgres"])
def test_subscriber_on_one_instance_receives_in_order_what_another_commits(
    bus: str, database: str, redis_url: str
) -> None:
    broadcast = redis_url if bus == "redis" else plain_dsn(database)
    env = service_environment(
        database,
        SESSION_SERVICE_BROADCAST_URL=broadcast,
        SESSION_SERVICE_EVENT_POLL_INTERVAL=SLOW_POLL,
    )
    with Served(env) as a, Served(env) as b, Client(a.url) as reader, Client(b.url) as writer:
        with reader.subscribe(EVENTS) as subscription:
            latencies = []
            keys = []
            for _ in range(20):
                keys.append(writer.create(dataSource="car-1")["key"])
                sent = time.monotonic()
                event = receive(subscription, 1, 5)[0]
                latencies.append(time.monotonic() - sent)
                assert event["sessionKey"] == keys[-1]
            median, worst = statistics.median(latencies) * 1000, max(latencies) * 1000
            print(f"{bus} bus: cross-instance latency median {median:.1f} ms, max {worst:.1f} ms")
            assert max(latencies) < 2, latencies
            assert subscription.nothing_within(0.3)
    assert len(logged_cursors(database)) == 20


def test_events_flow_again_after_redis_dies_and_returns_with_an_exact_ledger(
    make_server: Any, database: str, tmp_path: Path
) -> None:
    private = PrivateRedis(tmp_path).start()
    try:
        changes = {"database_url": database, "broadcast_url": private.url}
        a, b = make_server(**changes), make_server(**changes)
        with Client(a.url) as reader, reader.subscribe(EVENTS, {"after": "0"}) as subscription:
            failures: list[str] = []
            created: list[str] = []

            def write() -> None:  # about 100 events a second for 4 seconds
                with Client(b.url) as writer:
                    for _ in range(400):
                        result = writer.create_result(dataSource="car-1")
                        if result["__typename"] != "SessionCreated":
                            failures.append(result["__typename"])
                        else:
                            created.append(result["session"]["key"])
                        time.sleep(0.01)

            writer = threading.Thread(target=write)
            writer.start()
            time.sleep(1)
            private.kill()
            time.sleep(1.5)
            private.start()
            recovered = time.monotonic()
            writer.join(timeout=60)
            assert not failures
            events = receive(subscription, len(created), 10 + time.monotonic() - recovered)
            print(
                f"Redis back: all {len(created)} events {time.monotonic() - recovered:.2f} s later"
            )
        cursors = [int(event["cursor"]) for event in events]
        assert cursors == logged_cursors(database)
        assert [event["sessionKey"] for event in events] == created
    finally:
        private.stop()


def test_a_killed_redis_subscription_is_detected_and_the_gap_filled(
    make_server: Any, database: str, tmp_path: Path
) -> None:
    private = PrivateRedis(tmp_path).start()
    try:
        changes = {"database_url": database, "broadcast_url": private.url}
        a = make_server(event_poll_interval=float(SLOW_POLL), **changes)
        b = make_server(**changes)
        with Client(a.url) as reader, Client(b.url) as writer:
            with reader.subscribe(EVENTS) as subscription:
                writer.create()
                receive(subscription, 1, 5)
                private.client().client_kill_filter(_type="pubsub")
                keys = [writer.create()["key"] for _ in range(10)]
                killed = time.monotonic()
                events = receive(subscription, 10, 8)
                print(f"pubsub killed: 10 events in {time.monotonic() - killed:.2f} s")
                assert [event["sessionKey"] for event in events] == keys
    finally:
        private.stop()


def test_a_terminated_listen_connection_is_back_within_five_seconds(
    make_server: Any, database: str
) -> None:
    changes = {"database_url": database, "broadcast_url": plain_dsn(database)}
    a = make_server(event_poll_interval=float(SLOW_POLL), **changes)
    b = make_server(**changes)
    with Client(a.url) as reader, Client(b.url) as writer:
        with reader.subscribe(EVENTS) as subscription:
            writer.create()
            receive(subscription, 1, 5)

            async def terminate_listeners() -> int:
                connection = await asyncpg.connect(plain_dsn(database))
                try:
                    return int(
                        await connection.fetchval(
                            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                            "WHERE datname = current_database() "
                            "AND (query LIKE 'LISTEN%' OR query LIKE 'SELECT pg_notify%')"
                        )
                    )
                finally:
                    await connection.close()

            assert asyncio.run(terminate_listeners()) == 2
            terminated = time.monotonic()
            key = writer.create()["key"]
            event = receive(subscription, 1, 5)[0]
            assert event["sessionKey"] == key
            print(f"LISTEN terminated: next event after {time.monotonic() - terminated:.2f} s")
            assert time.monotonic() - terminated < 5


def test_concurrent_writers_on_two_instances_yield_cursors_in_commit_order(
    make_server: Any, database: str, redis_url: str
) -> None:
    changes = {"database_url": database, "broadcast_url": redis_url}
    servers = [make_server(**changes), make_server(**changes)]
    with Client(servers[0].url) as reader, reader.subscribe(EVENTS) as subscription:

        def write(url: str) -> None:
            with Client(url) as writer:
                for _ in range(25):
                    writer.create()

        writers = [threading.Thread(target=write, args=(s.url,)) for s in servers * 2]
        for thread in writers:
            thread.start()
        for thread in writers:
            thread.join(timeout=60)
        events = receive(subscription, 100, 15)
    cursors = [int(event["cursor"]) for event in events]
    # One writer at a time: cursors are dense and delivered in the order they committed.
    assert cursors == logged_cursors(database) == list(range(cursors[0], cursors[0] + 100))


def test_an_event_committed_but_never_announced_is_delivered_within_five_seconds(
    make_server: Any, tmp_path: Path
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'relay.db'}"
    server = make_server(database_url=url)  # the default periodic log read: 1 s
    with Client(server.url) as client, client.subscribe(EVENTS) as subscription:
        # Another process commits and dies before it can tell the bus: no announcement at all.
        async def commit_silently() -> str:
            database = Database(url)
            try:
                written, _ = await SessionWriter(database, Limits()).create(NewSession("car-9"))
                return written.session.key
            finally:
                await database.dispose()

        started = time.monotonic()
        key = asyncio.run(commit_silently())
        event = receive(subscription, 1, 5)[0]
        assert event["sessionKey"] == key
        assert time.monotonic() - started < 5
