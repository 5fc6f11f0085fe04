"""Compiled execution (api/compiled.py) answers exactly as graphql-core does: the same status and
bytes for generated documents, over hierarchies, ended sessions, details and several data
sources, for open, scoped and read-only callers. `make differential` runs more examples."""

import base64
import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from graphql import build_schema
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis_graphql import queries
from prometheus_client import REGISTRY

from api.auth import Token
from tests.client import Client
from tests.conftest import LiveServer

# Per database; `make differential` sets more.
EXAMPLES = int(os.environ.get("SESSION_SERVICE_TEST_DIFFERENTIAL_EXAMPLES", "120"))
ADMIN, READER_A, READER_ALL = "admin-token-0123456789", "reader-a-0123456789", "reader-0123456789"
TOKENS = (
    Token.parse({"token": ADMIN, "role": "admin"}, "[0]"),
    Token.parse({"token": READER_A, "role": "read", "dataSources": ["car-a"]}, "[1]"),
    Token.parse({"token": READER_ALL, "role": "read"}, "[2]"),
)
CALLERS = [ADMIN, READER_A, READER_ALL]
# The same examples every run; against live servers, so neither deadlines nor the example
# database (whose replays could differ with the seeded keys).
REPEATABLE = settings(
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.generate, Phase.shrink],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
SCHEMA_SDL = (Path(__file__).parent.parent / "schema.graphql").read_text()


class Pair:
    """The service twice on one database: compiled execution and the response cache on, and
    both off."""

    def __init__(self, compiled: LiveServer, standard: LiveServer, keys: list[str]) -> None:
        self.compiled, self.standard, self.keys = compiled, standard, keys
        self.writes = 0

    def write(self, change: str, key: str) -> None:
        """A change through the standard server, which the compiled one must then show."""
        self.writes += 1
        with Client(self.standard.url, headers={"authorization": f"Bearer {ADMIN}"}) as client:
            if change == "rename":
                client.mutate(
                    "updateSessionIdentifier",
                    "UpdateSessionIdentifierInput",
                    sessionKey=key,
                    identifier=f"renamed {self.writes}",
                )
            else:
                client.mutate(
                    "updateSessionDetails",
                    "UpdateSessionDetailsInput",
                    sessionKey=key,
                    details=[{"name": "track", "value": f"lap {self.writes}"}],
                )

    def answers(self, query: str, variables: dict[str, Any], token: str) -> tuple[Any, Any]:
        body = json.dumps({"query": query, "variables": variables}).encode()
        headers = {
            "content-type": "application/json",
            "authorization": f"Bearer {token}",
            "x-request-id": "same",
        }
        found = []
        for server in (self.compiled, self.standard):
            response = httpx.post(f"{server.url}/graphql", content=body, headers=headers)
            found.append((response.status_code, response.content))
        return found[0], found[1]


def _seed(url: str) -> list[str]:
    """Two data sources; a diamond (root -> a, b -> leaf) and a chain in car-a reaching into
    car-b; ended sessions; details and streams."""
    with Client(url, headers={"authorization": f"Bearer {ADMIN}"}) as client:
        leaf = client.create(dataSource="car-a", identifier="leaf", streams=["s1", "s2"])["key"]
        other = client.create(
            dataSource="car-b",
            identifier="other",
            details=[{"name": "track", "value": "Spa"}],
            associateSessionKeys=[leaf],
        )["key"]
        a = client.create(
            dataSource="car-a",
            identifier="a",
            details=[{"name": "track", "value": "Monza"}, {"name": "temp", "value": "22°C"}],
            associateSessionKeys=[leaf, other],
        )["key"]
        b = client.create(dataSource="car-a", identifier="b", associateSessionKeys=[leaf])["key"]
        root = client.create(
            dataSource="car-a",
            identifier="root",
            type="Run",
            version=3,
            utcOffsetSeconds=3600,
            associateSessionKeys=[a, b],
            details=[{"name": "track", "value": "Monza"}],
        )["key"]
        client.end(b)
        client.end(other)
    return [root, a, b, leaf, other]


@pytest.fixture
def pair(make_server: Any) -> Pair:
    compiled = make_server(tokens=TOKENS)
    standard = make_server(tokens=TOKENS, compiled_execution=False, response_cache=False)
    return Pair(compiled, standard, _seed(compiled.url))


# -- documents --------------------------------------------------------------------------------

LEAVES = [
    "id", "key", "dataSource", "type", "version", "identifier", "utcOffsetSeconds", "status",
    "isComplete", "createdAt", "updatedAt", "endedAt", "revision", "streams",
    "associateSessionKeys", "__typename",
]  # fmt: skip
ALIASES = ["a", "b", "k"]
DEPTHS = [1, 2, 8, 0, 40]  # 0 and 40 are refused: the standard executor reports it
DETAIL_NAMES = ["track", "temp", "none"]


def _directive(draw: st.DrawFn) -> str:
    return draw(
        st.sampled_from(
            [
                "",
                "",
                "",
                " @include(if: $flag)",
                " @skip(if: $flag)",
                " @skip(if: false)",
                " @include(if: false)",
            ]
        )
    )


def _aliased(draw: st.DrawFn, field: str) -> str:
    alias = draw(st.sampled_from(["", "", *ALIASES]))
    return f"{alias}: {field}" if alias else field


@st.composite
def session_selection(draw: st.DrawFn, depth: int = 0) -> str:
    choices = [*LEAVES, "details", "detail", "walk", "linked", "fragment", "spread"]
    if depth >= 2:
        choices = [*LEAVES, "details", "detail"]
    parts = []
    for choice in draw(st.lists(st.sampled_from(choices), min_size=1, max_size=5)):
        if choice == "details":
            inner = " ".join(draw(st.lists(st.sampled_from(["name", "value", "__typename"]),
                                           min_size=1, max_size=3)))  # fmt: skip
            part = f"{_aliased(draw, 'details')} {{ {inner} }}"
        elif choice == "detail":
            part = _aliased(draw, f'detail(name: "{draw(st.sampled_from(DETAIL_NAMES))}")')
        elif choice == "walk":
            name = draw(st.sampled_from(["descendants", "ancestors"]))
            depth_arg = draw(st.sampled_from([*DEPTHS, None, "$depth"]))
            args = "" if depth_arg is None else f"(maxDepth: {depth_arg})"
            inner = draw(session_selection(depth + 1))
            node = draw(st.sampled_from(["depth viaKey", "viaKey", "depth", "__typename"]))
            part = f"{_aliased(draw, name + args)} {{ {node} session {{ {inner} }} }}"
        elif choice == "linked":
            name = draw(st.sampled_from(["associates", "parents"]))
            part = f"{_aliased(draw, name)} {{ {draw(session_selection(depth + 1))} }}"
        elif choice == "fragment":
            part = f"... on Session {{ {draw(session_selection(depth + 1))} }}"
        elif choice == "spread":
            part = "...Basics"
        else:
            part = _aliased(draw, choice)
        parts.append(part + _directive(draw))
    return " ".join(parts)


@st.composite
def document(draw: st.DrawFn) -> str:
    selection = draw(session_selection())
    root = draw(
        st.sampled_from(
            ["session", "current", "page", "snapshot", "sources", "node", "nodes", "two"]
        )
    )
    if root == "session":
        key = draw(st.sampled_from(["$key", '"nope"', '""']))
        body = f"{_aliased(draw, f'session(key: {key})')} {{ {selection} }}"
    elif root == "current":
        source = draw(st.sampled_from(["", '(dataSource: "car-a")', '(dataSource: "car-b")',
                                       '(dataSource: "bad source!")']))  # fmt: skip
        body = f"currentSessions{source} {{ {selection} }}"
    elif root == "page":
        first = draw(st.sampled_from([1, 2, 50, 0, 101]))
        filters = draw(st.sampled_from(["", ', filter: {dataSource: "car-a"}',
                                        ", filter: {status: ENDED}",
                                        ', filter: {details: [{name: "track", value: "Monza"}]}',
                                        ', after: "bogus"']))  # fmt: skip
        extras = draw(st.sampled_from(["totalCount", "pageInfo { hasNextPage endCursor }",
                                       "totalCount pageInfo { endCursor }", ""]))  # fmt: skip
        body = (
            f"sessions(first: {first}{filters}) {{ {extras} edges {{ cursor node {{ {selection} "
            "} } }"
        )
    elif root == "snapshot":
        body = f"sessionSnapshot {{ cursor sessions {{ {selection} }} }}"
    elif root == "node":  # an abstract root field
        body = f"node(id: $id) {{ id __typename ... on Session {{ {selection} }} }}"
    elif root == "nodes":  # a list of an abstract type, with an id of no session
        body = (
            f'nodes(ids: [$id, "U2Vzc2lvbjpub3Bl", $id]) {{ __typename ... on Session '
            f"{{ {selection} }} }}"
        )
    elif root == "sources":
        body = "dataSources { name liveSessions totalSessions __typename }"
    else:
        body = f"one: session(key: $key) {{ {selection} }} dataSources {{ name }} __typename"
    text = f"{{ {body} }}"
    declared = [
        f"${name}: {kind}"
        for name, kind in (("key", "ID!"), ("id", "ID!"), ("flag", "Boolean!"), ("depth", "Int!"))
        if f"${name}" in text
    ]
    header = f"query Q({', '.join(declared)})" if declared else "query Q"
    fragment = "fragment Basics on Session { key status details { name } }"
    return f"{header} {text}" + (f" {fragment}" if "...Basics" in text else "")


def _differential(pair: Pair, max_examples: int) -> Callable[..., None]:
    @settings(REPEATABLE, max_examples=max_examples)
    @given(
        query=document(),
        key=st.sampled_from(pair.keys),
        flag=st.booleans(),
        depth=st.sampled_from(DEPTHS),
        caller=st.sampled_from(CALLERS),
        write=st.sampled_from([None, None, "rename", "detail"]),
    )
    def check(query: str, key: str, flag: bool, depth: int, caller: str, write: Any) -> None:
        # Writes between the reads: the compiled server's response cache must see each.
        if write is not None:
            pair.write(write, key)
        node_id = base64.b64encode(f"Session:{key}".encode()).decode()
        variables = {"key": key, "id": node_id, "flag": flag, "depth": depth}
        variables = {name: value for name, value in variables.items() if f"${name}" in query}
        compiled, standard = pair.answers(query, variables, caller)
        assert compiled == standard, query

    return check


def _executions(path: str) -> float:
    value = REGISTRY.get_sample_value("session_service_graphql_executions_total", {"path": path})
    return value or 0.0


def test_generated_documents_are_answered_alike_compiled_and_by_graphql_core(pair: Pair) -> None:
    compiled_before = _executions("compiled")
    _differential(pair, EXAMPLES)()
    # Most documents have no error, so a plan answered them: the test compared something.
    assert _executions("compiled") - compiled_before > EXAMPLES / 4


def test_documents_generated_from_the_schema_are_answered_alike(pair: Pair) -> None:
    """hypothesis-graphql's documents over the committed schema (its queries only)."""

    @settings(REPEATABLE, max_examples=EXAMPLES // 2)
    @given(query=queries(SCHEMA_SDL), caller=st.sampled_from(CALLERS))
    def check(query: str, caller: str) -> None:
        compiled, standard = pair.answers(query, {}, caller)
        assert compiled == standard, query

    check()


def test_every_query_field_of_the_schema_has_a_compiled_source(pair: Pair) -> None:
    """A field added to a query type without a compiled source would quietly take the slow
    path: here it fails instead."""
    everything = (
        "query All($key: ID!, $id: ID!) { session(key: $key) { ...All details { name value } "
        'detail(name: "track") associates { key } parents { key } descendants { depth viaKey '
        "session { key } } ancestors(maxDepth: 2) { depth viaKey session { key } } } "
        "currentSessions { key } sessions { totalCount edges { cursor node { key } } pageInfo "
        "{ hasNextPage endCursor } } dataSources { name liveSessions totalSessions } "
        "sessionSnapshot { cursor sessions { key } } node(id: $id) { id ... on Session { key } } "
        "nodes(ids: [$id, $id]) { id } } "
        f"fragment All on Session {{ {' '.join(LEAVES)} }}"
    )
    schema = build_schema(SCHEMA_SDL)
    for type_name in ("Query", "Session", "SessionConnection", "SessionTreeNode", "PageInfo"):
        for field in schema.type_map[type_name].fields:  # type: ignore[attr-defined]
            assert field in everything, f"{type_name}.{field} is not in this test's document"
    before = _executions("compiled")
    node_id = base64.b64encode(f"Session:{pair.keys[0]}".encode()).decode()
    compiled, standard = pair.answers(everything, {"key": pair.keys[0], "id": node_id}, ADMIN)
    assert compiled == standard
    assert b'"errors"' not in compiled[1]
    assert _executions("compiled") == before + 1


def test_the_metric_counts_each_path(pair: Pair) -> None:
    counts = {path: _executions(path) for path in ("compiled", "standard", "fallback")}
    with Client(pair.compiled.url, headers={"authorization": f"Bearer {ADMIN}"}) as client:
        client.execute("{ dataSources { name } }")  # compiled
        client.execute('{ __type(name: "Session") { name } }')  # introspection: standard
        client.execute("{ sessions(first: 0) { totalCount } }")  # an error: the plan gives way
        result = client.execute("{ sessions(first: 0) { totalCount } }")
    assert result["errors"][0]["extensions"]["code"] == "VALIDATION"
    assert _executions("compiled") == counts["compiled"] + 1
    assert _executions("standard") == counts["standard"] + 1
    assert _executions("fallback") == counts["fallback"] + 2


def test_a_scoped_reader_sees_through_a_plan_only_what_it_may(pair: Pair) -> None:
    """car-b's session is hidden from the car-a reader among associates, walks and pages."""
    _, a, *_, other = pair.keys
    query = (
        "query Q($key: ID!) { session(key: $key) { associates { key } associateSessionKeys "
        "descendants { session { key } } } sessions { edges { node { key } } } }"
    )
    (status, body), standard = pair.answers(query, {"key": a}, READER_A)
    assert (status, body) == standard
    assert other not in body.decode()
    (_, body_all), _ = pair.answers(query, {"key": a}, ADMIN)
    assert other in body_all.decode()
    (_, hidden), _ = pair.answers(query, {"key": other}, READER_A)
    assert json.loads(hidden)["data"]["session"] is None


# -- mutations --------------------------------------------------------------------------------
# A mutation cannot run twice on one database, so each executor gets its own, seeded alike, and
# the answers are compared with each database's keys (and the times) written as placeholders.

WRITER_A = "writer-a-0123456789"
MUTATION_TOKENS = (
    *TOKENS,
    Token.parse({"token": WRITER_A, "role": "write", "dataSources": ["car-a"]}, "[3]"),
)
WRITERS = [ADMIN, WRITER_A, READER_ALL]  # a reader's mutations are refused (FORBIDDEN)
UUID = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
TIME = re.compile(rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?\+00:00")
CURSOR = re.compile(rb'"(endCursor|cursor)":"[^"]*"')
GLOBAL_ID = re.compile(rb'"id":"([A-Za-z0-9+/=]+)"')


def _placeholders(body: bytes, keys: list[str]) -> bytes:
    """The answer with each database's keys, new keys, times and cursors written alike; a
    global id is compared by what it encodes ("Session:K0")."""
    for index, key in enumerate(keys):
        body = body.replace(key.encode(), f"K{index}".encode())
    body = CURSOR.sub(rb'"\1":"C"', TIME.sub(b"T", UUID.sub(b"NEW", body)))
    return GLOBAL_ID.sub(
        lambda found: b'"id":"%s"' % _placeholders(base64.b64decode(found[1]), keys), body
    )


class Twins:
    """The compiled and the standard server, each on its own database seeded alike."""

    def __init__(self, compiled: LiveServer, standard: LiveServer) -> None:
        self.servers = [(compiled, _seed(compiled.url)), (standard, _seed(standard.url))]

    def answers(self, query: str, variables: dict[str, Any], token: str) -> list[bytes]:
        found = []
        for server, keys in self.servers:
            # "$K<i>" in a variable stands for the i-th seeded key of each database.
            text = json.dumps(variables)
            for index, key in enumerate(keys):
                text = text.replace(f"$K{index}", key)
            given = json.loads(text)
            response = httpx.post(
                f"{server.url}/graphql",
                json={"query": query, "variables": given},
                headers={"authorization": f"Bearer {token}"},
            )
            body = _placeholders(response.content, keys)
            found.append(b"%d " % response.status_code + body)
        return found


@pytest.fixture
def twins(make_server: Any, database_url: str, tmp_path: Path, postgres: Any) -> Any:
    compiled = make_server(tokens=MUTATION_TOKENS)
    if database_url.startswith("sqlite"):
        other = f"sqlite+aiosqlite:///{tmp_path / 'standard.db'}"
    else:
        other = postgres.new()
    standard = make_server(
        tokens=MUTATION_TOKENS, compiled_execution=False, response_cache=False, database_url=other
    )
    yield Twins(compiled, standard)
    if not database_url.startswith("sqlite"):
        standard.__exit__(None, None, None)
        postgres.drop(other)


COMMON_SELECTIONS = [
    "__typename",
    "... on Error { code message }",
    "... on ValidationError { field }",
    "... on SessionNotFoundError { sessionKey }",
]
# Each result union's own members: its success, and the errors only it has.
MEMBERS = {
    "CreateSessionResult": ("SessionCreated", ["... on IdempotencyMismatchError { message }"]),
    "UpdateSessionResult": ("SessionUpdated", ["... on RevisionConflictError { currentRevision }"]),
    "EndSessionResult": ("SessionEnded", ["... on SessionEnded { alreadyEnded }"]),
}


@st.composite
def mutation(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    key = draw(st.sampled_from(["$K0", "$K1", "$K2", "$K3", "$K4", "nope", ""]))
    other = draw(st.sampled_from(["$K0", "$K1", "$K3", "$K4", "nope"]))
    field, input_type, given = draw(
        st.sampled_from(
            [
                ("createSession", "CreateSessionInput", {
                    "dataSource": draw(st.sampled_from(["car-a", "car-b", "bad source!"])),
                    "identifier": draw(st.sampled_from(["x", "y" * 300])),
                    "details": [{"name": "track", "value": "Monza"}],
                    "streams": draw(st.sampled_from([[], ["s"], ["s", "s"]])),
                    "associateSessionKeys": draw(st.sampled_from([[], [other]])),
                }),
                ("updateSessionDetails", "UpdateSessionDetailsInput", {
                    "sessionKey": key, "details": [{"name": "temp", "value": "30"}],
                    "remove": ["track"],
                    "expectedRevision": draw(st.sampled_from([None, 1, 2])),
                }),
                ("updateSessionIdentifier", "UpdateSessionIdentifierInput",
                 {"sessionKey": key, "identifier": "renamed"}),
                ("addAssociateSession", "AssociateSessionInput",
                 {"sessionKey": key, "associateSessionKey": other}),
                ("removeAssociateSession", "AssociateSessionInput",
                 {"sessionKey": key, "associateSessionKey": other}),
                ("addSessionStreams", "AddSessionStreamsInput",
                 {"sessionKey": key, "streams": ["t"]}),
                ("endSession", "EndSessionInput", {"sessionKey": key}),
            ]
        )
    )  # fmt: skip
    result = {"createSession": "CreateSessionResult", "endSession": "EndSessionResult"}.get(
        field, "UpdateSessionResult"
    )
    member, own = MEMBERS[result]
    parts = draw(st.lists(st.sampled_from([*COMMON_SELECTIONS, *own]), min_size=1, max_size=4))
    inner = draw(session_selection(1))
    parts.append(f"... on {member} {{ session {{ {inner} }} }}")
    alias = draw(st.sampled_from(["", "r: "]))
    selection = " ".join(parts)
    text = (
        f"mutation M($input: {input_type}!) {{ {alias}{field}(input: $input) {{ {selection} }} }}"
    )
    if "...Basics" in text:
        text += " fragment Basics on Session { key status details { name } }"
    return text, {"input": given}


def test_generated_mutations_are_answered_alike_compiled_and_by_graphql_core(twins: Twins) -> None:
    compiled_before = _executions("compiled")

    @settings(REPEATABLE, max_examples=EXAMPLES // 2)
    @given(document=mutation(), caller=st.sampled_from(WRITERS), flag=st.booleans())
    def check(document: tuple[str, dict[str, Any]], caller: str, flag: bool) -> None:
        query, variables = document
        if "$flag" in query:
            query = query.replace("mutation M(", "mutation M($flag: Boolean!, ")
            variables = {**variables, "flag": flag}
        if "$depth" in query:
            query = query.replace("mutation M(", "mutation M($depth: Int!, ")
            variables = {**variables, "depth": 2}
        compiled, standard = twins.answers(query, variables, caller)
        assert compiled == standard, query

    check()
    assert _executions("compiled") - compiled_before > EXAMPLES / 8
