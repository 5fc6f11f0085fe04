"""The bus on real Redis and PostgreSQL: heartbeats and cursors share one connection safely, and
stopping never hangs."""

import asyncio
import threading
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import pytest
from sqlalchemy.engine import make_url

from models.bus import Bus


@pytest.fixture(params=["redis", "postgres"])
def bus_url(request: pytest.FixtureRequest, postgres: Any) -> Iterator[str]:
    if request.param == "redis":
        yield request.getfixturevalue("redis_url")
        return
    if postgres is None:
        pytest.skip("PostgreSQL bus: set SESSION_SERVICE_TEST_POSTGRES_URL to run it")
    yield make_url(postgres.url).set(drivername="postgresql").render_as_string(False)


T = TypeVar("T")


def run_within(seconds: float, scenario: Coroutine[Any, Any, T]) -> T:
    """Run the scenario on its own loop in a thread: a bus that cannot stop fails the test
    instead of hanging it."""
    outcome: list[T] = []
    thread = threading.Thread(target=lambda: outcome.append(asyncio.run(scenario)), daemon=True)
    thread.start()
    thread.join(seconds)
    assert outcome, f"the scenario did not finish within {seconds}s"
    return outcome[0]


async def _bus(url: str, heard: list[int], lost: list[None], heartbeat: float) -> Bus:
    bus = Bus(
        url,
        on_message=heard.append,
        on_connected=lambda: None,
        on_lost=lambda: lost.append(None),
        heartbeat=heartbeat,
    )
    await bus.start()
    assert bus.connected
    return bus


def test_cursors_published_among_constant_heartbeats_all_arrive_without_reconnecting(
    bus_url: str,
) -> None:
    async def scenario() -> tuple[list[int], list[None]]:
        heard: list[int] = []
        lost: list[None] = []
        bus = await _bus(bus_url, heard, lost, heartbeat=0)
        try:
            for cursor in range(1, 301):
                bus.publish(cursor)
                await asyncio.sleep(0.002)
            for _ in range(500):  # up to 5 s
                if heard and heard[-1] == 300:
                    break
                await asyncio.sleep(0.01)
        finally:
            await bus.stop()
        return heard, lost

    heard, lost = run_within(30, scenario())
    assert lost == [], "the bus reconnected"
    assert heard[-1] == 300
    assert heard == sorted(heard)


def test_stop_returns_promptly_while_heartbeats_are_in_flight(bus_url: str) -> None:
    async def scenario() -> None:
        bus = await _bus(bus_url, [], [], heartbeat=0)
        await asyncio.sleep(0.3)
        await bus.stop()
        assert all(task.done() for task in bus._tasks)

    for _ in range(5):
        run_within(15, scenario())
