"""The response cache (api/cache.py) answers a repeated query from memory only while the data is
unchanged: never stale after a write on this or another instance, or a cleanup; per caller."""

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
from prometheus_client import REGISTRY

from api.auth import Principal, Role, Token
from api.cache import ResponseCache, asked, cache_key
from tests.client import Client
from tests.conftest import LiveServer

QUERY = "query S($key: ID!) { session(key: $key) { key identifier details { name value } } }"
ADMIN, READER_B = "admin-token-0123456789", "reader-b-0123456789"
TOKENS = (
    Token.parse({"token": ADMIN, "role": "admin"}, "[0]"),
    Token.parse({"token": READER_B, "role": "read", "dataSources": ["car-b"]}, "[1]"),
)


def _hits() -> float:
    return REGISTRY.get_sample_value("session_service_response_cache_hits_total") or 0.0


def _rename(client: Client, key: str, identifier: str) -> None:
    client.mutate(
        "updateSessionIdentifier",
        "UpdateSessionIdentifierInput",
        sessionKey=key,
        identifier=identifier,
    )


def test_a_repeated_query_is_answered_from_the_cache_until_a_write(client: Client) -> None:
    key = client.create(identifier="first", details=[{"name": "a", "value": "1"}])["key"]
    first = client.execute(QUERY, {"key": key})
    hits = _hits()
    assert client.execute(QUERY, {"key": key}) == first
    assert _hits() == hits + 1
    _rename(client, key, "second")
    assert client.data(QUERY, {"key": key})["session"]["identifier"] == "second"
    assert _hits() == hits + 1  # the write moved the data version: computed again
    assert client.data(QUERY, {"key": key})["session"]["identifier"] == "second"
    assert _hits() == hits + 2


def test_a_write_on_another_instance_is_never_answered_stale(
    make_server: Any, database_url: str
) -> None:
    """Two instances on one database, each with its own cache."""
    reading, writing = make_server(), make_server()
    with Client(reading.url) as reader, Client(writing.url) as writer:
        key = writer.create(identifier="v0")["key"]
        for round in range(1, 4):
            assert reader.data(QUERY, {"key": key})["session"]["identifier"] == f"v{round - 1}"
            assert reader.data(QUERY, {"key": key})["session"]["identifier"] == f"v{round - 1}"
            _rename(writer, key, f"v{round}")
        assert reader.data(QUERY, {"key": key})["session"]["identifier"] == "v3"


def test_on_sqlite_any_commit_by_any_process_moves_the_version(
    make_server: Any, tmp_path: Path
) -> None:
    """SQLite's version is the database's own `PRAGMA data_version`: a change committed by
    another process, even one that bypasses the service and its event log, is never answered
    stale, and the version is asked without a trip to aiosqlite's thread."""
    path = tmp_path / "versions.db"
    server = make_server(database_url=f"sqlite+aiosqlite:///{path}")
    with Client(server.url) as client:
        key = client.create(identifier="before")["key"]
        assert client.data(QUERY, {"key": key})["session"]["identifier"] == "before"
        hits = _hits()
        assert client.data(QUERY, {"key": key})["session"]["identifier"] == "before"
        assert _hits() == hits + 1
        change = f"UPDATE sessions SET identifier = 'after' WHERE key = '{key}'"
        subprocess.run([sys.executable, "-c", CHANGE_ELSEWHERE, str(path), change], check=True)
        assert client.data(QUERY, {"key": key})["session"]["identifier"] == "after"


CHANGE_ELSEWHERE = """
import sqlite3, sys
with sqlite3.connect(sys.argv[1]) as connection:
    connection.execute(sys.argv[2])
"""


def test_sessions_deleted_by_the_cleanup_are_not_answered_from_the_cache(
    make_server: Any,
) -> None:
    """The janitor's deletions record no event: they move the data version all the same."""
    server = make_server(session_retention_seconds=1, cleanup_interval_seconds=0.2)
    with Client(server.url) as client:
        key = client.create(identifier="old")["key"]
        client.end(key)
        deadline = time.monotonic() + 15
        while client.data(QUERY, {"key": key})["session"] is not None:
            assert time.monotonic() < deadline, "the ended session was still answered"
            time.sleep(0.1)


def test_callers_of_different_scopes_do_not_share_answers(make_server: Any) -> None:
    server = make_server(tokens=TOKENS)
    with (
        Client(server.url, headers={"authorization": f"Bearer {ADMIN}"}) as admin,
        Client(server.url, headers={"authorization": f"Bearer {READER_B}"}) as reader,
    ):
        key = admin.create(dataSource="car-a", identifier="a")["key"]
        assert admin.data(QUERY, {"key": key})["session"]["key"] == key
        assert admin.data(QUERY, {"key": key})["session"]["key"] == key
        assert reader.data(QUERY, {"key": key})["session"] is None
        assert reader.data(QUERY, {"key": key})["session"] is None
        assert admin.data(QUERY, {"key": key})["session"]["key"] == key


def test_a_body_met_before_is_answered_in_the_media_type_each_request_asks(
    server: LiveServer,
) -> None:
    """A body the cache has met is looked up before it is decoded (api/view.py `_post`): the
    answer still takes the request's own Accept and request id, and a write still moves it."""
    with Client(server.url) as client:
        key = client.create(identifier="first")["key"]
    body = orjson.dumps({"query": QUERY, "variables": {"key": key}})
    url = f"{server.url}/graphql"
    kinds = ("application/json", "application/graphql-response+json")
    with httpx.Client(timeout=30) as http:
        http.post(url, content=body, headers={"content-type": "application/json"})
        assert server.services.response_cache.known.get(body) is not None
        hits = _hits()
        for index, accept in enumerate(kinds * 2):
            headers = {
                "content-type": "application/json",
                "accept": accept,
                "x-request-id": f"r{index}",
            }
            answer = http.post(url, content=body, headers=headers)
            assert answer.headers["content-type"] == accept
            assert answer.headers["x-request-id"] == f"r{index}"
            assert answer.json()["data"]["session"]["identifier"] == "first"
        assert _hits() == hits + 4
        with Client(server.url) as client:
            _rename(client, key, "second")
        answer = http.post(url, content=body, headers={"content-type": "application/json"})
        assert answer.json()["data"]["session"]["identifier"] == "second"
        assert _hits() == hits + 4


def test_answers_with_errors_are_not_kept(client: Client) -> None:
    hits = _hits()
    for _ in range(3):
        result = client.execute("{ sessions(first: 0) { totalCount } }")
        assert result["errors"][0]["extensions"]["code"] == "VALIDATION"
    assert _hits() == hits


def test_the_cache_can_be_turned_off(make_server: Any) -> None:
    server: LiveServer = make_server(response_cache=False)
    with Client(server.url) as client:
        key = client.create(identifier="x")["key"]
        hits = _hits()
        for _ in range(3):
            assert client.data(QUERY, {"key": key})["session"]["key"] == key
        assert _hits() == hits


def test_the_cache_keeps_within_its_size(make_server: Any) -> None:
    """Each answer is some 90 bytes: a 200-byte cache keeps two, evicting the oldest."""
    server: LiveServer = make_server(response_cache_bytes=200)
    evictions = "session_service_response_cache_evictions_total"
    with Client(server.url) as client:
        keys = [client.create(identifier=f"s{index}")["key"] for index in range(4)]
        before = REGISTRY.get_sample_value(evictions) or 0.0
        for key in keys:
            client.data(QUERY, {"key": key})
        assert server.services.response_cache.size <= 200
        assert (REGISTRY.get_sample_value(evictions) or 0.0) >= before + 2


def test_while_lookups_miss_the_version_is_read_on_one_request_in_64() -> None:
    """Writes that outpace repeats make every lookup miss: the version's read would then cost
    more than the cache saves, so it is skipped but for probes, until hits come back."""
    cache = ResponseCache(max_bytes=1 << 20)
    caller = Principal(Role.READ, None)
    question = asked("{ dataSources { name } }", None, None)
    assert question is not None
    key = cache_key(question, caller)
    assert all(cache.worth_asking() for _ in range(64))  # hopeful at first
    for version in range(100):  # every answer stale by the next request
        cache.put(key, version, b"answer")
        assert cache.get(key, version + 1) is None
    probed = [cache.worth_asking() for _ in range(256)]
    assert sum(probed) == 256 // ResponseCache.PROBE_EVERY
    cache.put(key, 200, b"answer")
    while not cache.worth_asking():
        pass
    for _ in range(100):  # the data stopped changing: probes hit, and the cache is back
        assert cache.get(key, 200) == b"answer"
    assert all(cache.worth_asking() for _ in range(64))
