"""/healthz answers while the process runs; /readyz reports the database and the bus."""

import time
from pathlib import Path
from typing import Any

import pytest

from tests.client import Client
from tests.services import PrivateRedis


def test_health_endpoints_answer(client: Client) -> None:
    assert client.http.get("/healthz").json() == {"status": "ok"}
    ready = client.http.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ok", "database": "ok", "bus": "connected"}


def _wait_for_bus(client: Client, state: str, seconds: float = 15) -> float:
    started = time.monotonic()
    while (bus := client.http.get("/readyz").json()["bus"]) != state:
        assert time.monotonic() - started < seconds, f"bus still {bus} after {seconds}s"
        time.sleep(0.05)
    return time.monotonic() - started


def _reconnects(client: Client) -> float:
    for line in client.http.get("/metrics").text.splitlines():
        if line.startswith("session_service_bus_reconnects_total "):
            return float(line.split()[1])
    raise AssertionError("no bus reconnect counter")


def test_readyz_reports_a_lost_bus_and_its_recovery(make_server: Any, tmp_path: Path) -> None:
    private = PrivateRedis(tmp_path).start()
    try:
        server = make_server(broadcast_url=private.url)
        with Client(server.url) as client:
            _wait_for_bus(client, "connected")
            before = _reconnects(client)
            private.kill()
            _wait_for_bus(client, "reconnecting")
            assert _reconnects(client) > before
            ready = client.http.get("/readyz")
            # Still ready: events keep flowing through the periodic log reads.
            assert ready.status_code == 200
            assert ready.json()["status"] == "degraded"
            private.start()
            _wait_for_bus(client, "connected")
    finally:
        private.stop()


def test_readyz_fails_when_the_database_is_gone(make_server: Any, postgres: Any) -> None:
    # PostgreSQL only: a SQLite file cannot be taken away from an open connection.
    if postgres is None:
        pytest.skip("needs SESSION_SERVICE_TEST_POSTGRES_URL")
    database_url = postgres.new()
    server = make_server(database_url=database_url)
    with Client(server.url) as client:
        assert client.http.get("/readyz").status_code == 200
        postgres.drop(database_url)
        ready = client.http.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["status"] == "unavailable"
        assert client.http.get("/healthz").status_code == 200
        started = time.monotonic()
        create = 'mutation { createSession(input: {dataSource: "a"}) { __typename } }'
        result = client.execute(create)
        assert result["errors"][0]["extensions"]["code"] == "UNAVAILABLE"
        assert time.monotonic() - started < 10
