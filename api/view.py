"""The /graphql endpoint: authentication, the per-request context, GraphQL over HTTP (JSON
POSTs and GETs, persisted documents, both response media types) and the WebSocket handler."""

import json
import time
from functools import lru_cache, partial
from typing import Any, cast

import orjson
import strawberry
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.exceptions import ConnectionRejectionError, MissingQueryError
from strawberry.http import process_result
from strawberry.schema.exceptions import CannotGetOperationTypeError, InvalidOperationTypeError
from strawberry.types.graphql import OperationType

from api.auth import NOBODY, OPEN, Unauthenticated
from api.cache import Key, asked, cache_key
from api.context import Context, Services, new_request_id
from api.errors import ApiError
from api.extension import observe
from api.graphiql import graphiql_page
from api.limits import error_body
from api.masking import DATABASE_ERRORS_RAISED
from api.metrics import WEBSOCKETS_OPEN
from api.parameters import NAME, decode_json, read_parameters
from api.persisted import named
from api.schema import SessionSchema
from api.streams import StreamedRequests, stream_for, streamed_kind
from api.websocket import SocketAdapter, TransportWSHandler

JSON = "application/json"
GRAPHQL_RESPONSE = "application/graphql-response+json"
# What a GET may carry instead of a body (the GraphQL-over-HTTP specification's names, and
# Relay's doc_id); a GET with none of them is a browser asking for GraphiQL.
GET_PARAMETERS = ("query", "documentId", "doc_id", "extensions")


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


def refusal(
    status: int, code: str, message: str, media_type: str = JSON, **headers: str
) -> Response:
    body = _encoded(error_body(code, message))
    return Response(body, status, headers=headers, media_type=media_type)


@lru_cache(maxsize=256)
def response_media_type(accept: str) -> str | None:
    """The media type to answer in: application/graphql-response+json when the client ranks
    it at least as high as application/json, application/json when it takes that (or sends no
    Accept), None when it takes neither."""
    if not accept:
        return JSON
    ranks = {GRAPHQL_RESPONSE: 0.0, JSON: 0.0}
    for part in accept.split(","):
        kind, *parameters = part.split(";")
        kind = kind.strip().lower()
        quality = 1.0
        for parameter in parameters:
            name, _, value = parameter.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if kind in ("*/*", "application/*", JSON):
            ranks[JSON] = max(ranks[JSON], quality)
        elif kind == GRAPHQL_RESPONSE:
            ranks[GRAPHQL_RESPONSE] = max(ranks[GRAPHQL_RESPONSE], quality)
    if ranks[GRAPHQL_RESPONSE] > 0 and ranks[GRAPHQL_RESPONSE] >= ranks[JSON]:
        return GRAPHQL_RESPONSE
    return JSON if ranks[JSON] > 0 else None


def _plain_parameters(data: object) -> bool:
    """Whether decoded parameters are a plain query or mutation by its text: a `query` string,
    `variables` an object and `operationName` a name, if given, and nothing else."""
    if not isinstance(data, dict) or not isinstance(data.get("query"), str):
        return False
    for name, value in data.items():
        if name == "variables":
            if value is not None and not isinstance(value, dict):
                return False
        elif name == "operationName":
            if value is not None and not (isinstance(value, str) and NAME.fullmatch(value)):
                return False
        elif name != "query":
            return False
    return True


def is_request_error(result: Any) -> bool:
    """A result that never executed (a document that does not parse or validate, variables
    that do not coerce): no data, and no error with a path."""
    return (
        result.data is None
        and bool(result.errors)
        and all(error.path is None for error in result.errors)
    )


QUERIES_ONLY = (OperationType.QUERY,)

# Accept types of streamed answers (api/streams.py): a client that lists one first asks for a
# stream; one that lists it after JSON (urql, for every request) takes one for a subscription.
STREAMED = ("multipart/mixed", "text/event-stream")


class Answer:
    """A 200 JSON answer sent as its two ASGI messages, with the headers Starlette's Response
    would send: building them generically cost a twentieth of a small query's CPU."""

    __slots__ = ("body", "media_type", "request_id", "status")

    def __init__(
        self, body: bytes, request_id: str, media_type: str = JSON, status: int = 200
    ) -> None:
        self.body = body
        self.request_id = request_id
        self.media_type = media_type
        self.status = status

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = [
            (b"x-request-id", self.request_id.encode("latin-1")),
            (b"content-length", str(len(self.body)).encode()),
            (b"content-type", self.media_type.encode()),
        ]
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": self.body})


class GraphQLView(GraphQL[Context, None]):
    graphql_transport_ws_handler_class = TransportWSHandler
    websocket_adapter_class = SocketAdapter

    def __init__(self, *args: Any, fast_path: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fast_path = fast_path
        self.streamed = StreamedRequests(
            cast(strawberry.Schema, self.schema), self.get_context, self._plain
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            if self.fast_path and scope["method"] == "POST":
                return await self._post(scope, receive, send)
            return await self._http(scope, receive, send)
        WEBSOCKETS_OPEN.inc()
        try:
            await super().__call__(scope, receive, send)
        finally:
            WEBSOCKETS_OPEN.dec()

    async def _post(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A POST as GraphQL clients send queries and mutations (a JSON object with `query`,
        and `variables` and `operationName` if any; a JSON answer; a valid token or none
        needed) answered with no more than it needs: the headers read in one pass, no
        Starlette Request, context or parameter objects. Anything else, and every refusal,
        takes the general path (`_http`), which reads the same request again."""
        content_type = accept = b""
        authorization = request_id = None
        for name, value in scope["headers"]:
            if name == b"content-type":
                content_type = content_type or value
            elif name == b"accept":
                accept = accept or value
            elif name == b"authorization":
                authorization = authorization or value
            elif name == b"x-request-id":
                request_id = request_id or value
        services: Services = scope["app"].state.services
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return None  # the client went away
            body += message.get("body", b"")
            more = message.get("more_body", False)
        replay = _replaying(body, receive)
        media_type = response_media_type(accept.decode("latin-1"))
        if (
            media_type is None
            or b"multipart" in accept
            or b"event-stream" in accept
            or content_type.partition(b";")[0].strip().lower() != b"application/json"
        ):
            return await self._http(scope, replay, send)
        try:
            principal = await services.authenticator.identify(
                None if authorization is None else authorization.decode("latin-1")
            )
        except Unauthenticated as refused:  # answered as `_refuse` answers it, logged once
            headers = {"www-authenticate": "Bearer"}
            refusing = refusal(401, "UNAUTHENTICATED", refused.reason, **headers)
            return await refusing(scope, replay, send)
        # A body the cache has met: looked up before anything else is done with it.
        cache = services.response_cache
        known = None if cache is None else cache.known.get(body)
        if known is not None and services.documents.trusted_only(principal):
            known = None  # its text must be checked against the trusted documents first
        missed: tuple[Key, int] | None = None
        given_id = request_id.decode("latin-1")[:64] if request_id else None
        if known is not None:
            question, name = known
            given_id = given_id or new_request_id()
            looked_up = await self._look_up(
                services, cache_key(question, principal), name, given_id, media_type
            )
            if isinstance(looked_up, Answer):
                return await looked_up(scope, replay, send)
            missed = looked_up
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            return await self._http(scope, replay, send)
        if not _plain_parameters(data):
            return await self._http(scope, replay, send)
        context = Context(
            services=services,
            principal=principal,
            client_address=scope["client"][0] if scope.get("client") else "unknown",
        )
        if given_id:
            context.request_id = given_id
        response = await self._answer(
            Request(scope, replay), media_type, data, context, body, missed, known is not None
        )
        await response(scope, replay, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Every HTTP request to /graphql, each check made by name (api/parameters.py)."""
        request = Request(scope, receive)
        if (kind := streamed_kind(request)) is not None:
            return await self.streamed(kind, request, scope, receive, send)
        method = request.method
        # A GET without GraphQL parameters is a browser asking for GraphiQL (when enabled).
        if method == "POST" or (
            method == "GET" and any(name in request.query_params for name in GET_PARAMETERS)
        ):
            if (refused := await self._refuse(request)) is not None:
                return await refused(scope, receive, send)
            # Checked here for either path: Strawberry's view failed with a 500 on a body
            # that is JSON but not an object, among others.
            data = await read_parameters(request)
            if isinstance(data, str):
                return await refusal(400, "VALIDATION", data)(scope, receive, send)
            accept = request.headers.get("accept", "")
            if self.fast_path and not accept.lstrip().lower().startswith(STREAMED):
                response = await self._plain(request, accept, data)
                return await response(scope, receive, send)
            if method == "POST":
                receive = _replaying(await request.body(), receive)
        return await super().__call__(scope, receive, send)

    @staticmethod
    async def _refuse(request: Request) -> Response | None:
        """A response refusing the request, or None after recording who sent it."""
        if request.method == "POST":
            media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
            if media_type != JSON:
                return refusal(415, "VALIDATION", "Send GraphQL as application/json.")
        services: Services = request.app.state.services
        try:
            principal = await services.authenticator.identify(request.headers.get("authorization"))
        except Unauthenticated as refused:
            headers = {"www-authenticate": "Bearer"}
            return refusal(401, "UNAUTHENTICATED", refused.reason, **headers)
        request.state.principal = principal
        return None

    async def _plain(
        self, request: Request, accept: str, data: dict[str, Any] | None = None
    ) -> ASGIApp:
        """The plain answer to a request: also to one that asked for a stream it does not need
        (a query sent as Apollo sends subscriptions)."""
        if data is None:
            read = await read_parameters(request)
            if isinstance(read, str):
                return refusal(400, "VALIDATION", read)
            data = read
        media_type = response_media_type(accept)
        if media_type is None:
            return refusal(406, "VALIDATION", f"Accept {JSON} or {GRAPHQL_RESPONSE}.")
        return await self._answer(request, media_type, data, await self.get_context(request))

    async def _answer(
        self,
        request: Request,
        media_type: str,
        data: dict[str, Any],
        context: Context,
        body: bytes | None = None,
        looked_up: "tuple[Key, int] | None" = None,
        cache_asked: bool = False,
    ) -> ASGIApp:
        """A GraphQL request answered without Strawberry's view, in the media type the client
        asks for. In application/json every GraphQL answer is a 200, as Strawberry's view
        answers it (tests/test_fast_path.py); in application/graphql-response+json a request
        that never executed is a 400 without data. Every refusal is a coded JSON error.

        `body` is a plain request's, which the cache may learn; `cache_asked` says that the
        cache was already asked for it (`looked_up`: the key and version of the miss)."""
        query, variables, extensions = (data.get(k) for k in ("query", "variables", "extensions"))
        by_get = request.method == "GET"
        try:
            document = named(extensions, data.get("documentId"), data.get("doc_id"))
            if by_get and document is None and not context.services.settings.development:
                raise ApiError(
                    "PERSISTED_QUERY_REQUIRED",
                    "A query by GET must name a persisted document: send its text by POST.",
                )
            query = await context.services.documents.text(query, document, context.principal)
        except ApiError as refused:
            code = refused.extensions["code"]  # type: ignore[index]
            # Apollo's and urql's links retry with the text only after a 200.
            status = 200 if code == "PERSISTED_QUERY_NOT_FOUND" else 400
            return refusal(status, code, refused.message, media_type)
        await context.services.documents.register(document, query)
        operation_name = data.get("operationName")
        cached = (
            looked_up
            if cache_asked
            else await self._cached(context, query, operation_name, variables, media_type, body)
        )
        if isinstance(cached, Answer):
            return cached
        try:
            result = await self.schema.execute(
                query,
                variable_values=variables,
                context_value=context,
                operation_name=operation_name,
                allowed_operation_types=QUERIES_ONLY if by_get else None,
                operation_extensions=extensions,
            )
        except CannotGetOperationTypeError as error:
            return refusal(400, "VALIDATION", error.as_http_error_reason(), media_type)
        except InvalidOperationTypeError as error:
            stream = stream_for(request.headers.get("accept", ""))
            if error.operation_type is OperationType.SUBSCRIPTION and stream is not None:
                return partial(self.streamed, stream, request)  # urql's subscriptions, say
            message = error.as_http_error_reason(request.method)
            if by_get and error.operation_type is OperationType.MUTATION:
                return refusal(405, "VALIDATION", message, media_type, allow="POST")
            return refusal(400, "VALIDATION", message, media_type)
        except MissingQueryError:
            return refusal(400, "VALIDATION", "No GraphQL query found in the request", media_type)
        if media_type == GRAPHQL_RESPONSE and is_request_error(result):
            body = _encoded({"errors": process_result(result)["errors"]})
            return Answer(body, context.request_id, media_type, 400)
        body = _encoded(process_result(result))
        if cached is not None and not result.errors:
            key, version = cached
            context.services.response_cache.put(key, version, body)  # type: ignore[union-attr]
        return Answer(body, context.request_id, media_type)

    async def _cached(
        self,
        context: Context,
        query: Any,
        operation_name: Any,
        variables: Any,
        media_type: str,
        body: bytes | None,
    ) -> "Answer | tuple[Key, int] | None":
        """The cached answer to a query; else, when its answer may be kept, its key and the
        data version read before computing it; None when it may not. A plain request's `body`
        is learnt, to be looked up directly when it comes again (`_post`)."""
        cache = context.services.response_cache
        if (
            cache is None
            or not isinstance(query, str)
            or not isinstance(operation_name, str | None)
        ):
            return None
        schema = self.schema
        assert isinstance(schema, SessionSchema)
        operation = schema.query_operation(query, operation_name)
        question = None if operation is None else asked(query, operation_name, variables)
        if question is None:
            return None
        name = operation.name.value if operation.name else None  # type: ignore[union-attr]
        if body is not None:
            cache.known.add(body, question, name)
        key = cache_key(question, context.principal)
        return await self._look_up(context.services, key, name, context.request_id, media_type)

    async def _look_up(
        self, services: Services, key: Key, name: str | None, request_id: str, media_type: str
    ) -> "Answer | tuple[Key, int] | None":
        """The cached answer under `key`; else its key and the data version read before
        computing it; None when the cache is not worth asking or the version cannot be read."""
        cache = services.response_cache
        assert cache is not None
        if not cache.worth_asking():
            return None
        started = time.perf_counter()
        try:
            version = await services.data_version()
        except (*DATABASE_ERRORS_RAISED, OSError):
            # The database cannot answer: executing the query reports that as its errors
            # (UNAVAILABLE), and within the request's bound, which this read has used up.
            return None
        body = cache.get(key, version)
        if body is None:
            return key, version
        observe("query", name, started, None, request_id, self.schema.log_all)  # type: ignore[attr-defined]
        return Answer(body, request_id, media_type)

    def decode_json(self, data: str | bytes) -> object:
        """HTTP bodies and WebSocket messages alike: every failure a JSONDecodeError."""
        return decode_json(data)

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
