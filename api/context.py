"""The per-request context: what resolvers may use, built from the app's shared services."""

import uuid
from dataclasses import dataclass, field

from starlette.websockets import WebSocket

from api.config import Settings
from api.errors import disabled
from api.loaders import Loaders
from models import EventHub, SessionRepository


@dataclass
class Services:
    """Built once by the app's lifespan and shared by every request."""

    settings: Settings
    repository: SessionRepository
    hub: EventHub


@dataclass
class Context:
    services: Services
    websocket: WebSocket | None = None
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)

    @property
    def repository(self) -> SessionRepository:
        return self.services.repository

    @property
    def hub(self) -> EventHub:
        return self.services.hub

    @property
    def enabled(self) -> bool:
        return self.services.settings.integrate_session_management

    def require_enabled(self) -> None:
        if not self.enabled:
            raise disabled()

    def loaders(self) -> Loaders:
        return Loaders(self.repository)
