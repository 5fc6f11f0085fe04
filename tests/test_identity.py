"""JWTs from OpenID Connect issuers, against a JWKS served by the test on 127.0.0.1: roles and
data sources from claims, every refusal, key rotation, a provider that is slow or down, and
sockets that close when their token expires and resume by cursor with a new one."""

import base64
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from websockets.exceptions import ConnectionClosed

from api.auth import Token
from api.config import ConfigError, load_settings
from api.issuers import Issuer
from tests.client import Client, Subscription
from tests.identity import AUDIENCE, ISSUER, Provider, SigningKey

STATIC = "static-admin-token-0123456789"
STATIC_TOKENS = (Token.parse({"token": STATIC, "role": "admin"}, "[0]"),)
FETCH_TIMEOUT = 3.0
CREATE = 'mutation { createSession(input: {dataSource: "%s"}) { __typename } }'
EVENTS = "subscription S($after: String) { sessionEvents(after: $after) { cursor sessionKey } }"


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """Only SQLite: who a caller is does not depend on the database."""
    return f"sqlite+aiosqlite:///{tmp_path / 'identity.db'}"


@pytest.fixture
def provider() -> Iterator[Provider]:
    with Provider() as running:
        yield running


def issuers(*entries: dict[str, Any]) -> tuple[Issuer, ...]:
    return tuple(Issuer.parse(entry, f"[{index}]") for index, entry in enumerate(entries))


@pytest.fixture
def serve(make_server: Any, provider: Provider) -> Callable[..., Any]:
    """A server trusting the provider (its entry changed by `entry`), once its JWKS is held."""

    def start(entry: dict[str, Any] | None = None, **changes: Any) -> Any:
        changes.setdefault("tokens", STATIC_TOKENS)
        server = make_server(issuers=issuers(provider.entry(**(entry or {}))), **changes)
        wait_for_jwks(server, "ok")
        return server

    return start


def wait_for_jwks(server: Any, state: str, issuer: str = ISSUER) -> dict[str, Any]:
    """Bounded polling of /readyz until the issuer's key set is in `state`."""
    deadline = time.monotonic() + 10
    while True:
        ready = httpx.get(server.url + "/readyz").json()
        report = next(i for i in ready["issuers"] if i["issuer"] == issuer)
        if report["jwks"] == state:
            return dict(ready)
        assert time.monotonic() < deadline, f"the JWKS stayed {report}"
        time.sleep(0.05)


def post(server: Any, token: str | None, query: str = "{ dataSources { name } }") -> Any:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return httpx.post(server.url + "/graphql", json={"query": query}, headers=headers, timeout=30)


def as_(server: Any, token: str) -> Client:
    return Client(server.url, headers={"authorization": f"Bearer {token}"})


def code(result: dict[str, Any]) -> str:
    return str(result["errors"][0]["extensions"]["code"])


def subscription(server: Any, token: str, after: str | None = None) -> Subscription:
    payload = {"authorization": f"Bearer {token}"}
    return Subscription(server.url, EVENTS, {"after": after}, init_payload=payload)


def close_frame(subscription: Subscription, timeout: float) -> tuple[int, str]:
    """The code and reason the server closes with, waiting at most `timeout` seconds."""
    assert subscription.socket is not None
    deadline = time.monotonic() + timeout
    try:
        while True:
            left = deadline - time.monotonic()
            assert left > 0, f"the socket was not closed within {timeout} s"
            subscription.socket.recv(timeout=left)
    except ConnectionClosed as closed:
        assert closed.rcvd is not None, "closed without a close frame"
        return closed.rcvd.code, closed.rcvd.reason


# -- configuration -------------------------------------------------------------------------------


def test_issuers_come_from_the_config_file_or_the_environment(tmp_path: Path) -> None:
    keycloak = {
        "issuer": "https://sso.example.com/realms/race",
        "audience": ["session-service", "account"],
        "jwksUrl": "https://sso.example.com/realms/race/protocol/openid-connect/certs",
        "roleClaim": ["realm_access", "roles"],
        "roleMap": {"session-writer": "write"},
        "leewaySeconds": 5,
    }
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"Issuers": [keycloak]}))
    (issuer,) = load_settings({"SESSION_SERVICE_CONFIG": str(path)}).issuers
    assert issuer.audiences == ("session-service", "account")
    assert issuer.role_claim == ("realm_access", "roles")
    assert issuer.data_sources_claim == ("data_sources",)
    assert issuer.algorithms == {"RS256", "ES256"}
    assert issuer.leeway_seconds == 5
    namespaced = {
        "issuer": "https://tenant.auth.example.com/",
        "audience": "https://sessions.example.com",
        "jwksUrl": "http://127.0.0.1:9/jwks.json",
        "roleClaim": "https://example.com/roles",
    }
    (issuer,) = load_settings({"SESSION_SERVICE_ISSUERS": json.dumps([namespaced])}).issuers
    assert issuer.role_claim == ("https://example.com/roles",)
    assert issuer.leeway_seconds == 30


GOOD = {"issuer": ISSUER, "audience": AUDIENCE, "jwksUrl": "https://id.example.test/jwks"}
SECRET = {"kty": "oct", "k": base64.urlsafe_b64encode(b"s" * 32).decode().rstrip("=")}


@pytest.mark.parametrize(
    ("entry", "field"),
    [
        ({**GOOD, "issuer": ""}, r"\[0\]\.issuer"),
        ({k: v for k, v in GOOD.items() if k != "audience"}, r"\[0\]\.audience"),
        ({"issuer": ISSUER, "audience": AUDIENCE}, r"\[0\]: give jwksUrl or publicKeys"),
        ({**GOOD, "jwksUrl": "http://id.example.test/jwks"}, r"\[0\]\.jwksUrl"),
        ({**GOOD, "jwksUrl": "file:///etc/passwd"}, r"\[0\]\.jwksUrl"),
        ({**GOOD, "algorithms": ["none"]}, r"\[0\]\.algorithms.*never"),
        ({**GOOD, "algorithms": ["HS256"]}, r"\[0\]\.algorithms: HS256 needs an oct key"),
        (
            {**GOOD, "algorithms": ["HS256"], "publicKeys": [{"kty": "oct", "k": "c2hvcnQ"}]},
            r"\[0\]\.publicKeys\[0\]: an oct key needs at least 32 bytes",
        ),
        ({**GOOD, "publicKeys": [SECRET]}, r"\[0\]\.publicKeys\[0\]"),
        ({**GOOD, "publicKeys": [{"kty": "RSA", "n": "x"}]}, r"\[0\]\.publicKeys\[0\]"),
        ({**GOOD, "roleClaim": ""}, r"\[0\]\.roleClaim"),
        ({**GOOD, "dataSourcesClaim": ["realm_access", 3]}, r"\[0\]\.dataSourcesClaim"),
        ({**GOOD, "roleMap": {"pit-wall": "owner"}}, r"\[0\]\.roleMap\.pit-wall"),
        ({**GOOD, "leewaySeconds": -1}, r"\[0\]\.leewaySeconds"),
        ({**GOOD, "scopes": []}, r"\[0\]: unknown keys \['scopes'\]"),
        ([GOOD], r"\[0\]: must be an object"),
    ],
)
def test_an_invalid_issuer_entry_stops_the_start_up_naming_issuers_and_the_field(
    tmp_path: Path, entry: Any, field: str
) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"Issuers": [entry]}))
    with pytest.raises(ConfigError, match=f"^Issuers: {field}"):
        load_settings({"SESSION_SERVICE_CONFIG": str(path)})
    with pytest.raises(ConfigError, match=f"^SESSION_SERVICE_ISSUERS: {field}"):
        load_settings({"SESSION_SERVICE_ISSUERS": json.dumps([entry])})


def test_an_issuer_listed_twice_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"SESSION_SERVICE_ISSUERS: \[1\]\.issuer"):
        load_settings({"SESSION_SERVICE_ISSUERS": json.dumps([GOOD, GOOD])})


# -- who a token says the caller is --------------------------------------------------------------


def test_rsa_and_ec_tokens_give_the_role_and_data_sources_of_their_claims(
    serve: Callable[..., Any], provider: Provider
) -> None:
    server = serve()
    writer = provider.token(provider.rsa, roles=["write"], data_sources=["car-a"])
    reader = provider.token(provider.ec, roles="read", data_sources="car-a car-b")
    with as_(server, writer) as client:
        assert client.create(dataSource="car-a")["dataSource"] == "car-a"
        assert code(client.execute(CREATE % "car-b")) == "FORBIDDEN"
    with as_(server, reader) as client:
        assert code(client.execute(CREATE % "car-a")) == "FORBIDDEN"
        sources = client.data("{ dataSources { name } }")["dataSources"]
        assert sources == [{"name": "car-a"}]
        snapshot = '{ sessionSnapshot(dataSource: "car-b") { sessions { key } } }'
        assert client.data(snapshot)["sessionSnapshot"]["sessions"] == []
        assert code(client.execute('{ currentSessions(dataSource: "car-c") { key } }')) == (
            "FORBIDDEN"
        )
    nothing = provider.token(roles=["read"], data_sources=None)
    with as_(server, nothing) as client:
        assert client.data("{ dataSources { name } }")["dataSources"] == []
        assert code(client.execute('{ currentSessions(dataSource: "car-a") { key } }')) == (
            "FORBIDDEN"
        )


def metrics(server: Any, token: str) -> httpx.Response:
    return httpx.get(server.url + "/metrics", headers={"authorization": f"Bearer {token}"})


def test_the_highest_mapped_role_wins_and_admin_reads_metrics(
    serve: Callable[..., Any], provider: Provider
) -> None:
    server = serve()
    for roles, status in ((["read", "admin"], 200), (["read", "write"], 403), ("admin", 200)):
        assert metrics(server, provider.token(roles=roles)).status_code == status, roles
    expired = metrics(server, provider.token(roles="admin", exp=int(time.time()) - 120))
    assert expired.status_code == 401
    assert expired.text == "The bearer token has expired (exp).\n"


def test_a_valid_token_with_no_mapped_role_may_do_nothing(
    serve: Callable[..., Any], provider: Provider
) -> None:
    server = serve()
    token = provider.token(roles=["viewer", "offline_access"], data_sources=["*"])
    with as_(server, token) as client:
        for query in (
            "{ dataSources { name } }",
            "{ currentSessions { key } }",
            "{ sessions { totalCount } }",
            '{ session(key: "x") { key } }',
            "{ sessionSnapshot { cursor } }",
            CREATE % "car-a",
        ):
            result = client.execute(query)
            assert code(result) == "FORBIDDEN", (query, result)
        assert client.http.get("/metrics").status_code == 403
    payload = {"authorization": f"Bearer {token}"}
    for query in (EVENTS, 'subscription { sessionStarted(dataSource: "car-a") { cursor } }'):
        with Subscription(server.url, query, init_payload=payload) as refused:
            message = refused.message()
            assert message["type"] == "error", message
            assert message["payload"][0]["extensions"]["code"] == "FORBIDDEN"


def test_keycloak_roles_count_only_through_the_role_map(
    serve: Callable[..., Any], provider: Provider
) -> None:
    server = serve(
        {
            "roleClaim": ["realm_access", "roles"],
            "dataSourcesClaim": ["resource_access", "session-service", "data_sources"],
            "roleMap": {"session-admin": "admin", "pit-wall": "read"},
        }
    )

    def keycloak(*roles: str) -> str:
        return provider.token(
            roles=None,
            data_sources=None,
            realm_access={"roles": [*roles, "offline_access", "uma_authorization"]},
            resource_access={"session-service": {"data_sources": ["car-a"]}},
        )

    # A provider role that happens to be called admin is not ours when a role map is given.
    with as_(server, keycloak("admin", "write")) as client:
        assert code(client.execute("{ dataSources { name } }")) == "FORBIDDEN"
    with as_(server, keycloak("pit-wall")) as client:
        assert client.data("{ currentSessions { key } }") == {"currentSessions": []}
        assert code(client.execute(CREATE % "car-a")) == "FORBIDDEN"
        assert code(client.execute('{ currentSessions(dataSource: "car-b") { key } }')) == (
            "FORBIDDEN"
        )
        assert client.http.get("/metrics").status_code == 403
    with as_(server, keycloak("pit-wall", "session-admin")) as client:
        assert client.create(dataSource="car-a")["dataSource"] == "car-a"
        assert client.http.get("/metrics").status_code == 200


def test_namespaced_claims_are_taken_literally_dots_and_slashes_included(
    serve: Callable[..., Any], provider: Provider
) -> None:
    server = serve(
        {
            "roleClaim": "https://example.com/roles",
            "dataSourcesClaim": "https://example.com/data_sources",
        }
    )
    claims: dict[str, Any] = {
        "https://example.com/roles": ["write"],
        "https://example.com/data_sources": "*",
    }
    namespaced = provider.token(roles=None, data_sources=None, **claims)
    with as_(server, namespaced) as client:
        assert client.create(dataSource="car-b")["dataSource"] == "car-b"
    # The same names as a path of nested objects are not the claim.
    claims = {"https://example": {"com/roles": ["write"]}}
    nested = provider.token(roles=None, data_sources=None, **claims)
    with as_(server, nested) as client:
        assert code(client.execute("{ dataSources { name } }")) == "FORBIDDEN"


def test_a_token_expired_within_the_leeway_is_accepted(
    serve: Callable[..., Any], provider: Provider
) -> None:
    server = serve({"leewaySeconds": 60})
    assert post(server, provider.token(exp=int(time.time()) - 20)).status_code == 200
    assert post(server, provider.token(exp=int(time.time()) - 120)).status_code == 401


def test_hmac_tokens_verify_only_with_an_oct_key_from_the_configuration(
    serve: Callable[..., Any], provider: Provider
) -> None:
    secret = b"s" * 32
    shared = {"kty": "oct", "kid": "shared", "k": base64.urlsafe_b64encode(secret).decode()}
    server = serve({"publicKeys": [shared], "algorithms": ["RS256", "HS256"]})
    claims = {"iss": ISSUER, "aud": AUDIENCE, "exp": int(time.time()) + 60, "roles": "write"}
    signed = jwt.encode(claims, secret, algorithm="HS256", headers={"kid": "shared"})
    assert post(server, signed).status_code == 200
    assert post(server, provider.token()).status_code == 200
    forged = jwt.encode(claims, b"t" * 32, algorithm="HS256", headers={"kid": "shared"})
    assert "(signature)" in post(server, forged).json()["errors"][0]["message"]
    # HS256 is allowed here, but never with the RSA key the JWKS serves as its secret.
    confused = post(server, _hmac_with_the_public_key(provider))
    assert "(alg)" in confused.json()["errors"][0]["message"]


def test_a_key_below_the_minimum_size_is_refused(
    serve: Callable[..., Any], provider: Provider
) -> None:
    weak = SigningKey.rsa(key_size=1024)
    provider.published.append(weak)
    server = serve()
    with pytest.warns(jwt.InsecureKeyLengthWarning):  # PyJWT signs with it, warning
        token = provider.token(weak)
    answer = post(server, token)
    assert answer.status_code == 401
    assert "(key)" in answer.json()["errors"][0]["message"]


def test_configured_tokens_keep_working_beside_issuers(
    serve: Callable[..., Any], provider: Provider
) -> None:
    server = serve()
    with as_(server, STATIC) as admin:
        assert admin.create(dataSource="car-a")["dataSource"] == "car-a"
        assert admin.http.get("/metrics").status_code == 200
    assert post(server, "static-but-wrong-0123456789").status_code == 401
    assert post(server, None).status_code == 401


# -- refusals ----------------------------------------------------------------------------------


def _tampered(provider: Provider) -> str:
    header, _, signature = provider.token(roles=["read"]).split(".")
    claims = base64.urlsafe_b64encode(
        json.dumps(
            {"iss": ISSUER, "aud": AUDIENCE, "exp": int(time.time()) + 60, "roles": ["admin"]}
        ).encode()
    )
    return f"{header}.{claims.decode().rstrip('=')}.{signature}"


def _hmac_with_the_public_key(provider: Provider) -> str:
    """The classic confusion: the RSA public key's PEM used as an HMAC secret."""
    pem = provider.rsa.private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    claims = {"iss": ISSUER, "aud": AUDIENCE, "exp": int(time.time()) + 60, "roles": "admin"}
    header = base64.urlsafe_b64encode(
        json.dumps({"alg": "HS256", "typ": "JWT", "kid": provider.rsa.kid}).encode()
    )
    body = base64.urlsafe_b64encode(json.dumps(claims).encode())
    signing_input = header.rstrip(b"=") + b"." + body.rstrip(b"=")
    mac = hmac.new(pem, signing_input, hashlib.sha256).digest()
    return (signing_input + b"." + base64.urlsafe_b64encode(mac).rstrip(b"=")).decode()


def _unsigned(provider: Provider) -> str:
    claims = {"iss": ISSUER, "aud": AUDIENCE, "exp": int(time.time()) + 60, "roles": "admin"}
    return jwt.encode(claims, None, algorithm="none")  # type: ignore[arg-type]


REFUSALS: dict[str, tuple[Callable[[Provider], str], str]] = {
    "expired": (lambda p: p.token(exp=int(time.time()) - 120), "(exp)"),
    "not yet valid": (lambda p: p.token(nbf=int(time.time()) + 300), "(nbf)"),
    "issued in the future": (lambda p: p.token(iat=int(time.time()) + 300), "(iat)"),
    "wrong issuer": (lambda p: p.token(iss="https://id.example.test/realms/other"), "(iss)"),
    "wrong audience": (lambda p: p.token(aud=["another-service"]), "(aud)"),
    "no exp": (lambda p: p.token(exp=None), "required claim exp"),
    "no aud": (lambda p: p.token(aud=None), "required claim aud"),
    "no iss": (lambda p: p.token(iss=None), "required claim iss"),
    "bad signature": (lambda p: p.token(SigningKey.rsa(kid=p.rsa.kid)), "(signature)"),
    "tampered claims": (_tampered, "(signature)"),
    "unknown key": (lambda p: p.token(SigningKey.rsa(kid="never-published")), "(kid)"),
    "algorithm not listed": (lambda p: p.token(algorithm="RS512"), "(alg)"),
    "algorithm none": (_unsigned, "(alg)"),
    "public key as an HMAC secret": (_hmac_with_the_public_key, "(alg)"),
    "algorithm of another key type": (
        lambda p: p.token(p.ec, headers={"kid": p.rsa.kid}),
        "(alg)",
    ),
    "malformed": (lambda p: "eyJhbGciOi.not-base64!.x", "(malformed)"),
    "a claim of the wrong type": (lambda p: p.token(exp="tomorrow"), "(claims)"),
    "neither a token nor a JWT": (lambda p: "just-some-opaque-string", "neither"),
}


@pytest.mark.parametrize("case", REFUSALS)
def test_each_refusal_is_a_401_naming_the_check_never_the_token(
    serve: Callable[..., Any], provider: Provider, caplog: pytest.LogCaptureFixture, case: str
) -> None:
    server = serve()
    make, check = REFUSALS[case]
    token = make(provider)
    with caplog.at_level(logging.INFO):
        response = post(server, token)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    (error,) = response.json()["errors"]
    assert error["extensions"] == {"code": "UNAUTHENTICATED"}
    assert check in error["message"]
    assert token not in error["message"]
    assert token not in caplog.text
    if "." in token:
        (record,) = [r for r in caplog.records if r.getMessage() == "bearer token refused"]
        logged = record.__dict__  # the line's extra fields
        assert check.strip("()").removeprefix("required ") in logged["check"]
        assert logged["issuer"].startswith("https://id.example.test/") or case in (
            "malformed",
            "no iss",
        )
    # A socket presenting it is refused at connection_init.
    with pytest.raises(ConnectionClosed) as closed:
        with subscription(server, token):
            pass
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 4403


# -- the provider's keys -----------------------------------------------------------------------


def test_a_first_token_waits_for_the_first_fetch_and_requests_share_it(
    make_server: Any, provider: Provider
) -> None:
    admin = provider.token(roles=["admin"])
    with ThreadPoolExecutor(4) as pool, provider.held():
        # The service starts while its provider has not answered yet.
        server = make_server(issuers=issuers(provider.entry()))
        provider.wait_for_fetches(1)
        query = pool.submit(post, server, admin)
        metrics = pool.submit(
            httpx.get, server.url + "/metrics", headers={"authorization": f"Bearer {admin}"}
        )
        made_up = pool.submit(post, server, provider.token(SigningKey.ec(kid="made-up")))
        with pytest.raises(FutureTimeout):
            query.result(timeout=0.5)  # it waits for the provider's answer
    assert query.result(timeout=10).status_code == 200
    assert metrics.result(timeout=10).status_code == 200
    assert "(kid)" in made_up.result(timeout=10).json()["errors"][0]["message"]
    assert provider.fetches == 1


def test_made_up_key_ids_fetch_the_jwks_at_most_once_per_ten_seconds(
    serve: Callable[..., Any], provider: Provider
) -> None:
    server = serve()
    assert provider.fetches == 1
    started = time.monotonic()
    tokens = [provider.token(SigningKey.ec(kid=f"made-up-{n}")) for n in range(30)]
    with ThreadPoolExecutor(10) as pool:
        answers = list(pool.map(lambda token: post(server, token), tokens))
    assert time.monotonic() - started < 10, "the test ran too slowly to say anything"
    assert {answer.status_code for answer in answers} == {401}
    assert provider.fetches == 1


def test_a_key_rotation_is_picked_up_without_a_restart_while_sockets_stay_open(
    serve: Callable[..., Any], provider: Provider
) -> None:
    server = serve(jwks_refetch_interval_seconds=0.2)
    with subscription(server, provider.token(roles=["read"])) as watching:
        rotated = SigningKey.rsa()
        provider.published = [rotated, provider.ec]  # the old RSA key is withdrawn
        token = provider.token(rotated)
        deadline = time.monotonic() + 10
        # Refused while the last fetch is younger than the refetch interval, then accepted.
        while (answer := post(server, token)).status_code != 200:
            assert "(kid)" in answer.json()["errors"][0]["message"]
            assert time.monotonic() < deadline, "the rotated key was never fetched"
            time.sleep(0.05)
        with as_(server, token) as writer:
            key = writer.create(dataSource="car-a")["key"]
        assert watching.next()["sessionEvents"]["sessionKey"] == key
    assert "(kid)" in post(server, provider.token()).json()["errors"][0]["message"]


def test_with_the_provider_down_cached_keys_work_and_others_are_refused_promptly(
    serve: Callable[..., Any], provider: Provider
) -> None:
    server = serve(jwks_refetch_interval_seconds=0.2)
    cached = provider.token(provider.ec)
    provider.stop()
    assert post(server, cached).status_code == 200
    unknown = provider.token(SigningKey.rsa(kid="published-later"))
    deadline = time.monotonic() + 10
    while True:
        started = time.monotonic()
        answer = post(server, unknown)
        assert time.monotonic() - started < FETCH_TIMEOUT + 1
        assert answer.status_code == 401
        if "(jwks)" in (message := answer.json()["errors"][0]["message"]):
            break
        assert "(kid)" in message  # the last fetch is younger than the interval
        assert time.monotonic() < deadline, "the failed fetch was never reported"
        time.sleep(0.05)
    ready = wait_for_jwks(server, "stale")
    assert ready["status"] == "degraded"
    (report,) = ready["issuers"]
    assert report["error"] == "ConnectError"
    assert report["keys"] == 2
    assert post(server, cached).status_code == 200
    assert post(server, STATIC).status_code == 200


def test_a_hanging_provider_delays_no_request_beyond_the_fetch_timeout(
    serve: Callable[..., Any], provider: Provider
) -> None:
    server = serve(jwks_refetch_interval_seconds=0.01)
    unknown = provider.token(SigningKey.rsa(kid="published-later"))
    cached = provider.token()
    with provider.held(), ThreadPoolExecutor(1) as pool:

        def ask_until_it_fetches() -> tuple[float, Any]:
            deadline = time.monotonic() + 10
            while True:
                started = time.monotonic()
                answer = post(server, unknown)
                if provider.fetches > 1 or time.monotonic() > deadline:
                    return time.monotonic() - started, answer

        waiting = pool.submit(ask_until_it_fetches)
        provider.wait_for_fetches(2)
        for token in (STATIC, cached):
            started = time.monotonic()
            assert post(server, token).status_code == 200
            assert time.monotonic() - started < FETCH_TIMEOUT - 1
        took, answer = waiting.result(timeout=FETCH_TIMEOUT + 5)
    assert took < FETCH_TIMEOUT + 1
    assert answer.status_code == 401
    assert "(jwks)" in answer.json()["errors"][0]["message"]
    (report,) = httpx.get(server.url + "/readyz").json()["issuers"]
    assert report["error"] == "no answer within 3 s"


def test_readyz_reports_each_issuers_key_set(make_server: Any, provider: Provider) -> None:
    secret = {"kty": "oct", "k": base64.urlsafe_b64encode(b"k" * 32).decode()}
    static = {"issuer": "https://static.example.test", "audience": AUDIENCE}
    server = make_server(
        issuers=issuers(
            provider.entry(), {**static, "publicKeys": [secret], "algorithms": ["HS256"]}
        )
    )
    ready = wait_for_jwks(server, "ok")
    assert ready["status"] == "ok"
    assert ready["issuers"][1] == {"issuer": "https://static.example.test", "jwks": "configured"}
    assert ready["issuers"][0]["keys"] == 2


def test_the_strawberry_handler_parts_the_expiry_close_relies_on() -> None:
    """api/websocket.py extends Strawberry's graphql-transport-ws handler (pinned in
    pyproject.toml) at connection_init and shutdown, after it sets connection_acknowledged."""
    import inspect

    from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
        BaseGraphQLTransportWSHandler as Base,
    )

    assert inspect.iscoroutinefunction(Base.handle_connection_init)
    assert inspect.iscoroutinefunction(Base.shutdown)
    assert "self.connection_acknowledged = True" in inspect.getsource(Base.handle_connection_init)
    assert "await self.shutdown()" in inspect.getsource(Base.handle)


# -- sockets whose token expires ----------------------------------------------------------------


def test_a_socket_is_closed_with_4403_token_expired_when_its_token_expires(
    serve: Callable[..., Any], provider: Provider
) -> None:
    server = serve({"leewaySeconds": 0})
    token = provider.token(lifetime=2)
    expires_at = jwt.decode(token, options={"verify_signature": False})["exp"]
    with subscription(server, token) as watching:
        with as_(server, STATIC) as writer:
            key = writer.create(dataSource="car-a")["key"]
        assert watching.next()["sessionEvents"]["sessionKey"] == key
        assert close_frame(watching, timeout=10) == (4403, "token expired")
    assert time.time() >= expires_at
    with pytest.raises(ConnectionClosed) as refused:
        with subscription(server, token):
            pass
    assert refused.value.rcvd is not None
    assert refused.value.rcvd.code == 4403


def test_a_socket_closed_at_expiry_resumes_with_a_new_token_missing_nothing(
    serve: Callable[..., Any], provider: Provider
) -> None:
    server = serve({"leewaySeconds": 0})
    with as_(server, STATIC) as writer:
        with subscription(server, provider.token(lifetime=2, roles="read")) as first:
            before = writer.create(dataSource="car-a")["key"]
            event = first.next()["sessionEvents"]
            assert event["sessionKey"] == before
            assert close_frame(first, timeout=10) == (4403, "token expired")
        in_the_gap = [writer.create(dataSource="car-a")["key"] for _ in range(3)]
        fresh = provider.token(lifetime=300, roles="read")
        with subscription(server, fresh, after=event["cursor"]) as resumed:
            seen = [resumed.next()["sessionEvents"]["sessionKey"] for _ in in_the_gap]
            assert seen == in_the_gap
            after = writer.create(dataSource="car-a")["key"]
            assert resumed.next()["sessionEvents"]["sessionKey"] == after
            assert resumed.nothing_within(0.3)


def test_a_socket_with_a_configured_token_is_never_closed_for_expiry(
    serve: Callable[..., Any], provider: Provider
) -> None:
    server = serve({"leewaySeconds": 0})
    with (
        subscription(server, STATIC) as static,
        subscription(server, provider.token(lifetime=1)) as expiring,
    ):
        assert close_frame(expiring, timeout=10) == (4403, "token expired")
        with as_(server, STATIC) as writer:
            key = writer.create(dataSource="car-a")["key"]
        assert static.next()["sessionEvents"]["sessionKey"] == key
