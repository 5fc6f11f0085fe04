"""GraphQL over HTTP streams: server-sent events in graphql-sse's distinct connections mode, and
Apollo's multipart subscriptions.

Any operation may come this way (a query or mutation is one `next`, then `complete`), but it is
for subscriptions: they run through the same resolver, scopes, limits, fan-out and metrics as
over WebSocket (api/fanout.py); only the frames differ. Every SSE event carries `id: <cursor>`,
so a client that reconnects with `Last-Event-ID` resumes exactly as `after:` does.
"""

import asyncio
import contextlib
import json
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
import strawberry
from graphql import GraphQLError, get_operation_ast
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import Receive, Scope, Send
from strawberry.http import process_result

from api.admission import streaming
from api.auth import Unauthenticated
from api.context import Context, Services
from api.errors import ApiError
from api.fanout import SUBSCRIBING, Ending, SubscribeRequest
from api.limits import error_body
from api.parameters import read_parameters
from api.persisted import named
from api.principal import Principal
from api.stream_cookie import NAME as COOKIE
from models import EventRecord, SubscriberLagging, encode_cursor

log = logging.getLogger(__name__)

EVENT_STREAM = "text/event-stream"
MULTIPART = "multipart/mixed"
# How soon a browser's EventSource reconnects after a stream ends.
RECONNECT_MS = 1000


class Refused(Exception):
    """A request answered with an HTTP error before any stream starts."""

    def __init__(self, status: int, code: str, message: str, **headers: str) -> None:
        super().__init__(message)
        self.response = JSONResponse(error_body(code, message), status, headers=headers)


@dataclass(frozen=True)
class Requested:
    """The GraphQL request parameters of one streamed request."""

    query: str
    variables: dict[str, Any] | None
    operation_name: str | None
    extensions: dict[str, Any] | None


def _json_object(value: Any, name: str) -> dict[str, Any] | None:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise Refused(400, "VALIDATION", f"{name} must be a JSON object.") from None
    if value is not None and not isinstance(value, dict):
        raise Refused(400, "VALIDATION", f"{name} must be a JSON object.")
    return value


async def requested(
    parameters: Mapping[str, Any], services: Services, principal: Principal, method: str
) -> Requested:
    """The operation a streamed request names: its JSON body (POST) or query string (GET), by
    its text or a persisted document's id (api/persisted.py). A GET carries free query text in
    the development profile only."""
    extensions = _json_object(parameters.get("extensions"), "extensions")
    try:
        document = named(extensions, parameters.get("documentId"), parameters.get("doc_id"))
        query = parameters.get("query")
        if method == "GET" and document is None and not services.settings.development:
            raise Refused(400, "PERSISTED_QUERY_REQUIRED", "Free query text by GET is refused.")
        query = await services.documents.text(query, document, principal)
        await services.documents.register(document, query)
    except ApiError as refused:
        code = refused.extensions["code"]  # type: ignore[index]
        raise Refused(400, code, refused.message) from None
    if not isinstance(query, str) or not query:
        raise Refused(400, "VALIDATION", "No GraphQL query found in the request.")
    operation_name = parameters.get("operationName") or None
    if operation_name is not None and not isinstance(operation_name, str):
        raise Refused(400, "VALIDATION", "operationName must be a string.")
    return Requested(
        query, _json_object(parameters.get("variables"), "variables"), operation_name, extensions
    )


class HttpStream:
    """One streamed response: its frames, heartbeats and end, as a subscription's transport."""

    media_type = ""
    preamble = ""
    heartbeat = ""
    final = ""

    def __init__(self, send: Send, send_timeout: float) -> None:
        # An event's frame is the same for every stream of a kind (api/fanout.py shares it).
        self.frame_key = type(self).__name__
        self._send = send
        self.send_timeout = send_timeout
        self._lock = asyncio.Lock()
        self.ended: Ending | None = None
        self.stalled = False

    async def start(self) -> None:
        headers = [
            (b"content-type", self.media_type.encode()),
            (b"cache-control", b"no-cache"),
            # Proxies such as nginx would otherwise buffer the stream.
            (b"x-accel-buffering", b"no"),
        ]
        await self._send({"type": "http.response.start", "status": 200, "headers": headers})
        await self.send(self.preamble)

    async def send(self, frame: str) -> None:
        """Sends a frame; a client that takes none for `send_timeout` is lagging."""
        if self.stalled:
            raise SubscriberLagging("stopped reading")
        async with self._lock:
            try:
                async with asyncio.timeout(self.send_timeout):
                    message = {"type": "http.response.body", "body": frame.encode()}
                    await self._send({**message, "more_body": True})
            except TimeoutError:
                self.stalled = True
                raise SubscriberLagging(f"took no data for {self.send_timeout:g} s") from None

    async def beat(self, interval: float) -> None:
        """Heartbeats until the stream ends or stalls."""
        with contextlib.suppress(SubscriberLagging):
            while True:
                await asyncio.sleep(interval)
                await self.send(self.heartbeat)

    async def finish(self, completed: bool) -> None:
        """Ends the response: with the protocol's completion if the operation completed."""
        if self.stalled:
            return  # the connection cannot take more: the server closes it
        text = (self.completion() if completed else "") + self.final
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.send_timeout):
                await self._send({"type": "http.response.body", "body": text.encode()})

    def result(self, payload: str) -> str:
        """A frame for an operation's result (not an event), or a failure to start."""
        raise NotImplementedError

    def completion(self) -> str:
        return ""

    async def end(self, ending: Ending, reason: str) -> None:
        self.ended = ending
        if not self.stalled:
            with contextlib.suppress(SubscriberLagging):
                await self.send(self.ending(reason))

    def ending(self, reason: str) -> str:
        raise NotImplementedError


class EventStream(HttpStream):
    """graphql-sse's distinct connections mode: `next` and `complete` events. A stream that
    must be resumed ends without `complete`, so EventSource and the graphql-sse client
    reconnect, the former with `Last-Event-ID`."""

    media_type = "text/event-stream; charset=utf-8"
    preamble = f"retry: {RECONNECT_MS}\n\n"
    heartbeat = ":\n\n"

    def frame(self, event: EventRecord, payload: str) -> str:
        return f"id: {encode_cursor(event.cursor)}\nevent: next\ndata: {payload}\n\n"

    def result(self, payload: str) -> str:
        return f"event: next\ndata: {payload}\n\n"

    def completion(self) -> str:
        return "event: complete\ndata:\n\n"

    def ending(self, reason: str) -> str:
        return f": {reason}\n\n"


class MultipartStream(HttpStream):
    """Apollo's multipart subscriptions: one JSON part per event under `{"payload": …}`, `{}`
    as the heartbeat, and a last part of errors when the stream must be resumed."""

    media_type = 'multipart/mixed; boundary="graphql"; subscriptionSpec="1.0"'
    preamble = "\r\n--graphql"
    heartbeat = "\r\ncontent-type: application/json\r\n\r\n{}\r\n--graphql"
    final = "--\r\n"

    @staticmethod
    def part(json_text: str) -> str:
        return f"\r\ncontent-type: application/json\r\n\r\n{json_text}\r\n--graphql"

    def frame(self, event: EventRecord, payload: str) -> str:
        return self.part('{"payload":%s}' % payload)

    def result(self, payload: str) -> str:
        return self.part('{"payload":%s}' % payload)

    def ending(self, reason: str) -> str:
        errors = [{"message": reason, "extensions": {"code": "UNAVAILABLE"}}]
        return self.part(orjson.dumps({"payload": None, "errors": errors}).decode())


class OpenStreams:
    """Open subscription streams per caller, bounded like a WebSocket's subscriptions."""

    def __init__(self) -> None:
        self._open: Counter[str] = Counter()

    @contextlib.contextmanager
    def held(self, caller: str, limit: int) -> Any:
        if self._open[caller] >= limit:
            raise Refused(429, "RATE_LIMITED", f"At most {limit} open streams per caller.")
        self._open[caller] += 1
        try:
            yield
        finally:
            self._open[caller] -= 1
            if not self._open[caller]:
                del self._open[caller]


def streamed_kind(request: Request) -> type[HttpStream] | None:
    """The stream a request asks for, or None when it wants a plain answer: server-sent events
    when they come first in its Accept (graphql-sse's client, EventSource), Apollo's multipart
    subscriptions when it names their spec. A client that lists them after JSON (urql, for
    every request) gets a stream for a subscription only (`stream_for`)."""
    accept = request.headers.get("accept", "").lower()
    if accept.lstrip().startswith(EVENT_STREAM) and request.method in ("GET", "POST"):
        return EventStream
    if MULTIPART in accept and "subscriptionspec" in accept and request.method == "POST":
        return MultipartStream
    return None


def stream_for(accept: str) -> type[HttpStream] | None:
    """The stream a subscription gets from a client that takes one anywhere in its Accept."""
    accept = accept.lower()
    if EVENT_STREAM in accept:
        return EventStream
    if MULTIPART in accept:
        return MultipartStream
    return None


GetContext = Callable[[Request], Awaitable[Context]]
JsonAnswer = Callable[[Request, str], Awaitable[Any]]


class StreamedRequests:
    """Answers requests that asked for a stream (api/view.py dispatches them here)."""

    def __init__(self, schema: strawberry.Schema, get_context: GetContext, answer: JsonAnswer):
        self.schema = schema
        self.get_context = get_context
        self.answer = answer
        self.open = OpenStreams()

    async def __call__(
        self, kind: type[HttpStream], request: Request, scope: Scope, receive: Receive, send: Send
    ) -> None:
        services: Services = request.app.state.services
        try:
            request.state.principal = await self._caller(request, services, kind)
            parameters = await self._parameters(request)
            operation = await requested(
                parameters, services, request.state.principal, request.method
            )
            operation_type = self._operation_type(operation)
            if kind is MultipartStream and operation_type != "subscription":
                # Apollo asks for multipart only for subscriptions; anything else: plain JSON.
                response = await self.answer(request, request.headers.get("accept", ""))
                return await response(scope, receive, send)
            if operation_type == "mutation" and request.method == "GET":
                raise Refused(405, "VALIDATION", "Mutations are not allowed by GET.", allow="POST")
            context = await self.get_context(request)
            if operation_type != "subscription":
                return await self._respond(kind, operation, None, context, receive, send)
            if not services.subscribe_limiter.allow(context.caller):
                raise Refused(429, "RATE_LIMITED", "Too many subscriptions started: slow down.")
            with self.open.held(context.caller, services.settings.max_streams_per_caller):
                last_event_id = request.headers.get("last-event-id") or None
                return await self._respond(kind, operation, last_event_id, context, receive, send)
        except Refused as refused:
            return await refused.response(scope, receive, send)

    async def _caller(
        self, request: Request, services: Services, kind: type[HttpStream]
    ) -> Principal:
        """The bearer token's principal; or, for an EventSource's GET, the stream cookie's."""
        authorization = request.headers.get("authorization")
        cookie = request.cookies.get(COOKIE)
        try:
            if authorization is None and cookie and kind is EventStream and request.method == "GET":
                return services.stream_cookies.principal(cookie, time.time())
            return await services.authenticator.identify(authorization)
        except Unauthenticated as refused:
            headers = {"www-authenticate": "Bearer"}
            raise Refused(401, "UNAUTHENTICATED", refused.reason, **headers) from None

    @staticmethod
    async def _parameters(request: Request) -> Mapping[str, Any]:
        media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if request.method == "POST" and media_type != "application/json":
            raise Refused(415, "VALIDATION", "Send GraphQL as application/json.")
        data = await read_parameters(request)
        if isinstance(data, str):
            raise Refused(400, "VALIDATION", data)
        return data

    def _operation_type(self, operation: Requested) -> str | None:
        """The operation's type, or None when the document does not say (execution reports
        why)."""
        documents = getattr(self.schema, "documents", None)
        try:
            checked = documents.check(self.schema._schema, operation.query)  # type: ignore[union-attr]
        except Exception:  # it does not parse: the stream reports it
            return None
        found = get_operation_ast(checked.document, operation.operation_name)
        return None if found is None else found.operation.value

    async def _respond(
        self,
        kind: type[HttpStream],
        operation: Requested,
        last_event_id: str | None,
        context: Context,
        receive: Receive,
        send: Send,
    ) -> None:
        settings = context.services.settings
        stream = kind(send, settings.stream_send_timeout_seconds)
        await stream.start()
        # A long-lived stream now: no admission slot, no request-wide database bound; the
        # tasks below inherit that.
        with streaming():
            run = asyncio.create_task(self._run(stream, operation, last_event_id, context))
        gone = asyncio.create_task(_disconnected(receive))
        beat = asyncio.create_task(stream.beat(settings.stream_heartbeat_seconds))
        try:
            await asyncio.wait({run, gone, beat}, return_when=asyncio.FIRST_COMPLETED)
            disconnected = gone.done()
            completed = run.done() and run.exception() is None
        finally:
            for task in (run, gone, beat):
                task.cancel()
            await asyncio.gather(run, gone, beat, return_exceptions=True)
        error = run.exception() if run.done() and not run.cancelled() else None
        if error is not None and not isinstance(error, SubscriberLagging):
            log.error("streamed operation failed", exc_info=error)
        if not disconnected:
            await stream.finish(completed and stream.ended is None)

    async def _run(
        self,
        stream: HttpStream,
        operation: Requested,
        last_event_id: str | None,
        context: Context,
    ) -> None:
        # The subscription's resolver reads this (api/subscriptions.py) in this task.
        SUBSCRIBING.set(
            SubscribeRequest(
                query=operation.query,
                variables=operation.variables,
                operation_name=operation.operation_name,
                schema=self.schema,
                transport=stream,  # type: ignore[arg-type]
                resume_after=last_event_id,
            )
        )
        results = await self.schema.stream(
            operation.query,
            variable_values=operation.variables,
            context_value=context,
            operation_name=operation.operation_name,
            operation_extensions=operation.extensions,
        )
        try:
            async for result in results:
                if isinstance(result, GraphQLError):  # pragma: no cover - never yielded
                    continue
                payload = orjson.dumps(process_result(result)).decode()  # type: ignore[arg-type]
                await stream.send(stream.result(payload))
        finally:
            await results.aclose()  # type: ignore[union-attr]


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
