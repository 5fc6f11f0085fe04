"""A test identity provider: keys generated in the test, tokens signed with them, and a JWKS
served on 127.0.0.1 that a test can hold back, break or take down."""

import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

ISSUER = "https://id.example.test/realms/race"
AUDIENCE = "session-service"
# The longest a held JWKS request waits before answering anyway, so no thread outlives a test.
HOLD_LIMIT = 10.0


@dataclass
class SigningKey:
    kid: str
    algorithm: str
    private: Any

    @classmethod
    def rsa(
        cls, kid: str | None = None, algorithm: str = "RS256", key_size: int = 2048
    ) -> "SigningKey":
        private = rsa.generate_private_key(public_exponent=65537, key_size=key_size)
        return cls(kid or f"rsa-{uuid.uuid4().hex[:8]}", algorithm, private)

    @classmethod
    def ec(cls, kid: str | None = None) -> "SigningKey":
        private = ec.generate_private_key(ec.SECP256R1())
        return cls(kid or f"ec-{uuid.uuid4().hex[:8]}", "ES256", private)

    @property
    def jwk(self) -> dict[str, Any]:
        """The public half, as a JWKS lists it."""
        family = RSAAlgorithm if self.algorithm[:2] in ("RS", "PS") else ECAlgorithm
        public = family.to_jwk(self.private.public_key(), as_dict=True)
        return {**public, "kid": self.kid, "use": "sig"}


class Provider:
    """The keys an issuer publishes at /jwks.json, and tokens signed with any key."""

    def __init__(self, issuer: str = ISSUER) -> None:
        self.issuer = issuer
        self.rsa = SigningKey.rsa()
        self.ec = SigningKey.ec()
        self.published = [self.rsa, self.ec]
        self.fetches = 0
        self.failing = False
        self._released = threading.Event()
        self._released.set()
        self._fetched = threading.Condition()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/jwks.json"
        self.down = False

    def __enter__(self) -> "Provider":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._released.set()
        self.stop()

    def stop(self) -> None:
        """Take the provider down: its port refuses connections from now on."""
        if not self.down:
            self.down = True
            self._server.shutdown()
            self._server.server_close()

    @contextmanager
    def held(self) -> Iterator[None]:
        """JWKS requests wait (up to HOLD_LIMIT) until the block ends: a slow provider."""
        self._released.clear()
        try:
            yield
        finally:
            self._released.set()

    def wait_for_fetches(self, count: int, timeout: float = 10) -> None:
        with self._fetched:
            assert self._fetched.wait_for(lambda: self.fetches >= count, timeout), (
                f"{self.fetches} JWKS fetches, expected {count}"
            )

    def entry(self, **overrides: Any) -> dict[str, Any]:
        """This issuer's entry of the "Issuers" setting."""
        return {"issuer": self.issuer, "audience": AUDIENCE, "jwksUrl": self.url, **overrides}

    def token(
        self,
        key: SigningKey | None = None,
        lifetime: float = 300,
        headers: dict[str, Any] | None = None,
        algorithm: str | None = None,
        **claims: Any,
    ) -> str:
        """A token signed with `key` (the published RSA key by default). Claims default to a
        writer of every data source; a claim given as None is left out."""
        key = key or self.rsa
        now = time.time()
        payload = {
            "iss": self.issuer,
            "aud": AUDIENCE,
            "sub": "ada",
            "iat": int(now),
            "exp": now + lifetime,
            "roles": ["write"],
            "data_sources": ["*"],
            **claims,
        }
        payload = {name: value for name, value in payload.items() if value is not None}
        if isinstance(payload.get("exp"), float):
            payload["exp"] = int(payload["exp"] + 0.999)  # never earlier than asked for
        return jwt.encode(
            payload,
            key.private,
            algorithm=algorithm or key.algorithm,
            headers={"kid": key.kid, **(headers or {})},
        )

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with provider._fetched:
                    provider.fetches += 1
                    provider._fetched.notify_all()
                provider._released.wait(HOLD_LIMIT)
                if self.path != "/jwks.json" or provider.failing:
                    self.send_error(503 if provider.failing else 404)
                    return
                body = json.dumps({"keys": [key.jwk for key in provider.published]}).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                # Cache headers the service must not obey when a token names a new kid.
                self.send_header("cache-control", "max-age=86400")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # quiet: the test's output is about the service

        return Handler
