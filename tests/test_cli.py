"""The `session-service` command, driven as a black box: serve, migrate, export-schema."""

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.multiprocess import MultiProcessCollector

from tests.client import Client

ROOT = Path(__file__).resolve().parent.parent
COMMAND = str(Path(sys.executable).parent / "session-service")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _environment(database_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SESSION_SERVICE_")}
    return {**env, "SESSION_SERVICE_DATABASE_URL": database_url, **extra}


@pytest.fixture
def served(database_url: str, tmp_path: Path) -> Iterator[str]:
    port = _free_port()
    process = subprocess.Popen(
        [COMMAND, "serve", "--port", str(port)],
        env=_environment(database_url),
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_healthy(url, process)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_serve_answers_graphql_and_subscriptions(served: str) -> None:
    started = """subscription { sessionStarted(dataSource: "car-1") { sessionKey kind } }"""
    with Client(served) as client, client.subscribe(started) as subscription:
        session = client.create(dataSource="car-1")
        event = subscription.next()["sessionStarted"]
        assert event == {"sessionKey": session["key"], "kind": "STARTED"}


def test_migrate_creates_the_schema_and_is_repeatable(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}"
    for _ in range(2):
        subprocess.run([COMMAND, "migrate"], env=_environment(url), check=True, timeout=60)
    assert (tmp_path / "fresh.db").stat().st_size > 0


def test_export_schema_prints_the_committed_schema() -> None:
    result = subprocess.run(
        [COMMAND, "export-schema", "--output", "-"],
        env=_environment("sqlite+aiosqlite:///unused.db"),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert result.stdout == (ROOT / "schema.graphql").read_text()


def test_several_workers_on_the_memory_bus_are_refused(tmp_path: Path) -> None:
    result = subprocess.run(
        [COMMAND, "serve", "--workers", "2", "--port", str(_free_port())],
        env=_environment(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "SESSION_SERVICE_BROADCAST_URL" in result.stderr


def test_invalid_configuration_is_refused_naming_the_key(tmp_path: Path) -> None:
    result = subprocess.run(
        [COMMAND, "migrate"],
        env=_environment("sqlite+aiosqlite:///x.db", SESSION_SERVICE_EVENT_POLL_INTERVAL="soon"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "SESSION_SERVICE_EVENT_POLL_INTERVAL" in result.stderr


def test_metrics_add_up_across_two_worker_processes(tmp_path: Path, redis_url: str) -> None:
    port = _free_port()
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    env = _environment(
        f"sqlite+aiosqlite:///{tmp_path / 'workers.db'}",
        SESSION_SERVICE_BROADCAST_URL=redis_url,
        PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
    )
    process = subprocess.Popen(
        [COMMAND, "serve", "--workers", "2", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_healthy(url, process)
        created = 0
        # New connections spread over the workers; stop once both have created sessions.
        deadline = time.monotonic() + 60
        while _workers_that_created(metrics_dir, "car-w") < 2:
            assert time.monotonic() < deadline, "the work never reached both workers"
            with Client(url) as client:
                client.create(dataSource="car-w")
            created += 1
        for _ in range(4):  # whichever worker answers the scrape, the sums are the same
            text = httpx.get(f"{url}/metrics").text
            assert (
                f'session_service_sessions_created_total{{data_source="car-w"}} {created}.0' in text
            )
            assert f'stream_api_sessions_total{{data_source="car-w"}} {created}.0' in text
    finally:
        process.terminate()
        process.wait(timeout=30)


def _wait_until_healthy(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{url}/healthz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert process.poll() is None, "session-service serve exited"
        assert time.monotonic() < deadline, "session-service serve did not answer in 30 s"
        time.sleep(0.1)


def _workers_that_created(metrics_dir: Path, data_source: str) -> int:
    """How many worker processes have counted a created session of this data source."""
    count = 0
    for path in metrics_dir.glob("counter_*.db"):
        for metric in MultiProcessCollector.merge([str(path)], accumulate=False):
            if any(
                sample.name == "session_service_sessions_created_total"
                and sample.labels.get("data_source") == data_source
                and sample.value > 0
                for sample in metric.samples
            ):
                count += 1
    return count
