"""Automatic cleanup: idle sessions end once, old ended sessions are deleted."""

import time
from typing import Any

from tests.client import Client

STOPPED = """subscription { sessionEvents(kinds: [STOPPED]) { sessionKey kind } }"""


def test_idle_session_is_ended_once_even_with_two_instances_racing(make_server: Any) -> None:
    cleanup = {"idle_timeout_seconds": 0.5, "cleanup_interval_seconds": 0.05}
    first = make_server(**cleanup)
    second = make_server(**cleanup)
    with Client(first.url) as client, client.subscribe(STOPPED) as subscription:
        keys = {client.create(dataSource="car-1")["key"] for _ in range(3)}
        stopped = [subscription.next()["sessionEvents"]["sessionKey"] for _ in keys]
        assert sorted(stopped) == sorted(keys)
        # Both instances swept for a while: still one STOPPED event per session.
        assert subscription.nothing_within(1.0)
        for key in keys:
            session = client.session(key)
            assert session is not None
            assert session["status"] == "ENDED"
            assert session["revision"] == 2
    assert second.url != first.url


def test_active_session_is_not_ended_by_the_idle_timeout(make_server: Any) -> None:
    server = make_server(idle_timeout_seconds=3600, cleanup_interval_seconds=0.05)
    with Client(server.url) as client, client.subscribe(STOPPED) as subscription:
        key = client.create()["key"]
        assert subscription.nothing_within(0.5)
        session = client.session(key)
        assert session is not None
        assert session["status"] == "LIVE"


def test_ended_sessions_are_deleted_after_the_retention_period(make_server: Any) -> None:
    server = make_server(session_retention_seconds=0.3, cleanup_interval_seconds=0.05)
    with Client(server.url) as client:
        ended = client.create()["key"]
        live = client.create()["key"]
        assert client.end(ended)["__typename"] == "SessionEnded"
        deadline = time.monotonic() + 10
        while client.session(ended) is not None:
            assert time.monotonic() < deadline, "the ended session was not deleted in 10 s"
            time.sleep(0.05)
        assert client.session(live) is not None
