"""Settings: the only reader of the environment and the JSON config file."""

import json
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from api.auth import Token
from api.issuers import Issuer
from models import Limits
from models.database import POOLERS, Pooler
from models.janitor import Retention

log = logging.getLogger(__name__)

PREFIX = "SESSION_SERVICE_"
Profile = Literal["development", "production"]


class ConfigError(ValueError):
    """A setting has a value the service cannot run with; the message names the key."""


@dataclass(frozen=True)
class Settings:
    database_url: str = "sqlite+aiosqlite:///./sessions.db"
    # "pgbouncer" when database_url is a transaction pooler's address (models/database.py).
    database_pooler: Pooler = "none"
    broadcast_url: str = "memory://"
    integrate_session_management: bool = True
    profile: Profile = "development"
    limits: Limits = field(default_factory=Limits)
    # How often the hub reads the event log even without a bus message (the safety net).
    event_poll_interval: float = 1.0
    subscriber_queue_size: int = 1000
    # Cleanup periods in seconds; 0 turns one off. Resuming from a deleted event's cursor
    # gives CURSOR_EXPIRED.
    idle_timeout_seconds: float = 0
    session_retention_seconds: float = 90 * 24 * 3600
    event_retention_seconds: float = 30 * 24 * 3600
    cleanup_interval_seconds: float = 60.0
    db_pool_size: int = 10
    # Hung peers: all of a request's PostgreSQL work (waiting for a connection, connecting,
    # statements) ends within this many seconds, else it fails as UNAVAILABLE (background reads
    # get as long per use); and at most this many operations wait for a pool connection at once
    # (more fail as UNAVAILABLE at once).
    request_timeout_seconds: float = 10.0
    db_max_waiting: int = 100
    # Overload: POSTs to /graphql answered at once, at most; more are refused with 503,
    # Retry-After and OVERLOADED before their body is read (api/admission.py).
    max_requests_in_flight: int = 64
    # How long /metrics may reuse the per-data-source counts it read from the database.
    metrics_cache_seconds: float = 5.0
    # On SIGTERM: stop accepting, close WebSockets with 1012, let requests finish this long.
    shutdown_timeout_seconds: int = 10
    # Bearer tokens; none configured: the service is open and listens on loopback only,
    # unless allow_open_network says otherwise.
    tokens: tuple[Token, ...] = ()
    allow_open_network: bool = False
    # OpenID Connect issuers whose JWTs are trusted beside the tokens (api/issuers.py).
    issuers: tuple[Issuer, ...] = ()
    # How often each issuer's JWKS is fetched anyway; and the least time between two fetches
    # for tokens naming a key id that is not held, so made-up ones cannot flood the provider.
    jwks_refresh_seconds: float = 300.0
    jwks_refetch_interval_seconds: float = 10.0
    # Protections, on in every profile (sized so the contract's legitimate queries pass).
    max_body_bytes: int = 64 * 1024
    max_websocket_message_bytes: int = 64 * 1024
    max_query_depth: int = 12
    max_aliases: int = 15
    max_tokens: int = 2000
    max_directives: int = 5
    connection_init_timeout_seconds: float = 10.0
    # The server pings every WebSocket this often and closes it (1011) when no pong comes back
    # within as long again.
    websocket_ping_interval_seconds: float = 20.0
    max_subscriptions_per_connection: int = 100
    # Token buckets per caller (per token, or per client address when open); 0 turns one off.
    mutation_rate_per_second: float = 50.0
    mutation_burst: int = 100
    subscribe_rate_per_second: float = 20.0
    subscribe_burst: int = 50
    # Subscriptions over HTTP streams (server-sent events, multipart): a heartbeat this often;
    # a stream whose client has not taken a frame for send_timeout is closed (it resumes by
    # Last-Event-ID); at most this many open streams per caller.
    stream_heartbeat_seconds: float = 10.0
    stream_send_timeout_seconds: float = 10.0
    max_streams_per_caller: int = 100
    # The stream cookie (api/stream_cookie.py): signed with this secret (empty: a random one per
    # process, so set it when several processes serve), valid at most this long.
    stream_cookie_secret: str = field(default="", repr=False)
    stream_cookie_seconds: float = 3600.0
    log_format: Literal["text", "json"] = "text"
    # Which operations get a log line: "errors" (any outcome but ok) or "all". A line for every
    # operation cost about an eighth of the CPU of a small query (bench/REPORT.md).
    log_operations: Literal["all", "errors"] = "errors"
    # Queries and mutations POSTed as JSON skip Strawberry's HTTP view (api/view.py). Off, every
    # request takes Strawberry's: the same answers, slower (tests/test_fast_path.py).
    http_fast_path: bool = True
    # Queries on the fast path are answered from compiled plans (api/compiled.py). Off, every
    # query goes through graphql-core: the same answers, slower (tests/test_compiled.py).
    compiled_execution: bool = True
    # Query answers kept while the data they were made from is unchanged (api/cache.py), up to
    # this many bytes of answers.
    response_cache: bool = True
    response_cache_bytes: int = 32 * 1024 * 1024
    # An Apollo persisted-query manifest, or a folder of .graphql files: when set, only those
    # documents run, except for admin tokens (api/persisted.py).
    trusted_documents: str | None = None
    # How many documents registered by automatic persisted queries the database keeps.
    persisted_documents_limit: int = 10_000

    @property
    def development(self) -> bool:
        return self.profile == "development"

    @property
    def retention(self) -> Retention:
        return Retention(
            idle_timeout=self.idle_timeout_seconds or None,
            ended_sessions=self.session_retention_seconds or None,
            events=self.event_retention_seconds or None,
        )


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"{value!r} is not true or false")


def _positive(kind: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def parse(value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError(f"{value!r} is not a number")
        number = kind(value)
        if number <= 0:
            raise ValueError(f"{value!r} is not positive")
        return number

    return parse


def _non_negative(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a number")
    number = float(value)
    if number < 0:
        raise ValueError(f"{value!r} is negative")
    return number


def _log_format(value: Any) -> Literal["text", "json"]:
    if value not in ("text", "json"):
        raise ValueError(f"{value!r} is neither text nor json")
    return value  # type: ignore[no-any-return]


def _log_operations(value: Any) -> Literal["all", "errors"]:
    if value not in ("all", "errors"):
        raise ValueError(f"{value!r} is neither all nor errors")
    return value  # type: ignore[no-any-return]


def _tokens(value: Any) -> tuple[Token, ...]:
    """A list of token objects, or (from the environment) the same list as JSON text."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise ValueError("must be a JSON list of token objects") from None
    if not isinstance(value, list):
        raise ValueError("must be a list of token objects")
    return tuple(Token.parse(entry, f"[{index}]") for index, entry in enumerate(value))


def _issuers(value: Any) -> tuple[Issuer, ...]:
    """A list of issuer objects, or (from the environment) the same list as JSON text."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise ValueError("must be a JSON list of issuer objects") from None
    if not isinstance(value, list):
        raise ValueError("must be a list of issuer objects")
    issuers = tuple(Issuer.parse(entry, f"[{index}]") for index, entry in enumerate(value))
    names = [issuer.issuer for issuer in issuers]
    for index, name in enumerate(names):
        if name in names[:index]:
            raise ValueError(f"[{index}].issuer: {name!r} is listed twice")
    return issuers


def _secret(value: Any) -> str:
    if not isinstance(value, str) or len(value) < 32:
        raise ValueError("must be a string of at least 32 characters")
    return value


def _profile(value: Any) -> Profile:
    if value not in ("development", "production"):
        raise ValueError(f"{value!r} is neither development nor production")
    return value  # type: ignore[no-any-return]


def _pooler(value: Any) -> Pooler:
    if value not in POOLERS:
        raise ValueError(f"{value!r} is not one of {', '.join(POOLERS)}")
    return value  # type: ignore[no-any-return]


def _url(value: Any) -> str:
    if not isinstance(value, str) or "://" not in value:
        raise ValueError(f"{value!r} is not a URL")
    return value


def _existing_path(value: Any) -> str:
    if not isinstance(value, str) or not Path(value).exists():
        raise ValueError(f"{value!r} is not an existing file or folder")
    return value


_PARSERS: dict[str, Callable[[Any], Any]] = {
    "database_url": _url,
    "database_pooler": _pooler,
    "broadcast_url": _url,
    "integrate_session_management": _boolean,
    "profile": _profile,
    "event_poll_interval": _positive(float),
    "subscriber_queue_size": _positive(int),
    "idle_timeout_seconds": _non_negative,
    "session_retention_seconds": _non_negative,
    "event_retention_seconds": _non_negative,
    "cleanup_interval_seconds": _positive(float),
    "db_pool_size": _positive(int),
    "request_timeout_seconds": _positive(float),
    "db_max_waiting": _positive(int),
    "max_requests_in_flight": _positive(int),
    "metrics_cache_seconds": _non_negative,
    "shutdown_timeout_seconds": _positive(int),
    "tokens": _tokens,
    "issuers": _issuers,
    "jwks_refresh_seconds": _positive(float),
    "jwks_refetch_interval_seconds": _positive(float),
    "max_body_bytes": _positive(int),
    "max_websocket_message_bytes": _positive(int),
    "max_query_depth": _positive(int),
    "max_aliases": _positive(int),
    "max_tokens": _positive(int),
    "max_directives": _positive(int),
    "connection_init_timeout_seconds": _positive(float),
    "websocket_ping_interval_seconds": _positive(float),
    "max_subscriptions_per_connection": _positive(int),
    "mutation_rate_per_second": _non_negative,
    "mutation_burst": _positive(int),
    "subscribe_rate_per_second": _non_negative,
    "subscribe_burst": _positive(int),
    "allow_open_network": _boolean,
    "stream_heartbeat_seconds": _positive(float),
    "stream_send_timeout_seconds": _positive(float),
    "max_streams_per_caller": _positive(int),
    "stream_cookie_secret": _secret,
    "stream_cookie_seconds": _positive(float),
    "log_format": _log_format,
    "log_operations": _log_operations,
    "http_fast_path": _boolean,
    "compiled_execution": _boolean,
    "response_cache": _boolean,
    "response_cache_bytes": _positive(int),
    "trusted_documents": _existing_path,
    "persisted_documents_limit": _positive(int),
}
_LIMIT_PARSER = _positive(int)


def _pascal(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


def _known_keys() -> dict[str, tuple[str, str | None]]:
    """Every accepted name (env var and config-file key) → (setting, limit or None)."""
    known: dict[str, tuple[str, str | None]] = {}
    for name in _PARSERS:
        known[PREFIX + name.upper()] = (name, None)
        known[_pascal(name)] = (name, None)
    for limit in fields(Limits):
        known[f"{PREFIX}LIMIT_{limit.name.upper()}"] = ("limits", limit.name)
        known[f"Limit{_pascal(limit.name)}"] = ("limits", limit.name)
    return known


def _address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return (parts.hostname or "localhost").lower(), parts.port or 5432


def check(settings: Settings) -> Settings:
    """The settings, unless they contradict each other."""
    bus = urlsplit(settings.broadcast_url).scheme
    if (
        settings.database_pooler != "none"
        and bus in ("postgres", "postgresql")
        and _address(settings.broadcast_url) == _address(settings.database_url)
    ):
        # LISTEN holds for the session, which a transaction pooler hands to other clients
        # after every transaction: notifications would be lost or reach a stranger.
        raise ConfigError(
            f"{PREFIX}BROADCAST_URL: the postgres:// bus needs a direct connection to "
            f"PostgreSQL, and it names the address of {PREFIX}DATABASE_URL, which "
            f"{PREFIX}DATABASE_POOLER says is {settings.database_pooler}: point it at "
            "PostgreSQL itself, or use redis://"
        )
    return settings


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Settings from the config file named by SESSION_SERVICE_CONFIG, then the environment."""
    environ = os.environ if environ is None else environ
    known = _known_keys()
    values: list[tuple[str, Any]] = []
    if path := environ.get(PREFIX + "CONFIG"):
        try:
            document = json.loads(Path(path).read_text())
        except (OSError, ValueError) as error:
            raise ConfigError(f"{PREFIX}CONFIG: cannot read {path}: {error}") from None
        if not isinstance(document, dict):
            raise ConfigError(f"{PREFIX}CONFIG: {path} must hold a JSON object")
        for key, value in document.items():
            if key in known:
                values.append((key, value))
            else:
                log.warning("config file %s: unknown key %r ignored", path, key)
    for key, value in environ.items():
        if key.startswith(PREFIX) and key != PREFIX + "CONFIG":
            if key in known:
                values.append((key, value))
            else:
                log.warning("unknown environment variable %s ignored", key)
    settings = Settings()
    for key, value in values:
        name, limit = known[key]
        try:
            if limit is None:
                settings = replace(settings, **{name: _PARSERS[name](value)})
            else:
                limits = replace(settings.limits, **{limit: _LIMIT_PARSER(value)})
                settings = replace(settings, limits=limits)
        except (TypeError, ValueError) as error:
            raise ConfigError(f"{key}: {error}") from None
    return check(settings)
