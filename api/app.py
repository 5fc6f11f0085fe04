"""The Starlette application: create_app(settings), its lifespan and routes."""

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Route, WebSocketRoute
from starlette.types import Receive, Scope, Send
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL

from api.admission import Admission
from api.auth import Authenticator, identified
from api.config import Settings, check, load_settings
from api.context import Services
from api.dashboard import DASHBOARD_ROUTES
from api.fanout import SERVER_SEND
from api.graphiql import graphiql_routes
from api.health import healthz, readyz
from api.identity import IdentityProviders
from api.limits import BodyLimit, RateLimiter
from api.metrics import BUS_RECONNECTS, StoredSessions, metrics_endpoint
from api.persisted import PersistedDocuments, trusted_manifest
from api.schema import build_schema
from api.stream_cookie import stream_cookie_endpoint
from api.termination import on_termination
from api.view import GraphQLView
from models import Database, DocumentStore, EventHub, EventLog
from models.janitor import Janitor

# CPython collects its youngest generation every 700 allocations by default, and each time the
# survivors pile up a full collection scans every live object. Thousands of open subscriptions
# are hundreds of thousands of objects: at 5,000 subscribers the default made a delivery's p99
# 1.5 s instead of 0.25 s, and halved deliveries per second (bench/REPORT.md).
GC_THRESHOLD = (50_000, 10, 10)


def create_served_app() -> Starlette:
    """The app as `session-service serve` runs it in each worker process, whose garbage
    collector it tunes for many long-lived connections."""
    gc.set_threshold(*GC_THRESHOLD)
    return create_app()


def create_app(settings: Settings | None = None) -> "Service":
    settings = check(settings) if settings else load_settings()
    schema = build_schema(settings)
    manifest = (
        None
        if settings.trusted_documents is None
        else trusted_manifest(settings.trusted_documents, schema.documents, schema._schema)
    )

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        database = Database(
            settings.database_url,
            pool_size=settings.db_pool_size,
            timeout=settings.request_timeout_seconds,
            max_waiting=settings.db_max_waiting,
            pooler=settings.database_pooler,
        )
        await database.migrate()
        hub = EventHub(
            EventLog(database),
            settings.broadcast_url,
            poll_interval=settings.event_poll_interval,
            queue_size=settings.subscriber_queue_size,
            on_bus_lost=BUS_RECONNECTS.inc,
        )
        janitor = Janitor(
            database,
            settings.retention,
            interval=settings.cleanup_interval_seconds,
            announce=hub.announce,
        )
        identities = IdentityProviders(
            settings.issuers,
            refresh_seconds=settings.jwks_refresh_seconds,
            refetch_seconds=settings.jwks_refetch_interval_seconds,
        )
        await hub.start()
        janitor.start()
        await identities.start()
        app.state.services = Services(
            settings=settings,
            database=database,
            hub=hub,
            authenticator=Authenticator(settings.tokens, identities),
            mutation_limiter=RateLimiter(
                settings.mutation_rate_per_second, settings.mutation_burst
            ),
            subscribe_limiter=RateLimiter(
                settings.subscribe_rate_per_second, settings.subscribe_burst
            ),
            documents=PersistedDocuments(
                DocumentStore(database, settings.persisted_documents_limit),
                manifest,
                schema.is_valid,
            ),
        )
        app.state.stored_sessions = StoredSessions(
            app.state.services.reader(None), settings.metrics_cache_seconds
        )
        try:
            with on_termination(hub.end_streams):
                yield
        finally:
            await identities.stop()
            await janitor.stop()
            await hub.stop()
            await database.dispose()

    graphql = GraphQLView(
        schema,
        graphql_ide="graphiql" if settings.development else None,
        allow_queries_via_get=False,
        subscription_protocols=[GRAPHQL_TRANSPORT_WS_PROTOCOL],
        connection_init_wait_timeout=timedelta(seconds=settings.connection_init_timeout_seconds),
        max_subscriptions_per_connection=settings.max_subscriptions_per_connection,
        fast_path=settings.http_fast_path,
    )
    routes = [
        Route("/graphql", graphql, methods=["GET", "POST"]),
        WebSocketRoute("/graphql", graphql),
        Route("/graphql/stream-cookie", stream_cookie_endpoint, methods=["POST", "DELETE"]),
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/metrics", identified(metrics_endpoint)),
        *DASHBOARD_ROUTES,
        *graphiql_routes(settings),
    ]
    middleware = [Middleware(BodyLimit, max_bytes=settings.max_body_bytes)]
    app = Service(routes=routes, middleware=middleware, lifespan=lifespan)
    # Admitted once the body is in: a client sending its body slowly holds no slot.
    admitted = Admission(
        graphql, limit=settings.max_requests_in_flight, timeout=settings.request_timeout_seconds
    )
    app.state.graphql = BodyLimit(admitted, max_bytes=settings.max_body_bytes)
    app.state.graphql_socket = graphql
    return app


class Service(Starlette):
    """Starlette, with HTTP requests to /graphql sent straight to the view behind the body
    limit and admission control, and WebSockets to /graphql straight to the view:
    Starlette's error and exception middleware and its router cost about a sixth of a small
    query's CPU, and the view answers every request itself (tests/test_fast_path.py). A
    WebSocket's scope keeps the server's own send, which the fan-out writes frames to."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/graphql":
            scope["app"] = self
            return await self.state.graphql(scope, receive, send)
        if scope["type"] != "websocket":
            return await super().__call__(scope, receive, send)
        # The scope is the server's, and `send` is bound to its connection: taken out again at
        # the end, or connection and scope would hold each other until a full collection.
        scope[SERVER_SEND] = send
        try:
            if scope["path"] != "/graphql":
                return await super().__call__(scope, receive, send)
            # Starlette's middleware and router pass a WebSocket through untouched, but their
            # suspended frames stayed with every open subscription: 3 KB of its memory.
            scope["app"] = self
            return await self.state.graphql_socket(scope, receive, send)
        finally:
            del scope[SERVER_SEND]


def server_options(settings: Settings) -> dict[str, Any]:
    """uvicorn options that are part of the service's protections, for every way it is served."""
    return {
        # Each GraphQL operation logs one structured line (api/extension.py); uvicorn's access
        # line would be a second, unstructured one per request.
        "access_log": False,
        "ws_max_size": settings.max_websocket_message_bytes,
        "ws_ping_interval": settings.websocket_ping_interval_seconds,
        "ws_ping_timeout": settings.websocket_ping_interval_seconds,
        "ws_per_message_deflate": False,
        "timeout_graceful_shutdown": settings.shutdown_timeout_seconds,
        # uvicorn kills a worker that does not answer its supervisor's ping within this; its
        # default of 5 s killed workers still importing on a loaded machine, over and over.
        "timeout_worker_healthcheck": 30,
        # uvicorn's httptools and websockets-sansio protocols, less the cycles they leave.
        "http": "api.protocols:HttpProtocol",
        "ws": "api.protocols:WebSocketProtocol",
    }
