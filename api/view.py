"""The /graphql endpoint: authentication, the per-request context and the WebSocket handler."""

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.exceptions import ConnectionRejectionError

from api.auth import NOBODY, OPEN
from api.context import Context, Services
from api.graphiql import graphiql_page
from api.limits import error_body
from api.metrics import WEBSOCKETS_OPEN
from api.websocket import TransportWSHandler


def refusal(status: int, code: str, message: str, **headers: str) -> Response:
    return JSONResponse(error_body(code, message), status_code=status, headers=headers)


class GraphQLView(GraphQL[Context, None]):
    graphql_transport_ws_handler_class = TransportWSHandler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            request = Request(scope)
            # A GET only serves GraphiQL's page (when enabled): queries come by POST.
            if request.method == "POST" and (refused := self._refuse(request)) is not None:
                return await refused(scope, receive, send)
            return await super().__call__(scope, receive, send)
        WEBSOCKETS_OPEN.inc()
        try:
            await super().__call__(scope, receive, send)
        finally:
            WEBSOCKETS_OPEN.dec()

    @staticmethod
    def _refuse(request: Request) -> Response | None:
        """A response refusing the POST, or None after recording who sent it."""
        media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media_type != "application/json":
            return refusal(415, "VALIDATION", "Send GraphQL as application/json.")
        services: Services = request.app.state.services
        principal = services.authenticator.authenticate(request.headers.get("authorization"))
        if principal is None:
            message = "A valid bearer token is required."
            return refusal(401, "UNAUTHENTICATED", message, **{"www-authenticate": "Bearer"})
        request.state.principal = principal
        return None

    def encode_json(self, data: object) -> str:
        # Text, not bytes: Strawberry sends bytes over a WebSocket as binary frames.
        return orjson.dumps(data).decode()

    async def render_graphql_ide(self, request: Request) -> Response:
        """GraphiQL on the assets we serve; Strawberry's CDN page only when they are absent."""
        return graphiql_page() or await super().render_graphql_ide(request)

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
            client_address=request.client.host if request.client else "unknown",
        )
        if given := request.headers.get("x-request-id"):
            context.request_id = given[:64]
        if isinstance(response, Response):
            response.headers["x-request-id"] = context.request_id
        return context
