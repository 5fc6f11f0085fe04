"""The Starlette application: create_app(settings), its lifespan, routes and GraphQL view."""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.exceptions import ConnectionRejectionError
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL

from api.auth import NOBODY, OPEN, Authenticator
from api.config import Settings, load_settings
from api.context import Context, Services
from api.metrics import WEBSOCKETS_OPEN, StoredSessions, metrics_endpoint
from api.schema import build_schema
from models import Database, EventHub, EventLog, SessionRepository
from models.janitor import Janitor

READY_TIMEOUT = 2.0


class GraphQLView(GraphQL[Context, None]):
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            request = Request(scope)
            if request.method == "POST":  # GET only serves GraphiQL's page, when enabled
                authenticator: Authenticator = request.app.state.services.authenticator
                principal = authenticator.authenticate(request.headers.get("authorization"))
                if principal is None:
                    return await unauthenticated()(scope, receive, send)
                request.state.principal = principal
            return await super().__call__(scope, receive, send)
        WEBSOCKETS_OPEN.inc()
        try:
            await super().__call__(scope, receive, send)
        finally:
            WEBSOCKETS_OPEN.dec()

    async def on_ws_connect(self, context: Context) -> None:
        """Authenticate from connection_init's payload; a refusal closes with 4403."""
        principal = context.services.authenticator.authenticate(
            context.connection_params.get("authorization")
        )
        if principal is None:
            raise ConnectionRejectionError()
        context.principal = principal

    async def get_context(self, request: Request | WebSocket, response: Any = None) -> Context:
        services: Services = request.app.state.services
        if isinstance(request, WebSocket):
            # Until connection_init proves otherwise, a socket may see nothing.
            principal = OPEN if services.authenticator.open else NOBODY
        else:
            principal = getattr(request.state, "principal", NOBODY)
        context = Context(
            services=services,
            principal=principal,
            websocket=request if isinstance(request, WebSocket) else None,
        )
        if given := request.headers.get("x-request-id"):
            context.request_id = given[:64]
        if isinstance(response, Response):
            response.headers["x-request-id"] = context.request_id
        return context


def unauthenticated() -> Response:
    body = {"errors": [{"message": "A valid bearer token is required.",
                        "extensions": {"code": "UNAUTHENTICATED"}}]}  # fmt: skip
    return JSONResponse(body, status_code=401, headers={"www-authenticate": "Bearer"})


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    """Ready while the database answers. The bus is reported but does not decide: without it,
    events still flow through the hubs' periodic log reads, only later."""
    services: Services = request.app.state.services
    bus = services.hub.bus
    report = {"bus": "connected" if bus.connected else "reconnecting"}
    try:
        await asyncio.wait_for(services.repository.database.ping(), READY_TIMEOUT)
    except Exception as error:
        report |= {"status": "unavailable", "database": type(error).__name__}
        return JSONResponse(report, status_code=503)
    return JSONResponse(
        {"status": "ok" if bus.connected else "degraded", "database": "ok", **report}
    )


def create_app(settings: Settings | None = None) -> Starlette:
    settings = settings or load_settings()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        database = Database(settings.database_url, pool_size=settings.db_pool_size)
        await database.migrate()
        hub = EventHub(
            EventLog(database),
            settings.broadcast_url,
            poll_interval=settings.event_poll_interval,
            queue_size=settings.subscriber_queue_size,
        )
        repository = SessionRepository(database, settings.limits, announce=hub.announce)
        janitor = Janitor(
            repository, settings.retention, interval=settings.cleanup_interval_seconds
        )
        await hub.start()
        janitor.start()
        app.state.services = Services(
            settings=settings,
            repository=repository,
            hub=hub,
            authenticator=Authenticator(settings.tokens),
        )
        app.state.stored_sessions = StoredSessions(repository, settings.metrics_cache_seconds)
        try:
            yield
        finally:
            await janitor.stop()
            await hub.stop()
            await database.dispose()

    graphql = GraphQLView(
        build_schema(settings),
        graphql_ide="graphiql" if settings.development else None,
        allow_queries_via_get=False,
        subscription_protocols=[GRAPHQL_TRANSPORT_WS_PROTOCOL],
    )
    routes = [
        Route("/graphql", graphql, methods=["GET", "POST"]),
        WebSocketRoute("/graphql", graphql),
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/metrics", metrics_endpoint),
    ]
    return Starlette(routes=routes, lifespan=lifespan)
