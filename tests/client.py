"""A small GraphQL client for tests: HTTP POSTs with variables and graphql-transport-ws."""

import json
import uuid
from contextlib import ExitStack
from typing import Any

import httpx
from websockets.sync.client import ClientConnection, connect
from websockets.typing import Subprotocol

SESSION_FIELDS = """
    key dataSource type version identifier utcOffsetSeconds status isComplete streams
    details { name value } associateSessionKeys createdAt updatedAt endedAt revision
"""

CREATE = (
    """
mutation Create($input: CreateSessionInput!) {
  createSession(input: $input) {
    __typename
    ... on SessionCreated { session { %s } }
    ... on Error { code message }
    ... on ValidationError { field }
    ... on SessionNotFoundError { sessionKey }
  }
}"""
    % SESSION_FIELDS
)

UPDATE_RESULT = (
    """
    __typename
    ... on SessionUpdated { session { %s } }
    ... on Error { code message }
    ... on ValidationError { field }
    ... on SessionNotFoundError { sessionKey }
    ... on RevisionConflictError { currentRevision }
"""
    % SESSION_FIELDS
)


class GraphQLErrors(AssertionError):
    pass


class Client:
    def __init__(self, url: str, headers: dict[str, str] | None = None) -> None:
        self.url = url
        self.http = httpx.Client(base_url=url, headers=headers, timeout=30)

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.close()

    def execute(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        """The whole JSON response of a POST to /graphql."""
        response = self.http.post("/graphql", json={"query": query, "variables": variables or {}})
        assert response.headers["content-type"].startswith("application/json"), response.text
        return response.json()

    def data(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        """The data of a response that must have no errors."""
        result = self.execute(query, variables)
        if result.get("errors"):
            raise GraphQLErrors(json.dumps(result["errors"], indent=2))
        return result["data"]

    def create(self, **fields: Any) -> dict[str, Any]:
        """Create a session (dataSource defaults to "car-1") and return it."""
        fields.setdefault("dataSource", "car-1")
        result = self.data(CREATE, {"input": fields})["createSession"]
        assert result["__typename"] == "SessionCreated", result
        return result["session"]

    def create_result(self, **fields: Any) -> dict[str, Any]:
        return self.data(CREATE, {"input": fields})["createSession"]

    def mutate(self, name: str, input_type: str, **fields: Any) -> dict[str, Any]:
        """Run an update-style mutation and return its result member."""
        query = (
            f"mutation M($input: {input_type}!) {{ {name}(input: $input) {{ {UPDATE_RESULT} }} }}"
        )
        return self.data(query, {"input": fields})[name]

    def end(self, key: str, **fields: Any) -> dict[str, Any]:
        query = (
            """
        mutation End($input: EndSessionInput!) {
          endSession(input: $input) {
            __typename
            ... on SessionEnded { alreadyEnded session { %s } }
            ... on Error { code message }
            ... on ValidationError { field }
            ... on SessionNotFoundError { sessionKey }
          }
        }"""
            % SESSION_FIELDS
        )
        return self.data(query, {"input": {"sessionKey": key, **fields}})["endSession"]

    def session(self, key: str) -> dict[str, Any] | None:
        query = "query S($key: ID!) { session(key: $key) { %s } }" % SESSION_FIELDS
        return self.data(query, {"key": key})["session"]

    def subscribe(self, query: str, variables: dict[str, Any] | None = None) -> "Subscription":
        return Subscription(self.url, query, variables)

    def metrics(self) -> dict[str, float]:
        """Every sample of a /metrics scrape, keyed by name with labels."""
        response = self.http.get("/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        samples: dict[str, float] = {}
        for line in response.text.splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                samples[name] = float(value)
        return samples


class Subscription:
    """One graphql-transport-ws connection carrying one subscription.

    Entering returns once the server has read the subscribe message: a ping sent after it is
    answered only after the server has taken the subscribe, so no sleep is needed.
    """

    def __init__(
        self,
        url: str,
        query: str,
        variables: dict[str, Any] | None = None,
        init_payload: dict[str, Any] | None = None,
        payload: dict[str, Any] | None = None,
    ) -> None:
        """`payload` replaces the subscribe message's payload (a persisted document's id)."""
        self.ws_url = url.replace("http://", "ws://") + "/graphql"
        self.query = query
        self.variables = variables or {}
        self.init_payload = init_payload
        self.payload = payload
        self.id = uuid.uuid4().hex
        self.socket: ClientConnection | None = None

    def __enter__(self) -> "Subscription":
        self._stack = ExitStack()
        self.socket = self._stack.enter_context(
            connect(
                self.ws_url, subprotocols=[Subprotocol("graphql-transport-ws")], open_timeout=10
            )
        )
        init: dict[str, Any] = {"type": "connection_init"}
        if self.init_payload is not None:
            init["payload"] = self.init_payload
        self.send(init)
        assert self.receive()["type"] == "connection_ack"
        self.send(
            {
                "id": self.id,
                "type": "subscribe",
                "payload": self.payload or {"query": self.query, "variables": self.variables},
            }
        )
        self.send({"type": "ping"})
        self._pending: list[dict[str, Any]] = []
        while (message := self.receive())["type"] != "pong":
            self._pending.append(message)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def send(self, message: dict[str, Any]) -> None:
        assert self.socket is not None
        self.socket.send(json.dumps(message))

    def receive(self, timeout: float = 10) -> dict[str, Any]:
        assert self.socket is not None
        return json.loads(self.socket.recv(timeout=timeout))

    def message(self, timeout: float = 10) -> dict[str, Any]:
        """The next message for this subscription (next, error or complete)."""
        if self._pending:
            return self._pending.pop(0)
        while True:
            message = self.receive(timeout)
            if message["type"] == "ping":
                self.send({"type": "pong"})
                continue
            return message

    def next(self, timeout: float = 10) -> dict[str, Any]:
        """The data of the next event; fails on anything else."""
        message = self.message(timeout)
        assert message["type"] == "next", message
        assert not message["payload"].get("errors"), message
        return message["payload"]["data"]

    def nothing_within(self, seconds: float) -> bool:
        """True when no message arrives for `seconds`."""
        if self._pending:
            return False
        try:
            message = self.receive(seconds)
        except TimeoutError:
            return True
        self._pending.append(message)
        return False
