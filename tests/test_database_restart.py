"""PostgreSQL restarted during writes: requests fail fast and retryably, retries create once."""

import threading
import time

from api import Settings
from tests.client import CREATE, Client
from tests.conftest import UNLIMITED, LiveServer
from tests.services import PrivatePostgres

WRITES = 60


def test_writes_across_a_database_restart_fail_fast_and_retries_create_once(
    private_postgres: PrivatePostgres,
) -> None:
    settings = Settings(database_url=private_postgres.url, event_poll_interval=0.5, **UNLIMITED)
    created: dict[str, str] = {}
    codes: list[str] = []
    slowest = 0.0
    with LiveServer(settings) as server:

        def write() -> None:
            nonlocal slowest
            with Client(server.url) as client:
                for index in range(WRITES):
                    key = f"write-{index}"
                    deadline = time.monotonic() + 60
                    while key not in created:
                        assert time.monotonic() < deadline, f"{key} never succeeded"
                        started = time.monotonic()
                        result = client.execute(
                            CREATE, {"input": {"dataSource": "car-1", "idempotencyKey": key}}
                        )
                        slowest = max(slowest, time.monotonic() - started)
                        if result.get("errors"):
                            codes.append(result["errors"][0]["extensions"]["code"])
                            time.sleep(0.1)
                        else:
                            created[key] = result["data"]["createSession"]["session"]["key"]
                    time.sleep(0.02)

        writer = threading.Thread(target=write)
        writer.start()
        while len(created) < 10:
            time.sleep(0.01)
        private_postgres.restart()
        writer.join(timeout=120)
        with Client(server.url) as client:
            total = client.data("{ sessions(first: 1) { totalCount } }")["sessions"]["totalCount"]
    print(f"{len(codes)} retryable errors during the restart; slowest request {slowest:.2f}s")
    assert len(created) == WRITES
    assert len(set(created.values())) == WRITES
    assert total == WRITES  # no retry created a second session
    assert set(codes) <= {"UNAVAILABLE"}, codes
    assert slowest < 10, slowest
