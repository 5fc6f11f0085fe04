"""The client examples in examples/, run against a live server as a reader would run them."""

import base64
import hashlib
import json
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.client import Client, Subscription
from tests.services import Served, free_port, service_environment, snippet

ROOT = Path(__file__).resolve().parent.parent
PYTHON_EXAMPLE = ROOT / "examples" / "python" / "resume.py"
JS_EXAMPLE = ROOT / "examples" / "js"


class Example:
    """An example's process, its stdout and stderr read line by line as they come."""

    def __init__(self, command: list[str], cwd: Path | None = None) -> None:
        self.process = subprocess.Popen(
            command,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={k: v for k, v in os.environ.items() if k != "SESSION_SERVICE_TOKEN"},
        )
        self.stdout: queue.Queue[str] = queue.Queue()
        self.stderr: list[str] = []
        self._stderr: queue.Queue[str] = queue.Queue()
        self._readers = [
            threading.Thread(target=self._read, args=(stream, lines), daemon=True)
            for stream, lines in (
                (self.process.stdout, self.stdout),
                (self.process.stderr, self._stderr),
            )
        ]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _read(stream: Any, lines: "queue.Queue[str]") -> None:
        for line in stream:
            lines.put(line.rstrip("\n"))

    def said(self, text: str, timeout: float = 30) -> str:
        """Waits for a stderr line containing `text` (lines before it are kept in .stderr)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._stderr.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"the example never said {text!r}: {self.stderr}") from None
            self.stderr.append(line)
            if text in line:
                return line

    def events(self, count: int, timeout: float = 30) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        found: list[dict[str, Any]] = []
        while len(found) < count:
            try:
                found.append(json.loads(self.stdout.get(timeout=deadline - time.monotonic())))
            except (queue.Empty, ValueError):
                raise AssertionError(f"{len(found)} of {count} events: {self.stderr}") from None
        return found

    def finish(self, timeout: float = 30) -> int:
        return self.process.wait(timeout=timeout)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=30)
        for reader in self._readers:
            reader.join(timeout=10)
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def run_example() -> Iterator[Any]:
    started: list[Example] = []

    def run(command: list[str], cwd: Path | None = None) -> Example:
        started.append(Example(command, cwd))
        return started[-1]

    yield run
    for example in started:
        example.stop()


def replayed(url: str, after: str, count: int) -> list[str]:
    """The cursors of the `count` events after `after`, read back from the event log."""
    query = "subscription S($after: String) { sessionEvents(after: $after) { cursor } }"
    with Subscription(url, query, {"after": after}) as subscription:
        return [subscription.next()["sessionEvents"]["cursor"] for _ in range(count)]


def test_python_example_resumes_after_a_server_restart_without_gaps_or_duplicates(
    tmp_path: Path, run_example: Any
) -> None:
    env = service_environment(f"sqlite+aiosqlite:///{tmp_path / 'sessions.db'}")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with Served(env, cwd=tmp_path, port=port):
        example = run_example(
            [sys.executable, str(PYTHON_EXAMPLE), "--url", f"{url}/graphql", "--count", "6"]
        )
        snapshot_cursor = example.said("snapshot:").rsplit(" ", 1)[1]
        with Client(url) as client:
            first = client.create(dataSource="car-44", identifier="before the restart")
            client.mutate(
                "updateSessionDetails",
                "UpdateSessionDetailsInput",
                sessionKey=first["key"],
                details=[{"name": "lap", "value": "1"}],
            )
        before = example.events(2)
    example.said("disconnected")

    # The same database served on another port while the example cannot reach it: these events
    # are committed in its gap, and reach it only by resuming from its cursor.
    with Served(env, cwd=tmp_path) as elsewhere, Client(elsewhere.url) as client:
        second = client.create(dataSource="car-44", identifier="in the gap")
        client.mutate(
            "addSessionStreams", "AddSessionStreamsInput", sessionKey=second["key"], streams=["gps"]
        )
        client.end(first["key"])

    with Served(env, cwd=tmp_path, port=port), Client(url) as client:
        example.said(f"subscribing after cursor {before[-1]['cursor']}")
        third = client.create(dataSource="bench-2", identifier="after the restart")
        after = example.events(4)
        assert example.finish() == 0
        expected = replayed(url, snapshot_cursor, 6)

    events = before + after
    assert [event["cursor"] for event in events] == expected
    assert [(event["kind"], event["sessionKey"]) for event in events] == [
        ("STARTED", first["key"]),
        ("UPDATED", first["key"]),
        ("STARTED", second["key"]),
        ("UPDATED", second["key"]),
        ("STOPPED", first["key"]),
        ("STARTED", third["key"]),
    ]


def _node_missing() -> str | None:
    if shutil.which("node") is None:
        return "node is not installed"
    if not (JS_EXAMPLE / "node_modules" / "graphql-ws").is_dir():
        return "examples/js/node_modules is missing (npm ci)"
    return None


def test_js_example_prints_the_events_created_while_it_runs(
    tmp_path: Path, run_example: Any
) -> None:
    if reason := _node_missing():
        message = f"JS example: {reason}; `make test` installs it"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    env = service_environment(f"sqlite+aiosqlite:///{tmp_path / 'sessions.db'}")
    with Served(env, cwd=tmp_path) as served, Client(served.url) as client:
        client.create(dataSource="car-44", identifier="before it started")
        example = run_example(
            ["node", "subscribe.mjs", "--url", f"{served.url}/graphql", "--count", "3"],
            cwd=JS_EXAMPLE,
        )
        assert example.said("snapshot:").endswith("1 live sessions, cursor 1")
        session = client.create(
            dataSource="car-44", identifier="FP1 run 3", details=[{"name": "lap", "value": "1"}]
        )
        client.mutate(
            "updateSessionIdentifier",
            "UpdateSessionIdentifierInput",
            sessionKey=session["key"],
            identifier="FP1 run 3b",
        )
        client.end(session["key"])
        events = example.events(3)
        assert example.finish() == 0
    assert [(e["kind"], e["sessionKey"], e["dataSource"]) for e in events] == [
        ("STARTED", session["key"], "car-44"),
        ("UPDATED", session["key"], "car-44"),
        ("STOPPED", session["key"], "car-44"),
    ]
    assert events[-1]["status"] == "ENDED"
    assert len({event["cursor"] for event in events}) == 3


def _require_node() -> None:
    if reason := _node_missing():
        message = f"JS example: {reason}; `make test` installs it"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


@pytest.mark.parametrize("persisted", [False, True], ids=["plain", "persisted"])
def test_apollo_clients_default_cache_updates_a_watched_session_from_a_mutation(
    tmp_path: Path, run_example: Any, persisted: bool
) -> None:
    """Apollo Client, unconfigured but for the unions' possibleTypes: the rename's result
    reaches the watched query through the cache, normalised by the session's global id, and
    its event arrives through GraphQLWsLink. With the persisted-queries link (hashes, queries
    by GET) in the production profile, too."""
    _require_node()
    profile = {"SESSION_SERVICE_PROFILE": "production"} if persisted else {}
    env = service_environment(f"sqlite+aiosqlite:///{tmp_path / 'sessions.db'}", **profile)
    with Served(env, cwd=tmp_path) as served, Client(served.url) as client:
        key = client.create(dataSource="car-44", identifier="FP1")["key"]
        command = ["node", "apollo.mjs", "--url", f"{served.url}/graphql", "--key", key,
                   "--rename", "FP1 run 2"]  # fmt: skip
        example = run_example([*command, "--persisted"] if persisted else command, cwd=JS_EXAMPLE)
        seen, event = example.events(2), example.events(1)[0]
        assert example.finish() == 0, example.stderr
        registered = client.http.get(
            "/graphql",
            params={"extensions": json.dumps({"persistedQuery": {"version": 1,
                                              "sha256Hash": _apollo_hash()}}),
                    "variables": json.dumps({"key": key})},
        )  # fmt: skip
    assert [(s["key"], s["identifier"], s["revision"]) for s in seen] == [
        (key, "FP1", 1),
        (key, "FP1 run 2", 2),
    ]
    assert seen[0]["id"] == seen[1]["id"] == base64.b64encode(f"Session:{key}".encode()).decode()
    # The rename's event, through GraphQLWsLink from the snapshot's cursor.
    assert event == {
        "__typename": "SessionEvent",
        "kind": "UPDATED",
        "session": {"__typename": "Session", "id": seen[0]["id"], "identifier": "FP1 run 2",
                    "revision": 2},
    }  # fmt: skip
    # The link registered the watched query's text under its hash: by GET it now answers.
    found = registered.json().get("data")
    assert (found is not None) is persisted, registered.text


def _apollo_hash() -> str:
    """The SHA-256 of the query Apollo sent for apollo.mjs's watched query, as it prints it."""
    text = (
        "query Session($key: ID!) {\n  session(key: $key) {\n    id\n    key\n    identifier\n"
        "    revision\n    __typename\n  }\n}"
    )
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.mark.parametrize("persisted", [False, True], ids=["plain", "persisted"])
def test_urql_queries_by_get_out_of_the_box(
    tmp_path: Path, run_example: Any, persisted: bool
) -> None:
    """urql's default client sends queries by GET; its persisted exchange sends hashes (by GET),
    and the text once when asked."""
    _require_node()
    env = service_environment(f"sqlite+aiosqlite:///{tmp_path / 'sessions.db'}")
    with Served(env, cwd=tmp_path) as served, Client(served.url) as client:
        key = client.create(dataSource="car-44", identifier="FP1")["key"]
        command = ["node", "urql.mjs", "--url", f"{served.url}/graphql"]
        example = run_example([*command, "--persisted"] if persisted else command, cwd=JS_EXAMPLE)
        answers = [example.events(1)[0], example.events(1)[0]]
        assert example.finish() == 0, example.stderr
    relay_id = base64.b64encode(f"Session:{key}".encode()).decode()
    expected = [{"id": relay_id, "key": key, "identifier": "FP1", "__typename": "Session"}]
    assert answers == [expected, expected]


def test_a_relay_fetch_and_curl_run_trusted_documents_by_id(
    tmp_path: Path, run_example: Any
) -> None:
    """The manifest of examples/js/documents, made by `session-service documents export`, as
    the only documents the service runs; Relay's fetch function and curl name them by id."""
    _require_node()
    manifest = tmp_path / "manifest.json"
    subprocess.run(
        [sys.executable, "-m", "api.cli", "documents", "export", str(JS_EXAMPLE / "documents"),
         "--output", str(manifest)],
        check=True, timeout=60,
    )  # fmt: skip
    [live] = json.loads(manifest.read_text())["operations"]
    env = service_environment(
        f"sqlite+aiosqlite:///{tmp_path / 'sessions.db'}",
        SESSION_SERVICE_TRUSTED_DOCUMENTS=str(manifest),
    )
    with Served(env, cwd=tmp_path) as served:
        with Client(served.url) as client:
            refused = client.execute("{ currentSessions { key } }")
            assert refused["errors"][0]["extensions"]["code"] == "PERSISTED_QUERY_REQUIRED"
            # Mutations sent by their text are refused too: only admin tokens may (none here).
            created = client.execute(
                'mutation { createSession(input: {dataSource: "car-44"}) { __typename } }'
            )
            assert created["errors"][0]["extensions"]["code"] == "PERSISTED_QUERY_REQUIRED"
        example = run_example(
            ["node", "relay.mjs", "--url", f"{served.url}/graphql", "--id", live["id"],
             "--variables", '{"dataSource": "car-44"}'],
            cwd=JS_EXAMPLE,
        )  # fmt: skip
        [data] = example.events(1)
        assert example.finish() == 0, example.stderr
        curl = subprocess.run(
            ["curl", "-s", f"{served.url}/graphql", "-H", "content-type: application/json",
             "-d", json.dumps({"documentId": f"sha256:{live['id']}"})],
            capture_output=True, text=True, timeout=30, check=True,
        )  # fmt: skip
    assert data == {"currentSessions": []}
    assert json.loads(curl.stdout) == {"data": {"currentSessions": []}}


@pytest.mark.parametrize(
    ("name", "file"),
    [("apollo-client", "apollo.mjs"), ("urql", "urql.mjs"), ("relay", "relay.mjs")],
)
def test_the_readme_shows_the_code_the_examples_run(name: str, file: str) -> None:
    readme = (JS_EXAMPLE.parent.parent / "README.md").read_text()
    assert snippet(JS_EXAMPLE / file, name) in readme
