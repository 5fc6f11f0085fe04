"""The /graphql endpoint: authentication, the per-request context, the fast path for JSON
POSTs and the WebSocket handler."""

import json
import re
import time
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.types import Message, Receive, Scope, Send
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
from api.websocket import SocketAdapter, TransportWSHandler


def _encoded(data: object) -> bytes:
    """orjson's encoding; json's, with \\u escapes, for the lone surrogates orjson refuses
    (a client's operation id or operationName, echoed back)."""
    try:
        return orjson.dumps(data)
    except TypeError:
        return json.dumps(data, separators=(",", ":")).encode()


def _replaying(body: bytes, receive: Receive) -> Receive:
    """A receive that gives the body already read, then the connection's messages."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def refusal(status: int, code: str, message: str, **headers: str) -> Response:
    return JSONResponse(error_body(code, message), status_code=status, headers=headers)


# The members of a POSTed operation that Strawberry's view checks, and what each must be.
FIELD_KINDS = (
    ("query", "a string"),
    ("variables", "an object"),
    ("extensions", "an object"),
    ("operationName", "a string"),
)
# A GraphQL name (the spec's Name token).
NAME = re.compile(r"[_A-Za-z][_0-9A-Za-z]*")

# Accept types that ask Strawberry's view for a streamed answer: it handles those.
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
    websocket_adapter_class = SocketAdapter

    def __init__(self, *args: Any, fast_path: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fast_path = fast_path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            request = Request(scope, receive)
            # A GET only serves GraphiQL's page (when enabled): queries come by POST.
            if request.method == "POST":
                if (refused := await self._refuse(request)) is not None:
                    return await refused(scope, receive, send)
                body = await request.body()
                data = self._operation(body)
                if isinstance(data, Response):
                    return await data(scope, receive, send)
                accept = request.headers.get("accept", "")
                if self.fast_path and not any(kind in accept for kind in STREAMED):
                    response = await self._answer(request, data)
                    return await response(scope, receive, send)
                receive = _replaying(body, receive)
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

    def _operation(self, body: bytes) -> "dict[str, Any] | Response":
        """The POSTed operation, or the answer refusing it: Strawberry's view's refusals (400 and
        a plain-text reason), checked here for every POST, since that view fails with a 500 on
        a body that is JSON but not an object."""
        try:
            data = self.decode_json(body)
        except json.JSONDecodeError:
            return PlainTextResponse("Unable to parse request body as JSON", 400)
        if isinstance(data, list):
            return PlainTextResponse("Batching is not enabled", 400)
        if not isinstance(data, dict):
            return PlainTextResponse("The request body must be a JSON object.", 400)
        for name, kind in FIELD_KINDS:
            value = data.get(name)
            if value is not None and not isinstance(value, str if kind == "a string" else dict):
                message = f"The GraphQL operation's `{name}` must be {kind} or null, if provided."
                return PlainTextResponse(message, 400)
        operation_name = data.get("operationName")
        if operation_name is not None and not NAME.fullmatch(operation_name):
            # No operation has that name; answered here because Strawberry's answer repeats it,
            # and fails with a 500 on a lone surrogate, which has no UTF-8 form.
            return PlainTextResponse(f"Unknown operation named {json.dumps(operation_name)}.", 400)
        return data

    async def _answer(self, request: Request, data: dict[str, Any]) -> "Response | Answer":
        """A JSON POST answered without Strawberry's view, as that view answers it: the same
        refusals and the same JSON (tests/test_fast_path.py)."""
        query, variables, extensions = (data.get(k) for k in ("query", "variables", "extensions"))
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
        body = _encoded(process_result(result))
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

    def decode_json(self, data: str | bytes) -> object:
        """JSON as Strawberry's view reads it, HTTP bodies and WebSocket messages alike, with
        every failure a JSONDecodeError (a 400, or a close with 4400): json.loads also raises
        UnicodeDecodeError, RecursionError past ~1,000 levels and ValueError for integers of
        more than 4,300 digits, which became 500s and dropped sockets."""
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            pass
        # What orjson refuses and json takes: lone surrogates in \u escapes (refused later,
        # naming the field), integers beyond 64 bits, UTF-16 and UTF-32.
        try:
            return json.loads(data)
        except json.JSONDecodeError:
            raise
        except (ValueError, RecursionError) as error:
            raise json.JSONDecodeError(type(error).__name__, "", 0) from None

    def encode_json(self, data: object) -> str:
        # Text, not bytes: Strawberry sends bytes over a WebSocket as binary frames.
        return _encoded(data).decode()

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
