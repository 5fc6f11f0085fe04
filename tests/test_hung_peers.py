"""Peers that stop answering without closing their sockets (SIGSTOP): a paused PostgreSQL makes
every request answer UNAVAILABLE within the bound, caps what waits, and leaves no half-written or
duplicated session; a paused Redis leaves delivery to the event-log reads until the bus is back."""

import asyncio
import statistics
import threading
import time
from pathlib import Path
from typing import Any

import asyncpg

from api import Settings
from tests.client import CREATE, Client, Subscription
from tests.conftest import UNLIMITED, LiveServer
from tests.services import PrivatePostgres, PrivateRedis, pause, resume
from tests.test_scale_out import plain_dsn

# The bound under test, shorter than the default (10 s) to keep the suite quick; the margin is
# for a shared 2-core machine, not part of the promise.
BOUND = 3.0
MARGIN = 3.0
WRITERS, READERS = 6, 3
EVENTS = "subscription { sessionEvents { cursor kind sessionKey } }"
READ = "{ sessions(first: 5) { totalCount edges { node { key details { name } } } } }"


def _settings(url: str, **changes: Any) -> Settings:
    return Settings(
        database_url=url,
        event_poll_interval=0.5,
        request_timeout_seconds=BOUND,
        db_pool_size=4,
        **UNLIMITED | changes,
    )


def _new_session(key: str) -> dict[str, Any]:
    return {
        "dataSource": "car-1",
        "idempotencyKey": key,
        "details": [{"name": "a", "value": "1"}, {"name": "b", "value": "2"}],
        "streams": ["engine", "tyres"],
    }


def _stored(url: str) -> dict[str, Any]:
    """What the database holds, read straight from it."""

    async def read() -> dict[str, Any]:
        connection = await asyncpg.connect(plain_dsn(url))
        try:
            return {
                "sessions": await connection.fetch(
                    "SELECT s.key, (SELECT count(*) FROM session_details d WHERE d.session_key = "
                    "s.key) AS details, (SELECT count(*) FROM session_streams t WHERE "
                    "t.session_key = s.key) AS streams, (SELECT count(*) FROM session_events e "
                    "WHERE e.session_key = s.key) AS events FROM sessions s"
                ),
                "keys": dict(
                    await connection.fetch("SELECT key, session_key FROM idempotency_records")
                ),
            }
        finally:
            await connection.close()

    return asyncio.run(read())


def test_a_paused_database_answers_unavailable_within_the_bound_and_loses_or_doubles_nothing(
    private_postgres: PrivatePostgres,
) -> None:
    created: dict[str, str] = {}  # idempotency key -> the key its SessionCreated answer gave
    answers: list[tuple[float, float, str]] = []  # (sent at, seconds taken, outcome)
    lock = threading.Lock()
    stop = threading.Event()

    def timed(client: Client, query: str, variables: dict[str, Any]) -> dict[str, Any]:
        sent = time.monotonic()
        result = client.execute(query, variables)
        errors = result.get("errors")
        outcome = errors[0]["extensions"]["code"] if errors else "ok"
        with lock:
            answers.append((sent, time.monotonic() - sent, outcome))
        return result

    def write(writer: int) -> None:
        with Client(server.url) as client:
            for index in range(1000):
                if stop.is_set():
                    return
                key = f"w{writer}-{index}"
                deadline = time.monotonic() + 60
                while key not in created:  # the same key until it succeeds: retries are safe
                    assert time.monotonic() < deadline, f"{key} never succeeded"
                    result = timed(client, CREATE, {"input": _new_session(key)})
                    if not result.get("errors"):
                        session = result["data"]["createSession"]["session"]
                        with lock:
                            created[key] = session["key"]
                    else:
                        time.sleep(0.05)

    def read() -> None:
        with Client(server.url) as client:
            while not stop.is_set():
                timed(client, READ, {})
                time.sleep(0.02)

    with LiveServer(_settings(private_postgres.url)) as server, Client(server.url) as probe:
        with Subscription(server.url, EVENTS) as subscription:
            threads = [threading.Thread(target=write, args=(i,)) for i in range(WRITERS)]
            threads += [threading.Thread(target=read) for _ in range(READERS)]
            for thread in threads:
                thread.start()
            while len(created) < 10:
                time.sleep(0.01)
            processes = private_postgres.processes()
            pause(processes)
            paused_at = time.monotonic()
            try:
                ready = [probe.http.get("/readyz") for _ in range(2)]
                healthy = probe.http.get("/healthz")
                # Paused long enough for every client to meet the bound several times.
                while time.monotonic() - paused_at < 3 * BOUND:
                    time.sleep(0.1)
            finally:
                resume(processes)
            resumed_at = time.monotonic()
            while time.monotonic() - resumed_at < 2 and all(t.is_alive() for t in threads):
                time.sleep(0.1)  # a little load after the pause too
            stop.set()
            for thread in threads:
                thread.join(timeout=90)
                assert not thread.is_alive()
            # Every committed session reaches the subscriber that was connected all along.
            stored = _stored(private_postgres.url)
            delivered: set[str] = set()
            deadline = time.monotonic() + 30
            while len(delivered) < len(stored["sessions"]):
                assert time.monotonic() < deadline, "events committed before and after the pause"
                event = subscription.next(timeout=deadline - time.monotonic())["sessionEvents"]
                delivered.add(event["sessionKey"])
            after = probe.http.get("/readyz")

    hung = [taken for sent, taken, outcome in answers if paused_at <= sent < resumed_at - BOUND]
    outcomes = {outcome for sent, _, outcome in answers if paused_at <= sent < resumed_at - BOUND}
    recovered = [sent + taken for sent, taken, o in answers if sent > resumed_at and o == "ok"]
    print(
        f"paused {resumed_at - paused_at:.1f} s with {WRITERS} writers and {READERS} readers: "
        f"{len(hung)} requests sent while paused answered in median "
        f"{statistics.median(hung):.2f} s, max {max(hung):.2f} s (bound {BOUND} s); first "
        f"success {min(recovered) - resumed_at:.2f} s after SIGCONT; /readyz "
        f"{[r.status_code for r in ready]} in "
        f"{[round(r.elapsed.total_seconds(), 2) for r in ready]} s"
    )
    assert outcomes == {"UNAVAILABLE"}, outcomes
    assert max(hung) < BOUND + MARGIN
    assert max(taken for _, taken, _ in answers) < BOUND + MARGIN
    assert healthy.status_code == 200
    assert [r.status_code for r in ready] == [503, 503]
    assert all(r.json()["status"] == "unavailable" for r in ready)
    assert after.status_code == 200
    assert recovered and min(recovered) - resumed_at < BOUND + MARGIN
    # Exactly once: every answered session stored once, with all its parts and one event;
    # every idempotency key names one session, the one its answer gave.
    sessions = {row["key"]: row for row in stored["sessions"]}
    assert len(sessions) == len(stored["sessions"])
    assert set(created.values()) <= set(sessions)
    assert stored["keys"] == created  # each retried key made one session, the one answered
    assert set(sessions) == set(created.values())  # and no other session exists
    assert all((r["details"], r["streams"], r["events"]) == (2, 2, 1) for r in sessions.values())
    assert delivered == set(sessions)


def test_beyond_the_cap_requests_are_refused_at_once_and_served_again_once_slots_free(
    private_postgres: PrivatePostgres,
) -> None:
    """Two slots held by requests waiting on a paused database: the next request is refused
    with 503, Retry-After and OVERLOADED before either of them answers."""
    holding = threading.Event()
    held: list[str] = []

    def hold() -> None:
        with Client(server.url) as client:
            while holding.is_set():
                errors = client.execute(READ).get("errors") or [{"extensions": {"code": "ok"}}]
                held.append(errors[0]["extensions"]["code"])

    settings = _settings(private_postgres.url, max_requests_in_flight=2)
    with LiveServer(settings) as server, Client(server.url) as client:
        assert client.data(READ)["sessions"]["totalCount"] == 0
        processes = private_postgres.processes()
        pause(processes)
        try:
            holding.set()
            holders = [threading.Thread(target=hold) for _ in range(2)]
            for holder in holders:
                holder.start()
            for _ in range(50):  # a probe admitted while a holder was between requests waits
                refused = client.http.post("/graphql", json={"query": READ})
                if refused.status_code == 503:
                    break
            holding.clear()
        finally:
            resume(processes)
        for holder in holders:
            holder.join(timeout=30)
        assert refused.status_code == 503, refused.text
        assert refused.headers["retry-after"] == "1"
        assert refused.json()["errors"][0]["extensions"]["code"] == "OVERLOADED"
        assert set(held) <= {"UNAVAILABLE", "OVERLOADED", "ok"}
        assert client.data(READ)["sessions"]["totalCount"] == 0
        assert client.metrics()["session_service_requests_refused_total"] >= 1


def _bus(client: Client) -> str:
    return str(client.http.get("/readyz").json()["bus"])


def _until(condition: Any, seconds: float, what: str) -> float:
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < seconds, f"{what}: not within {seconds} s"
        time.sleep(0.05)
    return time.monotonic() - started


def test_a_paused_redis_leaves_delivery_to_the_log_reads_and_the_bus_recovers(
    tmp_path: Path, redis_url: str
) -> None:
    private = PrivateRedis(tmp_path).start()
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'sessions.db'}",
        broadcast_url=private.url,
        event_poll_interval=0.5,
        **UNLIMITED,
    )
    try:
        with LiveServer(settings) as a, LiveServer(settings) as b:
            with Client(a.url) as reader, Client(b.url) as writer:
                for client in (reader, writer):
                    _until(lambda c=client: _bus(c) == "connected", 10, "bus up")
                with reader.subscribe(EVENTS) as subscription:

                    def delivered(count: int) -> list[str]:
                        return [
                            subscription.next(timeout=10)["sessionEvents"]["sessionKey"]
                            for _ in range(count)
                        ]

                    first = writer.create()["key"]
                    assert delivered(1) == [first]
                    before = reader.metrics()["session_service_bus_reconnects_total"]
                    pause(private.processes())
                    try:
                        keys = [writer.create()["key"] for _ in range(5)]
                        assert delivered(5) == keys  # through the hubs' log reads
                        lost = _until(lambda: _bus(reader) == "reconnecting", 15, "bus lost")
                        degraded = reader.http.get("/readyz")
                    finally:
                        resume(private.processes())
                    back = max(
                        _until(lambda c=client: _bus(c) == "connected", 20, "bus back")
                        for client in (reader, writer)
                    )
                    keys = [writer.create()["key"] for _ in range(5)]
                    assert delivered(5) == keys
                    after = reader.metrics()["session_service_bus_reconnects_total"]
        print(f"Redis paused: bus lost after {lost:.1f} s; back {back:.1f} s after SIGCONT")
        assert degraded.status_code == 200
        assert degraded.json()["status"] == "degraded"
        assert after > before
    finally:
        private.stop()
