"""Real clients of the streamed transports, against a live server: the graphql-sse client across
a server restart, Apollo Client's HttpLink (multipart), and EventSource in headless Chromium.
Their code is what the README shows (checked here too)."""

import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.client import Client
from tests.services import Served, free_port, service_environment, snippet
from tests.test_browser import LocalOnly, browser, local  # noqa: F401 (fixtures)
from tests.test_examples import run_example  # noqa: F401 (fixture)

if TYPE_CHECKING:
    from playwright.sync_api import Page

ROOT = Path(__file__).resolve().parent.parent
CLIENTS = ROOT / "tests" / "clients"
TOKEN = "stream-client-test-token-long-enough"
SECRET = "a-stream-cookie-secret-shared-by-restarts"


def _require_clients() -> None:
    reason = None
    if shutil.which("node") is None:
        reason = "node is not installed"
    elif not (CLIENTS / "node_modules" / "graphql-sse").is_dir():
        reason = "tests/clients/node_modules is missing (npm ci)"
    if reason:
        message = f"stream clients: {reason}; `make test` installs them"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


@pytest.mark.parametrize(
    ("path", "name"),
    [
        (CLIENTS / "sse-resume.mjs", "graphql-sse"),
        (CLIENTS / "apollo-multipart.mjs", "apollo"),
        (CLIENTS / "eventsource.js", "eventsource"),
    ],
)
def test_the_readme_shows_the_code_the_client_tests_run(path: Path, name: str) -> None:
    assert snippet(path, name) in (ROOT / "README.md").read_text()


def snapshot(url: str) -> str:
    with Client(url) as client:
        return str(client.data("{ sessionSnapshot { cursor } }")["sessionSnapshot"]["cursor"])


def test_graphql_sse_client_resumes_across_a_server_restart_missing_nothing(
    tmp_path: Path,
    run_example: Any,  # noqa: F811
) -> None:
    _require_clients()
    env = service_environment(f"sqlite+aiosqlite:///{tmp_path / 'sessions.db'}")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with Served(env, cwd=tmp_path, port=port):
        start = snapshot(url)
        client = run_example(
            ["node", "sse-resume.mjs", "--url", f"{url}/graphql", "--after", start, "--count", "6"],
            cwd=CLIENTS,
        )
        with Client(url) as writer:
            writer.create(dataSource="car-44")
            writer.create(dataSource="car-44")
        before = client.events(2)
    # The same database served elsewhere while the client cannot connect: these events are
    # committed in its gap, and reach it only by resuming from its Last-Event-ID.
    with Served(env, cwd=tmp_path) as elsewhere, Client(elsewhere.url) as writer:
        for _ in range(3):
            writer.create(dataSource="car-44")
    with Served(env, cwd=tmp_path, port=port), Client(url) as writer:
        writer.create(dataSource="bench-2")
        after = client.events(4)
        assert client.finish() == 0
    cursors = [event["cursor"] for event in before + after]
    assert cursors == [str(cursor) for cursor in range(int(start) + 1, int(start) + 7)]


def test_apollo_client_http_link_receives_multipart_subscription_events(
    tmp_path: Path,
    run_example: Any,  # noqa: F811
) -> None:
    _require_clients()
    env = service_environment(f"sqlite+aiosqlite:///{tmp_path / 'sessions.db'}")
    with Served(env, cwd=tmp_path) as served, Client(served.url) as writer:
        start = snapshot(served.url)
        command = ["node", "apollo-multipart.mjs", "--url", f"{served.url}/graphql"]
        client = run_example([*command, "--after", start, "--count", "3"], cwd=CLIENTS)
        session = writer.create(dataSource="car-44")
        writer.end(session["key"])
        writer.create(dataSource="car-44")
        events = client.events(3)
        assert client.finish() == 0
    assert [(event["cursor"], event["kind"]) for event in events] == [
        (str(int(start) + 1), "STARTED"),
        (str(int(start) + 2), "STOPPED"),
        (str(int(start) + 3), "STARTED"),
    ]


@pytest.fixture
def restartable(tmp_path: Path) -> Iterator[dict[str, Any]]:
    database = f"sqlite+aiosqlite:///{tmp_path / 'sessions.db'}"
    tokens = json.dumps([{"token": TOKEN, "role": "write", "dataSources": ["*"]}])
    env = service_environment(
        database,
        SESSION_SERVICE_TOKENS=tokens,
        SESSION_SERVICE_STREAM_COOKIE_SECRET=SECRET,
    )
    state: dict[str, Any] = {"env": env, "port": free_port(), "served": []}
    yield state
    for served in state["served"]:
        served.__exit__(None, None, None)


def received(page: "Page") -> list[str]:
    return page.evaluate("() => window.received.map((event) => event.cursor)")  # type: ignore[no-any-return]


def test_event_source_in_chromium_resumes_by_last_event_id_after_a_dropped_connection(
    local: LocalOnly,  # noqa: F811
    restartable: dict[str, Any],
    tmp_path: Path,
) -> None:
    _require_clients()
    env, port = restartable["env"], restartable["port"]
    url = f"http://127.0.0.1:{port}"
    headers = {"authorization": f"Bearer {TOKEN}"}
    first = Served(env, cwd=tmp_path, port=port).__enter__()
    restartable["served"].append(first)
    start = snapshot_with(url, headers)
    page = local.page()
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.goto(f"{url}/healthz")
    page.add_script_tag(path=str(CLIENTS / "eventsource.js"))
    page.evaluate(
        "([token, after]) => { window.received = [];"
        " return followSessionEvents(token, after, (e) => window.received.push(e))"
        ".then((source) => { window.source = source; }); }",
        [TOKEN, start],
    )
    with Client(url, headers=headers) as writer:
        writer.create(dataSource="car-44")
        wait_for(page, 1)
        first.__exit__(None, None, None)  # the connection drops
        restartable["served"].remove(first)
    with Served(env, cwd=tmp_path) as elsewhere, Client(elsewhere.url, headers) as writer:
        writer.create(dataSource="car-44")
        writer.create(dataSource="car-44")
    second = Served(env, cwd=tmp_path, port=port).__enter__()
    restartable["served"].append(second)
    with Client(url, headers=headers) as writer:
        writer.create(dataSource="car-44")
        wait_for(page, 4)
    assert received(page) == [str(cursor) for cursor in range(int(start) + 1, int(start) + 5)]
    assert not any(TOKEN in address for address in requested)


def snapshot_with(url: str, headers: dict[str, str]) -> str:
    with Client(url, headers=headers) as client:
        return str(client.data("{ sessionSnapshot { cursor } }")["sessionSnapshot"]["cursor"])


def wait_for(page: "Page", count: int, timeout: float = 20) -> None:
    """Bounded polling until the page has received `count` events."""
    deadline = time.monotonic() + timeout
    while len(received(page)) < count:
        assert time.monotonic() < deadline, f"the page received {received(page)}"
        page.wait_for_timeout(100)
