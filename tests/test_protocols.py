"""api/protocols.py's lean stand-ins for the asyncio primitives uvicorn gives each WebSocket,
and what an open subscription costs in memory with them."""

import asyncio
import tracemalloc
from typing import Any

import pytest

from api.protocols import Gate, Inbox
from tests.client import Client, Subscription

STARTED = 'subscription { sessionStarted(dataSource: "car-1") { cursor } }'


def test_the_inbox_hands_messages_over_in_order_to_a_waiting_getter() -> None:
    asyncio.run(_the_inbox_hands_messages_over_in_order_to_a_waiting_getter())


async def _the_inbox_hands_messages_over_in_order_to_a_waiting_getter() -> None:
    inbox = Inbox()
    inbox.put_nowait(1)
    inbox.put_nowait(2)
    assert not inbox.empty()
    assert [await inbox.get(), await inbox.get()] == [1, 2]
    assert inbox.empty()
    waiting = asyncio.create_task(inbox.get())
    await asyncio.sleep(0)
    assert not waiting.done()
    inbox.put_nowait(3)
    assert await asyncio.wait_for(waiting, 1) == 3


def test_a_getter_cancelled_after_being_woken_passes_the_message_on() -> None:
    asyncio.run(_a_getter_cancelled_after_being_woken_passes_the_message_on())


async def _a_getter_cancelled_after_being_woken_passes_the_message_on() -> None:
    inbox = Inbox()
    first = asyncio.create_task(inbox.get())
    second = asyncio.create_task(inbox.get())
    await asyncio.sleep(0)
    inbox.put_nowait("message")  # wakes the first, which is cancelled before it runs
    first.cancel()
    assert await asyncio.wait_for(second, 1) == "message"
    with pytest.raises(asyncio.CancelledError):
        await first
    assert inbox.empty() and not inbox._getters


def test_the_gate_lets_every_waiter_through_once_opened() -> None:
    asyncio.run(_the_gate_lets_every_waiter_through_once_opened())


async def _the_gate_lets_every_waiter_through_once_opened() -> None:
    gate = Gate()
    assert gate.is_set() and await gate.wait()
    gate.clear()
    waiters = [asyncio.create_task(gate.wait()) for _ in range(3)]
    cancelled = asyncio.create_task(gate.wait())
    await asyncio.sleep(0)
    cancelled.cancel()
    await asyncio.sleep(0)
    assert len(gate._waiters) == 3  # the cancelled waiter took itself off
    assert not any(waiter.done() for waiter in waiters)
    gate.set()
    assert await asyncio.wait_for(asyncio.gather(*waiters), 1) == [True, True, True]
    assert gate.is_set() and not gate._waiters


@pytest.fixture
def database_url(tmp_path: object) -> str:  # memory, not storage, is under test: SQLite only
    return f"sqlite+aiosqlite:///{tmp_path}/memory.db"


def test_an_open_subscription_holds_less_than_20_kb_of_the_server(
    client: Client, server: Any
) -> None:
    """What the server holds for each idle subscription, measured as the fan-out bench does
    with its `memory per idle subscription` row: 27 KB before the lean inbox and gate, the
    handshake's headers let go and WebSockets sent past Starlette's middleware, about 18 now."""
    count = 40
    client.create(dataSource="car-1")
    with Subscription(server.url, STARTED):  # warm every cache a subscription fills
        pass
    tracemalloc.start(128)
    try:
        before = tracemalloc.take_snapshot()
        subscriptions = [Subscription(server.url, STARTED).__enter__() for _ in range(count)]
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
        for subscription in subscriptions:
            subscription.__exit__(None, None, None)
    # The server's allocations, not the clients' in this process: made under uvicorn.
    served = [tracemalloc.Filter(True, "*/uvicorn/*", all_frames=True)]
    grown = sum(
        stat.size_diff
        for stat in after.filter_traces(served).compare_to(before.filter_traces(served), "filename")
    )
    assert grown / count < 20_000, f"{grown / count:.0f} bytes per open subscription"
