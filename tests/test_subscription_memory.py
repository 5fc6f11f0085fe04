"""A long-lived subscription's memory stays flat however many events it delivers."""

import json
import tracemalloc

import pytest
from websockets.sync.client import connect
from websockets.typing import Subprotocol

from tests.client import Client

SUBSCRIBERS = 20
QUERY = "subscription { sessionEvents { cursor kind session { key details { name value } } } }"


@pytest.fixture
def database_url(tmp_path: object) -> str:  # memory, not storage, is under test: SQLite only
    return f"sqlite+aiosqlite:///{tmp_path}/memory.db"


def test_memory_held_by_the_executor_does_not_grow_with_events(client: Client) -> None:
    ws_url = client.url.replace("http://", "ws://") + "/graphql"
    with connect(ws_url, subprotocols=[Subprotocol("graphql-transport-ws")]) as socket:
        socket.send(json.dumps({"type": "connection_init"}))
        assert json.loads(socket.recv(timeout=10))["type"] == "connection_ack"
        for index in range(SUBSCRIBERS):
            message = {"id": str(index), "type": "subscribe", "payload": {"query": QUERY}}
            socket.send(json.dumps(message))

        def deliver(events: int) -> None:
            for _ in range(events):
                client.create(details=[{"name": "lap", "value": "1"}])
                for _ in range(SUBSCRIBERS):
                    assert json.loads(socket.recv(timeout=10))["type"] == "next"

        deliver(20)  # warm caches
        tracemalloc.start()
        try:
            before = tracemalloc.take_snapshot()
            deliver(100)
            after = tracemalloc.take_snapshot()
        finally:
            tracemalloc.stop()
    executor_files = [tracemalloc.Filter(True, "*/graphql/execution/*")]
    grown = sum(
        stat.size_diff
        for stat in after.filter_traces(executor_files).compare_to(
            before.filter_traces(executor_files), "filename"
        )
    )
    # 2,000 deliveries: graphql-core's shared per-event memo alone would keep about 3.4 MB.
    assert grown < 300_000, f"graphql-core execution kept {grown} bytes"
