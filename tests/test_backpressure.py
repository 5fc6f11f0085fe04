"""A subscriber that stops reading is closed with 1013 and costs bounded memory; others go on."""

import json
import statistics
import threading
import time
from pathlib import Path

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect
from websockets.typing import Subprotocol

from tests.client import Client
from tests.services import Served, service_environment

HEAVY = """subscription { sessionEvents { cursor session { details { name value } } } }"""
LIGHT = """subscription { sessionEvents { cursor sessionKey } }"""
EVENTS = 2500
VALUE = "x" * 4000  # about 4 KB an event, so the stalled socket's buffers fill


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_slow_consumer_is_closed_with_1013_while_others_keep_their_pace(tmp_path: Path) -> None:
    env = service_environment(
        f"sqlite+aiosqlite:///{tmp_path / 'slow.db'}",
        SESSION_SERVICE_SUBSCRIBER_QUEUE_SIZE="100",
        # Keepalive would close the stalled socket (1011) first on a slow machine.
        SESSION_SERVICE_WEBSOCKET_PING_INTERVAL_SECONDS="300",
    )
    with Served(env) as server, Client(server.url) as client:
        ws_url = server.url.replace("http://", "ws://") + "/graphql"
        # No client keepalive: a client that stops reading cannot answer pongs either.
        with connect(
            ws_url, subprotocols=[Subprotocol("graphql-transport-ws")], ping_interval=None
        ) as slow:
            slow.send(json.dumps({"type": "connection_init"}))
            assert json.loads(slow.recv(timeout=10))["type"] == "connection_ack"
            slow.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": HEAVY}}))
            slow.send(json.dumps({"type": "ping"}))
            assert json.loads(slow.recv(timeout=10))["type"] == "pong"

            with client.subscribe(LIGHT) as fast:

                def latency() -> float:
                    started = time.monotonic()
                    client.create(dataSource="probe")
                    fast.next()
                    return time.monotonic() - started

                baseline = statistics.median(latency() for _ in range(20))
                rss_before = rss_mb(server.process.pid)

                def write() -> None:
                    with Client(server.url) as writer:
                        for _ in range(EVENTS // 4):
                            writer.create(details=[{"name": "blob", "value": VALUE}])

                writers = [threading.Thread(target=write) for _ in range(4)]
                for thread in writers:
                    thread.start()
                # The fast subscriber keeps up with the flood.
                deadline = time.monotonic() + 120
                received = 0
                while received < EVENTS:
                    assert time.monotonic() < deadline, f"fast subscriber got {received}"
                    fast.next()
                    received += 1
                for thread in writers:
                    thread.join(timeout=120)
                loaded = [latency() for _ in range(20)]
                rss_after = rss_mb(server.process.pid)

            # The stalled socket: it gets what was buffered, then the close that says retry.
            code = None
            try:
                while True:
                    slow.recv(timeout=10)
            except ConnectionClosed as closed:
                code = closed.rcvd.code if closed.rcvd else None
            assert code == 1013

        print(f"RSS {rss_before:.1f} -> {rss_after:.1f} MB; latency {baseline * 1000:.1f} ms")
        print(f"under load {statistics.median(loaded) * 1000:.1f} ms (medians of 20)")
        assert rss_after - rss_before < 50, (rss_before, rss_after)
        assert statistics.median(loaded) < max(2 * baseline, 0.05), (baseline, loaded)
