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
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, "session-service serve exited"
            assert time.monotonic() < deadline, "session-service serve did not answer in 30 s"
            time.sleep(0.1)
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
