"""Persisted and trusted documents: Apollo's automatic persisted queries, `documentId`, Relay's
`doc_id`, by POST, GET and WebSocket; a trusted manifest; `session-service documents export`."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.app import create_app
from api.auth import Token
from api.config import ConfigError, Settings
from tests.client import Client, Subscription
from tests.conftest import LiveServer

SOURCES = "query Sources { dataSources { name liveSessions } }"
CREATE = (
    "mutation Create($source: String!) { createSession(input: {dataSource: $source}) "
    "{ __typename } }"
)
STARTED = 'subscription Started { sessionStarted(dataSource: "car-a") { sessionKey } }'
ADMIN, READER = "admin-token-0123456789", "reader-token-0123456789"
TOKENS = (
    Token.parse({"token": ADMIN, "role": "admin"}, "[0]"),
    Token.parse({"token": READER, "role": "write"}, "[1]"),
)


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def apq(text: str) -> dict[str, Any]:
    return {"persistedQuery": {"version": 1, "sha256Hash": sha(text)}}


def post(server: LiveServer, body: dict[str, Any], token: str | None = None) -> httpx.Response:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return httpx.post(f"{server.url}/graphql", json=body, headers=headers, timeout=30)


def code(response: httpx.Response) -> str:
    [error] = response.json()["errors"]
    return str(error["extensions"]["code"])


def stored(server: LiveServer) -> int:
    with Client(server.url, {"authorization": f"Bearer {ADMIN}"}) as client:
        return sum(s["liveSessions"] for s in client.data(SOURCES)["dataSources"])


# -- automatic persisted queries -------------------------------------------------------------


def test_an_unknown_hash_asks_for_the_text_which_is_then_kept(server: LiveServer) -> None:
    first = post(server, {"extensions": apq(SOURCES)})
    assert first.status_code == 200  # Apollo's and urql's links retry only after a 200
    assert first.json() == {
        "errors": [
            {
                "message": "PersistedQueryNotFound",
                "extensions": {"code": "PERSISTED_QUERY_NOT_FOUND"},
            }
        ]
    }
    registered = post(server, {"query": SOURCES, "extensions": apq(SOURCES)})
    assert registered.json() == {"data": {"dataSources": []}}
    assert post(server, {"extensions": apq(SOURCES)}).json() == {"data": {"dataSources": []}}


def test_a_hash_that_does_not_match_its_text_is_refused_and_not_kept(server: LiveServer) -> None:
    other = "query Other { __typename }"
    refused = post(server, {"query": other, "extensions": apq(SOURCES)})
    assert (refused.status_code, code(refused)) == (400, "VALIDATION")
    assert "does not match" in refused.json()["errors"][0]["message"]
    assert code(post(server, {"extensions": apq(SOURCES)})) == "PERSISTED_QUERY_NOT_FOUND"
    assert code(post(server, {"extensions": apq(other)})) == "PERSISTED_QUERY_NOT_FOUND"


def test_an_invalid_document_is_not_kept(server: LiveServer) -> None:
    invalid = "query Bad { nope }"
    assert post(server, {"query": invalid, "extensions": apq(invalid)}).json()["errors"]
    assert code(post(server, {"extensions": apq(invalid)})) == "PERSISTED_QUERY_NOT_FOUND"


def test_malformed_persisted_query_extensions_are_refused(server: LiveServer) -> None:
    version_2 = {"persistedQuery": {"version": 2, "sha256Hash": sha(SOURCES)}}
    assert code(post(server, {"extensions": version_2})) == "PERSISTED_QUERY_NOT_SUPPORTED"
    for digest in ["abc", 5, None, sha(SOURCES).upper()]:
        bad = {"persistedQuery": {"version": 1, "sha256Hash": digest}}
        assert code(post(server, {"extensions": bad})) == "VALIDATION", digest
    both = {"documentId": f"sha256:{sha(SOURCES)}", "extensions": apq(SOURCES)}
    assert code(post(server, both)) == "VALIDATION"


def test_every_instance_knows_a_registered_document_and_keeps_only_the_newest(
    make_server: Any, database_url: str
) -> None:
    first = make_server(persisted_documents_limit=2)
    second = make_server(persisted_documents_limit=2)
    texts = [f"query Q{index} {{ __typename }}" for index in range(3)]
    for text in texts:
        assert post(first, {"query": text, "extensions": apq(text)}).json()["data"]
    # The second instance has never seen them: it reads the database, which keeps two.
    assert code(post(second, {"extensions": apq(texts[0])})) == "PERSISTED_QUERY_NOT_FOUND"
    for text in texts[1:]:
        answer = post(second, {"extensions": apq(text)}).json()
        assert answer == {"data": {"__typename": "Query"}}, text


# -- documentId and doc_id, GET, WebSocket ---------------------------------------------------


def test_a_document_id_names_a_registered_document(server: LiveServer) -> None:
    post(server, {"query": SOURCES, "extensions": apq(SOURCES)})
    named = post(server, {"documentId": f"sha256:{sha(SOURCES)}"})
    assert named.json() == {"data": {"dataSources": []}}
    assert post(server, {"doc_id": sha(SOURCES)}).json() == {"data": {"dataSources": []}}
    unknown = post(server, {"documentId": f"sha256:{'0' * 64}"})
    assert (unknown.status_code, code(unknown)) == (200, "PERSISTED_QUERY_NOT_FOUND")
    both = post(server, {"documentId": f"sha256:{sha(SOURCES)}", "query": SOURCES})
    assert code(both) == "VALIDATION"


def test_a_persisted_query_by_get_runs_in_production_and_free_text_does_not(
    make_server: Any,
) -> None:
    server = make_server(profile="production")
    post(server, {"query": SOURCES, "extensions": apq(SOURCES)})
    by_get = httpx.get(
        f"{server.url}/graphql", params={"extensions": json.dumps(apq(SOURCES))}, timeout=30
    )
    assert (by_get.status_code, by_get.json()) == (200, {"data": {"dataSources": []}})
    by_id = httpx.get(f"{server.url}/graphql", params={"documentId": f"sha256:{sha(SOURCES)}"})
    assert by_id.json() == {"data": {"dataSources": []}}
    free = httpx.get(f"{server.url}/graphql", params={"query": SOURCES})
    assert (free.status_code, code(free)) == (400, "PERSISTED_QUERY_REQUIRED")


def test_a_persisted_mutation_by_get_is_refused_with_405_and_changes_nothing(
    server: LiveServer,
) -> None:
    variables = {"source": "car-a"}
    post(server, {"query": CREATE, "variables": variables, "extensions": apq(CREATE)})
    assert stored(server) == 1
    refused = httpx.get(
        f"{server.url}/graphql",
        params={"extensions": json.dumps(apq(CREATE)), "variables": json.dumps(variables)},
    )
    assert (refused.status_code, refused.headers["allow"], code(refused)) == (
        405,
        "POST",
        "VALIDATION",
    )
    assert stored(server) == 1


def test_a_websocket_subscription_may_name_its_document(server: LiveServer) -> None:
    registering = {"query": STARTED, "extensions": apq(STARTED)}
    with Subscription(server.url, "", payload=registering):
        pass
    payload = {"documentId": f"sha256:{sha(STARTED)}"}
    with Subscription(server.url, "", payload=payload) as subscription:
        with Client(server.url) as client:
            key = client.create(dataSource="car-a")["key"]
        assert subscription.next() == {"sessionStarted": {"sessionKey": key}}
    unknown = {"extensions": apq("subscription Never { sessionEvents { cursor } }")}
    with Subscription(server.url, "", payload=unknown) as subscription:
        message = subscription.message()
        assert message["type"] == "error"
        assert message["payload"][0]["extensions"]["code"] == "PERSISTED_QUERY_NOT_FOUND"


# -- trusted documents -----------------------------------------------------------------------


def manifest(tmp_path: Path, *bodies: str) -> Path:
    operations = [
        {"id": sha(body), "body": body, "name": body.split()[1], "type": body.split()[0]}
        for body in bodies
    ]
    path = tmp_path / "manifest.json"
    path.write_text(
        json.dumps(
            {"format": "apollo-persisted-query-manifest", "version": 1, "operations": operations}
        )
    )
    return path


@pytest.fixture
def trusted(make_server: Any, tmp_path: Path) -> LiveServer:
    path = manifest(tmp_path, SOURCES, STARTED)
    return make_server(tokens=TOKENS, trusted_documents=str(path))  # type: ignore[no-any-return]


def test_with_trusted_documents_only_those_run(trusted: LiveServer) -> None:
    other = "query Other { dataSources { name } }"
    refused = post(trusted, {"query": other}, READER)
    assert (refused.status_code, code(refused)) == (400, "PERSISTED_QUERY_REQUIRED")
    assert post(trusted, {"query": other, "extensions": apq(other)}, READER).status_code == 400
    by_id = post(trusted, {"documentId": f"sha256:{sha(SOURCES)}"}, READER)
    assert by_id.json() == {"data": {"dataSources": []}}
    assert post(trusted, {"doc_id": sha(SOURCES)}, READER).json()["data"]
    assert post(trusted, {"extensions": apq(SOURCES)}, READER).json()["data"]
    assert post(trusted, {"query": SOURCES}, READER).json()["data"]  # a trusted text


def test_admin_tokens_run_any_document_beside_the_trusted_ones(trusted: LiveServer) -> None:
    answer = post(trusted, {"query": "{ __typename }"}, ADMIN)
    assert answer.json() == {"data": {"__typename": "Query"}}


def test_a_text_the_cache_answered_an_admin_is_still_refused_to_others(
    trusted: LiveServer,
) -> None:
    """The response cache looks up a body it has met before decoding it (api/view.py): not
    for a caller who may run trusted documents only, whose text is checked first."""
    body = json.dumps({"query": "query Other { dataSources { name } }"}).encode()

    def sent(token: str) -> httpx.Response:
        headers = {"authorization": f"Bearer {token}", "content-type": "application/json"}
        return httpx.post(f"{trusted.url}/graphql", content=body, headers=headers, timeout=30)

    for _ in range(3):  # computed, then answered from the cache
        assert sent(ADMIN).json() == {"data": {"dataSources": []}}
    assert trusted.services.response_cache.known.get(body) is not None
    refused = sent(READER)
    assert (refused.status_code, code(refused)) == (400, "PERSISTED_QUERY_REQUIRED")


def test_trusted_documents_hold_over_websocket(trusted: LiveServer) -> None:
    init = {"authorization": f"Bearer {READER}"}
    free = "subscription Free { sessionEvents { cursor } }"
    with Subscription(trusted.url, free, init_payload=init) as subscription:
        message = subscription.message()
        assert message["type"] == "error"
        assert message["payload"][0]["extensions"]["code"] == "PERSISTED_QUERY_REQUIRED"
    payload = {"documentId": f"sha256:{sha(STARTED)}"}
    with Subscription(trusted.url, "", init_payload=init, payload=payload) as subscription:
        with Client(trusted.url, {"authorization": f"Bearer {ADMIN}"}) as client:
            key = client.create(dataSource="car-a")["key"]
        assert subscription.next() == {"sessionStarted": {"sessionKey": key}}


def test_a_trusted_document_that_does_not_validate_stops_the_start(tmp_path: Path) -> None:
    path = manifest(tmp_path, SOURCES, "query Broken { nope }")
    with pytest.raises(ConfigError, match="Broken"):
        create_app(Settings(trusted_documents=str(path)))
    (tmp_path / "not-a-manifest.json").write_text('{"operations": []}')
    with pytest.raises(ConfigError, match="apollo-persisted-query-manifest"):
        create_app(Settings(trusted_documents=str(tmp_path / "not-a-manifest.json")))


# -- session-service documents export --------------------------------------------------------


def documents(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "api.cli", "documents", "export", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


def test_documents_export_writes_a_manifest_that_the_service_trusts(
    tmp_path: Path, make_server: Any
) -> None:
    folder = tmp_path / "documents"
    (folder / "sessions").mkdir(parents=True)
    (folder / "fragments.graphql").write_text("fragment Basics on Session { key identifier }")
    (folder / "sessions" / "live.graphql").write_text(
        "query Live { currentSessions { ...Basics } }\n"
        'subscription Started { sessionStarted(dataSource: "car-a") { sessionKey } }'
    )
    output = tmp_path / "manifest.json"
    assert documents(str(folder), "--output", str(output)).returncode == 0
    written = json.loads(output.read_text())
    assert written["format"] == "apollo-persisted-query-manifest"
    assert [(entry["name"], entry["type"]) for entry in written["operations"]] == [
        ("Live", "query"),
        ("Started", "subscription"),
    ]
    live = written["operations"][0]
    assert "fragment Basics" in live["body"] and live["id"] == sha(live["body"])
    assert documents(str(folder), "--output", str(output), "--check").returncode == 0

    server = make_server(tokens=TOKENS, trusted_documents=str(output))
    with Client(server.url, {"authorization": f"Bearer {ADMIN}"}) as client:
        key = client.create(dataSource="car-a", identifier="FP1")["key"]
    answer = post(server, {"documentId": f"sha256:{live['id']}"}, READER).json()
    assert answer == {"data": {"currentSessions": [{"key": key, "identifier": "FP1"}]}}
    # The folder itself may be the setting: the same documents.
    from_folder = make_server(tokens=TOKENS, trusted_documents=str(folder))
    assert post(from_folder, {"doc_id": live["id"]}, READER).json() == answer

    (folder / "extra.graphql").write_text("query Extra { __typename }")
    stale = documents(str(folder), "--output", str(output), "--check")
    assert stale.returncode == 1 and "documents export" in stale.stderr


def test_documents_export_refuses_invalid_or_anonymous_operations(tmp_path: Path) -> None:
    (tmp_path / "bad.graphql").write_text("query Bad { nope }")
    refused = documents(str(tmp_path))
    assert refused.returncode == 1 and "Bad" in refused.stderr
    (tmp_path / "bad.graphql").write_text("{ __typename }")
    anonymous = documents(str(tmp_path))
    assert anonymous.returncode == 1 and "needs a name" in anonymous.stderr
