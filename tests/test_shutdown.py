"""SIGTERM under load: sockets get a retryable close code, in-flight mutations finish."""

import signal
import sqlite3
import threading
import time
from pathlib import Path

import httpx
from websockets.exceptions import ConnectionClosed

from tests.client import CREATE, Client
from tests.services import Served, service_environment

RETRYABLE = {1001, 1012}  # going away, service restart: graphql-ws clients reconnect


def test_sigterm_closes_sockets_retryably_and_lets_mutations_finish(tmp_path: Path) -> None:
    env = service_environment(
        f"sqlite+aiosqlite:///{tmp_path / 'stop.db'}",
        SESSION_SERVICE_SHUTDOWN_TIMEOUT_SECONDS="5",
    )
    outcomes: list[str] = []
    with Served(env) as server, Client(server.url) as client:
        with client.subscribe("subscription { sessionEvents { cursor } }") as subscription:
            stop = threading.Event()

            def write() -> None:
                with httpx.Client(base_url=server.url, timeout=30) as http:
                    while not stop.is_set():
                        body = {"query": CREATE, "variables": {"input": {"dataSource": "car"}}}
                        try:
                            response = http.post("/graphql", json=body)
                        except httpx.ConnectError:
                            outcomes.append("refused")  # after shutdown: fine, retry elsewhere
                            return
                        except httpx.TransportError as error:
                            outcomes.append(f"cut: {error!r}")
                            return
                        typename = response.json()["data"]["createSession"]["__typename"]
                        outcomes.append(typename)

            writers = [threading.Thread(target=write) for _ in range(4)]
            for thread in writers:
                thread.start()
            subscription.next()  # load is flowing
            server.process.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            code = None
            try:
                while True:
                    subscription.message(timeout=10)
            except ConnectionClosed as closed:
                code = closed.rcvd.code if closed.rcvd else None
            server.process.wait(timeout=15)
            exited = time.monotonic() - signalled
            stop.set()
            for thread in writers:
                thread.join(timeout=30)
    assert code in RETRYABLE
    assert exited < 10
    # Every mutation the server took was finished and answered: nothing committed unanswered.
    # (A request racing the close of an idle keep-alive connection is reset unread: retryable.)
    with sqlite3.connect(tmp_path / "stop.db") as database:
        stored = database.execute("SELECT count(*) FROM sessions").fetchone()[0]
    assert stored == outcomes.count("SessionCreated") > 0, outcomes
