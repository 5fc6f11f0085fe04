"""H1: hierarchy walks through the API against one raw recursive SQL statement, in-process."""

import re
import statistics
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import sqlalchemy as sa

from api import Settings, create_app
from models.tables import utcnow

DESCENDANTS = """query H1($key: ID!) { session(key: $key) {
  descendants(maxDepth: 32) { depth viaKey session { key } } } }"""
NESTED = """{ currentSessions { associates { associates { associates { key } } } } }"""
RAW_DESCENDANTS = sa.text(
    "WITH RECURSIVE walk(key, depth) AS ("
    " SELECT :key, 0 UNION"
    " SELECT a.child_key, w.depth + 1 FROM session_associations a"
    " JOIN walk w ON a.parent_key = w.key WHERE w.depth < 32)"
    " SELECT key, min(depth) FROM walk WHERE depth > 0 GROUP BY key"
)
RAW_NESTED = sa.text(
    "SELECT s.key, a1.child_key, a2.child_key, a3.child_key FROM sessions s"
    " LEFT JOIN session_associations a1 ON a1.parent_key = s.key"
    " LEFT JOIN session_associations a2 ON a2.parent_key = a1.child_key"
    " LEFT JOIN session_associations a3 ON a3.parent_key = a2.child_key"
    " WHERE s.status = 'LIVE'"
)


def _tree(size: int, fan_out: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Sessions of a tree, node i the child of node (i - 1) // fan_out, and its links."""
    now = utcnow().replace(tzinfo=None)
    keys = [str(uuid.uuid4()) for _ in range(size)]
    sessions = [
        {"key": k, "data_source": "h1", "type": "Session", "version": 1, "identifier": "",
         "utc_offset_seconds": 0, "status": "ENDED" if i else "LIVE", "created_at": now,
         "updated_at": now, "revision": 1}
        for i, k in enumerate(keys)
    ]  # fmt: skip
    links = [
        {"parent_key": keys[(i - 1) // fan_out], "child_key": keys[i], "position": i}
        for i in range(1, size)
    ]
    return sessions, links


@contextmanager
def _counting(engine: Any) -> Iterator[list[str]]:
    statements: list[str] = []

    def record(*args: Any) -> None:
        statements.append(args[2])

    sa.event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        sa.event.remove(engine.sync_engine, "before_cursor_execute", record)


# SQLite's BEGIN, and the event hub's periodic read of the log, are not the request's statements.
NOT_THE_REQUEST = re.compile(r"^\s*BEGIN\b|session_events|event_log_state", re.I)


async def measure(database_url: str, runs: int) -> list[tuple[str, float, float, int]]:
    """(scenario, service seconds, raw seconds, SQL statements per request) medians."""
    app = create_app(Settings(database_url=database_url, max_query_depth=32))
    results = []
    async with app.router.lifespan_context(app):
        engine = app.state.services.repository.database.engine
        sessions, links = _tree(10_000, 3)
        nested_sessions, nested_links = _tree(1_000, 10)
        async with engine.begin() as connection:
            table = sa.table
            await connection.execute(sa.insert(table("sessions", *map(sa.column, sessions[0]))),
                                     sessions + nested_sessions)  # fmt: skip
            await connection.execute(sa.insert(table("session_associations",
                                     *map(sa.column, links[0]))), links + nested_links)  # fmt: skip
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            root = sessions[0]["key"]
            cases = [
                ("H1 descendants of a 10,000-session tree", DESCENDANTS, {"key": root},
                 RAW_DESCENDANTS, {"key": root}),
                ("H1 3-level nested associates over 1,000 sessions", NESTED, {},
                 RAW_NESTED, {}),
            ]  # fmt: skip
            for name, query, variables, raw, parameters in cases:
                service_times, raw_times = [], []
                for _ in range(runs):
                    with _counting(engine) as statements:
                        started = time.perf_counter()
                        response = await client.post(
                            "/graphql", json={"query": query, "variables": variables}
                        )
                        service_times.append(time.perf_counter() - started)
                    assert not response.json().get("errors"), response.text
                    started = time.perf_counter()
                    async with engine.connect() as connection:
                        (await connection.execute(raw, parameters)).all()
                    raw_times.append(time.perf_counter() - started)
                counted = len([s for s in statements if not NOT_THE_REQUEST.search(s)])
                results.append(
                    (name, statistics.median(service_times), statistics.median(raw_times), counted)
                )
    return results
