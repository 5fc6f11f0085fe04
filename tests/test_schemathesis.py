"""Schemathesis (GraphQL mode): generated queries and mutations get typed errors, never a crash."""

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis.graphql import nodes

from tests.conftest import POSTGRES_ENV
from tests.services import Served, service_environment

ROOT = Path(__file__).resolve().parent.parent
# The committed SDL (test_schema.py fails when it drifts from the code), so that the operations
# are known at collection time; requests go to the server the `service` fixture starts.
SCHEMA = schemathesis.graphql.from_path(ROOT / "schema.graphql")
# Every query and mutation, as (root type, field); subscriptions are not HTTP operations.
OPERATIONS = [(root, field) for root in SCHEMA for field in SCHEMA[root]]
# Per operation, half schema-valid (any values) and half schema-invalid documents on average:
# 12 operations x 25 cases take seconds.
MAX_EXAMPLES = 25
# Top-level error codes the README documents for client mistakes and refusals. INTERNAL (a
# masked bug) is a failure, and so is UNAVAILABLE: the test's database is always there.
TYPED_CODES = {"VALIDATION", "DISABLED", "CURSOR_EXPIRED", "FORBIDDEN", "RATE_LIMITED"}

CREATE = """
mutation Create($input: CreateSessionInput!) {
  createSession(input: $input) { __typename ... on SessionCreated { session { key } } }
}"""
END = """
mutation End($key: ID!) { endSession(input: { sessionKey: $key }) { __typename } }"""


@dataclass
class Service:
    served: Served
    endpoint: str
    http: requests.Session
    seeded: list[str]


def _post(endpoint: str, query: str, variables: dict[str, Any]) -> dict[str, Any]:
    response = httpx.post(endpoint, json={"query": query, "variables": variables}, timeout=30)
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    assert "errors" not in body, body
    return body["data"]


def _create(endpoint: str, **fields: Any) -> str:
    result = _post(endpoint, CREATE, {"input": fields})["createSession"]
    assert result["__typename"] == "SessionCreated", result
    return str(result["session"]["key"])


def _seed(endpoint: str) -> list[str]:
    """A small hierarchy, one ended session: generated queries then walk real data, and generated
    keys (see _register_scalars) name existing sessions as often as unknown ones."""
    child = _create(endpoint, dataSource="car-1", identifier="child", streams=["engine"])
    parent = _create(
        endpoint,
        dataSource="car-1",
        identifier="parent",
        details=[{"name": "trackTemp", "value": "22°C"}],
        streams=["engine", "tyres"],
        associateSessionKeys=[child],
    )
    ended = _create(endpoint, dataSource="car-2", identifier="ended", idempotencyKey="seed-1")
    _post(endpoint, END, {"key": ended})
    return [child, parent, ended]


def _mostly(usual: st.SearchStrategy[Any], rare: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Three draws in four from `usual` (st.one_of weighs its branches equally)."""
    return st.integers(0, 3).flatmap(lambda pick: rare if pick == 0 else usual)


def _register_scalars(keys: list[str]) -> None:
    """Values that reach past the first check: names the seeded data uses, text at and beyond
    the README's limits, text with NUL (which the README says is refused), keys of existing
    sessions, numbers near the ranges the service checks, valid and invalid times."""
    seeded = st.sampled_from(["car-1", "car-2", "parent", "child", "trackTemp", "engine"])
    text = st.one_of(
        seeded,
        st.from_regex(r"[A-Za-z0-9._:/-]{1,20}", fullmatch=True),  # a valid dataSource
        st.text(max_size=300),
        st.tuples(st.text(max_size=10), st.text(max_size=10)).map("\x00".join),
    )
    schemathesis.graphql.scalar("String", text.map(nodes.String))
    key = st.one_of(st.sampled_from(keys), st.uuids().map(str), text)
    schemathesis.graphql.scalar("ID", _mostly(key.map(nodes.String), st.integers().map(nodes.Int)))
    int32 = st.integers(-(2**31), 2**31 - 1)
    schemathesis.graphql.scalar("Int", _mostly(st.integers(-2, 130), int32).map(nodes.Int))
    offsets = st.sampled_from(
        [None, UTC, timezone(timedelta(hours=14)), timezone(-timedelta(hours=12))]
    )
    instants = st.datetimes(timezones=offsets).map(lambda instant: instant.isoformat())
    # Mostly valid: one bad argument hides every other one from the resolvers.
    schemathesis.graphql.scalar(
        "DateTime", _mostly(instants, st.text(max_size=40)).map(nodes.String)
    )


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def database(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, postgres: Any
) -> Iterator[str]:
    """One database for the whole module (conftest's database_url is one per test)."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('schemathesis') / 'sessions.db'}"
        return
    if postgres is None:
        pytest.skip(f"PostgreSQL variant: set {POSTGRES_ENV} to run it (.ci/run sets it)")
    url = postgres.new()
    yield url
    postgres.drop(url)


@pytest.fixture(scope="module")
def service(database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    # Unlimited mutations: the rate limiter would answer RATE_LIMITED before any resolver ran.
    env = service_environment(database, SESSION_SERVICE_MUTATION_RATE_PER_SECOND="0")
    directory = tmp_path_factory.mktemp("served")
    with Served(env, cwd=directory) as served, requests.Session() as http:
        endpoint = f"{served.url}/graphql"
        seeded = _seed(endpoint)
        _register_scalars(seeded)
        yield Service(served=served, endpoint=endpoint, http=http, seeded=seeded)


def _outcome(response: schemathesis.Response) -> str:
    """How the server answered, for the per-operation summary: data, or the error codes."""
    try:
        body = json.loads(response.content)
        codes = {str((error.get("extensions") or {}).get("code")) for error in body["errors"]}
    except (ValueError, TypeError, KeyError, AttributeError):
        return "data" if response.status_code < 400 else f"HTTP {response.status_code}"
    return "+".join(sorted(codes))


def _problems(response: schemathesis.Response) -> list[str]:
    """What is wrong with the response to a generated request: nothing, or why it is a bug."""
    if response.status_code >= 500:
        return [f"HTTP {response.status_code}"]
    try:
        body = json.loads(response.content)
    except ValueError:
        return [f"HTTP {response.status_code} with a body that is not JSON"]
    if not isinstance(body, dict) or not ({"data", "errors"} & body.keys()):
        return [f"HTTP {response.status_code} with a body that is not a GraphQL response"]
    problems = []
    for error in body.get("errors") or []:
        code = (error.get("extensions") or {}).get("code")
        message = error.get("message")
        if code is None:
            problems.append(f"an error without extensions.code (unmasked?): {message!r}")
        elif code == "INTERNAL":
            problems.append(f"INTERNAL at {error.get('path')}: the server logged an exception")
        elif code not in TYPED_CODES:
            problems.append(f"error code {code!r} at {error.get('path')}: {message!r}")
    return problems


@pytest.mark.parametrize(("root", "field"), OPERATIONS, ids=[".".join(o) for o in OPERATIONS])
def test_generated_requests_get_typed_errors_not_internal_ones_nor_5xx(
    root: str, field: str, service: Service, capsys: pytest.CaptureFixture[str]
) -> None:
    operation = SCHEMA[root][field]
    label = operation.label
    cases = st.one_of(
        operation.as_strategy(schemathesis.GenerationMode.POSITIVE),
        operation.as_strategy(schemathesis.GenerationMode.NEGATIVE),
    )
    outcomes: Counter[str] = Counter()

    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        # No explain phase: tracing which lines failing cases ran costs seconds and tells nothing.
        phases=[Phase.generate, Phase.shrink],
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(case=cases)
    def check(case: schemathesis.Case) -> None:
        response = case.call(base_url=service.endpoint, session=service.http, timeout=30)
        outcomes[_outcome(response)] += 1
        problems = _problems(response)
        assert not problems, (
            f"{label}: {'; '.join(problems)}\n"
            f"request:\n{case.body!s}\n"
            f"response (HTTP {response.status_code}):\n{response.text[:4000]}\n"
            f"reproduce: {case.as_curl_command(base_url=service.endpoint)}"
        )

    try:
        check()
    finally:
        with capsys.disabled():
            print(f"\n{label}: {sum(outcomes.values())} requests, {dict(outcomes.most_common())}")
    assert service.served.process.poll() is None, f"the server exited during {label}"


def test_the_server_still_answers_after_every_generated_request(service: Service) -> None:
    assert service.served.process.poll() is None, "session-service serve exited"
    assert httpx.get(f"{service.served.url}/healthz", timeout=10).status_code == 200
    read = "query Read($key: ID!) { session(key: $key) { key } }"
    for key in service.seeded:
        assert _post(service.endpoint, read, {"key": key}) == {"session": {"key": key}}
