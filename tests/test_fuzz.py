"""Property-based fuzzing of a live server: no HTTP body, header or query string and no
graphql-transport-ws frame gets a 5xx, a traceback or a dropped connection; every refusal is a
4xx, a GraphQL error or a documented close code, changes nothing stored, and the server keeps
answering. `make fuzz` runs ten times CI's examples, new ones each run."""

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import EllipsisType
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, Phase, event, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect
from websockets.typing import Subprotocol

from api.auth import Token
from tests.conftest import LiveServer

FUZZ_ENV = "SESSION_SERVICE_TEST_FUZZ_EXAMPLES"
# Per test and database; `make fuzz` sets ten times as many.
EXAMPLES = int(os.environ.get(FUZZ_ENV, "300"))
# CI replays the same examples every run; a longer run set by hand draws new ones.
FUZZ = settings(
    deadline=None,
    derandomize=FUZZ_ENV not in os.environ,
    database=None,
    phases=[Phase.generate, Phase.shrink],
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.function_scoped_fixture,
        HealthCheck.data_too_large,
    ],
)

# A failing example may hold a frame of 64 KiB: hypothesis warns before printing it.
pytestmark = pytest.mark.filterwarnings("ignore:Generating overly large repr")

WRITER = "fuzz-writer-token-0123456789"
BEARER = f"Bearer {WRITER}"
TOKENS = (Token.parse({"token": WRITER, "role": "write"}, "[0]"),)
KIB = 1024
LIMIT = 64 * KIB  # SESSION_SERVICE_MAX_WEBSOCKET_MESSAGE_BYTES
# Every close code the README documents (graphql-transport-ws's and the message size limit).
CLOSE_CODES = {4400, 4401, 4403, 4406, 4408, 4409, 4429, 1009}

CREATE = (
    "mutation Create($input: CreateSessionInput!) { createSession(input: $input) { __typename "
    "... on SessionCreated { session { key } } ... on Error { code message } } }"
)
DOCUMENTS = [
    "{ __typename }",
    "query Q { __typename } query R { dataSources { name } }",
    "query S($key: ID!) { session(key: $key) { key identifier details { name value } } }",
    "query P($first: Int) { sessions(first: $first) { totalCount edges { cursor } } }",
    "subscription { sessionEvents { cursor kind } }",
    'subscription { sessionStarted(dataSource: "car-1") { cursor } }',
    CREATE,
    "subscription {",
    "{ session(key: ",
    "query Q($v: Float) { __typename }",
    "{}",
    "{ ...Missing }",
]
STATE = "{ sessions(first: 1) { totalCount } sessionSnapshot { cursor } }"


# -- strategies ------------------------------------------------------------------------------


class Digits(int):
    """An integer of more digits than int() may read from text (4,300): written as its digits,
    since neither json.dumps nor str() may write it without lifting that limit for the whole
    process, the server's thread included."""

    def __new__(cls, digits: int) -> "Digits":
        return super().__new__(cls, digits)


scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(4_301, 20_000).map(Digits)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text()
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4)
    ),
    max_leaves=12,
)


def encode(value: Any, ascii: bool = True) -> str:
    """JSON text of any value: NaN and Infinity as their tokens, Digits in full."""
    if isinstance(value, Digits):
        return "9" * int(value)
    if isinstance(value, dict):
        members = (f"{encode(k, ascii)}:{encode(v, ascii)}" for k, v in value.items())
        return "{" + ",".join(members) + "}"
    if isinstance(value, list):
        return "[" + ",".join(encode(item, ascii) for item in value) + "]"
    return json.dumps(value, allow_nan=True, ensure_ascii=ascii)


@st.composite
def nested(draw: st.DrawFn) -> str:
    """Arrays or objects nested far beyond any parser's limit, alone or inside a message."""
    depth = draw(st.sampled_from([100, 1_000, 10_000, 30_000]))
    opening, closing = draw(st.sampled_from([("[", "]"), ('{"a":', "}")]))
    inner = opening * depth + "1" + closing * depth
    outer = draw(
        st.sampled_from(
            [
                "%s",
                '{"query": "{ __typename }", "variables": {"v": %s}}',
                '{"type": "ping", "payload": %s}',
                '{"type": "connection_init", "payload": {"v": %s}}',
                '{"type": "subscribe", "id": "1", "payload": {"query": "{ __typename }", '
                '"variables": %s}}',
            ]
        )
    )
    return outer % inner


hostile_texts = (
    nested()
    | st.integers(4_301, 20_000).map(
        lambda n: '{"query": "{ __typename }", "variables": {"n": %s}}' % ("9" * n)
    )
    | st.integers(4_301, 20_000).map(lambda n: '{"type": "ping", "payload": %s}' % ("9" * n))
    | st.sampled_from(
        [
            "null",
            '"x"',
            "1",
            "true",
            "[]",
            "{}",
            "1e400",
            "-1e400",
            "NaN",
            "Infinity",
            "-Infinity",
            '{"query": NaN}',
            '{"query": "{ __typename }", "variables": {"x": 1e400}}',
            '{"query": "{ __typename }", "query": 5}',
            '{"query": "{ __typename }", "operationName": "\\ud800"}',
            '{"query": "{ \\ud800 }"}',
            '{"type": "subscribe", "id": "\\udc00", "payload": {"query": "{ __typename }"}}',
            '{"type": "subscribe", "type": "ping", "id": "1", "payload": {"query": "{ a }"}}',
        ]
    )
)


@st.composite
def operations(draw: st.DrawFn) -> dict[str, Any]:
    """An operation object whose members are mostly right, else of any type or missing."""
    operation: dict[str, Any] = {}

    def often() -> bool:
        return draw(st.integers(0, 3)) < 3

    if often():
        operation["query"] = draw(st.sampled_from(DOCUMENTS) if often() else json_values)
    if draw(st.booleans()):
        variables = st.fixed_dictionaries({"input": json_values, "key": json_values})
        operation["variables"] = draw(variables if often() else json_values)
    if not often():
        names = st.sampled_from(["Q", "R", "Nope", "\ud800"])
        operation["operationName"] = draw(names if often() else json_values)
    if not often():
        operation["extensions"] = draw(json_values)
    return operation


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["operation", "operation", "value", "hostile", "cut", "bytes"]))
    if kind == "bytes":
        return draw(st.binary(max_size=256))
    if kind == "hostile":
        return draw(hostile_texts).encode()
    ascii = draw(st.booleans())
    text = encode(draw(json_values if kind == "value" else operations()), ascii)
    if kind == "cut":
        return text.encode("utf-8", "surrogatepass")[: draw(st.integers(0, len(text)))]
    encoding = draw(st.sampled_from(["utf-8", "utf-8", "utf-16", "utf-32", "utf-8-sig", "latin-1"]))
    return text.encode(encoding, "surrogatepass" if encoding.startswith("utf") else "replace")


# Header values as bytes (obs-text included), as a client may send them; h11 refuses to send
# control characters and surrounding whitespace.
header_texts = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f")
).map(lambda text: text.strip().encode("latin-1"))
CONTENT_TYPES = [
    "application/json",
    "application/json; charset=utf-8",
    "application/json; charset=latin-1",
    "application/json; charset=utf-16",
    "APPLICATION/JSON",
    "application/json;",
    "application/graphql-response+json",
    "text/plain",
    "multipart/form-data; boundary=x",
    "application/x-www-form-urlencoded",
]
JSON_TYPES = ("application/json", "application/graphql-response+json")
STREAMS = ("text/event-stream", "multipart/mixed")
ACCEPTS = [
    "application/json",
    "application/graphql-response+json",
    "multipart/mixed",
    "multipart/mixed;deferSpec=20220824, application/json",
    "text/event-stream",
    "text/html",
    "*/*",
]


@st.composite
def http_requests(draw: st.DrawFn) -> tuple[str, str, dict[bytes, bytes], bytes]:
    """(method, path and query string, headers, body)."""
    headers: dict[bytes, bytes] = {}
    if draw(st.integers(0, 3)) < 3:
        headers[b"authorization"] = BEARER.encode()
    elif draw(st.booleans()):
        headers[b"authorization"] = draw(header_texts)
    # Mostly JSON, so that bodies reach the parser and the executor.
    kind = draw(st.integers(0, 9))
    if kind <= 6:
        headers[b"content-type"] = draw(st.sampled_from(CONTENT_TYPES[:6])).encode()
    elif kind <= 8:
        headers[b"content-type"] = draw(
            st.sampled_from(CONTENT_TYPES).map(str.encode) | header_texts
        )
    if draw(st.booleans()):
        headers[b"accept"] = draw(st.sampled_from(ACCEPTS).map(str.encode) | header_texts)
    if draw(st.booleans()):
        headers[b"x-request-id"] = draw(header_texts)
    if draw(st.integers(0, 4)) < 4:
        return "POST", "/graphql", headers, draw(bodies())
    query = draw(
        st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=200)
        | st.dictionaries(
            st.sampled_from(["query", "variables", "operationName", "extensions"]),
            st.sampled_from(DOCUMENTS) | json_values.map(encode),
        ).map(lambda params: str(httpx.QueryParams(params)))
    )
    return "GET", f"/graphql?{query}"[: 8 * KIB], headers, b""


ids = st.sampled_from(["1", "1", "2", "x" * 10_000, "\ud800"]) | json_values
payloads = st.fixed_dictionaries(
    {"query": st.sampled_from(DOCUMENTS)},
    optional={
        "variables": st.fixed_dictionaries({"input": json_values}) | json_values,
        "operationName": st.sampled_from(["Q", "Nope"]) | json_values,
        "extensions": json_values,
    },
)
TYPES = ["connection_init", "ping", "pong", "subscribe", "complete"]
# Messages of the protocol's shapes, sent in any order (the server's own types included).
well_formed = st.one_of(
    st.fixed_dictionaries(
        {"type": st.just("connection_init")},
        optional={"payload": st.fixed_dictionaries({"authorization": st.just(BEARER)})},
    ),
    st.fixed_dictionaries(
        {"type": st.sampled_from(["ping", "pong"])}, optional={"payload": json_values}
    ),
    st.fixed_dictionaries(
        {"type": st.just("subscribe"), "id": st.sampled_from(["1", "2", "3"]), "payload": payloads}
    ),
    st.fixed_dictionaries({"type": st.just("complete"), "id": st.sampled_from(["1", "2", "9"])}),
    st.fixed_dictionaries(
        {"type": st.sampled_from(["next", "error", "connection_ack"]), "id": st.just("1")}
    ),
)
# The same members, of any type or missing.
ill_formed = st.fixed_dictionaries(
    {"type": st.sampled_from([*TYPES, "next", "start", "bogus"]) | json_values},
    optional={
        "id": ids,
        "payload": payloads | st.fixed_dictionaries({"authorization": json_values}) | json_values,
    },
)
OVERSIZED = '{"type": "ping", "payload": {"pad": "%s"}}' % ("x" * LIMIT)


@st.composite
def frames(draw: st.DrawFn) -> str | bytes:
    """One graphql-transport-ws frame: mostly well formed, in any order; else anything."""
    kind = draw(st.integers(0, 39))
    if kind < 20:
        return encode(draw(well_formed))
    if kind < 28:
        return encode(draw(ill_formed))
    if kind < 31:
        return encode(draw(json_values))
    if kind < 34:
        return draw(hostile_texts)
    if kind < 36:
        return draw(st.text(max_size=100))
    if kind < 39:
        return draw(st.binary(max_size=100))
    return OVERSIZED


# -- the servers -----------------------------------------------------------------------------


@pytest.fixture
def fuzzed(make_server: Any) -> tuple[LiveServer, LiveServer]:
    """The service twice on one database, with tokens: with the fast path and without it."""
    fast = make_server(tokens=TOKENS)
    general = make_server(
        tokens=TOKENS, database_url=fast.settings.database_url, http_fast_path=False
    )
    return fast, general


@dataclass
class Http:
    """One keep-alive client per server, and the stored state to compare."""

    urls: list[str]
    clients: list[httpx.Client] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.clients = [httpx.Client(base_url=url, timeout=30) for url in self.urls]

    def state(self) -> dict[str, Any]:
        response = self.clients[0].post(
            "/graphql", json={"query": STATE}, headers={"authorization": BEARER}
        )
        assert response.status_code == 200, response.text
        return response.json()["data"]  # type: ignore[no-any-return]

    def close(self) -> None:
        for client in self.clients:
            client.close()


@pytest.fixture
def http(fuzzed: tuple[LiveServer, LiveServer]) -> Iterator[Http]:
    clients = Http([server.url for server in fuzzed])
    yield clients
    clients.close()


# -- HTTP --------------------------------------------------------------------------------------


def error_codes(errors: Any) -> set[Any]:
    """The codes of a list of GraphQL errors: INTERNAL would be a failure of ours."""
    if not isinstance(errors, list):
        return set()
    return {(error.get("extensions") or {}).get("code") for error in errors}


def succeeded(status: int, content_type: str, text: str) -> bool:
    """A JSON answer without errors: the only kind after which something may have changed."""
    if status != 200 or content_type not in JSON_TYPES:
        return False
    return not json.loads(text).get("errors")


@settings(FUZZ, max_examples=EXAMPLES)
@given(request=http_requests(), general=st.booleans())
def test_no_http_request_gets_a_5xx_and_refused_ones_change_nothing(
    http: Http, request: tuple[str, str, dict[bytes, bytes], bytes], general: bool
) -> None:
    method, target, headers, body = request
    client = http.clients[general]
    before = http.state()
    with client.stream(method, target, headers=headers, content=body or None) as response:
        content_type = response.headers.get("content-type", "")
        # A stream (a subscription over SSE or multipart) stays open: its first bytes will do.
        streamed = content_type.startswith(STREAMS)
        text = next(response.iter_text(), "") if streamed else response.read().decode("latin-1")
    event(f"{method} {response.status_code}")  # --hypothesis-show-statistics
    assert response.status_code < 500, text
    assert "Traceback" not in text
    if response.status_code == 200 and not streamed and not content_type.startswith("text/html"):
        assert content_type in JSON_TYPES, text
        answer = json.loads(text)
        assert isinstance(answer, dict) and set(answer) <= {"data", "errors", "extensions"}
        assert "INTERNAL" not in error_codes(answer.get("errors")), answer
    if response.status_code < 300 and content_type.startswith("text/html"):
        assert method == "GET"  # GraphiQL's page
    if not streamed and not succeeded(response.status_code, content_type, text):
        assert http.state() == before
    response = client.post(
        "/graphql", json={"query": "{ __typename }"}, headers={"authorization": BEARER}
    )
    assert response.json() == {"data": {"__typename": "Query"}}


# -- graphql-transport-ws ----------------------------------------------------------------------


def open_socket(server: LiveServer) -> ClientConnection:
    url = server.url.replace("http://", "ws://") + "/graphql"
    return connect(
        url, subprotocols=[Subprotocol("graphql-transport-ws")], open_timeout=10, max_size=None
    )


def answered_until_pong(ws: ClientConnection) -> tuple[list[Any], int | None]:
    """The messages the server sends after a final ping, up to its pong or its close; and the
    code it closed with (None when it answered the ping)."""
    ws.send(json.dumps({"type": "ping"}))
    received: list[Any] = []
    try:
        while True:
            message = json.loads(ws.recv(timeout=10))
            if message.get("type") == "pong" and "id" not in message:
                return received, None
            received.append(message)
    except ConnectionClosed as closed:
        assert closed.rcvd is not None, "the server dropped the connection without a close frame"
        return received, closed.rcvd.code


def drained(ws: ClientConnection) -> tuple[list[Any], int]:
    """The messages the server sends up to its close, and the close's code."""
    received: list[Any] = []
    try:
        while True:
            received.append(json.loads(ws.recv(timeout=10)))
    except ConnectionClosed as closed:
        assert closed.rcvd is not None, "the server dropped the connection without a close frame"
        return received, closed.rcvd.code


def created(messages: list[Any]) -> bool:
    """Whether a createSession over the socket succeeded (the one way a frame may store)."""
    return any(
        message.get("type") == "next"
        and (message.get("payload") or {}).get("data", {}) is not None
        and ((message["payload"].get("data") or {}).get("createSession") or {}).get("__typename")
        == "SessionCreated"
        for message in messages
    )


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@settings(FUZZ, max_examples=EXAMPLES)
@given(initialised=st.booleans(), sent=st.lists(frames(), min_size=1, max_size=8))
def test_no_websocket_frames_drop_the_connection_or_close_it_with_an_undocumented_code(
    fuzzed: tuple[LiveServer, LiveServer], http: Http, initialised: bool, sent: list[str | bytes]
) -> None:
    server = fuzzed[0]
    before = http.state()
    code: int | EllipsisType | None = ...
    with open_socket(server) as ws:
        if initialised:
            ws.send(json.dumps({"type": "connection_init", "payload": {"authorization": BEARER}}))
        try:
            for frame in sent:
                ws.send(frame)
                if len(frame) > LIMIT:
                    # Closed with 1009 at once, as RFC 6455 (7.1.7) lets a server close: a
                    # client writing on may meet a reset before it reads the close frame.
                    break
            else:
                received, code = answered_until_pong(ws)
        except ConnectionClosed:  # closed by the server part-way
            pass
        if code is ...:
            received, code = drained(ws)
    event(f"close {code}" if code else "pong")
    for message in received:
        payload = message.get("payload")
        errors = payload if message.get("type") == "error" else (payload or {}).get("errors")
        assert "INTERNAL" not in error_codes(errors), message
    assert code is None or code in CLOSE_CODES, code
    if not created(received):
        assert http.state() == before
    with open_socket(server) as ws:
        ws.send(json.dumps({"type": "connection_init", "payload": {"authorization": BEARER}}))
        assert json.loads(ws.recv(timeout=10))["type"] == "connection_ack"
        ws.send(
            json.dumps({"id": "1", "type": "subscribe", "payload": {"query": "{ __typename }"}})
        )
        assert json.loads(ws.recv(timeout=10))["payload"] == {"data": {"__typename": "Query"}}
