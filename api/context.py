"""The per-request context: who is asking, and the app's shared services seen by them."""

import itertools
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

from starlette.websockets import WebSocket

from api.auth import OPEN, Authenticator, Principal, Role
from api.cache import ResponseCache
from api.config import Settings
from api.errors import disabled, top_level
from api.fanout import Audiences
from api.limits import RateLimiter
from api.loaders import EventLoaders, Loaders
from api.persisted import PersistedDocuments
from api.stream_cookie import StreamCookies
from models import Database, EventHub, InvalidInput, SessionReader, SessionWriter
from models.inputs import check_lookup

_request_ids = itertools.count()
_request_id_prefix: tuple[int, str] = (0, "")


def new_request_id() -> str:
    """32 hex digits, unique per process and request: a random prefix drawn once per process
    and a counter. uuid4 reads the system's random source on every call, which was a tenth
    of a small query's CPU."""
    global _request_id_prefix
    pid = os.getpid()
    if _request_id_prefix[0] != pid:  # a new process (a forked worker) draws its own
        _request_id_prefix = (pid, uuid.uuid4().hex[:16])
    return f"{_request_id_prefix[1]}{next(_request_ids) & (2**64 - 1):016x}"


@dataclass
class Services:
    """Built once by the app's lifespan and shared by every request."""

    settings: Settings
    database: Database
    hub: EventHub
    authenticator: Authenticator
    mutation_limiter: RateLimiter
    subscribe_limiter: RateLimiter
    documents: PersistedDocuments
    event_loaders: EventLoaders = field(init=False)
    audiences: Audiences = field(default_factory=Audiences)
    response_cache: ResponseCache | None = field(init=False)
    stream_cookies: StreamCookies = field(init=False)

    def __post_init__(self) -> None:
        self.stream_cookies = StreamCookies(self.settings)
        self.event_loaders = EventLoaders(self.reader)
        cache = self.settings.response_cache
        self.response_cache = ResponseCache(self.settings.response_cache_bytes) if cache else None

    async def data_version(self) -> int:
        """Moved by every committed change (api/cache.py)."""
        return await self.database.data_version()

    def reader(self, scope: frozenset[str] | None) -> SessionReader:
        return SessionReader(self.database, self.settings.limits, scope)

    def writer(self, scope: frozenset[str] | None) -> SessionWriter:
        return SessionWriter(self.database, self.settings.limits, self.hub.announce, scope)


@dataclass
class Context:
    """One operation's context. Over HTTP a request is one operation; a WebSocket's context is
    copied for each query or mutation it carries (`for_operation`), so that none shares another's
    loaders."""

    services: Services
    principal: Principal = OPEN
    websocket: WebSocket | None = None
    # Filled by Strawberry from a WebSocket's connection_init payload.
    connection_params: dict[str, Any] = field(default_factory=dict)
    client_address: str = "unknown"
    request_id: str = field(default_factory=lambda: new_request_id())

    @property
    def caller(self) -> str:
        """Whom rate limits count against: the token, or the client's address when open."""
        if self.services.authenticator.open:
            return f"address:{self.client_address}"
        return self.principal.name

    def for_operation(self) -> "Context":
        """This context for one more operation on the same connection."""
        return replace(self) if self.websocket is not None else self

    @cached_property
    def loaders(self) -> Loaders:
        """The operation's loaders over its reader, as this caller may read: built once."""
        return Loaders(self.services.reader(self.principal.data_sources))

    @cached_property
    def writer(self) -> SessionWriter:
        """The write use cases, as this caller may make them."""
        return self.services.writer(self.principal.data_sources)

    @property
    def hub(self) -> EventHub:
        return self.services.hub

    @property
    def enabled(self) -> bool:
        return self.services.settings.integrate_session_management

    def require_enabled(self) -> None:
        """What every query and subscription asks first: may this caller read at all (a token
        of an issuer may map to no role), and is session management on."""
        self.principal.require(Role.READ)
        if not self.enabled:
            raise disabled()

    def require_data_source(self, data_source: str | None, path: str = "dataSource") -> None:
        """A well-formed data source the caller may touch, or a top-level error. Lists that
        name none are narrowed to what the caller may read instead."""
        if data_source is not None:
            self.check(check_lookup, data_source, path)
            self.principal.require_data_source(data_source)

    def require_key(self, key: str | None, path: str) -> None:
        """A key that can be looked up (an unknown one finds nothing), or a top-level error."""
        if key is not None:
            self.check(check_lookup, key, path)

    @staticmethod
    def check(check: Callable[..., None], *args: Any) -> None:
        try:
            check(*args)
        except InvalidInput as error:
            raise top_level(error) from error
