"""Prometheus metrics: process counters, and session gauges computed from the database."""

import os
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response

from api.auth import Role
from models import SessionReader

MULTIPROCESS = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))

SESSIONS_CREATED = Counter(
    "session_service_sessions_created_total", "Sessions created.", ["data_source"]
)
SESSIONS_ENDED = Counter(
    "session_service_sessions_ended_total", "Sessions ended by endSession.", ["data_source"]
)
OPERATION_SECONDS = Histogram(
    "session_service_graphql_operation_seconds",
    "Time to execute a GraphQL operation (a subscription: its whole life, observed when it ends).",
    ["operation_type"],
)
EXECUTIONS = Counter(
    "session_service_graphql_executions_total",
    "Queries and mutations over HTTP by how they were answered: compiled (from a plan), "
    "standard (graphql-core), fallback (a plan gave the request to graphql-core, as it does "
    "for every answer with errors).",
    ["path"],
)
CACHE_HITS = Counter(
    "session_service_response_cache_hits_total", "Queries answered from the response cache."
)
CACHE_MISSES = Counter(
    "session_service_response_cache_misses_total",
    "Cacheable queries computed: no entry, or one made from data that has changed since.",
)
CACHE_EVICTIONS = Counter(
    "session_service_response_cache_evictions_total",
    "Cached answers dropped to keep the cache within its size.",
)
WEBSOCKETS_OPEN = Gauge(
    "session_service_websocket_connections",
    "Open WebSocket connections.",
    multiprocess_mode="livesum",
)
SUBSCRIPTIONS_OPEN = Gauge(
    "session_service_subscriptions", "Open subscriptions.", multiprocess_mode="livesum"
)
EVENTS_DELIVERED = Counter(
    "session_service_events_delivered_total", "Events delivered to subscribers."
)
EVENTS_RENDERED = Counter(
    "session_service_events_rendered_total",
    "Events executed and encoded for subscribers: once per event for every group of "
    "subscribers with the same document, variables and scope.",
)
SUBSCRIBERS_DROPPED = Counter(
    "session_service_subscribers_dropped_total",
    "Subscriptions ended because their subscriber fell too far behind (it resumes by cursor).",
)
BUS_RECONNECTS = Counter(
    "session_service_bus_reconnects_total",
    "Times the bus connection was lost and reconnection began.",
)
REQUESTS_REFUSED = Counter(
    "session_service_requests_refused_total",
    "POSTs to /graphql refused with 503 because as many as allowed were in flight.",
)
DATABASE_ERRORS = Counter(
    "session_service_database_errors_total", "Operations that failed in the database."
)


class StoredSessions(Collector):
    """`stream_api_sessions_total` and live sessions per data source, read from the database at
    scrape time (so they are right whichever instance wrote), cached for `ttl` seconds."""

    def __init__(self, reader: SessionReader, ttl: float) -> None:
        self.reader = reader
        self.ttl = ttl
        self._read_at = -float("inf")
        self._rows: list[tuple[str, int, int]] = []

    async def refresh(self) -> None:
        if time.monotonic() - self._read_at >= self.ttl:
            self._rows = await self.reader.data_sources()
            self._read_at = time.monotonic()

    def collect(self) -> Iterator[Any]:
        total = GaugeMetricFamily(
            "stream_api_sessions_total", "Sessions stored, by data source.", labels=["data_source"]
        )
        live = GaugeMetricFamily(
            "session_service_live_sessions",
            "Live sessions, by data source.",
            labels=["data_source"],
        )
        for name, live_count, total_count in self._rows:
            total.add_metric([name], total_count)
            live.add_metric([name], live_count)
        yield total
        yield live


def _process_registry() -> CollectorRegistry:
    if not MULTIPROCESS:
        return REGISTRY
    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    return registry


async def metrics_endpoint(request: Request) -> Response:
    authenticator = request.app.state.services.authenticator
    principal = authenticator.authenticate(request.headers.get("authorization"))
    if principal is None:
        return Response("A valid bearer token is required.\n", status_code=401)
    if principal.role < Role.ADMIN:
        return Response("/metrics needs an admin token.\n", status_code=403)
    stored: StoredSessions = request.app.state.stored_sessions
    await stored.refresh()
    database = CollectorRegistry(auto_describe=False)
    database.register(stored)
    body = generate_latest(_process_registry()) + generate_latest(database)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
