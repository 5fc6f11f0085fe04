"""The per-request context: who is asking, and the app's shared services seen by them."""

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.websockets import WebSocket

from api.auth import OPEN, Authenticator, Principal
from api.config import Settings
from api.errors import disabled, top_level
from api.fanout import Audiences
from api.limits import RateLimiter
from api.loaders import EventLoaders, Loaders
from models import EventHub, InvalidInput, SessionRepository, SharedRead
from models.inputs import check_lookup


@dataclass
class Services:
    """Built once by the app's lifespan and shared by every request."""

    settings: Settings
    repository: SessionRepository
    hub: EventHub
    authenticator: Authenticator
    mutation_limiter: RateLimiter
    subscribe_limiter: RateLimiter
    event_loaders: EventLoaders = field(init=False)
    audiences: Audiences = field(default_factory=Audiences)

    def __post_init__(self) -> None:
        self.event_loaders = EventLoaders(self.repository)


@dataclass
class Context:
    services: Services
    principal: Principal = OPEN
    websocket: WebSocket | None = None
    # Filled by Strawberry from a WebSocket's connection_init payload.
    connection_params: dict[str, Any] = field(default_factory=dict)
    client_address: str = "unknown"
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    # Set while a query operation runs: its reads share one transaction.
    shared_read: SharedRead | None = None

    @property
    def caller(self) -> str:
        """Whom rate limits count against: the token, or the client's address when open."""
        if self.services.authenticator.open:
            return f"address:{self.client_address}"
        return self.principal.name

    @property
    def repository(self) -> SessionRepository:
        """The repository limited to the data sources this caller may touch."""
        repository = self.services.repository.within(self.principal.data_sources)
        return repository if self.shared_read is None else repository.sharing(self.shared_read)

    @property
    def hub(self) -> EventHub:
        return self.services.hub

    @property
    def enabled(self) -> bool:
        return self.services.settings.integrate_session_management

    def require_enabled(self) -> None:
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

    def loaders(self) -> Loaders:
        return Loaders(self.repository)
