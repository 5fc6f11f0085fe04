"""The dashboard and GraphiQL with a pasted JWT, in headless Chromium, against a service that
trusts the test's identity provider (its JWKS served on 127.0.0.1)."""

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests import test_browser as pages
from tests.client import Client
from tests.identity import Provider
from tests.test_browser import SHOWN, LocalOnly, Service, card, run_in_graphiql, wait_for_result

# The browser and the service as tests/test_browser.py runs them.
browser = pages.browser
local = pages.local
make_service = pages.make_service

HEADERS_EDITOR = "section.graphiql-editor-tool .graphiql-editor:not(.hidden) .CodeMirror"


@pytest.fixture
def provider() -> Iterator[Provider]:
    with Provider() as running:
        yield running


@pytest.fixture
def trusting(make_service: Callable[..., Service], provider: Provider) -> Service:
    """The service as `serve` runs it, trusting the provider, with no leeway on expiry."""
    entry = provider.entry(leewaySeconds=0)
    return make_service(SESSION_SERVICE_ISSUERS=json.dumps([entry]))


def writer(service: Service, provider: Provider) -> Client:
    token = provider.token(roles="write", lifetime=300)
    return Client(service.url, headers={"authorization": f"Bearer {token}"})


def use_token(page: Any, token: str) -> None:
    page.locator("#token").fill(token)
    page.locator("#token-form button").click()


def test_dashboard_follows_with_a_pasted_jwt_and_asks_for_a_new_one_when_it_expires(
    local: LocalOnly, trusting: Service, provider: Provider
) -> None:
    page = local.page()
    page.goto(f"{trusting.url}/dashboard")
    page.locator('body[data-connection="unauthorized"]').wait_for()

    use_token(page, provider.token(roles="read", data_sources=["car-44"], lifetime=6))
    page.locator('body[data-connection="live"]').wait_for()
    with writer(trusting, provider) as client:
        first = client.create(dataSource="car-44", identifier="before it expires")
        card(page, first["key"]).wait_for(timeout=SHOWN)

        # The server closes the socket with 4403 "token expired" at the token's exp.
        page.locator('body[data-connection="unauthorized"]').wait_for(timeout=15_000)
        assert "expired" in page.locator("#connection").inner_text()

        second = client.create(dataSource="car-44", identifier="while it had none")
        use_token(page, provider.token(roles="read", data_sources=["car-44"], lifetime=300))
        page.locator('body[data-connection="live"]').wait_for()
        card(page, second["key"]).wait_for(timeout=SHOWN)
        third = client.create(dataSource="car-44", identifier="with the new one")
        card(page, third["key"]).wait_for(timeout=SHOWN)


def test_graphiql_runs_a_query_and_a_subscription_with_a_pasted_jwt(
    local: LocalOnly, trusting: Service, provider: Provider
) -> None:
    page = local.page()
    page.goto(f"{trusting.url}/graphql")
    page.locator(".graphiql-query-editor .CodeMirror").wait_for()
    with writer(trusting, provider) as client:
        client.create(dataSource="car-44", identifier="FP2 run 1")

        token = provider.token(roles="read", data_sources="car-44", lifetime=300)
        page.locator('button[data-name="headers"]').click()
        page.locator(HEADERS_EDITOR).click()
        page.keyboard.press("Control+A")
        page.keyboard.insert_text(json.dumps({"Authorization": f"Bearer {token}"}))
        # GraphiQL keeps the headers in localStorage, where the WebSocket client reads them.
        page.wait_for_function(
            "t => (localStorage.getItem('graphiql:headers') || '').includes(t)", arg=token
        )

        run_in_graphiql(page, "{ dataSources { name totalSessions } sessionSnapshot { cursor } }")
        result = wait_for_result(page, "totalSessions")
        assert result["data"]["dataSources"] == [{"name": "car-44", "totalSessions": 1}]
        cursor = result["data"]["sessionSnapshot"]["cursor"]

        events = "subscription { sessionEvents(after: %s) { kind session { identifier } } }"
        run_in_graphiql(page, events % json.dumps(cursor))
        page.locator(".graphiql-execute-button[aria-label^='Stop']").wait_for()
        client.create(dataSource="car-44", identifier="FP2 run 2")
        result = wait_for_result(page, "FP2 run 2")
    assert result["data"]["sessionEvents"] == {
        "kind": "STARTED",
        "session": {"identifier": "FP2 run 2"},
    }
