"""Admission control: how many GraphQL requests over HTTP are answered at once, and each
one's bound."""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from api.limits import error_body
from api.metrics import REQUESTS_REFUSED
from models.database import reset_deadline, set_deadline, without_deadline

# Gives the current request's slot back (once).
_RELEASE: ContextVar[Callable[[], None] | None] = ContextVar("admission_release", default=None)

OVERLOADED_MESSAGE = "The server is at capacity; nothing was done. Retry after the given seconds."


class Admission:
    """At most `limit` requests in flight (their bodies read). One more is refused at once with
    503, `Retry-After` and the code OVERLOADED: the excess of an overload costs little, so the
    admitted requests keep a latency bounded by the cap and the process a bounded memory,
    instead of every request queueing behind all the others. Each admitted request's database
    work is bounded by `timeout` seconds in all (models/database.py)."""

    def __init__(self, app: ASGIApp, limit: int, timeout: float, retry_after: int = 1) -> None:
        self.app = app
        self.limit = limit
        self.timeout = timeout
        self.in_flight = 0
        body = error_body("OVERLOADED", OVERLOADED_MESSAGE)
        self._refusal = orjson.dumps(body)
        self._headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(self._refusal)).encode()),
            (b"retry-after", str(retry_after).encode()),
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.in_flight >= self.limit:
            REQUESTS_REFUSED.inc()
            await send({"type": "http.response.start", "status": 503, "headers": self._headers})
            await send({"type": "http.response.body", "body": self._refusal})
            return
        self.in_flight += 1
        held = True

        def release() -> None:
            nonlocal held
            if held:
                held = False
                self.in_flight -= 1

        token = _RELEASE.set(release)
        bound = set_deadline(self.timeout)
        try:
            await self.app(scope, receive, send)
        finally:
            reset_deadline(bound)
            _RELEASE.reset(token)
            release()


@contextmanager
def streaming() -> Iterator[None]:
    """For a request that has become a long-lived stream (a subscription over HTTP): its slot is
    given back at once, and its database work is no longer bounded as one request's."""
    release = _RELEASE.get()
    if release is not None:
        release()
    with without_deadline():
        yield
