"""The `session-service` command, driven as a black box (serve, migrate, export-schema), and the
app it serves in each process."""

import gc
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.multiprocess import MultiProcessCollector

from api.app import GC_THRESHOLD, create_served_app
from tests.client import Client
from tests.identity import AUDIENCE, ISSUER, SigningKey
from tests.services import COMMAND, Served, free_port, service_environment

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def served(database_url: str, tmp_path: Path) -> Iterator[str]:
    with Served(service_environment(database_url), cwd=tmp_path) as server:
        yield server.url


def test_serve_answers_graphql_and_subscriptions(served: str) -> None:
    started = """subscription { sessionStarted(dataSource: "car-1") { sessionKey kind } }"""
    with Client(served) as client, client.subscribe(started) as subscription:
        session = client.create(dataSource="car-1")
        event = subscription.next()["sessionStarted"]
        assert event == {"sessionKey": session["key"], "kind": "STARTED"}


def test_served_processes_collect_garbage_less_often(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SESSION_SERVICE_DATABASE_URL", "sqlite+aiosqlite:///:memory:")
    default = gc.get_threshold()
    try:
        create_served_app()
        assert gc.get_threshold() == GC_THRESHOLD
        assert GC_THRESHOLD[0] > default[0]
    finally:
        gc.set_threshold(*default)


def test_migrate_creates_the_schema_and_is_repeatable(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}"
    for _ in range(2):
        subprocess.run([COMMAND, "migrate"], env=service_environment(url), check=True, timeout=60)
    assert (tmp_path / "fresh.db").stat().st_size > 0


def test_export_schema_prints_the_committed_schema() -> None:
    result = subprocess.run(
        [COMMAND, "export-schema", "--output", "-"],
        env=service_environment("sqlite+aiosqlite:///unused.db"),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert result.stdout == (ROOT / "schema.graphql").read_text()


def test_metrics_add_up_across_two_worker_processes(tmp_path: Path, redis_url: str) -> None:
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    env = service_environment(
        f"sqlite+aiosqlite:///{tmp_path / 'workers.db'}",
        SESSION_SERVICE_BROADCAST_URL=redis_url,
        PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
    )
    with Served(env, "--workers", "2") as server:
        url = server.url
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


@pytest.mark.parametrize(
    ("arguments", "settings", "named"),
    [
        # Several workers cannot share the in-process bus.
        (["serve", "--workers", "2"], {}, "SESSION_SERVICE_BROADCAST_URL"),
        # Without tokens the service is open, so it stays on loopback.
        (["serve", "--host", "0.0.0.0"], {}, "SESSION_SERVICE_ALLOW_OPEN_NETWORK"),
        # An invalid value stops the start-up, naming its key.
        (["migrate"], {"SESSION_SERVICE_EVENT_POLL_INTERVAL": "soon"}, "EVENT_POLL_INTERVAL"),
    ],
)
def test_unsafe_or_invalid_set_ups_are_refused_naming_the_fix(
    tmp_path: Path, arguments: list[str], settings: dict[str, str], named: str
) -> None:
    port = ["--port", str(free_port())] if arguments[0] == "serve" else []
    result = subprocess.run(
        [COMMAND, *arguments, *port],
        env=service_environment(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}", **settings),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert named in result.stderr


def test_serve_with_only_issuers_configured_is_not_open_and_may_listen_beyond_loopback(
    tmp_path: Path,
) -> None:
    """Issuers protect the service as tokens do: no ALLOW_OPEN_NETWORK needed."""
    key = SigningKey.rsa()
    issuers = [{"issuer": ISSUER, "audience": AUDIENCE, "publicKeys": [key.jwk]}]
    env = service_environment(
        f"sqlite+aiosqlite:///{tmp_path / 'x.db'}", SESSION_SERVICE_ISSUERS=json.dumps(issuers)
    )
    with Served(env, "--host", "0.0.0.0", cwd=tmp_path) as server:
        response = httpx.post(f"{server.url}/graphql", json={"query": "{ __typename }"})
        assert response.status_code == 401
