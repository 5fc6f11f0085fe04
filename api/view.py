"""The /graphql endpoint: authentication, the per-request context, the fast path for JSON
POSTs and the WebSocket handler."""

import json
import time
from typing import Any, cast

import orjson
import strawberry
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.exceptions import ConnectionRejectionError, MissingQueryError
from strawberry.http import process_result
from strawberry.schema.exceptions import CannotGetOperationTypeError, InvalidOperationTypeError

from api.auth import NOBODY, OPEN, Unauthenticated
from api.cache import Key, cache_key
from api.context import Context, Services
from api.extension import observe
from api.graphiql import graphiql_page
from api.limits import error_body
from api.metrics import WEBSOCKETS_OPEN
from api.schema import SessionSchema
from api.streams import StreamedRequests, streamed_kind
from api.websocket import TransportWSHandler


def refusal(status: int, code: str, message: str, **headers: str) -> Response:
    return JSONResponse(error_body(code, message), status_code=status, headers=headers)


# Accept types that ask for a streamed answer: subscriptions and server-sent events go to
# api/streams.py, the rest (incremental delivery) to Strawberry's view.
STREAMED = ("multipart/mixed", "text/event-stream")


class Answer:
    """A 200 JSON answer sent as its two ASGI messages, with the headers Starlette's Response
    would send: building them generically cost a twentieth of a small query's CPU."""

    __slots__ = ("body", "request_id")

    def __init__(self, body: bytes, request_id: str) -> None:
        self.body = body
        self.request_id = request_id

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = [
            (b"x-request-id", self.request_id.encode("latin-1")),
            (b"content-length", str(len(self.body)).encode()),
            (b"content-type", b"application/json"),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": self.body})


class GraphQLView(GraphQL[Context, None]):
    graphql_transport_ws_handler_class = TransportWSHandler

    def __init__(self, *args: Any, fast_path: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fast_path = fast_path
        self.streamed = StreamedRequests(
            cast(strawberry.Schema, self.schema), self.get_context, self._answer
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            request = Request(scope, receive)
            if (kind := streamed_kind(request)) is not None:
                return await self.streamed(kind, request, scope, receive, send)
            # A GET only serves GraphiQL's page (when enabled): queries come by POST.
            if request.method == "POST":
                if (refused := await self._refuse(request)) is not None:
                    return await refused(scope, receive, send)
                accept = request.headers.get("accept", "")
                if self.fast_path and not any(kind in accept for kind in STREAMED):
                    response = await self._answer(request)
                    return await response(scope, receive, send)
            return await super().__call__(scope, receive, send)
        WEBSOCKETS_OPEN.inc()
        try:
            await super().__call__(scope, receive, send)
        finally:
            WEBSOCKETS_OPEN.dec()

    @staticmethod
    async def _refuse(request: Request) -> Response | None:
        """A response refusing the POST, or None after recording who sent it."""
        media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media_type != "application/json":
            return refusal(415, "VALIDATION", "Send GraphQL as application/json.")
        services: Services = request.app.state.services
        try:
            principal = await services.authenticator.identify(request.headers.get("authorization"))
        except Unauthenticated as refused:
            headers = {"www-authenticate": "Bearer"}
            return refusal(401, "UNAUTHENTICATED", refused.reason, **headers)
        request.state.principal = principal
        return None

    async def _answer(self, request: Request) -> "Response | Answer":
        """A JSON POST answered without Strawberry's view, as that view answers it: the same
        refusals (400 and a plain-text reason) and the same JSON (tests/test_fast_path.py)."""
        body = await request.body()
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            # What orjson refuses and json takes: lone surrogates in \u escapes (refused later,
            # naming the field), integers beyond 64 bits, UTF-16 and UTF-32.
            try:
                data = json.loads(body)
            except (ValueError, RecursionError):
                return PlainTextResponse("Unable to parse request body as JSON", 400)
        if isinstance(data, list):
            return PlainTextResponse("Batching is not enabled", 400)
        if not isinstance(data, dict):
            return PlainTextResponse("The request body must be a JSON object.", 400)
        query, variables, extensions = (data.get(k) for k in ("query", "variables", "extensions"))
        for name, value, kind in (
            ("query", query, "a string"),
            ("variables", variables, "an object"),
            ("extensions", extensions, "an object"),
        ):
            if value is not None and not isinstance(value, str if name == "query" else dict):
                message = f"The GraphQL operation's `{name}` must be {kind} or null, if provided."
                return PlainTextResponse(message, 400)
        context = await self.get_context(request)
        operation_name = data.get("operationName")
        cached = await self._cached(context, query, operation_name, variables)
        if isinstance(cached, Answer):
            return cached
        try:
            result = await self.schema.execute(
                query,
                variable_values=variables,
                context_value=context,
                operation_name=operation_name,
                operation_extensions=extensions,
            )
        except CannotGetOperationTypeError as error:
            return PlainTextResponse(error.as_http_error_reason(), 400)
        except InvalidOperationTypeError as error:
            return PlainTextResponse(error.as_http_error_reason("POST"), 400)
        except MissingQueryError:
            return PlainTextResponse("No GraphQL query found in the request", 400)
        body = orjson.dumps(process_result(result))
        if cached is not None and not result.errors:
            key, version = cached
            context.services.response_cache.put(key, version, body)  # type: ignore[union-attr]
        return Answer(body, context.request_id)

    async def _cached(
        self, context: Context, query: Any, operation_name: Any, variables: Any
    ) -> "Answer | tuple[Key, int] | None":
        """The cached answer to a query; else, when its answer may be kept, its key and the
        data version read before computing it; None when it may not."""
        cache = context.services.response_cache
        if (
            cache is None
            or not isinstance(query, str)
            or not isinstance(operation_name, str | None)
        ):
            return None
        started = time.perf_counter()
        schema = self.schema
        assert isinstance(schema, SessionSchema)
        operation = schema.query_operation(query, operation_name)
        key = (
            None
            if operation is None
            else cache_key(query, operation_name, variables, context.principal)
        )
        if key is None or not cache.worth_asking():
            return None
        version = await context.services.data_version()
        body = cache.get(key, version)
        if body is None:
            return key, version
        name = operation.name.value if operation.name else None  # type: ignore[union-attr]
        observe("query", name, started, None, context.request_id, schema.log_all)
        return Answer(body, context.request_id)

    def encode_json(self, data: object) -> str:
        # Text, not bytes: Strawberry sends bytes over a WebSocket as binary frames.
        return orjson.dumps(data).decode()

    async def render_graphql_ide(self, request: Request) -> Response:
        """GraphiQL on the assets we serve; Strawberry's CDN page only when they are absent."""
        return graphiql_page() or await super().render_graphql_ide(request)

    async def on_ws_connect(self, context: Context) -> None:
        """Authenticate from connection_init's payload; a refusal closes with 4403, and so
        does the token's expiry later (api/websocket.py)."""
        try:
            context.principal = await context.services.authenticator.identify(
                context.connection_params.get("authorization")
            )
        except Unauthenticated:
            raise ConnectionRejectionError() from None

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
