"""Protections against hostile input: body size, document shape and request rates."""

import time
from collections import OrderedDict
from typing import Any

from graphql import GraphQLError, ValidationContext, ValidationRule
from graphql.language import DirectiveNode, SelectionSetNode
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from strawberry.extensions import QueryDepthLimiter


def error_body(code: str, message: str) -> dict[str, Any]:
    return {"errors": [{"message": message, "extensions": {"code": code}}]}


class BodyLimit:
    """Refuses HTTP bodies larger than `max_bytes` with 413, before the app reads them."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = next(
            (value for name, value in scope["headers"] if name == b"content-length"), b"0"
        )
        if not declared.isdigit() or int(declared) > self.max_bytes:
            return await self._refuse(scope, receive, send)
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                return await self._refuse(scope, receive, send)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body: Message | None = {"type": "http.request", "body": b"".join(chunks)}

        async def replay() -> Message:
            nonlocal body
            if body is None:
                return await receive()
            message, body = body, None
            return message

        return await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = f"The request body is larger than {self.max_bytes} bytes."
        response = JSONResponse(error_body("VALIDATION", message), status_code=413)
        await response(scope, receive, send)


def max_directives_rule(limit: int) -> type[ValidationRule]:
    """A validation rule refusing documents with more than `limit` directives."""

    class MaxDirectives(ValidationRule):
        def __init__(self, context: ValidationContext) -> None:
            super().__init__(context)
            self.count = 0

        def enter_directive(self, node: DirectiveNode, *_: Any) -> None:
            self.count += 1
            if self.count == limit + 1:
                self.report_error(
                    GraphQLError(f"'{limit}' directives is the most a document may use.", node)
                )

    return MaxDirectives


def max_depth_rule(limit: int) -> type[ValidationRule]:
    """Strawberry's depth limit, which fails (an INTERNAL error) where graphql-core's own rules
    or `NonEmptySelections` report the document's mistake: a spread of an unknown fragment
    (KeyError) and an empty selection set (ValueError). Those documents go unmeasured."""
    (depth_rule,) = QueryDepthLimiter(max_depth=limit).validation_rules

    class MaxDepth(depth_rule):  # type: ignore[valid-type, misc]
        def __init__(self, context: ValidationContext) -> None:
            try:
                super().__init__(context)
            except (KeyError, ValueError):
                ValidationRule.__init__(self, context)

    return MaxDepth


class NonEmptySelections(ValidationRule):
    """Refuses `{}`: graphql-core's parser takes an empty selection set, which the GraphQL
    grammar does not allow."""

    def enter_selection_set(self, node: SelectionSetNode, *_: Any) -> None:
        if not node.selections:
            self.report_error(GraphQLError("A selection set must select something.", node))


class RateLimiter:
    """A token bucket per caller: `rate` a second, bursts of `burst`. Keeps the most recent
    `max_callers` callers, so the table cannot grow without bound."""

    def __init__(self, rate: float, burst: int, max_callers: int = 10_000) -> None:
        self.rate = rate
        self.burst = burst
        self.max_callers = max_callers
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def allow(self, caller: str) -> bool:
        if self.rate <= 0:
            return True
        now = time.monotonic()
        tokens, last = self._buckets.pop(caller, (float(self.burst), now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        allowed = tokens >= 1
        self._buckets[caller] = (tokens - 1 if allowed else tokens, now)
        if len(self._buckets) > self.max_callers:
            self._buckets.popitem(last=False)
        return allowed
