"""Fixtures: a real server per test, on a fresh SQLite file or a fresh PostgreSQL database."""

import asyncio
import os
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import asyncpg
import pytest
import uvicorn
from sqlalchemy.engine import make_url

from api import Settings, create_app
from api.app import server_options
from models import Database
from models.database import Pooler
from tests.client import Client
from tests.services import PrivatePgBouncer, PrivatePostgres

POSTGRES_ENV = "SESSION_SERVICE_TEST_POSTGRES_URL"
REDIS_ENV = "SESSION_SERVICE_TEST_REDIS_URL"
IN_CI = os.environ.get("CI", "").lower() == "true"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for variable in (POSTGRES_ENV, REDIS_ENV):
        if IN_CI and not os.environ.get(variable):
            raise pytest.UsageError(f"CI=true but {variable} is not set: .ci/run must set it")


# -- databases -------------------------------------------------------------------------------


class PostgresDatabases:
    """Creates a migrated template database once per run, then one copy per test."""

    def __init__(self, url: str) -> None:
        self.url = make_url(url)
        self.template = f"session_service_tmpl_{os.getpid()}"
        self.created: list[str] = []

    def dsn(self, name: str) -> str:
        return self.url.set(drivername="postgresql", database=name).render_as_string(
            hide_password=False
        )

    def _url_for(self, name: str) -> str:
        return self.url.set(database=name).render_as_string(hide_password=False)

    async def admin(self, *statements: str) -> None:
        connection = await asyncpg.connect(self.dsn("postgres"))
        try:
            for statement in statements:
                await connection.execute(statement)
        finally:
            await connection.close()

    async def _migrate_template(self) -> None:
        await self.admin(
            f'DROP DATABASE IF EXISTS "{self.template}"', f'CREATE DATABASE "{self.template}"'
        )
        database = Database(self._url_for(self.template))
        try:
            await database.migrate()
        finally:
            await database.dispose()

    def setup(self) -> None:
        asyncio.run(self._migrate_template())

    def new(self) -> str:
        name = f"session_service_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        asyncio.run(self.admin(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"'))
        self.created.append(name)
        return self._url_for(name)

    def drop(self, url: str) -> None:
        name = make_url(url).database
        asyncio.run(self.admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    def teardown(self) -> None:
        asyncio.run(self.admin(f'DROP DATABASE IF EXISTS "{self.template}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresDatabases | None]:
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        yield None
        return
    databases = PostgresDatabases(url)
    databases.setup()
    yield databases
    databases.teardown()


class BouncedDatabases:
    """A private cluster behind a private PgBouncer in transaction pooling mode, with two
    server connections per database: each test's database is copied from a migrated template
    on the cluster directly, and used through the pooler."""

    def __init__(self) -> None:
        self.cluster = PrivatePostgres().start()
        self.bouncer = PrivatePgBouncer(self.cluster.port).start()
        self.databases = PostgresDatabases(self.cluster.url)
        self.databases.setup()

    def new(self) -> str:
        return self.bouncer.url(make_url(self.databases.new()).database or "")

    def empty(self) -> str:
        """A database without tables, through the pooler: the service migrates it."""
        name = f"session_service_empty_{uuid.uuid4().hex[:8]}"
        asyncio.run(self.databases.admin(f'CREATE DATABASE "{name}"'))
        return self.bouncer.url(name)

    def direct(self, url: str) -> str:
        """An asyncpg DSN for the same database on the cluster itself, not through the pooler."""
        return self.databases.dsn(make_url(url).database or "")

    def drop(self, url: str) -> None:
        self.databases.drop(url)

    def remove(self) -> None:
        self.bouncer.remove()
        self.databases.teardown()
        self.cluster.remove()


@pytest.fixture(scope="session")
def pgbouncer_databases(postgres: Any) -> Iterator[BouncedDatabases | None]:
    """Started only when a test asks for it (the "pgbouncer" database_url)."""
    if postgres is None:
        yield None
        return
    if not PrivatePgBouncer.available():
        message = "PgBouncer variant: needs Debian's pgbouncer (`make test` installs it as root)"
        if IN_CI:
            pytest.fail(f"CI=true: {message}")
        yield None
        return
    databases = BouncedDatabases()
    yield databases
    databases.remove()


# Modules whose tests also run through PgBouncer set `pytestmark = THROUGH_PGBOUNCER`.
THROUGH_PGBOUNCER = pytest.mark.parametrize(
    "database_url", ["sqlite", "postgres", "pgbouncer"], indirect=True
)


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Any, postgres: Any) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'sessions.db'}"
        return
    if request.param == "pgbouncer":
        bounced = request.getfixturevalue("pgbouncer_databases")
        if bounced is None:
            pytest.skip(
                f"PgBouncer variant: set {POSTGRES_ENV} and install Debian's pgbouncer to run it"
            )
        url = bounced.new()
        yield url
        bounced.drop(url)
        return
    if postgres is None:
        pytest.skip(
            f"PostgreSQL variant: set {POSTGRES_ENV}=postgresql+asyncpg://postgres@127.0.0.1:5432/"
            "postgres to run it (.ci/run sets it)"
        )
    url = postgres.new()
    yield url
    postgres.drop(url)


@pytest.fixture
def private_postgres(postgres: Any) -> Iterator[PrivatePostgres]:
    """A cluster of this test's own, to stop or pause."""
    if postgres is None:  # the same switch as every PostgreSQL test
        pytest.skip("needs SESSION_SERVICE_TEST_POSTGRES_URL (and PostgreSQL server binaries)")
    cluster = PrivatePostgres().start()
    yield cluster
    cluster.remove()


@pytest.fixture
def redis_url() -> str:
    url = os.environ.get(REDIS_ENV)
    if not url:
        pytest.skip(f"Redis tests: set {REDIS_ENV}=redis://127.0.0.1:6379/0 to run them")
    return url


# -- the server --------------------------------------------------------------------------------


class LiveServer:
    """create_app(settings) served by uvicorn on a free loopback port, in a thread of its own."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.app = create_app(settings)
        config = uvicorn.Config(
            self.app, host="127.0.0.1", port=0, log_level="warning", **server_options(settings)
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def __enter__(self) -> "LiveServer":
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.01)
        port = self._server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=30)

    @property
    def services(self) -> Any:
        return self.app.state.services


# Rate limits are off unless a test turns them on: tests drive load from one address.
UNLIMITED: dict[str, Any] = {"mutation_rate_per_second": 0, "subscribe_rate_per_second": 0}


@pytest.fixture
def database_pooler(request: pytest.FixtureRequest) -> Pooler:
    callspec = getattr(request.node, "callspec", None)
    through = callspec is not None and callspec.params.get("database_url") == "pgbouncer"
    return "pgbouncer" if through else "none"


@pytest.fixture
def settings(database_url: str, database_pooler: Pooler) -> Settings:
    return Settings(
        database_url=database_url,
        database_pooler=database_pooler,
        event_poll_interval=0.5,
        cleanup_interval_seconds=3600,
        **UNLIMITED,
    )


@pytest.fixture
def make_server(settings: Settings) -> Iterator[Any]:
    """Start a server with the test's settings, optionally changed: make_server(profile=...)."""
    started: list[LiveServer] = []

    def make(**changes: Any) -> LiveServer:
        server = LiveServer(replace(settings, **changes)).__enter__()
        started.append(server)
        return server

    yield make
    for server in reversed(started):
        server.__exit__(None, None, None)


@pytest.fixture
def server(make_server: Any) -> LiveServer:
    return make_server()


@pytest.fixture
def client(server: LiveServer) -> Iterator[Client]:
    with Client(server.url) as client:
        yield client
