"""The dashboard and GraphiQL in headless Chromium, with no request leaving 127.0.0.1."""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.client import Client, Subscription
from tests.services import Served, free_port, service_environment

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Page, Route

ROOT = Path(__file__).resolve().parent.parent
SCREENSHOTS = ROOT / "docs" / "screenshots"
CHROMIUM = Path("/usr/bin/chromium")
# Headless, and nothing of Chromium's own reaching for the network; anything that is not
# loopback goes to a proxy on a closed loopback port, so it fails on this machine.
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--proxy-server=http://127.0.0.1:9",
]
LOCAL_HOSTS = {"127.0.0.1", "localhost"}
SHOWN = 2_000  # ms: the bound for a change to appear on the dashboard
RECOVERED = 20_000  # ms: a restart plus the dashboard's backoff (at most 5 s)

WRITE_TOKEN = "browser-test-token-with-enough-characters"


def _missing() -> str | None:
    if importlib.util.find_spec("playwright") is None:
        return "the playwright package is not installed"
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is not installed"
    return None


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    # The page, not the database, is under test (and Playwright's event loop rules out the
    # PostgreSQL fixtures' asyncio.run): SQLite only.
    return f"sqlite+aiosqlite:///{tmp_path / 'pages.db'}"


@pytest.fixture(scope="module")
def browser() -> Iterator["Browser"]:
    if reason := _missing():
        message = f"browser tests: {reason}; `make test` installs both (chromium as root)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    # A fresh --user-data-dir comes with each launch (Playwright makes a temporary one).
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        yield launched
        launched.close()


class LocalOnly:
    """A browser context whose requests may reach loopback only: any other is aborted and kept.

    It also keeps the pages' uncaught script errors, so that a test fails on one.
    """

    def __init__(self, context: "BrowserContext") -> None:
        self.context = context
        self.foreign: list[str] = []
        self.sockets: list[str] = []
        self.errors: list[str] = []
        context.route("**/*", self._route)

    def _route(self, route: "Route") -> None:
        if urlsplit(route.request.url).hostname in LOCAL_HOSTS:
            route.continue_()
        else:
            self.foreign.append(route.request.url)
            route.abort()

    def page(self) -> "Page":
        page = self.context.new_page()
        page.on("websocket", lambda socket: self.sockets.append(socket.url))
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        return page

    def assert_clean(self) -> None:
        assert self.errors == [], f"uncaught errors in the page: {self.errors}"
        assert self.foreign == [], f"requests to other hosts: {self.foreign}"
        outside = [url for url in self.sockets if urlsplit(url).hostname not in LOCAL_HOSTS]
        assert outside == [], f"WebSockets to other hosts: {outside}"


@pytest.fixture
def local(browser: "Browser") -> Iterator[LocalOnly]:
    context = browser.new_context(viewport={"width": 1280, "height": 720})
    context.set_default_timeout(10_000)
    guard = LocalOnly(context)
    yield guard
    context.close()
    guard.assert_clean()


class Service:
    """`session-service serve` on one port and one SQLite file, restartable in place."""

    def __init__(self, directory: Path, **settings: str) -> None:
        database = f"sqlite+aiosqlite:///{directory / 'sessions.db'}"
        self.env = service_environment(database, **settings)
        self.directory = directory
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.served: Served | None = None

    def start(self) -> None:
        self.served = Served(self.env, cwd=self.directory, port=self.port).__enter__()

    def stop(self) -> None:
        if self.served is not None:
            self.served.__exit__(None, None, None)
            self.served = None


@pytest.fixture
def make_service(tmp_path: Path) -> Iterator[Callable[..., Service]]:
    started: list[Service] = []

    def make(**settings: str) -> Service:
        service = Service(tmp_path, **settings)
        service.start()
        started.append(service)
        return service

    yield make
    for service in started:
        service.stop()


@pytest.fixture
def service(make_service: Callable[..., Service]) -> Service:
    return make_service()


def card(page: "Page", key: str) -> Any:
    return page.locator(f'article[data-key="{key}"]')


def open_dashboard(local: LocalOnly, service: Service, query: str = "") -> "Page":
    page = local.page()
    page.goto(f"{service.url}/dashboard{query}")
    page.locator('body[data-connection="live"]').wait_for()
    return page


def applied_cursors(page: "Page") -> list[str]:
    return page.evaluate("() => [...window.sessionDashboard.state.applied]")  # type: ignore[no-any-return]


def events_after(url: str, cursor: str, count: int) -> list[str]:
    """The cursors of the `count` events after `cursor`, as the event log replays them."""
    query = "subscription S($after: String) { sessionEvents(after: $after) { cursor } }"
    with Subscription(url, query, {"after": cursor}) as subscription:
        cursors = [subscription.next()["sessionEvents"]["cursor"] for _ in range(count)]
        assert subscription.nothing_within(0.3)
    return cursors


def test_dashboard_shows_a_new_session_within_two_seconds_then_its_changes_and_its_end(
    local: LocalOnly, service: Service
) -> None:
    page = open_dashboard(local, service)
    with Client(service.url) as client:
        started = time.monotonic()
        session = client.create(
            dataSource="car-44",
            identifier="FP1 run 3",
            type="Practice",
            details=[{"name": "trackTemp", "value": "22°C"}],
            streams=["engine", "tyres"],
        )
        shown = card(page, session["key"])
        shown.wait_for(timeout=SHOWN)
        assert time.monotonic() - started < SHOWN / 1000
        assert shown.locator(".identifier").inner_text() == "FP1 run 3"
        assert "Practice" in shown.locator(".type").inner_text()
        assert shown.locator(".streams li").all_inner_texts() == ["engine", "tyres"]
        assert page.locator('section[data-source="car-44"] .count').inner_text() == "1 live"

        client.mutate(
            "updateSessionDetails",
            "UpdateSessionDetailsInput",
            sessionKey=session["key"],
            details=[{"name": "trackTemp", "value": "25°C"}, {"name": "driver", "value": "Ada"}],
        )
        page.locator(f'article[data-key="{session["key"]}"][data-revision="2"]').wait_for(
            timeout=SHOWN
        )
        assert card(page, session["key"]).locator(".details dd").all_inner_texts() == [
            "Ada",
            "25°C",
        ]

        client.end(session["key"])
        page.locator(f'article[data-key="{session["key"]}"][data-status="ENDED"]').wait_for(
            timeout=SHOWN
        )
        assert page.locator('section[data-source="car-44"] .count').inner_text() == "0 live"


def test_dashboard_shows_the_hierarchy_groups_by_data_source_and_filters(
    local: LocalOnly, service: Service
) -> None:
    with Client(service.url) as client:
        weekend = client.create(dataSource="car-44", identifier="Race weekend", type="Event")
        page = open_dashboard(local, service)
        run = client.create(
            dataSource="car-44",
            identifier="FP1 run 3",
            type="Run",
            details=[
                {"name": "driver", "value": "Ada"},
                {"name": "trackTemp", "value": "22°C"},
            ],
            streams=["engine", "tyres", "aero"],
        )
        client.mutate(
            "addAssociateSession",
            "AssociateSessionInput",
            sessionKey=weekend["key"],
            associateSessionKey=run["key"],
        )
        bench = client.create(
            dataSource="bench-2",
            identifier="Gearbox endurance",
            type="Test",
            details=[{"name": "rig", "value": "B2"}],
            streams=["gearbox"],
        )
        sweep = client.create(dataSource="sim", identifier="Setup sweep 12", type="Simulation")

        parents = card(page, run["key"]).locator(".parents a")
        parents.wait_for(timeout=SHOWN)
        assert parents.all_inner_texts() == ["Race weekend"]
        associates = card(page, weekend["key"]).locator(".associates a")
        assert associates.all_inner_texts() == ["FP1 run 3"]
        card(page, sweep["key"]).wait_for(timeout=SHOWN)  # the last event: all are shown
        sources = page.locator("section.source")
        expect_sections(page, {"bench-2": "1 live", "car-44": "2 live", "sim": "1 live"})
        assert page.locator("#summary").inner_text() == "4 live sessions in 3 data sources"
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "dashboard.png"), full_page=True)

        page.locator("#filter").select_option("car-44")
        page.locator('section.source[data-source="bench-2"]').wait_for(state="detached")
        assert [s.get_attribute("data-source") for s in sources.all()] == ["car-44"]
        assert card(page, bench["key"]).count() == 0
        assert "dataSource=car-44" in page.url
        client.create(dataSource="bench-2", identifier="hidden by the filter")
        second = client.create(dataSource="car-44", identifier="FP1 run 4")
        card(page, second["key"]).wait_for(timeout=SHOWN)
        assert [s.get_attribute("data-source") for s in sources.all()] == ["car-44"]
        assert page.locator("#filter option").all_inner_texts() == [
            "All data sources",
            "bench-2 (2)",
            "car-44 (3)",
            "sim (1)",
        ]


def expect_sections(page: "Page", counts: dict[str, str]) -> None:
    shown = {
        section.get_attribute("data-source"): section.locator(".count").inner_text()
        for section in page.locator("section.source").all()
    }
    assert shown == counts


def test_dashboard_resumes_after_a_server_restart_without_missing_or_repeating_events(
    local: LocalOnly, service: Service
) -> None:
    page = open_dashboard(local, service)
    snapshot_cursor = page.locator("#cursor").inner_text()
    with Client(service.url) as client:
        first = client.create(dataSource="car-44", identifier="before the restart")
        card(page, first["key"]).wait_for(timeout=SHOWN)

    service.stop()
    page.locator('body:not([data-connection="live"])').wait_for()
    # Offline, the page cannot reconnect to the restarted service: these events fall in its gap.
    page.context.set_offline(True)
    service.start()
    with Client(service.url) as client:
        second = client.create(dataSource="car-44", identifier="in the gap")
        client.mutate(
            "updateSessionDetails",
            "UpdateSessionDetailsInput",
            sessionKey=first["key"],
            details=[{"name": "lap", "value": "12"}],
        )
        client.end(first["key"])
        assert page.evaluate("document.body.dataset.connection") != "live"
        page.context.set_offline(False)

        page.locator('body[data-connection="live"]').wait_for(timeout=RECOVERED)
        card(page, second["key"]).wait_for(timeout=SHOWN)
        page.locator(f'article[data-key="{first["key"]}"][data-status="ENDED"]').wait_for(
            timeout=SHOWN
        )
        assert card(page, first["key"]).locator(".details dd").all_inner_texts() == ["12"]

        after_restart = client.create(dataSource="car-44", identifier="after the restart")
        card(page, after_restart["key"]).wait_for(timeout=SHOWN)

    applied = applied_cursors(page)
    assert applied == events_after(service.url, snapshot_cursor, 5)
    assert page.evaluate("window.sessionDashboard.state.snapshots") == 1
    assert page.evaluate("window.sessionDashboard.state.reconnects") >= 1


def test_dashboard_reloads_the_snapshot_when_its_cursor_has_expired(
    local: LocalOnly, make_service: Callable[..., Service]
) -> None:
    service = make_service(
        SESSION_SERVICE_EVENT_RETENTION_SECONDS="1",
        SESSION_SERVICE_CLEANUP_INTERVAL_SECONDS="0.2",
    )
    page = open_dashboard(local, service)
    snapshot_cursor = page.locator("#cursor").inner_text()
    service.stop()
    page.locator('body:not([data-connection="live"])').wait_for()
    page.context.set_offline(True)
    service.start()
    with Client(service.url) as client:
        session = client.create(dataSource="car-44", identifier="in an expired gap")
    wait_until_expired(service.url, snapshot_cursor)
    page.context.set_offline(False)
    card(page, session["key"]).wait_for(timeout=RECOVERED)
    assert page.evaluate("window.sessionDashboard.state.snapshots") == 2
    page.locator('body[data-connection="live"]').wait_for()


def wait_until_expired(url: str, cursor: str) -> None:
    """Bounded polling until subscribing after `cursor` fails with CURSOR_EXPIRED."""
    query = "subscription S($after: String) { sessionEvents(after: $after) { cursor } }"
    deadline = time.monotonic() + 15
    while True:
        with Subscription(url, query, {"after": cursor}) as subscription:
            message = subscription.message()
        if message["type"] == "error":
            assert message["payload"][0]["extensions"]["code"] == "CURSOR_EXPIRED", message
            return
        assert time.monotonic() < deadline, "the event log was not pruned in 15 s"
        time.sleep(0.2)


def test_dashboard_sends_the_entered_token_over_http_and_the_websocket(
    local: LocalOnly, make_service: Callable[..., Service]
) -> None:
    tokens = [{"token": WRITE_TOKEN, "role": "write", "dataSources": ["*"]}]
    service = make_service(SESSION_SERVICE_TOKENS=json.dumps(tokens))
    page = local.page()
    page.goto(f"{service.url}/dashboard")
    page.locator('body[data-connection="unauthorized"]').wait_for()

    page.locator("#token").fill(WRITE_TOKEN)
    page.locator("#token-form button").click()
    page.locator('body[data-connection="live"]').wait_for()
    assert page.evaluate("localStorage.getItem('session-service.token')") == WRITE_TOKEN
    with Client(service.url, headers={"authorization": f"Bearer {WRITE_TOKEN}"}) as client:
        session = client.create(dataSource="car-44", identifier="with a token")
        card(page, session["key"]).wait_for(timeout=SHOWN)

    page.reload()
    page.locator('body[data-connection="live"]').wait_for()
    card(page, session["key"]).wait_for()


def test_the_guard_aborts_and_records_requests_to_other_hosts(local: LocalOnly) -> None:
    page = local.page()
    page.goto("data:text/html,<title>guard</title>")
    failed = page.evaluate(
        "() => fetch('http://example.invalid/probe').then(() => false, () => true)"
    )
    assert failed
    assert local.foreign == ["http://example.invalid/probe"]
    local.foreign.clear()  # seen: the teardown's check is for the other tests


def graphiql_editor(page: "Page", selector: str) -> str:
    return page.evaluate(  # type: ignore[no-any-return]
        "s => document.querySelector(s).CodeMirror.getValue()", selector
    )


QUERY_EDITOR = "document.querySelector('.graphiql-query-editor .CodeMirror').CodeMirror"


def run_in_graphiql(page: "Page", document: str) -> None:
    page.evaluate(f"d => {QUERY_EDITOR}.setValue(d)", document)
    # GraphiQL parses the editor's text a moment after it changes; until then ▶ would run the
    # previous document (sending a subscription as a query over HTTP).
    page.wait_for_function(f"d => {QUERY_EDITOR}.documentAST?.loc.source.body === d", arg=document)
    page.locator(".graphiql-execute-button:not([aria-haspopup])").click()


def wait_for_result(page: "Page", text: str, timeout: float = 10) -> dict[str, Any]:
    """Bounded polling of GraphiQL's result pane until it holds `text`."""
    deadline = time.monotonic() + timeout
    while text not in (shown := graphiql_editor(page, ".result-window .CodeMirror")):
        assert time.monotonic() < deadline, f"GraphiQL did not show {text!r}: {shown!r}"
        page.wait_for_timeout(50)
    return json.loads(shown)  # type: ignore[no-any-return]


def test_graphiql_loads_without_external_requests_and_runs_a_query_and_a_subscription(
    local: LocalOnly, service: Service
) -> None:
    page = graphiql_runs_a_query_and_a_subscription(local, service.url)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "graphiql.png"))


def graphiql_runs_a_query_and_a_subscription(local: LocalOnly, url: str) -> "Page":
    """GraphiQL at `url` on the assets we serve, on an empty database: a query, then a
    subscription seeing a session created meanwhile. Returns the page."""
    requested: list[str] = []
    page = local.page()
    page.on("request", lambda request: requested.append(request.url))
    page.goto(f"{url}/graphql")
    page.locator(".graphiql-query-editor .CodeMirror").wait_for()
    assert "subscription LiveEvents" in graphiql_editor(page, ".graphiql-query-editor .CodeMirror")
    assets = [urlsplit(address).path for address in requested if "/graphiql/assets/" in address]
    assert sorted(assets) == sorted(
        f"/graphiql/assets/{name}"
        for name in (
            "graphiql.min.css",
            "react.production.min.js",
            "react-dom.production.min.js",
            "graphiql.min.js",
            "graphql-ws.min.js",
            "graphiql.js",
        )
    )

    with Client(url) as client:
        client.create(dataSource="car-44", identifier="FP1 run 3")
        run_in_graphiql(
            page, "{ dataSources { name liveSessions totalSessions } sessionSnapshot { cursor } }"
        )
        result = wait_for_result(page, "car-44")
        assert result["data"]["dataSources"] == [
            {"name": "car-44", "liveSessions": 1, "totalSessions": 1}
        ]
        cursor = result["data"]["sessionSnapshot"]["cursor"]

        # From the snapshot's cursor, so the event counts however fast the mutation is.
        run_in_graphiql(
            page,
            "subscription LiveEvents {\n"
            f'  sessionEvents(dataSource: "car-44", after: "{cursor}") {{\n'
            "    kind dataSource\n"
            "    session { identifier status details { name value } }\n"
            "  }\n"
            "}\n",
        )
        page.locator(".graphiql-execute-button[aria-label^='Stop']").wait_for()
        client.create(
            dataSource="car-44",
            identifier="FP1 run 4",
            details=[{"name": "trackTemp", "value": "22°C"}],
        )
        result = wait_for_result(page, "FP1 run 4")
    assert result["data"]["sessionEvents"]["kind"] == "STARTED"
    assert any(urlsplit(socket).path == "/graphql" for socket in local.sockets)
    return page


# -- the installed package --------------------------------------------------------------------

GRAPHIQL_MODULES = ROOT / "api" / "static" / "graphiql" / "node_modules"
# What the wheel must carry beyond the Python code: GraphiQL's files from npm and their licences.
LICENCES = ("react/LICENSE", "react-dom/LICENSE", "graphiql/LICENSE", "graphql-ws/LICENSE.md")


def build_wheel(directory: Path) -> Path:
    """The wheel `python -m build` makes from an sdist of this checkout, with no npm on PATH.

    It builds from a copy (the checkout stays untouched) that has only GraphiQL's node_modules,
    and `build` makes the wheel from the unpacked sdist: that one holds no node_modules folder
    but what the sdist carries.
    """
    source = directory / "source"
    shutil.copytree(
        ROOT,
        source,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "node_modules", "*_cache", "build", "*.egg-info", "__pycache__"
        ),
    )
    (source / GRAPHIQL_MODULES.relative_to(ROOT)).symlink_to(GRAPHIQL_MODULES)
    dist = directory / "dist"
    env = {**os.environ, "PATH": str(Path(sys.executable).parent)}
    command = [sys.executable, "-m", "build", "--outdir", str(dist), str(source)]
    succeed(command, env=env, timeout=300)
    (wheel,) = dist.glob("*.whl")
    return wheel


def install(wheel: Path, directory: Path) -> Path:
    """A fresh virtualenv with the wheel and its dependencies from the index: its bin/."""
    venv = directory / "venv"
    succeed([sys.executable, "-m", "venv", str(venv)], timeout=120)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-compile"]
    succeed([*pip, str(wheel)], timeout=600)
    return venv / "bin"


def succeed(command: list[str], **options: Any) -> str:
    """The command's output; a failure shows what it printed."""
    done = subprocess.run(command, capture_output=True, text=True, **options)
    assert done.returncode == 0, f"{command} exited {done.returncode}:\n{done.stdout}{done.stderr}"
    return done.stdout


def test_the_installed_wheel_serves_graphiql_and_the_dashboard_offline_without_node(
    local: LocalOnly, tmp_path: Path
) -> None:
    if not (GRAPHIQL_MODULES / ".package-lock.json").exists():
        message = "the wheel test: GraphiQL's node_modules is not installed; run `make npm`"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    wheel = build_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as archive:
        packed = set(archive.namelist())
    carried = "api/static/graphiql/node_modules/"
    assert {carried + licence for licence in LICENCES} <= packed
    assert "api/static/dashboard/dashboard.js" in packed

    bin_ = install(wheel, tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    # Nothing of this machine's: no node or npm, no setting, no checkout on the import path.
    env = {"PATH": str(bin_), "HOME": str(tmp_path)}
    assert shutil.which("node", path=env["PATH"]) is None
    assert shutil.which("npm", path=env["PATH"]) is None
    where = succeed(
        [str(bin_ / "python"), "-c", "import api; print(api.__file__)"], env=env, cwd=empty
    )
    assert Path(where.strip()).is_relative_to(bin_.parent)

    with Served(env, cwd=empty, command=str(bin_ / "session-service")) as served:
        graphiql_runs_a_query_and_a_subscription(local, served.url)

        page = local.page()
        page.goto(f"{served.url}/dashboard")
        page.locator('body[data-connection="live"]').wait_for()
        count = page.locator('section[data-source="car-44"] .count')
        count.filter(has_text="2 live").wait_for()  # GraphiQL's two sessions, from the snapshot
        with Client(served.url) as client:
            session = client.create(dataSource="car-44", identifier="from the wheel")
        card(page, session["key"]).wait_for(timeout=SHOWN)
        assert count.inner_text() == "3 live"
    assert (empty / "sessions.db").is_file()  # the default database, in the working directory


# -- the pages over plain HTTP ----------------------------------------------------------------


def test_dashboard_page_and_assets_forbid_loading_from_other_origins(service: Service) -> None:
    for path in ("/dashboard", "/dashboard/assets/dashboard.js"):
        response = httpx.get(service.url + path)
        assert response.status_code == 200
        assert "default-src 'self'" in response.headers["content-security-policy"]
    assert httpx.get(service.url + "/dashboard/assets/../../app.py").status_code == 404


def test_graphiql_assets_are_only_those_listed(service: Service) -> None:
    assert httpx.get(service.url + "/graphiql/assets/graphiql.js").status_code == 200
    assert httpx.get(service.url + "/graphiql/assets/package.json").status_code == 404
    assert httpx.get(service.url + "/graphiql/assets/..%2Fpackage.json").status_code == 404


def test_graphiql_falls_back_to_strawberrys_page_when_the_assets_are_absent(
    make_server: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import api.graphiql

    server = make_server()
    page = httpx.get(server.url + "/graphql", headers={"accept": "text/html"})
    assert "graphiql/assets/graphiql.js" in page.text
    monkeypatch.setitem(api.graphiql.ASSETS, "graphiql.min.js", tmp_path / "absent.js")
    page = httpx.get(server.url + "/graphql", headers={"accept": "text/html"})
    assert "Strawberry GraphiQL" in page.text
    assert "graphiql/assets/" not in page.text


def test_production_serves_no_graphiql_assets(make_server: Any) -> None:
    server = make_server(profile="production")
    assert httpx.get(server.url + "/graphiql/assets/graphiql.js").status_code == 404
    assert httpx.get(server.url + "/dashboard").status_code == 200
